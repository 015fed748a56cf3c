//! Pending commands: queued by an operator, delivered in new signed heartbeats' 202 with a
//! valid host signature until the agent answers with a result it signs (at least once).

use axum::http::{Method, StatusCode};
use serde_json::{Map, Value, json};
use vigil::clock::format_rfc3339_ms;
use vigil::commands::{COMMAND_PREFIX, RESULT_PREFIX, sign, verify};
use vigil::ingest::signature::PublicKey;
use vigil_tests::{Agent, TestApp, now_ms};

fn signed_result(agent: &Agent, command_id: &str, status: &str) -> Value {
    let mut body = Map::new();
    body.insert("command_id".into(), json!(command_id));
    body.insert("server_id".into(), json!(agent.server_id));
    body.insert("key_version".into(), json!(agent.key_version));
    body.insert("timestamp".into(), json!(format_rfc3339_ms(now_ms())));
    body.insert("status".into(), json!(status));
    body.insert("output".into(), json!({"restarted": true}));
    let signature = sign(RESULT_PREFIX, &agent.key, &body).expect("signs");
    body.insert("signature".into(), json!(signature));
    Value::Object(body)
}

async fn post_result(app: &TestApp, command_id: &str, body: &Value) -> vigil_tests::Answer {
    app.send_raw(
        Method::POST,
        &format!("/v1/agent/commands/{command_id}/result"),
        body.to_string().into_bytes(),
        None,
    )
    .await
}

async fn a_queued_command_is_delivered_until_its_signed_result_is_recorded() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("commanded");
    app.register(&agent).await;

    let queued = app
        .admin_post(
            "/v1/admin/servers/commanded/commands",
            &json!({"command": "restart", "args": {"grace_seconds": 30}, "ttl_seconds": 600}),
        )
        .await;
    assert_eq!(queued.status, StatusCode::CREATED, "{:?}", queued.body);
    let command_id = queued.body["command_id"]
        .as_str()
        .expect("an id")
        .to_owned();

    let first = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let pending = first.body["pending_commands"]
        .as_array()
        .expect("a list")
        .clone();
    assert_eq!(pending.len(), 1, "{:?}", first.body);
    let command = pending[0].as_object().expect("an object");
    assert_eq!(command["command_id"], json!(command_id));
    assert_eq!(command["command"], "restart");
    assert_eq!(command["args"]["grace_seconds"], 30);

    // The signature verifies with the published host key, and only for this exact envelope.
    let host_key = app.get("/v1/host-key").await.body;
    let key = PublicKey::from_base64(host_key["public_key"].as_str().expect("a key"))
        .expect("a valid key");
    assert_eq!(host_key["fingerprint"], key.fingerprint());
    verify(COMMAND_PREFIX, &key, command).expect("host signature verifies");
    let mut tampered = command.clone();
    tampered.insert("command".into(), json!("wipe"));
    assert!(verify(COMMAND_PREFIX, &key, &tampered).is_err());

    // At least once: delivered again with the next signed heartbeat, since no result came.
    let second = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(second.body["pending_commands"], json!([command.clone()]));

    // A forged result is refused; the agent's signed result is recorded once.
    let impostor = Agent::new("commanded");
    let forged = post_result(
        &app,
        &command_id,
        &signed_result(&impostor, &command_id, "ok"),
    )
    .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert_eq!(forged.code(), "bad_signature");
    let result = signed_result(&agent, &command_id, "ok");
    let recorded = post_result(&app, &command_id, &result).await;
    assert_eq!(recorded.status, StatusCode::OK, "{:?}", recorded.body);
    let again = post_result(&app, &command_id, &result).await;
    assert_eq!(again.code(), "result_exists");
    let unknown = post_result(&app, "feedface", &signed_result(&agent, "feedface", "ok")).await;
    assert_eq!(unknown.code(), "unknown_command");
    // Answered: never delivered again.
    let third = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(third.body["pending_commands"], json!([]));

    let (status, body): (String, String) =
        vigil_tests::with_pool!(&app.db.pool_for_tests(), pool =>
        sqlx::query_as("SELECT result_status, result_body FROM commands WHERE command_id = $1")
            .bind(&command_id)
            .fetch_one(pool)
            .await)
        .expect("the command row");
    assert_eq!(status, "ok");
    let stored: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(stored, result, "the signed result is kept as received");
    let log: Vec<String> = vigil_tests::with_pool!(&app.db.pool_for_tests(), pool =>
        sqlx::query_scalar("SELECT event FROM command_log WHERE command_id = $1 ORDER BY id")
            .bind(&command_id)
            .fetch_all(pool)
            .await)
    .expect("log");
    assert_eq!(
        log,
        ["queued", "delivered", "result"],
        "the first delivery only"
    );
    let count: i64 = vigil_tests::with_pool!(&app.db.pool_for_tests(), pool =>
        sqlx::query_scalar("SELECT CAST(delivery_count AS BIGINT) FROM commands WHERE command_id = $1")
            .bind(&command_id)
            .fetch_one(pool)
            .await)
    .expect("count");
    assert_eq!(count, 2);
}

async fn expired_commands_are_never_delivered_and_the_host_key_survives_a_restart() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("late");
    app.register(&agent).await;
    let queued = app
        .admin_post(
            "/v1/admin/servers/late/commands",
            &json!({"command": "ping", "ttl_seconds": 1}),
        )
        .await;
    assert_eq!(queued.status, StatusCode::CREATED);
    let bad = app
        .admin_post(
            "/v1/admin/servers/late/commands",
            &json!({"command": "Bad Name"}),
        )
        .await;
    assert_eq!(bad.code(), "invalid_field");
    let key_before = app.get("/v1/host-key").await.body["public_key"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let answer = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(answer.body["pending_commands"], json!([]));

    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;
    assert_eq!(app.get("/v1/host-key").await.body["public_key"], key_before);
    app.stop().await;
}

vigil_tests::on_both_backends!(
    a_queued_command_is_delivered_until_its_signed_result_is_recorded,
    expired_commands_are_never_delivered_and_the_host_key_survives_a_restart,
);

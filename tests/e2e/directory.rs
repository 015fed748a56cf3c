//! The read API: filters, sorts, pagination, history pages, errors.

use serde_json::{Value, json};
use vigil_tests::{Agent, TestApp};

async fn directory_filters_sorts_and_pages_with_a_cursor() {
    let app = TestApp::spawn().await;
    for (i, players) in [5u32, 50, 20, 0, 35].iter().enumerate() {
        let agent = Agent::new(&format!("game-{i}"));
        app.register(&agent).await;
        if i != 3 {
            app.post_heartbeat(
                &agent.heartbeat(json!({"players_current": players, "players_capacity": 50})),
            )
            .await;
        }
    }
    app.verify("game-1").await;

    let all = app.get("/v1/servers?sort=players&limit=2").await;
    assert_eq!(all.status, 200, "{:?}", all.body);
    let ids = |v: &Value| -> Vec<String> {
        v["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["server_id"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(ids(&all.body), ["game-1", "game-4"]);
    let cursor = all.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let page2 = app
        .get(&format!("/v1/servers?sort=players&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(ids(&page2.body), ["game-2", "game-0"]);
    let cursor = page2.body["next_cursor"]
        .as_str()
        .expect("a last page")
        .to_owned();
    let page3 = app
        .get(&format!("/v1/servers?sort=players&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(ids(&page3.body), ["game-3"]);
    assert!(page3.body["next_cursor"].is_null());

    let unknown = app.get("/v1/servers?status=unknown").await;
    assert_eq!(ids(&unknown.body), ["game-3"]);
    let verified = app.get("/v1/servers?verified=true").await;
    assert_eq!(ids(&verified.body), ["game-1"]);
    let online = app.get("/v1/servers?status=online&sort=last_seen").await;
    assert_eq!(ids(&online.body).len(), 4);

    let server = app.server("game-1").await;
    for field in [
        "server_id",
        "display_name",
        "is_verified",
        "key_version",
        "public_fingerprint",
        "effective_status",
        "confidence",
        "uptime_percent",
        "quality_score",
        "last_seen_at",
        "players_current",
        "players_capacity",
        "map_name",
        "agent_version",
        "scores",
        "badges",
        "policy",
    ] {
        assert!(
            server.get(field).is_some(),
            "server JSON carries {field}: {server}"
        );
    }

    for bad in [
        "/v1/servers?sort=nope",
        "/v1/servers?limit=0",
        "/v1/servers?cursor=zzz",
        "/v1/servers?colour=red",
    ] {
        let answer = app.get(bad).await;
        assert_eq!(answer.status, 422, "{bad}");
        assert_eq!(answer.code(), "invalid_query", "{bad}");
        assert_eq!(answer.content_type, "application/problem+json");
    }
    assert_eq!(app.get("/v1/servers/nope").await.code(), "unknown_server");
    assert_eq!(app.get("/v1/servers/nope/heartbeats").await.status, 404);
    assert_eq!(app.get("/v1/no-such-route").await.code(), "not_found");
}

async fn heartbeat_history_pages_newest_first_with_the_body_as_sent() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("history-1");
    app.register(&agent).await;
    for i in 0..5 {
        app.post_heartbeat(&agent.heartbeat(json!({"players_current": i})))
            .await;
    }
    let page = app
        .get("/v1/servers/history-1/heartbeats?limit=3")
        .await
        .body;
    let items = page["heartbeats"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["seq"], 5);
    assert_eq!(items[0]["body"]["players_current"], 4);
    assert!(items[0]["body"]["signature"].is_string());
    let before = page["next_before"].as_i64().expect("more");
    let rest = app
        .get(&format!("/v1/servers/history-1/heartbeats?before={before}"))
        .await
        .body;
    assert_eq!(rest["heartbeats"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        app.get("/v1/policies").await.body["active"]["name"],
        "default"
    );
}

async fn admin_routes_need_the_token_and_validate_input() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("admin-1");
    let body = json!({"server_id": "admin-1", "public_key": agent.public_key_b64()});
    let path = "/v1/admin/servers";
    let raw = body.to_string().into_bytes();
    let none = app
        .send_raw(axum::http::Method::POST, path, raw.clone(), None)
        .await;
    assert_eq!((none.status.as_u16(), none.code()), (401, "unauthorized"));
    let wrong = app
        .send_raw(axum::http::Method::POST, path, raw, Some("nope"))
        .await;
    assert_eq!((wrong.status.as_u16(), wrong.code()), (401, "unauthorized"));
    assert_eq!(app.admin_post(path, &body).await.status, 201);
    let again = app.admin_post(path, &body).await;
    assert_eq!(
        (again.status.as_u16(), again.code()),
        (409, "server_exists")
    );
    let bad_key = app
        .admin_post(path, &json!({"server_id": "b", "public_key": "AAAA"}))
        .await;
    assert_eq!(
        (bad_key.status.as_u16(), bad_key.code()),
        (422, "invalid_field")
    );
    let bad_id = app
        .admin_post(
            path,
            &json!({"server_id": "Bad Id", "public_key": agent.public_key_b64()}),
        )
        .await;
    assert_eq!(bad_id.code(), "invalid_field");
    let extra = app
        .admin_post(
            path,
            &json!({"server_id": "c", "public_key": agent.public_key_b64(), "x": 1}),
        )
        .await;
    assert_eq!(extra.code(), "invalid_body");
    let unknown = app
        .admin_post("/v1/admin/servers/ghost/verify", &json!({}))
        .await;
    assert_eq!(unknown.code(), "unknown_server");
    let no_admin = TestApp::spawn_with(|c| c.admin.token = None).await;
    assert_eq!(
        no_admin.admin_post(path, &body).await.code(),
        "admin_disabled"
    );
}

vigil_tests::on_both_backends!(
    directory_filters_sorts_and_pages_with_a_cursor,
    heartbeat_history_pages_newest_first_with_the_body_as_sent,
    admin_routes_need_the_token_and_validate_input,
);

//! The agent endpoint: acceptance, every rejection, idempotent repeats.

use axum::http::StatusCode;
use serde_json::{Value, json};
use vigil_tests::{Agent, TestApp, now_ms};

async fn signed_heartbeat_is_accepted_and_server_shows_online_with_policy_digest() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("eu-island-01");
    app.register(&agent).await;
    let answer = app
        .post_heartbeat(&agent.heartbeat(
            json!({"players_current": 42, "players_capacity": 70, "map_name": "The Island"}),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(answer.body["accepted"], true);
    assert_eq!(answer.body["duplicate"], false);
    assert_eq!(answer.body["server_registered"], false);
    assert_eq!(answer.body["status"], "online");
    assert_eq!(answer.body["policy"], "default@1.3.0");
    assert_eq!(answer.body["pending_commands"], json!([]));
    assert!(answer.body["next_heartbeat_seconds"].as_u64().is_some());

    let server = app.server("eu-island-01").await;
    assert_eq!(server["effective_status"], "online");
    assert_eq!(server["players_current"], 42);
    assert_eq!(server["map_name"], "The Island");
    let digest = app.state.engine.policy().digest().to_owned();
    assert!(digest.starts_with("sha256:"));
    assert_eq!(server["policy"]["digest"], digest);
    assert_eq!(server["policy"]["name"], "default");
    assert!(
        server["public_fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:"))
    );
    assert_eq!(app.count("heartbeats").await, 1);
    assert_eq!(app.count("rejections").await, 0);
}

/// Posts `body`, expects `status` + `code`, no new heartbeat, one new rejection with that code.
async fn expect_rejected(app: &TestApp, body: Vec<u8>, status: StatusCode, code: &str) {
    let heartbeats = app.count("heartbeats").await;
    let rejections = app.count("rejections").await;
    let answer = app.post_heartbeat_raw(body).await;
    assert_eq!(answer.status, status, "{code}: {:?}", answer.body);
    assert_eq!(answer.code(), code, "{:?}", answer.body);
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.body["status"], status.as_u16());
    assert!(
        answer.body["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    assert_eq!(
        app.count("heartbeats").await,
        heartbeats,
        "{code}: nothing stored"
    );
    assert_eq!(
        app.count("rejections").await,
        rejections + 1,
        "{code}: one rejection row"
    );
    assert_eq!(
        app.rejection_codes().await.last().map(String::as_str),
        Some(code)
    );
}

fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

async fn every_rejection_has_its_status_and_code_and_stores_nothing() {
    let app = TestApp::spawn_with(|c| c.trust.max_clock_skew_seconds = 60).await;
    let agent = Agent::new("eu-1");
    app.register(&agent).await;
    let first = agent.heartbeat(json!({}));
    assert_eq!(
        app.post_heartbeat(&first).await.status,
        StatusCode::ACCEPTED
    );

    // Bad signature: signed by another key.
    let impostor = Agent::new("eu-1");
    expect_rejected(
        &app,
        bytes(&impostor.heartbeat(json!({}))),
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    )
    .await;
    // Signature that is not base64 of 64 bytes.
    let mut garbled = agent.heartbeat(json!({}));
    garbled["signature"] = "bm90IGEgc2lnbmF0dXJl".into();
    expect_rejected(
        &app,
        bytes(&garbled),
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    )
    .await;
    // A single field tampered after signing.
    let mut tampered = agent.heartbeat(json!({"players_current": 3}));
    tampered["players_current"] = 4.into();
    expect_rejected(
        &app,
        bytes(&tampered),
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    )
    .await;
    // Unknown server.
    let stranger = Agent::new("nobody-here");
    expect_rejected(
        &app,
        bytes(&stranger.heartbeat(json!({}))),
        StatusCode::NOT_FOUND,
        "unknown_server",
    )
    .await;
    // Wrong key version.
    let wrong_version = Agent::with_key("eu-1", agent.key.clone(), 2);
    let body = wrong_version.heartbeat(json!({}));
    expect_rejected(
        &app,
        bytes(&body),
        StatusCode::CONFLICT,
        "key_version_mismatch",
    )
    .await;
    // Older than the last accepted heartbeat.
    let older = agent.heartbeat_at(now_ms() - 10_000, json!({}));
    expect_rejected(&app, bytes(&older), StatusCode::CONFLICT, "replay").await;
    // Outside the skew window (both directions).
    let future = agent.heartbeat_at(now_ms() + 3_600_000, json!({}));
    expect_rejected(&app, bytes(&future), StatusCode::CONFLICT, "clock_skew").await;
    let ancient = agent.heartbeat_at(now_ms() - 3_600_000, json!({}));
    expect_rejected(&app, bytes(&ancient), StatusCode::CONFLICT, "clock_skew").await;
    // Malformed JSON, unknown field, oversize integer, missing field.
    expect_rejected(
        &app,
        b"{\"server_id\": ".to_vec(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed_json",
    )
    .await;
    expect_rejected(
        &app,
        bytes(&agent.heartbeat(json!({"surprise": 1}))),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_field",
    )
    .await;
    expect_rejected(
        &app,
        bytes(&agent.heartbeat(json!({"payload": {"n": 9007199254740993_u64}}))),
        StatusCode::UNPROCESSABLE_ENTITY,
        "number_out_of_range",
    )
    .await;
    let mut missing = agent.heartbeat(json!({}));
    missing.as_object_mut().map(|m| m.remove("timestamp"));
    expect_rejected(
        &app,
        bytes(&missing),
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing_field",
    )
    .await;
    // Oversized body.
    let huge = agent.heartbeat(json!({"payload": {"raw": "x".repeat(70 * 1024)}}));
    expect_rejected(
        &app,
        bytes(&huge),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    // The one good heartbeat is still the only one, and the rejections naming the server
    // were folded into its policy (they consumed event sequence numbers).
    assert_eq!(app.count("heartbeats").await, 1);
    let folded = app
        .scalar("SELECT COUNT(*) FROM rejections WHERE seq IS NOT NULL")
        .await;
    assert!(folded >= 8, "rejections naming eu-1 are folded: {folded}");
}

async fn unverified_server_is_refused_while_verification_is_required() {
    let app = TestApp::spawn_with(|c| c.trust.require_verified = true).await;
    let agent = Agent::new("homelab-1");
    app.register(&agent).await;
    expect_rejected(
        &app,
        bytes(&agent.heartbeat(json!({}))),
        StatusCode::FORBIDDEN,
        "server_unverified",
    )
    .await;
    app.verify("homelab-1").await;
    let answer = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(app.server("homelab-1").await["is_verified"], true);
}

async fn exact_repeat_is_acknowledged_as_duplicate_and_stored_once() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("cron-7");
    app.register(&agent).await;
    let body = agent.heartbeat(json!({"uptime_seconds": 10}));
    let first = app.post_heartbeat(&body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.body["duplicate"], false);
    let again = app.post_heartbeat(&body).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(app.count("heartbeats").await, 1);
    assert_eq!(app.count("rejections").await, 0);
    // A different heartbeat after it is a new one.
    assert_eq!(
        app.post_heartbeat(&agent.heartbeat(json!({}))).await.body["duplicate"],
        false
    );
    assert_eq!(app.count("heartbeats").await, 2);
}

async fn a_failed_batch_answers_every_request_in_it_with_an_error_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("batch-1");
    app.register(&agent).await;
    assert_eq!(
        app.post_heartbeat(&agent.heartbeat(json!({}))).await.status,
        StatusCode::ACCEPTED
    );
    let before = app.server("batch-1").await;
    app.state.engine.fail_next_commit().await;
    let failed = app
        .post_heartbeat(&agent.heartbeat(json!({"players_current": 5})))
        .await;
    assert_eq!(
        failed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        failed.body
    );
    assert_eq!(failed.code(), "storage_unavailable");
    assert!(failed.retry_after.is_some());
    assert_eq!(app.count("heartbeats").await, 1);
    // The in-memory snapshot was restored: the stored one is unchanged and the next heartbeat
    // (same timestamp rules) is accepted as if the failed one never happened.
    assert_eq!(app.server("batch-1").await, before);
    assert_eq!(
        app.post_heartbeat(&agent.heartbeat(json!({}))).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(app.count("heartbeats").await, 2);
}

async fn concurrent_senders_get_one_stored_heartbeat_per_acceptance() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let mut agents = Vec::new();
    for i in 0..20 {
        let agent = Agent::new(&format!("load-{i}"));
        app.register(&agent).await;
        agents.push(std::sync::Arc::new(agent));
    }
    let mut tasks = Vec::new();
    for agent in &agents {
        for _ in 0..10 {
            let (app, agent) = (app.clone(), agent.clone());
            tasks.push(tokio::spawn(async move {
                app.post_heartbeat(&agent.heartbeat(json!({}))).await.status
            }));
        }
    }
    let mut accepted = 0;
    for task in tasks {
        // Concurrent posts of one agent can reach the writer out of timestamp order: those are
        // answered 409 replay, never stored.
        match task.await.expect("task") {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(app.count("heartbeats").await, accepted);
    let seqs = app
        .scalar(
            "SELECT COUNT(*) FROM heartbeats h JOIN servers s ON s.server_id = h.server_id \
             WHERE h.seq <= s.event_seq",
        )
        .await;
    assert_eq!(
        seqs, accepted,
        "every stored heartbeat is reflected in its snapshot"
    );
}

async fn a_commit_failing_under_load_fails_its_batch_and_the_one_folded_on_top_of_it() {
    // The writer folds the next batch while the previous one commits: when that commit fails,
    // both batches must fail, whatever was folded in between must be undone, and every 202
    // must still be exactly one stored heartbeat reflected in its snapshot.
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let agent = std::sync::Arc::new(Agent::new(&format!("pipe-{i}")));
        app.register(&agent).await;
        // Two streams per server, so one server's heartbeats sit in consecutive batches.
        for _ in 0..2 {
            let (app, agent) = (app.clone(), agent.clone());
            tasks.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..12 {
                    let answer = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
                    statuses.push((answer.status, answer.code().to_owned()));
                }
                statuses
            }));
        }
    }
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        app.state.engine.fail_next_commit().await;
    }
    let (mut accepted, mut failed) = (0, 0);
    for task in tasks {
        for (status, code) in task.await.expect("task") {
            match status {
                StatusCode::ACCEPTED => accepted += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_eq!(code, "storage_unavailable");
                    failed += 1;
                }
                // The two streams of a server can reach the writer out of timestamp order.
                StatusCode::CONFLICT => assert_eq!(code, "replay"),
                other => panic!("unexpected status {other} {code}"),
            }
        }
    }
    assert!(failed > 0, "the injected failures failed some requests");
    assert_eq!(app.count("heartbeats").await, accepted);
    let reflected = app
        .scalar(
            "SELECT COUNT(*) FROM heartbeats h JOIN servers s ON s.server_id = h.server_id \
             WHERE h.seq <= s.event_seq",
        )
        .await;
    assert_eq!(
        reflected, accepted,
        "every stored heartbeat is in its snapshot"
    );
    // A server's events are its heartbeats and the refusals folded into it (the replays).
    let folded_refusals = app
        .scalar("SELECT COUNT(*) FROM rejections WHERE seq IS NOT NULL")
        .await;
    let snapshots = app
        .scalar("SELECT CAST(SUM(event_seq) AS BIGINT) FROM servers")
        .await;
    assert_eq!(
        snapshots,
        accepted + folded_refusals,
        "no snapshot counts an event that was not stored"
    );
}

vigil_tests::on_both_backends!(
    signed_heartbeat_is_accepted_and_server_shows_online_with_policy_digest,
    every_rejection_has_its_status_and_code_and_stores_nothing,
    unverified_server_is_refused_while_verification_is_required,
    exact_repeat_is_acknowledged_as_duplicate_and_stored_once,
    a_failed_batch_answers_every_request_in_it_with_an_error_and_stores_nothing,
    concurrent_senders_get_one_stored_heartbeat_per_acceptance,
    a_commit_failing_under_load_fails_its_batch_and_the_one_folded_on_top_of_it,
);

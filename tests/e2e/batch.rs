//! The batch route `POST /v1/agent/heartbeats` (NDJSON): one answer per item, in order; an
//! item's refusal never fails its neighbours; only accepted items are stored, each once; a
//! failed commit fails exactly the items in it; the source's budget is charged per item.

use axum::http::{Method, StatusCode};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use vigil_tests::{Agent, Answer, TestApp, TestBackend, now_ms};

const ROUTE: &str = "/v1/agent/heartbeats";

fn ndjson(items: &[Vec<u8>]) -> Vec<u8> {
    items.join(&b'\n')
}

fn line(body: &Value) -> Vec<u8> {
    body.to_string().into_bytes()
}

async fn post_batch(app: &TestApp, items: &[Vec<u8>]) -> Answer {
    app.send_raw(Method::POST, ROUTE, ndjson(items), None).await
}

/// `(status, code)` of every item of a 200 batch answer.
fn outcomes(answer: &Answer) -> Vec<(u64, String)> {
    assert_eq!(answer.status, StatusCode::OK, "{:#}", answer.body);
    answer.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            (
                item["status"].as_u64().expect("status"),
                item["code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn stored_with_signature(app: &TestApp, body: &Value) -> i64 {
    let signature = body["signature"].as_str().expect("signed");
    // Base64 holds no quote.
    app.scalar(&format!(
        "SELECT COUNT(*) FROM heartbeats WHERE signature = '{signature}'"
    ))
    .await
}

async fn mixed_items_each_get_their_own_answer_and_only_valid_ones_are_stored() {
    let app = TestApp::spawn().await;
    let (a, b) = (Agent::new("batch-a"), Agent::new("batch-b"));
    app.register(&a).await;
    app.register(&b).await;
    let now = now_ms();
    let first = a.heartbeat_at(now - 2_000, json!({}));
    assert_eq!(
        app.post_heartbeat(&first).await.status,
        StatusCode::ACCEPTED
    );
    let forger = Agent::with_key("batch-b", SigningKey::from_bytes(&[9; 32]), 1);
    let a1 = a.heartbeat_at(now - 1_000, json!({"players_current": 3}));
    let a2 = a.heartbeat_at(now, json!({"players_current": 4}));
    let b1 = b.heartbeat_at(now, json!({}));
    let items = vec![
        line(&a1),
        line(&forger.heartbeat_at(now, json!({}))),
        // Older than the last accepted heartbeat of `batch-a`: a replay.
        line(&a.heartbeat_at(now - 3_000, json!({}))),
        b"{\"server_id\": \"batch-a\", not json".to_vec(),
        line(
            &json!({"server_id": "batch-a", "key_version": 1, "timestamp": "2026-01-01T00:00:00Z", "signature": "AAAA", "colour": "red"}),
        ),
        line(&b1),
        line(&Agent::new("batch-nobody").heartbeat_at(now, json!({}))),
        line(&a2),
    ];
    let answer = post_batch(&app, &items).await;
    assert_eq!(
        outcomes(&answer),
        vec![
            (202, String::new()),
            (401, "bad_signature".into()),
            (409, "replay".into()),
            (422, "malformed_json".into()),
            (422, "unknown_field".into()),
            (202, String::new()),
            (404, "unknown_server".into()),
            (202, String::new()),
        ]
    );
    assert_eq!(answer.body["accepted"], 3);
    assert_eq!(answer.body["refused"], 5);
    let items_answered = answer.body["items"].as_array().expect("items");
    // An accepted item carries the single route's 202 body; a refused one its problem object.
    assert_eq!(items_answered[0]["body"]["accepted"], true);
    assert_eq!(items_answered[7]["body"]["status"], "online");
    assert_eq!(items_answered[1]["body"]["status"], 401);
    assert_eq!(items_answered[1]["body"]["code"], "bad_signature");
    assert!(items_answered[1]["body"]["detail"].as_str().is_some());

    assert_eq!(app.count("heartbeats").await, 4);
    for stored in [&first, &a1, &a2, &b1] {
        assert_eq!(stored_with_signature(&app, stored).await, 1);
    }
    let server = app.server("batch-a").await;
    assert_eq!(server["players_current"], 4, "the last item folded last");
    let mut codes = app.rejection_codes().await;
    codes.sort();
    assert_eq!(
        codes,
        [
            "bad_signature",
            "malformed_json",
            "replay",
            "unknown_field",
            "unknown_server"
        ]
    );
}

async fn item_order_per_server_is_kept() {
    let app = TestApp::spawn().await;
    let agents = [Agent::new("order-a"), Agent::new("order-b")];
    for agent in &agents {
        app.register(agent).await;
    }
    let start = now_ms() - 60_000;
    let mut items = Vec::new();
    for i in 0..60 {
        for agent in &agents {
            items.push(line(
                &agent.heartbeat_at(start + i * 1_000, json!({"uptime_seconds": i})),
            ));
        }
    }
    let answer = post_batch(&app, &items).await;
    assert!(
        outcomes(&answer).iter().all(|(status, _)| *status == 202),
        "every item later than the one before it: {:#}",
        answer.body
    );
    for agent in &agents {
        let sent = app
            .scalar(&format!(
                "SELECT COUNT(*) FROM heartbeats h1 JOIN heartbeats h2 \
                 ON h1.server_id = h2.server_id AND h1.seq < h2.seq \
                 WHERE h1.server_id = '{}' AND h1.sent_at_ms >= h2.sent_at_ms",
                agent.server_id
            ))
            .await;
        assert_eq!(sent, 0, "stored in item order");
        assert_eq!(
            app.scalar(&format!(
                "SELECT COUNT(*) FROM heartbeats WHERE server_id = '{}'",
                agent.server_id
            ))
            .await,
            60
        );
    }
}

/// Makes every commit holding a heartbeat of `server_id` fail in the database itself.
async fn fail_commits_naming(app: &TestApp, server_id: &str) {
    let statements = match TestBackend::current() {
        TestBackend::Sqlite => vec![format!(
            "CREATE TRIGGER batch_fault BEFORE INSERT ON heartbeats \
             WHEN NEW.server_id = '{server_id}' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
        )],
        TestBackend::Postgres => vec![
            format!(
                "CREATE FUNCTION batch_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.server_id = '{server_id}' THEN RAISE EXCEPTION 'injected fault'; END IF; \
                 RETURN NEW; END $$"
            ),
            "CREATE TRIGGER batch_fault BEFORE INSERT ON heartbeats FOR EACH ROW \
             EXECUTE FUNCTION batch_fault()"
                .to_owned(),
        ],
    };
    for sql in statements {
        app.execute(&sql).await.expect("fault trigger installs");
    }
}

async fn heal(app: &TestApp) {
    let sql = match TestBackend::current() {
        TestBackend::Sqlite => "DROP TRIGGER batch_fault",
        TestBackend::Postgres => "DROP TRIGGER batch_fault ON heartbeats",
    };
    app.execute(sql).await.expect("fault trigger drops");
}

async fn a_failed_commit_fails_exactly_the_items_of_that_commit() {
    let app = TestApp::spawn().await;
    let agents = [
        Agent::new("fault-a"),
        Agent::new("fault-doomed"),
        Agent::new("fault-b"),
    ];
    for agent in &agents {
        app.register(agent).await;
    }
    let earlier = agents[0].heartbeat(json!({}));
    assert_eq!(
        app.post_heartbeat(&earlier).await.status,
        StatusCode::ACCEPTED
    );
    fail_commits_naming(&app, "fault-doomed").await;
    let bodies: Vec<Value> = agents.iter().map(|a| a.heartbeat(json!({}))).collect();
    let forged = Agent::with_key("fault-b", SigningKey::from_bytes(&[3; 32]), 1);
    let mut items: Vec<Vec<u8>> = bodies.iter().map(line).collect();
    items.push(line(&forged.heartbeat(json!({}))));
    let answer = post_batch(&app, &items).await;
    let first = outcomes(&answer);
    assert_eq!(first[1], (503, "storage_unavailable".into()), "{first:?}");
    assert_eq!(
        first[3],
        (401, "bad_signature".into()),
        "a refusal keeps its own answer"
    );
    assert_eq!(
        answer.body["items"][1]["retry_after"], 1,
        "a failed item says when to retry"
    );
    // Whatever shared the doomed item's commit failed with it, and nothing else: every item
    // answered 202 is stored, every item answered 503 is not.
    for (body, (status, code)) in bodies.iter().zip(&first) {
        let stored = stored_with_signature(&app, body).await;
        match status {
            202 => assert_eq!(stored, 1, "{body}"),
            503 => {
                assert_eq!(code, "storage_unavailable");
                assert_eq!(stored, 0, "{body}");
            }
            other => panic!("unexpected {other} {code}"),
        }
    }
    assert_eq!(stored_with_signature(&app, &earlier).await, 1);
    // The failed items left no trace in memory either: once the database heals, the same
    // bodies are accepted (new where they failed, an exact repeat where they were stored).
    heal(&app).await;
    let again = post_batch(&app, &items[..3]).await;
    assert!(
        outcomes(&again).iter().all(|(status, _)| *status == 202),
        "{:#}",
        again.body
    );
    for (i, (status, _)) in first.iter().take(3).enumerate() {
        assert_eq!(again.body["items"][i]["body"]["duplicate"], *status == 202);
    }
    assert_eq!(app.count("heartbeats").await, 4);
    let reflected = app
        .scalar(
            "SELECT COUNT(*) FROM heartbeats h JOIN servers s ON s.server_id = h.server_id \
             WHERE h.seq <= s.event_seq",
        )
        .await;
    assert_eq!(reflected, 4, "every stored heartbeat is in its snapshot");
}

async fn bounds_refuse_the_whole_request_and_the_budget_is_charged_per_item() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit.per_ip_per_minute = 1;
        c.rate_limit.per_ip_burst = 5;
    })
    .await;
    let agent = Agent::new("budget-1");
    app.register(&agent).await;
    let peer = "192.0.2.7:4000";
    let send = |body: Vec<u8>, peer: &'static str| {
        let app = &app;
        async move { app.send_from(Method::POST, ROUTE, body, peer, &[]).await }
    };
    let start = now_ms() - 10_000;
    let items: Vec<Vec<u8>> = (0..8)
        .map(|i| line(&agent.heartbeat_at(start + i * 1_000, json!({}))))
        .collect();
    let answer = send(ndjson(&items), peer).await;
    let statuses: Vec<u64> = outcomes(&answer).iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429, 429, 429]);
    assert_eq!(answer.body["items"][5]["code"], "rate_limited");
    assert!(answer.body["items"][5]["retry_after"].as_u64().is_some());
    // The bucket is empty: the next batch is refused whole, before its body is read.
    let whole = send(ndjson(&items[5..]), peer).await;
    assert_eq!(whole.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(whole.code(), "rate_limited");
    assert!(whole.retry_after.is_some());
    assert_eq!(app.count("heartbeats").await, 5);
    assert_eq!(
        app.count("rejections").await,
        0,
        "rate limits write nothing"
    );

    // Bounds, from other addresses (each with its own budget).
    let many = vec![b"{}".to_vec(); 501];
    let answer = send(ndjson(&many), "192.0.2.8:4000").await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "too_many_items");
    assert_eq!(answer.content_type, "application/problem+json");
    let huge = vec![b'x'; 2 * 1024 * 1024 + 1];
    let answer = send(huge, "192.0.2.9:4000").await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");
    let answer = send(b"\n\n".to_vec(), "192.0.2.10:4000").await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.code(), "empty_batch");
    // An item over the single route's 64 KiB is refused alone.
    let big = line(&agent.heartbeat(json!({"payload": {"raw": "y".repeat(70_000)}})));
    let ok = line(&agent.heartbeat(json!({})));
    let answer = send(ndjson(&[big, ok]), "192.0.2.11:4000").await;
    assert_eq!(
        outcomes(&answer),
        vec![(413, "payload_too_large".into()), (202, String::new())]
    );
    assert_eq!(app.count("heartbeats").await, 6);
}

vigil_tests::on_both_backends!(
    mixed_items_each_get_their_own_answer_and_only_valid_ones_are_stored,
    item_order_per_server_is_kept,
    a_failed_commit_fails_exactly_the_items_of_that_commit,
    bounds_refuse_the_whole_request_and_the_budget_is_charged_per_item,
);

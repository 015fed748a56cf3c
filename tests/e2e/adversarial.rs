//! The trust edge, probed as an attacker with no key would: each test drives the real router
//! over HTTP with one attack and asserts the secure answer, and that nothing was stored,
//! delivered, spent or demoted on the victim's behalf.

use axum::http::{Method, StatusCode};
use serde_json::json;
use tower::ServiceExt as _;
use vigil_tests::{ADMIN_TOKEN, Agent, TestApp};

/// A forgery spends its source's bucket, never the server's: a flood of forged heartbeats
/// from one address leaves the real agent (another address) its whole burst.
async fn a_forged_flood_never_spends_the_servers_bucket() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit.per_server_per_minute = 1;
        c.rate_limit.per_server_burst = 2;
        c.rate_limit.per_ip_per_minute = 600;
        c.rate_limit.per_ip_burst = 100;
    })
    .await;
    let victim = Agent::new("victim-bucket");
    app.register(&victim).await;
    let forger = Agent::new("victim-bucket");
    for _ in 0..10 {
        let a = app
            .send_from(
                Method::POST,
                "/v1/agent/heartbeat",
                forger.heartbeat(json!({})).to_string().into_bytes(),
                "203.0.113.9:4000",
                &[],
            )
            .await;
        assert_eq!(a.code(), "bad_signature", "{:?}", a.body);
    }
    for _ in 0..2 {
        let a = app
            .send_from(
                Method::POST,
                "/v1/agent/heartbeat",
                victim.heartbeat(json!({})).to_string().into_bytes(),
                "192.0.2.10:4000",
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    }
    app.stop().await;
}

/// A server's last heartbeat is public; posting it again is an exact repeat (202 duplicate)
/// and must carry none of the commands queued for the real agent.
async fn a_replayed_public_heartbeat_receives_no_commands() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("commanded-victim");
    app.register(&agent).await;
    let first = agent.heartbeat(json!({}));
    assert_eq!(
        app.post_heartbeat(&first).await.status,
        StatusCode::ACCEPTED
    );
    let queued = app
        .admin_post(
            "/v1/admin/servers/commanded-victim/commands",
            &json!({"command": "restart", "ttl_seconds": 600}),
        )
        .await;
    assert_eq!(queued.status, StatusCode::CREATED, "{:?}", queued.body);
    // The attacker reposts the public body.
    let replayed = app.post_heartbeat(&first).await;
    assert_eq!(replayed.status, StatusCode::ACCEPTED, "{:?}", replayed.body);
    assert_eq!(replayed.body["duplicate"], true);
    assert_eq!(replayed.body["pending_commands"], json!([]));
    // The real agent's next heartbeat still gets it.
    let next = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    let pending = next.body["pending_commands"].as_array().expect("a list");
    assert_eq!(pending.len(), 1, "{:?}", next.body);
    assert_eq!(pending[0]["command"], "restart");
    app.stop().await;
}

/// A refused body's claimed id and detail are attacker text: the audit row keeps a bounded
/// prefix of each, however large the body.
async fn rejection_records_are_bounded() {
    let app = TestApp::spawn().await;
    let long_id = "a".repeat(60_000);
    let newline_member = format!("x\nlevel=ERROR forged {}", "y".repeat(5_000));
    let body = json!({
        "server_id": long_id,
        "key_version": 1,
        "timestamp": "2026-01-22T21:05:00Z",
        "signature": "AAAA",
    });
    let refused = app.post_heartbeat(&body).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut unknown = serde_json::Map::new();
    unknown.insert("server_id".into(), json!("bounded-1"));
    unknown.insert(newline_member, json!(1));
    let refused = app.post_heartbeat(&unknown.into()).await;
    assert_eq!(refused.code(), "unknown_field", "{:?}", refused.body);
    let longest_claim = app
        .scalar(
            "SELECT CAST(COALESCE(MAX(LENGTH(claimed_server_id)), 0) AS BIGINT) FROM rejections",
        )
        .await;
    let longest_detail = app
        .scalar("SELECT CAST(COALESCE(MAX(LENGTH(detail)), 0) AS BIGINT) FROM rejections")
        .await;
    assert_eq!(app.count("rejections").await, 2);
    assert!(longest_claim <= 129, "claimed id of {longest_claim} chars");
    assert!(longest_detail <= 513, "detail of {longest_detail} chars");
    app.stop().await;
}

/// A made-up method token must not mint a new metric series.
async fn unknown_methods_share_one_metric_label() {
    let app = TestApp::spawn().await;
    let method = Method::from_bytes(b"FOO123").expect("a token");
    let a = app.send_raw(method, "/v1/servers", Vec::new(), None).await;
    assert!(a.status.is_client_error(), "{:?}", a.status);
    let metrics = app.get("/metrics").await;
    let text = metrics.body.as_str().expect("text").to_owned();
    assert!(!text.contains("FOO123"), "the raw method became a label");
    assert!(text.contains("method=\"other\""), "{text}");
    app.stop().await;
}

/// `[directory] require_key` covers both live streams, not only the directory routes.
async fn require_key_covers_both_live_streams() {
    let app = TestApp::spawn_with(|c| c.directory.require_key = true).await;
    let agent = Agent::new("streamed");
    app.register(&agent).await;
    // Read the status only: an opened stream never ends.
    let status = |path: &'static str, token: Option<&'static str>| {
        let router = app.router.clone();
        async move {
            let request = vigil_tests::request(Method::GET, path, token)
                .body(axum::body::Body::empty())
                .expect("request");
            router.oneshot(request).await.expect("answers").status()
        }
    };
    for path in ["/v1/events", "/v1/servers/streamed/observe"] {
        assert_eq!(status(path, None).await, StatusCode::UNAUTHORIZED, "{path}");
        assert_ne!(
            status(path, Some(ADMIN_TOKEN)).await,
            StatusCode::UNAUTHORIZED,
            "{path} with a key"
        );
    }
    app.stop().await;
}

/// One spelling per id: an uppercase UUID is refused, so it cannot register a second server
/// beside its lowercase twin.
async fn uppercase_uuids_are_refused() {
    let app = TestApp::spawn().await;
    let upper = "0F8FAD5B-D9CB-469F-A165-70867728950E";
    let agent = Agent::new(upper);
    let answer = app
        .admin_post(
            "/v1/admin/servers",
            &json!({"server_id": upper, "public_key": agent.public_key_b64()}),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        answer.body
    );
    let a = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", a.body);
    let lower = Agent::new(&upper.to_lowercase());
    assert_eq!(app.register(&lower).await.status, StatusCode::CREATED);
    app.stop().await;
}

/// One body, two readings: a repeated member (serde keeps the last, so the signature still
/// verifies) is refused at every depth, and nothing is stored.
async fn duplicate_members_are_refused_at_every_depth() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("twice");
    app.register(&agent).await;
    let signed = |extra| agent.heartbeat(extra).to_string();
    let top =
        signed(json!({"map_name": "The Island"})).replacen('{', r#"{"map_name":"Hidden","#, 1);
    let nested =
        signed(json!({"payload": {"a": 1}})).replacen(r#""payload":{"#, r#""payload":{"a":2,"#, 1);
    for body in [top, nested] {
        let a = app.post_heartbeat_raw(body.clone().into_bytes()).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            a.body
        );
        assert_eq!(a.code(), "duplicate_member", "{body}");
    }
    assert_eq!(app.count("heartbeats").await, 0);
    app.stop().await;
}

vigil_tests::on_both_backends!(
    a_forged_flood_never_spends_the_servers_bucket,
    a_replayed_public_heartbeat_receives_no_commands,
    rejection_records_are_bounded,
    unknown_methods_share_one_metric_label,
    require_key_covers_both_live_streams,
    uppercase_uuids_are_refused,
    duplicate_members_are_refused_at_every_depth,
);

/// The SQLite file holds the host's command-signing key and the audit trail: owner-only.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_sqlite_database_file_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn().await;
    let mode = std::fs::metadata(app.dir.path().join("vigil.db"))
        .expect("database file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    app.stop().await;
}

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

/// With `require_signature = false` anyone may post an unsigned heartbeat: a future-dated one
/// must neither lock the real agent out as `replay` nor receive its commands.
async fn unsigned_heartbeats_neither_move_the_replay_clock_nor_receive_commands() {
    let app = TestApp::spawn_with(|c| c.trust.require_signature = false).await;
    let agent = Agent::new("signs-anyway");
    app.register(&agent).await;
    let queued = app
        .admin_post(
            "/v1/admin/servers/signs-anyway/commands",
            &json!({"command": "restart", "ttl_seconds": 600}),
        )
        .await;
    assert_eq!(queued.status, StatusCode::CREATED, "{:?}", queued.body);
    let mut unsigned = agent.heartbeat_at(vigil_tests::now_ms() + 240_000, json!({}));
    unsigned
        .as_object_mut()
        .expect("object")
        .remove("signature");
    let a = app.post_heartbeat(&unsigned).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    assert_eq!(a.body["pending_commands"], json!([]), "proves nothing");
    let real = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(real.status, StatusCode::ACCEPTED, "{:?}", real.body);
    let pending = real.body["pending_commands"].as_array().expect("a list");
    assert_eq!(pending.len(), 1, "{:?}", real.body);
    app.stop().await;
}

/// A heartbeat the gate verified against key version 1, queued behind a rotation to version 2,
/// is refused by the writer (the old key no longer speaks for the server) and not stored.
async fn a_heartbeat_verified_before_a_rotation_is_refused_after_it() {
    use ed25519_dalek::SigningKey;
    let app = TestApp::spawn().await;
    let old = Agent::new("rotating-under");
    app.register(&old).await;
    let body = old.heartbeat(json!({})).to_string();
    let request = axum::http::Request::post("/v1/agent/heartbeat")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .expect("request");
    let admitted = app.state.gate.admit(request).await.expect("admitted");
    // Meanwhile the operator rotates the key.
    let next = Agent::with_key(
        "rotating-under",
        SigningKey::generate(&mut rand::rngs::OsRng),
        2,
    );
    let rotated = app
        .admin_post(
            "/v1/admin/servers/rotating-under/keys",
            &json!({"public_key": next.public_key_b64()}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{:?}", rotated.body);
    let late = app.state.engine.submit_heartbeat(admitted.heartbeat).await;
    assert!(
        matches!(late, Err(vigil::engine::WriteError::KeyVersion(_))),
        "{late:?}"
    );
    assert_eq!(app.count("heartbeats").await, 0);
    assert_eq!(
        app.post_heartbeat(&next.heartbeat(json!({}))).await.status,
        StatusCode::ACCEPTED
    );
    app.stop().await;
}

/// A key with a torsion component would let batch and single verification disagree (and a
/// small-order key verifies anything): refused at registration and at rotation.
async fn keys_with_a_torsion_component_are_refused_at_registration_and_rotation() {
    use base64::Engine as _;
    let honest = Agent::new("torsion");
    let torsion = curve25519_dalek::constants::EIGHT_TORSION[3];
    let mixed = (honest.key.verifying_key().to_edwards() + torsion).compress();
    let mixed = base64::engine::general_purpose::STANDARD.encode(mixed.as_bytes());
    let app = TestApp::spawn().await;
    let a = app
        .admin_post(
            "/v1/admin/servers",
            &json!({"server_id": "torsion", "public_key": mixed}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", a.body);
    assert_eq!(app.count("servers").await, 0);
    app.register(&honest).await;
    let r = app
        .admin_post(
            "/v1/admin/servers/torsion/keys",
            &json!({"public_key": mixed}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(
        app.post_heartbeat(&honest.heartbeat(json!({})))
            .await
            .status,
        StatusCode::ACCEPTED,
        "the honest key still speaks for the server"
    );
    app.stop().await;
}

/// `activate name@version` and the config pin select by name and version: a second, different
/// component claiming a stored `name@version` is refused 409 and not stored.
async fn a_second_component_with_a_stored_name_and_version_is_refused() {
    let app = TestApp::spawn().await;
    let first = vigil_tests::policy_variant(
        "vigil-test-policy-misbehaving",
        &[("VIGIL_TEST_POLICY_VERSION", "8.0.0")],
    );
    let impostor = vigil_tests::policy_variant(
        "vigil-test-policy-misbehaving",
        &[
            ("VIGIL_TEST_POLICY_VERSION", "8.0.0"),
            ("VIGIL_TEST_POLICY_BEHAVIOUR", "trap-live"),
        ],
    );
    assert_ne!(first, impostor);
    let upload = async |bytes: &[u8]| {
        app.send_raw(
            Method::POST,
            "/v1/admin/policies",
            bytes.to_vec(),
            Some(ADMIN_TOKEN),
        )
        .await
    };
    assert_eq!(upload(&first).await.status, StatusCode::CREATED);
    let stored = app.count("policies").await;
    let again = upload(&first).await;
    assert_eq!(
        again.status,
        StatusCode::CREATED,
        "the same bytes: idempotent"
    );
    let refused = upload(&impostor).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{:?}", refused.body);
    assert_eq!(refused.code(), "policy_version_taken");
    assert_eq!(app.count("policies").await, stored, "nothing stored");
    let listed = app.get("/v1/policies").await.body;
    assert!(
        listed["refused"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["reason"]
                .as_str()
                .is_some_and(|e| e.contains("misbehaving@8.0.0")))),
        "{listed:#}"
    );
    app.stop().await;
}

/// Every audit row names the acting credential: `key:<name>` for an API key (the bootstrap
/// token is `admin`), never a generic `admin` for everyone.
async fn audit_rows_name_the_acting_api_key() {
    let app = TestApp::spawn().await;
    let token = vigil::api::auth::create_key(
        &app.db,
        "ops-laptop",
        vigil::store::Scope::Admin,
        vigil_tests::now_ms(),
    )
    .await
    .expect("key");
    let as_key = async |method: Method, path: &str, body: Vec<u8>| {
        app.send_raw(method, path, body, Some(&token)).await
    };
    let agent = Agent::new("audited");
    let added = as_key(
        Method::POST,
        "/v1/admin/servers",
        json!({"server_id": "audited", "public_key": agent.public_key_b64()})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{:?}", added.body);
    let queued = as_key(
        Method::POST,
        "/v1/admin/servers/audited/commands",
        json!({"command": "restart"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(queued.status, StatusCode::CREATED, "{:?}", queued.body);
    let component = vigil_tests::policy_variant(
        "vigil-test-policy-misbehaving",
        &[("VIGIL_TEST_POLICY_VERSION", "8.1.0")],
    );
    let uploaded = as_key(Method::POST, "/v1/admin/policies?activate=true", component).await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
    let rolled = as_key(Method::POST, "/v1/admin/policies/rollback", Vec::new()).await;
    assert_eq!(rolled.status, StatusCode::OK, "{:?}", rolled.body);
    let db = app.db.pool_for_tests();
    let who = async |sql: &'static str| {
        let rows: Vec<String> = vigil_tests::with_pool!(&db, pool =>
            sqlx::query_scalar(sql).fetch_all(pool).await)
        .expect("rows");
        rows
    };
    assert_eq!(
        who("SELECT added_by FROM server_keys WHERE server_id = 'audited'").await,
        ["key:ops-laptop"]
    );
    assert_eq!(
        who("SELECT created_by FROM commands").await,
        ["key:ops-laptop"]
    );
    assert_eq!(
        who("SELECT uploaded_by FROM policies WHERE version = '8.1.0'").await,
        ["key:ops-laptop"]
    );
    let activations = who("SELECT who FROM policy_activations ORDER BY id").await;
    assert_eq!(
        activations[activations.len() - 2..],
        ["key:ops-laptop", "key:ops-laptop"],
        "{activations:?}"
    );
    app.stop().await;
}

/// Keys cost nothing to make: open registration stores a server per fresh key, so it is capped
/// per address (and per host) per hour; past the cap, 429 and nothing stored.
async fn open_registrations_are_capped_per_address_per_hour() {
    let app = TestApp::spawn_with(|c| {
        c.trust.registration = vigil::config::access::Registration::Open;
        c.trust.registrations_per_ip_per_hour = 3;
        c.trust.registrations_per_hour = 5;
    })
    .await;
    let register = async |id: &str, peer: &str| {
        let agent = Agent::new(id);
        let body = agent.heartbeat(json!({"public_key": agent.public_key_b64()}));
        app.send_from(
            Method::POST,
            "/v1/agent/heartbeat",
            body.to_string().into_bytes(),
            peer,
            &[],
        )
        .await
    };
    for i in 0..3 {
        let a = register(&format!("fresh-{i}"), "203.0.113.7:4000").await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    }
    let over = register("fresh-3", "203.0.113.7:4000").await;
    assert_eq!(
        over.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        over.body
    );
    assert_eq!(over.code(), "registration_limited");
    assert!(over.retry_after.is_some(), "{over:?}");
    // Another address has its own allowance, until the host's is spent.
    for i in 4..6 {
        let a = register(&format!("fresh-{i}"), "198.51.100.8:4000").await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    }
    let host_cap = register("fresh-6", "192.0.2.9:4000").await;
    assert_eq!(host_cap.code(), "registration_limited");
    assert_eq!(app.count("servers").await, 5);
    app.stop().await;
}

vigil_tests::on_both_backends!(
    open_registrations_are_capped_per_address_per_hour,
    audit_rows_name_the_acting_api_key,
    a_second_component_with_a_stored_name_and_version_is_refused,
    keys_with_a_torsion_component_are_refused_at_registration_and_rotation,
    unsigned_heartbeats_neither_move_the_replay_clock_nor_receive_commands,
    a_heartbeat_verified_before_a_rotation_is_refused_after_it,
    a_forged_flood_never_spends_the_servers_bucket,
    a_replayed_public_heartbeat_receives_no_commands,
    rejection_records_are_bounded,
    unknown_methods_share_one_metric_label,
    require_key_covers_both_live_streams,
    uppercase_uuids_are_refused,
    duplicate_members_are_refused_at_every_depth,
);

/// A short bootstrap token falls to guessing: the host refuses to start with one, saying why.
#[test]
fn a_bootstrap_token_under_32_bytes_stops_the_start() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("vigil.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let run = vigil_tests::Cli::in_dir(dir.path())
        .env("VIGIL_ADMIN_TOKEN", "secret")
        .run(["serve", "--config", "vigil.toml"]);
    assert!(!run.success(), "{run:?}");
    assert!(run.stderr.contains("at least 32 bytes"), "{}", run.stderr);
    assert!(!dir.path().join("vigil.db").exists(), "nothing was created");
}

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

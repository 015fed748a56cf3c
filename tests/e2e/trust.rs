//! Trust and abuse resistance: open registration, key rotation, live flags from the config
//! file, rate limits, the audit trail.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use ed25519_dalek::SigningKey;
use serde_json::{Map, Value, json};
use vigil::clock::format_rfc3339_ms;
use vigil::config::Config;
use vigil_tests::{ADMIN_TOKEN, Agent, Answer, Cli, ServeProcess, TestApp, now_ms, wait_until};

/// Sends a request as if from `peer`, with extra headers.
async fn admin_get(app: &TestApp, path: &str) -> Answer {
    app.send_raw(Method::GET, path, Vec::new(), Some(ADMIN_TOKEN))
        .await
}

/// A rotation request signed by `current`, naming `next`.
fn rotation_body(server_id: &str, version: u32, current: &SigningKey, next: &SigningKey) -> Value {
    let mut body = Map::new();
    body.insert("server_id".into(), server_id.into());
    body.insert("key_version".into(), version.into());
    body.insert("timestamp".into(), format_rfc3339_ms(now_ms()).into());
    body.insert(
        "next_public_key".into(),
        vigil::ingest::signature::public_key_of(next)
            .to_base64()
            .into(),
    );
    let signature = vigil::ingest::rotation::sign(current, &body).expect("signs");
    body.insert("signature".into(), signature.into());
    Value::Object(body)
}

async fn open_registration_registers_unverified_and_the_id_cannot_be_taken_with_another_key() {
    let app =
        TestApp::spawn_with(|c| c.trust.registration = vigil::config::access::Registration::Open)
            .await;
    let agent = Agent::new("tofu-1");
    let key = agent.public_key_b64();
    let first = app
        .post_heartbeat(&agent.heartbeat(json!({"public_key": key})))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    assert_eq!(first.body["server_registered"], true);
    let server = app.server("tofu-1").await;
    assert_eq!(
        server["is_verified"], false,
        "never verified by registration"
    );
    // The next heartbeat (with or without the key) is an ordinary one.
    let second = app
        .post_heartbeat(&agent.heartbeat(json!({"public_key": key})))
        .await;
    assert_eq!(second.status, StatusCode::ACCEPTED, "{:?}", second.body);
    assert_eq!(second.body["server_registered"], false);

    // Someone else claims the id with their own key: refused, nothing changes.
    let thief = Agent::new("tofu-1");
    let stolen = app
        .post_heartbeat(&thief.heartbeat(json!({"public_key": thief.public_key_b64()})))
        .await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED, "{:?}", stolen.body);
    assert_eq!(stolen.code(), "bad_signature");
    let keys = admin_get(&app, "/v1/admin/servers/tofu-1/keys").await;
    assert_eq!(keys.body["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(keys.body["keys"][0]["public_key"], key);
    assert_eq!(keys.body["keys"][0]["added_by"], "open-registration");

    // A first heartbeat signed by a key other than the one it offers registers nothing.
    let liar = Agent::new("tofu-2");
    let other = Agent::new("tofu-2");
    let lie = app
        .post_heartbeat(&liar.heartbeat(json!({"public_key": other.public_key_b64()})))
        .await;
    assert_eq!(lie.code(), "bad_signature", "{:?}", lie.body);
    assert_eq!(
        app.get("/v1/servers/tofu-2").await.status,
        StatusCode::NOT_FOUND
    );
    // Without a public key an unknown server is still unknown.
    let unknown = app
        .post_heartbeat(&Agent::new("tofu-3").heartbeat(json!({})))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn operator_mode_ignores_offered_keys() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("op-1");
    let answer = app
        .post_heartbeat(&agent.heartbeat(json!({"public_key": agent.public_key_b64()})))
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{:?}", answer.body);
    assert_eq!(answer.code(), "unknown_server");
    app.stop().await;
}

async fn operator_rotation_bumps_the_version_and_the_old_key_gets_409() {
    let app = TestApp::spawn().await;
    let old = Agent::new("rot-1");
    app.register(&old).await;
    assert_eq!(
        app.post_heartbeat(&old.heartbeat(json!({}))).await.status,
        StatusCode::ACCEPTED
    );
    let next_key = SigningKey::generate(&mut rand::rngs::OsRng);
    let new = Agent::with_key("rot-1", next_key, 2);
    let rotated = app
        .admin_post(
            "/v1/admin/servers/rot-1/keys",
            &json!({"public_key": new.public_key_b64()}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{:?}", rotated.body);
    assert_eq!(rotated.body["key_version"], 2);

    let refused = app.post_heartbeat(&old.heartbeat(json!({}))).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{:?}", refused.body);
    assert_eq!(refused.code(), "key_version_mismatch");
    // The old key claiming the new version is a bad signature.
    let old_as_v2 = Agent::with_key("rot-1", old.key.clone(), 2);
    assert_eq!(
        app.post_heartbeat(&old_as_v2.heartbeat(json!({})))
            .await
            .code(),
        "bad_signature"
    );
    let accepted = app.post_heartbeat(&new.heartbeat(json!({}))).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);

    let history = admin_get(&app, "/v1/admin/servers/rot-1/keys").await;
    assert_eq!(history.status, StatusCode::OK, "{:?}", history.body);
    assert_eq!(history.body["key_version"], 2);
    let keys = history.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["public_key"], old.public_key_b64());
    assert_eq!(keys[0]["current"], false);
    assert_eq!(keys[1]["public_key"], new.public_key_b64());
    assert_eq!(keys[1]["added_by"], "admin");
    // A stale compare-and-swap is refused.
    let stale = app
        .admin_post(
            "/v1/admin/servers/rot-1/keys",
            &json!({"public_key": old.public_key_b64(), "expected_key_version": 1}),
        )
        .await;
    assert_eq!(stale.code(), "key_version_mismatch", "{:?}", stale.body);
    // The history is append-only in the database too.
    let edit = app.execute("UPDATE server_keys SET added_by = 'x'").await;
    assert!(edit.is_err());
    // Survives a restart: the engine loads the rotated key.
    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;
    let again = app.post_heartbeat(&new.heartbeat(json!({}))).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
    app.stop().await;
}

async fn agent_rotation_signed_by_the_current_key_then_the_old_key_gets_409() {
    let app = TestApp::spawn().await;
    let old = Agent::new("rot-2");
    app.register(&old).await;
    let next_key = SigningKey::generate(&mut rand::rngs::OsRng);
    let request = rotation_body("rot-2", 1, &old.key, &next_key);
    let rotate = async |body: &Value| {
        let body = body.to_string().into_bytes();
        app.send_raw(Method::POST, "/v1/agent/rotate-key", body, None)
            .await
    };

    // Forged: signed by the next key itself.
    let forged = rotation_body("rot-2", 1, &next_key, &next_key);
    let answer = rotate(&forged).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{:?}", answer.body);
    assert_eq!(answer.code(), "bad_signature");

    let answer = rotate(&request).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["key_version"], 2);

    // Replaying the same rotation: the version it names is no longer current.
    let replay = rotate(&request).await;
    assert_eq!(replay.status, StatusCode::CONFLICT, "{:?}", replay.body);
    assert_eq!(replay.code(), "key_version_mismatch");

    let refused = app.post_heartbeat(&old.heartbeat(json!({}))).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.code(), "key_version_mismatch");
    let new = Agent::with_key("rot-2", next_key, 2);
    let accepted = app.post_heartbeat(&new.heartbeat(json!({}))).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    let history = admin_get(&app, "/v1/admin/servers/rot-2/keys").await;
    assert_eq!(history.body["keys"][1]["added_by"], "agent");
    assert_eq!(
        app.rejection_codes().await,
        vec![
            "bad_signature",
            "key_version_mismatch",
            "key_version_mismatch"
        ]
    );
    app.stop().await;
}

async fn rate_limits_per_server_and_per_ip_answer_429_and_write_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit.per_server_per_minute = 1;
        c.rate_limit.per_server_burst = 2;
        c.rate_limit.per_ip_per_minute = 1;
        c.rate_limit.per_ip_burst = 4;
        c.server.trusted_proxies = vec!["10.0.0.0/8".parse().expect("net")];
    })
    .await;
    let agent = Agent::new("rl-1");
    app.register(&agent).await;
    let post = |ip: &'static str, body: Value, xff: Option<&'static str>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> =
                xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
            app.send_from(
                Method::POST,
                "/v1/agent/heartbeat",
                body.to_string().into_bytes(),
                ip,
                &headers,
            )
            .await
        }
    };
    // Per server: a burst of 2, then 429 whatever the address.
    for _ in 0..2 {
        let a = post("192.0.2.1:1000", agent.heartbeat(json!({})), None).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    }
    let rows = (app.count("heartbeats").await, app.count("rejections").await);
    let limited = post("192.0.2.2:1000", agent.heartbeat(json!({})), None).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        limited.body
    );
    assert_eq!(limited.code(), "rate_limited");
    assert_eq!(limited.content_type, "application/problem+json");
    let retry: u64 = limited
        .retry_after
        .as_deref()
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry >= 1);
    assert_eq!(
        (app.count("heartbeats").await, app.count("rejections").await),
        rows,
        "a limited request writes no row"
    );
    // A forged heartbeat never reaches the server's bucket (an unproven request spends only
    // its source's): it is refused for its signature, with one bounded audit row.
    let forged = post(
        "192.0.2.3:1000",
        Agent::new("rl-1").heartbeat(json!({})),
        None,
    )
    .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{:?}", forged.body);
    assert_eq!(forged.code(), "bad_signature");
    assert_eq!(
        (app.count("heartbeats").await, app.count("rejections").await),
        (rows.0, rows.1 + 1),
    );

    // Per IP: 4 requests from one address (any server, even unknown), then 429.
    for i in 0..4 {
        let a = post(
            "198.51.100.7:1000",
            Agent::new(&format!("x-{i}")).heartbeat(json!({})),
            None,
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{:?}", a.body);
    }
    let rows = (app.count("heartbeats").await, app.count("rejections").await);
    let a = post(
        "198.51.100.7:1000",
        Agent::new("x-9").heartbeat(json!({})),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.retry_after.is_some());
    assert_eq!(
        (app.count("heartbeats").await, app.count("rejections").await),
        rows
    );
    // Another address is not limited.
    let a = post(
        "198.51.100.8:1000",
        Agent::new("x-10").heartbeat(json!({})),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // X-Forwarded-For from an untrusted peer is ignored: still the limited peer.
    let a = post(
        "198.51.100.7:1000",
        Agent::new("x-11").heartbeat(json!({})),
        Some("203.0.113.5"),
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // Through a trusted proxy the forwarded client is limited, not the proxy.
    for i in 0..4 {
        let a = post(
            "10.1.2.3:1000",
            Agent::new(&format!("p-{i}")).heartbeat(json!({})),
            Some("198.51.100.9"),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{:?}", a.body);
    }
    let a = post(
        "10.1.2.3:1000",
        Agent::new("p-9").heartbeat(json!({})),
        Some("198.51.100.9"),
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let a = post(
        "10.1.2.3:1000",
        Agent::new("p-10").heartbeat(json!({})),
        Some("198.51.100.10"),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let ips: Vec<Option<String>> = vigil_tests::with_pool!(&app.db.pool_for_tests(), pool =>
        sqlx::query_scalar("SELECT source_ip FROM rejections ORDER BY id DESC LIMIT 1")
            .fetch_all(pool)
            .await)
    .expect("rows");
    assert_eq!(ips, vec![Some("198.51.100.10".to_owned())]);
    app.stop().await;
}

async fn a_burst_of_forged_heartbeats_caps_a_verified_server_at_yellow_alerts_and_is_listed() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("victim-1");
    app.register(&agent).await;
    app.verify("victim-1").await;
    for _ in 0..3 {
        let a = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
        assert_eq!(a.status, StatusCode::ACCEPTED);
    }
    assert_ne!(app.server("victim-1").await["confidence"], "red");
    let forger = Agent::new("victim-1");
    for i in 0..5 {
        let peer = format!("203.0.113.{i}:4000");
        let a = app
            .send_from(
                Method::POST,
                "/v1/agent/heartbeat",
                forger.heartbeat(json!({})).to_string().into_bytes(),
                &peer,
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{:?}", a.body);
        assert_eq!(a.code(), "bad_signature");
    }
    // Confidence is not a weapon: anyone can forge, so a burst caps the victim at yellow
    // (with a badge and an operator alert), never red.
    let victim = app.server("victim-1").await;
    assert_eq!(victim["confidence"], "yellow", "{victim}");
    assert_eq!(victim["effective_status"], "online", "{victim}");
    assert!(
        victim["badges"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b == "under-attack")),
        "{victim}"
    );
    let kinds: Vec<String> = vigil_tests::with_pool!(&app.db.pool_for_tests(), pool =>
        sqlx::query_scalar("SELECT kind FROM alert_outbox WHERE server_id = 'victim-1'")
            .fetch_all(pool)
            .await)
    .expect("alerts");
    assert_eq!(
        kinds.iter().filter(|k| *k == "spoof_burst").count(),
        1,
        "one burst alert: {kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k == "confidence_red"), "{kinds:?}");

    let listed = admin_get(
        &app,
        "/v1/admin/rejections?server=victim-1&code=bad_signature",
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let rows = listed.body["rejections"].as_array().expect("rows");
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["claimed_server_id"], "victim-1");
    assert_eq!(rows[0]["source_ip"], "203.0.113.4", "newest first");
    assert_eq!(rows[0]["http_status"], 401);
    assert!(
        rows[0]["received_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(rows[0]["seq"].as_i64().is_some(), "folded into the policy");
    // Paging with the cursor, and the other filters.
    let page = admin_get(&app, "/v1/admin/rejections?server=victim-1&limit=3").await;
    assert_eq!(page.body["rejections"].as_array().map(Vec::len), Some(3));
    let cursor = page.body["next_cursor"].as_i64().expect("cursor");
    let rest = admin_get(
        &app,
        &format!("/v1/admin/rejections?server=victim-1&limit=3&cursor={cursor}"),
    )
    .await;
    assert_eq!(rest.body["rejections"].as_array().map(Vec::len), Some(2));
    assert_eq!(rest.body["next_cursor"], Value::Null);
    let none = admin_get(&app, "/v1/admin/rejections?code=replay").await;
    assert_eq!(none.body["rejections"], json!([]));
    let future = format_rfc3339_ms(now_ms() + 60_000);
    let later = admin_get(&app, &format!("/v1/admin/rejections?since={future}")).await;
    assert_eq!(later.body["rejections"], json!([]));
    let bad = admin_get(&app, "/v1/admin/rejections?limit=0").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Admin only.
    let anonymous = app.get("/v1/admin/rejections").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// Writes a config file naming the app's database.
fn write_config(path: &Path, db: &Path, extra: &str) {
    let limits = if extra.contains("[rate_limit]") {
        ""
    } else {
        "[rate_limit]\nper_server_per_minute = 0\nper_ip_per_minute = 0\n"
    };
    let text = format!(
        "[storage]\nurl = \"sqlite://{}\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n{limits}{extra}",
        db.display()
    );
    // Write then rename, as editors do, so the watcher never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// Waits until the config in force satisfies `done` (the reload runs on its own task).
async fn until_config(app: &TestApp, done: impl Fn(&Config) -> bool) {
    let mut changes = app.state.config.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&app.state.config.current()) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            tokio::time::timeout(left, changes.changed()).await.is_ok(),
            "the config file edit was not put in force"
        );
    }
}

async fn flags_flip_by_editing_the_config_file_and_an_invalid_edit_keeps_the_old_config() {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let db = dir.path().join("vigil.db");
    let path = dir.path().join("vigil.toml");
    write_config(&path, &db, "");
    let app = TestApp::spawn_from_file(dir.clone(), &path).await;
    let agent = Agent::new("flag-1");
    app.register(&agent).await;
    let mut unsigned = agent.heartbeat(json!({}));
    unsigned
        .as_object_mut()
        .expect("object")
        .remove("signature");

    // require_signature: on by default, then off.
    assert_eq!(app.post_heartbeat(&unsigned).await.code(), "missing_field");
    write_config(&path, &db, "[trust]\nrequire_signature = false\n");
    until_config(&app, |c| !c.trust.require_signature).await;
    let mut unsigned = agent.heartbeat(json!({}));
    unsigned
        .as_object_mut()
        .expect("object")
        .remove("signature");
    let a = app.post_heartbeat(&unsigned).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    let stored = app.get("/v1/servers/flag-1/heartbeats").await;
    assert_eq!(
        stored.body["heartbeats"][0]["signed"], false,
        "{:?}",
        stored.body
    );
    // A signature that is present must still verify.
    let forged = Agent::new("flag-1").heartbeat(json!({}));
    assert_eq!(app.post_heartbeat(&forged).await.code(), "bad_signature");

    // An invalid edit is refused: the previous configuration stays in force.
    let watcher = app.config_watcher.as_ref().expect("watching");
    for (n, bad) in [
        "[trust]\nrequire_signature = \"maybe\"\n",
        "[trust]\nrequire_signature = true\nmax_clock_skew_seconds = 999999999\n",
        "[trust]\nrequire_signatures = true\n",
    ]
    .into_iter()
    .enumerate()
    {
        let refused = watcher.refused();
        write_config(&path, &db, bad);
        let every = Duration::from_millis(50);
        wait_until(
            Duration::from_secs(20),
            every,
            async || watcher.refused(),
            |r| *r != refused,
        )
        .await
        .unwrap_or_else(|_| panic!("edit {n} was not seen"));
        let config = app.state.config.current();
        assert!(!config.trust.require_signature, "edit {n}");
        assert_eq!(config.trust.max_clock_skew_seconds, 300, "edit {n}");
        let mut unsigned = agent.heartbeat(json!({}));
        unsigned
            .as_object_mut()
            .expect("object")
            .remove("signature");
        assert_eq!(
            app.post_heartbeat(&unsigned).await.status,
            StatusCode::ACCEPTED
        );
    }

    // require_verified, then max_clock_skew_seconds.
    write_config(
        &path,
        &db,
        "[trust]\nrequire_verified = true\nmax_clock_skew_seconds = 5\n",
    );
    until_config(&app, |c| c.trust.require_verified).await;
    let a = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.body);
    assert_eq!(a.code(), "server_unverified");
    app.verify("flag-1").await;
    let skewed = agent.heartbeat_at(now_ms() + 60_000, json!({}));
    assert_eq!(app.post_heartbeat(&skewed).await.code(), "clock_skew");
    assert_eq!(
        app.post_heartbeat(&agent.heartbeat(json!({}))).await.status,
        StatusCode::ACCEPTED
    );

    // registration = "open".
    let newcomer = Agent::new("flag-2");
    let first = newcomer.heartbeat(json!({"public_key": newcomer.public_key_b64()}));
    assert_eq!(app.post_heartbeat(&first).await.code(), "unknown_server");
    write_config(&path, &db, "[trust]\nregistration = \"open\"\n");
    until_config(&app, |c| {
        c.trust.registration == vigil::config::access::Registration::Open
    })
    .await;
    let first = newcomer.heartbeat(json!({"public_key": newcomer.public_key_b64()}));
    let a = app.post_heartbeat(&first).await;
    assert_eq!(a.body["server_registered"], true, "{:?}", a.body);

    // Rate limits.
    write_config(
        &path,
        &db,
        "[rate_limit]\nper_server_per_minute = 1\nper_server_burst = 1\n",
    );
    until_config(&app, |c| c.rate_limit.per_server_burst == 1).await;
    assert_eq!(
        app.post_heartbeat(&newcomer.heartbeat(json!({})))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.post_heartbeat(&newcomer.heartbeat(json!({})))
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.stop().await;
}

async fn admin_routes_refuse_missing_wrong_revoked_and_read_scoped_keys() {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    // The database the test app below opens too (SQLite file or PostgreSQL database).
    let db = vigil_tests::TestBackend::current()
        .database_url(dir.path())
        .await;
    std::fs::write(
        dir.path().join("vigil.toml"),
        format!("[storage]\nurl = \"{db}\"\n"),
    )
    .expect("config");
    let vigil = Cli::in_dir(dir.path());
    let create = |name: &str, scope: &str| {
        let args = ["admin", "key", "create", name, "--scope", scope];
        vigil
            .ok([&args[..], &["--config", "vigil.toml"]].concat())
            .trim()
            .to_owned()
    };
    let ops = create("ops", "admin");
    let reader = create("dashboard", "read");
    let doomed = create("laptop", "admin");
    assert!(ops.starts_with("vgl_") && ops != doomed);
    // Names are unique.
    assert!(
        !vigil
            .run(["admin", "key", "create", "ops", "--config", "vigil.toml"])
            .success()
    );
    vigil.ok(["admin", "key", "revoke", "laptop", "--config", "vigil.toml"]);
    let list = vigil.run(["admin", "key", "list", "--config", "vigil.toml"]);
    let listed: Value = serde_json::from_str(&list.stdout).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    assert!(!list.stdout.contains(&ops), "never prints a secret");
    assert_eq!(listed[2]["name"], "laptop");
    assert!(listed[2]["revoked_at_ms"].as_i64().is_some());
    // Only hashes are stored.
    let stored: Vec<String> = {
        let store = vigil::store::Store::open(&db, 1).await.expect("opens");
        vigil_tests::with_pool!(&store.pool_for_tests(), pool => sqlx::query_scalar("SELECT key_sha256 FROM admin_keys")
            .fetch_all(pool)
            .await)
        .expect("rows")
    };
    assert!(stored.iter().all(|h| h.len() == 64 && !h.contains("vgl_")));

    // A host without a bootstrap token: the API keys are the only credentials.
    let app = TestApp::spawn_in(dir.clone(), |c| c.admin.token = None).await;
    let agent = Agent::new("keyed-1");
    let add = json!({"server_id": "keyed-1", "public_key": agent.public_key_b64()})
        .to_string()
        .into_bytes();
    let post = |token: Option<&str>| {
        let (app, add) = (&app, add.clone());
        let token = token.map(str::to_owned);
        async move {
            app.send_raw(Method::POST, "/v1/admin/servers", add, token.as_deref())
                .await
        }
    };
    for (what, token, status, code) in [
        ("missing", None, 401, "unauthorized"),
        ("wrong", Some("vgl_not-a-real-key"), 401, "unauthorized"),
        ("revoked", Some(doomed.as_str()), 401, "unauthorized"),
        (
            "read-scoped",
            Some(reader.as_str()),
            403,
            "insufficient_scope",
        ),
    ] {
        let a = post(token).await;
        assert_eq!(
            (a.status.as_u16(), a.code()),
            (status, code),
            "{what}: {:?}",
            a.body
        );
    }
    assert_eq!(app.count("servers").await, 0);
    let a = post(Some(&ops)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    // Read routes accept the read key; the key history records who rotated.
    let keys = app
        .send_raw(
            Method::GET,
            "/v1/admin/servers/keyed-1/keys",
            Vec::new(),
            Some(&reader),
        )
        .await;
    assert_eq!(keys.status, StatusCode::OK, "{:?}", keys.body);
    let next = Agent::new("keyed-1");
    let rotated = app
        .send_raw(
            Method::POST,
            "/v1/admin/servers/keyed-1/keys",
            json!({"public_key": next.public_key_b64()})
                .to_string()
                .into_bytes(),
            Some(&ops),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{:?}", rotated.body);
    let keys = app
        .send_raw(
            Method::GET,
            "/v1/admin/servers/keyed-1/keys",
            Vec::new(),
            Some(&ops),
        )
        .await;
    assert_eq!(keys.body["keys"][1]["added_by"], "key:ops");
    // Revoking while the host runs acts on the next request.
    assert!(
        vigil
            .run(["admin", "key", "revoke", "ops", "--config", "vigil.toml"])
            .success()
    );
    assert_eq!(post(Some(&ops)).await.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn the_directory_needs_a_key_only_when_configured() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/v1/servers").await.status, StatusCode::OK);
    app.stop().await;
    let app = TestApp::spawn_with(|c| c.directory.require_key = true).await;
    let reader =
        vigil::api::auth::create_key(&app.db, "reader", vigil::store::Scope::Read, now_ms())
            .await
            .expect("created");
    for path in ["/v1/servers", "/v1/servers/x", "/v1/policies"] {
        let a = app.get(path).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let a = app
        .send_raw(Method::GET, "/v1/servers", Vec::new(), Some(&reader))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let a = app
        .send_raw(Method::GET, "/v1/policies", Vec::new(), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    // Health stays public, and the agent endpoint is not a directory read.
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    app.stop().await;
}

async fn unsigned_heartbeats_are_stored_as_unsigned_and_replay_to_the_same_snapshot() {
    let app = TestApp::spawn_with(|c| c.trust.require_signature = false).await;
    let agent = Agent::new("unsigned-1");
    app.register(&agent).await;
    app.verify("unsigned-1").await;
    for i in 0..6u32 {
        let mut body = agent.heartbeat(json!({"players_current": i}));
        if i % 2 == 0 {
            body.as_object_mut().expect("object").remove("signature");
        }
        let a = app.post_heartbeat(&body).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    }
    let signatures: Vec<String> = vigil_tests::with_pool!(&app.db.pool_for_tests(), pool =>
        sqlx::query_scalar("SELECT signature FROM heartbeats ORDER BY seq")
            .fetch_all(pool)
            .await)
    .expect("rows");
    assert_eq!(
        signatures.iter().map(|s| !s.is_empty()).collect::<Vec<_>>(),
        vec![false, true, false, true, false, true]
    );
    let live = app
        .store
        .get_server("unsigned-1")
        .await
        .expect("read")
        .expect("exists");
    let history = app.store.history("unsigned-1", 0).await.expect("history");
    let (rebuilt, _) = vigil::engine::replay::replay(
        &app.state.engine.policy(),
        &live,
        &history,
        live.snapshot.evaluated_at_ms,
    )
    .expect("replays");
    assert_eq!(rebuilt.snapshot, live.snapshot);
    // The last heartbeat was unsigned: the default policy does not grant green to it.
    let mut last = agent.heartbeat(json!({}));
    last.as_object_mut().expect("object").remove("signature");
    let a = app.post_heartbeat(&last).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_ne!(a.body["confidence"], "green", "{:?}", a.body);
    app.stop().await;
}

#[test]
fn rotation_with_the_real_cli_operator_then_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil = Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", ADMIN_TOKEN);
    let host = ServeProcess::start(
        &vigil,
        "[storage]\nurl = \"sqlite://vigil.db\"\n\
         [rate_limit]\nper_server_per_minute = 0\nper_ip_per_minute = 0\n",
    );
    let vigil = vigil.env("VIGIL_URL", host.url());
    for key in ["k1.key", "k2.key", "k3.key"] {
        vigil.ok(["keygen", "--out", key]);
    }
    vigil.ok(["server", "add", "cli-1", "--key", "k1.key"]);
    let send = |key: &str, version: &str| {
        vigil.run([
            "send",
            "--server-id",
            "cli-1",
            "--key",
            key,
            "--key-version",
            version,
        ])
    };
    let ok = |run: vigil_tests::Run| {
        assert!(run.success(), "{}", run.stderr);
        run.stdout
    };
    ok(send("k1.key", "1"));
    // Operator rotation to k2.
    let rotated = vigil.ok(["server", "rotate-key", "cli-1", "--key", "k2.key"]);
    assert!(rotated.contains("\"key_version\": 2"), "{rotated}");
    let old = send("k1.key", "1");
    assert!(!old.success());
    assert!(old.stderr.contains("key_version_mismatch"));
    ok(send("k2.key", "2"));
    // Agent rotation from k2 to k3, signed by k2.
    let rotated = vigil.ok([
        "rotate-key",
        "--server-id",
        "cli-1",
        "--key",
        "k2.key",
        "--next-key",
        "k3.key",
        "--key-version",
        "2",
    ]);
    assert!(rotated.contains("\"key_version\": 3"), "{rotated}");
    assert!(!send("k2.key", "2").success());
    ok(send("k3.key", "3"));
    let history = vigil.ok(["server", "keys", "cli-1"]);
    let history: Value = serde_json::from_str(&history).expect("json");
    let by: Vec<&str> = history["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["added_by"].as_str())
        .collect();
    assert_eq!(by, vec!["admin", "admin", "agent"]);
    host.stop();
}

vigil_tests::on_both_backends!(
    open_registration_registers_unverified_and_the_id_cannot_be_taken_with_another_key,
    operator_mode_ignores_offered_keys,
    operator_rotation_bumps_the_version_and_the_old_key_gets_409,
    agent_rotation_signed_by_the_current_key_then_the_old_key_gets_409,
    rate_limits_per_server_and_per_ip_answer_429_and_write_nothing,
    a_burst_of_forged_heartbeats_caps_a_verified_server_at_yellow_alerts_and_is_listed,
    flags_flip_by_editing_the_config_file_and_an_invalid_edit_keeps_the_old_config,
    admin_routes_refuse_missing_wrong_revoked_and_read_scoped_keys,
    the_directory_needs_a_key_only_when_configured,
    unsigned_heartbeats_are_stored_as_unsigned_and_replay_to_the_same_snapshot,
);

//! Existing clients, unchanged (issue 17): per-server ingest tokens and the compat route
//! families (Healthchecks pings, Uptime Kuma pushes, the Sprint-4 heartbeat path), each
//! driven through the real router with the exact request shapes of the current clients.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use vigil_tests::{ADMIN_TOKEN, Agent, Answer, TestApp};

/// Mints an ingest token of `kind` for `server_id`; the whole answer.
async fn mint(app: &TestApp, server_id: &str, kind: &str) -> Value {
    let answer = app
        .admin_post(
            &format!("/v1/admin/servers/{server_id}/tokens"),
            &json!({ "kind": kind }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    answer.body
}

/// `method path` with `body`, no credential but what the path carries.
async fn call(app: &TestApp, method: Method, path: &str, body: &str) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("user-agent", "curl/8.5.0")
        .body(Body::from(body.to_owned()))
        .expect("request");
    app.send(request).await
}

/// The stored heartbeats of `server_id`: (auth, body, original_body), oldest first.
async fn stored(app: &TestApp, server_id: &str) -> Vec<(String, Value, Option<String>)> {
    let rows: Vec<(String, String, Option<String>)> = vigil_tests::with_pool!(
        &app.db.pool_for_tests(),
        pool => sqlx::query_as(
            "SELECT auth, body, original_body FROM heartbeats WHERE server_id = $1 ORDER BY seq",
        )
        .bind(server_id)
        .fetch_all(pool)
        .await
    )
    .expect("rows");
    rows.into_iter()
        .map(|(auth, body, original)| (auth, serde_json::from_str(&body).expect("json"), original))
        .collect()
}

async fn enabled_app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.compat.healthchecks.enabled = true;
        c.compat.uptime_kuma.enabled = true;
        c.compat.sprint4.enabled = true;
    })
    .await
}

async fn tokens_are_shown_once_stored_hashed_listed_without_secret_and_revocable() {
    let app = enabled_app().await;
    let agent = Agent::new("cron-1");
    app.register(&agent).await;
    let minted = mint(&app, "cron-1", "ping").await;
    let token = minted["token"].as_str().expect("token").to_owned();
    assert_eq!(token.len(), 36, "a ping token is a UUID: {token}");
    assert_eq!(minted["kind"], "ping");
    assert_eq!(minted["created_by"], "admin");
    // Stored as its SHA-256 only.
    let hash = vigil::api::auth::hash(&token);
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM ingest_tokens WHERE token_sha256 = '{hash}'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM ingest_tokens WHERE token_sha256 = '{token}' OR prefix = '{token}'"
        ))
        .await,
        0
    );
    // Listed without the secret.
    let list = app
        .send_raw(
            Method::GET,
            "/v1/admin/servers/cron-1/tokens",
            Vec::new(),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    assert!(!list.body.to_string().contains(&token), "{}", list.body);
    assert_eq!(list.body["tokens"][0]["prefix"], token[..8]);
    assert_eq!(list.body["tokens"][0]["revoked_at"], Value::Null);
    // No admin credential: nothing minted, nothing listed.
    let anonymous = app
        .send_raw(
            Method::POST,
            "/v1/admin/servers/cron-1/tokens",
            br#"{"kind":"ping"}"#.to_vec(),
            None,
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.send_raw(
            Method::GET,
            "/v1/admin/servers/cron-1/tokens",
            Vec::new(),
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    // An unknown server gets no token; an unknown kind is refused.
    let unknown = app
        .admin_post("/v1/admin/servers/nobody/tokens", &json!({"kind": "ping"}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad = app
        .admin_post("/v1/admin/servers/cron-1/tokens", &json!({"kind": "root"}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    // The token works, then is revoked and refused from the next request on.
    let ok = call(&app, Method::GET, &format!("/ping/{token}"), "").await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let id = minted["id"].as_i64().expect("id");
    let revoked = app
        .send_raw(
            Method::DELETE,
            &format!("/v1/admin/servers/cron-1/tokens/{id}"),
            Vec::new(),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    let heartbeats = app.count("heartbeats").await;
    let rejections = app.count("rejections").await;
    let refused = call(&app, Method::POST, &format!("/ping/{token}"), "done").await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert_eq!(refused.body, "not found");
    assert_eq!(app.count("heartbeats").await, heartbeats);
    assert_eq!(app.count("rejections").await, rejections + 1);
    // A second revocation finds no active token.
    let again = app
        .send_raw(
            Method::DELETE,
            &format!("/v1/admin/servers/cron-1/tokens/{id}"),
            Vec::new(),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let list = app
        .send_raw(
            Method::GET,
            "/v1/admin/servers/cron-1/tokens",
            Vec::new(),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(list.body["tokens"][0]["revoked_by"], "admin");
    app.stop().await;
}

async fn healthchecks_pings_get_healthchecks_answers_and_are_stored_as_token_runs() {
    let app = enabled_app().await;
    let agent = Agent::new("backup-1");
    app.register(&agent).await;
    app.verify("backup-1").await;
    let uuid = mint(&app, "backup-1", "ping").await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let rid = "5d5c1dd4-6a55-4c31-9c0d-1b2a3c4d5e6f";
    for (method, path, body) in [
        (Method::GET, format!("/ping/{uuid}"), ""),
        (Method::HEAD, format!("/ping/{uuid}"), ""),
        (Method::POST, format!("/ping/{uuid}/start?rid={rid}"), ""),
        (
            Method::POST,
            format!("/ping/{uuid}?rid={rid}"),
            "backup done\n42 files\n",
        ),
        (Method::GET, format!("/ping/{uuid}/fail"), ""),
        (Method::POST, format!("/ping/{uuid}/0"), "ok"),
        (Method::POST, format!("/ping/{uuid}/7"), "exit 7"),
    ] {
        let answer = call(&app, method.clone(), &path, body).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{method} {path}: {:?}",
            answer.body
        );
        assert!(
            answer.content_type.starts_with("text/plain"),
            "{}",
            answer.content_type
        );
        if method != Method::HEAD {
            assert_eq!(answer.body, "OK", "{path}");
        }
    }
    let rows = stored(&app, "backup-1").await;
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|(auth, _, _)| auth == "token"), "{rows:?}");
    let runs: Vec<Value> = rows
        .iter()
        .map(|(_, body, _)| body["run"].clone())
        .collect();
    assert_eq!(
        runs,
        vec![
            json!({"phase": "success"}),
            json!({"phase": "success"}),
            json!({"phase": "start", "run_id": rid}),
            json!({"phase": "success", "run_id": rid}),
            json!({"phase": "fail"}),
            json!({"phase": "success", "exit_code": 0}),
            json!({"phase": "fail", "exit_code": 7}),
        ]
    );
    // The job's output is kept as sent; the v1 body names no signature.
    assert_eq!(rows[3].2.as_deref(), Some("backup done\n42 files\n"));
    assert_eq!(rows[6].2.as_deref(), Some("exit 7"));
    assert!(
        rows.iter()
            .all(|(_, body, _)| body.get("signature").is_none())
    );
    // The directory shows how each heartbeat was authenticated.
    let listed = app.get("/v1/servers/backup-1/heartbeats?limit=1").await;
    assert_eq!(
        listed.body["heartbeats"][0]["auth"], "token",
        "{:?}",
        listed.body
    );
    assert_eq!(listed.body["heartbeats"][0]["signed"], false);
    // Bad exit status: 400 in Healthchecks' words, nothing stored, no lookup made.
    let rejections = app.count("rejections").await;
    let bad = call(&app, Method::GET, &format!("/ping/{uuid}/256"), "").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body, "invalid url format");
    assert_eq!(app.count("rejections").await, rejections);
    // An unknown uuid: 404 `not found`, one bounded rejection without the token.
    let wrong = "0b6a1f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    let missing = call(
        &app,
        Method::POST,
        &format!("/ping/{wrong}"),
        &"x".repeat(5000),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, "not found");
    assert_eq!(app.count("heartbeats").await, 7);
    assert_eq!(app.count("rejections").await, rejections + 1);
    assert_eq!(
        app.scalar(&format!(
            "SELECT COUNT(*) FROM rejections WHERE code = 'unknown_token' \
             AND claimed_server_id IS NULL AND body_sha256 IS NULL \
             AND detail NOT LIKE '%{wrong}%'"
        ))
        .await,
        1
    );
    // A ping token opens no push route (kinds are separate).
    let crossed = call(
        &app,
        Method::GET,
        &format!("/api/push/{uuid}?status=up"),
        "",
    )
    .await;
    assert_eq!(crossed.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn a_token_heartbeat_is_yellow_at_best_where_a_signed_one_is_green() {
    let app = TestApp::spawn_with(|c| {
        c.compat.healthchecks.enabled = true;
        c.compat.uptime_kuma.enabled = true;
        // A new server may be green from its first signed heartbeat.
        c.policy
            .params
            .insert("settle_seconds".into(), toml::Value::Integer(0));
    })
    .await;
    let agent = Agent::new("mixed-1");
    app.register(&agent).await;
    app.verify("mixed-1").await;
    let signed = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(signed.status, StatusCode::ACCEPTED, "{:?}", signed.body);
    assert_eq!(signed.body["confidence"], "green", "{:?}", signed.body);
    let uuid = mint(&app, "mixed-1", "ping").await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let push = mint(&app, "mixed-1", "push").await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        call(&app, Method::GET, &format!("/ping/{uuid}"), "")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(app.server("mixed-1").await["confidence"], "yellow");
    let a = call(
        &app,
        Method::GET,
        &format!("/api/push/{push}?status=up&msg=OK&ping=3"),
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(app.server("mixed-1").await["confidence"], "yellow");
    // The signed agent is still accepted: the tokens moved no replay clock.
    let signed = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(signed.status, StatusCode::ACCEPTED, "{:?}", signed.body);
    let auths: Vec<String> = stored(&app, "mixed-1")
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(auths, ["signature", "token", "token", "signature"]);
    app.stop().await;
}

async fn a_1_3_policy_sees_how_each_heartbeat_was_authenticated() {
    // The misbehaving test policy's `auth-badge` mode badges the auth kind it was handed.
    let path = vigil_tests::misbehaving_policy();
    let app = TestApp::spawn_with(|c| {
        c.compat.healthchecks.enabled = true;
        c.trust.require_signature = false;
        c.policy.component = Some(path);
        c.policy
            .params
            .insert("behaviour".into(), toml::Value::String("auth-badge".into()));
    })
    .await;
    let agent = Agent::new("kinds-1");
    app.register(&agent).await;
    let badges = |server: Value| server["badges"].clone();
    let signed = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(signed.status, StatusCode::ACCEPTED, "{:?}", signed.body);
    assert_eq!(
        badges(app.server("kinds-1").await),
        json!(["auth-signature"])
    );
    let uuid = mint(&app, "kinds-1", "ping").await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let ping = call(&app, Method::POST, &format!("/ping/{uuid}"), "done").await;
    assert_eq!(ping.status, StatusCode::OK);
    assert_eq!(badges(app.server("kinds-1").await), json!(["auth-token"]));
    let unsigned = app
        .post_heartbeat(&json!({
            "server_id": "kinds-1",
            "key_version": 1,
            "timestamp": vigil::clock::format_rfc3339_ms(vigil_tests::now_ms() + 1_000),
        }))
        .await;
    assert_eq!(unsigned.status, StatusCode::ACCEPTED, "{:?}", unsigned.body);
    assert_eq!(badges(app.server("kinds-1").await), json!(["auth-network"]));
    let auths: Vec<String> = stored(&app, "kinds-1")
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(auths, ["signature", "token", "network"]);
    app.stop().await;
}

/// The captured request of a HomelabCmd 2.0.0 agent: (headers, body as the agent serialises it).
fn homelabcmd_fixture() -> (Vec<(String, String)>, Value) {
    let text = include_str!("../fixtures/homelabcmd-agent-2.0.0-heartbeat.json");
    let fixture: Value = serde_json::from_str(text).expect("fixture");
    assert_eq!(fixture["path"], "/api/v1/agents/heartbeat");
    let headers = fixture["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_owned()))
        .collect();
    (headers, fixture["body"].clone())
}

/// `POST /api/v1/agents/heartbeat` with the fixture's headers, `key` as `X-API-Key` (or
/// none), extra headers and `body` serialised as httpx does (compact JSON).
async fn homelabcmd_post(
    app: &TestApp,
    key: Option<&str>,
    extra: &[(&str, &str)],
    body: &Value,
) -> Answer {
    let (headers, _) = homelabcmd_fixture();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/agents/heartbeat");
    for (name, value) in &headers {
        if name == "X-API-Key" {
            if let Some(key) = key {
                request = request.header("X-API-Key", key);
            }
        } else {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    app.send(request.body(Body::from(body.to_string())).expect("request"))
        .await
}

async fn homelabcmd_agents_are_accepted_unchanged_and_registered() {
    let app = TestApp::spawn_with(|c| {
        c.compat.homelabcmd.enabled = true;
        c.compat.homelabcmd.auto_register = true;
    })
    .await;
    let key = vigil::api::auth::create_key(
        &app.db,
        "homelab",
        vigil::store::Scope::Ingest,
        vigil_tests::now_ms(),
    )
    .await
    .expect("key");
    let (_, body) = homelabcmd_fixture();
    assert!(body.to_string().len() > 20_000, "the whole package list");

    // No key, a wrong key, an admin key: 401, and nothing but a bounded rejection is stored.
    let none = homelabcmd_post(&app, None, &[], &body).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.body["detail"].is_string(), "{:?}", none.body);
    let wrong = homelabcmd_post(&app, Some("vgl_not-a-key"), &[], &body).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let reader = vigil::api::auth::create_key(
        &app.db,
        "reader",
        vigil::store::Scope::Read,
        vigil_tests::now_ms(),
    )
    .await
    .expect("key");
    let other_scope = homelabcmd_post(&app, Some(&reader), &[], &body).await;
    assert_eq!(other_scope.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.count("heartbeats").await, 0);
    assert_eq!(app.count("servers").await, 0);
    let details: Vec<(String, Option<String>)> = vigil_tests::with_pool!(
        &app.db.pool_for_tests(),
        pool => sqlx::query_as("SELECT code, body_sha256 FROM rejections ORDER BY id")
            .fetch_all(pool)
            .await
    )
    .expect("rows");
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(
        details
            .iter()
            .all(|(code, body)| code == "unknown_api_key" && body.is_none())
    );
    // An ingest key opens no admin or read route.
    let admin = app
        .send(
            vigil_tests::request(Method::GET, "/v1/admin/rejections", Some(&key))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(admin.status, StatusCode::FORBIDDEN);

    // The captured request, unchanged: registered, answered as HomelabCmd answers.
    let first = homelabcmd_post(&app, Some(&key), &[], &body).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(
        first.body,
        json!({"status": "ok", "server_registered": true, "pending_commands": []})
    );
    let again = homelabcmd_post(&app, Some(&key), &[], &body).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["server_registered"], false);
    let server = app.server("homelab-box").await;
    assert_eq!(server["is_verified"], false);
    assert_eq!(server["confidence"], "yellow");
    assert_eq!(server["agent_version"], "2.0.0");
    assert_eq!(server["host_info"]["hostname"], "homelab-box");
    assert_eq!(server["host_info"]["os_info"], body["os_info"]);
    assert_eq!(server["host_info"]["metrics"], body["metrics"]);
    let rows = stored(&app, "homelab-box").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "api_key");
    assert_eq!(rows[0].1["metrics"]["cpu_percent"], 0.5);
    assert_eq!(rows[0].1["uptime_seconds"], 3536);
    let original: Value =
        serde_json::from_str(rows[0].2.as_deref().expect("original body")).expect("json");
    assert_eq!(original, body, "every member kept as sent");

    // A bad metric: 422 naming its path, nothing stored.
    let mut bad = body.clone();
    bad["metrics"]["memory_percent"] = json!(101);
    let refused = homelabcmd_post(&app, Some(&key), &[], &bad).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused.body["detail"][0]["loc"],
        json!(["body", "metrics", "memory_percent"])
    );
    let mut bad = body.clone();
    bad["metrics"]["disk_used_gb"] = json!(-3);
    let refused = homelabcmd_post(&app, Some(&key), &[], &bad).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused.body["detail"][0]["loc"],
        json!(["body", "metrics", "disk_used_gb"])
    );
    assert_eq!(stored(&app, "homelab-box").await.len(), 2);

    // A per-agent token with the server's GUID; a revoked one is 401.
    let minted = mint(&app, "homelab-box", "agent").await;
    let token = minted["token"].as_str().expect("token").to_owned();
    let guid = body["server_guid"].as_str().expect("guid").to_owned();
    let by_token = homelabcmd_post(
        &app,
        None,
        &[("X-Agent-Token", &token), ("X-Server-GUID", &guid)],
        &body,
    )
    .await;
    assert_eq!(by_token.status, StatusCode::OK, "{:?}", by_token.body);
    assert_eq!(by_token.body["server_registered"], false);
    assert_eq!(stored(&app, "homelab-box").await[2].0, "token");
    let revoked = app
        .send(
            vigil_tests::request(
                Method::DELETE,
                &format!("/v1/admin/servers/homelab-box/tokens/{}", minted["id"]),
                Some(ADMIN_TOKEN),
            )
            .body(Body::empty())
            .expect("request"),
        )
        .await;
    assert!(revoked.status.is_success(), "{:?}", revoked.body);
    let refused = homelabcmd_post(
        &app,
        None,
        &[("X-Agent-Token", &token), ("X-Server-GUID", &guid)],
        &body,
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(stored(&app, "homelab-box").await.len(), 3);
    app.stop().await;

    // Without auto_register an unknown server is refused; disabled, the route is 404.
    let app = TestApp::spawn_with(|c| c.compat.homelabcmd.enabled = true).await;
    let key = vigil::api::auth::create_key(
        &app.db,
        "homelab",
        vigil::store::Scope::Ingest,
        vigil_tests::now_ms(),
    )
    .await
    .expect("key");
    let unknown = homelabcmd_post(&app, Some(&key), &[], &body).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(app.count("servers").await, 0);
    app.stop().await;
    let app = TestApp::spawn().await;
    let disabled = homelabcmd_post(&app, Some("vgl_x"), &[], &body).await;
    assert_eq!(disabled.status, StatusCode::NOT_FOUND);
    assert_eq!(disabled.code(), "not_found");
    app.stop().await;
}

async fn uptime_kuma_pushes_get_kuma_answers() {
    let app = enabled_app().await;
    let agent = Agent::new("kuma-1");
    app.register(&agent).await;
    let token = mint(&app, "kuma-1", "push").await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(token.len(), 32);
    let up = call(
        &app,
        Method::GET,
        &format!("/api/push/{token}?status=up&msg=OK&ping=12.5"),
        "",
    )
    .await;
    assert_eq!(up.status, StatusCode::OK, "{:?}", up.body);
    assert_eq!(up.body, json!({"ok": true}));
    assert!(up.content_type.starts_with("application/json"));
    let down = call(
        &app,
        Method::POST,
        &format!("/api/push/{token}?status=down&msg=disk%20full"),
        "",
    )
    .await;
    assert_eq!(down.body, json!({"ok": true}));
    // The claimed offline is folded: the server is offline until it is up again.
    assert_eq!(app.server("kuma-1").await["policy_status"], "offline");
    let bare = call(&app, Method::GET, &format!("/api/push/{token}"), "").await;
    assert_eq!(bare.body, json!({"ok": true}));
    let rows = stored(&app, "kuma-1").await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|(auth, _, _)| auth == "token"));
    assert_eq!(rows[0].1["status"], "online");
    assert_eq!(rows[0].1["metrics"], json!({"ping_ms": 12.5}));
    assert_eq!(rows[0].1["payload"]["msg"], "OK");
    assert_eq!(rows[1].1["status"], "offline");
    assert_eq!(rows[1].1["payload"]["msg"], "disk full");
    assert_eq!(app.server("kuma-1").await["policy_status"], "online");
    let wrong = call(&app, Method::GET, "/api/push/notatoken?status=up", "").await;
    assert_eq!(wrong.status, StatusCode::NOT_FOUND);
    assert_eq!(
        wrong.body,
        json!({"ok": false, "msg": "Monitor not found or not active."})
    );
    assert_eq!(app.count("heartbeats").await, 3);
    app.stop().await;
}

async fn disabled_sources_are_404_like_any_unknown_route() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("off-1");
    app.register(&agent).await;
    let uuid = mint(&app, "off-1", "ping").await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let push = mint(&app, "off-1", "push").await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let unknown = call(&app, Method::GET, "/no/such/route", "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    for (method, path) in [
        (Method::GET, format!("/ping/{uuid}")),
        (Method::POST, format!("/ping/{uuid}/start")),
        (Method::GET, format!("/ping/{uuid}/999")),
        (Method::GET, format!("/api/push/{push}?status=up")),
    ] {
        let answer = call(&app, method, &path, "").await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        // The same problem, but for its own request id.
        let without_id = |body: &Value| {
            let mut body = body.clone();
            body.as_object_mut().map(|o| o.remove("request_id"));
            body
        };
        assert_eq!(
            without_id(&answer.body),
            without_id(&unknown.body),
            "{path}"
        );
    }
    let sprint4 = app
        .send_raw(
            Method::POST,
            "/agent/heartbeat",
            agent.heartbeat(json!({})).to_string().into_bytes(),
            None,
        )
        .await;
    assert_eq!(sprint4.status, StatusCode::NOT_FOUND);
    assert_eq!(app.count("heartbeats").await, 0);
    assert_eq!(app.count("rejections").await, 0);
    app.stop().await;
}

async fn sprint4_agents_post_the_v1_body_at_their_old_path() {
    let app = enabled_app().await;
    let agent = Agent::new("dir-1");
    app.register(&agent).await;
    let answer = app
        .send_raw(
            Method::POST,
            "/agent/heartbeat",
            agent
                .heartbeat(json!({"players_current": 3}))
                .to_string()
                .into_bytes(),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(answer.body["accepted"], true);
    let mut forged = agent.heartbeat(json!({}));
    forged["players_current"] = json!(9);
    let refused = app
        .send_raw(
            Method::POST,
            "/agent/heartbeat",
            forged.to_string().into_bytes(),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.code(), "bad_signature");
    let rows = stored(&app, "dir-1").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "signature");
    assert_eq!(rows[0].2, None);
    app.stop().await;
}

vigil_tests::on_both_backends!(
    tokens_are_shown_once_stored_hashed_listed_without_secret_and_revocable,
    healthchecks_pings_get_healthchecks_answers_and_are_stored_as_token_runs,
    a_token_heartbeat_is_yellow_at_best_where_a_signed_one_is_green,
    a_1_3_policy_sees_how_each_heartbeat_was_authenticated,
    uptime_kuma_pushes_get_kuma_answers,
    homelabcmd_agents_are_accepted_unchanged_and_registered,
    disabled_sources_are_404_like_any_unknown_route,
    sprint4_agents_post_the_v1_body_at_their_old_path,
);

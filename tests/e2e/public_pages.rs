//! What the public sees beside the JSON directory: badges (golden SVG, shields JSON, cache
//! headers, grey unknowns), a cluster's status page (no admin data in its HTML), rankings
//! (order, ties, the unverified weight, paused/retired left out, keyset pages stable under
//! writes) and the leaderboard over a named score.

use axum::http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use vigil_tests::{Agent, TestApp};

/// The raw answer: status, headers, body text.
async fn fetch(app: &TestApp, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = vigil_tests::request(Method::GET, path, None)
        .body(axum::body::Body::empty())
        .expect("request");
    let response = app.router.clone().oneshot(request).await.expect("answers");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// Compares `text` with the golden file `name` (`VIGIL_BLESS=1` rewrites it).
fn golden(name: &str, text: &str) {
    let path = vigil_tests::workspace_root()
        .join("tests/fixtures/badges")
        .join(name);
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(&path, text).expect("writes the golden file");
    }
    let expected = std::fs::read_to_string(&path).expect("the golden file exists");
    assert_eq!(text, expected, "{name} differs from its golden file");
}

async fn badges_are_exact_cacheable_and_grey_when_unknown() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("badged");
    app.register(&agent).await;
    let sent = app
        .post_heartbeat(&agent.heartbeat(json!({"players_current": 5, "players_capacity": 10})))
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);

    let (status, headers, svg) = fetch(&app, "/badge/badged/status.svg").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "image/svg+xml; charset=utf-8"
    );
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "public, max-age=60, stale-while-revalidate=60"
    );
    golden("status-online.svg", &svg);
    let (_, _, svg) = fetch(&app, "/badge/badged/confidence.svg").await;
    golden("confidence-yellow.svg", &svg);
    let (_, _, unknown) = fetch(&app, "/badge/no-such-server/status.svg").await;
    golden("status-unknown.svg", &unknown);

    // shields.io endpoint JSON: the four members, nothing else.
    let answer = app.get("/badge/badged/status.svg?format=shields").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body,
        json!({"schemaVersion": 1, "label": "status", "message": "online", "color": "brightgreen"})
    );
    let view = app.server("badged").await;
    let uptime = app
        .get("/badge/badged/uptime.svg?format=shields")
        .await
        .body;
    assert_eq!(uptime["label"], "uptime");
    assert!(
        uptime["message"].as_str().unwrap().ends_with('%'),
        "{uptime}"
    );
    let quality = app
        .get("/badge/badged/quality.svg?format=shields")
        .await
        .body;
    let shown: f64 = quality["message"]
        .as_str()
        .unwrap()
        .parse()
        .expect("a number");
    assert!((shown - view["quality_score"].as_f64().unwrap()).abs() <= 0.05);
    let score = app
        .get("/badge/badged/score/activity.svg?format=shields")
        .await
        .body;
    assert_eq!(score["label"], "activity");
    // Unknown server, kind or score: a grey `unknown` badge, 200, the asked text not echoed.
    for path in [
        "/badge/nobody/uptime.svg?format=shields",
        "/badge/badged/nonsense.svg?format=shields",
        "/badge/badged/score/no_such_score.svg?format=shields",
        "/badge/%3Cscript%3E/status.svg?format=shields",
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.body["message"], "unknown", "{path}");
        assert_eq!(answer.body["color"], "lightgrey", "{path}");
        assert!(!answer.body.to_string().contains("script"), "{path}");
    }
    // Paused and retired are said in words.
    app.admin_post("/v1/admin/servers/badged/pause", &json!({}))
        .await;
    let paused = app
        .get("/badge/badged/status.svg?format=shields")
        .await
        .body;
    assert_eq!(paused["message"], "paused");
    app.admin_post("/v1/admin/servers/badged/retire", &json!({}))
        .await;
    let retired = app
        .get("/badge/badged/status.svg?format=shields")
        .await
        .body;
    assert_eq!(retired["message"], "retired");
    app.stop().await;
}

async fn a_status_page_shows_state_incidents_and_changes_but_no_admin_data() {
    let app = TestApp::spawn().await;
    let up = Agent::new("page-up");
    let quiet = Agent::new("page-quiet");
    for (agent, name) in [(&up, "Up <b>One</b>"), (&quiet, "Quiet")] {
        let answer = app
            .admin_post(
                "/v1/admin/servers",
                &json!({"server_id": agent.server_id, "public_key": agent.public_key_b64(),
                        "display_name": name, "cluster_id": "eu"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    }
    let secret_label = "label-secret-7731";
    let edit = app
        .send_raw(
            Method::PATCH,
            "/v1/admin/servers/page-up",
            json!({"labels": {"owner": secret_label}})
                .to_string()
                .into_bytes(),
            Some(vigil_tests::ADMIN_TOKEN),
        )
        .await;
    assert_eq!(edit.status, StatusCode::OK, "{:?}", edit.body);
    app.post_heartbeat(&up.heartbeat(json!({}))).await;
    // A forged heartbeat: a rejection (admin data) naming the server.
    let forged = Agent::new("page-up").heartbeat(json!({}));
    assert_eq!(
        app.post_heartbeat(&forged).await.status,
        StatusCode::UNAUTHORIZED
    );

    let (status, headers, html) = fetch(&app, "/status/eu").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=30");
    assert!(
        html.contains("Up &lt;b&gt;One&lt;/b&gt;"),
        "names are escaped"
    );
    assert!(html.contains("\u{25CF} online"), "status as icon and text");
    assert!(html.contains("Quiet"));
    assert!(html.contains("No open incidents"));
    assert!(
        html.contains("unknown \u{2192} \u{25CF} online"),
        "the timeline"
    );
    // Nothing of the admin API.
    let key = up.public_key_b64();
    let fingerprint = app.server("page-up").await["public_fingerprint"].clone();
    for admin in [
        secret_label,
        key.as_str(),
        fingerprint.as_str().unwrap(),
        "bad_signature",
        "rejection",
        "key_version",
        "added_by",
    ] {
        assert!(!html.contains(admin), "the status page shows {admin:?}");
    }
    let missing = app.get("/status/nowhere").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "unknown_cluster");
    app.stop().await;
}

/// Registers `id` (verified or not) and reports `players` (capacity 1000).
async fn player(app: &TestApp, id: &str, verified: bool, players: u32) -> Agent {
    let agent = Agent::new(id);
    app.register(&agent).await;
    if verified {
        app.verify(id).await;
    }
    report(app, &agent, players).await;
    agent
}

async fn report(app: &TestApp, agent: &Agent, players: u32) {
    let body = agent.heartbeat(json!({"players_current": players, "players_capacity": 1000}));
    let sent = app.post_heartbeat(&body).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
}

fn ids(answer: &Value, member: &str) -> Vec<String> {
    answer[member]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["server_id"].as_str().expect("id").to_owned())
        .collect()
}

async fn rankings_weigh_unverified_leave_out_paused_and_retired_and_page_stably() {
    let app = TestApp::spawn().await;
    let a = player(&app, "rank-a", true, 40).await;
    let b = player(&app, "rank-b", false, 60).await; // weighted 30
    player(&app, "rank-c", true, 30).await; // 30: tie with b, by id
    player(&app, "rank-d", false, 900).await;
    player(&app, "rank-e", true, 800).await;
    player(&app, "rank-f", false, 20).await; // 10
    app.admin_post("/v1/admin/servers/rank-d/pause", &json!({}))
        .await;
    app.admin_post("/v1/admin/servers/rank-e/retire", &json!({}))
        .await;

    let all = app.get("/v1/rankings?mode=players").await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    assert_eq!(all.body["unverified_weight"], 0.5);
    assert_eq!(
        ids(&all.body, "rankings"),
        ["rank-a", "rank-b", "rank-c", "rank-f"]
    );
    let weighted: Vec<f64> = all.body["rankings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["weighted_value"].as_f64().unwrap())
        .collect();
    assert_eq!(weighted, [40.0, 30.0, 30.0, 10.0]);
    assert_eq!(all.body["rankings"][1]["value"], 60.0);

    // Keyset pages: rows that do not move are neither repeated nor skipped by writes.
    let first = app.get("/v1/rankings?mode=players&limit=2").await.body;
    assert_eq!(ids(&first, "rankings"), ["rank-a", "rank-b"]);
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_owned();
    report(&app, &b, 120).await; // b moves up (already seen)
    player(&app, "rank-g", true, 35).await; // lands above the cursor
    let second = app
        .get(&format!(
            "/v1/rankings?mode=players&limit=2&cursor={cursor}"
        ))
        .await
        .body;
    assert_eq!(ids(&second, "rankings"), ["rank-c", "rank-f"]);
    let bad = app.get("/v1/rankings?mode=players&cursor=nonsense").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad = app.get("/v1/rankings?mode=votes").await;
    assert_eq!(bad.code(), "invalid_query");

    // The leaderboard ranks ties equally (1, 2, 2, 4 …) and reads any named score.
    report(&app, &a, 60).await; // a: 60, b: 60 (120 × 0.5), g: 35, c: 30, f: 10
    let board = app.get("/v1/leaderboard?score=players&limit=10").await.body;
    assert_eq!(
        ids(&board, "entries"),
        ["rank-a", "rank-b", "rank-g", "rank-c", "rank-f"]
    );
    let ranks: Vec<i64> = board["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rank"].as_i64().unwrap())
        .collect();
    assert_eq!(ranks, [1, 1, 3, 4, 5]);
    let activity = app.get("/v1/leaderboard?score=activity&limit=3").await.body;
    let entries = activity["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 3, "{activity}");
    for e in entries {
        let id = e["server_id"].as_str().unwrap();
        let stored = app.server(id).await["scores"]["activity"]
            .as_f64()
            .expect("score");
        assert_eq!(e["score"].as_f64(), Some(stored), "{id}");
        assert!(e["policy"]["digest"].is_string());
    }
    let weighted: Vec<f64> = entries
        .iter()
        .map(|e| e["weighted_score"].as_f64().unwrap())
        .collect();
    assert!(weighted.windows(2).all(|w| w[0] >= w[1]), "{weighted:?}");
    let bad = app.get("/v1/leaderboard?score=Bad%20Name").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_unverified_weight_is_configurable() {
    let app = TestApp::spawn_with(|c| c.directory.unverified_weight = 1.0).await;
    player(&app, "w-verified", true, 40).await;
    player(&app, "w-unverified", false, 60).await;
    let all = app.get("/v1/rankings?mode=players").await.body;
    assert_eq!(ids(&all, "rankings"), ["w-unverified", "w-verified"]);
    app.stop().await;
    let bad = vigil::config::Config::from_toml("[directory]\nunverified_weight = 1.5\n");
    assert!(bad.is_err());
}

vigil_tests::on_both_backends!(
    badges_are_exact_cacheable_and_grey_when_unknown,
    a_status_page_shows_state_incidents_and_changes_but_no_admin_data,
    rankings_weigh_unverified_leave_out_paused_and_retired_and_page_stably,
);

//! The dashboard's pages through the real router: the server list (status as icon and text,
//! filters, sort, search, pages, the live-update script) and a server's page (state, scores
//! and badges with the policy version, transitions, heartbeat bodies escaped).

use axum::http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;
use vigil_tests::{Agent, TestApp};

async fn html(app: &TestApp, path: &str) -> (StatusCode, String) {
    let request = vigil_tests::request(Method::GET, path, None)
        .body(axum::body::Body::empty())
        .expect("request");
    let response = app.router.clone().oneshot(request).await.expect("answers");
    let status = response.status();
    if status == StatusCode::OK {
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Server ids in the order the list shows them.
fn rows(page: &str) -> Vec<String> {
    page.split("<tr data-server-id=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').expect("closing quote")].to_owned())
        .collect()
}

async fn the_server_list_filters_sorts_searches_and_pages() {
    let app = TestApp::spawn().await;
    for (id, players, name) in [
        ("dash-a", 5, "Alpha"),
        ("dash-b", 50, "Bravo"),
        ("dash-c", 20, "Charlie"),
    ] {
        let agent = Agent::new(id);
        let answer = app
            .admin_post(
                "/v1/admin/servers",
                &json!({"server_id": id, "public_key": agent.public_key_b64(), "display_name": name, "cluster_id": "eu"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED);
        let sent = app
            .post_heartbeat(
                &agent.heartbeat(json!({"players_current": players, "players_capacity": 64})),
            )
            .await;
        assert_eq!(sent.status, StatusCode::ACCEPTED);
    }
    app.register(&Agent::new("dash-silent")).await;
    app.admin_post("/v1/admin/servers/dash-c/pause", &json!({}))
        .await;

    let (status, page) = html(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("\u{25CF} online"), "status as icon and text");
    assert!(page.contains("\u{275A} paused"));
    assert!(page.contains("\u{25CC} unknown"));
    assert!(
        page.contains("new EventSource(\"/v1/events\")"),
        "live updates"
    );
    assert!(
        page.contains("<label>Search id or name"),
        "labelled controls"
    );
    let (_, by_players) = html(&app, "/?sort=players").await;
    assert_eq!(
        rows(&by_players),
        ["dash-b", "dash-c", "dash-a", "dash-silent"]
    );
    let (_, online) = html(&app, "/?status=online&sort=id").await;
    assert_eq!(rows(&online), ["dash-a", "dash-b"]);
    let (_, paused) = html(&app, "/?status=paused").await;
    assert_eq!(rows(&paused), ["dash-c"]);
    let (_, found) = html(&app, "/?q=BRA").await;
    assert_eq!(
        rows(&found),
        ["dash-b"],
        "search is case-insensitive on names"
    );
    let (_, found) = html(&app, "/?q=silent").await;
    assert_eq!(rows(&found), ["dash-silent"], "and on ids");
    let (_, none) = html(&app, "/?q=%25").await;
    assert!(rows(&none).is_empty(), "LIKE wildcards are literal");
    let (_, eu) = html(&app, "/?cluster=eu&sort=id").await;
    assert_eq!(rows(&eu), ["dash-a", "dash-b", "dash-c"]);
    let (_, unverified) = html(&app, "/?verified=true").await;
    assert!(rows(&unverified).is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_list_pages_with_a_next_link() {
    let app = TestApp::spawn().await;
    let servers: Vec<serde_json::Value> = (0..55)
        .map(|i| json!({"server_id": format!("page-{i:02}"), "public_key": Agent::new("k").public_key_b64()}))
        .collect();
    let answer = app.admin_post("/v1/admin/servers", &json!(servers)).await;
    assert_eq!(answer.body["created"], 55);
    let (_, first) = html(&app, "/?sort=id").await;
    assert_eq!(rows(&first).len(), 50);
    let next = first
        .split("<a href=\"/?")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a next link")
        .replace("&amp;", "&");
    let (_, second) = html(&app, &format!("/?{next}")).await;
    assert_eq!(
        rows(&second),
        ["page-50", "page-51", "page-52", "page-53", "page-54"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_page_shows_state_scores_history_and_escaped_bodies() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("dash-page");
    app.register(&agent).await;
    app.verify("dash-page").await;
    let sent = app
        .post_heartbeat(&agent.heartbeat(json!({"map_name": "<script>alert(1)</script>"})))
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    let (status, page) = html(&app, "/servers/dash-page").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !page.contains("<script>alert"),
        "bodies and fields are escaped"
    );
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let policy = app.server("dash-page").await["policy"].clone();
    let by = format!(
        "Computed by {}@{} ({})",
        policy["name"].as_str().unwrap(),
        policy["version"].as_str().unwrap(),
        policy["digest"].as_str().unwrap()
    );
    assert!(page.contains(&by), "{by}");
    assert!(page.contains("\u{2605} badge: verified"));
    assert!(page.contains("unknown \u{2192} \u{25CF} online"));
    assert!(page.contains("<details><summary>#1 received"));
    let (missing, _) = html(&app, "/servers/nobody").await;
    assert_eq!(missing, StatusCode::NOT_FOUND);
    app.stop().await;
}

/// Signs in through the sign-in form with `key`; the session cookie (`name=value`).
async fn sign_in(app: &TestApp, key: &str) -> String {
    let page = vigil_tests::request(Method::GET, "/sign-in", None)
        .body(axum::body::Body::empty())
        .expect("request");
    let response = app.router.clone().oneshot(page).await.expect("answers");
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .expect("text")
        .split(';')
        .next()
        .expect("a cookie")
        .to_owned();
    let csrf = cookie.split('=').nth(1).expect("a value").to_owned();
    let form = format!("key={key}&csrf={csrf}");
    let post = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/sign-in")
        .header(header::COOKIE, &cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(form))
        .expect("request");
    let response = app.router.clone().oneshot(post).await.expect("answers");
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("vigil_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

async fn html_as(app: &TestApp, path: &str, cookie: &str) -> String {
    let request = vigil_tests::request(Method::GET, path, None)
        .header(header::COOKIE, cookie)
        .body(axum::body::Body::empty())
        .expect("request");
    let response = app.router.clone().oneshot(request).await.expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn a_server_page_shows_uptime_bars_and_admin_data_only_to_admins() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("dash-admin");
    app.register(&agent).await;
    for players in [3, 7, 5] {
        let hb = agent.heartbeat(json!({"players_current": players, "players_capacity": 10}));
        assert_eq!(app.post_heartbeat(&hb).await.status, StatusCode::ACCEPTED);
    }
    let forged = Agent::new("dash-admin").heartbeat(json!({}));
    assert_eq!(
        app.post_heartbeat(&forged).await.status,
        StatusCode::UNAUTHORIZED
    );
    let token = app
        .admin_post(
            "/v1/admin/servers/dash-admin/tokens",
            &json!({"kind": "ping"}),
        )
        .await;
    assert_eq!(token.status, StatusCode::CREATED, "{:?}", token.body);
    let prefix = token.body["prefix"].as_str().expect("prefix").to_owned();
    let queued = app
        .admin_post(
            "/v1/admin/servers/dash-admin/commands",
            &json!({"command": "restart", "ttl_seconds": 600}),
        )
        .await;
    assert_eq!(queued.status, StatusCode::CREATED, "{:?}", queued.body);
    let command_id = queued.body["command_id"].as_str().expect("id").to_owned();
    app.admin_post(
        "/v1/admin/servers/dash-admin/pause",
        &json!({"reason": "disk swap"}),
    )
    .await;
    app.admin_post("/v1/admin/servers/dash-admin/resume", &json!({}))
        .await;
    let fingerprint = app.server("dash-admin").await["public_fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();

    let (status, public) = html(&app, "/servers/dash-admin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        public.contains("aria-label=\"24-hour uptime, by hour: "),
        "{public}"
    );
    assert!(public.contains("aria-label=\"90-day uptime, by day: "));
    assert_eq!(
        public.matches("<rect class=").count(),
        24 + 90,
        "one bar per hour and day"
    );
    assert!(
        public.contains("<rect class=\"none\""),
        "unknown time is grey"
    );
    assert!(
        public.contains("3 beats"),
        "the beats are counted in the open hour"
    );
    assert!(public.contains("Players, last 3 heartbeats: <svg"));
    assert!(public.contains("last 5.0, lowest 3.0, highest 7.0"));
    // Nothing of the admin API reaches an anonymous reader.
    for secret in [
        "admin-data",
        "Refused requests",
        "bad_signature",
        "Key history",
        fingerprint.as_str(),
        "Ingest tokens",
        prefix.as_str(),
        command_id.as_str(),
        "Audit trail",
        "disk swap",
        "Schedule",
    ] {
        assert!(
            !public.contains(secret),
            "{secret:?} leaked to the public page"
        );
    }

    let admin = sign_in(&app, vigil_tests::ADMIN_TOKEN).await;
    let signed_in = html_as(&app, "/servers/dash-admin", &admin).await;
    for shown in [
        "Refused requests",
        "Key history",
        fingerprint.as_str(),
        prefix.as_str(),
        command_id.as_str(),
        "pending until",
        "disk swap",
        "resume by admin",
    ] {
        assert!(signed_in.contains(shown), "{shown:?} missing for the admin");
    }
    app.stop().await;
}

/// A signed-in POST of `body` (`content_type`) to `path`: its status and `Location`.
async fn post_as(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut request = axum::http::Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, content_type);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let request = request.body(axum::body::Body::from(body)).expect("request");
    let response = app.router.clone().oneshot(request).await.expect("answers");
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (response.status(), location)
}

/// A `multipart/form-data` body of `fields` (name, optional file name, bytes).
fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "vigil-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, file, bytes) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(file) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
                     Content-Type: application/wasm\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test(flavor = "multi_thread")]
async fn uploading_shadowing_and_activating_a_policy_from_the_dashboard() {
    // The same variant the browser test builds (one build for both).
    let next = vigil_tests::default_policy_version("1.9.0");
    let digest = vigil::policy::digest_of(&next);
    let app = TestApp::spawn().await;
    let (_, anonymous) = html(&app, "/policies").await;
    assert!(
        !anonymous.contains("/policies/upload"),
        "no admin form signed out"
    );
    let admin = sign_in(&app, vigil_tests::ADMIN_TOKEN).await;
    let page = html_as(&app, "/policies", &admin).await;
    for form in ["/policies/upload", "/policies/activate", "/policies/shadow"] {
        assert!(page.contains(&format!("action=\"{form}\"")), "{form}");
    }
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token")
        .to_owned();
    let versions = || async {
        app.get("/v1/policies").await.body["policies"]
            .as_array()
            .map(Vec::len)
    };
    let before = versions().await;

    // Without a session, or with another CSRF token, nothing is stored.
    let (kind, body) = multipart(&[
        ("csrf", None, csrf.as_bytes()),
        ("component", Some("p.wasm"), &next),
    ]);
    let (status, _) = post_as(&app, "/policies/upload", None, &kind, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (kind, body) = multipart(&[
        ("csrf", None, b"forged"),
        ("component", Some("p.wasm"), &next),
    ]);
    let (status, _) = post_as(&app, "/policies/upload", Some(&admin), &kind, body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(versions().await, before);

    let (kind, body) = multipart(&[
        ("csrf", None, csrf.as_bytes()),
        ("component", Some("p.wasm"), &next),
    ]);
    let (status, to) = post_as(&app, "/policies/upload", Some(&admin), &kind, body).await;
    assert_eq!((status, to.as_str()), (StatusCode::SEE_OTHER, "/policies"));
    assert_eq!(versions().await, before.map(|n| n + 1));
    assert!(
        html_as(&app, "/policies", &admin)
            .await
            .contains(&format!("data-digest=\"{digest}\""))
    );

    let form = |fields: &str| format!("csrf={csrf}&{fields}").into_bytes();
    let urlencoded = "application/x-www-form-urlencoded";
    let (status, _) = post_as(
        &app,
        "/policies/shadow",
        Some(&admin),
        urlencoded,
        form(&format!("policy={digest}")),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(app.get("/v1/policies/shadow").await.status, StatusCode::OK);
    let (status, _) = post_as(
        &app,
        "/policies/shadow",
        Some(&admin),
        urlencoded,
        form("stop=1"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/v1/policies/shadow").await.status,
        StatusCode::NOT_FOUND
    );

    let (status, _) = post_as(
        &app,
        "/policies/activate",
        Some(&admin),
        urlencoded,
        form("policy=default%401.9.0&reason=from+the+dashboard"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    vigil_tests::wait_for_active(&app, &digest, std::time::Duration::from_secs(20)).await;
    let log = app.get("/v1/policies").await.body["activations"].clone();
    assert!(
        log.as_array()
            .expect("a log")
            .iter()
            .any(|a| a["reason"] == "from the dashboard" && a["who"] == "admin"),
        "{log:#}"
    );
    app.stop().await;
}

vigil_tests::on_both_backends!(
    the_server_list_filters_sorts_searches_and_pages,
    a_server_page_shows_uptime_bars_and_admin_data_only_to_admins,
);

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

vigil_tests::on_both_backends!(the_server_list_filters_sorts_searches_and_pages,);

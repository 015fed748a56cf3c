//! The network edge, probed as an attacker with no key would: what a client can make the host
//! hold (connections, subscribers, memory, catch-up reads) and whose budget it spends. Each
//! test drives the real router, or the real `vigil serve` over TCP where a socket matters.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::BodyExt as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, Message};
use tower::ServiceExt as _;
use vigil_tests::{ADMIN_TOKEN, Agent, TestApp};

/// Opens `GET /v1/events` on the router (with `Last-Event-ID` when given) and returns the
/// response; its body is the open stream.
async fn open_events(app: &TestApp, last_event_id: Option<&str>) -> axum::response::Response {
    let mut request = vigil_tests::request(Method::GET, "/v1/events", None);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let request = request.body(axum::body::Body::empty()).expect("request");
    app.router.clone().oneshot(request).await.expect("answers")
}

/// Reads `transition` ids off an SSE body until it ends or more than `stop_after` came.
/// Returns them and whether the stream ended.
async fn transition_ids(body: axum::body::Body, stop_after: usize) -> (Vec<i64>, bool) {
    let mut body = body;
    let mut text = String::new();
    let mut ids = Vec::new();
    loop {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if block.lines().any(|l| l == "event: transition") {
                let id = block
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))
                    .and_then(|v| v.parse().ok())
                    .expect("a transition has an id");
                ids.push(id);
            }
        }
        if ids.len() > stop_after {
            return (ids, false);
        }
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .expect("a frame within 20 s");
        match frame {
            None => return (ids, true),
            Some(frame) => {
                if let Ok(data) = frame.expect("readable").into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
        }
    }
}

/// The source addresses of the stored rejections, oldest first.
async fn rejection_sources(app: &TestApp) -> Vec<String> {
    let request = vigil_tests::request(Method::GET, "/v1/admin/rejections", Some(ADMIN_TOKEN))
        .body(axum::body::Body::empty())
        .expect("request");
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let mut sources: Vec<String> = answer.body["rejections"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["source_ip"].as_str().unwrap_or("").to_owned())
        .collect();
    sources.reverse();
    sources
}

/// `X-Forwarded-For` is walked from the right: the client's own garbage (left of the address
/// its proxy appended) cannot make it the proxy, so it spends its own bucket and the audit names
/// it; garbage a trusted proxy wrote stops the walk at that proxy.
async fn forwarded_for_garbage_cannot_hide_a_client_behind_its_proxy() {
    let app = TestApp::spawn_with(|c| {
        c.server.trusted_proxies = vec!["10.0.0.0/8".parse().expect("net")];
        c.rate_limit.per_ip_per_minute = 1;
        c.rate_limit.per_ip_burst = 1;
    })
    .await;
    let victim = Agent::new("behind-proxy");
    app.register(&victim).await;
    let forger = Agent::new("behind-proxy");
    let forged = || forger.heartbeat(json!({})).to_string().into_bytes();
    let host = &app;
    let post = |xff: Option<&'static str>| async move {
        let headers: Vec<(&str, &str)> = xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
        host.send_from(
            Method::POST,
            "/v1/agent/heartbeat",
            forged(),
            "10.0.0.2:4000",
            &headers,
        )
        .await
    };
    let first = post(Some("not-an-address, 203.0.113.7")).await;
    assert_eq!(first.code(), "bad_signature", "{:?}", first.body);
    // Its second request spends its own (empty) bucket ...
    let second = post(Some("also garbage, 203.0.113.7")).await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        second.body
    );
    // ... not the proxy's: the proxy itself still has its whole burst.
    let proxy = post(None).await;
    assert_eq!(proxy.code(), "bad_signature", "{:?}", proxy.body);
    // A hop a trusted proxy could not name stops the walk there: nothing left of it is believed.
    let stopped = post(Some("198.51.100.1, unknown, 10.0.0.5")).await;
    assert_eq!(stopped.code(), "bad_signature", "{:?}", stopped.body);
    assert_eq!(
        rejection_sources(&app).await,
        ["203.0.113.7", "10.0.0.2", "10.0.0.5"]
    );
    app.stop().await;
}

/// `Last-Event-ID: 0` replays at most `CATCH_UP_LIMIT` stored transitions per connection, then
/// ends the stream; the client resumes from the last id it got, without gaps or repeats.
async fn last_event_id_catch_up_is_bounded() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("long-history");
    app.register(&agent).await;
    let total = vigil::api::stream::CATCH_UP_LIMIT + 200;
    app.execute(&format!(
        "INSERT INTO status_transitions (server_id, at_ms, cause, from_status, to_status, \
         from_confidence, to_confidence, policy_digest) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {total}) \
         SELECT 'long-history', 1000 + i, 'tick', 'online', 'offline', 'yellow', 'yellow', \
         'sha256:00' FROM n"
    ))
    .await
    .expect("history inserted");
    let response = open_events(&app, Some("0")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let limit = vigil::api::stream::CATCH_UP_LIMIT;
    let (first, ended) = transition_ids(response.into_body(), limit).await;
    assert_eq!(first.len(), limit, "one connection replays at most {limit}");
    assert!(ended, "the stream ends after its catch-up share");
    let last = first.last().expect("some").to_string();
    let response = open_events(&app, Some(&last)).await;
    let (rest, _) = transition_ids(response.into_body(), total - limit - 1).await;
    let mut all = first;
    all.extend(&rest[..total - limit]);
    assert!(
        all.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps, no repeats"
    );
    app.stop().await;
}

vigil_tests::on_both_backends!(
    forwarded_for_garbage_cannot_hide_a_client_behind_its_proxy,
    last_event_id_catch_up_is_bounded,
);

/// The (cap + 1)-th subscriber of either stream is answered 503 `too_many_subscribers`; a slot
/// frees when a subscriber leaves.
#[tokio::test(flavor = "multi_thread")]
async fn live_subscribers_are_capped() {
    let mut app = TestApp::spawn_with(|c| {
        c.live.max_event_streams = 2;
        c.live.max_observers = 1;
    })
    .await;
    let agent = Agent::new("popular");
    app.register(&agent).await;
    let one = open_events(&app, None).await;
    let two = open_events(&app, None).await;
    assert_eq!(
        (one.status(), two.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let three = open_events(&app, None).await;
    assert_eq!(three.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(three.headers().contains_key("retry-after"));
    let body = three.into_body().collect().await.expect("body").to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).expect("problem+json");
    assert_eq!(problem["code"], "too_many_subscribers");
    drop(one);
    assert_eq!(open_events(&app, None).await.status(), StatusCode::OK);
    drop(two);

    let address = app.serve().await;
    let url = format!("ws://{address}/v1/servers/popular/observe");
    let (first, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("first observer");
    match tokio_tungstenite::connect_async(&url).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        other => panic!("a second observer over the cap: {other:?}"),
    }
    drop(first);
    app.stop().await;
}

/// Observers have nothing to say: a client message over the limit closes the socket at once
/// (before today's 64 MiB default, the host buffered it whole and kept the socket open).
#[tokio::test(flavor = "multi_thread")]
async fn oversized_observer_messages_close_the_socket() {
    let mut app = TestApp::spawn().await;
    let agent = Agent::new("observed");
    app.register(&agent).await;
    let address = app.serve().await;
    let url = format!("ws://{address}/v1/servers/observed/observe");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("observer");
    let big = "x".repeat(256 << 10);
    socket.send(Message::text(big)).await.expect("sent");
    let next = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("the host closes the socket instead of keeping it");
    assert!(
        matches!(next, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{next:?}"
    );
    // A small message is fine, and the host still serves observers.
    let (mut again, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("observer");
    again
        .send(Message::Ping(vec![1].into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(Duration::from_secs(10), again.next()).await;
    assert!(matches!(pong, Ok(Some(Ok(Message::Pong(_))))), "{pong:?}");
    drop(again);
    app.stop().await;
}

//! The network edge, probed as an attacker with no key would: what a client can make the host
//! hold (connections, subscribers, memory, catch-up reads) and whose budget it spends. Each
//! test drives the real router, or the real `vigil serve` over TCP where a socket matters.

use axum::http::{Method, StatusCode};
use serde_json::json;
use vigil_tests::{ADMIN_TOKEN, Agent, TestApp};

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

vigil_tests::on_both_backends!(forwarded_for_garbage_cannot_hide_a_client_behind_its_proxy,);

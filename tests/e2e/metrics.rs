//! `/metrics`: Prometheus text that a real parser reads, with counters that move with traffic.

use axum::http::StatusCode;
use prometheus_parse::{Scrape, Value};
use serde_json::json;
use vigil_tests::{Agent, TestApp};

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses as Prometheus text")
}

/// The value of the sample `name` whose labels include every `(label, value)` in `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

async fn fetch(app: &TestApp) -> (String, Scrape) {
    let answer = app.get("/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        answer.content_type
    );
    let text = answer.body.as_str().expect("text body").to_owned();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let parsed = scrape(&text);
    (text, parsed)
}

async fn metrics_parse_as_prometheus_text_and_counters_move_with_traffic() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("metered");
    app.register(&agent).await;

    let (_, before) = fetch(&app).await;
    assert_eq!(
        value(&before, "vigil_heartbeats_accepted_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &before,
            "vigil_servers",
            &[("status", "unknown"), ("confidence", "yellow")]
        ),
        Some(1.0)
    );

    let accepted = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let mut forged = agent.heartbeat(json!({}));
    forged["players_current"] = json!(7);
    let refused = app.post_heartbeat(&forged).await;
    assert_eq!(refused.code(), "bad_signature");

    let (text, after) = fetch(&app).await;
    assert_eq!(
        value(&after, "vigil_heartbeats_accepted_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &after,
            "vigil_heartbeats_rejected_total",
            &[("reason", "bad_signature")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &after,
            "vigil_servers",
            &[("status", "unknown"), ("confidence", "yellow")]
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&after, "vigil_servers", &[("status", "online")]),
        Some(1.0),
        "{text}"
    );
    let digest = app.state.engine.policy().digest().to_owned();
    assert_eq!(
        value(
            &after,
            "vigil_policy_active",
            &[("digest", &digest), ("name", "default")]
        ),
        Some(1.0),
        "{text}"
    );
    // One heartbeat and one rejection, each folded once.
    assert_eq!(
        value(
            &after,
            "vigil_policy_evaluations_total",
            &[("digest", &digest)]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&after, "vigil_queue_depth", &[("queue", "writer")]),
        Some(0.0)
    );
    // The latency histogram of the heartbeat route, by status, as a real histogram.
    let histogram = after.samples.iter().find(|s| {
        s.metric == "vigil_http_request_duration_seconds"
            && s.labels.get("route") == Some("/v1/agent/heartbeat")
            && s.labels.get("status") == Some("202")
    });
    match histogram.map(|s| &s.value) {
        Some(Value::Histogram(buckets)) => {
            assert_eq!(buckets.last().map(|b| b.count), Some(1.0), "{text}");
        }
        other => panic!("no heartbeat latency histogram: {other:?}\n{text}"),
    }
    let batches = after
        .samples
        .iter()
        .find(|s| s.metric == "vigil_batch_size_events")
        .map(|s| &s.value);
    assert!(
        matches!(batches, Some(Value::Histogram(_))),
        "batch sizes: {batches:?}"
    );

    app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    let (_, later) = fetch(&app).await;
    assert_eq!(
        value(&later, "vigil_heartbeats_accepted_total", &[]),
        Some(2.0)
    );
}

vigil_tests::on_both_backends!(metrics_parse_as_prometheus_text_and_counters_move_with_traffic,);

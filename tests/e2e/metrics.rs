//! `/metrics`: Prometheus text that a real parser reads, with counters that move with traffic.

use axum::http::StatusCode;
use prometheus_parse::{Scrape, Value};
use serde_json::json;
use std::time::Duration;

use vigil_tests::{Agent, TestApp, wait_until};

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

/// Every metric name a PromQL expression uses: identifiers that start like one of ours,
/// outside of label matchers and strings (`{...}` and `"..."` are skipped).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut word = String::new();
    let flush = |word: &mut String, names: &mut Vec<String>| {
        if word.starts_with("vigil_") || word.starts_with("process_") {
            names.push(std::mem::take(word));
        }
        word.clear();
    };
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' => {
                flush(&mut word, &mut names);
                depth += 1;
            }
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 && (c.is_ascii_alphanumeric() || c == '_' || c == ':') => word.push(c),
            _ => flush(&mut word, &mut names),
        }
    }
    flush(&mut word, &mut names);
    names
}

/// The sample names `/metrics` can serve, from its `# TYPE` lines (so a family that has no
/// sample yet still counts): a counter adds `_total`, a histogram `_bucket`, `_sum`, `_count`.
fn served_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() != Some("#") || parts.next() != Some("TYPE") {
            continue;
        }
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[tokio::test]
async fn the_grafana_dashboard_uses_only_metrics_the_host_serves() {
    // Traffic that makes every family of the dashboard appear: a refusal, and a server that
    // goes silent so an alert is raised and delivered (1 s interval: offline after 2 s).
    let (receiver, address) = crate::alerts::Receiver::start(0).await;
    let app = TestApp::spawn_with(|c| {
        c.metrics.per_server = true;
        crate::alerts::alerting(c, address, &["server_offline"]);
    })
    .await;
    let agent = Agent::new("graphed");
    app.register(&agent).await;
    app.post_heartbeat(&agent.heartbeat(json!({"interval_seconds": 1})))
        .await;
    let mut forged = agent.heartbeat(json!({}));
    forged["players_current"] = json!(7);
    assert_eq!(app.post_heartbeat(&forged).await.code(), "bad_signature");
    receiver.wait_for("server_offline").await;
    let text = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || fetch(&app).await.0,
        |text| text.contains("vigil_alert_deliveries_total{"),
    )
    .await
    .unwrap_or_else(|text| panic!("no delivery counted:\n{text}"));
    let served = served_names(&text);

    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana-dashboard.json"))
            .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut checked = 0;
    for panel in panels {
        let targets = panel["targets"]
            .as_array()
            .expect("every panel has targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "no metric in {expr:?}");
            for name in names {
                assert!(
                    served.contains(&name),
                    "panel {:?} uses {name}, which /metrics does not serve:\n{text}",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked} names checked");
    // The checker itself: a name that is not served is caught, label values are not names.
    assert_eq!(
        metric_names(r#"sum by (le) (rate(vigil_nope_bucket{route="vigil_x"}[5m]))"#),
        ["vigil_nope_bucket"]
    );
    assert!(!served.contains("vigil_nope_bucket"));
    app.stop().await;
}

#[tokio::test]
async fn build_info_process_metrics_and_per_server_series_are_served() {
    let app = TestApp::spawn_with(|c| c.metrics.per_server = true).await;
    let up = Agent::new("per-server-up");
    let quiet = Agent::new("per-server-quiet");
    app.register(&up).await;
    app.register(&quiet).await;
    app.post_heartbeat(&up.heartbeat(json!({}))).await;

    let (text, scrape) = fetch(&app).await;
    assert_eq!(
        value(
            &scrape,
            "vigil_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&scrape, "vigil_config_last_reload_successful", &[]),
        Some(1.0)
    );
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "process_open_fds",
    ] {
        let v = value(&scrape, name, &[]).unwrap_or_else(|| panic!("no {name}:\n{text}"));
        assert!(v > 0.0, "{name} = {v}");
    }
    let server = |name: &str, id: &str| value(&scrape, name, &[("server", id)]);
    assert_eq!(
        server("vigil_server_up", "per-server-up"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(server("vigil_server_up", "per-server-quiet"), Some(0.0));
    let age = server("vigil_server_last_seen_age_seconds", "per-server-up").expect("an age");
    assert!((0.0..60.0).contains(&age), "{age}");
    assert_eq!(
        server("vigil_server_last_seen_age_seconds", "per-server-quiet"),
        None,
        "never seen: no age"
    );
    assert!(server("vigil_server_confidence", "per-server-up").is_some());
    assert!(server("vigil_server_uptime_ratio", "per-server-up").is_some());

    // Off by default: no per-server series.
    let plain = TestApp::spawn().await;
    let agent = Agent::new("not-per-server");
    plain.register(&agent).await;
    let (text, _) = fetch(&plain).await;
    assert!(!text.contains("vigil_server_up{"), "{text}");
}

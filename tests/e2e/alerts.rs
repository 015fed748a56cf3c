//! Alerts: transitions become durable outbox rows delivered to a webhook the test runs, with
//! retries, dedup, restart survival and maintenance windows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use vigil::alerts::{MaintenanceWindow, RouteConfig, SinkConfig, SinkKind};
use vigil::config::Config;
use vigil_tests::{Agent, TestApp, now_ms, wait_until};

const SECRET: &str = "webhook-secret";
/// How long a delivery may take to show.
const PATIENCE: Duration = Duration::from_secs(20);
/// How often the waits for one look again.
const POLL: Duration = Duration::from_millis(50);

/// A webhook receiver on 127.0.0.1:0 that answers 500 while `fail` is above zero.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    /// Bodies answered 2xx, with whether their signature header was valid.
    received: Arc<Mutex<Vec<(Value, bool)>>>,
    /// Bodies that arrived on the Alertmanager and Slack paths.
    other: Arc<Mutex<Vec<(String, Value)>>>,
    /// Requests seen, including failed ones.
    requests: Arc<AtomicUsize>,
    /// Requests still to refuse with 500.
    fail: Arc<AtomicUsize>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
    if r.fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let signature = headers
        .get("x-vigil-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let valid = signature == vigil::alerts::sinks::signature(SECRET, &body);
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.received
        .lock()
        .expect("not poisoned")
        .push((value, valid));
    StatusCode::NO_CONTENT
}

async fn receive_other(State(r): State<Receiver>, uri: axum::http::Uri, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.other
        .lock()
        .expect("not poisoned")
        .push((uri.path().to_owned(), value));
    StatusCode::OK
}

impl Receiver {
    pub(crate) async fn start(fail: usize) -> (Self, SocketAddr) {
        let receiver = Self::default();
        receiver.fail.store(fail, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds loopback");
        let address = listener.local_addr().expect("address");
        let app = Router::new()
            .route("/hook", post(receive))
            .route("/am/api/v2/alerts", post(receive_other))
            .route("/slack", post(receive_other))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver serves") });
        (receiver, address)
    }

    fn kinds(&self) -> Vec<String> {
        self.received
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(v, _)| v["kind"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// Waits (up to 20 s) until a delivery of `kind` arrived.
    pub(crate) async fn wait_for(&self, kind: &str) {
        wait_until(
            PATIENCE,
            POLL,
            async || self.kinds(),
            |kinds| kinds.iter().any(|k| k == kind),
        )
        .await
        .unwrap_or_else(|kinds| panic!("no {kind} delivery; got {kinds:?}"));
    }
}

pub(crate) fn alerting(config: &mut Config, address: SocketAddr, kinds: &[&str]) {
    let a = &mut config.alerts;
    a.poll_interval_ms = 50;
    a.retry_initial_ms = 50;
    a.retry_max_ms = 200;
    a.sinks.push(SinkConfig {
        name: "hook".into(),
        kind: SinkKind::Webhook,
        url: format!("http://{address}/hook"),
        hmac_secret: Some(SECRET.into()),
        ..SinkConfig::default()
    });
    a.routes.push(RouteConfig {
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        severities: vec![],
        clusters: vec![],
        sink: "hook".into(),
    });
}

/// A heartbeat declaring a 1 s interval: the default policy's grace window is then 2 s.
fn short(agent: &Agent) -> Value {
    agent.heartbeat(json!({"interval_seconds": 1}))
}

async fn delivery_states(app: &TestApp, kind: &str) -> Vec<(String, i64)> {
    vigil_tests::with_pool!(&app.db.pool_for_tests(), pool => sqlx::query_as(
        "SELECT d.state, d.attempts FROM alert_deliveries d JOIN alert_outbox a \
         ON a.id = d.alert_id WHERE a.kind = $1 ORDER BY d.id",
    )
    .bind(kind)
    .fetch_all(pool)
    .await)
    .expect("deliveries")
}

async fn wait_for_state(app: &TestApp, kind: &str, want: &[&str]) -> Vec<(String, i64)> {
    let states = async || delivery_states(app, kind).await;
    wait_until(PATIENCE, POLL, states, |states| {
        states
            .iter()
            .map(|(s, _)| s.as_str())
            .eq(want.iter().copied())
    })
    .await
    .unwrap_or_else(|states| panic!("{kind} deliveries never became {want:?}: {states:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_alerts_offline_once_a_recovery_alerts_online_and_a_repeat_is_deduplicated()
{
    let (receiver, address) = Receiver::start(0).await;
    let app =
        TestApp::spawn_with(|c| alerting(c, address, &["server_offline", "server_online"])).await;
    let agent = Agent::new("quiet-one");
    app.register(&agent).await;
    assert_eq!(
        app.post_heartbeat(&short(&agent)).await.body["status"],
        "online"
    );

    receiver.wait_for("server_offline").await;
    let (offline, signed) = receiver.received.lock().expect("ok")[0].clone();
    assert!(
        signed,
        "X-Vigil-Signature is the HMAC-SHA256 of the exact body"
    );
    assert_eq!(offline["server_id"], "quiet-one");
    assert_eq!(offline["severity"], "critical");

    assert_eq!(
        app.post_heartbeat(&short(&agent)).await.body["status"],
        "online"
    );
    receiver.wait_for("server_online").await;
    assert_eq!(receiver.kinds(), ["server_offline", "server_online"]);

    // Silent again within the dedup window: the second offline alert is stored, not sent.
    wait_for_state(&app, "server_offline", &["delivered", "duplicate"]).await;
    assert_eq!(receiver.kinds(), ["server_offline", "server_online"]);
    assert_eq!(
        app.count("alert_outbox WHERE kind = 'server_offline'")
            .await,
        2
    );
    app.stop().await;
}

async fn a_receiver_failing_twice_gets_the_alert_once_after_retries() {
    let (receiver, address) = Receiver::start(2).await;
    let app = TestApp::spawn_with(|c| alerting(c, address, &["server_offline"])).await;
    let agent = Agent::new("flaky-sink");
    app.register(&agent).await;
    app.post_heartbeat(&short(&agent)).await;

    receiver.wait_for("server_offline").await;
    let states = wait_for_state(&app, "server_offline", &["delivered"]).await;
    assert_eq!(states[0].1, 3, "two failures, then the delivery");
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 3);
    assert_eq!(receiver.kinds(), ["server_offline"]);
    let text = app.get("/metrics").await.body;
    let text = text.as_str().unwrap_or("");
    assert!(
        text.contains("vigil_alert_deliveries_total{sink=\"hook\",outcome=\"retry\"} 2"),
        "{text}"
    );
    app.stop().await;
}

async fn pending_deliveries_survive_a_host_restart() {
    let (receiver, address) = Receiver::start(usize::MAX).await;
    let app = TestApp::spawn_with(|c| alerting(c, address, &["server_offline"])).await;
    let agent = Agent::new("outlives-host");
    app.register(&agent).await;
    app.post_heartbeat(&short(&agent)).await;
    // Wait until the alert was attempted and is still pending.
    let requests = async || receiver.requests.load(Ordering::SeqCst);
    let _ = wait_until(PATIENCE, POLL, requests, |n| *n > 0).await;
    assert!(
        receiver.requests.load(Ordering::SeqCst) > 0,
        "never attempted"
    );
    let dir = app.stop().await;
    assert!(receiver.kinds().is_empty());

    receiver.fail.store(0, Ordering::SeqCst);
    let app = TestApp::spawn_in(dir, |c| alerting(c, address, &["server_offline"])).await;
    receiver.wait_for("server_offline").await;
    wait_for_state(&app, "server_offline", &["delivered"]).await;
    assert_eq!(receiver.kinds(), ["server_offline"]);
    app.stop().await;
}

async fn a_maintenance_window_mutes_the_alert() {
    let (receiver, address) = Receiver::start(0).await;
    let now = now_ms();
    let app = TestApp::spawn_with(|c| {
        alerting(c, address, &["server_offline"]);
        c.alerts.maintenance.push(MaintenanceWindow {
            server_id: Some("in-maintenance".into()),
            cluster_id: None,
            start: vigil::clock::format_rfc3339_ms(now - 3_600_000),
            end: vigil::clock::format_rfc3339_ms(now + 3_600_000),
            reason: Some("planned upgrade".into()),
        });
    })
    .await;
    let agent = Agent::new("in-maintenance");
    app.register(&agent).await;
    app.post_heartbeat(&short(&agent)).await;

    wait_for_state(&app, "server_offline", &["muted"]).await;
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 0);
    app.stop().await;
}

async fn alertmanager_and_slack_sinks_receive_their_formats() {
    let (receiver, address) = Receiver::start(0).await;
    let app = TestApp::spawn_with(|c| {
        alerting(c, address, &["server_offline"]);
        for (name, kind, path) in [
            ("am", SinkKind::Alertmanager, "/am"),
            ("chat", SinkKind::Slack, "/slack"),
        ] {
            c.alerts.sinks.push(SinkConfig {
                name: name.into(),
                kind,
                url: format!("http://{address}{path}"),
                ..SinkConfig::default()
            });
            c.alerts.routes.push(RouteConfig {
                kinds: vec![],
                severities: vec!["critical".into()],
                clusters: vec![],
                sink: name.into(),
            });
        }
    })
    .await;
    let agent = Agent::new("many-sinks");
    app.register(&agent).await;
    app.post_heartbeat(&short(&agent)).await;
    wait_for_state(
        &app,
        "server_offline",
        &["delivered", "delivered", "delivered"],
    )
    .await;

    let other = receiver.other.lock().expect("ok").clone();
    let am = other
        .iter()
        .find(|(path, _)| path == "/am/api/v2/alerts")
        .map(|(_, body)| body.clone())
        .expect("Alertmanager got the alert");
    assert_eq!(am[0]["labels"]["alertname"], "server_offline");
    assert_eq!(am[0]["labels"]["server_id"], "many-sinks");
    assert_eq!(am[0]["labels"]["severity"], "critical");
    assert!(am[0]["startsAt"].is_string());
    let slack = other
        .iter()
        .find(|(path, _)| path == "/slack")
        .map(|(_, body)| body.clone())
        .expect("Slack got the alert");
    assert!(
        slack["text"]
            .as_str()
            .is_some_and(|t| t.contains("many-sinks")),
        "{slack}"
    );
    app.stop().await;
}

vigil_tests::on_both_backends!(
    a_receiver_failing_twice_gets_the_alert_once_after_retries,
    pending_deliveries_survive_a_host_restart,
    a_maintenance_window_mutes_the_alert,
    alertmanager_and_slack_sinks_receive_their_formats,
);

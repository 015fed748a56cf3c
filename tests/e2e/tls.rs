//! TLS out: an HTTPS alert sink behind a private CA, and PostgreSQL with `sslmode=verify-full`
//! (the harness cluster serves TLS with a certificate from its own throwaway CA).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use vigil::alerts::{RouteConfig, SinkConfig, SinkKind};
use vigil_tests::tls::{TestCa, serve_https};
use vigil_tests::{Agent, TestApp, postgres, wait_until};

type Bodies = Arc<Mutex<Vec<Value>>>;

async fn keep(State(bodies): State<Bodies>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    bodies.lock().expect("not poisoned").push(value);
    StatusCode::NO_CONTENT
}

async fn deliveries(app: &TestApp) -> Vec<(String, String, i64, Option<String>)> {
    vigil_tests::with_pool!(&app.db.pool_for_tests(), pool => sqlx::query_as(
        "SELECT sink, state, attempts, last_error FROM alert_deliveries ORDER BY sink",
    )
    .fetch_all(pool)
    .await)
    .expect("deliveries")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_sink_trusting_the_private_ca_gets_the_alert_and_one_that_does_not_is_refused() {
    let ca = TestCa::new("vigil test sink CA");
    let bodies = Bodies::default();
    let app_router = Router::new()
        .route("/hook", post(keep))
        .with_state(bodies.clone());
    let (address, failed_handshakes) = serve_https(app_router, &ca).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = ca.write(dir.path(), "ca.pem");

    let app = TestApp::spawn_with(|c| {
        let a = &mut c.alerts;
        a.poll_interval_ms = 50;
        a.retry_initial_ms = 50;
        a.retry_max_ms = 200;
        for (name, ca_file) in [("trusting", Some(ca_file.clone())), ("default_roots", None)] {
            a.sinks.push(SinkConfig {
                name: name.into(),
                kind: SinkKind::Webhook,
                url: format!("https://localhost:{}/hook", address.port()),
                ca_file,
                ..SinkConfig::default()
            });
            a.routes.push(RouteConfig {
                kinds: vec!["server_offline".into()],
                severities: vec![],
                clusters: vec![],
                sink: name.into(),
            });
        }
    })
    .await;
    let agent = Agent::new("tls-sink");
    app.register(&agent).await;
    app.post_heartbeat(&agent.heartbeat(json!({"interval_seconds": 1})))
        .await;

    let states = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        async || deliveries(&app).await,
        |rows| {
            rows.iter()
                .any(|(s, state, _, _)| s == "trusting" && state == "delivered")
                && rows
                    .iter()
                    .any(|(s, _, attempts, _)| s == "default_roots" && *attempts >= 1)
        },
    )
    .await
    .unwrap_or_else(|rows| panic!("deliveries never settled: {rows:?}"));
    let received = bodies.lock().expect("not poisoned").clone();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["kind"], "server_offline");
    assert_eq!(received[0]["server_id"], "tls-sink");
    let (_, state, _, error) = states
        .iter()
        .find(|(s, ..)| s == "default_roots")
        .expect("row");
    assert_eq!(
        state, "pending",
        "an untrusted certificate is retried, not sent"
    );
    let error = error.as_deref().unwrap_or("");
    assert!(error.contains("certificate"), "{error}");
    assert!(failed_handshakes.load(Ordering::SeqCst) >= 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_over_tls_verify_full_with_the_clusters_ca() {
    let (Some(server), Some(ca)) = (postgres::server_url(), postgres::tls_ca_file()) else {
        eprintln!("postgres_over_tls: SKIPPED (no harness-started PostgreSQL cluster)");
        return;
    };
    let url = postgres::ensure_database(server, "vigil_tls_check").await;
    let tls_url = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let app = TestApp::spawn_with(|c| c.storage.url = tls_url.clone()).await;
    let agent = Agent::new("over-tls");
    app.register(&agent).await;
    let answer = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let ssl: bool = vigil_tests::with_pool!(&app.db.pool_for_tests(), pool =>
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(pool)
            .await)
    .expect("pg_stat_ssl");
    assert!(ssl, "the host's pool speaks TLS");
    app.stop().await;

    // A CA that did not sign the server's certificate: verify-full refuses to start,
    // require (encryption without verification) connects.
    let dir = tempfile::tempdir().expect("temp dir");
    let stranger = TestCa::new("a stranger").write(dir.path(), "stranger.pem");
    let mut config = vigil_tests::test_config(dir.path());
    config.storage.url = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        stranger.display()
    );
    let Err(refused) = vigil::build(config.clone()).await else {
        panic!("verify-full against a stranger's CA connected");
    };
    let text = format!("{refused:#}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    config.storage.url = format!("{url}?sslmode=require");
    let host = vigil::build(config).await.expect("require connects");
    drop(host);
}

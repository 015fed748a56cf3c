//! PAP agents (issue 17): `POST /heartbeat/{agentId}` with the exact bodies a PAP heartbeat
//! emitter sends (tests/fixtures/pap-heartbeat-emitter.json), the collector's query routes,
//! and PAP's `ClusterAlert`s delivered through the `pap` sink to a local station.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use vigil::alerts::{RouteConfig, SinkConfig, SinkKind};
use vigil_tests::{Answer, TestApp, wait_until};

const FIXTURE: &str = include_str!("../fixtures/pap-heartbeat-emitter.json");
const CLUSTER: &str = "is.plugged.in";
const COLLECTOR_KEY: &str = "collector-key-for-tests";
const STATION_KEY: &str = "pg_in_station_key";
/// An address inside the default `allow_from` (loopback).
const LOCAL: &str = "127.0.0.1:40000";

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("the fixture is JSON")
}

async fn beat(app: &TestApp, from: &str, agent_id: &str, body: &str) -> Answer {
    app.send_from(
        Method::POST,
        &format!("/heartbeat/{agent_id}"),
        body.as_bytes().to_vec(),
        from,
        &[("content-type", "application/json")],
    )
    .await
}

async fn query(app: &TestApp, path: &str, from: &str, headers: &[(&str, &str)]) -> Answer {
    app.send_from(Method::GET, path, Vec::new(), from, headers)
        .await
}

fn pap(c: &mut vigil::config::Config) {
    let pap = &mut c.compat.pap;
    pap.enabled = true;
    pap.cluster_id = CLUSTER.into();
    pap.cluster_name = "Production Cluster".into();
    pap.collector_key = Some(COLLECTOR_KEY.into());
}

async fn pap_agents_get_collector_answers_and_are_stored_as_network_heartbeats() {
    // Disabled (the default): the routes are unknown.
    let off = TestApp::spawn().await;
    let body = r#"{"mode":"IDLE","uptime_seconds":1}"#;
    assert_eq!(
        beat(&off, LOCAL, "a-1", body).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(query(&off, "/agents", LOCAL, &[]).await.status, 404);
    off.stop().await;

    let app = TestApp::spawn_with(pap).await;
    let fixture = fixture();
    let id = fixture["agent_id"].as_str().expect("agent id");
    // Outside `allow_from`: refused, nothing stored but one bounded rejection.
    let far = beat(&app, "10.1.2.3:5000", id, body).await;
    assert_eq!(far.status, StatusCode::FORBIDDEN);
    assert_eq!(far.body, json!({"error": "Forbidden"}));
    assert_eq!(app.count("servers").await, 0);
    assert_eq!(app.count("heartbeats").await, 0);
    assert_eq!(app.rejection_codes().await, ["forbidden_source"]);

    for request in fixture["requests"].as_array().expect("requests") {
        let sent = request["body"].as_str().expect("body");
        let answer = beat(&app, LOCAL, id, sent).await;
        assert_eq!(answer.status, StatusCode::OK, "{sent}: {:?}", answer.body);
        assert_eq!(
            answer.body,
            json!({
                "received": true,
                "is_new": request["is_new"],
                "restart_detected": request["restart_detected"],
                "next_heartbeat_ms": request["next_heartbeat_ms"],
            }),
            "{sent}"
        );
    }
    // Registered into the cluster, unverified, named by the agent; yellow at best.
    let server = app.server(id).await;
    assert_eq!(server["cluster_id"], CLUSTER, "{server}");
    assert_eq!(server["display_name"], "focus-agent");
    assert_eq!(server["is_verified"], false);
    assert_eq!(server["confidence"], "yellow");
    let rows: Vec<(String, String, Option<String>)> = vigil_tests::with_pool!(
        &app.db.pool_for_tests(),
        pool => sqlx::query_as(
            "SELECT auth, body, original_body FROM heartbeats WHERE server_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(pool)
        .await
    )
    .expect("rows");
    assert_eq!(rows.len(), 5);
    let (auth, v1, original) = &rows[2];
    assert_eq!(auth, "network");
    let v1: Value = serde_json::from_str(v1).expect("json");
    assert_eq!(
        (&v1["mode"], &v1["uptime_seconds"]),
        (&json!("emergency"), &json!(60))
    );
    assert_eq!(
        original.as_deref(),
        fixture["requests"][2]["body"].as_str(),
        "the body is kept as sent"
    );

    // Modes are case-insensitive; unknown members are kept; bad bodies get PAP's 400s.
    let odd = r#"{"mode":"sleep","uptime_seconds":90,"agent_name":"focus-agent","region":"eu"}"#;
    assert_eq!(
        beat(&app, LOCAL, id, odd).await.body["next_heartbeat_ms"],
        900_000
    );
    let missing = beat(&app, LOCAL, id, r#"{"mode":"IDLE"}"#).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.body,
        json!({"error": "Invalid heartbeat payload", "required": ["mode", "uptime_seconds"]})
    );
    let mode = beat(&app, LOCAL, id, r#"{"mode":"TURBO","uptime_seconds":1}"#).await;
    assert_eq!(mode.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        mode.body,
        json!({"error": "Invalid mode", "valid": ["EMERGENCY", "IDLE", "SLEEP"]})
    );
    let bad_id = beat(&app, LOCAL, "Not.An.Id", body).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.count("heartbeats").await, 6);

    // The query routes need the collector key (from anywhere), in either header.
    let refused = query(&app, "/agents", LOCAL, &[]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let wrong = query(&app, "/agents", LOCAL, &[("x-collector-key", "nope")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let list = query(
        &app,
        "/agents",
        "192.0.2.7:443",
        &[("x-collector-key", COLLECTOR_KEY)],
    )
    .await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    assert_eq!(list.body["cluster_id"], CLUSTER);
    assert_eq!(list.body["cluster_name"], "Production Cluster");
    assert_eq!(
        list.body["stats"],
        json!({"total": 1, "healthy": 1, "unhealthy": 0,
               "by_mode": {"EMERGENCY": 0, "IDLE": 0, "SLEEP": 1}, "observed": 0})
    );
    let agent = &list.body["agents"][0];
    assert_eq!(agent["agent_uuid"], id);
    assert_eq!(agent["agent_name"], "focus-agent");
    assert_eq!(agent["mode"], "SLEEP");
    assert_eq!(agent["uptime_seconds"], 90);
    assert_eq!(agent["healthy"], true);
    assert!(agent["last_seen"].is_string(), "{agent}");
    let bearer = format!("Bearer {COLLECTOR_KEY}");
    let one = query(
        &app,
        &format!("/agents/{id}"),
        LOCAL,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["agent"], *agent);
    let none = query(
        &app,
        "/agents/no-such-agent",
        LOCAL,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(
        none.body,
        json!({"error": "Agent not found", "agent_uuid": "no-such-agent", "cluster_id": CLUSTER})
    );
    let health = query(
        &app,
        "/health",
        LOCAL,
        &[("x-collector-key", COLLECTOR_KEY)],
    )
    .await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "healthy");
    assert_eq!(
        health.body["agents"],
        json!({"total": 1, "healthy": 1, "unhealthy": 0})
    );
    app.stop().await;
}

/// A PAP station's alert endpoint: records each `ClusterAlert` with its `Authorization`.
#[derive(Clone, Default)]
struct Station {
    alerts: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn station_receive(State(s): State<Station>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.alerts.lock().expect("not poisoned").push((auth, body));
    StatusCode::OK
}

async fn start_station() -> (Station, SocketAddr) {
    let station = Station::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds loopback");
    let address = listener.local_addr().expect("address");
    let app = Router::new()
        .route(
            "/api/clusters/is.plugged.in/alerts",
            axum::routing::post(station_receive),
        )
        .with_state(station.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("station serves") });
    (station, address)
}

async fn pap_mode_switches_restarts_and_silence_reach_the_station_as_cluster_alerts() {
    let (station, address) = start_station().await;
    let app = TestApp::spawn_with(|c| {
        pap(c);
        // One-second mode intervals: the 2x grace (AGENT_DEATH) passes in 2 s, not 60.
        for mode in ["emergency", "idle", "sleep"] {
            c.policy
                .params
                .insert(format!("{mode}_interval_seconds"), toml::Value::Float(1.0));
        }
        let a = &mut c.alerts;
        a.poll_interval_ms = 50;
        a.retry_initial_ms = 50;
        a.sinks.push(SinkConfig {
            name: "station".into(),
            kind: SinkKind::Pap,
            url: format!("http://{address}/api/clusters/{CLUSTER}/alerts"),
            token: Some(STATION_KEY.into()),
            ..SinkConfig::default()
        });
        a.routes.push(RouteConfig {
            kinds: vec![
                "server_offline".into(),
                "emergency_mode".into(),
                "restart_detected".into(),
            ],
            severities: vec![],
            clusters: vec![],
            sink: "station".into(),
        });
    })
    .await;
    let id = "7a0b9c8d-1e2f-4a3b-8c4d-5e6f7a8b9c0d";
    let named = |mode: &str, uptime: f64| {
        json!({"mode": mode, "uptime_seconds": uptime, "agent_name": "edge-agent"}).to_string()
    };
    let first = beat(&app, LOCAL, id, &named("IDLE", 500.25)).await;
    assert_eq!(
        first.body["next_heartbeat_ms"], 1_000,
        "half the policy's grace"
    );
    assert_eq!(
        beat(&app, LOCAL, id, &named("EMERGENCY", 500.5))
            .await
            .status,
        StatusCode::OK
    );
    let restarted = beat(&app, LOCAL, id, &named("IDLE", 3.0)).await;
    assert_eq!(restarted.body["restart_detected"], true);

    let types = async || {
        station
            .alerts
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(_, a)| a["type"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    let seen = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        types,
        |t| t.len() >= 3,
    )
    .await
    .unwrap_or_else(|t| panic!("the station got {t:?}"));
    assert_eq!(seen, ["EMERGENCY_MODE", "RESTART_DETECTED", "AGENT_DEATH"]);
    let alerts = station.alerts.lock().expect("not poisoned").clone();
    for (auth, alert) in &alerts {
        assert_eq!(auth, &format!("Bearer {STATION_KEY}"));
        assert_eq!(alert["agent_uuid"], id);
        assert_eq!(alert["agent_name"], "edge-agent");
        assert_eq!(alert["cluster_id"], CLUSTER);
        assert!(
            alert["details"].is_object() && alert["timestamp"].is_string(),
            "{alert}"
        );
    }
    let severities: Vec<&Value> = alerts.iter().map(|(_, a)| &a["severity"]).collect();
    assert_eq!(
        severities,
        [&json!("warning"), &json!("info"), &json!("critical")]
    );
    app.stop().await;
}

vigil_tests::on_both_backends!(
    pap_agents_get_collector_answers_and_are_stored_as_network_heartbeats,
    pap_mode_switches_restarts_and_silence_reach_the_station_as_cluster_alerts,
);

//! Host downtime is not server downtime: a restart after the host was down past its servers'
//! deadlines gives each one fresh grace window (no alert storm), a server still silent after
//! it goes offline and alerts as usual, and the gap is nobody's uptime. The engine restarts
//! over the same database (real time: the gap has to pass).

use std::time::Duration;

use serde_json::json;
use vigil::engine::replay::replay;
use vigil_tests::{Agent, TestApp, wait_until};

async fn a_restart_after_downtime_gives_a_fresh_interval_and_then_alerts_as_usual() {
    // Nothing listens on port 9: deliveries fail, but the outbox records every alert raised.
    let sink = "127.0.0.1:9".parse().expect("address");
    let alerting = |c: &mut vigil::config::Config| {
        crate::alerts::alerting(c, sink, &["server_offline", "server_online"]);
    };
    let app = TestApp::spawn_with(alerting).await;
    let (silent, beating) = (Agent::new("stays-silent"), Agent::new("beats-again"));
    for agent in [&silent, &beating] {
        app.register(agent).await;
        // A declared 1 s interval: a 2 s grace window under the default policy.
        let answer = app
            .post_heartbeat(&agent.heartbeat(json!({"interval_seconds": 1})))
            .await;
        assert_eq!(answer.body["status"], "online");
        assert_eq!(answer.body["policy"], "default@1.3.0");
    }
    let dir = app.stop().await;
    // Down past both deadlines (2 s) and past a second grace window.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let app = TestApp::spawn_in(dir, alerting).await;
    let (down_at, up_at): (i64, i64) = {
        let gaps = app.store.host_gaps(i64::MIN).await.expect("gaps");
        assert_eq!(gaps.len(), 1, "one gap recorded: {gaps:?}");
        gaps[0]
    };
    assert!(up_at - down_at >= 4_500, "{down_at}..{up_at}");
    let online = |v: &serde_json::Value| v["effective_status"] == "online";
    for id in ["stays-silent", "beats-again"] {
        let server = app.server(id).await;
        assert!(online(&server), "no flip at the restart: {server}");
    }
    assert_eq!(
        app.count("status_transitions WHERE to_status = 'offline'")
            .await,
        0
    );
    assert_eq!(
        app.count("alert_outbox WHERE kind = 'server_offline'")
            .await,
        0
    );
    // Back within its fresh window, now declaring a minute (it stays online below).
    let back = app
        .post_heartbeat(&beating.heartbeat(json!({"interval_seconds": 60})))
        .await;
    assert_eq!(back.body["status"], "online");

    // The silent one goes offline at the fresh deadline (restart + 2 s) and alerts once.
    let status = async || app.server("stays-silent").await["effective_status"].clone();
    let every = Duration::from_millis(100);
    let last = wait_until(Duration::from_secs(6), every, status, |s| s == "offline")
        .await
        .unwrap_or_else(|last| last);
    assert_eq!(last, "offline");
    let at = app
        .scalar(
            "SELECT at_ms FROM status_transitions \
             WHERE server_id = 'stays-silent' AND to_status = 'offline'",
        )
        .await;
    assert_eq!(
        at,
        up_at + 2_000,
        "offline exactly one grace after the restart"
    );
    let alerts = async || {
        app.count("alert_outbox WHERE kind = 'server_offline'")
            .await
    };
    let raised = wait_until(Duration::from_secs(3), every, alerts, |n| *n >= 1)
        .await
        .unwrap_or_else(|n| n);
    assert_eq!(raised, 1, "one offline alert, for the silent server only");

    // The gap is nobody's uptime: the rollups observed the server only while a host ran.
    let live = app
        .store
        .get_server("stays-silent")
        .await
        .expect("read")
        .expect("exists");
    let open = live.snapshot.rollup.clone().expect("open rollup");
    let closed = app
        .scalar(
            "SELECT CAST(COALESCE(SUM(observed_ms), 0) AS BIGINT) FROM rollups \
             WHERE server_id = 'stays-silent' AND span = 'hour'",
        )
        .await;
    let first = app
        .scalar("SELECT MIN(received_at_ms) FROM heartbeats WHERE server_id = 'stays-silent'")
        .await;
    let evaluated = live.snapshot.evaluated_at_ms.expect("evaluated");
    assert_eq!(
        closed + open.hour.observed_ms,
        (down_at - first) + (evaluated - up_at),
        "observed before the host went down and after it came back, not in between"
    );

    // Replay folds the same gap at the same place: the rebuilt snapshot equals the live one.
    let history = app.store.history("stays-silent", 0).await.expect("history");
    let policy = app.state.engine.policy().clone();
    let (rebuilt, _) =
        replay(&policy, &live, &history, live.snapshot.evaluated_at_ms).expect("replays");
    assert_eq!(rebuilt.snapshot, live.snapshot);
}

vigil_tests::on_both_backends!(
    a_restart_after_downtime_gives_a_fresh_interval_and_then_alerts_as_usual,
);

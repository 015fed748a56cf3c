//! History is truth: replaying a server's stored history through the policy reproduces its
//! snapshot byte for byte.

use std::time::Duration;

use serde_json::json;
use vigil::engine::replay::replay;
use vigil_tests::{Agent, TestApp};

async fn replaying_stored_history_reproduces_the_snapshot_byte_for_byte() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("replayed");
    let spoofer = Agent::new("replayed");
    app.register(&agent).await;
    app.verify("replayed").await;
    for i in 0..12u32 {
        let extra = json!({
            "interval_seconds": 1, "players_current": i, "players_capacity": 20,
            "uptime_seconds": if i == 6 { 1 } else { 100 + i }, "mode": "idle",
            "metrics": {"cpu_percent": 10.5 + f64::from(i)},
        });
        assert_eq!(
            app.post_heartbeat(&agent.heartbeat(extra)).await.status,
            202
        );
        if i % 4 == 3 {
            // Forged heartbeats are rejections folded into the policy as events.
            assert_eq!(
                app.post_heartbeat(&spoofer.heartbeat(json!({})))
                    .await
                    .status,
                401
            );
        }
        if i == 8 {
            // Let a deadline pass so ticks are part of the history too.
            tokio::time::sleep(Duration::from_millis(2_300)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let _ = app.get("/healthz").await;
    let live = app
        .store
        .get_server("replayed")
        .await
        .expect("read")
        .expect("exists");
    assert!(
        live.snapshot.event_seq >= 15,
        "heartbeats and rejections were folded"
    );
    let transitions = app.count("status_transitions").await;
    assert!(
        transitions >= 2,
        "the history has transitions: {transitions}"
    );

    let history = app.store.history("replayed", 0).await.expect("history");
    let policy = app.state.engine.policy().clone();
    let (rebuilt, _) =
        replay(&policy, &live, &history, live.snapshot.evaluated_at_ms).expect("replays");
    assert_eq!(rebuilt.snapshot, live.snapshot);
    assert_eq!(rebuilt.snapshot.policy_state, live.snapshot.policy_state);
}

vigil_tests::on_both_backends!(replaying_stored_history_reproduces_the_snapshot_byte_for_byte,);

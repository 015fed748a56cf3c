//! A guest that traps, loops, returns NaN, errors or eats memory fails that evaluation only:
//! the host answers, the heartbeat is stored, the snapshot keeps its last good value, and the
//! failure is counted.

use serde_json::json;
use vigil_tests::{Agent, TestApp, misbehaving_policy};

async fn app_with(dir: Option<std::sync::Arc<tempfile::TempDir>>, behaviour: &str) -> TestApp {
    let path = misbehaving_policy();
    let behaviour = behaviour.to_owned();
    let adjust = move |c: &mut vigil::config::Config| {
        c.policy.component = Some(path);
        c.policy
            .params
            .insert("behaviour".into(), toml::Value::String(behaviour));
    };
    match dir {
        Some(dir) => TestApp::spawn_in(dir, adjust).await,
        None => TestApp::spawn_with(adjust).await,
    }
}

async fn trapping_looping_nan_erroring_and_greedy_guests_are_contained() {
    // A good snapshot first, computed by the well-behaved mode of the same component.
    let app = app_with(None, "ok").await;
    let agent = Agent::new("victim");
    app.register(&agent).await;
    assert_eq!(
        app.post_heartbeat(&agent.heartbeat(json!({}))).await.status,
        202
    );
    let good = app.server("victim").await;
    assert_eq!(good["effective_status"], "online");
    assert_eq!(good["policy_errors"], 0);
    let mut dir = app.stop().await;

    let mut expected_errors = 0;
    for behaviour in ["trap", "loop", "nan", "err", "oom"] {
        let app = app_with(Some(dir), behaviour).await;
        let answer = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
        assert_eq!(
            answer.status, 202,
            "{behaviour}: the heartbeat is still accepted: {:?}",
            answer.body
        );
        // Two failed evaluations per host: the restart's `resume` (the host was down between
        // the two runs, and every server is told of the gap first), then the heartbeat's.
        expected_errors += 2;
        let now = app.server("victim").await;
        for field in [
            "effective_status",
            "confidence",
            "uptime_percent",
            "quality_score",
            "scores",
            "badges",
            "policy",
        ] {
            assert_eq!(
                now[field], good[field],
                "{behaviour}: {field} keeps its last good value"
            );
        }
        assert_eq!(
            now["policy_errors"], expected_errors,
            "{behaviour}: counted on the server"
        );
        assert_eq!(
            app.state.engine.stats().policy_errors,
            2,
            "{behaviour}: counted by the engine"
        );
        // The host is still up and answering.
        assert_eq!(app.get("/healthz").await.status, 200);
        dir = app.stop().await;
    }
    let app = app_with(Some(dir), "ok").await;
    assert_eq!(
        app.count("heartbeats").await,
        6,
        "every heartbeat was stored"
    );
}

vigil_tests::on_both_backends!(trapping_looping_nan_erroring_and_greedy_guests_are_contained,);

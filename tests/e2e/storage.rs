//! Append-only history, enforced by the database itself.

use serde_json::json;
use vigil_tests::{Agent, TestApp};

async fn update_and_delete_on_history_tables_fail_at_the_database() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("append-only");
    app.register(&agent).await;
    app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    app.post_heartbeat_raw(b"not json".to_vec()).await;
    for statement in [
        "UPDATE heartbeats SET body = '{}'",
        "DELETE FROM heartbeats",
        "UPDATE rejections SET code = 'x'",
        "DELETE FROM rejections",
        "UPDATE server_keys SET public_key = 'x'",
        "DELETE FROM server_keys",
        "UPDATE policy_activations SET reason = 'x'",
        "DELETE FROM policy_activations",
        "UPDATE status_transitions SET to_status = 'x'",
        "DELETE FROM status_transitions",
        "UPDATE host_keys SET secret_key = 'x'",
        "DELETE FROM host_keys",
        "UPDATE policies SET name = 'x'",
    ] {
        let err = app.execute(statement).await.expect_err(statement);
        assert!(
            ["append-only", "never change"]
                .iter()
                .any(|m| err.contains(m)),
            "{statement}: {err}"
        );
    }
    assert_eq!(app.count("heartbeats").await, 1);
    assert_eq!(app.count("rejections").await, 1);
    assert_eq!(app.count("server_keys").await, 1);
    assert_eq!(app.count("policy_activations").await, 1);
}

async fn state_survives_a_restart_on_the_same_database() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("restart-1");
    app.register(&agent).await;
    app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    let before = app.server("restart-1").await;
    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;
    assert_eq!(app.server("restart-1").await, before);
    // Identity and replay rules survived too: the next heartbeat is accepted, an old one is not.
    assert_eq!(
        app.post_heartbeat(&agent.heartbeat(json!({}))).await.status,
        202
    );
    let stale = agent.heartbeat_at(vigil_tests::now_ms() - 5_000, json!({}));
    assert_eq!(app.post_heartbeat(&stale).await.code(), "replay");
    // One activation: restarting with the same policy appends nothing.
    assert_eq!(app.count("policy_activations").await, 1);
}

vigil_tests::on_both_backends!(
    update_and_delete_on_history_tables_fail_at_the_database,
    state_survives_a_restart_on_the_same_database,
);

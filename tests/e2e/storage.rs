//! Append-only history, enforced by the database itself.

use serde_json::json;
use vigil::store::{NewServer, StoreError};
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

async fn a_bulk_registration_registers_each_new_id_once_and_refuses_taken_ones() {
    let app = TestApp::spawn().await;
    app.register(&Agent::new("bulk-taken")).await;
    let new = |id: &str, cluster: Option<&str>| {
        let agent = Agent::new(id);
        NewServer {
            server_id: id.to_owned(),
            public_key: agent.public_key_b64(),
            fingerprint: format!("fp-{id}"),
            display_name: Some(format!("{id} name")),
            cluster_id: cluster.map(str::to_owned),
            registered_at_ms: 1_000,
            added_by: "bulk-test".to_owned(),
        }
    };
    let servers = [
        new("bulk-a", Some("eu")),
        new("bulk-taken", None),
        new("bulk-b", None),
        new("bulk-a", None),
    ];
    let results = app
        .store
        .insert_servers(&servers)
        .await
        .expect("one transaction");
    let outcome: Vec<&str> = results
        .iter()
        .map(|r| match r {
            Ok(()) => "registered",
            Err(StoreError::Conflict(_)) => "conflict",
            Err(_) => "other error",
        })
        .collect();
    assert_eq!(
        outcome,
        ["registered", "conflict", "registered", "conflict"]
    );
    assert_eq!(app.count("servers").await, 3);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM server_keys WHERE added_by = 'bulk-test'")
            .await,
        2,
        "a first key for each new server only"
    );
    let a = app
        .store
        .get_server("bulk-a")
        .await
        .expect("reads")
        .expect("registered");
    assert_eq!(
        (
            a.public_key,
            a.display_name.as_deref(),
            a.cluster_id.as_deref()
        ),
        (
            servers[0].public_key.clone(),
            Some("bulk-a name"),
            Some("eu")
        ),
        "the first of the repeated ids is the one registered"
    );
    assert_eq!(
        (a.key_version, a.is_verified, a.registered_at_ms),
        (1, false, 1_000)
    );
    assert!(
        app.store
            .insert_servers(&[])
            .await
            .expect("nothing to do")
            .is_empty()
    );
}

vigil_tests::on_both_backends!(
    update_and_delete_on_history_tables_fail_at_the_database,
    state_survives_a_restart_on_the_same_database,
    a_bulk_registration_registers_each_new_id_once_and_refuses_taken_ones,
);

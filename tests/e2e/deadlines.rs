//! Deadlines: a silent server flips to offline when its policy's deadline passes.

use std::time::Duration;

use serde_json::json;
use vigil_tests::{Agent, TestApp, wait_until};

async fn silent_server_flips_offline_at_its_deadline_and_a_transition_is_appended() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("short-grace");
    app.register(&agent).await;
    // A declared 1 s interval gives a 2 s grace window under the default policy.
    let answer = app
        .post_heartbeat(&agent.heartbeat(json!({"interval_seconds": 1})))
        .await;
    assert_eq!(answer.body["status"], "online");
    let server = app.server("short-grace").await;
    assert!(
        server["next_check_at"].is_string(),
        "the policy asked for a deadline: {server}"
    );

    let status = async || {
        app.server("short-grace").await["effective_status"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let every = Duration::from_millis(100);
    let status = wait_until(Duration::from_secs(10), every, status, |s| s == "offline")
        .await
        .unwrap_or_else(|last| last);
    assert_eq!(status, "offline");
    let transitions = app.get("/v1/servers/short-grace/transitions").await.body;
    let items = transitions["transitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let offline: Vec<_> = items
        .iter()
        .filter(|t| t["to_status"] == "offline")
        .collect();
    assert_eq!(offline.len(), 1, "{transitions}");
    assert_eq!(offline[0]["from_status"], "online");
    assert_eq!(offline[0]["cause"], "tick");
    // The flip happened at the deadline itself (received + 2 s), not whenever a scan ran.
    let last_seen = server["last_seen_at"]
        .as_str()
        .and_then(vigil::clock::parse_rfc3339_ms);
    let flipped_at = offline[0]["at_ms"].as_i64();
    assert_eq!(flipped_at.zip(last_seen).map(|(f, s)| f - s), Some(2_000));
    // A heartbeat brings it back.
    let back = app
        .post_heartbeat(&agent.heartbeat(json!({"interval_seconds": 1})))
        .await;
    assert_eq!(back.body["status"], "online");
}

vigil_tests::on_both_backends!(
    silent_server_flips_offline_at_its_deadline_and_a_transition_is_appended,
);

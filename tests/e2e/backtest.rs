//! `vigil policy replay`: a backtest over stored history lists exactly the servers a candidate
//! would judge differently, and the active version's own parameters change nothing.

use serde_json::{Value, json};
use vigil::store::{HeartbeatRow, WriteBatch};
use vigil_tests::{Agent, Cli, TestApp, now_ms};

fn rows(agent: &Agent, last_ms: i64) -> Vec<HeartbeatRow> {
    (1..=3i64)
        .map(|seq| {
            let at = last_ms - (3 - seq) * 20_000;
            let body = agent.heartbeat_at(at, json!({}));
            HeartbeatRow {
                server_id: agent.server_id.clone(),
                seq,
                received_at_ms: at,
                sent_at_ms: at,
                key_version: 1,
                signature: body["signature"].as_str().unwrap_or_default().into(),
                body: body.to_string(),
                policy_digest: "sha256:history".into(),
                auth: vigil::store::AuthKind::Signature,
                original_body: None,
            }
        })
        .collect()
}

fn backtest(db: &str, candidate: &std::path::Path, grace: u32) -> Value {
    let candidate = candidate.to_str().expect("a UTF-8 temp path");
    let grace = format!("grace_seconds={grace}");
    let args = ["policy", "replay", "--policy", candidate, "--database", db];
    let out = Cli::new().ok([&args[..], &["--json", "--param", &grace]].concat());
    serde_json::from_str(&out).expect("json")
}

async fn a_shorter_grace_window_changes_exactly_the_servers_silent_longer_than_it() {
    let app = TestApp::spawn().await;
    let now = now_ms();
    let mut batch = WriteBatch::default();
    // Last heard 10 s, 2 min and 20 min ago: online, online, offline with the 5-min default.
    for (id, silent_ms) in [("fresh", 10_000), ("quiet", 120_000), ("gone", 1_200_000)] {
        let agent = Agent::new(id);
        app.register(&agent).await;
        batch.heartbeats.extend(rows(&agent, now - silent_ms));
    }
    app.store.commit(&batch).await.expect("history stored");
    let dir = app.stop().await;
    let db = vigil_tests::TestBackend::current()
        .database_url(dir.path())
        .await;
    let candidate = dir.path().join("candidate.wasm");
    std::fs::write(&candidate, vigil::policy::DEFAULT_POLICY).expect("write");

    let report = backtest(&db, &candidate, 60);
    assert_eq!(report["servers"], 3);
    let changed = report["changed"].as_array().expect("changed");
    assert_eq!(changed.len(), 1, "{report:#}");
    assert_eq!(changed[0]["server_id"], "quiet");
    assert_eq!(changed[0]["status"], json!(["online", "offline"]));

    // The active version with its own parameters: replay is deterministic, nothing changes.
    let same = backtest(&db, &candidate, 300);
    assert_eq!(same["changed"], json!([]), "{same:#}");
    assert_eq!(same["quality_delta"]["max"], 0.0);
    assert_eq!(same["uptime_delta"]["min"], 0.0);
}

vigil_tests::on_both_backends!(
    a_shorter_grace_window_changes_exactly_the_servers_silent_longer_than_it,
);

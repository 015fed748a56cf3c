//! Measures the policy lifecycle (not a test; numbers go to stdout):
//!
//! - swap latency: a `NAME-VERSION.wasm` written into the watched folder → its digest active
//!   (`EngineHandle::policy()`), over several versions;
//! - replay rate: heartbeats per second folded through the default policy by
//!   `engine::replay::replay` (in memory), and through a whole rebuild after an activation
//!   (SQLite reads + replay + snapshot commits).
//!
//! `cargo run --release -p vigil-tests --bin vigil-policy-bench [-- SERVERS HEARTBEATS]`

use std::time::{Duration, Instant};

use serde_json::json;
use vigil::engine::replay::replay;
use vigil::policy::digest_of;
use vigil::store::{HeartbeatRow, HistoryEvent, Snapshot, SnapshotRow, WriteBatch};
use vigil_tests::{Agent, TestApp, default_policy_version};

fn heartbeat_row(server_id: &str, seq: i64, at_ms: i64, agent: &Agent) -> HeartbeatRow {
    let body = agent.heartbeat_at(
        at_ms,
        json!({"interval_seconds": 30, "players_current": seq % 50, "players_capacity": 64,
               "uptime_seconds": seq * 30, "metrics": {"cpu_percent": 20.5}}),
    );
    HeartbeatRow {
        server_id: server_id.into(),
        seq,
        received_at_ms: at_ms,
        sent_at_ms: at_ms,
        key_version: 1,
        signature: body["signature"].as_str().unwrap_or_default().into(),
        body: body.to_string(),
        policy_digest: "sha256:bench".into(),
        auth: vigil::store::AuthKind::Signature,
        original_body: None,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let servers = *args.first().unwrap_or(&50);
    let per_server = *args.get(1).unwrap_or(&2_000);

    // Swap latency through the watched folder.
    let versions: Vec<(String, Vec<u8>)> = (1..=5)
        .map(|i| {
            let v = format!("3.0.{i}");
            let bytes = default_policy_version(&v);
            (v, bytes)
        })
        .collect();
    let folder = tempfile::tempdir().expect("folder");
    let dir = folder.path().to_path_buf();
    let app = TestApp::spawn_with(|c| c.policy.dir = Some(dir)).await;
    let mut latencies = Vec::new();
    for (version, bytes) in &versions {
        let digest = digest_of(bytes);
        let started = Instant::now();
        std::fs::write(folder.path().join(format!("default-{version}.wasm")), bytes)
            .expect("write");
        while app.state.engine.policy().digest() != digest {
            assert!(started.elapsed() < Duration::from_secs(30), "never active");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(started.elapsed());
    }
    let ms: Vec<String> = latencies
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
        .collect();
    println!(
        "swap latency (file written -> active, debounce {} ms included): [{}] ms",
        vigil::policy::watch::QUIET.as_millis(),
        ms.join(", ")
    );

    // Replay in memory through the default policy.
    let policy = app.state.engine.policy();
    let agent = Agent::new("bench");
    let t0 = vigil::clock::now_ms() - (per_server as i64) * 30_000;
    let history: Vec<HistoryEvent> = (1..=per_server as i64)
        .map(|seq| HistoryEvent::Heartbeat(heartbeat_row("bench", seq, t0 + seq * 30_000, &agent)))
        .collect();
    app.register(&agent).await;
    let record = app
        .store
        .get_server("bench")
        .await
        .expect("read")
        .expect("exists");
    let started = Instant::now();
    let (_, effects) = replay(&policy, &record, &history, None).expect("replays");
    let elapsed = started.elapsed();
    println!(
        "replay (in memory, default policy): {} heartbeats in {:.3} s = {:.0} heartbeats/s ({} evaluations incl. ticks)",
        per_server,
        elapsed.as_secs_f64(),
        per_server as f64 / elapsed.as_secs_f64(),
        effects.evaluations
    );

    // A whole rebuild: SERVERS servers x HEARTBEATS heartbeats each, then an activation.
    let mut batch = WriteBatch::default();
    for s in 0..servers {
        let id = format!("bench-{s}");
        let a = Agent::new(&id);
        app.register(&a).await;
        for seq in 1..=per_server as i64 {
            batch
                .heartbeats
                .push(heartbeat_row(&id, seq, t0 + seq * 30_000, &a));
        }
        batch.snapshots.push(SnapshotRow {
            server_id: id,
            snapshot: Snapshot {
                event_seq: per_server as i64,
                policy: Some(vigil::engine::fold::policy_ref(&policy)),
                ..Snapshot::unseen()
            },
        });
        if batch.heartbeats.len() >= 20_000 {
            app.store
                .commit(&std::mem::take(&mut batch))
                .await
                .expect("commit");
        }
    }
    app.store.commit(&batch).await.expect("commit");
    // Restart so the engine loads the stored snapshots, then swap and time the rebuild.
    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;
    let next = default_policy_version("3.1.0");
    let validated = app
        .state
        .policies
        .register(next, None, "bench")
        .await
        .expect("valid");
    let before = app.state.engine.stats().snapshots_rebuilt;
    let started = Instant::now();
    let outcome = app
        .state
        .policies
        .activate_loaded(validated.policy, "bench", "rebuild benchmark")
        .await
        .expect("activates");
    while app.state.engine.stats().rebuilds_pending > 0
        || app.state.engine.stats().snapshots_rebuilt - before < outcome.rebuilds
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let total = outcome.rebuilds * per_server;
    println!(
        "rebuild after a swap (SQLite read + replay + commit): {} servers x {} heartbeats = {} in {:.3} s = {:.0} heartbeats/s",
        outcome.rebuilds,
        per_server,
        total,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    app.stop().await;
}

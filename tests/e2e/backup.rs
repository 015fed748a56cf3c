//! `vigil backup` while the host ingests, `vigil restore` into a fresh host: same servers, same
//! history, same snapshots.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};
use vigil_tests::{ADMIN_TOKEN, Agent, Cli, ServeProcess};

const CONFIG: &str = "[storage]\nurl = \"sqlite://vigil.db\"\n\
                      [rate_limit]\nper_server_per_minute = 0\nper_ip_per_minute = 0\n";

async fn get(url: &str, path: &str) -> Value {
    reqwest::get(format!("{url}{path}"))
        .await
        .expect("answers")
        .json()
        .await
        .expect("json")
}

async fn post_heartbeat(client: &reqwest::Client, url: &str, agent: &Agent) -> u16 {
    client
        .post(format!("{url}/v1/agent/heartbeat"))
        .json(&agent.heartbeat(json!({})))
        .send()
        .await
        .expect("answers")
        .status()
        .as_u16()
}

/// A server's stored history and snapshot, as the API shows them.
async fn server_state(url: &str, id: &str) -> (Vec<Value>, Value) {
    let history = get(url, &format!("/v1/servers/{id}/heartbeats?limit=500")).await;
    let history = history["heartbeats"]
        .as_array()
        .expect("heartbeats")
        .clone();
    (history, get(url, &format!("/v1/servers/{id}")).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_during_ingest_restores_into_a_fresh_host_with_the_same_history() {
    let original = tempfile::tempdir().expect("temp dir");
    let vigil = Cli::in_dir(original.path()).env("VIGIL_ADMIN_TOKEN", ADMIN_TOKEN);
    let host = ServeProcess::start(&vigil, CONFIG);
    let url = host.url();
    let client = reqwest::Client::new();
    let (quiet, busy) = (
        Agent::new("backup-quiet"),
        Arc::new(Agent::new("backup-busy")),
    );
    for agent in [&quiet, &*busy] {
        let added = client
            .post(format!("{url}/v1/admin/servers"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"server_id": agent.server_id, "public_key": agent.public_key_b64()}))
            .send()
            .await
            .expect("answers");
        assert_eq!(added.status().as_u16(), 201);
    }
    for _ in 0..5 {
        assert_eq!(post_heartbeat(&client, &url, &quiet).await, 202);
        assert_eq!(post_heartbeat(&client, &url, &busy).await, 202);
    }

    // One server keeps reporting while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn({
        let (client, url, busy, stop, sent) = (
            client.clone(),
            url.clone(),
            busy.clone(),
            stop.clone(),
            sent.clone(),
        );
        async move {
            // Paced, so the history stays within one page of the heartbeats route.
            let mut pace = tokio::time::interval(std::time::Duration::from_millis(20));
            while !stop.load(Ordering::SeqCst) {
                pace.tick().await;
                assert_eq!(post_heartbeat(&client, &url, &busy).await, 202);
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    while sent.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let backup = tokio::task::spawn_blocking({
        let vigil = vigil.clone();
        move || vigil.run(["backup", "copy.db", "--config", "vigil.toml"])
    })
    .await
    .expect("joins");
    assert!(backup.success(), "{backup:?}");
    let during = sent.load(Ordering::SeqCst);
    while sent.load(Ordering::SeqCst) < during + 5 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    sender.await.expect("the sender saw only 202s");
    assert!(
        !vigil
            .run(["backup", "copy.db", "--config", "vigil.toml"])
            .success(),
        "a backup never overwrites a file"
    );
    let (quiet_before, quiet_server_before) = server_state(&url, "backup-quiet").await;
    let (busy_before, _) = server_state(&url, "backup-busy").await;
    host.stop();

    // Restore into a fresh folder, then serve from it.
    let fresh = tempfile::tempdir().expect("temp dir");
    let restored = Cli::in_dir(fresh.path()).env("VIGIL_ADMIN_TOKEN", ADMIN_TOKEN);
    std::fs::write(fresh.path().join("vigil.toml"), CONFIG).expect("config");
    let copy = original.path().join("copy.db");
    let copy = copy.to_str().expect("utf-8");
    let garbage = fresh.path().join("garbage.db");
    std::fs::write(&garbage, b"not a database at all").expect("write");
    let refused = restored.run([
        "restore",
        garbage.to_str().expect("utf-8"),
        "--config",
        "vigil.toml",
    ]);
    assert!(!refused.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("not a Vigil database"),
        "{refused:?}"
    );
    assert!(!fresh.path().join("vigil.db").exists());
    restored.ok(["restore", copy, "--config", "vigil.toml"]);
    let again = restored.run(["restore", copy, "--config", "vigil.toml"]);
    assert!(
        !again.success() && again.stderr.contains("--force"),
        "{again:?}"
    );
    restored.ok(["restore", copy, "--config", "vigil.toml", "--force"]);

    let host = ServeProcess::start(&restored, CONFIG);
    let url = host.url();
    // The quiet server: exactly the same history and snapshot.
    let (quiet_after, quiet_server_after) = server_state(&url, "backup-quiet").await;
    assert_eq!(quiet_after, quiet_before);
    for field in [
        "effective_status",
        "confidence",
        "uptime_percent",
        "quality_score",
        "last_seen_at",
        "scores",
        "key_version",
    ] {
        assert_eq!(
            quiet_server_after[field], quiet_server_before[field],
            "{field}"
        );
    }
    // The busy one: a consistent cut. Its restored history is the original's oldest part, at
    // least what was acknowledged before the backup began, and its snapshot is that history's.
    let (busy_after, busy_server_after) = server_state(&url, "backup-busy").await;
    assert!(busy_after.len() >= 5 + 5, "{}", busy_after.len());
    assert!(busy_after.len() < busy_before.len());
    assert_eq!(
        busy_after[..],
        busy_before[busy_before.len() - busy_after.len()..]
    );
    assert_eq!(
        busy_server_after["last_seen_at"], busy_after[0]["received_at"],
        "the snapshot is the restored history's"
    );
    // The restored host goes on accepting.
    assert_eq!(post_heartbeat(&client, &url, &busy).await, 202);
    host.stop();
}

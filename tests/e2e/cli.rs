//! The real binary: the README's walkthrough (keygen → serve → server add → send → list).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn vigil(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil-e2e"));
    cmd.current_dir(dir)
        .env("VIGIL_ADMIN_TOKEN", "walkthrough-token")
        .env_remove("VIGIL_URL");
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn readme_walkthrough_with_the_real_binary() {
    walkthrough("sqlite://walk.db");
}

#[test]
fn readme_walkthrough_with_the_real_binary_on_postgres() {
    let Some(server) = vigil_tests::postgres::server_url() else {
        return;
    };
    let name = format!("vigil_walkthrough_{}", std::process::id());
    let url = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(vigil_tests::postgres::ensure_database(server, &name));
    walkthrough(&url);
}

fn walkthrough(storage_url: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let keygen = run_ok(vigil(dir.path()).args(["keygen", "--out", "agent.key"]));
    assert!(keygen.contains("fingerprint: SHA256:"), "{keygen}");
    // keygen refuses to overwrite a key.
    assert!(
        !vigil(dir.path())
            .args(["keygen", "--out", "agent.key"])
            .output()
            .expect("runs")
            .status
            .success()
    );

    std::fs::write(
        dir.path().join("vigil.toml"),
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"{storage_url}\"\n"),
    )
    .expect("config");
    let mut server = vigil(dir.path())
        .args(["serve", "--config", "vigil.toml"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = server.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("serve logs until it listens")
            .expect("utf-8 log");
        if let Some(rest) = line.split("address=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let url = format!("http://{address}");

    let added = run_ok(vigil(dir.path()).args([
        "server",
        "add",
        "eu-island-01",
        "--key",
        "agent.key",
        "--url",
        &url,
    ]));
    assert!(added.contains("\"server_id\": \"eu-island-01\""), "{added}");
    let verified =
        run_ok(vigil(dir.path()).args(["server", "verify", "eu-island-01", "--url", &url]));
    assert!(verified.contains("\"is_verified\": true"), "{verified}");
    let sent = run_ok(vigil(dir.path()).args([
        "send",
        "--url",
        &url,
        "--key",
        "agent.key",
        "--server-id",
        "eu-island-01",
        "--players-current",
        "42",
        "--players-capacity",
        "70",
        "--map-name",
        "The Island",
        "--metric",
        "cpu_percent=23.5",
    ]));
    assert!(sent.contains("\"accepted\": true"), "{sent}");
    let listed = run_ok(vigil(dir.path()).args(["server", "list", "--url", &url]));
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["servers"][0]["effective_status"], "online");
    assert_eq!(listed["servers"][0]["players_current"], 42);

    // An operator queues a command; the agent's next heartbeat reply carries it.
    let queued = run_ok(vigil(dir.path()).args([
        "server",
        "command",
        "eu-island-01",
        "restart",
        "--args",
        r#"{"grace_seconds": 30}"#,
        "--url",
        &url,
    ]));
    assert!(queued.contains("\"command\": \"restart\""), "{queued}");
    let carried = run_ok(vigil(dir.path()).args([
        "send",
        "--url",
        &url,
        "--key",
        "agent.key",
        "--server-id",
        "eu-island-01",
    ]));
    let carried: serde_json::Value = serde_json::from_str(&carried).expect("json");
    assert_eq!(
        carried["pending_commands"][0]["command"], "restart",
        "{carried}"
    );

    // A send with the wrong key is refused with a clear message and a failing exit code.
    run_ok(vigil(dir.path()).args(["keygen", "--out", "other.key"]));
    let forged = vigil(dir.path())
        .args([
            "send",
            "--url",
            &url,
            "--key",
            "other.key",
            "--server-id",
            "eu-island-01",
        ])
        .output()
        .expect("runs");
    assert!(!forged.status.success());
    assert!(String::from_utf8_lossy(&forged.stderr).contains("bad_signature"));

    // SIGTERM: graceful shutdown, exit 0.
    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = server.wait().expect("exits");
    let log = drain.join().expect("log");
    assert!(status.success(), "serve exits cleanly on SIGTERM: {log:?}");
    if let Some(file) = storage_url.strip_prefix("sqlite://") {
        // The pools were closed: the WAL is in the database file and its side files are gone.
        assert!(dir.path().join(file).exists());
        for side in ["-wal", "-shm"] {
            let path = dir.path().join(format!("{file}{side}"));
            assert!(!path.exists(), "{} is left after shutdown", path.display());
        }
    }
}

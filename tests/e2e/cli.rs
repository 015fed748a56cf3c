//! The real binary: the README's walkthrough (keygen → serve → server add → send → list).

use vigil_tests::{Cli, ServeProcess};

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
    let vigil =
        Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", "walkthrough-token-0123456789abcdef");
    let keygen = vigil.ok(["keygen", "--out", "agent.key"]);
    assert!(keygen.contains("fingerprint: SHA256:"), "{keygen}");
    // keygen refuses to overwrite a key.
    assert!(!vigil.run(["keygen", "--out", "agent.key"]).success());

    let server = ServeProcess::start(
        &vigil,
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"{storage_url}\"\n"),
    );
    let url = server.url();

    let added = vigil.ok([
        "server",
        "add",
        "eu-island-01",
        "--key",
        "agent.key",
        "--url",
        &url,
    ]);
    assert!(added.contains("\"server_id\": \"eu-island-01\""), "{added}");
    let verified = vigil.ok(["server", "verify", "eu-island-01", "--url", &url]);
    assert!(verified.contains("\"is_verified\": true"), "{verified}");
    let send = [
        "send",
        "--url",
        &url,
        "--server-id",
        "eu-island-01",
        "--key",
    ];
    let sent = vigil.ok([
        &send[..],
        &[
            "agent.key",
            "--players-current",
            "42",
            "--players-capacity",
            "70",
            "--map-name",
            "The Island",
            "--metric",
            "cpu_percent=23.5",
        ],
    ]
    .concat());
    assert!(sent.contains("\"accepted\": true"), "{sent}");
    let listed = vigil.ok(["server", "list", "--url", &url]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["servers"][0]["effective_status"], "online");
    assert_eq!(listed["servers"][0]["players_current"], 42);

    // An operator queues a command; the agent's next heartbeat reply carries it.
    let queued = vigil.ok([
        "server",
        "command",
        "eu-island-01",
        "restart",
        "--args",
        r#"{"grace_seconds": 30}"#,
        "--url",
        &url,
    ]);
    assert!(queued.contains("\"command\": \"restart\""), "{queued}");
    let carried = vigil.ok([&send[..], &["agent.key"]].concat());
    let carried: serde_json::Value = serde_json::from_str(&carried).expect("json");
    assert_eq!(
        carried["pending_commands"][0]["command"], "restart",
        "{carried}"
    );

    // A send with the wrong key is refused with a clear message and a failing exit code.
    vigil.ok(["keygen", "--out", "other.key"]);
    let forged = vigil.run([&send[..], &["other.key"]].concat());
    assert!(!forged.success());
    assert!(forged.stderr.contains("bad_signature"));

    // SIGTERM: graceful shutdown, exit 0.
    server.stop();
    if let Some(file) = storage_url.strip_prefix("sqlite://") {
        // The pools were closed: the WAL is in the database file and its side files are gone.
        assert!(dir.path().join(file).exists());
        for side in ["-wal", "-shm"] {
            let path = dir.path().join(format!("{file}{side}"));
            assert!(!path.exists(), "{} is left after shutdown", path.display());
        }
    }
}

/// `--output table` for people, JSON for pipes; with `[directory] require_key` the list
/// commands send the credential they are given, and say what is wrong without one.
#[test]
fn list_commands_print_tables_and_send_the_credential_the_directory_requires() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = "list-token-0123456789abcdef0123456789";
    let vigil = Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", token);
    vigil.ok(["keygen", "--out", "agent.key"]);
    let server = ServeProcess::start(
        &vigil,
        "[storage]\nurl = \"sqlite://list.db\"\n[directory]\nrequire_key = true\n",
    );
    let url = server.url();
    vigil.ok([
        "server",
        "add",
        "table-01",
        "--key",
        "agent.key",
        "--display-name",
        "Table One",
        "--url",
        &url,
    ]);

    let table = vigil.ok(["server", "list", "--output", "table", "--url", &url]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("SERVER") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert!(
        lines[1].contains("table-01") && lines[1].contains("Table One"),
        "{table}"
    );
    assert!(lines[1].contains("unknown"), "{table}");
    // Not a terminal: JSON by default.
    let json: serde_json::Value =
        serde_json::from_str(&vigil.ok(["server", "list", "--url", &url])).expect("json");
    assert_eq!(json["servers"][0]["server_id"], "table-01");

    let policies = vigil.ok(["policy", "list", "-o", "table", "--url", &url]);
    let row = policies
        .lines()
        .find(|l| l.contains("default"))
        .unwrap_or_else(|| panic!("no default row: {policies}"));
    assert!(row.contains("yes") && row.contains("sha256:"), "{policies}");

    let tokens = vigil.ok([
        "server", "token", "list", "table-01", "-o", "table", "--url", &url,
    ]);
    assert!(
        tokens.starts_with("ID") && tokens.contains("(none)"),
        "{tokens}"
    );

    // Without a credential the directory refuses, and the command says why.
    let anonymous = Cli::in_dir(dir.path()).env_remove("VIGIL_ADMIN_TOKEN");
    for args in [["server", "list"], ["policy", "list"]] {
        let refused = anonymous.run([args[0], args[1], "--url", &url]);
        assert!(!refused.success(), "{refused:?}");
        assert!(refused.stderr.contains("401"), "{refused:?}");
    }
    let keys = vigil.ok([
        "admin",
        "key",
        "list",
        "--output",
        "table",
        "--config",
        "vigil.toml",
    ]);
    assert!(keys.starts_with("NAME") && keys.contains("SCOPE"), "{keys}");
    server.stop();
}

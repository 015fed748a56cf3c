//! Agents and jobs through the real binary: key files in every accepted form, the host's
//! suggested interval, `vigil run` and `vigil agent` against a real `vigil serve`.

use vigil_tests::{Cli, ServeProcess};

/// A served host on SQLite in `dir` with admin token `agents-token`.
fn serve(vigil: &Cli) -> ServeProcess {
    ServeProcess::start(
        vigil,
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://agents.db\"\n",
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn pem_keys_from_keygen_and_openssl_sign_and_the_host_suggests_the_interval() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil = Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", "agents-token");
    let written = vigil.ok(["keygen", "--out", "agent.pem", "--format", "pem"]);
    assert!(written.contains("fingerprint: SHA256:"), "{written}");
    let pem = std::fs::read_to_string(dir.path().join("agent.pem")).expect("written");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    let mut keys = vec!["agent.pem"];
    let openssl = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(dir.path().join("openssl.pem"))
        .status();
    match openssl {
        Ok(status) if status.success() => keys.push("openssl.pem"),
        // The PKCS#8 form openssl writes is also checked byte for byte in the unit tests.
        _ => eprintln!("NOTICE: openssl is not installed; only keygen's PEM is tried here"),
    }

    let host = serve(&vigil);
    let url = host.url();
    for (i, key) in keys.iter().enumerate() {
        let id = format!("pem-{i}");
        vigil.ok(["server", "add", &id, "--key", key, "--url", &url]);
        let plain = json(&vigil.ok(["send", "--url", &url, "--server-id", &id, "--key", key]));
        assert_eq!(plain["accepted"], true, "{key}");
        // No declared interval: half the default policy's 5-minute grace.
        assert_eq!(plain["next_heartbeat_seconds"], 150, "{plain}");
        let daily = json(&vigil.ok([
            "send",
            "--url",
            &url,
            "--server-id",
            &id,
            "--key",
            key,
            "--interval-seconds",
            "86400",
        ]));
        // A daily job is asked once a day (its grace is two days, not one hour).
        assert_eq!(daily["next_heartbeat_seconds"], 86_400, "{daily}");
        assert_eq!(daily["status"], "online");
    }
    let garbage = dir.path().join("bad.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let refused = vigil.run([
        "send",
        "--url",
        &url,
        "--server-id",
        "pem-0",
        "--key",
        "bad.pem",
    ]);
    assert!(!refused.success());
    assert!(refused.stderr.contains("PKCS#8"), "{}", refused.stderr);
    host.stop();
}

/// `GET url/path` as JSON.
fn get(url: &str, path: &str) -> serde_json::Value {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            reqwest::get(format!("{url}{path}"))
                .await
                .expect("get")
                .json()
                .await
                .expect("json")
        })
}

/// The `run` members of a server's stored heartbeats, oldest first.
fn runs(url: &str, id: &str) -> Vec<serde_json::Value> {
    let mut runs: Vec<_> = get(url, &format!("/v1/servers/{id}/heartbeats"))["heartbeats"]
        .as_array()
        .expect("heartbeats")
        .iter()
        .map(|h| h["body"].clone())
        .collect();
    runs.reverse();
    runs
}

#[test]
fn vigil_run_reports_start_and_end_and_exits_with_the_commands_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil = Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", "agents-token");
    vigil.ok(["keygen", "--out", "agent.key"]);
    let host = serve(&vigil);
    let url = host.url();
    vigil.ok([
        "server",
        "add",
        "nightly",
        "--key",
        "agent.key",
        "--url",
        &url,
    ]);
    let wrap = |command: &[&str]| {
        let mut args = vec!["run", "--url", &url, "--server-id", "nightly", "--"];
        args.extend_from_slice(command);
        vigil.run(args)
    };

    let failed = wrap(&["false"]);
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
    assert!(!failed.stderr.contains("warning"), "{}", failed.stderr);
    let noisy = wrap(&["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"]);
    assert_eq!(noisy.status.code(), Some(3));
    assert_eq!(noisy.stdout, "to-stdout\n", "output passes through");
    assert!(noisy.stderr.contains("to-stderr"), "{}", noisy.stderr);
    let fine = wrap(&["true"]);
    assert_eq!(fine.status.code(), Some(0), "{}", fine.stderr);
    let missing = wrap(&["/no/such/command"]);
    assert_eq!(missing.status.code(), Some(127));

    let bodies = runs(&url, "nightly");
    let phases: Vec<_> = bodies
        .iter()
        .map(|b| b["run"]["phase"].as_str().expect("a run").to_owned())
        .collect();
    assert_eq!(
        phases,
        [
            "start", "fail", "start", "fail", "start", "success", "start", "fail"
        ]
    );
    assert_eq!(bodies[1]["run"]["exit_code"], 1);
    assert_eq!(bodies[1]["run"]["run_id"], bodies[0]["run"]["run_id"]);
    assert!(bodies[1]["run"]["duration_ms"].as_u64().is_some());
    assert_eq!(bodies[3]["run"]["exit_code"], 3);
    let tail = bodies[3]["payload"]["output_tail"][0]
        .as_str()
        .expect("tail");
    assert!(
        tail.contains("to-stdout") && tail.contains("to-stderr"),
        "{tail}"
    );
    assert_eq!(bodies[5]["run"]["exit_code"], 0);
    assert_eq!(bodies[7]["run"]["exit_code"], 127);
    host.stop();

    // The host is gone: the job still runs and its status still comes through, with a
    // warning per report (after a bounded number of tries).
    let offline = wrap(&["sh", "-c", "exit 7"]);
    assert_eq!(offline.status.code(), Some(7), "{}", offline.stderr);
    assert!(
        offline.stderr.contains("warning: the start report"),
        "{}",
        offline.stderr
    );
    assert!(
        offline.stderr.contains("warning: the fail report"),
        "{}",
        offline.stderr
    );
    let ok_offline = wrap(&["true"]);
    assert_eq!(ok_offline.status.code(), Some(0));
}

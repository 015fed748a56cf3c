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

//! `vigil policy sign | push | activate | list | rollback` with the real binary against a real
//! server that requires signed policies.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use vigil::policy::digest_of;
use vigil_tests::default_policy_version;

fn vigil(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil-e2e"));
    cmd.current_dir(dir)
        .env("VIGIL_ADMIN_TOKEN", "policy-cli-token")
        .env_remove("VIGIL_URL");
    cmd
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Kills the server if the test fails half-way (a clean run has already waited for it).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_cli_signs_pushes_activates_lists_and_rolls_back_and_unsigned_pushes_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, keygen, _) = run(vigil(dir.path()).args(["keygen", "--out", "author.key"]));
    assert!(ok);
    let public = keygen
        .lines()
        .find_map(|l| l.strip_prefix("public key:"))
        .expect("public key printed")
        .trim()
        .to_owned();
    std::fs::write(
        dir.path().join("vigil.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://cli.db\"\n\
             [policy]\nrequire_signed = true\ntrusted_keys = [\"{public}\"]\n"
        ),
    )
    .expect("config");
    let component = default_policy_version("1.6.0");
    let other = default_policy_version("1.7.0");
    std::fs::write(dir.path().join("default-1.6.0.wasm"), &component).expect("write");
    std::fs::write(dir.path().join("default-1.7.0.wasm"), &other).expect("write");

    let mut server = Server(
        vigil(dir.path())
            .args(["serve", "--config", "vigil.toml"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts"),
    );
    let mut lines = BufReader::new(server.0.stderr.take().expect("stderr")).lines();
    let address = loop {
        let line = lines.next().expect("serve logs").expect("utf-8");
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let url = format!("http://{address}");

    // Unsigned: refused.
    let (ok, _, err) = run(vigil(dir.path()).args([
        "policy",
        "push",
        "default-1.6.0.wasm",
        "--activate",
        "--url",
        &url,
    ]));
    assert!(!ok);
    assert!(err.contains("policy_unsigned"), "{err}");
    // Tampered: the signature of another component.
    let (ok, _, _) = run(vigil(dir.path()).args([
        "policy",
        "sign",
        "--key",
        "author.key",
        "default-1.7.0.wasm",
    ]));
    assert!(ok);
    std::fs::copy(
        dir.path().join("default-1.7.0.wasm.sig"),
        dir.path().join("default-1.6.0.wasm.sig"),
    )
    .expect("copy");
    let (ok, _, err) = run(vigil(dir.path()).args([
        "policy",
        "push",
        "default-1.6.0.wasm",
        "--activate",
        "--url",
        &url,
    ]));
    assert!(!ok);
    assert!(err.contains("policy_signature_untrusted"), "{err}");
    // Signed: stored and active.
    let (ok, signed, err) = run(vigil(dir.path()).args([
        "policy",
        "sign",
        "--key",
        "author.key",
        "default-1.6.0.wasm",
    ]));
    assert!(ok, "{err}");
    assert!(signed.contains(&digest_of(&component)), "{signed}");
    let (ok, pushed, err) = run(vigil(dir.path()).args([
        "policy",
        "push",
        "default-1.6.0.wasm",
        "--activate",
        "--url",
        &url,
    ]));
    assert!(ok, "{err}");
    assert!(pushed.contains("\"version\": \"1.6.0\""), "{pushed}");
    let (ok, listed, _) = run(vigil(dir.path()).args(["policy", "list", "--url", &url]));
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["active"]["digest"], digest_of(&component));
    let (ok, _, err) =
        run(vigil(dir.path()).args(["policy", "rollback", "--reason", "cli test", "--url", &url]));
    assert!(ok, "{err}");
    let (ok, _, err) =
        run(vigil(dir.path()).args(["policy", "activate", "default@1.6.0", "--url", &url]));
    assert!(ok, "{err}");
    let (_, listed, _) = run(vigil(dir.path()).args(["policy", "list", "--url", &url]));
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["active"]["version"], "1.6.0");
    assert_eq!(listed["activations"][1]["reason"], "cli test");

    assert!(
        Command::new("kill")
            .args(["-TERM", &server.0.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let status = server.0.wait().expect("exits");
    let log = drain.join().expect("log");
    assert!(status.success(), "{log:?}");
}

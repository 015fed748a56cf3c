//! `vigil policy sign | push | activate | list | rollback` with the real binary against a real
//! server that requires signed policies.

use vigil::policy::digest_of;
use vigil_tests::{Cli, ServeProcess, default_policy_version};

#[test]
fn the_cli_signs_pushes_activates_lists_and_rolls_back_and_unsigned_pushes_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil =
        Cli::in_dir(dir.path()).env("VIGIL_ADMIN_TOKEN", "policy-cli-token-0123456789abcdef");
    let keygen = vigil.ok(["keygen", "--out", "author.key"]);
    let public = keygen
        .lines()
        .find_map(|l| l.strip_prefix("public key:"))
        .expect("public key printed")
        .trim()
        .to_owned();
    let component = default_policy_version("1.6.0");
    let other = default_policy_version("1.7.0");
    std::fs::write(dir.path().join("default-1.6.0.wasm"), &component).expect("write");
    std::fs::write(dir.path().join("default-1.7.0.wasm"), &other).expect("write");

    let server = ServeProcess::start(
        &vigil,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://cli.db\"\n\
             [policy]\nrequire_signed = true\ntrusted_keys = [\"{public}\"]\n"
        ),
    );
    let url = server.url();

    // Unsigned: refused.
    let push = [
        "policy",
        "push",
        "default-1.6.0.wasm",
        "--activate",
        "--url",
        &url,
    ];
    let refused = vigil.run(push);
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("policy_unsigned"),
        "{}",
        refused.stderr
    );
    // Tampered: the signature of another component.
    vigil.ok([
        "policy",
        "sign",
        "--key",
        "author.key",
        "default-1.7.0.wasm",
    ]);
    std::fs::copy(
        dir.path().join("default-1.7.0.wasm.sig"),
        dir.path().join("default-1.6.0.wasm.sig"),
    )
    .expect("copy");
    let refused = vigil.run(push);
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("policy_signature_untrusted"),
        "{}",
        refused.stderr
    );
    // Signed: stored and active.
    let signed = vigil.ok([
        "policy",
        "sign",
        "--key",
        "author.key",
        "default-1.6.0.wasm",
    ]);
    assert!(signed.contains(&digest_of(&component)), "{signed}");
    let pushed = vigil.ok(push);
    assert!(pushed.contains("\"version\": \"1.6.0\""), "{pushed}");
    let listed = vigil.ok(["policy", "list", "--url", &url]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["active"]["digest"], digest_of(&component));
    vigil.ok(["policy", "rollback", "--reason", "cli test", "--url", &url]);
    vigil.ok(["policy", "activate", "default@1.6.0", "--url", &url]);
    let listed = vigil.run(["policy", "list", "--url", &url]).stdout;
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["active"]["version"], "1.6.0");
    assert_eq!(listed["activations"][1]["reason"], "cli test");

    server.stop();
}

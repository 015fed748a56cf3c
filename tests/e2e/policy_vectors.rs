//! `vigil policy test`: the shipped golden vectors pass for both shipped policies (default and
//! reputation), and a
//! deliberately wrong vector fails with its name and the difference.

use std::ffi::OsStr;

use vigil_tests::{Cli, workspace_root};

fn policy_test(component: &std::path::Path, vectors: &std::path::Path) -> (bool, String) {
    let run = Cli::new().run([
        OsStr::new("policy"),
        OsStr::new("test"),
        component.as_os_str(),
        OsStr::new("--vectors"),
        vectors.as_os_str(),
    ]);
    (run.success(), format!("{}{}", run.stdout, run.stderr))
}

#[test]
fn shipped_vectors_pass_and_a_wrong_vector_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let component = dir.path().join("default.wasm");
    std::fs::write(&component, vigil::policy::DEFAULT_POLICY).expect("write");
    let shipped = workspace_root().join("policies/default/vectors.json");
    let (ok, out) = policy_test(&component, &shipped);
    assert!(ok, "{out}");
    assert!(out.contains("10 of 10 vectors passed"), "{out}");

    // The second bundled policy (Hermes's trust score), which reuses the default one as a
    // library.
    let reputation = dir.path().join("reputation.wasm");
    std::fs::write(&reputation, vigil::policy::REPUTATION_POLICY).expect("write");
    let (ok, out) = policy_test(
        &reputation,
        &workspace_root().join("policies/reputation/vectors.json"),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("reputation@2.0.0: 5 of 5 vectors passed"),
        "{out}"
    );

    let text = std::fs::read_to_string(&shipped).expect("vectors");
    let wrong = text.replace(
        r#""expect": {"status": "online", "confidence": "yellow"}"#,
        r#""expect": {"status": "online", "confidence": "green"}"#,
    );
    assert_ne!(wrong, text, "the vector to break exists");
    let wrong_path = dir.path().join("wrong.json");
    std::fs::write(&wrong_path, wrong).expect("write");
    let (ok, out) = policy_test(&component, &wrong_path);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL forged heartbeats cap confidence at yellow, never red: confidence: expected \"green\", got \"yellow\""),
        "{out}"
    );
    assert!(out.contains("9 of 10 vectors passed"), "{out}");
}

#[test]
fn a_policy_from_the_template_builds_and_loads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vigil = Cli::in_dir(dir.path())
        // A shared target dir keeps the SDK's dependencies compiled across runs.
        .env(
            "CARGO_TARGET_DIR",
            workspace_root().join("target/policy-template"),
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    vigil.ok(["policy", "new", "hello-policy"]);
    let stdout = vigil.ok(["policy", "build", "hello-policy"]);
    let wasm = stdout
        .lines()
        .find(|l| l.ends_with("hello_policy.wasm"))
        .expect("the component path is printed");
    let bytes = std::fs::read(wasm).expect("built");
    let runtime = vigil::policy::PolicyRuntime::new(vigil::policy::PolicyLimits::from(
        &vigil::config::PolicyConfig::default(),
    ))
    .expect("runtime");
    let policy = runtime
        .load(&bytes, &Default::default())
        .expect("the template's component loads");
    assert_eq!(policy.description().name, "hello-policy");
    assert_eq!(policy.description().version, "0.1.0");
}

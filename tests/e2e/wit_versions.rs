//! The policy ABI across the minors of `vigil:policy@1`: the host loads components built
//! against 1.0.0 (parameters with every `evaluate`) and 1.1 ones (`configure` once per
//! instance, then `evaluate-configured`), and configures every fresh 1.1 instance before use.
//! (A `@2` component is refused at load: `lifecycle::broken_modules_change_nothing_and_are_reported`.)

use std::collections::BTreeMap;
use std::sync::Arc;

use vigil::config::PolicyConfig;
use vigil::policy::{
    DEFAULT_POLICY, LoadedPolicy, PolicyAbi, PolicyEvent, PolicyLimits, PolicyRuntime, ServerFacts,
};
use vigil_tests::{misbehaving_policy, policy_variant};

fn runtime(reuse_instance_calls: u32) -> PolicyRuntime {
    PolicyRuntime::new(PolicyLimits {
        reuse_instance_calls,
        ..PolicyLimits::from(&PolicyConfig::default())
    })
    .expect("engine builds")
}

fn facts(server_id: &str) -> ServerFacts {
    ServerFacts {
        server_id: server_id.to_owned(),
        is_verified: true,
        key_version: 1,
        registered_at_ms: 0,
    }
}

/// Whether the component's bytes contain `name` (import and export names are plain strings).
fn names(component: &[u8], name: &str) -> bool {
    component
        .windows(name.len())
        .any(|window| window == name.as_bytes())
}

fn load(
    runtime: &PolicyRuntime,
    bytes: &[u8],
    params: &[(&str, toml::Value)],
) -> Arc<LoadedPolicy> {
    let params: BTreeMap<String, toml::Value> = params
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    runtime.load(bytes, &params).expect("the component loads")
}

#[test]
fn a_component_built_against_1_0_0_loads_and_gets_its_params_on_every_call() {
    let bytes = policy_variant("vigil-test-policy-world-1-0", &[]);
    assert!(
        names(&bytes, "vigil:policy/types@1.0.0"),
        "a 1.0.0 component"
    );
    assert!(
        !names(&bytes, "evaluate-configured"),
        "without the 1.1 exports"
    );
    // A fresh instance per call, and one warm instance for every call.
    for reuse in [1, 256] {
        let policy = load(
            &runtime(reuse),
            &bytes,
            &[("quality", toml::Value::Float(77.5))],
        );
        assert_eq!(policy.abi(), PolicyAbi::ParamsPerCall);
        assert_eq!(policy.description().name, "frozen-1-0");
        let mut state: Option<Vec<u8>> = None;
        for (count, now_ms) in [(1.0, 1_000), (2.0, 2_000), (3.0, 3_000)] {
            let outcome = policy
                .evaluate(&facts("a"), state.as_deref(), now_ms, PolicyEvent::Tick)
                .expect("a 1.0 component evaluates");
            assert_eq!(outcome.verdict.quality_score, 77.5, "reuse {reuse}");
            assert_eq!(outcome.verdict.scores["events"], count, "reuse {reuse}");
            assert_eq!(outcome.verdict.scores["params"], 1.0, "reuse {reuse}");
            state = Some(outcome.state);
        }
    }
}

#[test]
fn the_bundled_policies_are_1_1_components() {
    assert!(names(DEFAULT_POLICY, "vigil:policy/types@1.1.0"));
    let runtime = runtime(256);
    assert_eq!(
        load(&runtime, DEFAULT_POLICY, &[]).abi(),
        PolicyAbi::Configured
    );
    let reputation = policy_variant("vigil-policy-reputation", &[]);
    assert!(names(&reputation, "vigil:policy/types@1.1.0"));
    assert_eq!(
        load(&runtime, &reputation, &[]).abi(),
        PolicyAbi::Configured
    );
}

#[test]
fn a_fresh_1_1_instance_is_configured_before_it_evaluates() {
    // `trap-live` traps on every server but the smoke-test one, and each trap kills the
    // instance. An instance that was not configured answers `err` (the SDK refuses to
    // evaluate without parameters), so every success below is a configured fresh instance.
    let bytes = std::fs::read(misbehaving_policy()).expect("the misbehaving policy is built");
    let policy = load(
        &runtime(256),
        &bytes,
        &[("behaviour", toml::Value::String("trap-live".into()))],
    );
    assert_eq!(policy.abi(), PolicyAbi::Configured);
    for round in 0..3 {
        let outcome = policy
            .evaluate(&facts("vigil-smoke-test"), None, 1_000, PolicyEvent::Tick)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(outcome.verdict.quality_score, 99.0);
        let failure = policy
            .evaluate(&facts("victim"), None, 1_000, PolicyEvent::Tick)
            .expect_err("trap-live traps on other servers");
        assert_eq!(failure.kind(), "trap", "round {round}: {failure}");
    }
}

#[test]
fn parameters_a_1_1_component_refuses_fail_each_evaluation() {
    // `describe` does not see the parameters, so the policy loads; `configure` refuses them
    // on every fresh instance, and the evaluation fails with the policy's reason.
    let policy = load(
        &runtime(256),
        DEFAULT_POLICY,
        &[("grace_seconds", toml::Value::Float(0.5))],
    );
    for _ in 0..2 {
        let failure = policy
            .evaluate(&facts("a"), None, 1_000, PolicyEvent::Tick)
            .expect_err("grace_seconds 0.5 is out of range");
        assert_eq!(failure.kind(), "guest_error", "{failure}");
        assert!(failure.to_string().contains("grace_seconds"), "{failure}");
    }
}

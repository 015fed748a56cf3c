//! The policy ABI across the minors of `vigil:policy@1`: the host loads components built
//! against 1.0.0 (parameters with every `evaluate`), 1.1 ones (`configure` once per instance,
//! then `evaluate-configured`), 1.2 ones (also `evaluate-run`, used by replay) and 1.3 ones
//! (`evaluate-ext` and `evaluate-run-ext`, which see the schedule, the kind of authentication
//! and the job run), and configures every fresh instance of a 1.1 or later component before use.
//! (A `@2` component is refused at load: `lifecycle::broken_modules_change_nothing_and_are_reported`.)

use std::collections::BTreeMap;
use std::sync::Arc;

use vigil::config::PolicyConfig;
use vigil::engine::replay::replay;
use vigil::policy::{
    DEFAULT_POLICY, LoadedPolicy, PolicyAbi, PolicyEvent, PolicyLimits, PolicyRuntime, ServerFacts,
};
use vigil::store::{HistoryEvent, ServerRecord, Snapshot};
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
        schedule: None,
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
fn the_bundled_policies_are_1_4_components() {
    assert!(names(DEFAULT_POLICY, "vigil:policy/types@1.4.0"));
    let runtime = runtime(256);
    assert_eq!(
        load(&runtime, DEFAULT_POLICY, &[]).abi(),
        PolicyAbi::Resuming
    );
    let reputation = vigil::policy::REPUTATION_POLICY.to_vec();
    assert!(names(&reputation, "vigil:policy/types@1.4.0"));
    assert_eq!(load(&runtime, &reputation, &[]).abi(), PolicyAbi::Resuming);
}

#[test]
fn a_component_built_against_1_2_0_loads_and_folds_runs_with_the_1_2_records() {
    let bytes = policy_variant("vigil-test-policy-world-1-2", &[]);
    assert!(
        names(&bytes, "vigil:policy/types@1.2.0"),
        "a 1.2.0 component"
    );
    assert!(names(&bytes, "evaluate-run"), "with the 1.2 export");
    assert!(!names(&bytes, "evaluate-ext"), "without the 1.3 ones");
    // A scheduled server: the 1.2 records carry no schedule, and the component still folds.
    let scheduled = ServerFacts {
        schedule: Some(vigil::policy::Schedule {
            cadence: vigil::policy::Cadence::Period(86_400),
            grace_seconds: 3_600,
            max_run_seconds: Some(600),
        }),
        ..facts("a")
    };
    for reuse in [1, 256] {
        let policy = load(
            &runtime(reuse),
            &bytes,
            &[("quality", toml::Value::Float(55.0))],
        );
        assert_eq!(policy.abi(), PolicyAbi::Runs);
        assert_eq!(policy.description().name, "frozen-1-2");
        let single = policy
            .evaluate(&scheduled, None, 1_000, PolicyEvent::Tick)
            .expect("a 1.2 component evaluates");
        assert_eq!(single.verdict.quality_score, 55.0, "configured");
        assert_eq!(single.verdict.scores["events"], 1.0);
        let events: Vec<vigil::policy::TimedEvent> = (1..=4)
            .map(|i| vigil::policy::TimedEvent {
                now_ms: 1_000 + i * 1_000,
                event: PolicyEvent::Tick,
            })
            .collect();
        let run = policy
            .evaluate_run(&scheduled, Some(&single.state), &events)
            .expect("a 1.2 component folds runs");
        assert_eq!(run.verdicts.len(), 4, "every event folded");
        assert_eq!(run.verdicts[3].scores["events"], 5.0);
    }
}

#[test]
fn a_component_built_against_1_1_0_loads_and_replays_one_event_per_call() {
    let bytes = policy_variant("vigil-test-policy-world-1-1", &[]);
    assert!(
        names(&bytes, "vigil:policy/types@1.1.0"),
        "a 1.1.0 component"
    );
    assert!(!names(&bytes, "evaluate-run"), "without the 1.2 export");
    for reuse in [1, 256] {
        let policy = load(
            &runtime(reuse),
            &bytes,
            &[("quality", toml::Value::Float(66.0))],
        );
        assert_eq!(policy.abi(), PolicyAbi::Configured);
        assert_eq!(policy.description().name, "frozen-1-1");
        let err = policy
            .evaluate_run(&facts("a"), None, &[])
            .expect_err("no evaluate-run in a 1.1 component");
        assert_eq!(err.kind(), "load", "{err}");
        // Replay folds its history one event per call: every event counted once.
        let history: Vec<HistoryEvent> = (1..=5)
            .map(|seq| HistoryEvent::Rejected {
                seq,
                received_at_ms: seq * 1_000,
                code: "bad_signature".to_owned(),
            })
            .collect();
        let identity = ServerRecord {
            server_id: "a".to_owned(),
            display_name: None,
            cluster_id: None,
            public_key: String::new(),
            key_version: 1,
            is_verified: true,
            registered_at_ms: 0,
            admin: Default::default(),
            snapshot: Snapshot::unseen(),
        };
        let (replayed, effects) = replay(&policy, &identity, &history, None).expect("replays");
        assert!(effects.errors.is_empty(), "{:?}", effects.errors);
        assert_eq!(replayed.snapshot.quality_score, 66.0, "configured");
        assert_eq!(replayed.snapshot.scores.get("events"), Some(5.0));
        assert_eq!(replayed.snapshot.event_seq, 5);
    }
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
    assert_eq!(policy.abi(), PolicyAbi::Resuming);
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

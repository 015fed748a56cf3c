//! Replay folds a `vigil:policy@1.2` component's history in runs (`evaluate-run`, many events
//! per call), and the result is exactly that of folding the same history one event per call:
//! around due ticks, rejections, failing evaluations, traps and invalid output alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use vigil::config::PolicyConfig;
use vigil::engine::fold::FoldEffects;
use vigil::engine::replay::{RUN_EVENTS, replay_onto_in_runs};
use vigil::ingest::decode::decode;
use vigil::policy::{
    DEFAULT_POLICY, LoadedPolicy, PolicyAbi, PolicyEvent, PolicyLimits, PolicyRuntime, ServerFacts,
    TimedEvent,
};
use vigil::store::{HeartbeatRow, HistoryEvent, ServerRecord, Snapshot};
use vigil_tests::{Agent, misbehaving_policy};

const T0: i64 = 1_790_000_000_000;

fn load(bytes: &[u8], params: &[(&str, &str)]) -> Arc<LoadedPolicy> {
    let runtime =
        PolicyRuntime::new(PolicyLimits::from(&PolicyConfig::default())).expect("engine builds");
    let params: BTreeMap<String, toml::Value> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), toml::Value::String((*v).to_owned())))
        .collect();
    runtime.load(bytes, &params).expect("loads")
}

fn identity(server_id: &str) -> ServerRecord {
    ServerRecord {
        server_id: server_id.to_owned(),
        display_name: None,
        cluster_id: None,
        public_key: String::new(),
        key_version: 1,
        is_verified: true,
        registered_at_ms: T0 - 86_400_000,
        admin: Default::default(),
        snapshot: Snapshot::unseen(),
    }
}

/// A varied history of signed heartbeats and rejections: mostly every 30 s, with silences long
/// enough for deadlines to pass (ticks between events), restarts, emergency mode, claimed
/// offline, and spoof-like and harmless rejections.
fn history(agent: &Agent, events: i64) -> Vec<HistoryEvent> {
    let mut at = T0;
    let mut uptime = 1_000u64;
    (1..=events)
        .map(|seq| {
            at += match seq % 97 {
                0 => 20 * 60_000,
                50 => 7 * 60_000 + 1_234,
                _ => 30_000 + (seq % 5) * 1_000,
            };
            uptime = if seq % 41 == 0 { 5 } else { uptime + 30 };
            if seq % 9 == 4 {
                let code = if seq % 2 == 0 {
                    "bad_signature"
                } else {
                    "rate_limited"
                };
                return HistoryEvent::Rejected {
                    seq,
                    received_at_ms: at,
                    code: code.to_owned(),
                };
            }
            let mode = if seq % 53 < 3 { "emergency" } else { "normal" };
            let status = if seq % 67 == 1 { "offline" } else { "online" };
            let body = agent.heartbeat_at(
                at,
                json!({
                    "status": status, "mode": mode, "interval_seconds": 30,
                    "uptime_seconds": uptime, "players_current": seq % 20,
                    "players_capacity": 20, "agent_version": "1.4.2",
                    "metrics": {"cpu_percent": (seq % 100) as f64 / 3.0, "mem_mb": 512},
                }),
            );
            let text = body.to_string();
            let decoded = decode(text.as_bytes()).expect("a valid body");
            HistoryEvent::Heartbeat(HeartbeatRow {
                server_id: agent.server_id.clone(),
                seq,
                received_at_ms: at,
                sent_at_ms: decoded.sent_at_ms,
                key_version: 1,
                signature: decoded.signature.expect("signed"),
                body: text,
                policy_digest: String::new(),
                auth: vigil::store::AuthKind::Signature,
                original_body: None,
            })
        })
        .collect()
}

/// Everything a replay produces, comparable.
fn replayed(
    policy: &LoadedPolicy,
    history: &[HistoryEvent],
    max_run: usize,
) -> (ServerRecord, String, u64) {
    let mut server = identity("runs");
    let mut effects = FoldEffects::default();
    replay_onto_in_runs(policy, &mut server, history, &mut effects, max_run).expect("replays");
    let summary = format!(
        "transitions {:?}\nsignals {:?}\nerrors {:?}",
        effects.transitions, effects.signals, effects.errors
    );
    (server, summary, effects.evaluations)
}

#[test]
fn the_default_policy_folds_in_runs_exactly_as_one_event_at_a_time() {
    let policy = load(DEFAULT_POLICY, &[]);
    assert_eq!(
        policy.abi(),
        PolicyAbi::Resuming,
        "a vigil:policy@1.4 component"
    );
    let history = history(&Agent::new("runs"), 1_500);
    let (one_by_one, effects, evaluations) = replayed(&policy, &history, 1);
    assert!(
        effects.contains("went-offline") && effects.contains("restart-detected"),
        "the history exercises ticks and signals: {effects:.300}"
    );
    assert!(
        evaluations > 1_500,
        "ticks were folded between events: {evaluations}"
    );
    for max_run in [2, 7, RUN_EVENTS, 10_000] {
        let (runs, runs_effects, runs_evaluations) = replayed(&policy, &history, max_run);
        assert_eq!(runs, one_by_one, "runs of {max_run}");
        assert_eq!(runs_effects, effects, "runs of {max_run}");
        assert_eq!(runs_evaluations, evaluations, "runs of {max_run}");
    }
}

#[test]
fn a_run_folds_up_to_the_next_due_tick_and_matches_single_evaluations() {
    let policy = load(DEFAULT_POLICY, &[]);
    let history = history(&Agent::new("runs"), 200);
    let decoded: Vec<_> = history
        .iter()
        .filter_map(|event| match event {
            HistoryEvent::Heartbeat(row) => Some((
                row.received_at_ms,
                decode(row.body.as_bytes()).expect("decodes"),
            )),
            HistoryEvent::Rejected { .. } | HistoryEvent::HostResumed { .. } => None,
        })
        .collect();
    let events: Vec<TimedEvent<'_>> = decoded
        .iter()
        .map(|(at, heartbeat)| TimedEvent {
            now_ms: *at,
            event: PolicyEvent::Heartbeat {
                received_at_ms: *at,
                auth: vigil::policy::AuthKind::Signature,
                heartbeat,
            },
        })
        .collect();
    let facts = ServerFacts {
        server_id: "runs".into(),
        is_verified: true,
        key_version: 1,
        registered_at_ms: T0,
        schedule: None,
    };
    let run = policy
        .evaluate_run(&facts, None, &events)
        .expect("the run folds");
    // The first silence past the deadline (20 minutes after event 97) stops the run.
    let folded = run.verdicts.len();
    assert!(
        (2..events.len()).contains(&folded),
        "a prefix up to the first due tick: {folded} of {}",
        events.len()
    );
    let due = run.verdicts[folded - 1]
        .next_check_at_ms
        .expect("a deadline");
    assert!(due <= events[folded].now_ms, "stopped at a due tick");
    let mut state: Option<Vec<u8>> = None;
    for (event, verdict) in events.iter().zip(&run.verdicts) {
        let single = policy
            .evaluate(&facts, state.as_deref(), event.now_ms, event.event)
            .expect("evaluates");
        assert_eq!(&single.verdict, verdict);
        state = Some(single.state);
    }
    assert_eq!(run.state, state, "the state after the last folded event");
    assert!(
        run.fuel_used > 0 && run.fuel_used < policy_fuel(),
        "one budget for the run: {}",
        run.fuel_used
    );
}

fn policy_fuel() -> u64 {
    PolicyConfig::default().fuel
}

#[test]
fn failures_inside_a_run_are_reported_as_single_evaluations_report_them() {
    let bytes = std::fs::read(misbehaving_policy()).expect("built");
    let policy = load(&bytes, &[("behaviour", "flaky")]);
    assert_eq!(policy.abi(), PolicyAbi::Resuming);
    let history = history(&Agent::new("runs"), 600);
    let (one_by_one, effects, evaluations) = replayed(&policy, &history, 1);
    for kind in ["Guest", "Trap", "InvalidOutput"] {
        assert!(effects.contains(kind), "the history hits {kind}");
    }
    assert!(one_by_one.snapshot.policy_errors > 0);
    for max_run in [3, RUN_EVENTS] {
        let (runs, runs_effects, runs_evaluations) = replayed(&policy, &history, max_run);
        assert_eq!(runs, one_by_one, "runs of {max_run}");
        assert_eq!(runs_effects, effects, "runs of {max_run}");
        assert_eq!(runs_evaluations, evaluations, "runs of {max_run}");
    }
}

#[test]
fn a_policy_that_cannot_finish_a_run_falls_back_to_single_evaluations() {
    // Every evaluation loops: the run exhausts its fuel, then each event fails alone, exactly
    // as without runs.
    let bytes = std::fs::read(misbehaving_policy()).expect("built");
    let policy = load(&bytes, &[("behaviour", "loop")]);
    let history = history(&Agent::new("runs"), 3);
    let (one_by_one, effects, _) = replayed(&policy, &history, 1);
    let (runs, runs_effects, _) = replayed(&policy, &history, RUN_EVENTS);
    assert_eq!(runs, one_by_one);
    assert_eq!(runs_effects, effects);
    assert_eq!(runs.snapshot.policy_errors, 3, "{effects}");
    assert!(effects.contains("OutOfFuel"), "{effects}");
}

#[test]
fn instance_reuse_counts_every_event_a_run_folds() {
    // `[policy] reuse_instance_calls` bounds the evaluations one guest instance makes; a run
    // counts each event it folds, and the bound is checked before each call.
    let runtime = PolicyRuntime::new(PolicyLimits {
        reuse_instance_calls: 5,
        ..PolicyLimits::from(&PolicyConfig::default())
    })
    .expect("engine builds");
    let bytes = std::fs::read(misbehaving_policy()).expect("built");
    let params = BTreeMap::from([(
        "behaviour".to_owned(),
        toml::Value::String("instance-count".to_owned()),
    )]);
    let policy = runtime.load(&bytes, &params).expect("loads");
    let facts = ServerFacts {
        server_id: "reuse".into(),
        is_verified: true,
        key_version: 1,
        registered_at_ms: T0,
        schedule: None,
    };
    let made = |verdict: &vigil::policy::Verdict| verdict.scores["instance-evaluations"];
    let mut now_ms = T0;
    let mut single = || {
        now_ms += 1_000;
        made(
            &policy
                .evaluate(&facts, None, now_ms, PolicyEvent::Tick)
                .expect("evaluates")
                .verdict,
        )
    };
    let seen: Vec<f64> = (0..3).map(|_| single()).collect();
    assert_eq!(seen, [1.0, 2.0, 3.0], "one warm instance");
    let ticks = |from: i64, n: i64| -> Vec<TimedEvent<'static>> {
        (1..=n)
            .map(|i| TimedEvent {
                now_ms: from + i * 1_000,
                event: PolicyEvent::Tick,
            })
            .collect()
    };
    let run = policy
        .evaluate_run(&facts, None, &ticks(T0 + 10_000, 2))
        .expect("runs");
    let seen: Vec<f64> = run.verdicts.iter().map(made).collect();
    assert_eq!(seen, [4.0, 5.0], "the run continues on the same instance");
    assert_eq!(single(), 1.0, "five evaluations made: a fresh instance");
    let run = policy
        .evaluate_run(&facts, None, &ticks(T0 + 20_000, 6))
        .expect("runs");
    let seen: Vec<f64> = run.verdicts.iter().map(made).collect();
    assert_eq!(
        seen,
        [2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        "a run starts on an instance with evaluations left and folds all its events"
    );
    assert_eq!(single(), 1.0, "then the instance is replaced");
}

//! A test policy that misbehaves on demand, so the host's limits can be tested: its one
//! parameter, `behaviour`, picks what `evaluate` does.
//!
//! - `ok`: a valid online/green assessment; the state is the number of events folded so far
//!   (a little-endian u64), so it changes on every event.
//! - `trap`: traps (`unreachable` on wasm, a panic natively).
//! - `loop`: loops forever (until the host's fuel or deadline stops it).
//! - `nan`: returns a quality score that is NaN.
//! - `oom`: allocates and touches memory until the allocation fails.
//! - `err`: returns `Err("deliberate failure")`.
//! - `flaky`: decided by the event's second (`now_ms / 1000`): `Err` when it is 3 modulo 7, a
//!   trap when 5 modulo 11, a NaN quality score when 6 modulo 13, `ok` otherwise. Replay tests
//!   use it for failures in the middle of a run.
//! - `instance-count`: `ok`, plus a score `instance-evaluations`: how many evaluations this
//!   instance has made (global state, which a real policy must never keep), so tests can see
//!   when the host replaces an instance.
//! - `auth-badge`: `ok`, plus a badge naming how the host authenticated a heartbeat
//!   (`auth-signature`, `auth-token`, `auth-api-key` or `auth-network`), so tests can see the
//!   kind reach a 1.3 policy.
//! - `trap-live`: traps on every server except the host's synthetic smoke-test server
//!   (`vigil-smoke-test`): a bug that validation cannot see, for the auto-rollback test.
//!
//! Test builds can change what it says about itself at compile time (the lifecycle tests need
//! distinct versions): `VIGIL_TEST_POLICY_VERSION` (default `1.0.0`),
//! `VIGIL_TEST_POLICY_BEHAVIOUR` (the parameter's default, `ok`) and
//! `VIGIL_TEST_POLICY_DESCRIBE=trap` (`describe()` traps).
//!
//! Any other value is an `Err` naming it.

use std::sync::atomic::{AtomicU64, Ordering};

use vigil_policy_sdk::{
    Assessment, AuthKind, Confidence, Evaluation, Event, Facts, ParamSpec, Params, Policy,
    PolicyInfo, Score, Status,
};

/// Evaluations made by this instance (`instance-count`): a fresh instance starts at zero.
static INSTANCE_EVALUATIONS: AtomicU64 = AtomicU64::new(0);

const DEFAULT_BEHAVIOUR: &str = match option_env!("VIGIL_TEST_POLICY_BEHAVIOUR") {
    Some(b) => b,
    None => "ok",
};

/// The misbehaving policy.
pub struct Misbehaving;

impl Policy for Misbehaving {
    fn describe() -> PolicyInfo {
        if option_env!("VIGIL_TEST_POLICY_DESCRIBE") == Some("trap") {
            trap();
        }
        PolicyInfo {
            name: "misbehaving".to_string(),
            version: option_env!("VIGIL_TEST_POLICY_VERSION")
                .unwrap_or("1.0.0")
                .to_string(),
            history_window_seconds: 0,
            params: vec![ParamSpec::text(
                "behaviour",
                "What evaluate does: ok, trap, trap-live, loop, nan, oom, err, flaky, \
                 instance-count or auth-badge.",
                DEFAULT_BEHAVIOUR,
            )],
        }
    }

    fn evaluate(
        params: &Params,
        facts: &Facts,
        state: Option<&[u8]>,
        now_ms: i64,
        event: &Event,
    ) -> Result<Evaluation, String> {
        match params.text_or("behaviour", DEFAULT_BEHAVIOUR) {
            "ok" => Ok(ok(state, now_ms, 99.0)),
            "instance-count" => {
                let made = INSTANCE_EVALUATIONS.fetch_add(1, Ordering::Relaxed) + 1;
                let mut evaluation = ok(state, now_ms, 99.0);
                evaluation
                    .assessment
                    .scores
                    .push(Score::new("instance-evaluations", made as f64));
                Ok(evaluation)
            }
            "auth-badge" => {
                let mut evaluation = ok(state, now_ms, 99.0);
                if let Event::Heartbeat(heartbeat) = event {
                    let kind = match heartbeat.auth {
                        AuthKind::Signature => "auth-signature",
                        AuthKind::Token => "auth-token",
                        AuthKind::ApiKey => "auth-api-key",
                        AuthKind::Network => "auth-network",
                    };
                    evaluation.assessment.badges.push(kind.to_owned());
                }
                Ok(evaluation)
            }
            "trap-live" if facts.server_id == "vigil-smoke-test" => Ok(ok(state, now_ms, 99.0)),
            "trap-live" => trap(),
            "nan" => Ok(ok(state, now_ms, f64::NAN)),
            "trap" => trap(),
            "loop" => spin(),
            "oom" => exhaust_memory(),
            "err" => Err("deliberate failure".to_string()),
            "flaky" => match now_ms.div_euclid(1000) {
                s if s % 7 == 3 => Err("deliberate failure".to_string()),
                s if s % 11 == 5 => trap(),
                s if s % 13 == 6 => Ok(ok(state, now_ms, f64::NAN)),
                _ => Ok(ok(state, now_ms, 99.0)),
            },
            other => Err(format!("unknown behaviour {other:?}")),
        }
    }
}

fn ok(state: Option<&[u8]>, now_ms: i64, quality_score: f64) -> Evaluation {
    let count = state
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map_or(0, u64::from_le_bytes)
        .wrapping_add(1);
    let mut assessment = Assessment::new(Status::Online, Confidence::Green);
    assessment.uptime_percent = 100.0;
    assessment.quality_score = quality_score;
    assessment.scores = vec![Score::new("events", count as f64)];
    assessment.next_check_at_ms = Some(now_ms.saturating_add(60_000));
    Evaluation {
        state: count.to_le_bytes().to_vec(),
        assessment,
    }
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    panic!("deliberate trap")
}

fn spin() -> ! {
    // `black_box` keeps the optimiser from proving the loop side-effect free and deleting it.
    let mut counter = 0u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn exhaust_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // 1 MiB at a time, every page touched so the memory is really committed. When the
        // host's memory cap refuses to grow, the allocation fails and the guest traps.
        let mut block = vec![0u8; 1 << 20];
        for byte in block.iter_mut().step_by(4096) {
            *byte = 1;
        }
        hoard.push(std::hint::black_box(block));
    }
}

vigil_policy_sdk::export_policy!(Misbehaving);

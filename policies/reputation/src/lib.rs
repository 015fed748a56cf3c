//! # vigil-policy-reputation
//!
//! The Hermes agent marketplace's trust score as a Vigil policy. Status, confidence, uptime
//! and deadlines come from `vigil-policy-default` (used as a library); on top of them it keeps
//! the running totals of the *tasks* an agent reports and scores them with Hermes's formula
//! ([`hermes`]):
//!
//! `trust_score = 0.40·success_rate + 0.20·latency_score + 0.20·rating_score
//!              + 0.10·uptime_score + 0.10·consistency_score` (each 0.0–1.0).
//!
//! **Which heartbeat is a task** (a Hermes contract record):
//! - one that reports a job run's end (`run.phase` `success` or `fail`): it succeeded when the
//!   phase is `success`; its execution time is `run.duration_ms`;
//! - else one whose metrics carry `task_success` (non-zero = succeeded, 0 = failed).
//!
//! A task's metrics may add `execution_ms` (when no run duration is given), `promised_ms` (the
//! time promised; with an execution time it gives the latency sample) and `rating` (1–5
//! stars, clamped to that range). Other heartbeats, refused requests and ticks are no task:
//! refusals prove nothing about the agent (anyone can send one), so they never lower its trust.
//!
//! **Outputs.** `quality_score` is the trust score × 100. Scores: `trust_score` (0.0–1.0),
//! `trust` (0–100), the five components (`success_rate`, `latency_score`, `rating_score`,
//! `uptime_score`, `consistency_score`, each 0.0–1.0), `tasks`, `tasks_succeeded`,
//! `tasks_failed`, `avg_execution_seconds`, plus the default policy's scores. Badges:
//! `grade-<letter>` (A+ … F, the grade as a string), Hermes's `elite` / `verified-pro` /
//! `verified`, `veteran` / `experienced`, `perfect` / `reliable`, `lightning-fast`, and the
//! default policy's `under-attack` (its `verified` and `reliable` are dropped: Hermes gives
//! those names other meanings).
//!
//! State: the default policy's state, then the tally (72 bytes). Hermes scores all of an
//! agent's history, so the history window is 0 (all of it) and a replay rebuilds the tally
//! exactly.

pub mod hermes;

use hermes::{FULL_TENURE_DAYS, Tally, Task};
use vigil_policy_default::{Config, param_specs};
use vigil_policy_sdk::{
    Evaluation, Event, Facts, Heartbeat, Params, Policy, PolicyInfo, RunPhase, Score,
};

/// The policy's name.
pub const NAME: &str = "reputation";
/// The policy's version.
pub const VERSION: &str = "2.0.0";
const DAY_MS: i64 = 86_400_000;
const STATE_VERSION: u8 = 2;
const TALLY_BYTES: usize = 9 * 8;

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if bytes.len() < n {
        return Err("reputation state is truncated".into());
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn word(bytes: &mut &[u8]) -> Result<[u8; 8], String> {
    take(bytes, 8)?
        .try_into()
        .map_err(|_| "reputation state is truncated".to_string())
}

fn count(bytes: &mut &[u8]) -> Result<u64, String> {
    Ok(u64::from_le_bytes(word(bytes)?))
}

fn real(bytes: &mut &[u8]) -> Result<f64, String> {
    let v = f64::from_le_bytes(word(bytes)?);
    if v.is_finite() {
        Ok(v)
    } else {
        Err("reputation state holds a non-finite number".into())
    }
}

/// Splits our state into the default policy's state and the tally.
fn decode(state: &[u8]) -> Result<(&[u8], Tally), String> {
    let mut b = state;
    if take(&mut b, 1)?.first() != Some(&STATE_VERSION) {
        return Err("unknown reputation state version".into());
    }
    let len: [u8; 4] = take(&mut b, 4)?
        .try_into()
        .map_err(|_| "bad inner length".to_string())?;
    let inner = take(&mut b, u32::from_le_bytes(len) as usize)?;
    let tally = Tally {
        tasks: count(&mut b)?,
        succeeded: count(&mut b)?,
        timed: count(&mut b)?,
        execution_ms_sum: real(&mut b)?,
        latency_n: count(&mut b)?,
        latency_mean: real(&mut b)?,
        latency_m2: real(&mut b)?,
        rated: count(&mut b)?,
        rating_sum: real(&mut b)?,
    };
    if !b.is_empty() {
        return Err("trailing bytes in reputation state".into());
    }
    if tally.succeeded > tally.tasks
        || tally.timed > tally.tasks
        || tally.latency_n > tally.timed
        || tally.rated > tally.tasks
    {
        return Err("inconsistent reputation tally".into());
    }
    Ok((inner, tally))
}

fn encode(inner: &[u8], t: &Tally) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + inner.len() + TALLY_BYTES);
    out.push(STATE_VERSION);
    out.extend_from_slice(&(inner.len() as u32).to_le_bytes());
    out.extend_from_slice(inner);
    for n in [t.tasks, t.succeeded, t.timed] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&t.execution_ms_sum.to_le_bytes());
    out.extend_from_slice(&t.latency_n.to_le_bytes());
    out.extend_from_slice(&t.latency_mean.to_le_bytes());
    out.extend_from_slice(&t.latency_m2.to_le_bytes());
    out.extend_from_slice(&t.rated.to_le_bytes());
    out.extend_from_slice(&t.rating_sum.to_le_bytes());
    out
}

fn metric(h: &Heartbeat, name: &str) -> Option<f64> {
    h.metrics
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value)
        .filter(|v| v.is_finite())
}

/// The task a heartbeat reports, if it reports one (see the crate docs).
pub fn task_of(h: &Heartbeat) -> Option<Task> {
    let (success, run_ms) = match &h.run {
        Some(run) if run.phase == RunPhase::Success => (true, run.duration_ms),
        Some(run) if run.phase == RunPhase::Fail => (false, run.duration_ms),
        _ => (metric(h, "task_success")? != 0.0, None),
    };
    Some(Task {
        success,
        execution_ms: run_ms
            .map(|ms| ms as f64)
            .or_else(|| metric(h, "execution_ms"))
            .filter(|ms| *ms >= 0.0),
        promised_ms: metric(h, "promised_ms"),
        rating: metric(h, "rating"),
    })
}

/// The reputation policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReputationPolicy;

impl Policy for ReputationPolicy {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: NAME.to_string(),
            version: VERSION.to_string(),
            // Hermes scores every task an agent ever reported.
            history_window_seconds: 0,
            params: param_specs(),
        }
    }

    fn configure(params: &Params) -> Result<(), String> {
        Config::with_cached(params, |_| ())
    }

    fn evaluate(
        params: &Params,
        facts: &Facts,
        state: Option<&[u8]>,
        now_ms: i64,
        event: &Event,
    ) -> Result<Evaluation, String> {
        let (inner, mut tally) = match state {
            Some(bytes) => decode(bytes)?,
            None => (&[][..], Tally::default()),
        };
        let inner = (!inner.is_empty()).then_some(inner);
        // The default policy's config, validated once per instance (kept with the params).
        let base = Config::with_cached(params, |config| {
            vigil_policy_default::evaluate(config, facts, inner, now_ms, event)
        })??;
        if let Event::Heartbeat(h) = event
            && let Some(task) = task_of(h)
        {
            tally.add(&task);
        }
        let c = tally.components(facts.registered_at_ms, now_ms);
        let trust = tally.trust_score(&c);

        let mut assessment = base.assessment;
        assessment.quality_score = trust * 100.0;
        for (name, value) in [
            ("trust_score", trust),
            ("trust", trust * 100.0),
            ("success_rate", c.success_rate),
            ("latency_score", c.latency_score),
            ("rating_score", c.rating_score),
            ("uptime_score", c.uptime_score),
            ("consistency_score", c.consistency_score),
            ("tasks", tally.tasks as f64),
            ("tasks_succeeded", tally.succeeded as f64),
            ("tasks_failed", tally.failed() as f64),
            ("avg_execution_seconds", tally.avg_execution_seconds()),
        ] {
            assessment.scores.push(Score::new(name, value));
        }
        assessment
            .badges
            .retain(|b| b != "verified" && b != "reliable");
        assessment
            .badges
            .push(format!("grade-{}", hermes::grade(trust)));
        assessment
            .badges
            .extend(tally.badges(trust, &c).into_iter().map(String::from));
        // The uptime component grows by whole days: wake up when the next one completes.
        let tenure_days = now_ms.saturating_sub(facts.registered_at_ms).max(0) / DAY_MS;
        if tally.tasks > 0 && tenure_days < FULL_TENURE_DAYS {
            let next_day = facts
                .registered_at_ms
                .saturating_add((tenure_days + 1).saturating_mul(DAY_MS));
            assessment.next_check_at_ms = Some(
                assessment
                    .next_check_at_ms
                    .map_or(next_day, |at| at.min(next_day)),
            );
        }
        Ok(Evaluation {
            state: encode(&base.state, &tally),
            assessment,
        })
    }
}

vigil_policy_sdk::export_policy!(ReputationPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_policy_sdk::{Metric, Rejection, RunReport};

    fn facts() -> Facts {
        Facts {
            server_id: "agent".into(),
            is_verified: true,
            key_version: 1,
            registered_at_ms: 0,
            schedule: None,
        }
    }

    fn task_heartbeat(at: i64, metrics: &[(&str, f64)]) -> Event {
        Event::Heartbeat(Heartbeat {
            received_at_ms: at,
            sent_at_ms: at,
            signed: true,
            interval_seconds: Some(60),
            metrics: metrics
                .iter()
                .map(|(name, value)| Metric {
                    name: (*name).into(),
                    value: *value,
                })
                .collect(),
            ..Heartbeat::default()
        })
    }

    #[test]
    fn tasks_feed_the_tally_refusals_do_not_and_state_round_trips() {
        let params = Params::defaults(&param_specs());
        let t0 = 200 * DAY_MS;
        let first = ReputationPolicy::evaluate(
            &params,
            &facts(),
            None,
            t0,
            &task_heartbeat(
                t0,
                &[
                    ("task_success", 1.0),
                    ("execution_ms", 900.0),
                    ("promised_ms", 1000.0),
                    ("rating", 5.0),
                ],
            ),
        )
        .expect("ok");
        let (inner, tally) = decode(&first.state).expect("decodes");
        assert_eq!(encode(inner, &tally), first.state);
        assert_eq!(tally.tasks, 1);
        let a = &first.assessment;
        // 0.4 + 0.2 + 0.2 + 0.1 × 200/365 + 0.1 × 0.5 (one latency sample).
        let trust = 0.85 + 0.1 * (200.0 / 365.0);
        assert!((a.score("trust_score").expect("trust") - trust).abs() < 1e-12);
        assert!((a.quality_score - trust * 100.0).abs() < 1e-9);
        assert!(a.badges.iter().any(|b| b == "grade-A"));
        assert!(a.badges.iter().any(|b| b == "verified-pro"));
        assert!(!a.badges.iter().any(|b| b == "verified"));
        // The default policy's grace deadline (2 × 60 s) comes before the next whole day.
        assert_eq!(a.next_check_at_ms, Some(t0 + 120_000));

        let refused = ReputationPolicy::evaluate(
            &params,
            &facts(),
            Some(&first.state),
            t0 + 1_000,
            &Event::Rejected(Rejection {
                received_at_ms: t0 + 1_000,
                code: "bad_signature".into(),
            }),
        )
        .expect("ok");
        assert_eq!(decode(&refused.state).expect("d").1, tally);
        assert_eq!(
            refused.assessment.score("trust_score"),
            a.score("trust_score")
        );

        let plain =
            ReputationPolicy::evaluate(&params, &facts(), None, t0, &task_heartbeat(t0, &[]))
                .expect("ok");
        assert_eq!(plain.assessment.score("trust_score"), Some(0.5));
        assert!(plain.assessment.badges.iter().any(|b| b == "grade-D"));
        assert!(decode(b"garbage").is_err());
        let mut bad = first.state.clone();
        bad.push(0);
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn a_run_end_is_a_task_with_its_duration() {
        let mut h = Heartbeat {
            run: Some(RunReport {
                phase: RunPhase::Fail,
                exit_code: Some(1),
                duration_ms: Some(4_000),
                run_id: None,
            }),
            ..Heartbeat::default()
        };
        let task = task_of(&h).expect("a task");
        assert!(!task.success);
        assert_eq!(task.execution_ms, Some(4_000.0));
        h.run = Some(RunReport {
            phase: RunPhase::Start,
            exit_code: None,
            duration_ms: None,
            run_id: None,
        });
        assert_eq!(task_of(&h), None);
    }
}

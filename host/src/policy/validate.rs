//! Checks on what a guest answers, before the host believes it: `describe()` (name, semver),
//! an evaluation's state and assessment (ranges, finite scores, output size, a deadline in the
//! future) and a run's assessments (count, state, no deadline folded past).
//!
//! Pure functions over the limits and the answer: this module never calls a guest and never
//! decides what a failed check costs (the caller drops the instance).

use std::collections::BTreeMap;

use super::bindings::vigil::policy::types as wit;
use super::convert;
use super::{Outcome, PolicyError, PolicyLimits, RunOutcome, TimedEvent, Verdict};

/// `describe()` names the policy `[a-z0-9-]{1,64}` and versions it with semver.
pub(super) fn description(info: wit::PolicyInfo) -> Result<wit::PolicyInfo, PolicyError> {
    let valid_name = !info.name.is_empty()
        && info.name.len() <= 64
        && info
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name {
        return Err(PolicyError::InvalidOutput(format!(
            "describe(): name {:?} must be [a-z0-9-]{{1,64}}",
            info.name
        )));
    }
    if !is_semver(&info.version) {
        return Err(PolicyError::InvalidOutput(format!(
            "describe(): version {:?} is not semver (MAJOR.MINOR.PATCH)",
            info.version
        )));
    }
    Ok(info)
}

/// A run's answer: no more assessments than events, a state exactly when something was
/// folded, each assessment valid, and no folded event past a tick due before it.
pub(super) fn run(
    limits: &PolicyLimits,
    run: wit::RunResult,
    events: &[TimedEvent<'_>],
) -> Result<RunOutcome, PolicyError> {
    let bad = |msg: String| Err(PolicyError::InvalidOutput(msg));
    let folded = run.assessments.len();
    if folded > events.len() {
        return bad(format!(
            "evaluate-run answered {folded} assessments for {} events",
            events.len()
        ));
    }
    match &run.state {
        None if folded > 0 => return bad("evaluate-run folded events but no state".into()),
        Some(_) if folded == 0 => return bad("evaluate-run folded nothing but a state".into()),
        Some(state) => check_state(limits, state)?,
        None => {}
    }
    let mut verdicts = Vec::with_capacity(folded);
    for (i, assessment) in run.assessments.into_iter().enumerate() {
        let verdict = verdict(limits, assessment, events[i].now_ms)?;
        if let (Some(at), Some(next)) = (verdict.next_check_at_ms, events.get(i + 1))
            && i + 1 < folded
            && at <= next.now_ms
        {
            return bad(format!(
                "evaluate-run folded the event at {} past a tick due at {at}",
                next.now_ms
            ));
        }
        verdicts.push(verdict);
    }
    Ok(RunOutcome {
        verdicts,
        state: run.state,
        fuel_used: 0,
    })
}

/// A single evaluation's answer.
pub(super) fn evaluation(
    limits: &PolicyLimits,
    e: wit::Evaluation,
    now_ms: i64,
) -> Result<Outcome, PolicyError> {
    check_state(limits, &e.state)?;
    Ok(Outcome {
        fuel_used: 0,
        verdict: verdict(limits, e.assessment, now_ms)?,
        state: e.state,
    })
}

fn check_state(limits: &PolicyLimits, state: &[u8]) -> Result<(), PolicyError> {
    if state.len() > limits.max_state_bytes {
        return Err(PolicyError::InvalidOutput(format!(
            "state is {} bytes, the limit is {}",
            state.len(),
            limits.max_state_bytes
        )));
    }
    Ok(())
}

fn verdict(limits: &PolicyLimits, a: wit::Assessment, now_ms: i64) -> Result<Verdict, PolicyError> {
    let bad = |msg: String| Err(PolicyError::InvalidOutput(msg));
    for (what, v) in [
        ("uptime-percent", a.uptime_percent),
        ("quality-score", a.quality_score),
    ] {
        if !(0.0..=100.0).contains(&v) {
            return bad(format!("{what} is {v}, must be a number from 0 to 100"));
        }
    }
    let mut output_bytes = 0usize;
    let mut scores = BTreeMap::new();
    for s in a.scores {
        if !s.value.is_finite() {
            return bad(format!("score {:?} is {}, must be finite", s.name, s.value));
        }
        output_bytes += s.name.len() + 8;
        scores.insert(s.name, s.value);
    }
    output_bytes += a
        .badges
        .iter()
        .chain(&a.signals)
        .map(String::len)
        .sum::<usize>();
    if output_bytes > limits.max_output_bytes {
        return bad(format!(
            "assessment is {output_bytes} bytes, the limit is {}",
            limits.max_output_bytes
        ));
    }
    if let Some(at) = a.next_check_at_ms
        && at <= now_ms
    {
        return bad(format!("next-check-at-ms {at} is not after now ({now_ms})"));
    }
    Ok(Verdict {
        status: convert::status(a.status),
        confidence: convert::confidence(a.confidence),
        uptime_percent: a.uptime_percent,
        quality_score: a.quality_score,
        scores,
        badges: a.badges,
        signals: a.signals,
        next_check_at_ms: a.next_check_at_ms,
    })
}

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::digest_of;

    #[test]
    fn semver_and_digest() {
        assert!(is_semver("1.0.0"));
        assert!(is_semver("1.2.3-rc.1"));
        assert!(!is_semver("1.0"));
        assert_eq!(digest_of(b"").len(), 71);
    }
}

//! # vigil-policy-reputation
//!
//! A second real policy that composes the default one: status, confidence, uptime and
//! deadlines come from `vigil-policy-default` (used as a library), and on top of them it
//! computes the trust score agent marketplaces use:
//!
//! `trust = 0.40·success + 0.20·timeliness + 0.20·rating + 0.10·uptime + 0.10·consistency`
//!
//! each 0–100, derived from the heartbeat history and metrics an agent may report:
//! - **success**: the agent's latest `success_rate` metric (0–1 or 0–100), else the share of
//!   accepted heartbeats among accepted + refused requests in the last 24 h;
//! - **timeliness**: the share of heartbeats in the last 24 h that arrived within 1.5× the
//!   declared interval of the previous one (5 min when none is declared);
//! - **rating**: the latest `rating` metric (0–5 stars) × 20, else a neutral 50;
//! - **uptime**: the default policy's uptime;
//! - **consistency**: the default policy's confidence: green 100, yellow 60, red 0.
//!
//! `quality_score` is the trust score; `scores` carry `trust`, each component and `grade`
//! (grade points: A+ 4.3 … F 0); `badges` carry `grade-<letter>` and `elite` (≥ 95),
//! `verified-pro` (≥ 85, operator-verified), `verified` (≥ 70, operator-verified), `reliable`
//! (uptime ≥ 99 and timeliness ≥ 95) and `veteran` (registered ≥ 30 days), plus the default
//! policy's badges.
//!
//! State: the default policy's state, then the reputation's own events of the last 24 h (at
//! most [`MAX_EVENTS`]) — a function of the history window only, so replay rebuilds it exactly.

use vigil_policy_default::{Config, HISTORY_WINDOW_SECONDS, param_specs};
use vigil_policy_sdk::{Confidence, Evaluation, Event, Facts, Params, Policy, PolicyInfo, Score};

/// The policy's name.
pub const NAME: &str = "reputation";
/// The policy's version.
pub const VERSION: &str = "1.0.0";
/// Events remembered for success and timeliness.
pub const MAX_EVENTS: usize = 2048;
const DAY_MS: i64 = 86_400_000;
const STATE_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    OnTime = 0,
    Late = 1,
    Refused = 2,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Reputation {
    events: Vec<(i64, Kind)>,
    last_heartbeat: Option<(i64, u32)>,
    success_rate: Option<f64>,
    rating: Option<f64>,
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if bytes.len() < n {
        return Err("reputation state is truncated".into());
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn i64_of(bytes: &mut &[u8]) -> Result<i64, String> {
    let raw: [u8; 8] = take(bytes, 8)?.try_into().map_err(|_| "bad i64")?;
    Ok(i64::from_le_bytes(raw))
}

fn opt_f64(bytes: &mut &[u8]) -> Result<Option<f64>, String> {
    let present = take(bytes, 1)?.first().copied() == Some(1);
    let raw: [u8; 8] = take(bytes, 8)?.try_into().map_err(|_| "bad f64")?;
    Ok(present.then(|| f64::from_le_bytes(raw)))
}

fn put_opt_f64(out: &mut Vec<u8>, v: Option<f64>) {
    out.push(u8::from(v.is_some()));
    out.extend_from_slice(&v.unwrap_or(0.0).to_le_bytes());
}

/// Splits our state into the default policy's state and ours.
fn decode(state: &[u8]) -> Result<(&[u8], Reputation), String> {
    let mut b = state;
    if take(&mut b, 1)?.first() != Some(&STATE_VERSION) {
        return Err("unknown reputation state version".into());
    }
    let len: [u8; 4] = take(&mut b, 4)?.try_into().map_err(|_| "bad length")?;
    let inner = take(&mut b, u32::from_le_bytes(len) as usize)?;
    let last_at = i64_of(&mut b)?;
    let interval: [u8; 4] = take(&mut b, 4)?.try_into().map_err(|_| "bad interval")?;
    let has_last = take(&mut b, 1)?.first() == Some(&1);
    let success_rate = opt_f64(&mut b)?;
    let rating = opt_f64(&mut b)?;
    let count: [u8; 4] = take(&mut b, 4)?.try_into().map_err(|_| "bad count")?;
    let count = u32::from_le_bytes(count) as usize;
    if count > MAX_EVENTS {
        return Err("too many reputation events".into());
    }
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        let at = i64_of(&mut b)?;
        let kind = match take(&mut b, 1)?.first() {
            Some(0) => Kind::OnTime,
            Some(1) => Kind::Late,
            Some(2) => Kind::Refused,
            _ => return Err("bad reputation event kind".into()),
        };
        events.push((at, kind));
    }
    if !b.is_empty() {
        return Err("trailing bytes in reputation state".into());
    }
    Ok((
        inner,
        Reputation {
            events,
            last_heartbeat: has_last.then_some((last_at, u32::from_le_bytes(interval))),
            success_rate,
            rating,
        },
    ))
}

fn encode(inner: &[u8], r: &Reputation) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len() + 64 + r.events.len() * 9);
    out.push(STATE_VERSION);
    out.extend_from_slice(&(inner.len() as u32).to_le_bytes());
    out.extend_from_slice(inner);
    let (at, interval) = r.last_heartbeat.unwrap_or((0, 0));
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&interval.to_le_bytes());
    out.push(u8::from(r.last_heartbeat.is_some()));
    put_opt_f64(&mut out, r.success_rate);
    put_opt_f64(&mut out, r.rating);
    out.extend_from_slice(&(r.events.len() as u32).to_le_bytes());
    for (at, kind) in &r.events {
        out.extend_from_slice(&at.to_le_bytes());
        out.push(*kind as u8);
    }
    out
}

fn metric(h: &vigil_policy_sdk::Heartbeat, name: &str) -> Option<f64> {
    h.metrics
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value)
        .filter(|v| v.is_finite())
}

/// The letter grade and its grade points.
pub fn grade(trust: f64) -> (&'static str, f64) {
    const GRADES: [(f64, &str, f64); 10] = [
        (97.0, "A+", 4.3),
        (93.0, "A", 4.0),
        (90.0, "A-", 3.7),
        (87.0, "B+", 3.3),
        (83.0, "B", 3.0),
        (80.0, "B-", 2.7),
        (77.0, "C+", 2.3),
        (73.0, "C", 2.0),
        (70.0, "C-", 1.7),
        (60.0, "D", 1.0),
    ];
    GRADES
        .iter()
        .find(|(min, _, _)| trust >= *min)
        .map_or(("F", 0.0), |(_, letter, points)| (letter, *points))
}

/// The reputation policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReputationPolicy;

impl Policy for ReputationPolicy {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: NAME.to_string(),
            version: VERSION.to_string(),
            // The default policy's window covers the 24 h this policy remembers.
            history_window_seconds: HISTORY_WINDOW_SECONDS,
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
        let (inner, mut rep) = match state {
            Some(bytes) => decode(bytes)?,
            None => (&[][..], Reputation::default()),
        };
        let inner = (!inner.is_empty()).then_some(inner);
        // The default policy's config, validated once per instance (kept with the params).
        let base = Config::with_cached(params, |config| {
            vigil_policy_default::evaluate(config, facts, inner, now_ms, event)
        })??;
        match event {
            Event::Heartbeat(h) => {
                let on_time = rep.last_heartbeat.is_none_or(|(at, interval)| {
                    let allowed = if interval > 0 {
                        i64::from(interval).saturating_mul(1500)
                    } else {
                        300_000
                    };
                    now_ms.saturating_sub(at) <= allowed
                });
                rep.events
                    .push((now_ms, if on_time { Kind::OnTime } else { Kind::Late }));
                rep.last_heartbeat = Some((now_ms, h.interval_seconds.unwrap_or(0)));
                rep.success_rate = metric(h, "success_rate");
                rep.rating = metric(h, "rating");
            }
            Event::Rejected(_) => rep.events.push((now_ms, Kind::Refused)),
            Event::Tick => {}
        }
        let horizon = now_ms.saturating_sub(DAY_MS);
        rep.events.retain(|(at, _)| *at >= horizon);
        let excess = rep.events.len().saturating_sub(MAX_EVENTS);
        rep.events.drain(..excess);

        let count = |k: Kind| rep.events.iter().filter(|(_, kind)| *kind == k).count() as f64;
        let (on_time, late, refused) =
            (count(Kind::OnTime), count(Kind::Late), count(Kind::Refused));
        let heartbeats = on_time + late;
        let success = match rep.success_rate {
            Some(v) if v <= 1.0 => (v * 100.0).clamp(0.0, 100.0),
            Some(v) => v.clamp(0.0, 100.0),
            None if heartbeats + refused > 0.0 => 100.0 * heartbeats / (heartbeats + refused),
            None => 100.0,
        };
        let timeliness = if heartbeats > 0.0 {
            100.0 * on_time / heartbeats
        } else {
            100.0
        };
        let rating = rep.rating.map_or(50.0, |r| (r * 20.0).clamp(0.0, 100.0));
        let a = &base.assessment;
        let uptime = a.uptime_percent;
        let consistency = match a.confidence {
            Confidence::Green => 100.0,
            Confidence::Yellow => 60.0,
            Confidence::Red => 0.0,
        };
        let trust =
            (0.4 * success + 0.2 * timeliness + 0.2 * rating + 0.1 * uptime + 0.1 * consistency)
                .clamp(0.0, 100.0);
        let (letter, points) = grade(trust);

        let mut assessment = base.assessment.clone();
        assessment.quality_score = trust;
        for (name, value) in [
            ("trust", trust),
            ("grade", points),
            ("success", success),
            ("timeliness", timeliness),
            ("rating", rating),
            ("consistency", consistency),
        ] {
            assessment.scores.push(Score::new(name, value));
        }
        assessment.badges.push(format!("grade-{letter}"));
        let verified = facts.is_verified;
        if trust >= 95.0 {
            assessment.badges.push("elite".into());
        }
        if trust >= 85.0 && verified {
            assessment.badges.push("verified-pro".into());
        } else if trust >= 70.0 && verified {
            assessment.badges.push("verified".into());
        }
        if uptime >= 99.0 && timeliness >= 95.0 {
            assessment.badges.push("reliable".into());
        }
        if now_ms.saturating_sub(facts.registered_at_ms) >= 30 * DAY_MS {
            assessment.badges.push("veteran".into());
        }
        Ok(Evaluation {
            state: encode(&base.state, &rep),
            assessment,
        })
    }
}

vigil_policy_sdk::export_policy!(ReputationPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_policy_sdk::{Heartbeat, Metric, Rejection};

    #[test]
    fn grades_cover_the_scale() {
        assert_eq!(grade(99.0).0, "A+");
        assert_eq!(grade(85.0).0, "B");
        assert_eq!(grade(10.0), ("F", 0.0));
    }

    #[test]
    fn trust_follows_the_formula_and_state_round_trips() {
        let params = Params::defaults(&param_specs());
        let facts = Facts {
            server_id: "agent".into(),
            is_verified: true,
            key_version: 1,
            registered_at_ms: 0,
            schedule: None,
        };
        let t0 = 40 * DAY_MS;
        let hb = |at: i64| {
            Event::Heartbeat(Heartbeat {
                received_at_ms: at,
                sent_at_ms: at,
                signed: true,
                interval_seconds: Some(30),
                metrics: vec![
                    Metric {
                        name: "rating".into(),
                        value: 5.0,
                    },
                    Metric {
                        name: "success_rate".into(),
                        value: 0.9,
                    },
                ],
                ..Heartbeat::default()
            })
        };
        let first = ReputationPolicy::evaluate(&params, &facts, None, t0, &hb(t0)).expect("ok");
        let (_, rep) = decode(&first.state).expect("decodes");
        assert_eq!(
            encode(decode(&first.state).expect("d").0, &rep),
            first.state
        );
        let late = ReputationPolicy::evaluate(
            &params,
            &facts,
            Some(&first.state),
            t0 + 120_000,
            &hb(t0 + 120_000),
        )
        .expect("ok");
        let a = &late.assessment;
        assert_eq!(a.score("success"), Some(90.0));
        assert_eq!(a.score("timeliness"), Some(50.0));
        assert_eq!(a.score("rating"), Some(100.0));
        let expected = 0.4 * 90.0
            + 0.2 * 50.0
            + 0.2 * 100.0
            + 0.1 * a.uptime_percent
            + 0.1 * a.score("consistency").unwrap_or(-1.0);
        assert!((a.quality_score - expected).abs() < 1e-9);
        assert!(a.badges.iter().any(|b| b == "veteran"));
        let refused = ReputationPolicy::evaluate(
            &params,
            &facts,
            Some(&late.state),
            t0 + 121_000,
            &Event::Rejected(Rejection {
                received_at_ms: t0 + 121_000,
                code: "bad_signature".into(),
            }),
        )
        .expect("ok");
        assert!(refused.assessment.quality_score <= a.quality_score);
        assert!(decode(b"garbage").is_err());
    }
}

//! Golden vectors: event sequences in, expected assessments out (`vigil policy test`).
//!
//! A vector file is JSON: `{"params": {..}?, "cases": [{"name", "facts"?, "events": [..],
//! "expect": {..}}]}`. Each event is `{"at_ms", "heartbeat": {wire fields}}`,
//! `{"at_ms", "rejected": "code"}` or `{"at_ms", "tick": true}`; `facts` may hold
//! `is_verified`, `registered_at_ms` and a `schedule` (the admin API's shape); the state is threaded through
//! the case. `expect` lists the assessment fields to check after the last event (`status`,
//! `confidence`, `uptime_percent`, `quality_score`, `scores`, `badges`, `signals`,
//! `next_check_at_ms`); fields not listed are not checked, and `scores` checks only the
//! scores it lists. Numbers match within 1e-9.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{LoadedPolicy, PolicyEvent, ServerFacts};
use crate::clock::format_rfc3339_ms;
use crate::ingest::decode::decode_object;

/// A vector file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorFile {
    /// Parameters for the policy (as in `[policy.params]`).
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// The cases.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What it shows.
    pub name: String,
    /// The server's facts (defaults: `vector`, unverified, key 1, registered at 0).
    #[serde(default)]
    pub facts: Option<Facts>,
    /// Events in order.
    pub events: Vec<VectorEvent>,
    /// Expected assessment fields after the last event.
    pub expect: Map<String, Value>,
}

/// Facts of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// Operator-verified.
    #[serde(default)]
    pub is_verified: bool,
    /// Registration time.
    #[serde(default)]
    pub registered_at_ms: i64,
    /// The operator's schedule, as the admin API takes it (`period_seconds`, or `cron` with
    /// `tz`, plus `grace_seconds` and `max_run_seconds`).
    #[serde(default)]
    pub schedule: Option<VectorSchedule>,
}

/// A case's schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorSchedule {
    /// Every this many seconds.
    #[serde(default)]
    pub period_seconds: Option<u32>,
    /// A five-field cron expression.
    #[serde(default)]
    pub cron: Option<String>,
    /// The IANA zone of `cron` (UTC when absent).
    #[serde(default)]
    pub tz: Option<String>,
    /// How late a report may be, seconds.
    #[serde(default)]
    pub grace_seconds: u32,
    /// The longest run, seconds.
    #[serde(default)]
    pub max_run_seconds: Option<u32>,
}

impl VectorSchedule {
    fn to_schedule(&self) -> Result<super::Schedule, String> {
        let cadence = match (&self.period_seconds, &self.cron) {
            (Some(seconds), None) => super::Cadence::Period(*seconds),
            (None, Some(expression)) => super::Cadence::Cron {
                expression: expression.clone(),
                time_zone: self.tz.clone().unwrap_or_else(|| "UTC".to_owned()),
            },
            _ => return Err("a schedule has exactly one of period_seconds and cron".into()),
        };
        Ok(super::Schedule {
            cadence,
            grace_seconds: self.grace_seconds,
            max_run_seconds: self.max_run_seconds,
        })
    }
}

/// One event of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorEvent {
    /// `now-ms` of the evaluation.
    pub at_ms: i64,
    /// Heartbeat body fields (wire names); `server_id`, `key_version`, `timestamp` are filled.
    pub heartbeat: Option<Map<String, Value>>,
    /// A refused request's code.
    pub rejected: Option<String>,
    /// A tick.
    #[serde(default)]
    pub tick: bool,
}

/// A case whose outcome differs from its expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// The case.
    pub case: String,
    /// What differs.
    pub detail: String,
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9,
            _ => false,
        },
        // `have` may carry more scores than the vector lists.
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(k, w)| have.get(k).is_some_and(|v| close(v, w))),
        _ => a == b,
    }
}

/// Runs every case; returns the mismatches (empty: all pass).
pub fn run(policy: &LoadedPolicy, file: &VectorFile) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    for case in &file.cases {
        let fail = |detail: String| Mismatch {
            case: case.name.clone(),
            detail,
        };
        let schedule = match case.facts.as_ref().and_then(|f| f.schedule.as_ref()) {
            Some(s) => match s.to_schedule() {
                Ok(s) => Some(s),
                Err(e) => {
                    mismatches.push(fail(e));
                    continue;
                }
            },
            None => None,
        };
        let facts = ServerFacts {
            server_id: "vector".into(),
            is_verified: case.facts.as_ref().is_some_and(|f| f.is_verified),
            key_version: 1,
            registered_at_ms: case.facts.as_ref().map_or(0, |f| f.registered_at_ms),
            schedule,
        };
        let mut state: Option<Vec<u8>> = None;
        let mut last = None;
        let mut error = None;
        for (i, event) in case.events.iter().enumerate() {
            let decoded = match &event.heartbeat {
                Some(fields) => {
                    let mut body = fields.clone();
                    body.insert("server_id".into(), json!("vector"));
                    body.insert("key_version".into(), json!(1));
                    body.entry("timestamp")
                        .or_insert_with(|| json!(format_rfc3339_ms(event.at_ms)));
                    body.entry("signature").or_insert_with(|| json!(""));
                    match decode_object(body) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            error = Some(format!(
                                "event {i}: heartbeat does not decode: {}",
                                e.detail
                            ));
                            break;
                        }
                    }
                }
                None => None,
            };
            let ev = match (&decoded, &event.rejected, event.tick) {
                (Some(h), None, false) => PolicyEvent::Heartbeat {
                    received_at_ms: event.at_ms,
                    auth: crate::policy::AuthKind::Signature,
                    heartbeat: h,
                },
                (None, Some(code), false) => PolicyEvent::Rejected {
                    received_at_ms: event.at_ms,
                    code,
                },
                (None, None, true) => PolicyEvent::Tick,
                _ => {
                    error = Some(format!(
                        "event {i}: exactly one of heartbeat, rejected, tick"
                    ));
                    break;
                }
            };
            match policy.evaluate(&facts, state.as_deref(), event.at_ms, ev) {
                Ok(outcome) => {
                    state = Some(outcome.state);
                    last = Some(outcome.verdict);
                }
                Err(e) => {
                    error = Some(format!("event {i}: {e}"));
                    break;
                }
            }
        }
        if let Some(e) = error {
            mismatches.push(fail(e));
            continue;
        }
        let Some(v) = last else {
            mismatches.push(fail("no events".into()));
            continue;
        };
        let got = json!({
            "status": v.status, "confidence": v.confidence,
            "uptime_percent": v.uptime_percent, "quality_score": v.quality_score,
            "scores": v.scores, "badges": v.badges, "signals": v.signals,
            "next_check_at_ms": v.next_check_at_ms,
        });
        for (field, want) in &case.expect {
            match got.get(field) {
                Some(have) if close(have, want) => {}
                Some(have) => {
                    mismatches.push(fail(format!("{field}: expected {want}, got {have}")))
                }
                None => mismatches.push(fail(format!("{field}: not an assessment field"))),
            }
        }
    }
    mismatches
}

//! Conversions between the policy room's types and the generated WIT types: facts and events
//! into the guest, declared parameters and assessment enums out of it, and configured
//! parameters (`[policy.params]`, TOML) resolved against what a version declares.
//!
//! Shape only: this module never checks an answer's range or size (that is `validate.rs`'s)
//! and never calls a guest.

use std::collections::BTreeMap;

use super::bindings::vigil::policy::types as wit;
use super::{AuthKind, Cadence, ParamDescription, PolicyError, PolicyEvent, ServerFacts};
use crate::ingest::decode::{RunPhase, RunReport};

/// What the host knows about a server, as the guest sees it.
pub(super) fn wit_facts(facts: &ServerFacts) -> wit::Facts {
    wit::Facts {
        server_id: facts.server_id.clone(),
        is_verified: facts.is_verified,
        key_version: facts.key_version,
        registered_at_ms: facts.registered_at_ms,
    }
}

/// What the host knows about a server, as a 1.3 guest sees it (with the schedule).
pub(super) fn wit_facts_ext(facts: &ServerFacts) -> wit::FactsExt {
    wit::FactsExt {
        server_id: facts.server_id.clone(),
        is_verified: facts.is_verified,
        key_version: facts.key_version,
        registered_at_ms: facts.registered_at_ms,
        schedule: facts.schedule.as_ref().map(|s| wit::Schedule {
            cadence: match &s.cadence {
                Cadence::Period(seconds) => wit::Cadence::Period(*seconds),
                Cadence::Cron {
                    expression,
                    time_zone,
                } => wit::Cadence::Cron(wit::CronSchedule {
                    expression: expression.clone(),
                    time_zone: time_zone.clone(),
                }),
            },
            grace_seconds: s.grace_seconds,
            max_run_seconds: s.max_run_seconds,
        }),
    }
}

fn wit_auth(auth: AuthKind) -> wit::AuthKind {
    match auth {
        AuthKind::Signature => wit::AuthKind::Signature,
        AuthKind::Token => wit::AuthKind::Token,
        AuthKind::ApiKey => wit::AuthKind::ApiKey,
        AuthKind::Network => wit::AuthKind::Network,
    }
}

fn wit_run(run: &RunReport) -> wit::RunReport {
    wit::RunReport {
        phase: match run.phase {
            RunPhase::Start => wit::RunPhase::Start,
            RunPhase::Success => wit::RunPhase::Success,
            RunPhase::Fail => wit::RunPhase::Fail,
        },
        exit_code: run.exit_code,
        duration_ms: run.duration_ms,
        run_id: run.run_id.clone(),
    }
}

/// An event to fold, as a 1.3 guest sees it (with the kind of authentication and the run).
pub(super) fn wit_event_ext(event: PolicyEvent<'_>) -> wit::EventExt {
    match event {
        PolicyEvent::Heartbeat {
            received_at_ms,
            auth,
            heartbeat: h,
        } => wit::EventExt::Heartbeat(wit::HeartbeatExt {
            received_at_ms,
            sent_at_ms: h.sent_at_ms,
            signed: auth.is_signature(),
            auth: wit_auth(auth),
            status: h.status.clone(),
            mode: h.mode.clone(),
            interval_seconds: h.interval_seconds,
            uptime_seconds: h.uptime_seconds,
            players_current: h.players_current,
            players_capacity: h.players_capacity,
            agent_version: h.agent_version.clone(),
            metrics: h
                .metrics
                .iter()
                .map(|m| wit::Metric {
                    name: m.name.clone(),
                    value: m.value,
                })
                .collect(),
            run: h.run.as_ref().map(wit_run),
        }),
        PolicyEvent::Rejected {
            received_at_ms,
            code,
        } => wit::EventExt::Rejected(wit::Rejection {
            received_at_ms,
            code: code.to_owned(),
        }),
        // A 1.3 guest is not told about the host's downtime: a tick at the restart.
        PolicyEvent::Tick | PolicyEvent::HostResumed { .. } => wit::EventExt::Tick,
    }
}

/// An event to fold, as a 1.0 to 1.2 guest sees it (no authentication kind, no run).
pub(super) fn wit_event(event: PolicyEvent<'_>) -> wit::Event {
    match event {
        PolicyEvent::Heartbeat {
            received_at_ms,
            auth,
            heartbeat: h,
        } => wit::Event::Heartbeat(wit::Heartbeat {
            received_at_ms,
            sent_at_ms: h.sent_at_ms,
            signed: auth.is_signature(),
            status: h.status.clone(),
            mode: h.mode.clone(),
            interval_seconds: h.interval_seconds,
            uptime_seconds: h.uptime_seconds,
            players_current: h.players_current,
            players_capacity: h.players_capacity,
            agent_version: h.agent_version.clone(),
            metrics: h
                .metrics
                .iter()
                .map(|m| wit::Metric {
                    name: m.name.clone(),
                    value: m.value,
                })
                .collect(),
        }),
        PolicyEvent::Rejected {
            received_at_ms,
            code,
        } => wit::Event::Rejected(wit::Rejection {
            received_at_ms,
            code: code.to_owned(),
        }),
        // An older guest is not told about the host's downtime: a tick at the restart.
        PolicyEvent::Tick | PolicyEvent::HostResumed { .. } => wit::Event::Tick,
    }
}

/// A declared parameter, as the directory shows it.
pub(super) fn describe_param(spec: &wit::ParamSpec) -> ParamDescription {
    ParamDescription {
        name: spec.name.clone(),
        description: spec.description.clone(),
        default: match &spec.default {
            wit::ParamValue::Number(n) => serde_json::json!(n),
            wit::ParamValue::Text(t) => serde_json::json!(t),
            wit::ParamValue::Flag(b) => serde_json::json!(b),
        },
    }
}

/// The configured parameters resolved against the declared ones: defaults filled in, unknown
/// names and wrong types refused.
pub(super) fn resolve_params(
    declared: &[wit::ParamSpec],
    configured: &BTreeMap<String, toml::Value>,
) -> Result<Vec<wit::Param>, PolicyError> {
    if let Some(unknown) = configured
        .keys()
        .find(|k| !declared.iter().any(|d| &d.name == *k))
    {
        let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
        return Err(PolicyError::Params(format!(
            "`{unknown}` is not a parameter of this policy (it has: {})",
            names.join(", ")
        )));
    }
    declared
        .iter()
        .map(|spec| {
            let value = match (configured.get(&spec.name), &spec.default) {
                (None, default) => default.clone(),
                (Some(toml::Value::Integer(i)), wit::ParamValue::Number(_)) => {
                    wit::ParamValue::Number(*i as f64)
                }
                (Some(toml::Value::Float(f)), wit::ParamValue::Number(_)) if f.is_finite() => {
                    wit::ParamValue::Number(*f)
                }
                (Some(toml::Value::String(s)), wit::ParamValue::Text(_)) => {
                    wit::ParamValue::Text(s.clone())
                }
                (Some(toml::Value::Boolean(b)), wit::ParamValue::Flag(_)) => {
                    wit::ParamValue::Flag(*b)
                }
                (Some(other), default) => {
                    let want = match default {
                        wit::ParamValue::Number(_) => "a finite number",
                        wit::ParamValue::Text(_) => "a string",
                        wit::ParamValue::Flag(_) => "a boolean",
                    };
                    return Err(PolicyError::Params(format!(
                        "`{}` must be {want}, got {other}",
                        spec.name
                    )));
                }
            };
            Ok(wit::Param {
                name: spec.name.clone(),
                value,
            })
        })
        .collect()
}

/// The status a verdict names.
pub(super) fn status(status: wit::Status) -> &'static str {
    match status {
        wit::Status::Online => "online",
        wit::Status::Offline => "offline",
        wit::Status::Unknown => "unknown",
    }
}

/// The confidence a verdict names.
pub(super) fn confidence(confidence: wit::Confidence) -> &'static str {
    match confidence {
        wit::Confidence::Green => "green",
        wit::Confidence::Yellow => "yellow",
        wit::Confidence::Red => "red",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Schedule;

    #[test]
    fn a_1_3_guest_gets_the_schedule_the_auth_kind_and_the_run() {
        let facts = ServerFacts {
            server_id: "nightly".to_owned(),
            schedule: Some(Schedule {
                cadence: Cadence::Cron {
                    expression: "0 3 * * *".to_owned(),
                    time_zone: "Europe/Berlin".to_owned(),
                },
                grace_seconds: 3_600,
                max_run_seconds: Some(900),
            }),
            ..ServerFacts::default()
        };
        let wit::FactsExt {
            schedule: Some(schedule),
            ..
        } = wit_facts_ext(&facts)
        else {
            panic!("the schedule reaches the guest");
        };
        assert!(matches!(
            schedule.cadence,
            wit::Cadence::Cron(wit::CronSchedule { ref expression, ref time_zone })
                if expression == "0 3 * * *" && time_zone == "Europe/Berlin"
        ));
        assert_eq!(
            (schedule.grace_seconds, schedule.max_run_seconds),
            (3_600, Some(900))
        );

        let body = br#"{"server_id":"nightly","key_version":1,"timestamp":"2026-01-22T21:05:00Z","signature":"x","run":{"phase":"fail","exit_code":2,"duration_ms":1500,"run_id":"r-1"}}"#;
        let heartbeat = crate::ingest::decode::decode(body).expect("a valid body");
        for (kind, auth) in [
            (AuthKind::Signature, wit::AuthKind::Signature),
            (AuthKind::Token, wit::AuthKind::Token),
            (AuthKind::ApiKey, wit::AuthKind::ApiKey),
            (AuthKind::Network, wit::AuthKind::Network),
        ] {
            let event = PolicyEvent::Heartbeat {
                received_at_ms: 1,
                auth: kind,
                heartbeat: &heartbeat,
            };
            let wit::EventExt::Heartbeat(h) = wit_event_ext(event) else {
                panic!("a heartbeat");
            };
            assert_eq!(h.auth, auth);
            assert_eq!(h.signed, kind == AuthKind::Signature);
            let wit::Event::Heartbeat(old) = wit_event(event) else {
                panic!("a heartbeat");
            };
            assert_eq!(old.signed, kind == AuthKind::Signature);
            let run = h.run.expect("the run reaches the guest");
            assert_eq!(run.phase, wit::RunPhase::Fail);
            assert_eq!(
                (run.exit_code, run.duration_ms, run.run_id.as_deref()),
                (Some(2), Some(1_500), Some("r-1"))
            );
        }
    }
}

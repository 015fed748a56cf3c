//! Conversions between the policy room's types and the generated WIT types: facts and events
//! into the guest, declared parameters and assessment enums out of it, and configured
//! parameters (`[policy.params]`, TOML) resolved against what a version declares.
//!
//! Shape only: this module never checks an answer's range or size (that is `validate.rs`'s)
//! and never calls a guest.

use std::collections::BTreeMap;

use super::bindings::vigil::policy::types as wit;
use super::{ParamDescription, PolicyError, PolicyEvent, ServerFacts};

/// What the host knows about a server, as the guest sees it.
pub(super) fn wit_facts(facts: &ServerFacts) -> wit::Facts {
    wit::Facts {
        server_id: facts.server_id.clone(),
        is_verified: facts.is_verified,
        key_version: facts.key_version,
        registered_at_ms: facts.registered_at_ms,
    }
}

/// An event to fold, as the guest sees it.
pub(super) fn wit_event(event: PolicyEvent<'_>) -> wit::Event {
    match event {
        PolicyEvent::Heartbeat {
            received_at_ms,
            signed,
            heartbeat: h,
        } => wit::Event::Heartbeat(wit::Heartbeat {
            received_at_ms,
            sent_at_ms: h.sent_at_ms,
            signed,
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
        PolicyEvent::Tick => wit::Event::Tick,
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

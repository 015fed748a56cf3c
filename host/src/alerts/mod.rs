//! Alerts: status/confidence transitions and policy signals turned into alert events, written
//! to a durable outbox in the same transaction as their cause, then routed and delivered.
//!
//! - [`plan`] (called by the writer) decides which alerts a fold raised. It is pure.
//! - [`dispatch`] is the delivery task: routes each outbox row to sinks (`[[alerts.routes]]`),
//!   mutes it during a maintenance window, suppresses duplicates within the dedup window, and
//!   retries with exponential backoff until delivered or older than `give_up_after_seconds`.
//! - [`sinks`] speaks the wire formats: generic webhook (optionally HMAC-SHA256 signed),
//!   Alertmanager v2, Slack-compatible incoming webhook, ntfy, Discord, Telegram, email
//!   (SMTP), PagerDuty Events v2, Microsoft Teams workflows; over TLS with rustls.
//!
//! | kind | severity | raised by |
//! |---|---|---|
//! | `server_offline` | critical | a transition to `offline` |
//! | `server_online` | recovery | a transition from `offline` to `online` |
//! | `confidence_red` | warning | a transition of confidence to `red` |
//! | `emergency_mode` | warning | the policy signal `emergency-mode` |
//! | `restart_detected` | info | the policy signal `restart-detected` |
//! | `spoof_burst` | warning | the policy signal `spoof-burst` (forged or replayed requests naming the server reached the policy's threshold; the server is not demoted below yellow for it) |
//! | `job_failed` | critical | the policy signal `job-failed` (a job run reported `fail`, e.g. `vigil run` around a command that exited non-zero) |
//! | `run_overdue` | warning | the policy signal `run-overdue` (a scheduled server's run `start` had no end within the schedule's longest run) |

pub mod dispatch;
pub mod sinks;

pub use crate::config::alerts::{
    AlertsConfig, KINDS, MaintenanceWindow, PAP_TYPES, RouteConfig, SEVERITIES, SinkConfig,
    SinkKind,
};

use serde_json::json;

use crate::store::{AlertRow, ServerRecord, TransitionRow};

fn severity_of(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("info", |(_, s)| s)
}

fn alert(
    server: &ServerRecord,
    kind: &str,
    at_ms: i64,
    summary: String,
    details: serde_json::Value,
    policy_digest: &str,
) -> AlertRow {
    let mut details = details;
    if let (Some(name), Some(object)) = (&server.display_name, details.as_object_mut()) {
        // Receivers that name agents (a PAP station's `agent_name`) read it here.
        object.insert("display_name".into(), name.clone().into());
    }
    AlertRow {
        server_id: server.server_id.clone(),
        cluster_id: server.cluster_id.clone(),
        kind: kind.to_owned(),
        severity: severity_of(kind).to_owned(),
        at_ms,
        summary,
        details: details.to_string(),
        policy_digest: policy_digest.to_owned(),
    }
}

/// The alerts raised by one fold of `server`: its transitions and the policy's signals
/// (`at_ms` and `policy_digest` date and attribute the signals). Signals that merely echo a
/// transition (`went-offline`, `came-online`, `spoof-attempt`, `inconsistent`) raise nothing
/// of their own: the transition they cause does.
pub fn plan(
    server: &ServerRecord,
    transitions: &[TransitionRow],
    signals: &[String],
    at_ms: i64,
    policy_digest: &str,
) -> Vec<AlertRow> {
    let name = server.display_name.as_deref().unwrap_or(&server.server_id);
    let mut alerts = Vec::new();
    for t in transitions {
        let details = json!({
            "cause": t.cause,
            "from_status": t.from_status, "to_status": t.to_status,
            "from_confidence": t.from_confidence, "to_confidence": t.to_confidence,
        });
        if t.to_status == "offline" && t.from_status != "offline" {
            alerts.push(alert(
                server,
                "server_offline",
                t.at_ms,
                format!("{name} is offline (was {})", t.from_status),
                details.clone(),
                &t.policy_digest,
            ));
        }
        if t.to_status == "online" && t.from_status == "offline" {
            alerts.push(alert(
                server,
                "server_online",
                t.at_ms,
                format!("{name} is back online"),
                details.clone(),
                &t.policy_digest,
            ));
        }
        if t.to_confidence == "red" && t.from_confidence != "red" {
            alerts.push(alert(
                server,
                "confidence_red",
                t.at_ms,
                format!("{name}: confidence dropped to red ({})", t.cause),
                details,
                &t.policy_digest,
            ));
        }
    }
    for signal in signals {
        let (kind, summary) = match signal.as_str() {
            "emergency-mode" => ("emergency_mode", format!("{name} entered emergency mode")),
            "restart-detected" => ("restart_detected", format!("{name} restarted")),
            "spoof-burst" => (
                "spoof_burst",
                format!("{name}: a burst of forged or replayed requests names this server"),
            ),
            "job-failed" => ("job_failed", format!("{name}: a job run failed")),
            "run-overdue" => (
                "run_overdue",
                format!("{name}: a job run started and has not ended within its longest run time"),
            ),
            _ => continue,
        };
        alerts.push(alert(
            server,
            kind,
            at_ms,
            summary,
            json!({ "signal": signal }),
            policy_digest,
        ));
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Snapshot;

    fn server() -> ServerRecord {
        ServerRecord {
            server_id: "eu-1".into(),
            display_name: None,
            cluster_id: Some("eu".into()),
            public_key: String::new(),
            key_version: 1,
            is_verified: true,
            registered_at_ms: 0,
            admin: Default::default(),
            snapshot: Snapshot::unseen(),
        }
    }

    fn transition(from: (&str, &str), to: (&str, &str)) -> TransitionRow {
        TransitionRow {
            server_id: "eu-1".into(),
            at_ms: 5,
            cause: "tick".into(),
            from_status: from.0.into(),
            to_status: to.0.into(),
            from_confidence: from.1.into(),
            to_confidence: to.1.into(),
            policy_digest: "sha256:x".into(),
        }
    }

    fn kinds(alerts: &[AlertRow]) -> Vec<(&str, &str)> {
        alerts
            .iter()
            .map(|a| (a.kind.as_str(), a.severity.as_str()))
            .collect()
    }

    #[test]
    fn transitions_map_to_kinds_and_severities() {
        let s = server();
        let offline = plan(
            &s,
            &[transition(("online", "green"), ("offline", "red"))],
            &["went-offline".into()],
            5,
            "d",
        );
        assert_eq!(
            kinds(&offline),
            [
                ("server_offline", "critical"),
                ("confidence_red", "warning")
            ]
        );
        assert_eq!(offline[0].cluster_id.as_deref(), Some("eu"));
        let back = plan(
            &s,
            &[transition(("offline", "red"), ("online", "yellow"))],
            &[],
            5,
            "d",
        );
        assert_eq!(kinds(&back), [("server_online", "recovery")]);
        // A first heartbeat is not a recovery.
        let first = plan(
            &s,
            &[transition(("unknown", "yellow"), ("online", "yellow"))],
            &[],
            5,
            "d",
        );
        assert!(first.is_empty());
    }

    #[test]
    fn signals_map_to_kinds() {
        let a = plan(
            &server(),
            &[],
            &[
                "restart-detected".into(),
                "emergency-mode".into(),
                "inconsistent".into(),
                "spoof-burst".into(),
                "job-failed".into(),
                "run-overdue".into(),
            ],
            9,
            "d",
        );
        assert_eq!(
            kinds(&a),
            [
                ("restart_detected", "info"),
                ("emergency_mode", "warning"),
                ("spoof_burst", "warning"),
                ("job_failed", "critical"),
                ("run_overdue", "warning")
            ]
        );
        assert!(a.iter().all(|a| a.at_ms == 9));
    }
}

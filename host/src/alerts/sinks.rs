//! Wire formats of alert sinks. One call = one HTTP request; success is any 2xx.
//!
//! - webhook: `POST url`, body [`WebhookPayload`], headers `X-Vigil-Alert-Id` (stable per
//!   alert, for receivers' own dedup) and, with a secret, `X-Vigil-Signature:
//!   sha256=<hex HMAC-SHA256 of the body>`.
//! - alertmanager: `POST {url}/api/v2/alerts` with one alert; `server_online` resolves the
//!   `server_offline` alert (same labels, `endsAt` set).
//! - slack: `POST url` with `{"text": ...}` (also accepted by Mattermost, Rocket.Chat, Discord's
//!   `/slack` endpoint).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::{SinkConfig, SinkKind};
use crate::clock::format_rfc3339_ms;
pub use crate::store::OutboxAlert;

/// The generic webhook's JSON body.
#[derive(Debug, Serialize)]
pub struct WebhookPayload<'a> {
    /// Outbox id.
    pub id: i64,
    /// Alert kind.
    pub kind: &'a str,
    /// Severity.
    pub severity: &'a str,
    /// The server.
    pub server_id: &'a str,
    /// Its cluster.
    pub cluster_id: Option<&'a str>,
    /// RFC 3339 time of the cause.
    pub at: String,
    /// One line.
    pub summary: &'a str,
    /// Details.
    pub details: &'a Value,
    /// The policy that decided it.
    pub policy_digest: &'a str,
}

/// Computes the webhook signature header value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn alertmanager_body(alert: &OutboxAlert) -> Value {
    // A recovery resolves the offline alert: same identity labels, `endsAt` set.
    let (alertname, severity, ends_at) = if alert.kind == "server_online" {
        (
            "server_offline",
            "critical",
            Some(format_rfc3339_ms(alert.at_ms)),
        )
    } else {
        (alert.kind.as_str(), alert.severity.as_str(), None)
    };
    let mut labels = json!({
        "alertname": alertname,
        "severity": severity,
        "server_id": alert.server_id,
        "service": "vigil",
    });
    if let Some(cluster) = &alert.cluster_id {
        labels["cluster"] = json!(cluster);
    }
    let mut entry = json!({
        "labels": labels,
        "annotations": { "summary": alert.summary, "vigil_alert_id": alert.id.to_string() },
        "startsAt": format_rfc3339_ms(alert.at_ms),
    });
    if let Some(end) = ends_at {
        entry["endsAt"] = json!(end);
    }
    json!([entry])
}

fn slack_body(alert: &OutboxAlert) -> Value {
    let icon = match alert.severity.as_str() {
        "critical" => ":red_circle:",
        "warning" => ":warning:",
        "recovery" => ":large_green_circle:",
        _ => ":information_source:",
    };
    json!({
        "text": format!(
            "{icon} *{}* {} ({}, {})",
            alert.kind, alert.summary, alert.server_id, format_rfc3339_ms(alert.at_ms)
        )
    })
}

/// Sends one alert to one sink. `Err` carries a short reason for the log and the outbox.
pub async fn send(
    client: &reqwest::Client,
    sink: &SinkConfig,
    alert: &OutboxAlert,
    timeout: Duration,
) -> Result<(), String> {
    let (url, body) = match sink.kind {
        SinkKind::Webhook => {
            let payload = WebhookPayload {
                id: alert.id,
                kind: &alert.kind,
                severity: &alert.severity,
                server_id: &alert.server_id,
                cluster_id: alert.cluster_id.as_deref(),
                at: format_rfc3339_ms(alert.at_ms),
                summary: &alert.summary,
                details: &alert.details,
                policy_digest: &alert.policy_digest,
            };
            (sink.url.clone(), serde_json::to_vec(&payload))
        }
        SinkKind::Alertmanager => (
            format!("{}/api/v2/alerts", sink.url.trim_end_matches('/')),
            serde_json::to_vec(&alertmanager_body(alert)),
        ),
        SinkKind::Slack => (sink.url.clone(), serde_json::to_vec(&slack_body(alert))),
    };
    let body = body.map_err(|e| format!("encoding: {e}"))?;
    let mut request = client
        .post(&url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Vigil-Alert-Id", alert.id.to_string());
    if sink.kind == SinkKind::Webhook
        && let Some(secret) = sink.secret()
    {
        request = request.header("X-Vigil-Signature", signature(&secret, &body));
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("sink answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn recovery_resolves_the_offline_alert_in_alertmanager() {
        let alert = OutboxAlert {
            id: 7,
            server_id: "a".into(),
            cluster_id: Some("eu".into()),
            kind: "server_online".into(),
            severity: "recovery".into(),
            at_ms: 0,
            summary: "a is back".into(),
            details: json!({}),
            policy_digest: "d".into(),
        };
        let body = alertmanager_body(&alert);
        assert_eq!(body[0]["labels"]["alertname"], "server_offline");
        assert_eq!(body[0]["labels"]["cluster"], "eu");
        assert_eq!(body[0]["endsAt"], "1970-01-01T00:00:00Z");
    }
}

//! Wire formats of alert sinks. One call = one request; success is any 2xx (Telegram also
//! needs `"ok": true`, email the SMTP server's acceptance).
//!
//! - webhook: `POST url`, body [`WebhookPayload`], headers `X-Vigil-Alert-Id` (stable per
//!   alert, for receivers' own dedup) and, with a secret, `X-Vigil-Signature:
//!   sha256=<hex HMAC-SHA256 of the body>`.
//! - alertmanager: `POST {url}/api/v2/alerts` with one alert; `server_online` resolves the
//!   `server_offline` alert (same labels, `endsAt` set).
//! - slack: `POST url` with `{"text": ...}` (also accepted by Mattermost, Rocket.Chat, Discord's
//!   `/slack` endpoint).
//! - ntfy: `POST url` (the topic URL), the text as the body, `Title`, `Priority` (critical 5,
//!   warning 4, otherwise 3) and `Tags` headers, `Authorization: Bearer token` when set.
//! - discord: `POST url` with `{"content", "username": "Vigil", "allowed_mentions": {"parse":
//!   []}}` (no text of an alert can ping anyone); content cut at 2,000 characters.
//! - telegram: `POST {url}/bot{token}/sendMessage` with `{"chat_id", "text",
//!   "disable_web_page_preview": true}` (plain text, no parse mode); cut at 4,096 characters.
//! - email: one message over SMTP (lettre): `smtp://` requires STARTTLS, `smtps://` is TLS
//!   from the first byte; `?tls=none` (plain) is refused unless the host is a loopback address.
//!   `username` + `token` authenticate.
//! - pagerduty: Events API v2, `POST url` with `{"routing_key", "event_action", "dedup_key",
//!   "payload"}`; `server_online` sends `resolve` with the dedup key of that server's
//!   `server_offline` trigger (`vigil/{server_id}/server_offline`), so the incident closes.
//! - teams: `POST url` (a Teams workflow webhook) with a `message` holding one Adaptive Card.
//! - pap: `POST url` (a PAP Station's cluster alert endpoint) with PAP's `ClusterAlert`
//!   (`{type, agent_uuid, agent_name, cluster_id, severity, details, timestamp}`, see
//!   [`pap_body`]) and `Authorization: Bearer token`.
//!
//! Every templated kind renders its text from the sink's `template` or the kind's default
//! ([`default_template`]). Outbound TLS is rustls with the bundled Mozilla roots and the
//! sink's `ca_file`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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

/// The default message template of a sink kind (see [`SinkConfig::template`]).
pub fn default_template(kind: SinkKind) -> &'static str {
    match kind {
        SinkKind::Webhook | SinkKind::Alertmanager | SinkKind::Pap => "",
        SinkKind::Slack => "*{kind}* ({severity}) {summary} ({server_id}, {at})",
        SinkKind::Discord | SinkKind::Teams => {
            "**{kind}** ({severity}) {summary} ({server_id}, {at})"
        }
        SinkKind::Ntfy => "{summary} ({server_id}, {at})",
        SinkKind::Telegram => "{kind} ({severity}): {summary} ({server_id}, {at})",
        SinkKind::Pagerduty => "{summary}",
        SinkKind::Email => {
            "{summary}\n\nserver: {server_id}\ncluster: {cluster_id}\nkind: {kind}\n\
             severity: {severity}\nat: {at}\npolicy: {policy_digest}\nalert id: {alert_id}\n"
        }
    }
}

/// Renders `template` for `alert` (`{{`/`}}` are literal braces; an unknown placeholder, which
/// validation refuses, is kept as written).
pub fn render(template: &str, alert: &OutboxAlert) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let (c, after) = (rest.as_bytes()[i], &rest[i + 1..]);
        if after.as_bytes().first() == Some(&c) {
            out.push(char::from(c));
            rest = &after[1..];
            continue;
        }
        let field = (c == b'{').then(|| after.find('}')).flatten();
        let value = field.and_then(|end| match &after[..end] {
            "kind" => Some(alert.kind.clone()),
            "severity" => Some(alert.severity.clone()),
            "server_id" => Some(alert.server_id.clone()),
            "cluster_id" => Some(alert.cluster_id.clone().unwrap_or_default()),
            "summary" => Some(alert.summary.clone()),
            "at" => Some(format_rfc3339_ms(alert.at_ms)),
            "policy_digest" => Some(alert.policy_digest.clone()),
            "alert_id" => Some(alert.id.to_string()),
            _ => None,
        });
        match (field, value) {
            (Some(end), Some(value)) => {
                out.push_str(&value);
                rest = &after[end + 1..];
            }
            _ => {
                out.push(char::from(c));
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn text(sink: &SinkConfig, alert: &OutboxAlert) -> String {
    let template = sink
        .template
        .as_deref()
        .unwrap_or_else(|| default_template(sink.kind));
    render(template, alert)
}

/// `text` cut to at most `max` characters (an ellipsis marks the cut).
fn cut(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// PagerDuty's dedup key of an alert: a recovery shares its offline trigger's key.
pub fn pagerduty_dedup_key(alert: &OutboxAlert) -> String {
    let kind = if alert.kind == "server_online" {
        "server_offline"
    } else {
        alert.kind.as_str()
    };
    format!("vigil/{}/{kind}", alert.server_id)
}

fn pagerduty_body(sink: &SinkConfig, alert: &OutboxAlert, routing_key: &str) -> Value {
    let dedup_key = pagerduty_dedup_key(alert);
    if alert.kind == "server_online" {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let severity = match alert.severity.as_str() {
        "critical" => "critical",
        "warning" => "warning",
        _ => "info",
    };
    let mut payload = json!({
        "summary": cut(text(sink, alert), 1024),
        "source": alert.server_id,
        "severity": severity,
        "timestamp": format_rfc3339_ms(alert.at_ms),
        "component": "vigil",
        "class": alert.kind,
        "custom_details": {
            "alert_id": alert.id,
            "policy_digest": alert.policy_digest,
            "details": alert.details,
        },
    });
    if let Some(cluster) = &alert.cluster_id {
        payload["group"] = json!(cluster);
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": payload,
    })
}

fn teams_body(sink: &SinkConfig, alert: &OutboxAlert) -> Value {
    let color = match alert.severity.as_str() {
        "critical" => "Attention",
        "warning" => "Warning",
        "recovery" => "Good",
        _ => "Default",
    };
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": format!("Vigil: {}", alert.kind),
                     "weight": "Bolder", "size": "Medium", "color": color, "wrap": true},
                    {"type": "TextBlock", "text": text(sink, alert), "wrap": true},
                    {"type": "FactSet", "facts": [
                        {"title": "Server", "value": alert.server_id},
                        {"title": "Severity", "value": alert.severity},
                        {"title": "At", "value": format_rfc3339_ms(alert.at_ms)},
                    ]},
                ],
            },
        }],
    })
}

/// PAP's `ClusterAlert` for `alert`: `type` from [`super::PAP_TYPES`] (`server_offline` is
/// `AGENT_DEATH`), `agent_uuid` the server id, `agent_name` its display name (else the id),
/// `cluster_id` its cluster, `severity` Vigil's (`critical`, `warning`, `info`), `details`
/// Vigil's details with the summary, kind, alert id and policy digest, `timestamp` the time of
/// the cause. `None` for a kind PAP has no type for.
pub fn pap_body(alert: &OutboxAlert) -> Option<Value> {
    let (_, kind) = super::PAP_TYPES
        .iter()
        .find(|(kind, _)| *kind == alert.kind)?;
    let mut details = match &alert.details {
        Value::Object(map) => map.clone(),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("details".into(), other.clone());
            map
        }
    };
    details.insert("summary".into(), alert.summary.clone().into());
    details.insert("vigil_kind".into(), alert.kind.clone().into());
    details.insert("vigil_alert_id".into(), alert.id.into());
    details.insert("policy_digest".into(), alert.policy_digest.clone().into());
    let agent_name = alert
        .details
        .get("display_name")
        .and_then(Value::as_str)
        .unwrap_or(&alert.server_id)
        .to_owned();
    Some(json!({
        "type": kind,
        "agent_uuid": alert.server_id,
        "agent_name": agent_name,
        "cluster_id": alert.cluster_id.clone().unwrap_or_default(),
        "severity": alert.severity,
        "details": details,
        "timestamp": format_rfc3339_ms(alert.at_ms),
    }))
}

/// One HTTP request a sink makes.
struct Outgoing {
    url: String,
    body: Vec<u8>,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
}

fn json_request(url: String, body: &Value) -> Outgoing {
    Outgoing {
        url,
        body: body.to_string().into_bytes(),
        content_type: "application/json",
        headers: Vec::new(),
    }
}

fn http_request(sink: &SinkConfig, alert: &OutboxAlert) -> Result<Outgoing, String> {
    let url = sink.effective_url().to_owned();
    let missing_token = || format!("sink {:?} has no token (token or token_env)", sink.name);
    Ok(match sink.kind {
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
            let body = serde_json::to_vec(&payload).map_err(|e| format!("encoding: {e}"))?;
            let mut headers = Vec::new();
            if let Some(secret) = sink.secret() {
                headers.push(("X-Vigil-Signature", signature(&secret, &body)));
            }
            Outgoing {
                url,
                body,
                content_type: "application/json",
                headers,
            }
        }
        SinkKind::Alertmanager => json_request(
            format!("{}/api/v2/alerts", url.trim_end_matches('/')),
            &alertmanager_body(alert),
        ),
        SinkKind::Slack => json_request(url, &json!({ "text": text(sink, alert) })),
        SinkKind::Discord => json_request(
            url,
            &json!({
                "content": cut(text(sink, alert), 2000),
                "username": "Vigil",
                "allowed_mentions": { "parse": [] },
            }),
        ),
        SinkKind::Telegram => {
            let token = sink.credential().ok_or_else(missing_token)?;
            json_request(
                format!("{}/bot{token}/sendMessage", url.trim_end_matches('/')),
                &json!({
                    "chat_id": sink.chat_id,
                    "text": cut(text(sink, alert), 4096),
                    "disable_web_page_preview": true,
                }),
            )
        }
        SinkKind::Pagerduty => {
            let key = sink.credential().ok_or_else(missing_token)?;
            json_request(url, &pagerduty_body(sink, alert, &key))
        }
        SinkKind::Teams => json_request(url, &teams_body(sink, alert)),
        SinkKind::Pap => {
            let key = sink.credential().ok_or_else(missing_token)?;
            let body = pap_body(alert).ok_or_else(|| {
                format!("PAP has no alert type for {:?} (route only server_offline, emergency_mode, restart_detected to a pap sink)", alert.kind)
            })?;
            let mut request = json_request(url, &body);
            request
                .headers
                .push(("Authorization", format!("Bearer {key}")));
            request
        }
        SinkKind::Ntfy => {
            let (priority, tag) = match alert.severity.as_str() {
                "critical" => ("5", "rotating_light"),
                "warning" => ("4", "warning"),
                "recovery" => ("3", "white_check_mark"),
                _ => ("3", "information_source"),
            };
            let mut headers = vec![
                (
                    "Title",
                    format!("vigil: {} {}", alert.kind, alert.server_id),
                ),
                ("Priority", priority.to_owned()),
                ("Tags", format!("{tag},vigil")),
            ];
            if let Some(token) = sink.credential() {
                headers.push(("Authorization", format!("Bearer {token}")));
            }
            Outgoing {
                url,
                body: text(sink, alert).into_bytes(),
                content_type: "text/plain; charset=utf-8",
                headers,
            }
        }
        SinkKind::Email => return Err("email is not an HTTP sink".into()),
    })
}

/// Sends alerts to sinks; keeps one HTTP client per set of trusted roots (connections are
/// reused across deliveries).
#[derive(Debug, Default)]
pub struct Sender {
    clients: Mutex<HashMap<Option<PathBuf>, reqwest::Client>>,
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))
}

impl Sender {
    /// A sender with no clients yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn client(&self, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
        let key = ca_file.map(Path::to_path_buf);
        if let Some(client) = self.clients.lock().expect("not poisoned").get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        if let Some(path) = ca_file {
            let certs = reqwest::Certificate::from_pem_bundle(&read_pem(path)?)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        self.clients
            .lock()
            .expect("not poisoned")
            .insert(key, client.clone());
        Ok(client)
    }

    /// Sends one alert to one sink. `Err` carries a short reason for the log and the outbox.
    pub async fn send(
        &self,
        sink: &SinkConfig,
        alert: &OutboxAlert,
        timeout: Duration,
    ) -> Result<(), String> {
        if sink.kind == SinkKind::Email {
            return send_email(sink, alert, timeout).await;
        }
        let outgoing = http_request(sink, alert)?;
        let client = self.client(sink.ca_file.as_deref())?;
        let mut request = client
            .post(&outgoing.url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, outgoing.content_type)
            .header("X-Vigil-Alert-Id", alert.id.to_string());
        for (name, value) in outgoing.headers {
            request = request.header(name, value);
        }
        let response = request.body(outgoing.body).send().await.map_err(|e| {
            // reqwest's error names the URL, which holds the Telegram bot token: never log it.
            let e = e.without_url();
            let mut reason = format!("request failed: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason.push_str(&format!(": {s}"));
                source = s.source();
            }
            reason
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("sink answered {status}"));
        }
        if sink.kind == SinkKind::Telegram {
            let body: Value = response
                .json()
                .await
                .map_err(|e| format!("telegram answer: {}", e.without_url()))?;
            if body["ok"] != true {
                return Err(format!(
                    "telegram refused: {:?}",
                    body["description"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(200)
                        .collect::<String>()
                ));
            }
        }
        Ok(())
    }
}

async fn send_email(
    sink: &SinkConfig,
    alert: &OutboxAlert,
    timeout: Duration,
) -> Result<(), String> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let url = reqwest::Url::parse(sink.effective_url()).map_err(|e| format!("smtp url: {e}"))?;
    let host = url.host_str().ok_or("smtp url has no host")?.to_owned();
    let implicit = url.scheme() == "smtps";
    let plain = url.query_pairs().any(|(k, v)| k == "tls" && v == "none");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let tls = if plain {
        if !loopback || implicit {
            return Err("smtp ?tls=none is allowed only with smtp:// to a loopback host".into());
        }
        Tls::None
    } else {
        let mut params = TlsParameters::builder(host.clone());
        if let Some(path) = &sink.ca_file {
            let cert = Certificate::from_pem(&read_pem(path)?)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            params = params.add_root_certificate(cert);
        }
        let params = params
            .build_rustls()
            .map_err(|e| format!("smtp tls: {e}"))?;
        if implicit {
            Tls::Wrapper(params)
        } else {
            Tls::Required(params)
        }
    };
    let port = url.port().unwrap_or(if implicit { 465 } else { 587 });
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&sink.username, sink.credential()) {
        transport = transport.credentials(Credentials::new(user.clone(), password));
    }
    let from: Mailbox = sink
        .from
        .as_deref()
        .unwrap_or("")
        .parse()
        .map_err(|e| format!("from: {e}"))?;
    let mut message = Message::builder()
        .from(from)
        .subject(format!(
            "[vigil] {}: {} {}",
            alert.severity, alert.kind, alert.server_id
        ))
        .header(ContentType::TEXT_PLAIN);
    for to in &sink.to {
        message = message.to(to
            .parse::<Mailbox>()
            .map_err(|e| format!("to {to:?}: {e}"))?);
    }
    let message = message
        .body(text(sink, alert))
        .map_err(|e| format!("building the message: {e}"))?;
    let transport = transport.build();
    tokio::time::timeout(timeout.saturating_mul(2), transport.send(message))
        .await
        .map_err(|_| "smtp timed out".to_owned())?
        .map_err(|e| format!("smtp: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: &str) -> OutboxAlert {
        OutboxAlert {
            id: 7,
            server_id: "a".into(),
            cluster_id: None,
            kind: kind.into(),
            severity: "critical".into(),
            at_ms: 0,
            summary: "a is gone".into(),
            details: json!({}),
            policy_digest: "d".into(),
        }
    }

    #[test]
    fn templates_render_fields_and_literal_braces() {
        let a = alert("server_offline");
        assert_eq!(
            render(
                "{{{kind}}} {server_id}/{cluster_id}: {summary} #{alert_id} {at}",
                &a
            ),
            "{server_offline} a/: a is gone #7 1970-01-01T00:00:00Z"
        );
        assert_eq!(render("{nope} {", &a), "{nope} {");
        for kind in [
            SinkKind::Slack,
            SinkKind::Ntfy,
            SinkKind::Discord,
            SinkKind::Telegram,
            SinkKind::Email,
            SinkKind::Pagerduty,
            SinkKind::Teams,
        ] {
            assert_eq!(
                crate::config::alerts::check_template(default_template(kind)),
                Ok(()),
                "{kind:?}"
            );
        }
        let check = crate::config::alerts::check_template;
        assert!(
            check("{server}")
                .unwrap_err()
                .contains("unknown placeholder {server}")
        );
        assert!(check("a } b").is_err());
        assert!(check("a { b").is_err());
        assert_eq!(check("{{ {summary} }}"), Ok(()));
    }

    #[test]
    fn a_recovery_shares_the_offline_dedup_key_and_long_text_is_cut() {
        assert_eq!(
            pagerduty_dedup_key(&alert("server_online")),
            pagerduty_dedup_key(&alert("server_offline"))
        );
        assert_ne!(
            pagerduty_dedup_key(&alert("confidence_red")),
            pagerduty_dedup_key(&alert("server_offline"))
        );
        let long = "é".repeat(3000);
        let cut_text = cut(long, 2000);
        assert_eq!(cut_text.chars().count(), 2000);
        assert!(cut_text.ends_with('…'));
    }

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn pap_gets_cluster_alerts_for_its_three_types_only() {
        let mut death = alert("server_offline");
        death.cluster_id = Some("is.plugged.in".into());
        death.details = json!({"cause": "tick", "display_name": "focus"});
        let body = pap_body(&death).expect("a PAP type");
        assert_eq!(body["type"], "AGENT_DEATH");
        assert_eq!(body["agent_uuid"], "a");
        assert_eq!(body["agent_name"], "focus");
        assert_eq!(body["cluster_id"], "is.plugged.in");
        assert_eq!(body["severity"], "critical");
        assert_eq!(body["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(body["details"]["cause"], "tick");
        assert_eq!(body["details"]["vigil_alert_id"], 7);
        assert_eq!(
            pap_body(&alert("restart_detected")).expect("type")["agent_name"],
            "a"
        );
        assert!(pap_body(&alert("server_online")).is_none());
        let sink = SinkConfig {
            name: "station".into(),
            kind: SinkKind::Pap,
            url: "https://station.example/alerts".into(),
            token: Some("k".into()),
            ..SinkConfig::default()
        };
        let request = http_request(&sink, &death).expect("a request");
        assert!(
            request
                .headers
                .contains(&("Authorization", "Bearer k".to_owned()))
        );
        assert!(http_request(&sink, &alert("job_failed")).is_err());
        // Routes to a pap sink must name only the kinds PAP has types for.
        let config = |kinds: &[&str]| crate::config::alerts::AlertsConfig {
            sinks: vec![sink.clone()],
            routes: vec![crate::config::alerts::RouteConfig {
                kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
                severities: vec![],
                clusters: vec![],
                sink: "station".into(),
            }],
            ..Default::default()
        };
        assert!(
            config(&["server_offline", "emergency_mode", "restart_detected"])
                .validate()
                .is_ok()
        );
        assert!(config(&[]).validate().is_err());
        assert!(config(&["server_online"]).validate().is_err());
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

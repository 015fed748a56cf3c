//! `[alerts]`: sinks, routes, maintenance windows and the delivery schedule.
//!
//! ```toml
//! [alerts]
//! dedup_window_seconds = 300      # the same alert kind for the same server is sent once per window
//! give_up_after_seconds = 86400   # undelivered alerts older than this are dropped (logged, counted)
//!
//! [[alerts.sinks]]
//! name = "ops"
//! kind = "webhook"                # webhook | alertmanager | slack | ntfy | discord | telegram | email | pagerduty | teams | pap
//! url = "http://127.0.0.1:9000/hooks/vigil"
//! hmac_secret_env = "VIGIL_OPS_HOOK_SECRET"   # optional: X-Vigil-Signature: sha256=<hex>
//!
//! [[alerts.routes]]
//! kinds = ["server_offline", "server_online"] # empty = any
//! severities = []                             # empty = any
//! clusters = ["eu"]                           # empty = any
//! sink = "ops"
//!
//! [[alerts.maintenance]]
//! cluster_id = "eu"                           # or server_id = "eu-island-01"
//! start = "2026-01-22T20:00:00Z"
//! end = "2026-01-22T22:00:00Z"
//! ```
//!
//! Sinks reach `http://` and `https://` URLs (rustls, the bundled Mozilla roots plus a sink's
//! `ca_file`). The section reloads with the rest of the config.

use serde::{Deserialize, Serialize};

/// Every alert kind, with its severity (what routes may name).
pub const KINDS: [(&str, &str); 8] = [
    ("server_offline", "critical"),
    ("server_online", "recovery"),
    ("confidence_red", "warning"),
    ("emergency_mode", "warning"),
    ("restart_detected", "info"),
    ("spoof_burst", "warning"),
    ("job_failed", "critical"),
    ("run_overdue", "warning"),
];

/// Every severity.
pub const SEVERITIES: [&str; 4] = ["critical", "warning", "info", "recovery"];

use crate::clock::parse_rfc3339_ms;

/// `[alerts]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// An alert of the same kind for the same server within this many seconds of one already
    /// pending or delivered to a sink is not sent to that sink again. Default 300.
    pub dedup_window_seconds: u64,
    /// Undelivered alerts older than this are given up (logged at error, counted as
    /// `failed`). Default 86,400 (a day).
    pub give_up_after_seconds: u64,
    /// First retry delay in milliseconds; doubles per attempt. Default 1,000.
    pub retry_initial_ms: u64,
    /// Largest retry delay in milliseconds. Default 300,000.
    pub retry_max_ms: u64,
    /// How often the dispatcher looks for due work when nothing wakes it. Default 1,000 ms.
    pub poll_interval_ms: u64,
    /// Timeout of one delivery request. Default 10,000 ms.
    pub request_timeout_ms: u64,
    /// Where alerts can go.
    pub sinks: Vec<SinkConfig>,
    /// Which alerts go where (every matching route's sink receives the alert).
    pub routes: Vec<RouteConfig>,
    /// Windows during which a server's or cluster's alerts are muted.
    pub maintenance: Vec<MaintenanceWindow>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            dedup_window_seconds: 300,
            give_up_after_seconds: 86_400,
            retry_initial_ms: 1_000,
            retry_max_ms: 300_000,
            poll_interval_ms: 1_000,
            request_timeout_ms: 10_000,
            sinks: Vec::new(),
            routes: Vec::new(),
            maintenance: Vec::new(),
        }
    }
}

/// The wire format of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// `POST url` with the alert as JSON, optionally HMAC-SHA256 signed.
    #[default]
    Webhook,
    /// Prometheus Alertmanager: `POST {url}/api/v2/alerts`.
    Alertmanager,
    /// Slack-compatible incoming webhook: `POST url` with `{"text": ...}`.
    Slack,
    /// ntfy: `POST {url}` (the topic URL) with the message as the body and `Title`,
    /// `Priority`, `Tags` headers; `token` is sent as a bearer token.
    Ntfy,
    /// Discord webhook: `POST url` with `{"content", "username", "allowed_mentions"}`.
    Discord,
    /// Telegram Bot API: `POST {url}/bot{token}/sendMessage` with `{"chat_id", "text"}`.
    Telegram,
    /// Email over SMTP (`smtp://host:587`: STARTTLS required; `smtps://host:465`: TLS from
    /// the start; `smtp://host:25?tls=none` only on loopback).
    Email,
    /// PagerDuty Events API v2: trigger, and resolve `server_offline` on `server_online`
    /// with the same dedup key; `token` is the routing key.
    Pagerduty,
    /// Microsoft Teams workflow ("When a Teams webhook request is received") URL: an
    /// Adaptive Card message.
    Teams,
    /// A PAP Station's cluster alert endpoint: `POST url` with PAP's `ClusterAlert`
    /// (`AGENT_DEATH` for `server_offline`, `EMERGENCY_MODE`, `RESTART_DETECTED`) and
    /// `Authorization: Bearer token`. Routes to it must name only those three kinds.
    Pap,
}

impl SinkKind {
    /// The URL used when a sink leaves `url` empty (the public API of the service), if any.
    pub fn default_url(self) -> Option<&'static str> {
        match self {
            Self::Telegram => Some("https://api.telegram.org"),
            Self::Pagerduty => Some("https://events.pagerduty.com/v2/enqueue"),
            _ => None,
        }
    }

    /// Whether the kind's message text comes from a template (`template` may override it).
    pub fn templated(self) -> bool {
        !matches!(self, Self::Webhook | Self::Alertmanager | Self::Pap)
    }

    /// Whether the kind needs a `token` (or `token_env`).
    pub fn needs_token(self) -> bool {
        matches!(self, Self::Telegram | Self::Pagerduty | Self::Pap)
    }
}

/// The placeholders a sink `template` may use.
pub const TEMPLATE_FIELDS: [&str; 8] = [
    "kind",
    "severity",
    "server_id",
    "cluster_id",
    "summary",
    "at",
    "policy_digest",
    "alert_id",
];

/// The alert kinds a `pap` sink delivers, with PAP's `ClusterAlert` type for each.
pub const PAP_TYPES: [(&str, &str); 3] = [
    ("server_offline", "AGENT_DEATH"),
    ("emergency_mode", "EMERGENCY_MODE"),
    ("restart_detected", "RESTART_DETECTED"),
];

/// `[[alerts.sinks]]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name routes refer to.
    pub name: String,
    /// Wire format.
    pub kind: SinkKind,
    /// `http://` or `https://` URL (Alertmanager: its base URL; Telegram: the Bot API base,
    /// default `https://api.telegram.org`; PagerDuty: default
    /// `https://events.pagerduty.com/v2/enqueue`; email: `smtp://` or `smtps://`).
    #[serde(default)]
    pub url: String,
    /// HMAC-SHA256 key for the webhook signature header.
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// Environment variable holding the HMAC key (wins over `hmac_secret`).
    #[serde(default)]
    pub hmac_secret_env: Option<String>,
    /// The sink's credential: ntfy access token, Telegram bot token, PagerDuty routing key,
    /// SMTP password.
    #[serde(default)]
    pub token: Option<String>,
    /// Environment variable holding `token` (wins over it; preferred for secrets).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Telegram: the chat to post to.
    #[serde(default)]
    pub chat_id: Option<String>,
    /// Email: the sender address.
    #[serde(default)]
    pub from: Option<String>,
    /// Email: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Email: the SMTP user name (with `token` as the password).
    #[serde(default)]
    pub username: Option<String>,
    /// A PEM file of extra certificate authorities to trust for this sink (beside the bundled
    /// Mozilla roots), e.g. a private CA.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The message text, overriding the kind's default; placeholders `{kind}`,
    /// `{severity}`, `{server_id}`, `{cluster_id}`, `{summary}`, `{at}`, `{policy_digest}`,
    /// `{alert_id}`. Not for `webhook` and `alertmanager` (structured bodies).
    #[serde(default)]
    pub template: Option<String>,
}

impl SinkConfig {
    /// The HMAC key in force, if any.
    pub fn secret(&self) -> Option<String> {
        self.hmac_secret_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .filter(|s| !s.is_empty())
            .or_else(|| self.hmac_secret.clone())
    }

    /// The credential in force (`token_env` wins over `token`), if any.
    pub fn credential(&self) -> Option<String> {
        self.token_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .filter(|s| !s.is_empty())
            .or_else(|| self.token.clone())
    }

    /// `url`, or the kind's default when empty.
    pub fn effective_url(&self) -> &str {
        if self.url.is_empty() {
            self.kind.default_url().unwrap_or("")
        } else {
            &self.url
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        let name = &self.name;
        let url = self.effective_url();
        if self.kind == SinkKind::Email {
            anyhow::ensure!(
                url.starts_with("smtp://") || url.starts_with("smtps://"),
                "[[alerts.sinks]] {name:?}: an email sink's url must be smtp:// (STARTTLS) or smtps://"
            );
            anyhow::ensure!(
                self.from.is_some() && !self.to.is_empty(),
                "[[alerts.sinks]] {name:?}: an email sink needs `from` and `to`"
            );
        } else {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "[[alerts.sinks]] {name:?}: url must be http:// or https://"
            );
        }
        anyhow::ensure!(
            reqwest::Url::parse(url).is_ok_and(|u| u.host_str().is_some()),
            "[[alerts.sinks]] {name:?}: url {url:?} is not a URL with a host"
        );
        if self.kind == SinkKind::Telegram {
            anyhow::ensure!(
                self.chat_id.is_some(),
                "[[alerts.sinks]] {name:?}: a telegram sink needs `chat_id`"
            );
        }
        if self.kind.needs_token() {
            anyhow::ensure!(
                self.token.is_some() || self.token_env.is_some(),
                "[[alerts.sinks]] {name:?}: this kind needs `token` or `token_env`"
            );
        }
        if let Some(template) = &self.template {
            anyhow::ensure!(
                self.kind.templated(),
                "[[alerts.sinks]] {name:?}: `template` is not used by {:?} sinks",
                self.kind
            );
            check_template(template)
                .map_err(|e| anyhow::anyhow!("[[alerts.sinks]] {name:?}: template: {e}"))?;
        }
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("[[alerts.sinks]] {name:?}: ca_file {}: {e}", path.display())
            })?;
            anyhow::ensure!(
                reqwest::Certificate::from_pem_bundle(&pem).is_ok_and(|c| !c.is_empty()),
                "[[alerts.sinks]] {name:?}: ca_file {} holds no PEM certificate",
                path.display()
            );
        }
        Ok(())
    }
}

/// Checks that every `{placeholder}` of `template` is known and braces balance (`{{` and `}}`
/// stand for literal braces).
pub fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        let (c, after) = (rest.as_bytes()[i], &rest[i + 1..]);
        if after.as_bytes().first() == Some(&c) {
            rest = &after[1..];
            continue;
        }
        if c == b'}' {
            return Err("an unmatched `}` (write `}}` for a literal brace)".into());
        }
        let end = after
            .find('}')
            .ok_or_else(|| "an unclosed `{` (write `{{` for a literal brace)".to_owned())?;
        let field = &after[..end];
        if !TEMPLATE_FIELDS.contains(&field) {
            return Err(format!(
                "unknown placeholder {{{field}}}; known: {}",
                TEMPLATE_FIELDS.join(", ")
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// `[[alerts.routes]]`: empty lists match anything.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Alert kinds to match.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Severities to match.
    #[serde(default)]
    pub severities: Vec<String>,
    /// Clusters to match (a server without a cluster matches only an empty list).
    #[serde(default)]
    pub clusters: Vec<String>,
    /// The sink's name.
    pub sink: String,
}

impl RouteConfig {
    /// Whether an alert matches this route.
    pub fn matches(&self, kind: &str, severity: &str, cluster: Option<&str>) -> bool {
        let any = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
        };
        any(&self.kinds, Some(kind))
            && any(&self.severities, Some(severity))
            && any(&self.clusters, cluster)
    }
}

/// `[[alerts.maintenance]]`: one of `server_id` or `cluster_id`, and an RFC 3339 interval.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// The server to mute.
    #[serde(default)]
    pub server_id: Option<String>,
    /// The cluster to mute.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Start (inclusive), RFC 3339.
    pub start: String,
    /// End (exclusive), RFC 3339.
    pub end: String,
    /// Why (logged).
    #[serde(default)]
    pub reason: Option<String>,
}

impl MaintenanceWindow {
    /// Whether this window mutes an alert of `server_id` in `cluster_id` raised at `at_ms`.
    pub fn mutes(&self, server_id: &str, cluster_id: Option<&str>, at_ms: i64) -> bool {
        let target = self.server_id.as_deref() == Some(server_id)
            || (self.cluster_id.is_some() && self.cluster_id.as_deref() == cluster_id);
        let (Some(start), Some(end)) = (parse_rfc3339_ms(&self.start), parse_rfc3339_ms(&self.end))
        else {
            return false;
        };
        target && start <= at_ms && at_ms < end
    }
}

impl AlertsConfig {
    /// Checks names, URLs, routes and windows.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for sink in &self.sinks {
            anyhow::ensure!(
                names.insert(sink.name.as_str()),
                "[[alerts.sinks]] name {:?} is used twice",
                sink.name
            );
            sink.validate()?;
        }
        for route in &self.routes {
            anyhow::ensure!(
                names.contains(route.sink.as_str()),
                "[[alerts.routes]] sink {:?} is not a configured [[alerts.sinks]] name",
                route.sink
            );
            let to_pap = self
                .sinks
                .iter()
                .any(|s| s.name == route.sink && s.kind == SinkKind::Pap);
            if to_pap {
                anyhow::ensure!(
                    !route.kinds.is_empty()
                        && route
                            .kinds
                            .iter()
                            .all(|k| PAP_TYPES.iter().any(|(kind, _)| kind == k)),
                    "[[alerts.routes]] to the pap sink {:?} must name its kinds, each one of \
                     server_offline, emergency_mode, restart_detected (PAP has no other alert type)",
                    route.sink
                );
            }
            for kind in &route.kinds {
                anyhow::ensure!(
                    KINDS.iter().any(|(k, _)| k == kind),
                    "[[alerts.routes]] unknown kind {kind:?}"
                );
            }
            for severity in &route.severities {
                anyhow::ensure!(
                    SEVERITIES.contains(&severity.as_str()),
                    "[[alerts.routes]] unknown severity {severity:?}"
                );
            }
        }
        for w in &self.maintenance {
            anyhow::ensure!(
                w.server_id.is_some() != w.cluster_id.is_some(),
                "[[alerts.maintenance]] needs exactly one of server_id or cluster_id"
            );
            let (start, end) = (parse_rfc3339_ms(&w.start), parse_rfc3339_ms(&w.end));
            anyhow::ensure!(
                start.is_some() && end.is_some(),
                "[[alerts.maintenance]] start and end must be RFC 3339 times"
            );
            anyhow::ensure!(
                start < end,
                "[[alerts.maintenance]] start must be before end"
            );
        }
        anyhow::ensure!(
            self.retry_initial_ms >= 1 && self.retry_initial_ms <= self.retry_max_ms,
            "[alerts] retry_initial_ms must be at least 1 and at most retry_max_ms"
        );
        anyhow::ensure!(
            self.poll_interval_ms >= 10,
            "[alerts] poll_interval_ms must be at least 10"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_on_kind_severity_and_cluster() {
        let r = RouteConfig {
            kinds: vec!["server_offline".into()],
            severities: vec![],
            clusters: vec!["eu".into()],
            sink: "x".into(),
        };
        assert!(r.matches("server_offline", "critical", Some("eu")));
        assert!(!r.matches("server_offline", "critical", Some("us")));
        assert!(!r.matches("server_offline", "critical", None));
        assert!(!r.matches("server_online", "recovery", Some("eu")));
    }

    #[test]
    fn windows_mute_inside_only() {
        let w = MaintenanceWindow {
            server_id: None,
            cluster_id: Some("eu".into()),
            start: "2026-01-01T00:00:00Z".into(),
            end: "2026-01-01T01:00:00Z".into(),
            reason: None,
        };
        let start = parse_rfc3339_ms("2026-01-01T00:00:00Z").expect("valid");
        assert!(w.mutes("a", Some("eu"), start));
        assert!(!w.mutes("a", Some("eu"), start + 3_600_000));
        assert!(!w.mutes("a", None, start));
    }

    #[test]
    fn sinks_are_checked_per_kind() {
        let check = |sink: SinkConfig| {
            let c = AlertsConfig {
                sinks: vec![sink],
                ..AlertsConfig::default()
            };
            c.validate().map_err(|e| e.to_string())
        };
        let base = |kind, url: &str| SinkConfig {
            name: "s".into(),
            kind,
            url: url.into(),
            ..SinkConfig::default()
        };
        assert_eq!(
            check(base(SinkKind::Webhook, "https://h.example/x")),
            Ok(())
        );
        assert!(check(base(SinkKind::Webhook, "ftp://h/x")).is_err());
        let e = check(base(SinkKind::Telegram, "")).unwrap_err();
        assert!(e.contains("chat_id"), "{e}");
        let e = check(base(SinkKind::Pagerduty, "")).unwrap_err();
        assert!(e.contains("token"), "{e}");
        let e = check(base(SinkKind::Email, "https://h")).unwrap_err();
        assert!(e.contains("smtp://"), "{e}");
        let e = check(SinkConfig {
            from: Some("a@b.c".into()),
            to: vec!["d@e.f".into()],
            ..base(SinkKind::Email, "smtp://mail.example:587")
        });
        assert_eq!(e, Ok(()));
        let e = check(SinkConfig {
            template: Some("{x}".into()),
            ..base(SinkKind::Webhook, "http://h/x")
        })
        .unwrap_err();
        assert!(e.contains("template"), "{e}");
        let e = check(SinkConfig {
            template: Some("{x}".into()),
            ..base(SinkKind::Slack, "http://h/x")
        })
        .unwrap_err();
        assert!(e.contains("unknown placeholder"), "{e}");
        let e = check(SinkConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..base(SinkKind::Slack, "https://h/x")
        })
        .unwrap_err();
        assert!(e.contains("ca_file"), "{e}");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = AlertsConfig::default();
        c.routes.push(RouteConfig {
            kinds: vec![],
            severities: vec![],
            clusters: vec![],
            sink: "nope".into(),
        });
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}

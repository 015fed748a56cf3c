//! Configuration: one TOML file (`vigil.toml`) turned into a typed [`Config`].
//!
//! Every key has a default, so an empty file (or none) is a valid configuration. Unknown keys are
//! an error that names the key. Every key may come from the environment (`VIGIL_SERVER__LISTEN`,
//! mapping in [`layers`]), which wins over the file.
//! This module only parses and validates; it never opens sockets or files other than the config.
//! Putting an edited file in force while the host runs is [`reload`]'s; the access tables
//! (`[trust]` registration, `[rate_limit]`, `[directory]`, trusted proxies) are in [`access`].

pub mod access;
pub mod alerts;
pub mod compat;
pub mod layers;
pub mod reload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The whole configuration of a Vigil host.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: where to listen.
    pub server: ServerConfig,
    /// `[storage]`: which database.
    pub storage: StorageConfig,
    /// `[admin]`: the admin API.
    pub admin: AdminConfig,
    /// `[trust]`: signature, verification and replay rules.
    pub trust: TrustConfig,
    /// `[policy]`: the scoring policy and its limits.
    pub policy: PolicyConfig,
    /// `[ingest]`: the writer path.
    pub ingest: IngestConfig,
    /// `[alerts]`: sinks, routes, maintenance windows (see [`alerts`]).
    pub alerts: alerts::AlertsConfig,
    /// `[live]`: the live event streams.
    pub live: LiveConfig,
    /// `[rate_limit]`: token buckets per server and per client IP (the buckets live in `ingest::limits`).
    pub rate_limit: access::RateLimitConfig,
    /// `[directory]`: who may read the public directory.
    pub directory: access::DirectoryConfig,
    /// `[compat]`: routes for clients of other tools (Healthchecks, Uptime Kuma, Sprint-4).
    pub compat: compat::CompatConfig,
    /// `[log]`: the log format and the access log.
    pub log: LogConfig,
    /// `[metrics]`: what `GET /metrics` adds beyond the aggregate families.
    pub metrics: MetricsConfig,
}

/// `[metrics]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Per-server series (`vigil_server_up`, `vigil_server_confidence`,
    /// `vigil_server_uptime_ratio`, `vigil_server_last_seen_age_seconds`, label `server`):
    /// four series per registered server, and each scrape reads every server from the
    /// database, so leave it off past a few thousand servers. Default false. Reloadable.
    pub per_server: bool,
}

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`: one JSON object per line (`timestamp`, `level`, `target`,
    /// `fields` with `message` and the event's fields, `spans`). `VIGIL_LOG_FORMAT` overrides
    /// it. Read at start-up.
    pub format: LogFormat,
    /// One `vigil::access` event per HTTP request (method, route template, status,
    /// duration_ms, client address, request_id). Default false. Reloadable.
    pub access: bool,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Peers (addresses or CIDR networks) whose `X-Forwarded-For` header is believed. Default
    /// none: the client IP is the TCP peer.
    #[serde(
        deserialize_with = "access::deserialize_networks",
        serialize_with = "access::serialize_networks"
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Seconds a connection has to send a whole request head (also the most a kept-alive
    /// connection waits idle for its next request). Default 10. Read at start-up.
    pub header_read_timeout_seconds: u64,
    /// Seconds a request has to send its whole body, from the first read. Default 30. Read at
    /// start-up.
    pub body_read_timeout_seconds: u64,
    /// Open connections at most; past it a new one gets 503 `too_many_connections`. Default
    /// 4096. Read at start-up.
    pub max_connections: usize,
    /// Open connections per client address at most (the TCP peer; `trusted_proxies` are
    /// exempt). Default 256. Read at start-up.
    pub max_connections_per_ip: usize,
    /// Seconds open connections get to finish once shutdown begins. Default 10.
    pub shutdown_grace_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            trusted_proxies: Vec::new(),
            header_read_timeout_seconds: 10,
            body_read_timeout_seconds: 30,
            max_connections: 4096,
            max_connections_per_ip: 256,
            shutdown_grace_seconds: 10,
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Database URL. Default `sqlite://vigil.db` (created if missing); `postgres://…` selects
    /// the shared PostgreSQL store (several hosts, one database).
    pub url: String,
    /// Maximum number of pooled connections for reads.
    pub max_connections: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://vigil.db".into(),
            max_connections: 8,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for `/v1/admin/…`. `VIGIL_ADMIN_TOKEN` overrides it. When neither is set
    /// the admin API answers 503 `admin_disabled`.
    pub token: Option<String>,
}

/// `[trust]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Refuse (403) heartbeats from servers an operator has not verified. Default false.
    pub require_verified: bool,
    /// How far (seconds) a heartbeat's timestamp may be from the host clock. Default 300.
    pub max_clock_skew_seconds: u64,
    /// Refuse heartbeats without a `signature` member. Default true. When false, an unsigned
    /// heartbeat is accepted and stored as unsigned (a signature that is present must still
    /// verify).
    pub require_signature: bool,
    /// Who registers servers: `operator` (default; unknown servers get 404) or `open` (trust on
    /// first use: a first heartbeat signed by the `public_key` it carries registers the server,
    /// unverified).
    pub registration: access::Registration,
    /// Open registrations one client address may make per hour (0 = no limit). Default 10:
    /// each registers a server row and its key forever, and keys cost nothing to make.
    pub registrations_per_ip_per_hour: u32,
    /// Open registrations the host accepts per hour from all addresses together (0 = no
    /// limit). Default 600: bounds what a spread-out flood of fresh keys can store.
    pub registrations_per_hour: u32,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            require_verified: false,
            max_clock_skew_seconds: 300,
            require_signature: true,
            registration: access::Registration::Operator,
            registrations_per_ip_per_hour: 10,
            registrations_per_hour: 600,
        }
    }
}

/// `[policy]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// A policy component (`.wasm`) to run instead of the bundled default policy.
    pub component: Option<std::path::PathBuf>,
    /// Parameters passed to the policy (numbers, strings, booleans). Names the policy does not
    /// declare are refused at start-up.
    pub params: BTreeMap<String, toml::Value>,
    /// Fuel per evaluation (a deterministic instruction budget). Default 10,000,000.
    pub fuel: u64,
    /// Linear memory cap per evaluation, in bytes. Default 16 MiB.
    pub memory_bytes: usize,
    /// Largest state a policy may return, in bytes. Default 64 KiB.
    pub max_state_bytes: usize,
    /// Largest assessment (scores, badges, signals) a policy may return, in bytes. Default 64 KiB.
    pub max_output_bytes: usize,
    /// A folder watched for `NAME-VERSION.wasm` (+ optional `NAME-VERSION.wasm.sig`): a file
    /// dropped there is validated, stored and activated (unless `active` pins a version).
    pub dir: Option<std::path::PathBuf>,
    /// Pins the active version, `"name@version"` (a stored one). Editing it reloads.
    pub active: Option<String>,
    /// Refuse, on every path, a component without a signature by one of `trusted_keys`.
    pub require_signed: bool,
    /// Author public keys (base64 raw ed25519) whose signatures are trusted.
    pub trusted_keys: Vec<String>,
    /// A freshly activated version is on probation for its first this-many evaluations
    /// (0 turns automatic rollback off). Default 20.
    pub probation_evaluations: u64,
    /// The share (0–1) of its probation evaluations a new version may fail before the host
    /// rolls back to the previous version by itself. Default 0.5.
    pub max_failure_share: f64,
    /// Evaluations one guest instance serves before it is replaced (default 4096; an
    /// `evaluate-run` counts every event it folds). Instances are always replaced after a
    /// failure. 1 gives every evaluation a fresh instance, so even a policy that keeps global
    /// state between calls stays deterministic, at ≈ 30 µs more per call: a fresh instance
    /// costs its instantiation, `configure` and the page faults of the guest memory it
    /// touches again (≈ 90 µs for a 256-event run).
    pub reuse_instance_calls: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            component: None,
            params: BTreeMap::new(),
            fuel: 10_000_000,
            memory_bytes: 16 << 20,
            max_state_bytes: 64 << 10,
            max_output_bytes: 64 << 10,
            dir: None,
            active: None,
            require_signed: false,
            trusted_keys: Vec::new(),
            probation_evaluations: 20,
            max_failure_share: 0.5,
            reuse_instance_calls: 4096,
        }
    }
}

/// `[ingest]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest number of events one group-commit batch holds. Default 512.
    pub max_batch: usize,
    /// Capacity of the queue in front of the writer; a full queue answers 503. Default 16384.
    pub queue_capacity: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            queue_capacity: 16_384,
        }
    }
}

/// The shortest bootstrap admin token accepted (32 bytes: 256 bits when random bytes, 128
/// when hex).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 32;

impl Config {
    /// Parses a configuration from TOML text, then applies environment overrides and validates.
    /// Environment overrides: `VIGIL_SECTION__KEY` (see [`layers`] for the mapping).
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        layers::load(text, std::env::vars())
    }

    /// Reads and parses a configuration file. A missing file is an error (say what to do);
    /// use [`Config::default`] to run without one.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        self.alerts.validate()?;
        if let Some(token) = self.admin.token.as_deref().filter(|t| !t.is_empty()) {
            // The bootstrap token is a full admin credential: short ones fall to guessing.
            anyhow::ensure!(
                token.len() >= MIN_ADMIN_TOKEN_BYTES,
                "[admin] token (or VIGIL_ADMIN_TOKEN) must be at least {MIN_ADMIN_TOKEN_BYTES} \
                 bytes (it is {}); generate one with `openssl rand -hex 32`",
                token.len()
            );
        }
        self.directory.validate()?;
        anyhow::ensure!(
            self.ingest.max_batch >= 1,
            "[ingest] max_batch must be at least 1"
        );
        anyhow::ensure!(
            self.ingest.queue_capacity >= 1,
            "[ingest] queue_capacity must be at least 1"
        );
        anyhow::ensure!(
            self.policy.fuel >= 1000,
            "[policy] fuel must be at least 1000"
        );
        anyhow::ensure!(
            self.policy.memory_bytes >= 1 << 20,
            "[policy] memory_bytes must be at least 1 MiB"
        );
        anyhow::ensure!(
            self.trust.max_clock_skew_seconds <= 7 * 24 * 3600,
            "[trust] max_clock_skew_seconds must be at most a week"
        );
        anyhow::ensure!(
            self.storage.url.starts_with("sqlite:") || is_postgres_url(&self.storage.url),
            "[storage] url: must be sqlite://… or postgres://… (got {:?})",
            self.storage.url
        );
        self.rate_limit.validate()?;
        let server = &self.server;
        anyhow::ensure!(
            server.header_read_timeout_seconds >= 1
                && server.body_read_timeout_seconds >= 1
                && server.max_connections >= 1
                && server.max_connections_per_ip >= 1,
            "[server] header_read_timeout_seconds, body_read_timeout_seconds, max_connections and \
             max_connections_per_ip must be at least 1"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.policy.max_failure_share),
            "[policy] max_failure_share must be from 0 to 1"
        );
        if let Some(active) = &self.policy.active {
            anyhow::ensure!(
                active
                    .split_once('@')
                    .is_some_and(|(n, v)| !n.is_empty() && !v.is_empty()),
                "[policy] active must be \"name@version\" (got {active:?})"
            );
        }
        for key in &self.policy.trusted_keys {
            crate::crypto::PublicKey::from_base64(key)
                .map_err(|e| anyhow::anyhow!("[policy] trusted_keys: {key:?}: {e}"))?;
        }
        for (name, value) in &self.policy.params {
            anyhow::ensure!(
                matches!(
                    value,
                    toml::Value::Integer(_)
                        | toml::Value::Float(_)
                        | toml::Value::String(_)
                        | toml::Value::Boolean(_)
                ),
                "[policy] params.{name}: must be a number, string or boolean"
            );
        }
        Ok(())
    }
}

/// The configuration in force, shared by every handler and task.
///
/// A `watch` channel because readers want the latest value without locking, and tasks that
/// depend on a key (policy activation, limits) can await changes. Whoever reloads the file
/// calls [`ConfigHandle::replace`]; readers call [`ConfigHandle::current`] per request.
#[derive(Debug, Clone)]
pub struct ConfigHandle {
    tx: std::sync::Arc<tokio::sync::watch::Sender<std::sync::Arc<Config>>>,
    reload: std::sync::Arc<ReloadState>,
}

/// How the last reload went, for `vigil_config_last_reload_*` (atomics: written by the reload
/// task, read at scrape time).
#[derive(Debug)]
struct ReloadState {
    ok: std::sync::atomic::AtomicBool,
    last_success_unix_seconds: std::sync::atomic::AtomicI64,
}

/// Wall-clock Unix seconds (a metric timestamp, not a domain time: no injected clock).
fn unix_now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl ConfigHandle {
    /// A handle holding `config`.
    pub fn new(config: Config) -> Self {
        let (tx, _) = tokio::sync::watch::channel(std::sync::Arc::new(config));
        Self {
            tx: std::sync::Arc::new(tx),
            reload: std::sync::Arc::new(ReloadState {
                ok: std::sync::atomic::AtomicBool::new(true),
                last_success_unix_seconds: std::sync::atomic::AtomicI64::new(unix_now_seconds()),
            }),
        }
    }

    /// Records a reload that was refused: the configuration in force stays.
    pub fn reload_refused(&self) {
        self.reload
            .ok
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the last reload was put in force, and the Unix seconds of the last that was.
    pub fn reload_status(&self) -> (bool, i64) {
        (
            self.reload.ok.load(std::sync::atomic::Ordering::Relaxed),
            self.reload
                .last_success_unix_seconds
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The configuration in force now.
    pub fn current(&self) -> std::sync::Arc<Config> {
        self.tx.borrow().clone()
    }

    /// Puts a new (already validated) configuration in force and wakes subscribers.
    pub fn replace(&self, config: Config) {
        self.tx.send_replace(std::sync::Arc::new(config));
        self.reload
            .ok
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.reload
            .last_success_unix_seconds
            .store(unix_now_seconds(), std::sync::atomic::Ordering::Relaxed);
    }

    /// A receiver that sees every later replacement.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<std::sync::Arc<Config>> {
        self.tx.subscribe()
    }
}

/// `[live]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Events kept for a slow subscriber before it is dropped (it may resume with
    /// `Last-Event-ID`). Default 1024.
    pub buffer: usize,
    /// Open `GET /v1/events` streams at most; one more is answered 503 `too_many_subscribers`.
    /// Default 256.
    pub max_event_streams: usize,
    /// Open `GET /v1/servers/{id}/observe` WebSockets at most (all servers together); one more
    /// is answered 503 `too_many_subscribers`. Default 256.
    pub max_observers: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            buffer: 1024,
            max_event_streams: 256,
            max_observers: 256,
        }
    }
}

/// Whether `url` names a PostgreSQL database (`[storage] url`); anything else is SQLite.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::from_toml("").expect("empty config is valid");
        assert_eq!(c.storage.url, "sqlite://vigil.db");
        assert_eq!(c.trust.max_clock_skew_seconds, 300);
        assert!(!c.trust.require_verified);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[trust]\nrequire_verifed = true\n").unwrap_err();
        assert!(format!("{err:#}").contains("require_verifed"), "{err:#}");
        let err = Config::from_toml("[trusts]\n").unwrap_err();
        assert!(format!("{err:#}").contains("trusts"), "{err:#}");
    }

    #[test]
    fn policy_params_accept_scalars_only() {
        let c = Config::from_toml("[policy.params]\ngrace_seconds = 60\nname = \"x\"\n")
            .expect("scalars are fine");
        assert_eq!(c.policy.params.len(), 2);
        assert!(Config::from_toml("[policy.params]\nbad = [1, 2]\n").is_err());
    }
}

//! Row types: the plain data every storage operation takes or returns, and nothing else.
//!
//! Backend-neutral (no SQL here, no pool): the engine, the API and the operations rooms build
//! and read these; `reads.rs`, `ops/` and the backends turn them into statements. History rows
//! (heartbeats, rejections, transitions, key history, activations) are appended, never edited.
//!
//! Longer than most files, but declarative: plain structs and enums with a doc line per field,
//! grouped by table (snapshot and batch, reads, policies, trust, commands, alert outbox).

use std::collections::BTreeMap;

use serde::Serialize;

use super::StoreError;

/// A snapshot's extra named scores, sorted by name, each name once.
///
/// One boxed slice rather than a `BTreeMap` (whose first node alone takes ≈ 370 bytes): the
/// engine keeps one per server in memory. Serialises as a JSON object, like the map it replaces.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scores(Box<[(Box<str>, f64)]>);

impl Scores {
    /// The scores in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        self.0.iter().map(|(name, value)| (&**name, *value))
    }

    /// The score called `name`, if the policy returned one.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| self.0[i].1)
    }

    /// How many scores there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scores as a map (for API answers).
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        self.iter().map(|(n, v)| (n.to_owned(), v)).collect()
    }
}

impl From<BTreeMap<String, f64>> for Scores {
    fn from(map: BTreeMap<String, f64>) -> Self {
        // A map iterates in key order with unique keys: the slice is sorted as `get` needs.
        Self(
            map.into_iter()
                .map(|(n, v)| (n.into_boxed_str(), v))
                .collect(),
        )
    }
}

impl Serialize for Scores {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Scores {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, f64>::deserialize(deserializer).map(Self::from)
    }
}

/// Which policy version computed a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct PolicyRef {
    /// The policy's name from `describe()`.
    pub name: String,
    /// Its semantic version.
    pub version: String,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
}

/// A server's identity, as registered by an operator.
#[derive(Debug, Clone, PartialEq)]
pub struct NewServer {
    /// The server's identifier.
    pub server_id: String,
    /// Base64 raw ed25519 public key.
    pub public_key: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Optional human-friendly name.
    pub display_name: Option<String>,
    /// Optional cluster the server belongs to.
    pub cluster_id: Option<String>,
    /// Registration time, ms since the epoch.
    pub registered_at_ms: i64,
    /// Who registered it (`admin`, `open-registration`, ...).
    pub added_by: String,
}

/// The derived state of one server: everything in `servers` the engine writes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// `online`, `offline` or `unknown`.
    pub status: String,
    /// `green`, `yellow` or `red`.
    pub confidence: String,
    /// 0–100.
    pub uptime_percent: f64,
    /// 0–100.
    pub quality_score: f64,
    /// Extra named scores.
    pub scores: Scores,
    /// Badges.
    pub badges: Vec<String>,
    /// Host receive time of the last accepted heartbeat.
    pub last_seen_at_ms: Option<i64>,
    /// Agent timestamp of the last accepted heartbeat (replay rule).
    pub last_sent_at_ms: Option<i64>,
    /// Signature of the last accepted heartbeat (idempotent repeats).
    pub last_signature: Option<String>,
    /// Last reported players.
    pub players_current: Option<u32>,
    /// Last reported capacity.
    pub players_capacity: Option<u32>,
    /// Last reported map.
    pub map_name: Option<String>,
    /// Last reported agent version.
    pub agent_version: Option<String>,
    /// Events folded so far (heartbeats and rejections); the next event gets `event_seq + 1`.
    pub event_seq: i64,
    /// `now-ms` of the last evaluation.
    pub evaluated_at_ms: Option<i64>,
    /// The policy that computed this snapshot.
    pub policy: Option<std::sync::Arc<PolicyRef>>,
    /// The policy's opaque state.
    pub policy_state: Option<Vec<u8>>,
    /// When the engine must send a tick.
    pub next_check_at_ms: Option<i64>,
    /// Evaluations of this server that failed (trap, timeout, invalid output).
    pub policy_errors: i64,
    /// The rollup's open hour and day (`None` before the first evaluation).
    pub rollup: Option<OpenRollup>,
}

impl Snapshot {
    /// The snapshot of a server never seen.
    pub fn unseen() -> Self {
        Self {
            status: "unknown".into(),
            confidence: "yellow".into(),
            ..Self::default()
        }
    }
}

/// One row of `servers`: identity plus snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRecord {
    /// The server's identifier.
    pub server_id: String,
    /// Optional human-friendly name.
    pub display_name: Option<String>,
    /// Optional cluster.
    pub cluster_id: Option<String>,
    /// Base64 raw ed25519 public key of `key_version`.
    pub public_key: String,
    /// Current key version.
    pub key_version: u32,
    /// Set by an operator only.
    pub is_verified: bool,
    /// Registration time.
    pub registered_at_ms: i64,
    /// What operators set: labels, pause, retirement (never derived, never folded).
    pub admin: ServerAdmin,
    /// Derived state.
    pub snapshot: Snapshot,
}

/// What operators set on a server besides its identity (`servers.labels`, `paused_at_ms`,
/// `retired_at_ms`). A policy never sees it: pausing changes what the host does with the
/// assessment (no alerts, no deadlines, status shown as `paused`), not the assessment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerAdmin {
    /// Free labels, name → text.
    pub labels: BTreeMap<String, String>,
    /// Set while the server is paused.
    pub paused_at_ms: Option<i64>,
    /// Set once the server is retired (hidden from the directory and rankings, for good).
    pub retired_at_ms: Option<i64>,
    /// When the operator expects the server to report (`servers.schedule`); unlike the other
    /// fields, the policy sees it (in its facts).
    pub schedule: Option<StoredSchedule>,
}

/// A server's schedule as stored and as the admin API takes and shows it: exactly one of
/// `period_seconds` and `cron` (with `tz`), a grace, and optionally the longest run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoredSchedule {
    /// Every this many seconds (1 to 2,592,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub period_seconds: Option<u32>,
    /// A five-field cron expression (minute hour day month weekday).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 128)]
    pub cron: Option<String>,
    /// The IANA time zone `cron` is read in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// How late a report may be, seconds (at most 2,592,000).
    #[schema(maximum = 2_592_000)]
    pub grace_seconds: u32,
    /// The longest a run may take, seconds (1 to 2,592,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub max_run_seconds: Option<u32>,
}

impl ServerAdmin {
    /// Paused or retired: the host raises no alert and keeps no deadline for it.
    pub fn is_quiet(&self) -> bool {
        self.paused_at_ms.is_some() || self.retired_at_ms.is_some()
    }
}

/// An operator's change to a server: its new identity fields and [`ServerAdmin`] as a whole,
/// written with the audit row that records it, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerAdminUpdate {
    /// The server.
    pub server_id: String,
    /// New display name.
    pub display_name: Option<String>,
    /// New cluster.
    pub cluster_id: Option<String>,
    /// New operator fields.
    pub admin: ServerAdmin,
    /// The audit row appended with it.
    pub audit: AuditRow,
}

/// One operator action on a server, appended to `server_audit`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    /// The server.
    pub server_id: String,
    /// When.
    pub at_ms: i64,
    /// `edit`, `pause`, `resume` or `retire`.
    pub action: String,
    /// Who: `admin` (the bootstrap token) or `key:<name>`.
    pub actor: String,
    /// A JSON object: what changed.
    pub detail: String,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredAudit {
    /// Row id (monotonic).
    pub id: i64,
    /// The row as appended.
    #[serde(flatten)]
    pub row: AuditRow,
}

/// A maintenance window set through the admin API (`maintenance_windows`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaintenanceRow {
    /// Row id (0 before it is stored).
    pub id: i64,
    /// The server it mutes (exactly one of `server_id` and `cluster_id`).
    pub server_id: Option<String>,
    /// The cluster it mutes.
    pub cluster_id: Option<String>,
    /// Start, inclusive.
    pub starts_at_ms: i64,
    /// End, exclusive.
    pub ends_at_ms: i64,
    /// Why.
    pub reason: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at_ms: i64,
    /// Set once when cancelled.
    pub cancelled_at_ms: Option<i64>,
    /// Who cancelled it.
    pub cancelled_by: Option<String>,
}

impl MaintenanceRow {
    /// Whether this window mutes an alert of `server_id` in `cluster_id` raised at `at_ms`.
    pub fn mutes(&self, server_id: &str, cluster_id: Option<&str>, at_ms: i64) -> bool {
        let target = self.server_id.as_deref() == Some(server_id)
            || (self.cluster_id.is_some() && self.cluster_id.as_deref() == cluster_id);
        target
            && self.cancelled_at_ms.is_none()
            && self.starts_at_ms <= at_ms
            && at_ms < self.ends_at_ms
    }
}

/// An accepted heartbeat to append.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatRow {
    /// The server.
    pub server_id: String,
    /// The server's event sequence number.
    pub seq: i64,
    /// Host receive time.
    pub received_at_ms: i64,
    /// Agent timestamp.
    pub sent_at_ms: i64,
    /// Key version it was signed with.
    pub key_version: u32,
    /// Base64 signature.
    pub signature: String,
    /// The body exactly as received (JSON text); for a compat route, the v1 form the policy
    /// folded (what the client sent is [`HeartbeatRow::original_body`]).
    pub body: String,
    /// The policy that folded it.
    pub policy_digest: String,
    /// How the heartbeat was authenticated.
    pub auth: AuthKind,
    /// A compat client's request body exactly as sent; `None` for the v1 routes.
    pub original_body: Option<String>,
}

/// How a heartbeat proved where it came from (stored with it, shown in the directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// An ed25519 signature by the server's key (the v1 routes).
    Signature,
    /// A per-server ingest token (a Healthchecks ping UUID, an Uptime Kuma push token, a
    /// HomelabCmd agent token).
    Token,
    /// A shared admin-issued key with the `ingest` scope (HomelabCmd's `X-API-Key`).
    ApiKey,
    /// Nothing but where it came from (an unsigned v1 body; a PAP agent on an allowed network).
    Network,
}

impl AuthKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Signature => "signature",
            AuthKind::Token => "token",
            AuthKind::ApiKey => "api_key",
            AuthKind::Network => "network",
        }
    }

    /// The kind a stored row names; `None` (rows stored before migration 0008) means
    /// `signature` when the row has a signature, else `network`.
    pub fn parse(text: Option<&str>, signed: bool) -> Result<Self, StoreError> {
        match text {
            Some("signature") => Ok(AuthKind::Signature),
            Some("token") => Ok(AuthKind::Token),
            Some("api_key") => Ok(AuthKind::ApiKey),
            Some("network") => Ok(AuthKind::Network),
            None if signed => Ok(AuthKind::Signature),
            None => Ok(AuthKind::Network),
            Some(other) => Err(StoreError::Corrupt(format!("heartbeat auth {other:?}"))),
        }
    }
}

/// A refused request to append.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectionRow {
    /// Host receive time.
    pub received_at_ms: i64,
    /// Stable problem code.
    pub code: String,
    /// HTTP status answered.
    pub http_status: u16,
    /// Human-readable detail.
    pub detail: String,
    /// The claimed server, if readable.
    pub claimed_server_id: Option<String>,
    /// The server's event sequence number when folded into its policy.
    pub seq: Option<i64>,
    /// Client address.
    pub source_ip: Option<String>,
    /// `sha256:<hex>` of the body.
    pub body_sha256: Option<String>,
}

/// A change of status or confidence to append.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionRow {
    /// The server.
    pub server_id: String,
    /// When (the evaluation's now-ms).
    pub at_ms: i64,
    /// `heartbeat`, `rejected` or `tick`.
    pub cause: String,
    /// Previous status.
    pub from_status: String,
    /// New status.
    pub to_status: String,
    /// Previous confidence.
    pub from_confidence: String,
    /// New confidence.
    pub to_confidence: String,
    /// The policy that decided it.
    pub policy_digest: String,
}

/// Which bucket a rollup row sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RollupSpan {
    /// One UTC hour.
    Hour,
    /// One UTC day.
    Day,
}

impl RollupSpan {
    /// Its length in milliseconds.
    pub const fn ms(self) -> i64 {
        match self {
            RollupSpan::Hour => 3_600_000,
            RollupSpan::Day => 86_400_000,
        }
    }

    /// As stored (`hour`, `day`).
    pub const fn as_str(self) -> &'static str {
        match self {
            RollupSpan::Hour => "hour",
            RollupSpan::Day => "day",
        }
    }

    /// From its stored text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "hour" => Some(RollupSpan::Hour),
            "day" => Some(RollupSpan::Day),
            _ => None,
        }
    }
}

/// What one rollup bucket adds up. Integers only, so every backend and every replay computes
/// exactly the same sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct RollupSums {
    /// Milliseconds the policy's status was known (anything but `unknown`).
    pub observed_ms: i64,
    /// Milliseconds of those it was `online`.
    pub online_ms: i64,
    /// Σ round(quality × 100) × ms over the observed time.
    pub quality_sum: i64,
    /// Accepted heartbeats folded.
    pub beats: i64,
    /// Refused requests folded.
    pub rejections: i64,
}

impl RollupSums {
    /// Adds `other` in (saturating: a sum never wraps).
    pub fn add(&mut self, other: &RollupSums) {
        self.observed_ms = self.observed_ms.saturating_add(other.observed_ms);
        self.online_ms = self.online_ms.saturating_add(other.online_ms);
        self.quality_sum = self.quality_sum.saturating_add(other.quality_sum);
        self.beats = self.beats.saturating_add(other.beats);
        self.rejections = self.rejections.saturating_add(other.rejections);
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        *self == RollupSums::default()
    }

    /// Uptime in percent of the observed time (`None` when nothing was observed).
    pub fn uptime_percent(&self) -> Option<f64> {
        (self.observed_ms > 0).then(|| self.online_ms as f64 * 100.0 / self.observed_ms as f64)
    }

    /// Mean quality over the observed time (`None` when nothing was observed).
    pub fn quality(&self) -> Option<f64> {
        (self.observed_ms > 0).then(|| self.quality_sum as f64 / self.observed_ms as f64 / 100.0)
    }
}

/// A closed hour or day of a server's rollup (`rollups`, append-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollupRow {
    /// The server.
    pub server_id: String,
    /// Hour or day.
    pub span: RollupSpan,
    /// The bucket's UTC start (inclusive).
    pub start_ms: i64,
    /// What it adds up.
    pub sums: RollupSums,
    /// The policy of the evaluation that closed it.
    pub policy_digest: String,
}

/// The rollup's open buckets, kept in the snapshot (`servers.rollup`) until an evaluation at
/// or after their end closes them into [`RollupRow`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OpenRollup {
    /// Counted up to here (the last evaluation's now-ms).
    pub at_ms: i64,
    /// The open hour's UTC start.
    pub hour_start_ms: i64,
    /// The open hour so far.
    pub hour: RollupSums,
    /// The closed hours of the open day (the open hour not included).
    pub day: RollupSums,
}

/// The snapshot of one server to overwrite.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    /// The server.
    pub server_id: String,
    /// Its new derived state.
    pub snapshot: Snapshot,
}

/// Everything one group commit writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// Accepted heartbeats.
    pub heartbeats: Vec<HeartbeatRow>,
    /// Refused requests.
    pub rejections: Vec<RejectionRow>,
    /// Status/confidence transitions.
    pub transitions: Vec<TransitionRow>,
    /// Latest snapshot of every server the batch touched (one per server).
    pub snapshots: Vec<SnapshotRow>,
    /// Alerts raised by this batch's transitions and signals (the durable outbox).
    pub alerts: Vec<AlertRow>,
    /// Rollup buckets this batch's evaluations closed.
    pub rollups: Vec<RollupRow>,
}

/// An alert to append to the outbox, in the same transaction as its cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    /// The server.
    pub server_id: String,
    /// Its cluster, if any (routes match on it).
    pub cluster_id: Option<String>,
    /// `server_offline`, `server_online`, `confidence_red`, `emergency_mode`, `restart_detected`.
    pub kind: String,
    /// `critical`, `warning`, `info` or `recovery`.
    pub severity: String,
    /// When the cause happened (the evaluation's now-ms).
    pub at_ms: i64,
    /// One human-readable line.
    pub summary: String,
    /// A JSON object with the cause's details.
    pub details: String,
    /// The policy that decided it.
    pub policy_digest: String,
}

/// What a commit assigned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitReceipt {
    /// The ids of `WriteBatch::transitions`, in the same order.
    pub transition_ids: Vec<i64>,
}

impl WriteBatch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.heartbeats.is_empty()
            && self.rejections.is_empty()
            && self.transitions.is_empty()
            && self.snapshots.is_empty()
            && self.alerts.is_empty()
            && self.rollups.is_empty()
    }
}

/// A stored heartbeat, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHeartbeat {
    /// Row id.
    pub id: i64,
    /// The row as appended.
    pub row: HeartbeatRow,
}

/// A stored transition, as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredTransition {
    /// Row id (monotonic).
    pub id: i64,
    /// The row as appended.
    #[serde(flatten)]
    pub row: TransitionRow,
}

/// A stored transition with the server's cluster (for filtered streams).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterTransition {
    /// The transition.
    #[serde(flatten)]
    pub transition: StoredTransition,
    /// The server's cluster.
    pub cluster_id: Option<String>,
}

/// One folded event of a server's history, in sequence order (for replay).
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryEvent {
    /// An accepted heartbeat.
    Heartbeat(HeartbeatRow),
    /// A refused request that was folded into the server's policy.
    Rejected {
        /// The server's event sequence number.
        seq: i64,
        /// Host receive time.
        received_at_ms: i64,
        /// Stable problem code.
        code: String,
    },
    /// No host ran from `down_at_ms` to `up_at_ms` (`host_runs`): folded as the host's
    /// restart, after every event received before `up_at_ms`.
    HostResumed {
        /// The sequence number of the server's event before the gap (it takes none itself).
        after_seq: i64,
        /// When a host was last known alive.
        down_at_ms: i64,
        /// When a host came back.
        up_at_ms: i64,
    },
}

impl HistoryEvent {
    /// The event's sequence number (a host gap's is that of the event before it).
    pub fn seq(&self) -> i64 {
        match self {
            HistoryEvent::Heartbeat(h) => h.seq,
            HistoryEvent::Rejected { seq, .. } => *seq,
            HistoryEvent::HostResumed { after_seq, .. } => *after_seq,
        }
    }

    /// When the host received it (a host gap: when a host came back).
    pub fn at_ms(&self) -> i64 {
        match self {
            HistoryEvent::Heartbeat(h) => h.received_at_ms,
            HistoryEvent::Rejected { received_at_ms, .. } => *received_at_ms,
            HistoryEvent::HostResumed { up_at_ms, .. } => *up_at_ms,
        }
    }
}

/// Sort orders of the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSort {
    /// Highest quality first.
    Quality,
    /// Highest uptime first.
    Uptime,
    /// Most players first.
    Players,
    /// Most recently seen first.
    LastSeen,
    /// By id.
    Id,
}

/// A directory query.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerQuery {
    /// Only this status.
    pub status: Option<String>,
    /// Only this confidence.
    pub confidence: Option<String>,
    /// Only verified (true) or unverified (false) servers.
    pub verified: Option<bool>,
    /// Only this cluster.
    pub cluster: Option<String>,
    /// Only paused (true) or unpaused (false) servers. Retired servers are never listed.
    pub paused: Option<bool>,
    /// Only servers whose id or display name contains this text (case-insensitive).
    pub search: Option<String>,
    /// Order.
    pub sort: ServerSort,
    /// Page size.
    pub limit: u32,
    /// Keyset cursor: the sort value and id of the last row of the previous page.
    pub after: Option<(f64, String)>,
}

/// A policy component stored content-addressed.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRecord {
    /// `sha256:<hex>`.
    pub digest: String,
    /// From `describe()`.
    pub name: String,
    /// From `describe()`.
    pub version: String,
    /// The component bytes.
    pub component: Vec<u8>,
    /// Who stored it.
    pub uploaded_by: String,
    /// When.
    pub uploaded_at_ms: i64,
    /// Author key fingerprint, when signed.
    pub signer: Option<String>,
    /// The detached author signature (base64), when signed.
    pub signature: Option<String>,
}

/// A stored policy version without its bytes (for listings).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySummary {
    /// `sha256:<hex>`.
    pub digest: String,
    /// From `describe()`.
    pub name: String,
    /// From `describe()`.
    pub version: String,
    /// Component size, bytes.
    pub size_bytes: i64,
    /// Who stored it.
    pub uploaded_by: String,
    /// When.
    pub uploaded_at_ms: i64,
    /// Author key fingerprint, when signed.
    pub signer: Option<String>,
}

/// An appended activation, as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredActivation {
    /// Row id (monotonic).
    pub id: i64,
    /// When.
    pub at_ms: i64,
    /// Who.
    pub who: String,
    /// Previous active digest.
    pub from_digest: Option<String>,
    /// New active digest.
    pub to_digest: String,
    /// Why.
    pub reason: String,
}

/// An activation to append.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationRow {
    /// When.
    pub at_ms: i64,
    /// Who.
    pub who: String,
    /// Previous active digest.
    pub from_digest: Option<String>,
    /// New active digest.
    pub to_digest: String,
    /// Why.
    pub reason: String,
}

/// A change another host made that this host's caches must pick up (shared backends only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeNotice {
    /// A server's row changed outside a batch: registered, verified, key rotated.
    Server(String),
    /// Notifications may have been missed (reconnect) or the periodic check is due: re-read
    /// every server (and check which policy version is active).
    Resync,
    /// A policy version was activated (or rolled back to) on another host.
    Policy(String),
}

// --- Trust: key history and rotation, the rejection audit listing, admin API keys. ---

/// A key rotation to apply: `server_keys` gets `expected_version + 1`, the server's current key
/// moves to it, only if the current version is still `expected_version`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRotation {
    /// The server.
    pub server_id: String,
    /// The version the caller saw (compare-and-swap against races and replays).
    pub expected_version: u32,
    /// Base64 raw ed25519 key of the new version.
    pub public_key: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// When.
    pub added_at_ms: i64,
    /// Who (`admin`, `admin-key:<name>`, `agent`).
    pub added_by: String,
}

/// One row of a server's key history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerKeyRow {
    /// The version.
    pub key_version: u32,
    /// Base64 raw ed25519 key.
    pub public_key: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// When it was added, ms since the epoch.
    pub added_at_ms: i64,
    /// Who added it.
    pub added_by: String,
}

/// A page of the rejection audit trail, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectionQuery {
    /// Only rejections claiming this server.
    pub server_id: Option<String>,
    /// Only this code.
    pub code: Option<String>,
    /// Only rejections received at or after this time, ms.
    pub since_ms: Option<i64>,
    /// Only rows with `id < before_id` (keyset cursor).
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: u32,
}

/// One row of `rejections`, as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredRejection {
    /// Row id (monotonic; the cursor).
    pub id: i64,
    /// Host receive time, ms.
    pub received_at_ms: i64,
    /// Stable problem code.
    pub code: String,
    /// HTTP status answered.
    pub http_status: u16,
    /// Detail answered.
    pub detail: String,
    /// The server the request claimed to be.
    pub claimed_server_id: Option<String>,
    /// Set when folded into a known server's policy.
    pub seq: Option<i64>,
    /// Client address.
    pub source_ip: Option<String>,
    /// `sha256:<hex>` of the body.
    pub body_sha256: Option<String>,
}

/// What an admin API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every admin route.
    Admin,
    /// Read-only routes: key history, the rejection audit trail, the directory.
    Read,
    /// Heartbeats only: a shared HomelabCmd `X-API-Key`; no admin or read route.
    Ingest,
}

impl Scope {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Read => "read",
            Scope::Ingest => "ingest",
        }
    }

    /// The scope of a stored name.
    pub(super) fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "admin" => Ok(Scope::Admin),
            "read" => Ok(Scope::Read),
            "ingest" => Ok(Scope::Ingest),
            other => Err(StoreError::Corrupt(format!("admin key scope {other:?}"))),
        }
    }
}

/// One stored admin API key (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminKey {
    /// Unique name.
    pub name: String,
    /// Its scope.
    pub scope: Scope,
    /// The token's first characters.
    pub prefix: String,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
    /// Revoked, ms since the epoch.
    pub revoked_at_ms: Option<i64>,
    /// Hex SHA-256 of the token.
    #[serde(skip)]
    pub key_sha256: String,
}

/// An admin API key to store: only the token's hash and first characters, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAdminKey {
    /// Unique name (`Conflict` if taken).
    pub name: String,
    /// Its scope.
    pub scope: Scope,
    /// Hex SHA-256 of the token.
    pub key_sha256: String,
    /// The token's first characters.
    pub prefix: String,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
}

// --- Per-server ingest tokens (compat clients that cannot sign). ---

/// What an ingest token is for: which compat route family accepts it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// A Healthchecks ping UUID (`/ping/{uuid}`).
    Ping,
    /// An Uptime Kuma push token (`/api/push/{token}`).
    Push,
    /// A HomelabCmd per-agent token (`X-Agent-Token`).
    Agent,
}

impl TokenKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Ping => "ping",
            TokenKind::Push => "push",
            TokenKind::Agent => "agent",
        }
    }

    /// The kind of a stored name.
    pub(super) fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "ping" => Ok(TokenKind::Ping),
            "push" => Ok(TokenKind::Push),
            "agent" => Ok(TokenKind::Agent),
            other => Err(StoreError::Corrupt(format!("ingest token kind {other:?}"))),
        }
    }
}

/// One stored ingest token (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestToken {
    /// The token's row id (what revocation names).
    pub id: i64,
    /// The server it speaks for.
    pub server_id: String,
    /// Which route family accepts it.
    pub kind: TokenKind,
    /// The token's first characters.
    pub prefix: String,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
    /// Who minted it (`admin` or `key:<name>`).
    pub created_by: String,
    /// Revoked, ms since the epoch.
    pub revoked_at_ms: Option<i64>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

/// A queued command as listed for operators (no envelope, no result body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandSummary {
    /// Its id.
    pub command_id: String,
    /// What it asks.
    pub command: String,
    /// Issued, ms since the epoch.
    pub issued_at_ms: i64,
    /// Expires, ms since the epoch.
    pub expires_at_ms: i64,
    /// Who queued it.
    pub created_by: String,
    /// First delivered, ms since the epoch.
    pub delivered_at_ms: Option<i64>,
    /// Deliveries so far.
    pub delivery_count: i64,
    /// Answered, ms since the epoch.
    pub result_at_ms: Option<i64>,
    /// The agent's answer status.
    pub result_status: Option<String>,
}

/// An ingest token to store: only its hash and first characters, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIngestToken {
    /// The server it speaks for.
    pub server_id: String,
    /// Which route family accepts it.
    pub kind: TokenKind,
    /// Hex SHA-256 of the token.
    pub token_sha256: String,
    /// The token's first characters.
    pub prefix: String,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
    /// Who minted it.
    pub created_by: String,
}

// --- The host's command-signing key and pending commands. ---

/// The host key to keep if the database has none yet (the first host to start wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyRow {
    /// Base64 ed25519 secret key.
    pub secret_key: String,
    /// Base64 raw ed25519 public key.
    pub public_key: String,
    /// Generated, ms since the epoch.
    pub created_at_ms: i64,
}

/// A signed command to queue for a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    /// Random hex id.
    pub command_id: String,
    /// The server it is for.
    pub server_id: String,
    /// The command's name.
    pub command: String,
    /// The signed envelope as JSON text (delivered as is).
    pub envelope: String,
    /// Issued, ms since the epoch.
    pub issued_at_ms: i64,
    /// Never delivered at or after this time, ms.
    pub expires_at_ms: i64,
    /// Who queued it (logged with the `queued` step).
    pub created_by: String,
}

/// A command marked delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredCommand {
    /// Its id.
    pub command_id: String,
    /// The signed envelope as JSON text.
    pub envelope: String,
    /// Issued, ms since the epoch.
    pub issued_at_ms: i64,
}

/// A command result to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResultRow {
    /// The server answering.
    pub server_id: String,
    /// The command it answers.
    pub command_id: String,
    /// The status it reports.
    pub status: String,
    /// The verified result body as JSON text.
    pub body: String,
    /// Received, ms since the epoch.
    pub at_ms: i64,
}

/// Whether a command result was recorded, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultRecorded {
    /// Recorded now (and logged).
    Recorded,
    /// No such command for that server.
    Unknown,
    /// The command was never delivered.
    NotDelivered,
    /// A result was recorded before.
    AlreadyRecorded,
}

// --- The alert outbox and its deliveries. ---

/// How to route one outbox alert: one delivery per sink.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRouting<'a> {
    /// The alert.
    pub alert: &'a OutboxAlert,
    /// The sinks its routes name.
    pub sinks: &'a [&'a str],
    /// A maintenance window mutes it: every delivery is `muted`.
    pub muted: bool,
    /// A delivery to the same sink of the same server and kind pending or delivered for an
    /// alert after this time, ms, makes this one a `duplicate`.
    pub dedup_after_ms: i64,
    /// Now, ms.
    pub now_ms: i64,
}

/// A delivery attempt that is due, with its alert.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDelivery {
    /// Delivery row id.
    pub delivery_id: i64,
    /// The sink's name.
    pub sink: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// When it became due, ms (a claim checks it is unchanged).
    pub due_at_ms: i64,
    /// The alert to send.
    pub alert: OutboxAlert,
}

/// An alert as read back from the outbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxAlert {
    /// Outbox id (stable; sent as `X-Vigil-Alert-Id`).
    pub id: i64,
    /// The server.
    pub server_id: String,
    /// Its cluster.
    pub cluster_id: Option<String>,
    /// Alert kind.
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// When the cause happened.
    pub at_ms: i64,
    /// One line.
    pub summary: String,
    /// Details (a JSON object; `null` if the stored text is not JSON).
    pub details: serde_json::Value,
    /// The policy that decided it.
    pub policy_digest: String,
}

/// The pending deliveries: how many, and when the next one is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingDeliveries {
    /// The earliest due time, ms.
    pub next_at_ms: Option<i64>,
    /// How many are pending.
    pub count: i64,
}

#[cfg(test)]
mod scores_tests {
    use super::Scores;
    use std::collections::BTreeMap;

    #[test]
    fn scores_keep_name_order_and_round_trip_as_a_json_object() {
        let map: BTreeMap<String, f64> = [("uptime", 99.5), ("freshness", 1.0), ("latency", 0.25)]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        let scores = Scores::from(map.clone());
        assert_eq!(scores.len(), 3);
        assert_eq!(
            scores.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            ["freshness", "latency", "uptime"]
        );
        assert_eq!(scores.get("latency"), Some(0.25));
        assert_eq!(scores.get("missing"), None);
        let text = serde_json::to_string(&scores).expect("serialises");
        assert_eq!(text, r#"{"freshness":1.0,"latency":0.25,"uptime":99.5}"#);
        let back: Scores = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, scores);
        assert_eq!(back.to_map(), map);
        assert!(serde_json::from_str::<Scores>("[1,2]").is_err());
        assert!(Scores::default().is_empty());
    }
}

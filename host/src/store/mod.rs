//! Storage: the narrow [`Store`] trait and its backends.
//!
//! History (heartbeats, rejections, transitions, key history, policy activations) can only be
//! appended: there is no method to edit or delete it, and the database refuses it too. The
//! `servers` snapshot is a cache the engine overwrites as a whole ([`SnapshotRow`]). Reads never
//! evaluate a policy. One [`WriteBatch`] is one transaction (group commit).

mod common;
pub mod postgres;
pub mod sqlite;
pub mod trust;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with the same key exists (e.g. registering a known server).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database refused or failed the operation.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
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
    /// Derived state.
    pub snapshot: Snapshot,
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
    /// The body exactly as received (JSON text).
    pub body: String,
    /// The policy that folded it.
    pub policy_digest: String,
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
}

impl HistoryEvent {
    /// The event's sequence number.
    pub fn seq(&self) -> i64 {
        match self {
            HistoryEvent::Heartbeat(h) => h.seq,
            HistoryEvent::Rejected { seq, .. } => *seq,
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

/// The opened backend, chosen by the `[storage] url` scheme.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `sqlite://…`: embedded, one host.
    Sqlite(sqlite::SqliteStore),
    /// `postgres://…`: shared by several hosts.
    Postgres(postgres::PostgresStore),
}

impl Backend {
    /// Opens the database named by `url` (`sqlite:` or `postgres:`/`postgresql:`).
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        if is_postgres_url(url) {
            Ok(Self::Postgres(
                postgres::PostgresStore::open(url, max_connections).await?,
            ))
        } else {
            Ok(Self::Sqlite(
                sqlite::SqliteStore::open(url, max_connections).await?,
            ))
        }
    }

    /// The backend behind the [`Store`] trait.
    pub fn shared(&self) -> std::sync::Arc<dyn Store> {
        match self {
            Self::Sqlite(s) => std::sync::Arc::new(s.clone()),
            Self::Postgres(s) => std::sync::Arc::new(s.clone()),
        }
    }
}

impl Backend {
    /// The pool, for the operations tables (alert outbox, commands, admin keys) whose few
    /// statements are written once in SQL both backends accept (see [`with_pool!`]).
    pub fn db(&self) -> Db {
        match self {
            Self::Sqlite(s) => Db::Sqlite(s.pool().clone()),
            Self::Postgres(s) => Db::Postgres(s.pool().clone()),
        }
    }
}

/// A connection pool of either backend (cheap to clone).
#[derive(Debug, Clone)]
pub enum Db {
    /// The SQLite pool.
    Sqlite(sqlx::SqlitePool),
    /// The PostgreSQL pool.
    Postgres(sqlx::PgPool),
}

/// Runs `$body` with `$pool` bound to the pool of whichever backend `$db` holds. The body is
/// written once and compiled once per backend, so its SQL must be accepted by both: numbered
/// `$1, $2, …` placeholders (SQLite reads them by number too), `ON CONFLICT … DO NOTHING`,
/// `RETURNING`, integers for flags.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The storage backend. Append-only for history; the snapshot is overwritten only through
/// [`Store::commit`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every registered server with its snapshot (the engine's working set at start-up).
    async fn load_servers(&self) -> Result<Vec<ServerRecord>, StoreError>;
    /// Registers a server and appends its first key. `Conflict` if the id exists.
    async fn insert_server(&self, server: &NewServer) -> Result<(), StoreError>;
    /// Registers several servers in one transaction where the backend can; one result per
    /// server, in order (`Conflict` for a taken id). The default registers them one by one.
    async fn insert_servers(
        &self,
        servers: &[NewServer],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut results = Vec::with_capacity(servers.len());
        for server in servers {
            match self.insert_server(server).await {
                Err(StoreError::Conflict(what)) => results.push(Err(StoreError::Conflict(what))),
                other => results.push(other),
            }
        }
        Ok(results)
    }
    /// Sets the operator's verified flag. `false` if the server is unknown.
    async fn set_verified(&self, server_id: &str, verified: bool) -> Result<bool, StoreError>;
    /// Writes one group commit in one transaction.
    async fn commit(&self, batch: &WriteBatch) -> Result<CommitReceipt, StoreError>;
    /// One server.
    async fn get_server(&self, server_id: &str) -> Result<Option<ServerRecord>, StoreError>;
    /// A page of the directory.
    async fn list_servers(&self, query: &ServerQuery) -> Result<Vec<ServerRecord>, StoreError>;
    /// A page of a server's heartbeats, newest first, with `seq < before_seq`.
    async fn heartbeats(
        &self,
        server_id: &str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredHeartbeat>, StoreError>;
    /// A page of a server's transitions, newest first, with `id < before_id`.
    async fn transitions(
        &self,
        server_id: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredTransition>, StoreError>;
    /// Transitions of every server with `id > after_id`, oldest first, optionally only one
    /// server's or one cluster's (the live stream's replay after `Last-Event-ID`).
    async fn transitions_after(
        &self,
        after_id: i64,
        server_id: Option<&str>,
        cluster_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ClusterTransition>, StoreError>;
    /// A server's folded events with `received_at_ms >= since_ms`, in sequence order.
    async fn history(
        &self,
        server_id: &str,
        since_ms: i64,
    ) -> Result<Vec<HistoryEvent>, StoreError>;
    /// Stores a policy component (no-op if the digest is known).
    async fn save_policy(&self, policy: &PolicyRecord) -> Result<(), StoreError>;
    /// Appends an activation.
    async fn append_activation(&self, activation: &ActivationRow) -> Result<(), StoreError>;
    /// The digest of the most recent activation.
    async fn active_policy_digest(&self) -> Result<Option<String>, StoreError>;
    /// The events a rebuild replays: every folded event with `received_at_ms` in
    /// `[newest − window, newest]` (newest = the server's latest event), plus the last heartbeat
    /// before that window (it still covers minutes inside it), in sequence order.
    /// `window_ms = 0` means the whole history.
    async fn replay_history(
        &self,
        server_id: &str,
        window_ms: i64,
    ) -> Result<Vec<HistoryEvent>, StoreError>;
    /// Every stored policy version, newest upload first (without bytes).
    async fn list_policies(&self) -> Result<Vec<PolicySummary>, StoreError>;
    /// One stored policy version by digest.
    async fn load_policy(&self, digest: &str) -> Result<Option<PolicyRecord>, StoreError>;
    /// The most recently uploaded version with this name and version.
    async fn find_policy(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<PolicyRecord>, StoreError>;
    /// The most recent activations, newest first.
    async fn activations(&self, limit: u32) -> Result<Vec<StoredActivation>, StoreError>;
    /// Cheap liveness probe of the database.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Appends the next key to a server's history and makes it current, in one transaction,
    /// if the current version is still the expected one; `false` if it is not (or no server).
    async fn rotate_key(&self, rotation: &trust::KeyRotation) -> Result<bool, StoreError>;
    /// A server's key history, oldest first.
    async fn server_keys(&self, server_id: &str) -> Result<Vec<trust::ServerKeyRow>, StoreError>;
    /// A page of the rejection audit trail, newest first.
    async fn rejections(
        &self,
        query: &trust::RejectionQuery,
    ) -> Result<Vec<trust::StoredRejection>, StoreError>;
    /// The admin API key with this token hash (revoked or not).
    async fn admin_key(
        &self,
        key_sha256: &str,
    ) -> Result<Option<crate::trust::admin_keys::AdminKey>, StoreError>;
    /// Whether any admin API key is active.
    async fn any_admin_key(&self) -> Result<bool, StoreError>;

    /// Whether several hosts may share this database. The writer then calls
    /// [`Store::lock_servers`] before folding each batch. `false` for SQLite (one host).
    fn is_shared(&self) -> bool {
        false
    }

    /// Closes the connections once nothing will use the store again (a host shutting down
    /// after its writer stopped): SQLite then checkpoints its WAL into the database file and
    /// removes `-wal` and `-shm`. Later calls fail.
    async fn close(&self) {}
    /// Opens the transaction of the next [`Store::commit`], locks the rows of `server_ids`
    /// until that commit (or [`Store::abandon`]) and returns their records as committed now, so
    /// the writer can refresh snapshots another host changed. A no-op on single-host backends.
    async fn lock_servers(&self, _server_ids: &[String]) -> Result<Vec<ServerRecord>, StoreError> {
        Ok(Vec::new())
    }
    /// Ends the transaction [`Store::lock_servers`] opened without writing anything.
    async fn abandon(&self) {}
    /// Changes other hosts make to servers, as they happen (plus a periodic
    /// [`ChangeNotice::Resync`]). `None` on single-host backends.
    async fn subscribe_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<ChangeNotice>>, StoreError> {
        Ok(None)
    }
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

//! The embedded SQLite backend (WAL, `synchronous = FULL`: an acknowledged batch survives a
//! power cut). A batch is one multi-statement query with its rows bound as JSON arrays, on a
//! connection of its own.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;
// Dynamic SQL here is built only from constant column lists and fixed sort keys; every value
// is bound.
use sqlx::{QueryBuilder, Sqlite};

use super::{
    ActivationRow, AlertRow, ClusterTransition, CommitReceipt, HeartbeatRow, HistoryEvent,
    NewServer, PolicyRecord, PolicySummary, RejectionRow, ServerQuery, ServerRecord, Store,
    StoreError, StoredActivation, StoredHeartbeat, StoredTransition, TransitionRow, WriteBatch,
};

/// Rows per multi-row statement (SQLite allows 32,766 bound variables; snapshots bind 22).
const ROWS_PER_STATEMENT: usize = 500;

/// A SQLite database holding Vigil's tables.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// sqlx pools are cheap-clone handles; WAL lets readers run beside the single writer.
    pool: SqlitePool,
    /// One connection kept for [`Store::commit`], so the heartbeat writer finds its own page
    /// cache warm: a connection drops its cache whenever another one wrote, so batches spread
    /// over the shared pool re-read the same pages from the OS on every commit.
    writer: SqlitePool,
    /// Wakes the background checkpointer after a commit (see [`spawn_checkpointer`]).
    checkpoint: Arc<Notify>,
}

/// How long the background checkpointer waits after a commit before copying the write-ahead
/// log back into the database. Short, so each checkpoint copies little and its writes barely
/// overlap the commits' fsyncs: at 3,500 heartbeats/s, p99 went from 10–66 ms with 500 ms
/// to 7–8 ms with 25 ms (BENCHMARKS.md).
const CHECKPOINT_AFTER: Duration = Duration::from_millis(25);

/// The writer's own automatic checkpoint, in WAL pages (SQLite's default is 1,000). It only
/// acts if the background checkpointer falls far behind, so the log stays bounded (≈ 40 MiB).
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 10_000;

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and runs the migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(2))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        // A batch is one transaction of multi-row statements: each statement keeps a
        // statement journal to undo itself alone, held in memory rather than in a temp file.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.pragma("temp_store", "memory").pragma(
                "wal_autocheckpoint",
                WRITER_AUTOCHECKPOINT_PAGES.to_string(),
            ))
            .await?;
        let checkpoint = Arc::new(Notify::new());
        spawn_checkpointer(pool.clone(), Arc::clone(&checkpoint));
        Ok(Self {
            pool,
            writer,
            checkpoint,
        })
    }

    /// The pool as a [`super::Db`], for the statements both backends share.
    pub fn db(&self) -> super::Db {
        super::Db::Sqlite(self.pool.clone())
    }

    /// The underlying pool (tests use it to inspect tables directly).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Copies committed WAL frames into the database file from a pool connection, so the heartbeat
/// writer's commits never stop to checkpoint (SQLite otherwise runs one inside the commit that
/// crosses `wal_autocheckpoint`, stalling that batch for tens of milliseconds). A `PASSIVE`
/// checkpoint never blocks the writer or readers. It runs [`CHECKPOINT_AFTER`] after a commit
/// and not at all while nothing is written.
fn spawn_checkpointer(pool: SqlitePool, wake: Arc<Notify>) {
    tokio::spawn(async move {
        loop {
            wake.notified().await;
            tokio::time::sleep(CHECKPOINT_AFTER).await;
            if pool.is_closed() {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "background WAL checkpoint failed");
            }
        }
    });
}

/// Whether [`json_batch`] carries this batch exactly. Integers and text survive JSON as they
/// are; a REAL goes through SQLite's JSON number parser, which returns the same `f64` for every
/// magnitude between 1e-30 and 1e30 (pinned by a test) but can miss the last bit outside it.
fn batch_fits_json(batch: &WriteBatch) -> bool {
    let exact = |x: f64| x == 0.0 || (1e-30..=1e30).contains(&x.abs());
    batch
        .snapshots
        .iter()
        .all(|r| exact(r.snapshot.uptime_percent) && exact(r.snapshot.quality_score))
}

/// One batch as statements whose text depends only on which tables it touches, each reading
/// its rows from one bound JSON array (`json_each`): SQLite parses the statements once (the
/// `VALUES` form re-parsed ≈ 30 placeholders per heartbeat on every commit, a fifth of the
/// writer's time), and `OR ROLLBACK` spares it a statement journal (any failure fails the
/// whole batch anyway).
fn json_batch(batch: &WriteBatch) -> Result<(String, Vec<String>), StoreError> {
    let json = |v: &dyn json_rows::Rows| {
        v.to_json()
            .map_err(|e| StoreError::Corrupt(format!("batch not serialisable: {e}")))
    };
    let mut sql = String::from("BEGIN IMMEDIATE; ");
    let mut args = Vec::with_capacity(6);
    if !batch.heartbeats.is_empty() {
        push_insert::<HeartbeatRow>(&mut sql, "heartbeats", "");
        args.push(json(&batch.heartbeats)?);
    }
    if !batch.rejections.is_empty() {
        push_insert::<RejectionRow>(&mut sql, "rejections", "");
        args.push(json(&batch.rejections)?);
    }
    if !batch.transitions.is_empty() {
        // The only statement that returns rows.
        push_insert::<TransitionRow>(&mut sql, "status_transitions", " RETURNING id");
        args.push(json(&batch.transitions)?);
    }
    if !batch.alerts.is_empty() {
        push_insert::<AlertRow>(&mut sql, "alert_outbox", "");
        args.push(json(&batch.alerts)?);
    }
    if !batch.snapshots.is_empty() {
        sql.push_str(
            "UPDATE OR ROLLBACK servers SET status = v.value->>1, confidence = v.value->>2, \
             uptime_percent = v.value->>3, scores = v.value->>5, badges = v.value->>6, \
             last_seen_at_ms = v.value->>7, last_sent_at_ms = v.value->>8, \
             last_signature = v.value->>9, players_current = v.value->>10, \
             players_capacity = v.value->>11, map_name = v.value->>12, \
             agent_version = v.value->>13, event_seq = v.value->>14, \
             evaluated_at_ms = v.value->>15, policy_name = v.value->>16, \
             policy_version = v.value->>17, policy_digest = v.value->>18, \
             policy_state = unhex(v.value->>19), next_check_at_ms = v.value->>20, \
             policy_errors = v.value->>21 \
             FROM jsonb_each(?) AS v WHERE servers.server_id = v.value->>0; ",
        );
        // `quality_score` is indexed (the directory's default sort): set it only where it
        // changed, since SQLite rewrites an index entry for every row whose SET names it.
        sql.push_str(
            "UPDATE OR ROLLBACK servers SET quality_score = v.value->>4 \
             FROM jsonb_each(?) AS v WHERE servers.server_id = v.value->>0 \
             AND servers.quality_score IS NOT v.value->>4; ",
        );
        // Positional: sqlx numbers `?` across the statements of one query, so the second
        // statement gets its own copy.
        let rows = json(&batch.snapshots)?;
        args.push(rows.clone());
        args.push(rows);
    }
    sql.push_str("COMMIT;");
    Ok((sql, args))
}

/// `INSERT … SELECT` of one table's rows from the JSON array bound at the next `?`: columns
/// named as the row's fields, read by position.
fn push_insert<R: json_rows::Row>(sql: &mut String, table: &str, tail: &str) {
    use std::fmt::Write;
    let _ = write!(
        sql,
        "INSERT OR ROLLBACK INTO {table} ({}) SELECT ",
        R::COLUMNS.join(", ")
    );
    for i in 0..R::COLUMNS.len() {
        let _ = write!(sql, "{}value->>{i}", if i == 0 { "" } else { ", " });
    }
    let _ = write!(sql, " FROM jsonb_each(?){tail}; ");
}

/// Each batch table as a JSON array of row arrays, in the column order [`json_batch`] reads.
mod json_rows {
    use serde::ser::{SerializeTuple, Serializer};

    use crate::store::{AlertRow, HeartbeatRow, RejectionRow, SnapshotRow, TransitionRow};

    /// A table's rows, serialisable as `[[col, ...], ...]`.
    pub trait Rows {
        fn to_json(&self) -> serde_json::Result<String>;
    }

    impl<T: Row> Rows for Vec<T> {
        fn to_json(&self) -> serde_json::Result<String> {
            let mut out = Vec::with_capacity(self.len() * 256);
            let mut ser = serde_json::Serializer::new(&mut out);
            ser.collect_seq(self.iter().map(AsTuple))?;
            // serde_json writes UTF-8 only.
            Ok(String::from_utf8(out).unwrap_or_default())
        }
    }

    /// One row's columns, in order.
    pub trait Row {
        /// The column each element fills, in order.
        const COLUMNS: &'static [&'static str];
        fn columns<T: SerializeTuple>(&self, t: &mut T) -> Result<(), T::Error>;
    }

    /// A row whose columns are its fields, same names, in this order.
    macro_rules! fields_row {
        ($ty:ty: $($field:ident),+) => {
            impl Row for $ty {
                const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),+];
                fn columns<T: SerializeTuple>(&self, t: &mut T) -> Result<(), T::Error> {
                    $(t.serialize_element(&self.$field)?;)+
                    Ok(())
                }
            }
        };
    }

    fields_row!(HeartbeatRow: server_id, seq, received_at_ms, sent_at_ms, key_version, signature,
        body, policy_digest);
    fields_row!(RejectionRow: received_at_ms, code, http_status, detail, claimed_server_id, seq,
        source_ip, body_sha256);
    fields_row!(TransitionRow: server_id, at_ms, cause, from_status, to_status, from_confidence,
        to_confidence, policy_digest);
    fields_row!(AlertRow: server_id, cluster_id, kind, severity, at_ms, summary, details,
        policy_digest);

    struct AsTuple<'a, R>(&'a R);

    impl<R: Row> serde::Serialize for AsTuple<'_, R> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut t = s.serialize_tuple(R::COLUMNS.len())?;
            self.0.columns(&mut t)?;
            t.end()
        }
    }

    impl Row for SnapshotRow {
        // Read by position in `json_batch`'s UPDATE, not inserted by name.
        const COLUMNS: &'static [&'static str] = &[
            "server_id",
            "status",
            "confidence",
            "uptime_percent",
            "quality_score",
            "scores",
            "badges",
            "last_seen_at_ms",
            "last_sent_at_ms",
            "last_signature",
            "players_current",
            "players_capacity",
            "map_name",
            "agent_version",
            "event_seq",
            "evaluated_at_ms",
            "policy_name",
            "policy_version",
            "policy_digest",
            "policy_state",
            "next_check_at_ms",
            "policy_errors",
        ];
        fn columns<T: SerializeTuple>(&self, t: &mut T) -> Result<(), T::Error> {
            use serde::ser::Error;
            let s = &self.snapshot;
            t.serialize_element(&self.server_id)?;
            t.serialize_element(&s.status)?;
            t.serialize_element(&s.confidence)?;
            t.serialize_element(&s.uptime_percent)?;
            t.serialize_element(&s.quality_score)?;
            // Stored as JSON text: a string inside the row array.
            t.serialize_element(&serde_json::to_string(&s.scores).map_err(T::Error::custom)?)?;
            t.serialize_element(&serde_json::to_string(&s.badges).map_err(T::Error::custom)?)?;
            t.serialize_element(&s.last_seen_at_ms)?;
            t.serialize_element(&s.last_sent_at_ms)?;
            t.serialize_element(&s.last_signature)?;
            t.serialize_element(&s.players_current)?;
            t.serialize_element(&s.players_capacity)?;
            t.serialize_element(&s.map_name)?;
            t.serialize_element(&s.agent_version)?;
            t.serialize_element(&s.event_seq)?;
            t.serialize_element(&s.evaluated_at_ms)?;
            t.serialize_element(&s.policy.as_ref().map(|p| &p.name))?;
            t.serialize_element(&s.policy.as_ref().map(|p| &p.version))?;
            t.serialize_element(&s.policy.as_ref().map(|p| &p.digest))?;
            // A BLOB column: hex here, `unhex()` in the statement. `encode_to_slice` writes
            // bytes; `hex::encode` collects `char`s one by one (≈ 1 % of the host's CPU).
            let state = match s.policy_state.as_deref() {
                None => None,
                Some(bytes) => {
                    let mut text = vec![0u8; bytes.len() * 2];
                    hex::encode_to_slice(bytes, &mut text).map_err(T::Error::custom)?;
                    Some(String::from_utf8(text).map_err(T::Error::custom)?)
                }
            };
            t.serialize_element(&state)?;
            t.serialize_element(&s.next_check_at_ms)?;
            t.serialize_element(&s.policy_errors)
        }
    }
}

/// The batch as multi-row `VALUES` statements with every value bound: the path for batches
/// [`json_batch`] cannot carry exactly. Its text differs with every batch size.
fn values_batch(batch: &WriteBatch) -> QueryBuilder<Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE; ");
    for chunk in batch.heartbeats.chunks(ROWS_PER_STATEMENT) {
        q.push(
                "INSERT OR ROLLBACK INTO heartbeats (server_id, seq, received_at_ms, sent_at_ms, key_version, \
                 signature, body, policy_digest) ",
            );
        q.push_values(chunk, |mut b, h| {
            b.push_bind(&h.server_id)
                .push_bind(h.seq)
                .push_bind(h.received_at_ms)
                .push_bind(h.sent_at_ms)
                .push_bind(i64::from(h.key_version))
                .push_bind(&h.signature)
                .push_bind(&h.body)
                .push_bind(&h.policy_digest);
        });
        q.push("; ");
    }
    for chunk in batch.rejections.chunks(ROWS_PER_STATEMENT) {
        q.push(
            "INSERT OR ROLLBACK INTO rejections (received_at_ms, code, http_status, detail, \
                 claimed_server_id, seq, source_ip, body_sha256) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.received_at_ms)
                .push_bind(&r.code)
                .push_bind(i64::from(r.http_status))
                .push_bind(&r.detail)
                .push_bind(&r.claimed_server_id)
                .push_bind(r.seq)
                .push_bind(&r.source_ip)
                .push_bind(&r.body_sha256);
        });
        q.push("; ");
    }
    for chunk in batch.transitions.chunks(ROWS_PER_STATEMENT) {
        q.push(
                "INSERT OR ROLLBACK INTO status_transitions (server_id, at_ms, cause, from_status, to_status, \
                 from_confidence, to_confidence, policy_digest) ",
            );
        q.push_values(chunk, |mut b, t| {
            b.push_bind(&t.server_id)
                .push_bind(t.at_ms)
                .push_bind(&t.cause)
                .push_bind(&t.from_status)
                .push_bind(&t.to_status)
                .push_bind(&t.from_confidence)
                .push_bind(&t.to_confidence)
                .push_bind(&t.policy_digest);
        });
        // The only statement that returns rows.
        q.push(" RETURNING id; ");
    }
    for chunk in batch.alerts.chunks(ROWS_PER_STATEMENT) {
        q.push(
                "INSERT OR ROLLBACK INTO alert_outbox (server_id, cluster_id, kind, severity, at_ms, summary, \
                 details, policy_digest) ",
            );
        q.push_values(chunk, |mut b, a| {
            b.push_bind(&a.server_id)
                .push_bind(&a.cluster_id)
                .push_bind(&a.kind)
                .push_bind(&a.severity)
                .push_bind(a.at_ms)
                .push_bind(&a.summary)
                .push_bind(&a.details)
                .push_bind(&a.policy_digest);
        });
        q.push("; ");
    }
    for chunk in batch.snapshots.chunks(ROWS_PER_STATEMENT) {
        q.push(
            "WITH v(server_id, status, confidence, uptime_percent, quality_score, scores, \
                 badges, last_seen_at_ms, last_sent_at_ms, last_signature, players_current, \
                 players_capacity, map_name, agent_version, event_seq, evaluated_at_ms, \
                 policy_name, policy_version, policy_digest, policy_state, next_check_at_ms, \
                 policy_errors) AS (",
        );
        q.push_values(chunk, |mut b, row| {
            let s = &row.snapshot;
            b.push_bind(&row.server_id)
                .push_bind(&s.status)
                .push_bind(&s.confidence)
                .push_bind(s.uptime_percent)
                .push_bind(s.quality_score)
                .push_bind(serde_json::to_string(&s.scores).unwrap_or_else(|_| "{}".into()))
                .push_bind(serde_json::to_string(&s.badges).unwrap_or_else(|_| "[]".into()))
                .push_bind(s.last_seen_at_ms)
                .push_bind(s.last_sent_at_ms)
                .push_bind(&s.last_signature)
                .push_bind(s.players_current.map(i64::from))
                .push_bind(s.players_capacity.map(i64::from))
                .push_bind(&s.map_name)
                .push_bind(&s.agent_version)
                .push_bind(s.event_seq)
                .push_bind(s.evaluated_at_ms)
                .push_bind(s.policy.as_ref().map(|p| p.name.clone()))
                .push_bind(s.policy.as_ref().map(|p| p.version.clone()))
                .push_bind(s.policy.as_ref().map(|p| p.digest.clone()))
                .push_bind(&s.policy_state)
                .push_bind(s.next_check_at_ms)
                .push_bind(s.policy_errors);
        });
        q.push(
            ") UPDATE OR ROLLBACK servers SET status = v.status, confidence = v.confidence, \
                 uptime_percent = v.uptime_percent, \
                 scores = v.scores, badges = v.badges, last_seen_at_ms = v.last_seen_at_ms, \
                 last_sent_at_ms = v.last_sent_at_ms, last_signature = v.last_signature, \
                 players_current = v.players_current, players_capacity = v.players_capacity, \
                 map_name = v.map_name, agent_version = v.agent_version, \
                 event_seq = v.event_seq, evaluated_at_ms = v.evaluated_at_ms, \
                 policy_name = v.policy_name, policy_version = v.policy_version, \
                 policy_digest = v.policy_digest, policy_state = v.policy_state, \
                 next_check_at_ms = v.next_check_at_ms, policy_errors = v.policy_errors \
                 FROM v WHERE servers.server_id = v.server_id",
        );
        // `quality_score` is indexed (the directory's default sort): set it only where it
        // changed, since SQLite rewrites an index entry for every row whose SET names it.
        q.push("; WITH v(server_id, quality_score) AS (");
        q.push_values(chunk, |mut b, row| {
            b.push_bind(&row.server_id)
                .push_bind(row.snapshot.quality_score);
        });
        q.push(
            ") UPDATE OR ROLLBACK servers SET quality_score = v.quality_score FROM v \
                 WHERE servers.server_id = v.server_id \
                 AND servers.quality_score IS NOT v.quality_score; ",
        );
    }
    q.push("COMMIT;");
    q
}

#[async_trait]
impl Store for SqliteStore {
    async fn close(&self) {
        // The writer's connection first: the last one to close checkpoints the WAL.
        self.writer.close().await;
        self.pool.close().await;
    }

    async fn load_servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        super::common::load_servers(&self.db()).await
    }

    async fn insert_server(&self, server: &NewServer) -> Result<(), StoreError> {
        let mut results = self.insert_servers(std::slice::from_ref(server)).await?;
        results.pop().unwrap_or(Ok(()))
    }

    async fn insert_servers(
        &self,
        servers: &[NewServer],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut results = Vec::with_capacity(servers.len());
        for server in servers {
            let inserted = sqlx::query(
                "INSERT INTO servers (server_id, display_name, cluster_id, public_key, \
                 key_version, is_verified, registered_at_ms) VALUES (?, ?, ?, ?, 1, 0, ?) \
                 ON CONFLICT (server_id) DO NOTHING",
            )
            .bind(&server.server_id)
            .bind(&server.display_name)
            .bind(&server.cluster_id)
            .bind(&server.public_key)
            .bind(server.registered_at_ms)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                results.push(Err(StoreError::Conflict(format!(
                    "server {}",
                    server.server_id
                ))));
                continue;
            }
            sqlx::query(
                "INSERT INTO server_keys (server_id, key_version, public_key, fingerprint, \
                 added_at_ms, added_by) VALUES (?, 1, ?, ?, ?, ?)",
            )
            .bind(&server.server_id)
            .bind(&server.public_key)
            .bind(&server.fingerprint)
            .bind(server.registered_at_ms)
            .bind(&server.added_by)
            .execute(&mut *tx)
            .await?;
            results.push(Ok(()));
        }
        tx.commit().await?;
        Ok(results)
    }

    async fn set_verified(&self, server_id: &str, verified: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE servers SET is_verified = ? WHERE server_id = ?")
            .bind(verified)
            .bind(server_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn commit(&self, batch: &WriteBatch) -> Result<CommitReceipt, StoreError> {
        let mut receipt = CommitReceipt::default();
        if batch.is_empty() {
            return Ok(receipt);
        }
        let mut conn = self.writer.acquire().await?;
        // The whole batch is ONE multi-statement query (sqlx-sqlite binds the arguments across
        // its statements), so the writer hands it to the connection's worker thread once
        // instead of once per statement plus BEGIN and COMMIT.
        let result = if batch_fits_json(batch) {
            // Rows travel as one JSON array per table: the text depends only on which tables
            // the batch touches, so its statements are prepared once and cached.
            let (sql, args) = json_batch(batch)?;
            let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
            for arg in args {
                query = query.bind(arg);
            }
            query.fetch_all(&mut *conn).await
        } else {
            let mut q = values_batch(batch);
            // Not kept in the statement cache: the text differs with every batch size.
            q.build_query_scalar::<i64>()
                .persistent(false)
                .fetch_all(&mut *conn)
                .await
        };
        match result {
            Ok(mut ids) => {
                // Ids of the single writer's inserts ascend in row order.
                ids.sort_unstable();
                receipt.transition_ids = ids;
                // Commits during the wait or the checkpoint leave a permit: it runs again.
                self.checkpoint.notify_one();
            }
            Err(e) => {
                // A statement failed inside the transaction: end it before the connection
                // goes back to the pool (an error if none is open, after OR ROLLBACK, is fine).
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(e.into());
            }
        }
        Ok(receipt)
    }

    async fn get_server(&self, server_id: &str) -> Result<Option<ServerRecord>, StoreError> {
        super::common::get_server(&self.db(), server_id).await
    }

    async fn list_servers(&self, query: &ServerQuery) -> Result<Vec<ServerRecord>, StoreError> {
        super::common::list_servers(&self.db(), query).await
    }

    async fn heartbeats(
        &self,
        server_id: &str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredHeartbeat>, StoreError> {
        super::common::heartbeats(&self.db(), server_id, before_seq, limit).await
    }

    async fn transitions(
        &self,
        server_id: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredTransition>, StoreError> {
        super::common::transitions(&self.db(), server_id, before_id, limit).await
    }

    async fn transitions_after(
        &self,
        after_id: i64,
        server_id: Option<&str>,
        cluster_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ClusterTransition>, StoreError> {
        super::common::transitions_after(&self.db(), after_id, server_id, cluster_id, limit).await
    }

    async fn history(
        &self,
        server_id: &str,
        since_ms: i64,
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        super::common::history(&self.db(), server_id, since_ms).await
    }

    async fn save_policy(&self, policy: &PolicyRecord) -> Result<(), StoreError> {
        super::common::save_policy(&self.db(), policy).await
    }

    async fn append_activation(&self, a: &ActivationRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO policy_activations (at_ms, who, from_digest, to_digest, reason) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(a.at_ms)
        .bind(&a.who)
        .bind(&a.from_digest)
        .bind(&a.to_digest)
        .bind(&a.reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn active_policy_digest(&self) -> Result<Option<String>, StoreError> {
        super::common::active_policy_digest(&self.db()).await
    }

    async fn replay_history(
        &self,
        server_id: &str,
        window_ms: i64,
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        super::common::replay_history(&self.db(), server_id, window_ms).await
    }

    async fn list_policies(&self) -> Result<Vec<PolicySummary>, StoreError> {
        super::common::list_policies(&self.db()).await
    }

    async fn load_policy(&self, digest: &str) -> Result<Option<PolicyRecord>, StoreError> {
        super::common::load_policy(&self.db(), digest).await
    }

    async fn find_policy(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        super::common::find_policy(&self.db(), name, version).await
    }

    async fn activations(&self, limit: u32) -> Result<Vec<StoredActivation>, StoreError> {
        super::common::activations(&self.db(), limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn rotate_key(&self, rotation: &super::trust::KeyRotation) -> Result<bool, StoreError> {
        super::common::rotate_key(&self.db(), rotation).await
    }

    async fn server_keys(
        &self,
        server_id: &str,
    ) -> Result<Vec<super::trust::ServerKeyRow>, StoreError> {
        super::common::server_keys(&self.db(), server_id).await
    }

    async fn rejections(
        &self,
        query: &super::trust::RejectionQuery,
    ) -> Result<Vec<super::trust::StoredRejection>, StoreError> {
        super::common::rejections(&self.db(), query).await
    }

    async fn admin_key(
        &self,
        key_sha256: &str,
    ) -> Result<Option<crate::trust::admin_keys::AdminKey>, StoreError> {
        crate::trust::admin_keys::find(&self.db(), key_sha256).await
    }

    async fn any_admin_key(&self) -> Result<bool, StoreError> {
        crate::trust::admin_keys::any_active(&self.db()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{HeartbeatRow, NewServer, Snapshot, SnapshotRow};

    async fn store_with(ids: &[&str]) -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url, 2).await.expect("opens");
        for id in ids {
            store
                .insert_server(&NewServer {
                    server_id: (*id).into(),
                    public_key: "k".into(),
                    fingerprint: "f".into(),
                    display_name: None,
                    cluster_id: None,
                    registered_at_ms: 1,
                    added_by: "test".into(),
                })
                .await
                .expect("registered");
        }
        (store, dir)
    }

    fn heartbeat(id: &str, seq: i64) -> HeartbeatRow {
        HeartbeatRow {
            server_id: id.into(),
            seq,
            received_at_ms: 1_000 + seq,
            sent_at_ms: 1_000 + seq,
            key_version: 1,
            signature: String::new(),
            body: "{}".into(),
            policy_digest: "sha256:test".into(),
        }
    }

    fn snapshot(id: &str, seq: i64, quality: f64) -> SnapshotRow {
        let mut snapshot = Snapshot::unseen();
        snapshot.event_seq = seq;
        snapshot.quality_score = quality;
        SnapshotRow {
            server_id: id.into(),
            snapshot,
        }
    }

    /// Every column filled with awkward values: quotes, backslashes, control escapes, non-ASCII
    /// text, a state blob with zero bytes, absent optionals.
    fn awkward_snapshot(id: &str, seq: i64, uptime: f64, quality: f64) -> SnapshotRow {
        let mut s = Snapshot::unseen();
        s.status = "online".into();
        s.confidence = "green".into();
        s.uptime_percent = uptime;
        s.quality_score = quality;
        s.scores =
            std::collections::BTreeMap::from([("a\"b".to_owned(), 1.5), ("z".to_owned(), -0.0)])
                .into();
        s.badges = vec!["é\\n".into(), "\u{1F600}".into()];
        s.last_seen_at_ms = Some(i64::MAX);
        s.last_sent_at_ms = Some(-1);
        s.last_signature = Some("sig+/=".into());
        s.players_current = Some(u32::MAX);
        s.players_capacity = None;
        s.map_name = Some("The \"Island\"\t\u{7}".into());
        s.agent_version = None;
        s.event_seq = seq;
        s.evaluated_at_ms = Some(0);
        s.policy = Some(std::sync::Arc::new(crate::store::PolicyRef {
            name: "default".into(),
            version: "1.2.3".into(),
            digest: "sha256:00ff".into(),
        }));
        s.policy_state = Some(vec![0, 1, 0, 255, 0]);
        s.next_check_at_ms = None;
        s.policy_errors = 3;
        SnapshotRow {
            server_id: id.into(),
            snapshot: s,
        }
    }

    #[tokio::test]
    async fn every_column_reads_back_exactly_on_both_commit_paths() {
        let (store, _dir) = store_with(&["json", "values"]).await;
        let body = r#"{"map_name":"Z\u00fcrich \"north\"","note":"tab\there","emoji":"😀"}"#;
        let mut hb = heartbeat("json", 1);
        hb.body = body.into();
        hb.signature = "AAAA/+==".into();
        let json = awkward_snapshot("json", 1, 99.123_456_789_012_34, 1.0 / 3.0);
        // Below 1e-30: not carried by JSON, so the batch goes through bound VALUES.
        let values = awkward_snapshot("values", 1, 1e-300, 5e-324);
        for (hb, row) in [(hb, json), (heartbeat("values", 1), values)] {
            let batch = WriteBatch {
                heartbeats: vec![hb.clone()],
                snapshots: vec![row.clone()],
                ..WriteBatch::default()
            };
            assert_eq!(
                batch_fits_json(&batch),
                row.server_id == "json",
                "{}",
                row.server_id
            );
            store.commit(&batch).await.expect("commits");
            let back = store
                .get_server(&row.server_id)
                .await
                .expect("reads")
                .expect("exists");
            assert_eq!(back.snapshot, row.snapshot, "{}", row.server_id);
            let stored = store
                .heartbeats(&row.server_id, None, 10)
                .await
                .expect("history");
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0].row, hb, "{}", row.server_id);
        }
    }

    #[tokio::test]
    async fn transitions_rejections_and_alerts_read_back_exactly_from_json_rows() {
        let (store, _dir) = store_with(&["a"]).await;
        let transition = crate::store::TransitionRow {
            server_id: "a".into(),
            at_ms: 7,
            cause: "heartbeat".into(),
            from_status: "unknown".into(),
            to_status: "online".into(),
            from_confidence: "yellow".into(),
            to_confidence: "green".into(),
            policy_digest: "sha256:\"q\"".into(),
        };
        let rejection = crate::store::RejectionRow {
            received_at_ms: 8,
            code: "bad-signature".into(),
            http_status: 401,
            detail: "line\nbreak, \\ and é".into(),
            claimed_server_id: None,
            seq: Some(2),
            source_ip: Some("::1".into()),
            body_sha256: None,
        };
        let alert = crate::store::AlertRow {
            server_id: "a".into(),
            cluster_id: None,
            kind: "server_online".into(),
            severity: "recovery".into(),
            at_ms: 9,
            summary: "a is \"online\"".into(),
            details: r#"{"x":[1,2.5,"y"]}"#.into(),
            policy_digest: "sha256:q".into(),
        };
        let batch = WriteBatch {
            transitions: vec![transition.clone(), transition.clone()],
            rejections: vec![rejection.clone()],
            alerts: vec![alert.clone()],
            ..WriteBatch::default()
        };
        assert!(batch_fits_json(&batch));
        let receipt = store.commit(&batch).await.expect("commits");
        let stored = store.transitions("a", None, 10).await.expect("reads");
        let mut ids: Vec<i64> = stored.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        assert_eq!(receipt.transition_ids, ids);
        assert!(stored.iter().all(|t| t.row == transition));
        // Each stored row as a JSON array, to compare every column at once.
        let row = |sql: &'static str| {
            let pool = store.pool().clone();
            async move {
                let text: String = sqlx::query_scalar(sql).fetch_one(&pool).await.expect("row");
                serde_json::from_str::<serde_json::Value>(&text).expect("json")
            }
        };
        assert_eq!(
            row(
                "SELECT json_array(received_at_ms, code, http_status, detail, \
                 claimed_server_id, seq, source_ip, body_sha256) FROM rejections"
            )
            .await,
            serde_json::json!([
                8,
                rejection.code,
                401,
                rejection.detail,
                null,
                2,
                "::1",
                null
            ])
        );
        assert_eq!(
            row(
                "SELECT json_array(server_id, cluster_id, kind, severity, at_ms, summary, \
                 details, policy_digest) FROM alert_outbox"
            )
            .await,
            serde_json::json!([
                "a",
                null,
                alert.kind,
                alert.severity,
                9,
                alert.summary,
                alert.details,
                alert.policy_digest
            ])
        );
    }

    #[tokio::test]
    async fn sqlite_reads_every_json_real_in_the_carried_range_as_the_same_f64() {
        // `batch_fits_json` relies on this: pinned against the SQLite build we link.
        let (store, _dir) = store_with(&[]).await;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values = Vec::new();
        for i in 0..100_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mantissa = 1.0 + (x >> 11) as f64 / (1u64 << 53) as f64;
            let value = match i % 3 {
                // Log-uniform over the whole carried range, either sign.
                0 => mantissa * 10f64.powi((x % 61) as i32 - 30),
                1 => -mantissa * 10f64.powi((x % 59) as i32 - 29),
                // Percentages, the usual case.
                _ => (x >> 11) as f64 / (1u64 << 53) as f64 * 100.0,
            };
            let exact = value == 0.0 || (1e-30..=1e30).contains(&value.abs());
            if exact {
                values.push(value);
            }
        }
        let text = serde_json::to_string(&values).expect("serialises");
        let back: Vec<f64> = sqlx::query_scalar("SELECT value FROM jsonb_each(?) ORDER BY key")
            .bind(&text)
            .fetch_all(store.pool())
            .await
            .expect("reads");
        assert_eq!(back.len(), values.len());
        let differ: Vec<_> = values
            .iter()
            .zip(&back)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .take(5)
            .collect();
        assert!(differ.is_empty(), "{differ:?}");
    }

    #[tokio::test]
    async fn committed_batches_reach_the_database_file_without_a_checkpoint_in_the_commit() {
        let (store, dir) = store_with(&["a"]).await;
        let batch = WriteBatch {
            heartbeats: (1..=200).map(|seq| heartbeat("a", seq)).collect(),
            snapshots: vec![snapshot("a", 200, 10.0)],
            ..WriteBatch::default()
        };
        store.commit(&batch).await.expect("commit");
        // The writer's own auto-checkpoint is far away (10,000 pages) and nothing else writes:
        // the rows reach the main file (read here without its WAL) only through the background
        // checkpointer.
        use sqlx::Connection;
        let copy = dir.path().join("copy.db");
        let mut stored = 0;
        for _ in 0..100 {
            std::fs::copy(dir.path().join("t.db"), &copy).expect("copy the main file");
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", copy.display()))
                .expect("url");
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .expect("open the copy");
            stored = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM heartbeats")
                .fetch_one(&mut conn)
                .await
                .unwrap_or(0);
            if stored == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            stored, 200,
            "the WAL was never checkpointed into the database file"
        );
    }

    #[tokio::test]
    async fn a_failing_batch_stores_nothing_and_the_next_one_commits() {
        let (store, _dir) = store_with(&["a", "b"]).await;
        let first = WriteBatch {
            heartbeats: vec![heartbeat("a", 1)],
            snapshots: vec![snapshot("a", 1, 10.0)],
            ..WriteBatch::default()
        };
        store.commit(&first).await.expect("first batch");
        // Seq 1 of `a` again (UNIQUE (server_id, seq)) after a valid row of `b`: the whole batch
        // is refused, including `b`'s heartbeat and both snapshots.
        let failing = WriteBatch {
            heartbeats: vec![heartbeat("b", 1), heartbeat("a", 1)],
            snapshots: vec![snapshot("a", 2, 20.0), snapshot("b", 1, 20.0)],
            ..WriteBatch::default()
        };
        assert!(store.commit(&failing).await.is_err());
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM heartbeats")
            .fetch_one(store.pool())
            .await
            .expect("count");
        assert_eq!(count, 1);
        let a = store.get_server("a").await.expect("read").expect("a");
        assert_eq!((a.snapshot.event_seq, a.snapshot.quality_score), (1, 10.0));
        // No transaction was left open on a pooled connection: every later batch commits.
        for round in 0..4 {
            let next = WriteBatch {
                heartbeats: vec![heartbeat("b", round + 1)],
                snapshots: vec![snapshot("b", round + 1, 30.0)],
                ..WriteBatch::default()
            };
            store.commit(&next).await.expect("later batch");
        }
        let b = store.get_server("b").await.expect("read").expect("b");
        assert_eq!((b.snapshot.event_seq, b.snapshot.quality_score), (4, 30.0));
    }

    #[tokio::test]
    async fn quality_is_written_when_it_changes_and_kept_when_it_does_not() {
        let (store, _dir) = store_with(&["q"]).await;
        for (seq, quality) in [(1, 50.0), (2, 50.0), (3, 61.5), (4, 61.5)] {
            let batch = WriteBatch {
                heartbeats: vec![heartbeat("q", seq)],
                snapshots: vec![snapshot("q", seq, quality)],
                ..WriteBatch::default()
            };
            store.commit(&batch).await.expect("commits");
            let q = store.get_server("q").await.expect("read").expect("q");
            assert_eq!(
                (q.snapshot.event_seq, q.snapshot.quality_score),
                (seq, quality)
            );
        }
    }
}

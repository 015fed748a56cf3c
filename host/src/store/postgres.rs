//! The PostgreSQL backend: the scale-out store several hosts share.
//!
//! Same tables and rules as SQLite (migrations/postgres). What differs:
//! - one batch is one transaction that starts with [`Store::lock_servers`]: the rows of the
//!   servers it folds are locked (`SELECT … FOR UPDATE`, in id order so two hosts never
//!   deadlock on each other) and re-read, so the writer folds the latest committed snapshot even
//!   when another host wrote it; the locks end with the commit (or a rollback, or the death of
//!   the connection — a host that dies leaves no lock behind);
//! - the snapshot update is conditional on the previous `event_seq`, so two commits can never
//!   hand out the same sequence number even without the locks (the partitioned `heartbeats`
//!   cannot declare `UNIQUE (server_id, seq)`, see the migration);
//! - admin changes (register, verify) `NOTIFY vigil_changes` in their transaction, and
//!   [`Store::subscribe_changes`] turns those into [`ChangeNotice`]s, with a periodic
//!   [`ChangeNotice::Resync`] as the fallback for anything missed;
//! - `heartbeats` is partitioned by month; [`PostgresStore::ensure_partitions`] creates the
//!   partitions ahead of time (at open and hourly).
//!
//! Rows travel as arrays (`INSERT … SELECT FROM UNNEST`): one statement per table per batch.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
// Dynamic SQL here is built only from constant column lists, fixed sort keys and partition
// names computed from dates; every value is bound.
use sqlx::{AssertSqlSafe, Postgres, Transaction};
use tokio::sync::{Mutex, mpsc};

use super::{
    ActivationRow, ChangeNotice, CommitReceipt, HistoryEvent, NewServer, PolicyRecord, ServerQuery,
    ServerRecord, Snapshot, Store, StoreError, StoredHeartbeat, StoredTransition, WriteBatch,
};

/// The channel admin changes are announced on.
const CHANGES_CHANNEL: &str = "vigil_changes";
/// How often every host re-reads all identities in case a notification was lost.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// How often the monthly partitions ahead are checked.
const PARTITIONS_EVERY: Duration = Duration::from_secs(3600);

use super::common::SERVER_COLUMNS;

/// A PostgreSQL database holding Vigil's tables, shared by any number of hosts.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// sqlx pools are cheap-clone handles.
    pool: PgPool,
    /// The open transaction of the batch being folded (see [`Store::lock_servers`]). A tokio
    /// mutex because it is held across awaits; only this host's single writer takes it.
    batch: Arc<Mutex<Option<Transaction<'static, Postgres>>>>,
}

impl PostgresStore {
    /// Connects to `url`, runs the migrations and creates the partitions around now.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.options([
            // A host that hangs mid-batch must not hold its row locks for long; a batch that
            // waits for another host's locks gives up (503, the agent retries) instead of
            // piling up.
            ("idle_in_transaction_session_timeout", "30s"),
            ("lock_timeout", "10s"),
        ]);
        let pool = PgPoolOptions::new()
            // The writer's batch transaction, the change listener and the readers.
            .max_connections(max_connections.max(4))
            // Fail a batch (503, the agent retries) rather than stall the writer for long.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        let store = Self {
            pool,
            batch: Arc::new(Mutex::new(None)),
        };
        store.ensure_partitions(crate::clock::now_ms()).await?;
        Ok(store)
    }

    /// The pool as a [`super::Db`], for the statements both backends share.
    pub fn db(&self) -> super::Db {
        super::Db::Postgres(self.pool.clone())
    }

    /// The underlying pool (tests use it to inspect tables directly).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the monthly `heartbeats` partitions from last month to three months ahead, if
    /// missing. Several hosts may race here: a partition another host just created is fine.
    pub async fn ensure_partitions(&self, now_ms: i64) -> Result<(), StoreError> {
        for offset in -1..=3 {
            let (name, from, to) = month_partition(now_ms, offset)?;
            let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(&name)
                .fetch_one(&self.pool)
                .await?;
            if exists.is_some() {
                continue;
            }
            let created = sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF heartbeats \
                 FOR VALUES FROM ({from}) TO ({to})"
            )))
            .execute(&self.pool)
            .await;
            match created {
                Ok(_) => tracing::info!(partition = %name, "heartbeats partition created"),
                // Another host created it at the same moment, or rows in the DEFAULT partition
                // overlap the range (an operator must move them; inserts still succeed there).
                Err(e) => tracing::warn!(partition = %name, error = %e, "partition not created"),
            }
        }
        Ok(())
    }
}

/// `(name, from_ms, to_ms)` of the month `offset` months from the one holding `now_ms`.
fn month_partition(now_ms: i64, offset: i32) -> Result<(String, i64, i64), StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("partition date: {e}"));
    let now = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .map_err(|e| corrupt(&e))?;
    let index = now.year() * 12 + i32::from(u8::from(now.month())) - 1 + offset;
    let start = |index: i32| -> Result<(i32, u8, i64), StoreError> {
        let (year, month) = (index.div_euclid(12), (index.rem_euclid(12) + 1) as u8);
        let month_enum = time::Month::try_from(month).map_err(|e| corrupt(&e))?;
        let date = time::Date::from_calendar_date(year, month_enum, 1).map_err(|e| corrupt(&e))?;
        let ms = date.midnight().assume_utc().unix_timestamp() * 1000;
        Ok((year, month, ms))
    };
    let (year, month, from) = start(index)?;
    let (_, _, to) = start(index + 1)?;
    Ok((format!("heartbeats_y{year:04}m{month:02}"), from, to))
}

fn server_from_row(row: &PgRow) -> Result<ServerRecord, StoreError> {
    super::common::server_row!(row)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A `vigil_changes` payload: `server:<id>`, `policy:<digest>`; anything else re-reads all.
fn parse_notice(payload: &str) -> ChangeNotice {
    if let Some(id) = payload.strip_prefix("server:") {
        ChangeNotice::Server(id.to_owned())
    } else if let Some(digest) = payload.strip_prefix("policy:") {
        ChangeNotice::Policy(digest.to_owned())
    } else {
        ChangeNotice::Resync
    }
}

async fn notify_server(
    tx: &mut Transaction<'static, Postgres>,
    server_id: &str,
) -> Result<(), StoreError> {
    notify(tx, &format!("server:{server_id}")).await
}

async fn notify(tx: &mut Transaction<'static, Postgres>, payload: &str) -> Result<(), StoreError> {
    // Delivered to every listening host when (and only if) the transaction commits.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl PostgresStore {
    async fn write_batch(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        batch: &WriteBatch,
    ) -> Result<CommitReceipt, StoreError> {
        let mut receipt = CommitReceipt::default();
        if !batch.heartbeats.is_empty() {
            let h = &batch.heartbeats;
            sqlx::query(
                "INSERT INTO heartbeats (server_id, seq, received_at_ms, sent_at_ms, key_version, \
                 signature, body, policy_digest) SELECT * FROM UNNEST($1::text[], $2::int8[], \
                 $3::int8[], $4::int8[], $5::int8[], $6::text[], $7::text[], $8::text[])",
            )
            .bind(h.iter().map(|r| r.server_id.clone()).collect::<Vec<_>>())
            .bind(h.iter().map(|r| r.seq).collect::<Vec<_>>())
            .bind(h.iter().map(|r| r.received_at_ms).collect::<Vec<_>>())
            .bind(h.iter().map(|r| r.sent_at_ms).collect::<Vec<_>>())
            .bind(
                h.iter()
                    .map(|r| i64::from(r.key_version))
                    .collect::<Vec<_>>(),
            )
            .bind(h.iter().map(|r| r.signature.clone()).collect::<Vec<_>>())
            .bind(h.iter().map(|r| r.body.clone()).collect::<Vec<_>>())
            .bind(
                h.iter()
                    .map(|r| r.policy_digest.clone())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut **tx)
            .await?;
        }
        if !batch.rejections.is_empty() {
            let r = &batch.rejections;
            sqlx::query(
                "INSERT INTO rejections (received_at_ms, code, http_status, detail, \
                 claimed_server_id, seq, source_ip, body_sha256) SELECT * FROM UNNEST( \
                 $1::int8[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::int8[], \
                 $7::text[], $8::text[])",
            )
            .bind(r.iter().map(|r| r.received_at_ms).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.code.clone()).collect::<Vec<_>>())
            .bind(
                r.iter()
                    .map(|r| i64::from(r.http_status))
                    .collect::<Vec<_>>(),
            )
            .bind(r.iter().map(|r| r.detail.clone()).collect::<Vec<_>>())
            .bind(
                r.iter()
                    .map(|r| r.claimed_server_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(r.iter().map(|r| r.seq).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.source_ip.clone()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.body_sha256.clone()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !batch.transitions.is_empty() {
            let t = &batch.transitions;
            let mut ids: Vec<i64> = sqlx::query_scalar(
                "INSERT INTO status_transitions (server_id, at_ms, cause, from_status, to_status, \
                 from_confidence, to_confidence, policy_digest) SELECT * FROM UNNEST( \
                 $1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
                 $7::text[], $8::text[]) RETURNING id",
            )
            .bind(t.iter().map(|t| t.server_id.clone()).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.at_ms).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.cause.clone()).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.from_status.clone()).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.to_status.clone()).collect::<Vec<_>>())
            .bind(
                t.iter()
                    .map(|t| t.from_confidence.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                t.iter()
                    .map(|t| t.to_confidence.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                t.iter()
                    .map(|t| t.policy_digest.clone())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut **tx)
            .await?;
            // Identity values follow the UNNEST order; sorted, they line up with `transitions`.
            ids.sort_unstable();
            receipt.transition_ids = ids;
        }
        if !batch.alerts.is_empty() {
            let a = &batch.alerts;
            let text = |f: &dyn Fn(&super::AlertRow) -> String| a.iter().map(f).collect::<Vec<_>>();
            sqlx::query(
                "INSERT INTO alert_outbox (server_id, cluster_id, kind, severity, at_ms, summary, \
                 details, policy_digest) SELECT * FROM UNNEST($1::text[], $2::text[], \
                 $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::text[])",
            )
            .bind(text(&|a| a.server_id.clone()))
            .bind(a.iter().map(|a| a.cluster_id.clone()).collect::<Vec<_>>())
            .bind(text(&|a| a.kind.clone()))
            .bind(text(&|a| a.severity.clone()))
            .bind(a.iter().map(|a| a.at_ms).collect::<Vec<_>>())
            .bind(text(&|a| a.summary.clone()))
            .bind(text(&|a| a.details.clone()))
            .bind(text(&|a| a.policy_digest.clone()))
            .execute(&mut **tx)
            .await?;
        }
        if !batch.snapshots.is_empty() {
            // The event_seq each snapshot started from: every event folded in this batch took
            // the next number, so it is the new event_seq minus the batch's events.
            let mut events: std::collections::HashMap<&str, i64> = Default::default();
            for h in &batch.heartbeats {
                *events.entry(h.server_id.as_str()).or_default() += 1;
            }
            for r in &batch.rejections {
                if let (Some(id), Some(_)) = (&r.claimed_server_id, r.seq) {
                    *events.entry(id.as_str()).or_default() += 1;
                }
            }
            let s: Vec<_> = batch.snapshots.iter().collect();
            let snap = |f: &dyn Fn(&Snapshot) -> Option<String>| -> Vec<Option<String>> {
                s.iter().map(|row| f(&row.snapshot)).collect()
            };
            let int = |f: &dyn Fn(&Snapshot) -> Option<i64>| -> Vec<Option<i64>> {
                s.iter().map(|row| f(&row.snapshot)).collect()
            };
            let updated = sqlx::query(
                "UPDATE servers SET status = v.status, confidence = v.confidence, \
                 uptime_percent = v.uptime_percent, quality_score = v.quality_score, \
                 scores = v.scores, badges = v.badges, last_seen_at_ms = v.last_seen_at_ms, \
                 last_sent_at_ms = v.last_sent_at_ms, last_signature = v.last_signature, \
                 players_current = v.players_current, players_capacity = v.players_capacity, \
                 map_name = v.map_name, agent_version = v.agent_version, \
                 event_seq = v.event_seq, evaluated_at_ms = v.evaluated_at_ms, \
                 policy_name = v.policy_name, policy_version = v.policy_version, \
                 policy_digest = v.policy_digest, policy_state = v.policy_state, \
                 next_check_at_ms = v.next_check_at_ms, policy_errors = v.policy_errors \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], \
                 $6::text[], $7::text[], $8::int8[], $9::int8[], $10::text[], $11::int8[], \
                 $12::int8[], $13::text[], $14::text[], $15::int8[], $16::int8[], $17::text[], \
                 $18::text[], $19::text[], $20::bytea[], $21::int8[], $22::int8[], $23::int8[]) \
                 AS v(server_id, status, confidence, uptime_percent, quality_score, scores, \
                 badges, last_seen_at_ms, last_sent_at_ms, last_signature, players_current, \
                 players_capacity, map_name, agent_version, event_seq, evaluated_at_ms, \
                 policy_name, policy_version, policy_digest, policy_state, next_check_at_ms, \
                 policy_errors, previous_event_seq) \
                 WHERE servers.server_id = v.server_id \
                 AND servers.event_seq = v.previous_event_seq",
            )
            .bind(s.iter().map(|r| r.server_id.clone()).collect::<Vec<_>>())
            .bind(snap(&|s| Some(s.status.clone())))
            .bind(snap(&|s| Some(s.confidence.clone())))
            .bind(
                s.iter()
                    .map(|r| r.snapshot.uptime_percent)
                    .collect::<Vec<_>>(),
            )
            .bind(
                s.iter()
                    .map(|r| r.snapshot.quality_score)
                    .collect::<Vec<_>>(),
            )
            .bind(snap(&|s| {
                Some(serde_json::to_string(&s.scores).unwrap_or_else(|_| "{}".into()))
            }))
            .bind(snap(&|s| {
                Some(serde_json::to_string(&s.badges).unwrap_or_else(|_| "[]".into()))
            }))
            .bind(int(&|s| s.last_seen_at_ms))
            .bind(int(&|s| s.last_sent_at_ms))
            .bind(snap(&|s| s.last_signature.clone()))
            .bind(int(&|s| s.players_current.map(i64::from)))
            .bind(int(&|s| s.players_capacity.map(i64::from)))
            .bind(snap(&|s| s.map_name.clone()))
            .bind(snap(&|s| s.agent_version.clone()))
            .bind(int(&|s| Some(s.event_seq)))
            .bind(int(&|s| s.evaluated_at_ms))
            .bind(snap(&|s| s.policy.as_ref().map(|p| p.name.clone())))
            .bind(snap(&|s| s.policy.as_ref().map(|p| p.version.clone())))
            .bind(snap(&|s| s.policy.as_ref().map(|p| p.digest.clone())))
            .bind(
                s.iter()
                    .map(|r| r.snapshot.policy_state.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(int(&|s| s.next_check_at_ms))
            .bind(int(&|s| Some(s.policy_errors)))
            .bind(
                s.iter()
                    .map(|r| {
                        r.snapshot.event_seq
                            - events.get(r.server_id.as_str()).copied().unwrap_or(0)
                    })
                    .collect::<Vec<_>>(),
            )
            .execute(&mut **tx)
            .await?;
            if updated.rows_affected() != s.len() as u64 {
                return Err(StoreError::Conflict(
                    "a snapshot changed under this batch (stale event_seq)".into(),
                ));
            }
        }
        Ok(receipt)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn load_servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        super::common::load_servers(&self.db()).await
    }

    async fn insert_server(&self, server: &NewServer) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO servers (server_id, display_name, cluster_id, public_key, key_version, \
             is_verified, registered_at_ms) VALUES ($1, $2, $3, $4, 1, FALSE, $5)",
        )
        .bind(&server.server_id)
        .bind(&server.display_name)
        .bind(&server.cluster_id)
        .bind(&server.public_key)
        .bind(server.registered_at_ms)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("server {}", server.server_id)));
            }
            other => other?,
        };
        sqlx::query(
            "INSERT INTO server_keys (server_id, key_version, public_key, fingerprint, \
             added_at_ms, added_by) VALUES ($1, 1, $2, $3, $4, $5)",
        )
        .bind(&server.server_id)
        .bind(&server.public_key)
        .bind(&server.fingerprint)
        .bind(server.registered_at_ms)
        .bind(&server.added_by)
        .execute(&mut *tx)
        .await?;
        notify_server(&mut tx, &server.server_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One transaction and three statements for the whole list (a bulk import registers
    /// thousands): the servers (`ON CONFLICT DO NOTHING RETURNING`, so a taken id is a
    /// `Conflict` for that server only), their first keys, and one `NOTIFY` per new server.
    async fn insert_servers(
        &self,
        servers: &[NewServer],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if servers.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = servers.iter().map(|s| s.server_id.as_str()).collect();
        let names: Vec<Option<&str>> = servers.iter().map(|s| s.display_name.as_deref()).collect();
        let clusters: Vec<Option<&str>> = servers.iter().map(|s| s.cluster_id.as_deref()).collect();
        let keys: Vec<&str> = servers.iter().map(|s| s.public_key.as_str()).collect();
        let at: Vec<i64> = servers.iter().map(|s| s.registered_at_ms).collect();
        let mut tx = self.pool.begin().await?;
        // `ON CONFLICT DO NOTHING` also skips a repeat of an id earlier in the same list.
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO servers (server_id, display_name, cluster_id, public_key, key_version, \
             is_verified, registered_at_ms) \
             SELECT s, d, c, k, 1, FALSE, r \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
             WITH ORDINALITY AS t(s, d, c, k, r, n) ORDER BY n \
             ON CONFLICT (server_id) DO NOTHING RETURNING server_id",
        )
        .bind(&ids)
        .bind(&names)
        .bind(&clusters)
        .bind(&keys)
        .bind(&at)
        .fetch_all(&mut *tx)
        .await?;
        let mut new: std::collections::HashSet<&str> =
            inserted.iter().map(String::as_str).collect();
        // The first server of each inserted id is the one registered; any other is a conflict.
        let results: Vec<Result<(), StoreError>> = servers
            .iter()
            .map(|s| {
                if new.remove(s.server_id.as_str()) {
                    Ok(())
                } else {
                    Err(StoreError::Conflict(format!("server {}", s.server_id)))
                }
            })
            .collect();
        let registered: Vec<&NewServer> = servers
            .iter()
            .zip(&results)
            .filter_map(|(s, r)| r.is_ok().then_some(s))
            .collect();
        let pick =
            |f: fn(&NewServer) -> &str| -> Vec<&str> { registered.iter().map(|s| f(s)).collect() };
        sqlx::query(
            "INSERT INTO server_keys (server_id, key_version, public_key, fingerprint, \
             added_at_ms, added_by) \
             SELECT s, 1, k, f, a, b \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[]) \
             AS t(s, k, f, a, b)",
        )
        .bind(pick(|s| &s.server_id))
        .bind(pick(|s| &s.public_key))
        .bind(pick(|s| &s.fingerprint))
        .bind(
            registered
                .iter()
                .map(|s| s.registered_at_ms)
                .collect::<Vec<i64>>(),
        )
        .bind(pick(|s| &s.added_by))
        .execute(&mut *tx)
        .await?;
        // Delivered to every listening host when (and only if) the transaction commits.
        sqlx::query("SELECT pg_notify($1, 'server:' || s) FROM UNNEST($2::text[]) AS t(s)")
            .bind(CHANGES_CHANNEL)
            .bind(pick(|s| &s.server_id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(results)
    }

    async fn set_verified(&self, server_id: &str, verified: bool) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE servers SET is_verified = $1 WHERE server_id = $2")
            .bind(verified)
            .bind(server_id)
            .execute(&mut *tx)
            .await?;
        notify_server(&mut tx, server_id).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn lock_servers(&self, server_ids: &[String]) -> Result<Vec<ServerRecord>, StoreError> {
        let mut open = self.batch.lock().await;
        if let Some(stale) = open.take() {
            stale.rollback().await?;
        }
        if server_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        // ORDER BY puts the row locks in id order: two hosts locking overlapping sets queue
        // behind each other instead of deadlocking.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SERVER_COLUMNS} FROM servers WHERE server_id = ANY($1) \
             ORDER BY server_id FOR UPDATE"
        )))
        .bind(server_ids)
        .fetch_all(&mut *tx)
        .await?;
        let records = rows
            .iter()
            .map(server_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        *open = Some(tx);
        Ok(records)
    }

    async fn abandon(&self) {
        if let Some(tx) = self.batch.lock().await.take()
            && let Err(e) = tx.rollback().await
        {
            tracing::warn!(error = %e, "rolling back an abandoned batch failed");
        }
    }

    async fn subscribe_changes(&self) -> Result<Option<mpsc::Receiver<ChangeNotice>>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        let (tx, rx) = mpsc::channel(1024);
        let notices = tx.clone();
        tokio::spawn(async move {
            loop {
                let notice = tokio::select! {
                    () = notices.closed() => break,
                    received = listener.try_recv() => match received {
                        Ok(Some(n)) => parse_notice(n.payload()),
                        // The connection dropped and notifications may be lost: re-read all.
                        Ok(None) => ChangeNotice::Resync,
                        Err(e) => {
                            tracing::warn!(error = %e, "change listener failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            ChangeNotice::Resync
                        }
                    },
                };
                if notices.send(notice).await.is_err() {
                    break;
                }
            }
        });
        let store = self.clone();
        tokio::spawn(async move {
            let mut resync = tokio::time::interval(RESYNC_EVERY);
            let mut partitions = tokio::time::interval(PARTITIONS_EVERY);
            resync.tick().await;
            partitions.tick().await;
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    _ = resync.tick() => {
                        if tx.send(ChangeNotice::Resync).await.is_err() {
                            break;
                        }
                    }
                    _ = partitions.tick() => {
                        if let Err(e) = store.ensure_partitions(crate::clock::now_ms()).await {
                            tracing::warn!(error = %e, "partition maintenance failed");
                        }
                    }
                }
            }
        });
        Ok(Some(rx))
    }

    async fn commit(&self, batch: &WriteBatch) -> Result<CommitReceipt, StoreError> {
        let open = self.batch.lock().await.take();
        if batch.is_empty() {
            if let Some(tx) = open {
                tx.rollback().await?;
            }
            return Ok(CommitReceipt::default());
        }
        let mut tx = match open {
            Some(tx) => tx,
            None => self.pool.begin().await?,
        };
        match self.write_batch(&mut tx, batch).await {
            Ok(receipt) => {
                tx.commit().await?;
                Ok(receipt)
            }
            Err(e) => {
                // Dropping the transaction would roll it back too; saying so frees the locks now.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO policy_activations (at_ms, who, from_digest, to_digest, reason) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(a.at_ms)
        .bind(&a.who)
        .bind(&a.from_digest)
        .bind(&a.to_digest)
        .bind(&a.reason)
        .execute(&mut *tx)
        .await?;
        // Every other host follows the activation when (and only if) it commits.
        notify(&mut tx, &format!("policy:{}", a.to_digest)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn active_policy_digest(&self) -> Result<Option<String>, StoreError> {
        super::common::active_policy_digest(&self.db()).await
    }

    async fn transitions_after(
        &self,
        after_id: i64,
        server_id: Option<&str>,
        cluster_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<super::ClusterTransition>, StoreError> {
        super::common::transitions_after(&self.db(), after_id, server_id, cluster_id, limit).await
    }

    async fn replay_history(
        &self,
        server_id: &str,
        window_ms: i64,
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        super::common::replay_history(&self.db(), server_id, window_ms).await
    }

    async fn list_policies(&self) -> Result<Vec<super::PolicySummary>, StoreError> {
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

    async fn activations(&self, limit: u32) -> Result<Vec<super::StoredActivation>, StoreError> {
        super::common::activations(&self.db(), limit).await
    }

    async fn rotate_key(&self, rotation: &super::trust::KeyRotation) -> Result<bool, StoreError> {
        let rotated = super::common::rotate_key(&self.db(), rotation).await?;
        if rotated {
            // After the commit: a host that misses this picks the key up at the next resync.
            let mut tx = self.pool.begin().await?;
            notify_server(&mut tx, &rotation.server_id).await?;
            tx.commit().await?;
        }
        Ok(rotated)
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

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::month_partition;

    #[test]
    fn month_partitions_cover_whole_utc_months_across_a_year_end() {
        // 2026-12-15T00:00:00Z
        let mid_december = 1_797_292_800_000;
        let (name, from, to) = month_partition(mid_december, 0).expect("valid");
        assert_eq!(name, "heartbeats_y2026m12");
        assert_eq!(from, 1_796_083_200_000); // 2026-12-01
        assert_eq!(to, 1_798_761_600_000); // 2027-01-01
        let (next, next_from, _) = month_partition(mid_december, 1).expect("valid");
        assert_eq!((next.as_str(), next_from), ("heartbeats_y2027m01", to));
        let (previous, _, previous_to) = month_partition(mid_december, -12).expect("valid");
        assert_eq!(previous, "heartbeats_y2025m12");
        assert_eq!(previous_to, 1_767_225_600_000); // 2026-01-01
    }
}

//! The PostgreSQL backend: the scale-out store several hosts share.
//!
//! Same tables and rules as SQLite (migrations/postgres). What differs:
//! - one batch is one transaction that starts with [`Backend::lock_servers`]: the rows of the
//!   servers it folds are locked (`SELECT … FOR UPDATE`, in id order so two hosts never
//!   deadlock on each other) and re-read, so the writer folds the latest committed snapshot even
//!   when another host wrote it; the locks end with the commit (or a rollback, or the death of
//!   the connection — a host that dies leaves no lock behind);
//! - the batch itself (`batch.rs`) writes rows as arrays and updates each snapshot only from the
//!   `event_seq` it started from;
//! - admin changes `NOTIFY vigil_changes` and every host follows them (`changes.rs`);
//! - `heartbeats` is partitioned by month, created ahead of time (`partitions.rs`).

mod batch;
mod changes;
mod partitions;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
// Dynamic SQL here is built only from constant column lists; every value is bound.
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};
use tokio::sync::{Mutex, mpsc};

use super::reads::SERVER_COLUMNS;
use super::{
    ActivationRow, Backend, ChangeNotice, CommitReceipt, NewServer, ServerRecord, StoreError,
    WriteBatch,
};
use changes::{CHANGES_CHANNEL, notify, notify_server};

/// A PostgreSQL database holding Vigil's tables, shared by any number of hosts.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// sqlx pools are cheap-clone handles.
    pool: PgPool,
    /// The open transaction of the batch being folded (see [`Backend::lock_servers`]). A tokio
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
        partitions::ensure(&store.pool, crate::clock::now_ms()).await?;
        Ok(store)
    }

    /// The pool the shared statements run on ([`super::Store`]'s reads and operations).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn server_from_row(row: &PgRow) -> Result<ServerRecord, StoreError> {
    super::reads::server_row!(row)
}

#[async_trait]
impl Backend for PostgresStore {
    async fn close(&self) {
        self.pool.close().await;
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
        Ok(Some(changes::subscribe(&self.pool).await?))
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
        match batch::write(&mut tx, batch).await {
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

    async fn announce_server(&self, server_id: &str) -> Result<(), StoreError> {
        // After the change committed: a host that misses this picks it up at the next resync.
        let mut tx = self.pool.begin().await?;
        notify_server(&mut tx, server_id).await?;
        tx.commit().await?;
        Ok(())
    }
}

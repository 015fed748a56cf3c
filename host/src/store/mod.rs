//! Storage: the only room that sees a database pool.
//!
//! Everyone else holds a [`Store`], a cheap-`Clone` handle, and asks it. History (heartbeats,
//! rejections, transitions, key history, policy activations) can only be appended: there is no
//! method to edit or delete it, and the database refuses it too. The `servers` snapshot is a
//! cache the engine overwrites as a whole ([`SnapshotRow`]). Reads never evaluate a policy. One
//! [`WriteBatch`] is one transaction (group commit).
//!
//! - [`rows`]: the row types (plain data, no SQL).
//! - `reads.rs`: every read, written once for both backends.
//! - `rankings.rs`: rankings and leaderboards (a snapshot value times the unverified weight).
//! - `periods.rs`: the host's own up-periods and the gaps between them (append-only).
//! - `admin.rs`: operator changes to servers (labels, pause, retirement, their audit trail)
//!   and maintenance windows, written once for both backends.
//! - `ops/`: the operations tables — admin API keys, the host key, pending commands, the alert
//!   outbox — whose statements both backends share.
//! - `sqlite/` and `postgres/`: the `Backend`s, i.e. what the two databases do differently
//!   (the batch commit, registrations, row locks, change notices, closing).
//!
//! Storage imports nothing above it but [`crate::clock`].

mod admin;
mod ops;
mod periods;
mod postgres;
mod rankings;
mod reads;
pub mod rows;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use periods::{ALIVE_STALE_MS, HostRun};
pub use rankings::{RankValue, Ranked, RankingQuery};
pub use rows::*;

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
    /// This backend does not do that (the message says what to do instead).
    #[error("{0}")]
    Unsupported(String),
}

/// The file a `sqlite:` URL names, or `None` for an in-memory database or a PostgreSQL URL.
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr as _;
    if crate::config::is_postgres_url(url) {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    (path != std::path::Path::new(":memory:")).then(|| path.to_path_buf())
}

/// What the two backends do differently; everything else is [`Store`]'s own SQL.
#[async_trait]
pub(crate) trait Backend: std::fmt::Debug + Send + Sync + 'static {
    /// Registers several servers (and appends each one's first key) in one transaction; one
    /// result per server, in order (`Conflict` for a taken id).
    async fn insert_servers(
        &self,
        servers: &[NewServer],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError>;
    /// Sets the operator's verified flag. `false` if the server is unknown.
    async fn set_verified(&self, server_id: &str, verified: bool) -> Result<bool, StoreError>;
    /// Writes one group commit in one transaction.
    async fn commit(&self, batch: &WriteBatch) -> Result<CommitReceipt, StoreError>;
    /// Appends an activation.
    async fn append_activation(&self, activation: &ActivationRow) -> Result<(), StoreError>;
    /// Tells the other hosts that a server's row changed after a committed write (a host that
    /// misses it picks the change up at the next resync). A no-op on single-host backends.
    async fn announce_server(&self, _server_id: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether several hosts may share this database.
    fn is_shared(&self) -> bool {
        false
    }
    /// Closes the connections.
    async fn close(&self);
    /// See [`Store::lock_servers`]. A no-op on single-host backends.
    async fn lock_servers(&self, _server_ids: &[String]) -> Result<Vec<ServerRecord>, StoreError> {
        Ok(Vec::new())
    }
    /// See [`Store::abandon`].
    async fn abandon(&self) {}
    /// See [`Store::subscribe_changes`]. `None` on single-host backends.
    async fn subscribe_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<ChangeNotice>>, StoreError> {
        Ok(None)
    }
}

/// The opened database, chosen by the `[storage] url` scheme: SQLite (embedded, one host) or
/// PostgreSQL (shared by several hosts). Append-only for history; the snapshot is overwritten
/// only through [`Store::commit`].
///
/// Cheap to clone: a pool handle and an `Arc`. The reads (`reads.rs`) and the operations tables
/// (`ops/`) are its own methods over the pool; the rest is forwarded to the backend.
#[derive(Debug, Clone)]
pub struct Store {
    /// The pool the shared statements run on (the backend's own pool).
    db: Db,
    /// What the backends do differently. An `Arc` because every clone shares the backend's
    /// writer state (SQLite's writer connection, PostgreSQL's open batch transaction).
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Opens the database named by `url` (`sqlite:` or `postgres:`/`postgresql:`) and runs the
    /// migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        if crate::config::is_postgres_url(url) {
            let backend = postgres::PostgresStore::open(url, max_connections).await?;
            Ok(Self {
                db: Db::Postgres(backend.pool().clone()),
                backend: Arc::new(backend),
            })
        } else {
            let backend = sqlite::SqliteStore::open(url, max_connections).await?;
            Ok(Self {
                db: Db::Sqlite(backend.pool().clone()),
                backend: Arc::new(backend),
            })
        }
    }

    /// A consistent copy of the whole SQLite database in a new file at `path` (`VACUUM INTO`:
    /// one read transaction, so the host keeps writing meanwhile; the copy is compacted and
    /// has no WAL). Returns its size in bytes. PostgreSQL is backed up with `pg_dump` (see
    /// the README) and answers [`StoreError::Unsupported`].
    pub async fn backup_into(&self, path: &std::path::Path) -> Result<u64, StoreError> {
        match &self.db {
            Db::Sqlite(pool) => {
                let target = path.to_str().ok_or_else(|| {
                    StoreError::Unsupported(format!("{} is not a UTF-8 path", path.display()))
                })?;
                sqlx::query("VACUUM INTO $1")
                    .bind(target)
                    .execute(pool)
                    .await?;
                Ok(std::fs::metadata(path)
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?
                    .len())
            }
            Db::Postgres(_) => Err(StoreError::Unsupported(
                "a PostgreSQL database is backed up with pg_dump (README: Operations)".into(),
            )),
        }
    }

    /// **Tests only**: the raw pool, to inspect tables directly (see [`with_pool!`]).
    /// Production code never calls this: it asks the store.
    #[doc(hidden)]
    pub fn pool_for_tests(&self) -> Db {
        self.db.clone()
    }

    /// Registers a server and appends its first key. `Conflict` if the id exists.
    pub async fn insert_server(&self, server: &NewServer) -> Result<(), StoreError> {
        let mut results = self
            .backend
            .insert_servers(std::slice::from_ref(server))
            .await?;
        results.pop().unwrap_or(Ok(()))
    }

    /// Registers several servers in one transaction; one result per server, in order
    /// (`Conflict` for a taken id).
    pub async fn insert_servers(
        &self,
        servers: &[NewServer],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.backend.insert_servers(servers).await
    }

    /// Sets the operator's verified flag. `false` if the server is unknown.
    pub async fn set_verified(&self, server_id: &str, verified: bool) -> Result<bool, StoreError> {
        self.backend.set_verified(server_id, verified).await
    }

    /// Writes one group commit in one transaction.
    pub async fn commit(&self, batch: &WriteBatch) -> Result<CommitReceipt, StoreError> {
        self.backend.commit(batch).await
    }

    /// Appends an activation.
    pub async fn append_activation(&self, activation: &ActivationRow) -> Result<(), StoreError> {
        self.backend.append_activation(activation).await
    }

    /// Stores a policy component (no-op if the digest is known). `Conflict` when another
    /// component already holds its `name@version`: that pair is what `activate name@version`
    /// and the config pin select, so an impostor upload must not share it. The component the
    /// configuration itself names is trusted like the configuration and stored with
    /// `supersede` (a rebuilt bundled default keeps its version): the newest upload of a
    /// `name@version` is the one `name@version` selects.
    pub async fn save_policy(
        &self,
        policy: &PolicyRecord,
        supersede: bool,
    ) -> Result<(), StoreError> {
        macro_rules! save {
            ($tx:ident) => {{
                let taken: Option<String> = sqlx::query_scalar(
                    "SELECT digest FROM policies WHERE name = $1 AND version = $2 \
                     AND digest <> $3 LIMIT 1",
                )
                .bind(&policy.name)
                .bind(&policy.version)
                .bind(&policy.digest)
                .fetch_optional(&mut *$tx)
                .await?;
                if let Some(other) = taken.filter(|_| !supersede) {
                    return Err(StoreError::Conflict(format!(
                        "policy {}@{} is already stored as {other}",
                        policy.name, policy.version
                    )));
                }
                sqlx::query(
                    "INSERT INTO policies (digest, name, version, size_bytes, component, \
                     uploaded_by, uploaded_at_ms, signer, signature) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (digest) DO NOTHING",
                )
                .bind(&policy.digest)
                .bind(&policy.name)
                .bind(&policy.version)
                .bind(i64::try_from(policy.component.len()).unwrap_or(i64::MAX))
                .bind(&policy.component)
                .bind(&policy.uploaded_by)
                .bind(policy.uploaded_at_ms)
                .bind(&policy.signer)
                .bind(&policy.signature)
                .execute(&mut *$tx)
                .await?;
                $tx.commit().await?;
            }};
        }
        match &self.db {
            Db::Sqlite(pool) => {
                // One writer at a time on SQLite: the check and the insert see the same table.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                save!(tx);
            }
            Db::Postgres(pool) => {
                // Hosts sharing the database upload concurrently: serialise policy inserts
                // (rare) so two different components cannot both claim one name@version.
                let mut tx = pool.begin().await?;
                sqlx::query("LOCK TABLE policies IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
                save!(tx);
            }
        }
        Ok(())
    }

    /// Appends the next key to a server's history and makes it current, in one transaction,
    /// if the current version is still the expected one; `false` if it is not (or no server).
    pub async fn rotate_key(&self, rotation: &KeyRotation) -> Result<bool, StoreError> {
        let next = i64::from(rotation.expected_version) + 1;
        with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query(
                "UPDATE servers SET public_key = $1, key_version = $2 \
                 WHERE server_id = $3 AND key_version = $4",
            )
            .bind(&rotation.public_key)
            .bind(next)
            .bind(&rotation.server_id)
            .bind(i64::from(rotation.expected_version))
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() != 1 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO server_keys (server_id, key_version, public_key, fingerprint, \
                 added_at_ms, added_by) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&rotation.server_id)
            .bind(next)
            .bind(&rotation.public_key)
            .bind(&rotation.fingerprint)
            .bind(rotation.added_at_ms)
            .bind(&rotation.added_by)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        self.backend.announce_server(&rotation.server_id).await?;
        Ok(true)
    }

    /// Whether several hosts may share this database. The writer then calls
    /// [`Store::lock_servers`] before folding each batch. `false` for SQLite (one host).
    pub fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    /// Closes the connections once nothing will use the store again (a host shutting down
    /// after its writer stopped): SQLite then checkpoints its WAL into the database file and
    /// removes `-wal` and `-shm`. Later calls fail.
    pub async fn close(&self) {
        self.backend.close().await;
    }

    /// Opens the transaction of the next [`Store::commit`], locks the rows of `server_ids`
    /// until that commit (or [`Store::abandon`]) and returns their records as committed now, so
    /// the writer can refresh snapshots another host changed. A no-op on single-host backends.
    pub async fn lock_servers(
        &self,
        server_ids: &[String],
    ) -> Result<Vec<ServerRecord>, StoreError> {
        self.backend.lock_servers(server_ids).await
    }

    /// Ends the transaction [`Store::lock_servers`] opened without writing anything.
    pub async fn abandon(&self) {
        self.backend.abandon().await;
    }

    /// Changes other hosts make to servers, as they happen (plus a periodic
    /// [`ChangeNotice::Resync`]). `None` on single-host backends.
    pub async fn subscribe_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<ChangeNotice>>, StoreError> {
        self.backend.subscribe_changes().await
    }
}

/// A connection pool of either backend (cheap to clone). Only the store's own statements and
/// tests ([`Store::pool_for_tests`]) hold one.
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
/// `RETURNING`, integers for flags. Private to the store: no other room sees a pool.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

pub(crate) use with_pool;

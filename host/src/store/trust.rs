//! Storage for trust: key history and rotation, the rejection audit listing, admin API keys.
//!
//! The row types are backend-neutral; the `sqlite_*` functions are the SQLite backend's
//! implementation of the matching [`super::Store`] methods. Key history and rejections stay
//! append-only: a rotation appends to `server_keys` and moves the snapshot's current key in the
//! same transaction.

use serde::Serialize;
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::StoreError;

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

pub(crate) async fn sqlite_rotate_key(
    pool: &SqlitePool,
    rotation: &KeyRotation,
) -> Result<bool, StoreError> {
    let next = i64::from(rotation.expected_version) + 1;
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(
        "UPDATE servers SET public_key = ?, key_version = ? WHERE server_id = ? AND key_version = ?",
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
        "INSERT INTO server_keys (server_id, key_version, public_key, fingerprint, added_at_ms, \
         added_by) VALUES (?, ?, ?, ?, ?, ?)",
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
    Ok(true)
}

pub(crate) async fn sqlite_server_keys(
    pool: &SqlitePool,
    server_id: &str,
) -> Result<Vec<ServerKeyRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT key_version, public_key, fingerprint, added_at_ms, added_by FROM server_keys \
         WHERE server_id = ? ORDER BY key_version",
    )
    .bind(server_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ServerKeyRow {
                key_version: u32::try_from(r.try_get::<i64, _>("key_version")?)
                    .map_err(|e| StoreError::Corrupt(format!("key_version: {e}")))?,
                public_key: r.try_get("public_key")?,
                fingerprint: r.try_get("fingerprint")?,
                added_at_ms: r.try_get("added_at_ms")?,
                added_by: r.try_get("added_by")?,
            })
        })
        .collect()
}

pub(crate) async fn sqlite_rejections(
    pool: &SqlitePool,
    query: &RejectionQuery,
) -> Result<Vec<StoredRejection>, StoreError> {
    let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new(
        "SELECT id, received_at_ms, code, http_status, detail, claimed_server_id, seq, source_ip, \
         body_sha256 FROM rejections WHERE id < ",
    );
    sql.push_bind(query.before_id.unwrap_or(i64::MAX));
    if let Some(server) = &query.server_id {
        sql.push(" AND claimed_server_id = ")
            .push_bind(server.clone());
    }
    if let Some(code) = &query.code {
        sql.push(" AND code = ").push_bind(code.clone());
    }
    if let Some(since) = query.since_ms {
        sql.push(" AND received_at_ms >= ").push_bind(since);
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(query.limit));
    let rows = sql.build().fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(StoredRejection {
                id: r.try_get("id")?,
                received_at_ms: r.try_get("received_at_ms")?,
                code: r.try_get("code")?,
                http_status: u16::try_from(r.try_get::<i64, _>("http_status")?)
                    .map_err(|e| StoreError::Corrupt(format!("http_status: {e}")))?,
                detail: r.try_get("detail")?,
                claimed_server_id: r.try_get("claimed_server_id")?,
                seq: r.try_get("seq")?,
                source_ip: r.try_get("source_ip")?,
                body_sha256: r.try_get("body_sha256")?,
            })
        })
        .collect()
}

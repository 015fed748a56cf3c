//! `admin_keys`: named admin API keys, stored as the token's SHA-256 only.
//!
//! Never sees a token: `trust/admin_keys.rs` generates and hashes it.

use sqlx::Row;

use crate::store::with_pool;
use crate::store::{AdminKey, NewAdminKey, Scope, Store, StoreError};

/// An [`AdminKey`] from a row of either backend.
fn key_from_row<R: Row>(r: &R) -> Result<AdminKey, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AdminKey {
        name: r.try_get("name")?,
        scope: Scope::parse(&r.try_get::<String, _>("scope")?)?,
        prefix: r.try_get("prefix")?,
        created_at_ms: r.try_get("created_at_ms")?,
        revoked_at_ms: r.try_get("revoked_at_ms")?,
        key_sha256: r.try_get("key_sha256")?,
    })
}

impl Store {
    /// Stores a new admin API key. `Conflict` if the name is taken.
    pub async fn insert_admin_key(&self, key: &NewAdminKey) -> Result<(), StoreError> {
        let done = with_pool!(&self.db, pool => sqlx::query(
            "INSERT INTO admin_keys (name, scope, key_sha256, prefix, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.name)
        .bind(key.scope.as_str())
        .bind(&key.key_sha256)
        .bind(&key.prefix)
        .bind(key.created_at_ms)
        .execute(pool)
        .await
        .map(|_| ()));
        match done {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("admin key {}", key.name)))
            }
            other => other.map_err(StoreError::from),
        }
    }

    /// Every admin API key, oldest first.
    pub async fn admin_keys(&self) -> Result<Vec<AdminKey>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query("SELECT * FROM admin_keys ORDER BY id")
                .fetch_all(pool)
                .await?;
            rows.iter().map(key_from_row).collect()
        })
    }

    /// Revokes the admin API key named `name`; `false` if there is no such active key.
    pub async fn revoke_admin_key(&self, name: &str, now_ms: i64) -> Result<bool, StoreError> {
        let affected = with_pool!(&self.db, pool => sqlx::query(
            "UPDATE admin_keys SET revoked_at_ms = $1 WHERE name = $2 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    /// The admin API key with this token hash (revoked or not).
    pub async fn admin_key(&self, key_sha256: &str) -> Result<Option<AdminKey>, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query("SELECT * FROM admin_keys WHERE key_sha256 = $1")
                .bind(key_sha256)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(key_from_row).transpose()
        })
    }

    /// Whether any admin API key is active (the admin API is enabled without a bootstrap
    /// token).
    pub async fn any_admin_key(&self) -> Result<bool, StoreError> {
        let active = with_pool!(&self.db, pool => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM (SELECT 1 FROM admin_keys WHERE revoked_at_ms IS NULL LIMIT 1) k",
        )
        .fetch_one(pool)
        .await?);
        Ok(active == 1)
    }
}

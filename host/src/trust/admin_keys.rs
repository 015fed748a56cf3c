//! Named admin API keys: `vgl_` + 43 characters of URL-safe base64 (256 random bits).
//!
//! Only SHA-256 of a key is stored (`admin_keys`), with its name, scope and the first characters
//! to recognise it in listings. A presented key is hashed and looked up per request (so a
//! revocation acts on the next request, whichever process wrote it), and the stored hash is
//! compared again in constant time. Scopes: `admin` (every admin route) and `read` (the read-only
//! admin routes and, with `[directory] require_key`, the directory).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::store::{Db, StoreError};
use crate::with_pool;

/// Every key starts with this, so a leaked one is recognisable (secret scanners).
pub const KEY_PREFIX: &str = "vgl_";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every admin route.
    Admin,
    /// Read-only routes: key history, the rejection audit trail, the directory.
    Read,
}

impl Scope {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Read => "read",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "admin" => Ok(Scope::Admin),
            "read" => Ok(Scope::Read),
            other => Err(StoreError::Corrupt(format!("admin key scope {other:?}"))),
        }
    }
}

/// One stored key (never the secret).
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

/// A fresh random token.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Hex SHA-256 of a token.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

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

/// Creates a key named `name`; returns the token (shown once, never stored).
pub async fn create(db: &Db, name: &str, scope: Scope, now_ms: i64) -> Result<String, StoreError> {
    let token = generate();
    let done = with_pool!(db, pool => sqlx::query(
        "INSERT INTO admin_keys (name, scope, key_sha256, prefix, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(name)
    .bind(scope.as_str())
    .bind(hash(&token))
    .bind(&token[..KEY_PREFIX.len() + 6])
    .bind(now_ms)
    .execute(pool)
    .await
    .map(|_| ()));
    match done {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Conflict(format!("admin key {name}")))
        }
        other => other.map(|()| token).map_err(StoreError::from),
    }
}

/// Every key, oldest first.
pub async fn list(db: &Db) -> Result<Vec<AdminKey>, StoreError> {
    with_pool!(db, pool => {
        let rows = sqlx::query("SELECT * FROM admin_keys ORDER BY id")
            .fetch_all(pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    })
}

/// Revokes the key named `name`; `false` if there is no such active key.
pub async fn revoke(db: &Db, name: &str, now_ms: i64) -> Result<bool, StoreError> {
    let affected = with_pool!(db, pool => sqlx::query(
        "UPDATE admin_keys SET revoked_at_ms = $1 WHERE name = $2 AND revoked_at_ms IS NULL",
    )
    .bind(now_ms)
    .bind(name)
    .execute(pool)
    .await?
    .rows_affected());
    Ok(affected == 1)
}

/// The key with this token hash (revoked or not).
pub async fn find(db: &Db, key_sha256: &str) -> Result<Option<AdminKey>, StoreError> {
    with_pool!(db, pool => {
        let row = sqlx::query("SELECT * FROM admin_keys WHERE key_sha256 = $1")
            .bind(key_sha256)
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    })
}

/// Whether any key is active (the admin API is enabled without a bootstrap token).
pub async fn any_active(db: &Db) -> Result<bool, StoreError> {
    let active = with_pool!(db, pool => sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM (SELECT 1 FROM admin_keys WHERE revoked_at_ms IS NULL LIMIT 1) k",
    )
    .fetch_one(pool)
    .await?);
    Ok(active == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
    }
}

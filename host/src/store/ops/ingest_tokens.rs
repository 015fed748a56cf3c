//! `ingest_tokens`: per-server credentials for compat clients, stored as the token's SHA-256
//! only.
//!
//! Never sees a token: `api/tokens.rs` generates and hashes it.

use sqlx::Row;

use crate::store::with_pool;
use crate::store::{IngestToken, NewIngestToken, Store, StoreError, TokenKind};

/// An [`IngestToken`] from a row of either backend.
fn token_from_row<R: Row>(r: &R) -> Result<IngestToken, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(IngestToken {
        id: r.try_get("id")?,
        server_id: r.try_get("server_id")?,
        kind: TokenKind::parse(&r.try_get::<String, _>("kind")?)?,
        prefix: r.try_get("prefix")?,
        created_at_ms: r.try_get("created_at_ms")?,
        created_by: r.try_get("created_by")?,
        revoked_at_ms: r.try_get("revoked_at_ms")?,
        revoked_by: r.try_get("revoked_by")?,
    })
}

const COLUMNS: &str =
    "id, server_id, kind, prefix, created_at_ms, created_by, revoked_at_ms, revoked_by";

impl Store {
    /// Stores a new ingest token; its id. `Conflict` if the hash is taken (a collision of
    /// random tokens: never in practice).
    pub async fn insert_ingest_token(&self, token: &NewIngestToken) -> Result<i64, StoreError> {
        let done = with_pool!(&self.db, pool => sqlx::query_scalar::<_, i64>(
            "INSERT INTO ingest_tokens (server_id, kind, token_sha256, prefix, created_at_ms, \
             created_by) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&token.server_id)
        .bind(token.kind.as_str())
        .bind(&token.token_sha256)
        .bind(&token.prefix)
        .bind(token.created_at_ms)
        .bind(&token.created_by)
        .fetch_one(pool)
        .await);
        match done {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict("ingest token".into()))
            }
            other => other.map_err(StoreError::from),
        }
    }

    /// A server's ingest tokens, oldest first (revoked ones included).
    pub async fn ingest_tokens(&self, server_id: &str) -> Result<Vec<IngestToken>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM ingest_tokens WHERE server_id = $1 ORDER BY id"
            )))
            .bind(server_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(token_from_row).collect()
        })
    }

    /// Revokes token `id` of `server_id`; `false` if there is no such active token.
    pub async fn revoke_ingest_token(
        &self,
        server_id: &str,
        id: i64,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let affected = with_pool!(&self.db, pool => sqlx::query(
            "UPDATE ingest_tokens SET revoked_at_ms = $1, revoked_by = $2 \
             WHERE id = $3 AND server_id = $4 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(by)
        .bind(id)
        .bind(server_id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    /// The server an active token of `kind` with this hash speaks for; `None` when there is no
    /// such token or it was revoked.
    pub async fn ingest_token_owner(
        &self,
        kind: TokenKind,
        token_sha256: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            with_pool!(&self.db, pool => sqlx::query_scalar::<_, String>(
            "SELECT server_id FROM ingest_tokens \
             WHERE token_sha256 = $1 AND kind = $2 AND revoked_at_ms IS NULL",
        )
        .bind(token_sha256)
        .bind(kind.as_str())
        .fetch_optional(pool)
        .await?),
        )
    }
}

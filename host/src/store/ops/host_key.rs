//! `host_keys`: the one command-signing key every host sharing the database uses.
//!
//! Stored as given; `commands.rs` generates and decodes it.

use crate::store::with_pool;
use crate::store::{HostKeyRow, Store, StoreError};

impl Store {
    /// Keeps `fresh` as the host key if the database has none yet, then returns the stored
    /// secret key (base64): `fresh`'s, or the one an earlier (or concurrent) host stored.
    pub async fn host_key_or_insert(&self, fresh: &HostKeyRow) -> Result<String, StoreError> {
        with_pool!(&self.db, pool => {
            // Two hosts starting at once on one database: the first insert wins, both read it.
            sqlx::query(
                "INSERT INTO host_keys (id, secret_key, public_key, created_at_ms) \
                 VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&fresh.secret_key)
            .bind(&fresh.public_key)
            .bind(fresh.created_at_ms)
            .execute(pool)
            .await?;
            Ok(sqlx::query_scalar("SELECT secret_key FROM host_keys WHERE id = 1")
                .fetch_one(pool)
                .await?)
        })
    }
}

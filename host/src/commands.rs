//! Pending commands: operators queue a command for a server; the next accepted heartbeat's 202
//! carries it (`pending_commands`), signed by the host's own ed25519 key; the agent answers
//! with a result signed by its own key.
//!
//! Both signatures follow the heartbeat rule: ed25519 over a prefix line plus the RFC 8785
//! (JCS) canonical JSON of the object without its `signature` member —
//! [`COMMAND_PREFIX`] for the host's envelope, [`RESULT_PREFIX`] for the agent's result. The
//! host key is generated on first start and kept in the database (`host_keys`), so every
//! host sharing a database signs alike and a restored backup keeps the key agents trust; its
//! public half is `GET /v1/host-key`. Delivery and result are each recorded once (an
//! `IS NULL`-guarded UPDATE) and every step is appended to `command_log`. Commands past
//! `expires_at` are never delivered.
//!
//! This speaks SQLite directly (operations tables, not history).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Map, Value, json};
use sqlx::Row;

use crate::store::Db;
use crate::with_pool;

/// Appends one step to `command_log` inside the open transaction `$tx`.
macro_rules! log {
    ($tx:ident, $command_id:expr, $at_ms:expr, $event:expr, $detail:expr) => {
        sqlx::query(
            "INSERT INTO command_log (command_id, at_ms, event, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind($command_id)
        .bind($at_ms)
        .bind($event)
        .bind($detail.to_string())
        .execute(&mut *$tx)
        .await?
    };
}

use crate::clock::format_rfc3339_ms;
use crate::ingest::signature::{PublicKey, SignatureError, parse_signature, public_key_of};

/// Prefix of the host-signed command envelope.
pub const COMMAND_PREFIX: &[u8] = b"vigil-command-v1\n";
/// Prefix of the agent-signed command result.
pub const RESULT_PREFIX: &[u8] = b"vigil-command-result-v1\n";

/// The bytes signed for `body` under `prefix` (its `signature` member left out).
pub fn signed_message(prefix: &[u8], body: &Map<String, Value>) -> Result<Vec<u8>, SignatureError> {
    let mut unsigned = body.clone();
    unsigned.remove("signature");
    let canonical = serde_json_canonicalizer::to_vec(&Value::Object(unsigned))
        .map_err(|e| SignatureError::Canonical(e.to_string()))?;
    Ok([prefix, &canonical].concat())
}

/// Signs `body` under `prefix`; base64 signature.
pub fn sign(
    prefix: &[u8],
    key: &SigningKey,
    body: &Map<String, Value>,
) -> Result<String, SignatureError> {
    Ok(STANDARD.encode(key.sign(&signed_message(prefix, body)?).to_bytes()))
}

/// Verifies the `signature` member of `body` under `prefix`.
pub fn verify(
    prefix: &[u8],
    key: &PublicKey,
    body: &Map<String, Value>,
) -> Result<(), SignatureError> {
    let signature = body
        .get("signature")
        .and_then(Value::as_str)
        .ok_or(SignatureError::Malformed)?;
    key.verify(&signed_message(prefix, body)?, &parse_signature(signature)?)
}

/// Why a command operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such command for that server.
    #[error("command {0} does not exist for this server")]
    Unknown(String),
    /// The command has not been delivered yet (or expired undelivered).
    #[error("command {0} was never delivered")]
    NotDelivered(String),
    /// A result is already recorded.
    #[error("command {0} already has a result")]
    ResultExists(String),
    /// Storage failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Signing failed.
    #[error("signing: {0}")]
    Signing(#[from] SignatureError),
}

/// How often a host sharing its database re-reads which servers have pending commands.
const WAITING_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Servers with an undelivered, unexpired command.
async fn waiting_servers(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    with_pool!(db, pool => sqlx::query_scalar(
        "SELECT DISTINCT server_id FROM commands WHERE delivered_at_ms IS NULL \
         AND expires_at_ms > $1",
    )
    .bind(crate::clock::now_ms())
    .fetch_all(pool)
    .await)
}

/// The command desk: the host key and the command tables. Cheap to clone.
#[derive(Clone)]
pub struct Commands {
    /// sqlx pools are cheap-clone handles.
    db: Db,
    key: SigningKey,
    /// Servers that may have undelivered commands: the heartbeat path skips the database for
    /// everyone else. A std `Mutex` because sections are a set lookup and never await.
    waiting: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands")
            .field("host_key", &self.public_key().fingerprint())
            .finish()
    }
}

impl Commands {
    /// Loads the host key, generating and storing it on first start.
    pub async fn open(db: Db) -> Result<Self, CommandError> {
        let fresh = SigningKey::generate(&mut rand::rngs::OsRng);
        let key = with_pool!(&db, pool => {
            // Two hosts starting at once on one database: the first insert wins, both read it.
            sqlx::query(
                "INSERT INTO host_keys (id, secret_key, public_key, created_at_ms) \
                 VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
            )
            .bind(STANDARD.encode(fresh.to_bytes()))
            .bind(public_key_of(&fresh).to_base64())
            .bind(crate::clock::now_ms())
            .execute(pool)
            .await?;
            let secret: String = sqlx::query_scalar("SELECT secret_key FROM host_keys WHERE id = 1")
                .fetch_one(pool)
                .await?;
            crate::ingest::signature::signing_key_from_base64(&secret)?
        });
        let waiting = std::sync::Arc::new(std::sync::Mutex::new(
            waiting_servers(&db)
                .await?
                .into_iter()
                .collect::<std::collections::HashSet<String>>(),
        ));
        if matches!(db, Db::Postgres(_)) {
            // Other hosts sharing the database queue commands too: re-read who is waiting
            // every second, so a command queued on one host reaches its agent through any.
            let (db, weak) = (db.clone(), std::sync::Arc::downgrade(&waiting));
            tokio::spawn(async move {
                let mut every = tokio::time::interval(WAITING_REFRESH);
                loop {
                    every.tick().await;
                    let Some(set) = weak.upgrade() else { break };
                    match waiting_servers(&db).await {
                        Ok(ids) => {
                            if let Ok(mut set) = set.lock() {
                                set.extend(ids);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot refresh pending commands"),
                    }
                }
            });
        }
        Ok(Self { db, key, waiting })
    }

    /// The host's public key.
    pub fn public_key(&self) -> PublicKey {
        public_key_of(&self.key)
    }

    /// Queues a command; returns its signed envelope.
    pub async fn queue(
        &self,
        server_id: &str,
        command: &str,
        args: Value,
        ttl_ms: i64,
        created_by: &str,
    ) -> Result<Value, CommandError> {
        let now = crate::clock::now_ms();
        let id: [u8; 16] = rand::random();
        let command_id = hex::encode(id);
        let mut envelope = Map::new();
        envelope.insert("command_id".into(), json!(command_id));
        envelope.insert("server_id".into(), json!(server_id));
        envelope.insert("command".into(), json!(command));
        envelope.insert("args".into(), args);
        envelope.insert("issued_at".into(), json!(format_rfc3339_ms(now)));
        envelope.insert("expires_at".into(), json!(format_rfc3339_ms(now + ttl_ms)));
        let signature = sign(COMMAND_PREFIX, &self.key, &envelope)?;
        envelope.insert("signature".into(), json!(signature));
        let envelope = Value::Object(envelope);
        with_pool!(&self.db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO commands (command_id, server_id, command, envelope, issued_at_ms, \
             expires_at_ms, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&command_id)
        .bind(server_id)
        .bind(command)
        .bind(envelope.to_string())
        .bind(now)
        .bind(now + ttl_ms)
        .bind(created_by)
        .execute(&mut *tx)
        .await?;
        log!(tx, &command_id, now, "queued", json!({ "by": created_by }));
        tx.commit().await?;
        });
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(server_id.to_owned());
        }
        tracing::info!(%server_id, %command, %command_id, "command queued");
        Ok(envelope)
    }

    /// Takes every unexpired, undelivered command of `server_id` (oldest first), marking each
    /// delivered exactly once.
    pub async fn deliver(&self, server_id: &str) -> Result<Vec<Value>, CommandError> {
        // Taken out of the set before reading, so a command queued meanwhile re-adds it.
        let waiting = self
            .waiting
            .lock()
            .map(|mut set| set.remove(server_id))
            .unwrap_or(true);
        if !waiting {
            return Ok(Vec::new());
        }
        let taken = self.take(server_id).await;
        if taken.is_err()
            && let Ok(mut set) = self.waiting.lock()
        {
            set.insert(server_id.to_owned());
        }
        taken
    }

    async fn take(&self, server_id: &str) -> Result<Vec<Value>, CommandError> {
        let now = crate::clock::now_ms();
        let mut out = Vec::new();
        with_pool!(&self.db, pool => {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE commands SET delivered_at_ms = $1 WHERE server_id = $2 \
             AND delivered_at_ms IS NULL AND expires_at_ms > $3 \
             RETURNING command_id, envelope, issued_at_ms",
        )
        .bind(now)
        .bind(server_id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let command_id: String = row.try_get("command_id")?;
            let envelope: String = row.try_get("envelope")?;
            let issued: i64 = row.try_get("issued_at_ms")?;
            log!(tx, &command_id, now, "delivered", json!({}));
            out.push((
                issued,
                serde_json::from_str(&envelope).unwrap_or(Value::Null),
            ));
        }
        tx.commit().await?;
        });
        out.sort_by_key(|(issued, _)| *issued);
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }

    /// Records a verified result of a delivered command, once.
    pub async fn record_result(
        &self,
        server_id: &str,
        command_id: &str,
        status: &str,
        body: &Value,
    ) -> Result<(), CommandError> {
        let now = crate::clock::now_ms();
        with_pool!(&self.db, pool => {
        let mut tx = pool.begin().await?;
        let done = sqlx::query(
            "UPDATE commands SET result_at_ms = $1, result_status = $2, result_body = $3 \
             WHERE command_id = $4 AND server_id = $5 AND delivered_at_ms IS NOT NULL \
             AND result_at_ms IS NULL",
        )
        .bind(now)
        .bind(status)
        .bind(body.to_string())
        .bind(command_id)
        .bind(server_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
                "SELECT delivered_at_ms, result_at_ms FROM commands \
                 WHERE command_id = $1 AND server_id = $2",
            )
            .bind(command_id)
            .bind(server_id)
            .fetch_optional(&mut *tx)
            .await?;
            return Err(match row {
                None => CommandError::Unknown(command_id.into()),
                Some((None, _)) => CommandError::NotDelivered(command_id.into()),
                Some((Some(_), _)) => CommandError::ResultExists(command_id.into()),
            });
        }
        log!(tx, command_id, now, "result", json!({ "status": status }));
        tx.commit().await?;
        });
        tracing::info!(%server_id, %command_id, %status, "command result recorded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_every_member_and_the_prefix() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut body = Map::new();
        body.insert("command".into(), json!("restart"));
        body.insert("args".into(), json!({"force": true}));
        let signature = sign(COMMAND_PREFIX, &key, &body).expect("signs");
        body.insert("signature".into(), json!(signature));
        let public = public_key_of(&key);
        assert!(verify(COMMAND_PREFIX, &public, &body).is_ok());
        assert!(
            verify(RESULT_PREFIX, &public, &body).is_err(),
            "prefixes separate domains"
        );
        body.insert("args".into(), json!({"force": false}));
        assert!(verify(COMMAND_PREFIX, &public, &body).is_err());
    }
}

//! Pending commands: operators queue a command for a server; the next accepted heartbeat's 202
//! carries it (`pending_commands`), signed by the host's own ed25519 key; the agent answers
//! with a result signed by its own key.
//!
//! Both signatures follow the heartbeat rule: ed25519 over a prefix line plus the RFC 8785
//! (JCS) canonical JSON of the object without its `signature` member —
//! [`COMMAND_PREFIX`] for the host's envelope, [`RESULT_PREFIX`] for the agent's result. The
//! host key is generated on first start and kept in the database (`host_keys`), so every
//! host sharing a database signs alike and a restored backup keeps the key agents trust; its
//! public half is `GET /v1/host-key`. Delivery is at least once: each new signed heartbeat
//! carries every unexpired command still without a result (never a duplicate or unsigned one:
//! those prove nothing about who sent them). The result is recorded once (an `IS NULL`-guarded
//! UPDATE) and stops delivery; the first delivery and the result are appended to
//! `command_log`. Commands past `expires_at` are never delivered.
//!
//! This room signs and verifies; the store keeps the key and the command tables
//! (`store/ops/`), in SQL both backends accept.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Map, Value, json};

use crate::clock::format_rfc3339_ms;
use crate::ingest::signature::{PublicKey, SignatureError, parse_signature, public_key_of};
use crate::store::{CommandResultRow, HostKeyRow, NewCommand, ResultRecorded, Store, StoreError};

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
    #[error("{0}")]
    Database(#[from] StoreError),
    /// Signing failed.
    #[error("signing: {0}")]
    Signing(#[from] SignatureError),
}

/// How often a host sharing its database re-reads which servers have pending commands.
const WAITING_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Servers with an undelivered, unexpired command.
async fn waiting_servers(store: &Store) -> Result<Vec<String>, StoreError> {
    store.servers_with_commands(crate::clock::now_ms()).await
}

/// The command desk: the host key and the command tables. Cheap to clone.
#[derive(Clone)]
pub struct Commands {
    /// The store handle is cheap to clone.
    store: Store,
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
    pub async fn open(store: Store) -> Result<Self, CommandError> {
        let fresh = SigningKey::generate(&mut rand::rngs::OsRng);
        let secret = store
            .host_key_or_insert(&HostKeyRow {
                secret_key: STANDARD.encode(fresh.to_bytes()),
                public_key: public_key_of(&fresh).to_base64(),
                created_at_ms: crate::clock::now_ms(),
            })
            .await?;
        let key = crate::ingest::signature::signing_key_from_base64(&secret)?;
        let waiting = std::sync::Arc::new(std::sync::Mutex::new(
            waiting_servers(&store)
                .await?
                .into_iter()
                .collect::<std::collections::HashSet<String>>(),
        ));
        if store.is_shared() {
            // Other hosts sharing the database queue commands too: re-read who is waiting
            // every second, so a command queued on one host reaches its agent through any.
            let (store, weak) = (store.clone(), std::sync::Arc::downgrade(&waiting));
            tokio::spawn(async move {
                let mut every = tokio::time::interval(WAITING_REFRESH);
                loop {
                    every.tick().await;
                    let Some(set) = weak.upgrade() else { break };
                    match waiting_servers(&store).await {
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
        Ok(Self {
            store,
            key,
            waiting,
        })
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
        self.store
            .insert_command(&NewCommand {
                command_id: command_id.clone(),
                server_id: server_id.to_owned(),
                command: command.to_owned(),
                envelope: envelope.to_string(),
                issued_at_ms: now,
                expires_at_ms: now + ttl_ms,
                created_by: created_by.to_owned(),
            })
            .await?;
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(server_id.to_owned());
        }
        tracing::info!(%server_id, %command, %command_id, "command queued");
        Ok(envelope)
    }

    /// Every unexpired command of `server_id` without a result yet (oldest first): delivery is
    /// at least once, repeated on each call until the agent's signed result is recorded, so
    /// the caller must only call this for a request the agent proved it sent (a new signed
    /// heartbeat). Agents tell repeats apart by `command_id`.
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
        // Still waiting while anything is unanswered (or the read failed).
        if taken.as_ref().map_or(true, |t| !t.is_empty())
            && let Ok(mut set) = self.waiting.lock()
        {
            set.insert(server_id.to_owned());
        }
        taken
    }

    async fn take(&self, server_id: &str) -> Result<Vec<Value>, CommandError> {
        let now = crate::clock::now_ms();
        let mut out: Vec<(i64, Value)> = self
            .store
            .take_commands(server_id, now)
            .await?
            .into_iter()
            .map(|c| {
                let envelope = serde_json::from_str(&c.envelope).unwrap_or(Value::Null);
                (c.issued_at_ms, envelope)
            })
            .collect();
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
        let recorded = self
            .store
            .record_command_result(&CommandResultRow {
                server_id: server_id.to_owned(),
                command_id: command_id.to_owned(),
                status: status.to_owned(),
                body: body.to_string(),
                at_ms: now,
            })
            .await?;
        match recorded {
            ResultRecorded::Recorded => {}
            ResultRecorded::Unknown => return Err(CommandError::Unknown(command_id.into())),
            ResultRecorded::NotDelivered => {
                return Err(CommandError::NotDelivered(command_id.into()));
            }
            ResultRecorded::AlreadyRecorded => {
                return Err(CommandError::ResultExists(command_id.into()));
            }
        }
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

//! What the admission gate hands the engine: a server's [`Identity`] (what verifying needs to
//! know), a [`VerifiedHeartbeat`] that passed every check, and a [`RejectionNotice`] for a
//! refusal. The engine imports these; nothing here imports the engine.

use crate::ingest::decode::DecodedHeartbeat;
use crate::ingest::signature::PublicKey;
use crate::store::{AuthKind, ServerRecord};

/// What a request handler needs to know about a server to verify a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The server.
    pub server_id: String,
    /// Its current key.
    pub public_key: PublicKey,
    /// The current key's version.
    pub key_version: u32,
    /// Operator-verified.
    pub is_verified: bool,
}

impl Identity {
    /// The identity a stored server record names; `None` if its key is unreadable.
    pub fn of(server: &ServerRecord) -> Option<Self> {
        Some(Self {
            server_id: server.server_id.clone(),
            public_key: PublicKey::from_base64(&server.public_key).ok()?,
            key_version: server.key_version,
            is_verified: server.is_verified,
        })
    }
}

/// A heartbeat that passed every check a handler can make alone.
#[derive(Debug, Clone)]
pub struct VerifiedHeartbeat {
    /// The decoded body.
    pub decoded: DecodedHeartbeat,
    /// The body as received (JSON text), stored verbatim.
    pub body_text: String,
    /// Host receive time.
    pub received_at_ms: i64,
    /// Whether a signature was verified.
    pub signed: bool,
    /// How the request proved itself (`signature` exactly when `signed`).
    pub auth: AuthKind,
    /// A compat client's request body as sent (then `body_text` is the v1 form built from
    /// it); `None` for the v1 routes.
    pub original_body: Option<String>,
    /// Client address, for the audit trail.
    pub source_ip: Option<String>,
}

/// A refused request to append (and fold, when it names a known server).
#[derive(Debug, Clone)]
pub struct RejectionNotice {
    /// Host receive time.
    pub received_at_ms: i64,
    /// Stable problem code.
    pub code: &'static str,
    /// HTTP status answered.
    pub http_status: u16,
    /// Detail sent to the client.
    pub detail: String,
    /// The claimed server, if readable.
    pub claimed_server_id: Option<String>,
    /// Client address.
    pub source_ip: Option<String>,
    /// `sha256:<hex>` of the body.
    pub body_sha256: Option<String>,
}

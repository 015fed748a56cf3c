//! Storage for trust: key history and rotation, the rejection audit listing, admin API keys.
//!
//! The row types are backend-neutral; both backends implement the matching [`super::Store`]
//! methods with the shared statements in `store/common.rs`. Key history and rejections stay
//! append-only: a rotation appends to `server_keys` and moves the snapshot's current key in the
//! same transaction.

use serde::Serialize;

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

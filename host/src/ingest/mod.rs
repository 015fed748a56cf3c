//! Everything an agent request must pass before the engine sees it: the admission [`gate`]
//! and the checks it runs, in one room.
//!
//! - [`gate`]: [`Gate::admit`] and [`Gate::admit_rotation`], the one assembly of the steps
//!   below, used by the routes and the tests alike;
//! - [`client_ip`] and [`limits`]: who the client is and its token buckets;
//! - [`decode`]: the wire contract v1 (shape, sizes, I-JSON);
//! - [`signature`] and [`verifier`]: JCS + ed25519, batched on a thread of its own;
//! - [`registration`] (open registration) and [`rotation`] (agent-initiated key rotation);
//! - [`verified`]: what the gate hands the engine.
//!
//! Order matters for abuse resistance: nothing about a server's state is revealed before the
//! signature verifies, except whether the server exists and which key version it expects.
//! What needs a server's history (replay, exact repeats, sequence numbers) is the writer's job
//! (the engine). This room never writes: refusals reach the audit trail through
//! [`gate::Servers`].

pub mod client_ip;
pub mod decode;
#[cfg(test)]
mod fuzz;
pub mod gate;
pub mod limits;
pub mod registration;
pub mod rotation;
pub mod signature;
pub mod verified;
pub mod verifier;

use decode::DecodeError;
pub use gate::{Admitted, Gate, Servers};

/// A refused request: the HTTP status, stable code and detail to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Stable problem code.
    pub code: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// The claimed server, if the body named one.
    pub claimed_server_id: Option<String>,
    /// Seconds for `Retry-After` (a rate limit).
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// A refusal naming `server_id` when the request did.
    pub fn new(
        status: u16,
        code: &'static str,
        detail: impl Into<String>,
        server_id: Option<&str>,
    ) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            claimed_server_id: server_id.map(str::to_owned),
            retry_after: None,
        }
    }
}

impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Self {
        Self {
            status: 422,
            code: e.code,
            detail: e.detail,
            claimed_server_id: e.claimed_server,
            retry_after: None,
        }
    }
}

/// The trust rules in force for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustRules {
    /// Refuse unverified servers (403).
    pub require_verified: bool,
    /// Largest allowed distance between the agent's timestamp and the host clock, ms.
    pub max_clock_skew_ms: i64,
    /// Refuse heartbeats without a signature (422 `missing_field`).
    pub require_signature: bool,
}

impl Default for TrustRules {
    /// The defaults of `[trust]`: signatures required, verification not, 300 s of skew.
    fn default() -> Self {
        Self::from(&crate::config::TrustConfig::default())
    }
}

impl From<&crate::config::TrustConfig> for TrustRules {
    fn from(trust: &crate::config::TrustConfig) -> Self {
        Self {
            require_verified: trust.require_verified,
            max_clock_skew_ms: i64::try_from(trust.max_clock_skew_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            require_signature: trust.require_signature,
        }
    }
}

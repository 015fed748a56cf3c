//! Ingestion checks a request handler can make on its own: decode, key, signature, clock and
//! trust rules, in that order. What needs a server's history (replay, exact repeats, sequence
//! numbers) is the writer's job ([`crate::engine`]).
//!
//! Order matters for abuse resistance: nothing about a server's state is revealed before the
//! signature verifies, except whether the server exists and which key version it expects.

pub mod decode;
pub mod signature;

use crate::engine::{Identity, VerifiedHeartbeat};
use decode::{DecodeError, DecodedHeartbeat};

/// A refused heartbeat: the HTTP status, stable code and detail to answer with.
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
}

impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Self {
        Self {
            status: 422,
            code: e.code,
            detail: e.detail,
            claimed_server_id: e.claimed_server,
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
}

/// Checks a body against everything but history. `lookup` finds a registered server.
pub fn check(
    body: &[u8],
    received_at_ms: i64,
    rules: TrustRules,
    lookup: impl FnOnce(&str) -> Option<std::sync::Arc<Identity>>,
    source_ip: Option<String>,
) -> Result<VerifiedHeartbeat, Refusal> {
    let decoded: DecodedHeartbeat = decode::decode(body)?;
    let claimed = Some(decoded.server_id.clone());
    let refuse = |status: u16, code: &'static str, detail: String| Refusal {
        status,
        code,
        detail,
        claimed_server_id: claimed.clone(),
    };
    let Some(identity) = lookup(&decoded.server_id) else {
        return Err(refuse(
            404,
            "unknown_server",
            format!("server `{}` is not registered", decoded.server_id),
        ));
    };
    if decoded.key_version != identity.key_version {
        return Err(refuse(
            409,
            "key_version_mismatch",
            format!(
                "heartbeat is signed with key version {}, the server's current key is version {}",
                decoded.key_version, identity.key_version
            ),
        ));
    }
    let signature = signature::parse_signature(&decoded.signature)
        .map_err(|e| refuse(401, "bad_signature", e.to_string()))?;
    let message = signature::signed_message(&decoded.body)
        .map_err(|e| refuse(401, "bad_signature", e.to_string()))?;
    identity
        .public_key
        .verify(&message, &signature)
        .map_err(|_| {
            refuse(
                401,
                "bad_signature",
                "signature does not verify against the server's key (signed message: \
             `vigil-heartbeat-v1\\n` + JCS of the body without `signature`)"
                    .into(),
            )
        })?;
    let skew = (decoded.sent_at_ms - received_at_ms).abs();
    if skew > rules.max_clock_skew_ms {
        return Err(refuse(
            409,
            "clock_skew",
            format!(
                "timestamp is {} s from the host clock; at most {} s is accepted",
                skew / 1000,
                rules.max_clock_skew_ms / 1000
            ),
        ));
    }
    if rules.require_verified && !identity.is_verified {
        return Err(refuse(
            403,
            "server_unverified",
            format!(
                "server `{}` is not verified by an operator yet",
                decoded.server_id
            ),
        ));
    }
    let body_text = String::from_utf8_lossy(body).into_owned();
    Ok(VerifiedHeartbeat {
        decoded,
        body_text,
        received_at_ms,
        signed: true,
        source_ip,
    })
}

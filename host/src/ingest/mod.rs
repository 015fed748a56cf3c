//! Ingestion checks a request handler can make on its own: decode, key, signature, clock and
//! trust rules, in that order. What needs a server's history (replay, exact repeats, sequence
//! numbers) is the writer's job ([`crate::engine`]).
//!
//! Order matters for abuse resistance: nothing about a server's state is revealed before the
//! signature verifies, except whether the server exists and which key version it expects.

pub mod decode;
pub mod signature;
pub mod verifier;

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

/// A heartbeat whose shape, server and key version are known good, with the exact message
/// its signature must cover. Verifying it is the next step ([`Prepared::verify_inline`] or the
/// batched [`verifier::Verifier`]), then [`Prepared::finish`].
#[derive(Debug)]
pub struct Prepared {
    /// The decoded body.
    pub decoded: DecodedHeartbeat,
    /// The server it claims.
    pub identity: std::sync::Arc<Identity>,
    /// The signed message (`vigil-heartbeat-v1\n` + JCS).
    pub message: Vec<u8>,
    /// The decoded signature.
    pub signature: ed25519_dalek::Signature,
}

fn refusal(decoded: &DecodedHeartbeat, status: u16, code: &'static str, detail: String) -> Refusal {
    Refusal {
        status,
        code,
        detail,
        claimed_server_id: Some(decoded.server_id.clone()),
    }
}

/// The answer to a signature that does not verify.
pub fn bad_signature(decoded: &DecodedHeartbeat) -> Refusal {
    refusal(
        decoded,
        401,
        "bad_signature",
        "signature does not verify against the server's key (signed message: \
         `vigil-heartbeat-v1\\n` + JCS of the body without `signature`)"
            .into(),
    )
}

/// Decodes a body and finds its server and the message to verify. `lookup` finds a
/// registered server.
pub fn prepare(
    body: &[u8],
    lookup: impl FnOnce(&str) -> Option<std::sync::Arc<Identity>>,
) -> Result<Prepared, Refusal> {
    let decoded: DecodedHeartbeat = decode::decode(body)?;
    let Some(identity) = lookup(&decoded.server_id) else {
        let detail = format!("server `{}` is not registered", decoded.server_id);
        return Err(refusal(&decoded, 404, "unknown_server", detail));
    };
    if decoded.key_version != identity.key_version {
        let detail = format!(
            "heartbeat is signed with key version {}, the server's current key is version {}",
            decoded.key_version, identity.key_version
        );
        return Err(refusal(&decoded, 409, "key_version_mismatch", detail));
    }
    let signature = signature::parse_signature(&decoded.signature)
        .map_err(|e| refusal(&decoded, 401, "bad_signature", e.to_string()))?;
    let message = signature::signed_message(&decoded.body)
        .map_err(|e| refusal(&decoded, 401, "bad_signature", e.to_string()))?;
    Ok(Prepared {
        decoded,
        identity,
        message,
        signature,
    })
}

impl Prepared {
    /// Verifies the signature on this thread.
    pub fn verify_inline(&self) -> Result<(), Refusal> {
        self.identity
            .public_key
            .verify(&self.message, &self.signature)
            .map_err(|_| bad_signature(&self.decoded))
    }

    /// The checks that follow a verified signature: clock skew and trust rules.
    pub fn finish(
        self,
        body: &[u8],
        received_at_ms: i64,
        rules: TrustRules,
        source_ip: Option<String>,
    ) -> Result<VerifiedHeartbeat, Refusal> {
        let decoded = self.decoded;
        let skew = (decoded.sent_at_ms - received_at_ms).abs();
        if skew > rules.max_clock_skew_ms {
            let detail = format!(
                "timestamp is {} s from the host clock; at most {} s is accepted",
                skew / 1000,
                rules.max_clock_skew_ms / 1000
            );
            return Err(refusal(&decoded, 409, "clock_skew", detail));
        }
        if rules.require_verified && !self.identity.is_verified {
            let detail = format!(
                "server `{}` is not verified by an operator yet",
                decoded.server_id
            );
            return Err(refusal(&decoded, 403, "server_unverified", detail));
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
}

/// Checks a body against everything but history, verifying the signature inline.
pub fn check(
    body: &[u8],
    received_at_ms: i64,
    rules: TrustRules,
    lookup: impl FnOnce(&str) -> Option<std::sync::Arc<Identity>>,
    source_ip: Option<String>,
) -> Result<VerifiedHeartbeat, Refusal> {
    let prepared = prepare(body, lookup)?;
    prepared.verify_inline()?;
    prepared.finish(body, received_at_ms, rules, source_ip)
}

//! Ingestion checks a request handler can make on its own: decode, key, signature, clock and
//! trust rules, in that order. What needs a server's history (replay, exact repeats, sequence
//! numbers) is the writer's job ([`crate::engine`]).
//!
//! Order matters for abuse resistance: nothing about a server's state is revealed before the
//! signature verifies, except whether the server exists and which key version it expects.

pub mod decode;
#[cfg(test)]
mod fuzz;
pub mod signature;
pub mod verified;
pub mod verifier;

use decode::{DecodeError, DecodedHeartbeat};
use verified::{Identity, VerifiedHeartbeat};

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

/// A heartbeat whose shape, server and key version are known good, with the exact message its
/// signature (if any) must cover. Verifying it is the next step ([`Prepared::verify_inline`] or
/// the batched [`verifier::Verifier`]), then [`Prepared::finish`].
#[derive(Debug)]
pub struct Prepared {
    /// The decoded body.
    pub decoded: DecodedHeartbeat,
    /// The server it claims.
    pub identity: std::sync::Arc<Identity>,
    /// The signed message (`vigil-heartbeat-v1\n` + JCS) and the signature, when signed.
    pub signed: Option<(Vec<u8>, ed25519_dalek::Signature)>,
}

fn refusal(decoded: &DecodedHeartbeat, status: u16, code: &'static str, detail: String) -> Refusal {
    Refusal {
        status,
        code,
        detail,
        claimed_server_id: Some(decoded.server_id.clone()),
    }
}

/// The answer to a signature that does not verify (and its audit event).
pub fn bad_signature(decoded: &DecodedHeartbeat, source_ip: Option<&str>) -> Refusal {
    tracing::warn!(
        target: "vigil::audit",
        server_id = %decoded.server_id,
        source_ip = source_ip.unwrap_or("-"),
        "signature verification failed"
    );
    refusal(
        decoded,
        401,
        "bad_signature",
        "signature does not verify against the server's key (signed message: \
         `vigil-heartbeat-v1\\n` + JCS of the body without `signature`)"
            .into(),
    )
}

/// Finds a decoded heartbeat's server, checks its key version and prepares the signature check.
/// A missing signature is refused only when `rules.require_signature`.
pub fn prepare(
    decoded: DecodedHeartbeat,
    rules: TrustRules,
    lookup: impl FnOnce(&str) -> Option<std::sync::Arc<Identity>>,
) -> Result<Prepared, Refusal> {
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
    let signed = match decoded.signature.as_deref() {
        // A signature that is present must verify, whether or not one is required.
        Some(text) => {
            let signature = signature::parse_signature(text)
                .map_err(|e| refusal(&decoded, 401, "bad_signature", e.to_string()))?;
            let message = signature::signed_message(&decoded.body)
                .map_err(|e| refusal(&decoded, 401, "bad_signature", e.to_string()))?;
            Some((message, signature))
        }
        None if rules.require_signature => {
            let detail = "member `signature` is required ([trust] require_signature)".into();
            return Err(refusal(&decoded, 422, "missing_field", detail));
        }
        None => None,
    };
    Ok(Prepared {
        decoded,
        identity,
        signed,
    })
}

impl Prepared {
    /// Verifies the signature (if any) on this thread.
    pub fn verify_inline(&self, source_ip: Option<&str>) -> Result<(), Refusal> {
        match &self.signed {
            Some((message, signature)) => self
                .identity
                .public_key
                .verify(message, signature)
                .map_err(|_| bad_signature(&self.decoded, source_ip)),
            None => Ok(()),
        }
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
        let signed = self.signed.is_some();
        Ok(VerifiedHeartbeat {
            decoded,
            body_text,
            received_at_ms,
            signed,
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
    let decoded: DecodedHeartbeat = decode::decode(body)?;
    check_decoded(decoded, body, received_at_ms, rules, lookup, source_ip)
}

/// [`check`] for a body already decoded (the handler decodes first to rate-limit by server).
pub fn check_decoded(
    decoded: DecodedHeartbeat,
    body: &[u8],
    received_at_ms: i64,
    rules: TrustRules,
    lookup: impl FnOnce(&str) -> Option<std::sync::Arc<Identity>>,
    source_ip: Option<String>,
) -> Result<VerifiedHeartbeat, Refusal> {
    let prepared = prepare(decoded, rules, lookup)?;
    prepared.verify_inline(source_ip.as_deref())?;
    prepared.finish(body, received_at_ms, rules, source_ip)
}

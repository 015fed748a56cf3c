//! Open registration (trust on first use, `[trust] registration = "open"`).
//!
//! A heartbeat naming an unknown server, carrying a `public_key`, signed by that key (with the
//! ordinary heartbeat message) and within the clock skew registers the server **unverified**
//! with that key as version 1. Only the writer registers (so two racing first heartbeats cannot
//! both win); afterwards the server is known and every heartbeat is checked against the stored
//! key, so the same id cannot be taken over with another key. `is_verified` stays an operator's
//! decision.

use ed25519_dalek::Signature;

use crate::ingest::Refusal;
use crate::ingest::decode::DecodedHeartbeat;
use crate::ingest::signature::{PublicKey, parse_signature, signed_message};

/// The key a first heartbeat offers, with the message and signature that must prove
/// possession of it (the gate verifies them and checks the clock next).
pub fn offered_key(decoded: &DecodedHeartbeat) -> Result<(PublicKey, Vec<u8>, Signature), Refusal> {
    let refuse = |status: u16, code: &'static str, detail: String| {
        Refusal::new(status, code, detail, Some(&decoded.server_id))
    };
    let offered = decoded.public_key.as_deref().ok_or_else(|| {
        refuse(
            404,
            "unknown_server",
            format!("server `{}` is not registered", decoded.server_id),
        )
    })?;
    let key = PublicKey::from_base64(offered)
        .map_err(|e| refuse(422, "invalid_field", format!("member `public_key`: {e}")))?;
    if decoded.key_version != 1 {
        return Err(refuse(
            409,
            "key_version_mismatch",
            "open registration starts at key_version 1".into(),
        ));
    }
    let Some(text) = decoded.signature.as_deref() else {
        return Err(refuse(
            401,
            "bad_signature",
            "open registration needs a heartbeat signed by the `public_key` it offers".into(),
        ));
    };
    let signature =
        parse_signature(text).map_err(|e| refuse(401, "bad_signature", e.to_string()))?;
    let message =
        signed_message(&decoded.body).map_err(|e| refuse(401, "bad_signature", e.to_string()))?;
    Ok((key, message, signature))
}

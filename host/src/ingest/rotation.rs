//! Agent-initiated key rotation: `POST /v1/agent/rotate-key`.
//!
//! Body (a JSON object, at most [`MAX_BODY_BYTES`], unknown members refused):
//! `{"server_id", "key_version" (the current version), "timestamp" (RFC 3339),
//! "next_public_key" (base64 raw ed25519), "signature"}`.
//!
//! **Signed message** = the ASCII bytes `vigil-rotate-key-v1\n` followed by the RFC 8785 (JCS)
//! canonical JSON of the body without its `signature` member, signed by the **current** key.
//! The prefix differs from the heartbeat's, so no heartbeat signature can be replayed as a
//! rotation or the other way round. A replayed rotation names a key version that is no longer
//! current and is refused with 409 `key_version_mismatch`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde_json::{Map, Value};

use crate::clock::parse_rfc3339_ms;
use crate::ingest::Refusal;
use crate::ingest::decode::valid_server_id;
use crate::ingest::signature::{PublicKey, SignatureError, parse_signature};
use crate::ingest::verified::Identity;

/// Domain-separation prefix of a signed rotation request.
pub const ROTATE_PREFIX: &[u8] = b"vigil-rotate-key-v1\n";

/// Largest accepted rotation body, in bytes.
pub const MAX_BODY_BYTES: usize = 4096;

pub(crate) const FIELDS: &[&str] = &[
    "server_id",
    "key_version",
    "timestamp",
    "next_public_key",
    "signature",
];

/// A decoded rotation request (signature not yet verified).
#[derive(Debug, Clone)]
pub struct RotateRequest {
    /// The body as received.
    pub body: Map<String, Value>,
    /// The server.
    pub server_id: String,
    /// The version of the key that signed the request (the current one).
    pub key_version: u32,
    /// The agent's timestamp, ms.
    pub sent_at_ms: i64,
    /// The key to rotate to.
    pub next_public_key: PublicKey,
    /// The base64 signature.
    pub signature: String,
}

fn refusal(
    status: u16,
    code: &'static str,
    detail: impl Into<String>,
    id: Option<&str>,
) -> Refusal {
    Refusal::new(status, code, detail, id)
}

/// Decodes a rotation body.
pub fn decode(bytes: &[u8]) -> Result<RotateRequest, Refusal> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        refusal(
            422,
            "malformed_json",
            format!("body is not valid JSON: {e}"),
            None,
        )
    })?;
    let Value::Object(body) = value else {
        return Err(refusal(
            422,
            "malformed_json",
            "body must be a JSON object",
            None,
        ));
    };
    crate::ingest::decode::unique_members(bytes)
        .map_err(|e| refusal(422, e.code, e.detail, None))?;
    let claimed = body
        .get("server_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let id = claimed.as_deref();
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(refusal(
            422,
            "unknown_field",
            format!("unknown member `{unknown}`"),
            id,
        ));
    }
    let text = |member: &str| -> Result<String, Refusal> {
        match body.get(member) {
            None | Some(Value::Null) => Err(refusal(
                422,
                "missing_field",
                format!("member `{member}` is required"),
                id,
            )),
            Some(Value::String(s)) if s.len() <= 256 => Ok(s.clone()),
            Some(_) => Err(refusal(
                422,
                "invalid_field",
                format!("member `{member}` must be a string of at most 256 bytes"),
                id,
            )),
        }
    };
    let server_id = text("server_id")?;
    if !valid_server_id(&server_id) {
        return Err(refusal(
            422,
            "invalid_field",
            "member `server_id` must match ^[a-z0-9][a-z0-9._-]{0,127}$ or be a lowercase UUID",
            None,
        ));
    }
    let key_version = body
        .get("key_version")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n >= 1)
        .ok_or_else(|| {
            refusal(
                422,
                "invalid_field",
                "member `key_version` must be an integer from 1 to 4294967295",
                id,
            )
        })?;
    let sent_at_ms = parse_rfc3339_ms(&text("timestamp")?).ok_or_else(|| {
        refusal(
            422,
            "invalid_field",
            "member `timestamp` must be an RFC 3339 date-time",
            id,
        )
    })?;
    let next_public_key = PublicKey::from_base64(&text("next_public_key")?).map_err(|e| {
        refusal(
            422,
            "invalid_field",
            format!("member `next_public_key`: {e}"),
            id,
        )
    })?;
    let signature = text("signature")?;
    Ok(RotateRequest {
        server_id,
        key_version,
        sent_at_ms,
        next_public_key,
        signature,
        body,
    })
}

/// The exact bytes signed for a rotation body (its `signature` member left out).
pub fn signed_message(body: &Map<String, Value>) -> Result<Vec<u8>, SignatureError> {
    let mut unsigned = body.clone();
    unsigned.remove("signature");
    let canonical = serde_json_canonicalizer::to_vec(&Value::Object(unsigned))
        .map_err(|e| SignatureError::Canonical(e.to_string()))?;
    Ok([ROTATE_PREFIX, canonical.as_slice()].concat())
}

/// Signs a rotation body with the current key, as an agent does (CLI and tests).
pub fn sign(key: &SigningKey, body: &Map<String, Value>) -> Result<String, SignatureError> {
    Ok(STANDARD.encode(key.sign(&signed_message(body)?).to_bytes()))
}

/// The message and signature a rotation request must carry by the server's current key (the
/// gate verifies them, then the clock); its key version must be the current one.
pub fn signed_parts(
    request: &RotateRequest,
    identity: &Identity,
) -> Result<(Vec<u8>, Signature), Refusal> {
    let id = Some(request.server_id.as_str());
    if request.key_version != identity.key_version {
        return Err(refusal(
            409,
            "key_version_mismatch",
            format!(
                "request is signed with key version {}, the server's current key is version {}",
                request.key_version, identity.key_version
            ),
            id,
        ));
    }
    let signature = parse_signature(&request.signature)
        .map_err(|e| refusal(401, "bad_signature", e.to_string(), id))?;
    let message = signed_message(&request.body)
        .map_err(|e| refusal(401, "bad_signature", e.to_string(), id))?;
    Ok((message, signature))
}

/// The last rule of a rotation: the next key is not the current one.
pub fn next_key_is_new(request: &RotateRequest, identity: &Identity) -> Result<(), Refusal> {
    if request.next_public_key == identity.public_key {
        return Err(refusal(
            422,
            "invalid_field",
            "member `next_public_key` is the current key",
            Some(request.server_id.as_str()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_rules() {
        assert_eq!(decode(b"[]").unwrap_err().code, "malformed_json");
        assert_eq!(
            decode(br#"{"server_id":"a","x":1}"#).unwrap_err().code,
            "unknown_field"
        );
        assert_eq!(
            decode(br#"{"server_id":"a"}"#).unwrap_err().code,
            "invalid_field"
        );
    }
}

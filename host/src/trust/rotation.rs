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
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Map, Value};

use crate::clock::parse_rfc3339_ms;
use crate::ingest::decode::valid_server_id;
use crate::ingest::signature::{PublicKey, SignatureError, parse_signature};
use crate::ingest::verified::Identity;
use crate::ingest::{Refusal, TrustRules};

/// Domain-separation prefix of a signed rotation request.
pub const ROTATE_PREFIX: &[u8] = b"vigil-rotate-key-v1\n";

/// Largest accepted rotation body, in bytes.
pub const MAX_BODY_BYTES: usize = 4096;

const FIELDS: &[&str] = &[
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
    Refusal {
        status,
        code,
        detail: detail.into(),
        claimed_server_id: id.map(str::to_owned),
    }
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
            "member `server_id` must match ^[a-z0-9][a-z0-9._-]{0,127}$ or be a UUID",
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

/// Checks a decoded request against the server's current identity: key version, signature by
/// the current key, clock skew, and that the next key is new.
pub fn verify(
    request: &RotateRequest,
    identity: &Identity,
    received_at_ms: i64,
    rules: TrustRules,
) -> Result<(), Refusal> {
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
    identity
        .public_key
        .verify(&message, &signature)
        .map_err(|_| {
            tracing::warn!(target: "vigil::audit", server_id = %request.server_id,
            "key rotation signature verification failed");
            refusal(
                401,
                "bad_signature",
                "signature does not verify against the server's current key (signed message: \
             `vigil-rotate-key-v1\\n` + JCS of the body without `signature`)",
                id,
            )
        })?;
    let skew = (request.sent_at_ms - received_at_ms).abs();
    if skew > rules.max_clock_skew_ms {
        return Err(refusal(
            409,
            "clock_skew",
            format!(
                "timestamp is {} s from the host clock; at most {} s is accepted",
                skew / 1000,
                rules.max_clock_skew_ms / 1000
            ),
            id,
        ));
    }
    if request.next_public_key == identity.public_key {
        return Err(refusal(
            422,
            "invalid_field",
            "member `next_public_key` is the current key",
            id,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::signature::public_key_of;

    fn request(key: &SigningKey, next: &SigningKey, version: u32) -> Vec<u8> {
        let mut body = Map::new();
        body.insert("server_id".into(), "eu-1".into());
        body.insert("key_version".into(), version.into());
        body.insert("timestamp".into(), "2026-01-22T21:05:00Z".into());
        body.insert(
            "next_public_key".into(),
            public_key_of(next).to_base64().into(),
        );
        let signature = sign(key, &body).expect("signs");
        body.insert("signature".into(), signature.into());
        serde_json::to_vec(&body).expect("serialises")
    }

    #[test]
    fn rotation_verifies_only_with_the_current_key_and_version() {
        let current = SigningKey::from_bytes(&[1; 32]);
        let next = SigningKey::from_bytes(&[2; 32]);
        let identity = Identity {
            server_id: "eu-1".into(),
            public_key: public_key_of(&current),
            key_version: 3,
            is_verified: true,
        };
        let at = 1_769_115_900_000;
        let rules = TrustRules::default();
        let ok = decode(&request(&current, &next, 3)).expect("decodes");
        assert_eq!(verify(&ok, &identity, at, rules), Ok(()));
        let old = decode(&request(&current, &next, 2)).expect("decodes");
        assert_eq!(
            verify(&old, &identity, at, rules).unwrap_err().code,
            "key_version_mismatch"
        );
        let forged = decode(&request(&next, &next, 3)).expect("decodes");
        assert_eq!(
            verify(&forged, &identity, at, rules).unwrap_err().code,
            "bad_signature"
        );
        let same = decode(&request(&current, &current, 3)).expect("decodes");
        assert_eq!(
            verify(&same, &identity, at, rules).unwrap_err().code,
            "invalid_field"
        );
        assert_eq!(
            verify(&ok, &identity, at + 3_600_000, rules)
                .unwrap_err()
                .code,
            "clock_skew"
        );
        // A heartbeat-prefixed signature over the same body is not a rotation signature.
        let mut body = ok.body.clone();
        body.remove("signature");
        let hb_sig = crate::ingest::signature::sign_body(&current, &body).expect("signs");
        let crossed = RotateRequest {
            signature: hb_sig,
            ..ok
        };
        assert_eq!(
            verify(&crossed, &identity, at, rules).unwrap_err().code,
            "bad_signature"
        );
    }

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

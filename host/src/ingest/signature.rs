//! The signed-heartbeat message (wire v1) and its ed25519 signatures; keys and fingerprints are
//! [`crate::crypto`]'s (re-exported here).
//!
//! The signed message is `vigil-heartbeat-v1\n` followed by the RFC 8785 (JCS) canonical JSON of
//! the received body object with its `signature` member removed. This module canonicalises the
//! received `serde_json::Value` (never a re-serialised typed struct), so an explicit `null` or any
//! member order is signed exactly as sent.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde_json::{Map, Value};

pub use crate::crypto::{PublicKey, SignatureError};

/// Domain-separation prefix of every signed heartbeat.
pub const HEARTBEAT_PREFIX: &[u8] = b"vigil-heartbeat-v1\n";

/// Decodes a base64 signature field.
pub fn parse_signature(text: &str) -> Result<Signature, SignatureError> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| SignatureError::Malformed)?;
    let raw: [u8; 64] = bytes.try_into().map_err(|_| SignatureError::Malformed)?;
    Ok(Signature::from_bytes(&raw))
}

/// A view of a body object without its `signature` member (serialising it avoids copying the
/// body; the canonicaliser orders members itself).
struct Unsigned<'a>(&'a Map<String, Value>);

impl serde::Serialize for Unsigned<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let members = self.0.iter().filter(|(k, _)| k.as_str() != "signature");
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in members {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The exact bytes an agent signs for `body` (the `signature` member, if any, is left out).
pub fn signed_message(body: &Map<String, Value>) -> Result<Vec<u8>, SignatureError> {
    let canonical = serde_json_canonicalizer::to_vec(&Unsigned(body))
        .map_err(|e| SignatureError::Canonical(e.to_string()))?;
    let mut message = Vec::with_capacity(HEARTBEAT_PREFIX.len() + canonical.len());
    message.extend_from_slice(HEARTBEAT_PREFIX);
    message.extend_from_slice(&canonical);
    Ok(message)
}

/// Signs `body` (without its `signature` member) and returns the base64 signature, as an agent
/// does. Used by `vigil send`, the load generator and tests.
pub fn sign_body(key: &SigningKey, body: &Map<String, Value>) -> Result<String, SignatureError> {
    let message = signed_message(body)?;
    Ok(STANDARD.encode(key.sign(&message).to_bytes()))
}

/// Reads a private key file as written by `vigil keygen`: base64 of the 32-byte seed.
pub fn signing_key_from_base64(text: &str) -> Result<SigningKey, SignatureError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| SignatureError::BadKey)?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| SignatureError::BadKey)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads a private key in any form Vigil accepts: base64 of the 32-byte seed (`vigil keygen`),
/// or a PKCS#8 PEM block (`-----BEGIN PRIVATE KEY-----`, as written by `vigil keygen --format
/// pem` and `openssl genpkey -algorithm ed25519`).
pub fn signing_key_from_text(text: &str) -> Result<SigningKey, SignatureError> {
    if text.contains("-----BEGIN") {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        SigningKey::from_pkcs8_pem(text.trim()).map_err(|_| SignatureError::BadKey)
    } else {
        signing_key_from_base64(text)
    }
}

/// The PKCS#8 PEM form of a private key (`-----BEGIN PRIVATE KEY-----`), readable by OpenSSL
/// and by every language's crypto library.
pub fn signing_key_to_pem(key: &SigningKey) -> Result<String, SignatureError> {
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    // The seed alone (PKCS#8 v1), exactly as OpenSSL writes it.
    let bytes = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    bytes
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map(|pem| pem.as_str().to_owned())
        .map_err(|_| SignatureError::BadKey)
}

/// The public half of a signing key.
pub fn public_key_of(key: &SigningKey) -> PublicKey {
    PublicKey::of(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl genpkey -algorithm ed25519` output for the seed 0x00..0x1f.
    const OPENSSL_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n-----END PRIVATE KEY-----\n";

    #[test]
    fn pkcs8_pem_and_base64_seeds_read_the_same_key() {
        let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
        let from_pem = signing_key_from_text(OPENSSL_PEM).expect("reads openssl's PEM");
        assert_eq!(from_pem.to_bytes(), seed);
        let base64 = STANDARD.encode(seed);
        assert_eq!(
            signing_key_from_text(&base64).expect("base64").to_bytes(),
            seed
        );
        let written = signing_key_to_pem(&from_pem).expect("encodes");
        assert_eq!(written, OPENSSL_PEM);
        assert_eq!(
            signing_key_from_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(SignatureError::BadKey)
        );
    }

    #[test]
    fn message_leaves_out_signature_and_sorts_keys() {
        let body: Map<String, Value> =
            serde_json::from_str(r#"{"b":1,"signature":"x","a":null}"#).expect("valid json");
        let message = signed_message(&body).expect("canonicalises");
        assert_eq!(message, b"vigil-heartbeat-v1\n{\"a\":null,\"b\":1}");
    }

    #[test]
    fn sign_then_verify_round_trips_and_tamper_fails() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut body: Map<String, Value> =
            serde_json::from_str(r#"{"server_id":"a","key_version":1}"#).expect("valid json");
        let sig = sign_body(&key, &body).expect("signs");
        let public = public_key_of(&key);
        let parsed = parse_signature(&sig).expect("decodes");
        public
            .verify(&signed_message(&body).expect("ok"), &parsed)
            .expect("verifies");
        body.insert("key_version".into(), Value::from(2));
        assert_eq!(
            public.verify(&signed_message(&body).expect("ok"), &parsed),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn bad_keys_and_signatures_are_refused() {
        assert_eq!(PublicKey::from_base64("AAAA"), Err(SignatureError::BadKey));
        assert_eq!(
            PublicKey::from_base64("not base64!"),
            Err(SignatureError::BadKey)
        );
        assert!(matches!(
            parse_signature("AAAA"),
            Err(SignatureError::Malformed)
        ));
    }
}

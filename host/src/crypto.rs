//! The host's cryptographic primitives in their text forms: ed25519 public keys (standard
//! base64, OpenSSH-style fingerprint) and content digests (`sha256:<hex>`). A ground floor like
//! [`crate::clock`]: every room may import it (agents' keys, policy authors' keys, the host's
//! command key, config validation), and it imports nothing of Vigil's.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// Why a key or signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The public key is not base64 of 32 bytes, or not a valid curve point.
    #[error("public key must be standard base64 of a 32-byte ed25519 key")]
    BadKey,
    /// The signature is not base64 of 64 bytes.
    #[error("signature must be standard base64 (with padding) of 64 bytes")]
    Malformed,
    /// The signature does not verify against the key.
    #[error("signature does not verify")]
    Mismatch,
    /// The body could not be canonicalised.
    #[error("body cannot be canonicalised: {0}")]
    Canonical(String),
}

/// An agent's ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses standard base64 (with padding) of a raw 32-byte key.
    pub fn from_base64(text: &str) -> Result<Self, SignatureError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SignatureError::BadKey)?;
        let raw: [u8; 32] = bytes.try_into().map_err(|_| SignatureError::BadKey)?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| SignatureError::BadKey)?;
        // Small-order keys verify anything; mixed-order keys (an honest point plus a torsion
        // component) let a batch check accept what a single strict check refuses. Both are
        // refused here, where every registered or rotated key is parsed.
        if key.is_weak() || !key.to_edwards().is_torsion_free() {
            return Err(SignatureError::BadKey);
        }
        Ok(Self(key))
    }

    /// The public half of a signing key.
    pub fn of(key: &ed25519_dalek::SigningKey) -> Self {
        Self(key.verifying_key())
    }

    /// The underlying ed25519 key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// Standard base64 of the raw key.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    /// OpenSSH-style fingerprint: `SHA256:` + unpadded base64 of SHA-256(raw key).
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            STANDARD_NO_PAD.encode(Sha256::digest(self.0.as_bytes()))
        )
    }

    /// Verifies `signature` over `message` (strict: refuses malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        self.0
            .verify_strict(message, signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in Sha256::digest(bytes) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;

    #[test]
    fn keys_with_a_torsion_component_are_refused() {
        let honest = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
        let b64 = |bytes: &[u8]| STANDARD.encode(bytes);
        assert!(PublicKey::from_base64(&b64(honest.as_bytes())).is_ok());
        for torsion in &EIGHT_TORSION[1..] {
            let mixed = (honest.to_edwards() + torsion).compress();
            assert!(
                PublicKey::from_base64(&b64(mixed.as_bytes())).is_err(),
                "mixed-order key accepted"
            );
            // Small-order keys too.
            assert!(PublicKey::from_base64(&b64(torsion.compress().as_bytes())).is_err());
        }
    }
}

//! Author signatures of policy components: ed25519 over a domain-separated digest.
//!
//! The signed message is the ASCII bytes `vigil-policy-v1\n` followed by the component's digest
//! (`sha256:<hex>`). The prefix keeps a policy signature from ever being valid as a heartbeat
//! signature (whose prefix is `vigil-heartbeat-v1\n`) and the other way round. A `.sig` file is
//! the standard base64 of the 64-byte signature, optionally followed by a newline.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};

use crate::ingest::signature::{PublicKey, parse_signature, public_key_of};

/// The domain-separation prefix of the signed message.
pub const DOMAIN: &[u8] = b"vigil-policy-v1\n";

/// The bytes an author signs for a component with this digest.
pub fn message(digest: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + digest.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(digest.as_bytes());
    m
}

/// Signs a digest: the base64 text of a `.sig` file.
pub fn sign(key: &SigningKey, digest: &str) -> String {
    STANDARD.encode(key.sign(&message(digest)).to_bytes())
}

/// The fingerprint of the key that signs with `key`.
pub fn signer_of(key: &SigningKey) -> String {
    public_key_of(key).fingerprint()
}

/// Why a signature was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    /// `require_signed` is on and there is no signature.
    #[error("the component is not signed and `[policy] require_signed` is on")]
    Unsigned,
    /// Not base64 of 64 bytes.
    #[error("the signature is malformed: {0}")]
    Malformed(String),
    /// No trusted key verifies it (wrong key, or the component was changed after signing).
    #[error("no trusted key verifies the signature over {0} (wrong key or tampered component)")]
    Untrusted(String),
}

/// Checks `signature` (base64) over `digest` against the trusted keys; returns the signer's
/// fingerprint.
pub fn verify(
    signature: &str,
    digest: &str,
    trusted: &[PublicKey],
) -> Result<String, SigningError> {
    let signature =
        parse_signature(signature.trim()).map_err(|e| SigningError::Malformed(e.to_string()))?;
    let message = message(digest);
    trusted
        .iter()
        .find(|key| key.verify(&message, &signature).is_ok())
        .map(PublicKey::fingerprint)
        .ok_or_else(|| SigningError::Untrusted(digest.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_only_for_its_digest_and_a_trusted_key() {
        let author = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let digest = crate::policy::digest_of(b"component");
        let sig = sign(&author, &digest);
        let trusted = [public_key_of(&author)];
        assert_eq!(verify(&sig, &digest, &trusted), Ok(signer_of(&author)));
        let tampered = crate::policy::digest_of(b"component!");
        assert!(matches!(
            verify(&sig, &tampered, &trusted),
            Err(SigningError::Untrusted(_))
        ));
        assert!(matches!(
            verify(&sig, &digest, &[public_key_of(&other)]),
            Err(SigningError::Untrusted(_))
        ));
        assert!(matches!(
            verify("nope", &digest, &trusted),
            Err(SigningError::Malformed(_))
        ));
    }
}

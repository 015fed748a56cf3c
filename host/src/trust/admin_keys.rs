//! Named admin API keys: `vgl_` + 43 characters of URL-safe base64 (256 random bits).
//!
//! Only SHA-256 of a key is stored (`admin_keys`, through the store), with its name, scope and
//! the first characters to recognise it in listings. A presented key is hashed and looked up
//! per request (so a revocation acts on the next request, whichever process wrote it), and the
//! stored hash is compared again in constant time. Scopes: `admin` (every admin route) and `read` (the read-only
//! admin routes and, with `[directory] require_key`, the directory).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub use crate::store::{AdminKey, Scope};
use crate::store::{NewAdminKey, Store, StoreError};

/// Every key starts with this, so a leaked one is recognisable (secret scanners).
pub const KEY_PREFIX: &str = "vgl_";

/// A fresh random token.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Hex SHA-256 of a token.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates a key named `name`; returns the token (shown once, never stored).
pub async fn create(
    store: &Store,
    name: &str,
    scope: Scope,
    now_ms: i64,
) -> Result<String, StoreError> {
    let token = generate();
    store
        .insert_admin_key(&NewAdminKey {
            name: name.to_owned(),
            scope,
            key_sha256: hash(&token),
            prefix: token[..KEY_PREFIX.len() + 6].to_owned(),
            created_at_ms: now_ms,
        })
        .await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
    }
}

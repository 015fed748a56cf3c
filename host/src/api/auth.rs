//! Who is asking: the admin credential of every `/v1/admin/…` route and of a directory behind
//! `[directory] require_key`. A bearer credential compared in constant time: the bootstrap
//! token (`[admin] token` or `VIGIL_ADMIN_TOKEN`) or a named API key
//! (scopes `admin` and `read`; an `ingest` key opens none of these routes, only HomelabCmd's
//! heartbeat route, checked by [`ingest_key`]). Agents prove themselves with signatures instead, at the
//! admission gate ([`crate::ingest::Gate`]).
//!
//! Named admin API keys are `vgl_` + 43 characters of URL-safe base64 (256 random bits). Only
//! SHA-256 of a key is stored (`admin_keys`, through the store), with its name, scope and the
//! first characters to recognise it in listings. A presented key is hashed and looked up per
//! request (so a revocation acts on the next request, whichever process wrote it), and the
//! stored hash is compared again in constant time. Scopes: `admin` (every admin route) and
//! `read` (the read-only admin routes and, with `[directory] require_key`, the directory).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::store::{NewAdminKey, Scope, Store, StoreError};

/// Checks the credential for a route that only reads (key history, audit trail, a directory
/// behind `[directory] require_key`): the bootstrap token or an API key of either scope.
pub(crate) async fn authorize_read(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    authenticate(state, headers, Scope::Read).await
}

/// Checks the credential for an admin route: the bootstrap token or an `admin`-scoped API key.
/// Answers who it is (recorded as `added_by`: `admin` or `key:<name>`).
pub(crate) async fn authorize(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    authenticate(state, headers, Scope::Admin).await
}

/// Hashing both sides first makes the comparisons constant-time whatever the lengths.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    needed: Scope,
) -> Result<String, ApiError> {
    let config = state.config.current();
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let bootstrap = config.admin.token.as_deref().filter(|t| !t.is_empty());
    if let Some(expected) = bootstrap
        && !presented.is_empty()
    {
        let ok: bool = Sha256::digest(presented.as_bytes())
            .ct_eq(&Sha256::digest(expected.as_bytes()))
            .into();
        if ok {
            return Ok("admin".to_owned());
        }
    }
    if presented.starts_with(KEY_PREFIX) {
        let hash = hash(presented);
        if let Some(key) = state.store.admin_key(&hash).await? {
            let same: bool = key.key_sha256.as_bytes().ct_eq(hash.as_bytes()).into();
            if same && key.revoked_at_ms.is_none() {
                if key.scope == Scope::Ingest {
                    tracing::warn!(target: "vigil::audit", key = %key.name, "admin or read route refused to an ingest-scoped key");
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "insufficient_scope",
                        "this API key has the `ingest` scope: it may only send heartbeats",
                    ));
                }
                if needed == Scope::Admin && key.scope != Scope::Admin {
                    tracing::warn!(target: "vigil::audit", key = %key.name, "admin route refused to a read-scoped key");
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "insufficient_scope",
                        "this API key has the `read` scope; this route needs `admin`",
                    ));
                }
                return Ok(format!("key:{}", key.name));
            }
            if same {
                tracing::warn!(target: "vigil::audit", key = %key.name, "revoked API key presented");
            }
        }
    }
    if bootstrap.is_none() && !state.store.any_admin_key().await? {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_disabled",
            "no admin token ([admin] token or VIGIL_ADMIN_TOKEN) and no API key is configured",
        ));
    }
    tracing::warn!(target: "vigil::audit", "admin request with a missing, wrong or revoked credential");
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid `Authorization: Bearer <admin token or API key>` header is required",
    ))
}

/// The name of the active `ingest`-scoped API key `presented` is, if it is one (a shared
/// HomelabCmd `X-API-Key`); `None` for anything else (unknown, revoked, another scope).
pub(crate) async fn ingest_key(
    store: &Store,
    presented: &str,
) -> Result<Option<String>, StoreError> {
    if !presented.starts_with(KEY_PREFIX) {
        return Ok(None);
    }
    let hash = hash(presented);
    Ok(store.admin_key(&hash).await?.and_then(|key| {
        let same: bool = key.key_sha256.as_bytes().ct_eq(hash.as_bytes()).into();
        (same && key.revoked_at_ms.is_none() && key.scope == Scope::Ingest).then_some(key.name)
    }))
}

/// Middleware: with `[directory] require_key`, directory reads (`/v1/servers…`,
/// `/v1/policies`, rankings, the leaderboard, badges, status pages, the dashboard's pages) and
/// both live streams (`/v1/events`, `/v1/servers/{id}/observe`) need the bootstrap token or an
/// API key of either scope, or a dashboard session signed in with one.
pub async fn directory_guard(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let directory = path == "/v1/servers"
        || path.starts_with("/v1/servers/")
        || path == "/v1/rankings"
        || path == "/v1/leaderboard"
        || path.starts_with("/badge/")
        || path.starts_with("/status/")
        || path == "/"
        || path.starts_with("/servers/")
        || path == "/policies"
        || path == "/v1/events"
        || path == "/v1/policies"
        || path.starts_with("/v1/policies/");
    if directory
        && state.config.current().directory.require_key
        && state.sessions.viewer(request.headers()).is_none()
        && let Err(e) = authorize_read(&state, request.headers()).await
    {
        return e.into_response();
    }
    next.run(request).await
}

/// Middleware: every admin request (`/v1/admin/…`) and every command result
/// (`/v1/agent/commands/{id}/result`) spends its source's budget (`[rate_limit] per_ip_*`, the
/// bucket agent requests spend) before its credential or signature is looked at. A guessed
/// token or a forged result costs only the guessing address's budget: 429 `rate_limited` with
/// `Retry-After` once it is spent, and no key lookup, hash or signature check past that.
pub async fn source_budget(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let charged = path.starts_with("/v1/admin/")
        || (path.starts_with("/v1/agent/commands/") && path.ends_with("/result"));
    if charged && let Err(refusal) = state.gate.charge_source(&request) {
        return ApiError::from(refusal).into_response();
    }
    next.run(request).await
}

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
pub async fn create_key(
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

//! Who is asking: the admin credential of every `/v1/admin/…` route and of a directory behind
//! `[directory] require_key`. A bearer credential compared in constant time: the bootstrap
//! token (`[admin] token` or `VIGIL_ADMIN_TOKEN`) or a named API key
//! ([`crate::trust::admin_keys`], scopes `admin` and `read`). Agents prove themselves with
//! signatures instead, at the admission gate ([`crate::ingest::Gate`]).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::trust::admin_keys::{self, Scope};

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
    if presented.starts_with(admin_keys::KEY_PREFIX) {
        let hash = admin_keys::hash(presented);
        if let Some(key) = state.store.admin_key(&hash).await? {
            let same: bool = key.key_sha256.as_bytes().ct_eq(hash.as_bytes()).into();
            if same && key.revoked_at_ms.is_none() {
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

/// Middleware: with `[directory] require_key`, directory reads (`/v1/servers…`,
/// `/v1/policies`) need the bootstrap token or an API key of either scope.
pub async fn directory_guard(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let directory = path == "/v1/servers"
        || path.starts_with("/v1/servers/")
        || path == "/v1/policies"
        || path.starts_with("/v1/policies/");
    if directory
        && state.config.current().directory.require_key
        && let Err(e) = authorize_read(&state, request.headers()).await
    {
        return e.into_response();
    }
    next.run(request).await
}

//! Admin routes under `/v1/admin/…`, behind a bearer credential compared in constant time: the
//! bootstrap token (`[admin] token` or `VIGIL_ADMIN_TOKEN`) or a named API key
//! ([`crate::trust::admin_keys`], scopes `admin` and `read`).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::directory::ServerView;
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::ingest::decode::valid_server_id;
use crate::ingest::signature::PublicKey;
use crate::store::NewServer;
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

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::invalid("invalid_body", e.body_text()))
}

/// Body of `POST /v1/admin/servers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddServer {
    /// Identifier (`^[a-z0-9][a-z0-9._-]{0,127}$` or a UUID).
    pub server_id: String,
    /// Base64 raw ed25519 public key.
    pub public_key: String,
    /// Optional human-friendly name.
    pub display_name: Option<String>,
    /// Optional cluster.
    pub cluster_id: Option<String>,
}

/// `POST /v1/admin/servers` → 201 with the server.
pub async fn add_server(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<AddServer>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers).await?;
    let add = json_body(body)?;
    if !valid_server_id(&add.server_id) {
        return Err(ApiError::invalid(
            "invalid_field",
            "server_id must match ^[a-z0-9][a-z0-9._-]{0,127}$ or be a UUID",
        ));
    }
    let key = PublicKey::from_base64(&add.public_key)
        .map_err(|e| ApiError::invalid("invalid_field", format!("public_key: {e}")))?;
    for (name, value, max) in [
        ("display_name", &add.display_name, 256),
        ("cluster_id", &add.cluster_id, 128),
    ] {
        if value.as_ref().is_some_and(|v| v.chars().count() > max) {
            return Err(ApiError::invalid(
                "invalid_field",
                format!("{name} must be at most {max} characters"),
            ));
        }
    }
    let server = NewServer {
        server_id: add.server_id.clone(),
        public_key: key.to_base64(),
        fingerprint: key.fingerprint(),
        display_name: add.display_name,
        cluster_id: add.cluster_id,
        registered_at_ms: now_ms(),
        added_by: "admin".into(),
    };
    state.engine.register(server).await?;
    let record = state
        .store
        .get_server(&add.server_id)
        .await?
        .ok_or_else(|| ApiError::internal(&"registered server is missing"))?;
    Ok((StatusCode::CREATED, Json(ServerView::from(record))).into_response())
}

/// Optional body of `POST /v1/admin/servers/{id}/verify`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// `false` withdraws verification. Default `true`.
    pub verified: Option<bool>,
}

/// `POST /v1/admin/servers/{id}/verify` → 200 with the server.
pub async fn verify_server(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers).await?;
    let verify: Verify = if body.is_empty() {
        Verify::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?
    };
    state
        .engine
        .set_verified(&id, verify.verified.unwrap_or(true))
        .await?;
    let record = state
        .store
        .get_server(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("server `{id}`")))?;
    Ok(Json(ServerView::from(record)).into_response())
}

//! Trust routes: agent key rotation, the operator's key history and rotation, the rejection
//! audit trail.
//!
//! - `POST /v1/agent/rotate-key` (signed by the current key; see [`crate::ingest::rotation`])
//! - `GET|POST /v1/admin/servers/{id}/keys` (history; operator rotation)
//! - `GET /v1/admin/rejections?server=&code=&since=&limit=&cursor=`

use super::error::ApiPath;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::clock::{format_rfc3339_ms, now_ms, parse_rfc3339_ms};
use crate::ingest::signature::PublicKey;
use crate::store::{KeyRotation, RejectionQuery, ServerKeyRow, StoredRejection};

/// The answer to a rotation (agent or operator).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rotated {
    /// The server.
    pub server_id: String,
    /// The new current key version: heartbeats must now name it.
    pub key_version: u32,
    /// The new key's fingerprint.
    pub fingerprint: String,
}

/// `POST /v1/agent/rotate-key` → 200 [`Rotated`]. The admission gate checks the request
/// ([`crate::ingest::Gate::admit_rotation`]) and records its refusals like a heartbeat's.
pub async fn rotate_key(State(state): State<AppState>, request: Request) -> Response {
    let rotation = match state.gate.admit_rotation(request).await {
        Ok(rotation) => rotation,
        Err(refusal) => return ApiError::from(refusal).into_response(),
    };
    let server_id = rotation.server_id.clone();
    let fingerprint = rotation.fingerprint.clone();
    match state.engine.rotate_key(rotation).await {
        Ok(key_version) => Json(Rotated {
            server_id,
            key_version,
            fingerprint,
        })
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Body of `POST /v1/admin/servers/{id}/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddKey {
    /// The new key (base64 raw ed25519).
    #[schema(pattern = r"^[A-Za-z0-9+/]{43}=$")]
    pub public_key: String,
    /// The version the operator expects to replace (optional compare-and-swap).
    pub expected_key_version: Option<u32>,
}

/// `POST /v1/admin/servers/{id}/keys` → 201 [`Rotated`]: the operator rotates a server's key.
pub async fn add_key(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Json<AddKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let who = super::auth::authorize(&state, &headers).await?;
    let Json(add) = body.map_err(|e| ApiError::invalid("invalid_body", e.body_text()))?;
    let key = PublicKey::from_base64(&add.public_key)
        .map_err(|e| ApiError::invalid("invalid_field", format!("public_key: {e}")))?;
    let identity = state
        .engine
        .identity(&id)
        .ok_or_else(|| ApiError::not_found(format!("server `{id}`")))?;
    if key == identity.public_key {
        return Err(ApiError::invalid(
            "invalid_field",
            "public_key is the server's current key",
        ));
    }
    let rotation = KeyRotation {
        server_id: id.clone(),
        expected_version: add.expected_key_version.unwrap_or(identity.key_version),
        public_key: key.to_base64(),
        fingerprint: key.fingerprint(),
        added_at_ms: now_ms(),
        added_by: who,
    };
    let key_version = state.engine.rotate_key(rotation).await?;
    Ok((
        StatusCode::CREATED,
        Json(Rotated {
            server_id: id,
            key_version,
            fingerprint: key.fingerprint(),
        }),
    )
        .into_response())
}

/// One key of a server's history, as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// The version.
    pub key_version: u32,
    /// Base64 key.
    pub public_key: String,
    /// Fingerprint.
    pub fingerprint: String,
    /// RFC 3339.
    pub added_at: String,
    /// Who added it.
    pub added_by: String,
    /// Whether it is the current key.
    pub current: bool,
}

/// `GET /v1/admin/servers/{id}/keys` → `{"server_id", "key_version", "keys": [...]}` (oldest
/// first).
pub async fn list_keys(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::auth::authorize_read(&state, &headers).await?;
    let keys: Vec<ServerKeyRow> = state.store.server_keys(&id).await?;
    if keys.is_empty() {
        return Err(ApiError::not_found(format!("server `{id}`")));
    }
    let current = keys.iter().map(|k| k.key_version).max().unwrap_or(1);
    let views: Vec<KeyView> = keys
        .into_iter()
        .map(|k| KeyView {
            current: k.key_version == current,
            key_version: k.key_version,
            public_key: k.public_key,
            fingerprint: k.fingerprint,
            added_at: format_rfc3339_ms(k.added_at_ms),
            added_by: k.added_by,
        })
        .collect();
    Ok(
        Json(serde_json::json!({"server_id": id, "key_version": current, "keys": views}))
            .into_response(),
    )
}

/// Query of `GET /v1/admin/rejections`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RejectionParams {
    /// Only rejections claiming this server.
    pub server: Option<String>,
    /// Only this problem code.
    pub code: Option<String>,
    /// Only rejections received at or after this RFC 3339 time.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
}

/// One rejection, as listed.
#[derive(Debug, Serialize)]
pub struct RejectionView {
    /// RFC 3339 receive time.
    pub received_at: String,
    /// The stored row.
    #[serde(flatten)]
    pub row: StoredRejection,
}

/// `GET /v1/admin/rejections` → `{"rejections": [...], "next_cursor": id|null}`, newest first.
pub async fn rejections(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<RejectionParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    super::auth::authorize_read(&state, &headers).await?;
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_query",
            "limit must be from 1 to 1000",
        ));
    }
    let since_ms = params
        .since
        .as_deref()
        .map(|s| {
            parse_rfc3339_ms(s)
                .ok_or_else(|| ApiError::invalid("invalid_query", "since must be RFC 3339"))
        })
        .transpose()?;
    let rows = state
        .store
        .rejections(&RejectionQuery {
            server_id: params.server,
            code: params.code,
            since_ms,
            before_id: params.cursor,
            limit,
        })
        .await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let views: Vec<RejectionView> = rows
        .into_iter()
        .map(|row| RejectionView {
            received_at: format_rfc3339_ms(row.received_at_ms),
            row,
        })
        .collect();
    Ok(Json(serde_json::json!({"rejections": views, "next_cursor": next_cursor})).into_response())
}

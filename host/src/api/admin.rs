//! Admin routes for servers under `/v1/admin/servers…` (register, verify), behind the admin
//! credential ([`super::auth`]).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::authorize;
use super::directory::ServerView;
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::ingest::decode::valid_server_id;
use crate::ingest::signature::PublicKey;
use crate::store::NewServer;

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
    let who = authorize(&state, &headers).await?;
    let add = json_body(body)?;
    if !valid_server_id(&add.server_id) {
        return Err(ApiError::invalid(
            "invalid_field",
            "server_id must match ^[a-z0-9][a-z0-9._-]{0,127}$ or be a lowercase UUID",
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
        added_by: who,
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
    let who = authorize(&state, &headers).await?;
    let verify: Verify = if body.is_empty() {
        Verify::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?
    };
    let verified = verify.verified.unwrap_or(true);
    state.engine.set_verified(&id, verified).await?;
    tracing::info!(target: "vigil::audit", server_id = ?id, verified, by = %who, "server verification set");
    let record = state
        .store
        .get_server(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("server `{id}`")))?;
    Ok(Json(ServerView::from(record)).into_response())
}

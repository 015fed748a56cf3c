//! Admin routes for servers under `/v1/admin/servers…` (register one or a list, verify),
//! behind the admin credential ([`super::auth`]). Edits, pause, retirement and maintenance
//! windows are in [`super::manage`].

use super::error::ApiPath;
use axum::Json;
use axum::extract::State;
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

/// Body of `POST /v1/admin/servers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddServer {
    /// Identifier (`^[a-z0-9][a-z0-9._-]{0,127}$` or a UUID).
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,127}$")]
    pub server_id: String,
    /// Base64 raw ed25519 public key.
    #[schema(pattern = r"^[A-Za-z0-9+/]{43}=$")]
    pub public_key: String,
    /// Optional human-friendly name.
    #[schema(max_length = 256)]
    pub display_name: Option<String>,
    /// Optional cluster.
    #[schema(max_length = 128)]
    pub cluster_id: Option<String>,
}

/// Most servers one `POST /v1/admin/servers` list registers (larger fleets: several requests;
/// `vigil server import` splits a file by itself).
pub const MAX_IMPORT_ROWS: usize = 1000;

/// Checks one registration and turns it into the row the engine stores.
fn new_server(add: AddServer, actor: &str) -> Result<NewServer, ApiError> {
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
    Ok(NewServer {
        server_id: add.server_id,
        public_key: key.to_base64(),
        fingerprint: key.fingerprint(),
        display_name: add.display_name,
        cluster_id: add.cluster_id,
        registered_at_ms: now_ms(),
        added_by: actor.to_owned(),
    })
}

/// `POST /v1/admin/servers`: one registration object → 201 with the server; or a JSON array
/// of them (a fleet import, at most [`MAX_IMPORT_ROWS`]) → 200 with one answer per row, in
/// order (`{"server_id", "status": 201 | 409 | 422 | …, "code"?, "detail"?}`), written in one
/// transaction per 500 rows. Who registered them (`added_by` in the key history) is the
/// acting credential.
pub async fn add_server(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let actor = authorize(&state, &headers).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?;
    let serde_json::Value::Array(rows) = value else {
        let add: AddServer = serde_json::from_value(value)
            .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?;
        let server = new_server(add, &actor)?;
        let id = server.server_id.clone();
        state.engine.register(server).await?;
        let record = state
            .store
            .get_server(&id)
            .await?
            .ok_or_else(|| ApiError::internal(&"registered server is missing"))?;
        return Ok((StatusCode::CREATED, Json(ServerView::from(record))).into_response());
    };
    if rows.len() > MAX_IMPORT_ROWS {
        return Err(ApiError::invalid(
            "too_many_rows",
            format!(
                "a list registers at most {MAX_IMPORT_ROWS} servers per request (this one has {})",
                rows.len()
            ),
        ));
    }
    // Each row: its claimed id (for the answer) and either a checked server or its refusal.
    let checked: Vec<(Option<String>, Result<NewServer, ApiError>)> = rows
        .into_iter()
        .map(|row| {
            let claimed = row
                .get("server_id")
                .and_then(serde_json::Value::as_str)
                .map(|id| id.chars().take(128).collect());
            let server = serde_json::from_value::<AddServer>(row)
                .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))
                .and_then(|add| new_server(add, &actor));
            (claimed, server)
        })
        .collect();
    let valid: Vec<NewServer> = checked
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok().cloned())
        .collect();
    let mut outcomes = state.engine.register_many(valid).await?.into_iter();
    let mut created = 0usize;
    let results: Vec<serde_json::Value> = checked
        .into_iter()
        .map(|(claimed, server)| {
            let outcome = server.and_then(|_| {
                outcomes
                    .next()
                    .unwrap_or(Err(crate::engine::WriteError::Closed))
                    .map_err(ApiError::from)
            });
            match outcome {
                Ok(()) => {
                    created += 1;
                    serde_json::json!({ "server_id": claimed, "status": 201 })
                }
                Err(e) => serde_json::json!({
                    "server_id": claimed, "status": e.status.as_u16(), "code": e.code,
                    "detail": e.detail,
                }),
            }
        })
        .collect();
    tracing::info!(target: "vigil::audit", %actor, rows = results.len(), created, "servers imported");
    Ok(Json(serde_json::json!({
        "created": created,
        "failed": results.len() - created,
        "results": results,
    }))
    .into_response())
}

/// Optional body of `POST /v1/admin/servers/{id}/verify`.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// `false` withdraws verification. Default `true`.
    pub verified: Option<bool>,
}

/// `POST /v1/admin/servers/{id}/verify` → 200 with the server.
pub async fn verify_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers).await?;
    let verify: Verify = if body.is_empty() {
        Verify::default()
    } else {
        // JSON `null` is no body too.
        serde_json::from_slice::<Option<Verify>>(&body)
            .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?
            .unwrap_or_default()
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

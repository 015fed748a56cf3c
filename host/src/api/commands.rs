//! Pending-command routes: `POST /v1/admin/servers/{id}/commands` (queue),
//! `POST /v1/agent/commands/{id}/result` (the agent's signed result) and `GET /v1/host-key`
//! (the key agents verify commands with). Delivery itself rides on the heartbeat's 202.

use super::error::ApiPath;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::clock::parse_rfc3339_ms;
use crate::commands::{CommandError, RESULT_PREFIX, verify};

/// Longest time-to-live of a command.
const MAX_TTL_SECONDS: u64 = 7 * 24 * 3600;

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Unknown(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_command", e.to_string())
            }
            CommandError::NotDelivered(_) => {
                Self::new(StatusCode::CONFLICT, "command_not_delivered", e.to_string())
            }
            CommandError::ResultExists(_) => {
                Self::new(StatusCode::CONFLICT, "result_exists", e.to_string())
            }
            other => Self::internal(&other),
        }
    }
}

/// Body of `POST /v1/admin/servers/{id}/commands`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueCommand {
    /// The command name (`^[a-z0-9][a-z0-9._-]{0,63}$`); its meaning is the agent's.
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub command: String,
    /// Arguments (a JSON object). Default `{}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
    /// Seconds until the command expires undelivered. Default 3600, at most a week.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    pub ttl_seconds: Option<u64>,
}

fn valid_command(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// `POST /v1/admin/servers/{id}/commands` → 201 with the signed envelope.
pub async fn queue(
    State(state): State<AppState>,
    ApiPath(server_id): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Json<QueueCommand>, JsonRejection>,
) -> Result<Response, ApiError> {
    let who = super::auth::authorize(&state, &headers).await?;
    let Json(request) = body.map_err(|e| ApiError::invalid("invalid_body", e.body_text()))?;
    if !valid_command(&request.command) {
        return Err(ApiError::invalid(
            "invalid_field",
            "command must match ^[a-z0-9][a-z0-9._-]{0,63}$",
        ));
    }
    let args = request.args.unwrap_or_else(|| json!({}));
    if !args.is_object() {
        return Err(ApiError::invalid(
            "invalid_field",
            "args must be a JSON object",
        ));
    }
    let ttl = request.ttl_seconds.unwrap_or(3600);
    if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::invalid(
            "invalid_field",
            format!("ttl_seconds must be from 1 to {MAX_TTL_SECONDS}"),
        ));
    }
    if state.engine.identity(&server_id).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_server",
            format!("server `{server_id}` is not registered"),
        ));
    }
    let ttl_ms = i64::try_from(ttl * 1000).unwrap_or(i64::MAX);
    let envelope = state
        .commands
        .queue(&server_id, &request.command, args, ttl_ms, &who)
        .await?;
    Ok((StatusCode::CREATED, Json(envelope)).into_response())
}

/// `POST /v1/agent/commands/{id}/result`: the agent's result, signed with its current key
/// over `vigil-command-result-v1\n` + JCS(body without `signature`). Body members:
/// `command_id` (must equal the path), `server_id`, `key_version`, `timestamp` (RFC 3339),
/// `status` (`ok` | `failed` | `refused`: not in the agent's allow-list), optional `output`,
/// `signature`.
pub async fn result(
    State(state): State<AppState>,
    ApiPath(command_id): ApiPath<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid("malformed_json", e.body_text()))?;
    let Some(object) = body.as_object() else {
        return Err(ApiError::invalid(
            "malformed_json",
            "the body must be a JSON object",
        ));
    };
    let text = |name: &str| object.get(name).and_then(Value::as_str);
    let (Some(claimed), Some(server_id), Some(status), Some(timestamp)) = (
        text("command_id"),
        text("server_id"),
        text("status"),
        text("timestamp"),
    ) else {
        return Err(ApiError::invalid(
            "missing_field",
            "command_id, server_id, status, timestamp and signature are required",
        ));
    };
    if claimed != command_id {
        return Err(ApiError::invalid(
            "invalid_field",
            "command_id differs from the path",
        ));
    }
    if !matches!(status, "ok" | "failed" | "refused") || parse_rfc3339_ms(timestamp).is_none() {
        return Err(ApiError::invalid(
            "invalid_field",
            "status must be ok, failed or refused, timestamp RFC 3339",
        ));
    }
    let Some(identity) = state.engine.identity(server_id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_server",
            format!("server `{server_id}` is not registered"),
        ));
    };
    if object.get("key_version").and_then(Value::as_u64) != Some(u64::from(identity.key_version)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "key_version_mismatch",
            format!(
                "the server's current key version is {}",
                identity.key_version
            ),
        ));
    }
    if let Err(e) = verify(RESULT_PREFIX, &identity.public_key, object) {
        tracing::warn!(?server_id, ?command_id, error = %e, "command result with a bad signature");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            e.to_string(),
        ));
    }
    state
        .commands
        .record_result(server_id, &command_id, status, &body)
        .await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "recorded": true, "command_id": command_id })),
    )
        .into_response())
}

/// `GET /v1/host-key`: the host's command-signing key.
pub async fn host_key(State(state): State<AppState>) -> Response {
    let key = state.commands.public_key();
    Json(json!({
        "algorithm": "ed25519",
        "public_key": key.to_base64(),
        "fingerprint": key.fingerprint(),
        "command_prefix": "vigil-command-v1\n",
        "result_prefix": "vigil-command-result-v1\n",
    }))
    .into_response()
}

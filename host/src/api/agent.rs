//! `POST /v1/agent/heartbeat`: the agent-facing endpoint (wire contract v1), HTTP only.
//!
//! The request goes through the admission gate ([`crate::ingest::Gate::admit`]) once, which
//! logs and records every refusal; an admitted heartbeat goes to the writer and is answered 202
//! only after its batch is committed, with the commands queued for the agent.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{ApiError, AppState};

/// The 202 body.
#[derive(Debug, Serialize)]
pub struct HeartbeatAccepted {
    /// Always true.
    pub accepted: bool,
    /// An exact repeat of the last accepted heartbeat, stored once.
    pub duplicate: bool,
    /// Whether this heartbeat registered the server (open registration).
    pub server_registered: bool,
    /// Derived status.
    pub status: String,
    /// Derived confidence.
    pub confidence: String,
    /// `name@version` of the policy.
    pub policy: String,
    /// When the agent should send its next heartbeat.
    pub next_heartbeat_seconds: u32,
    /// Commands queued for the agent.
    pub pending_commands: Vec<serde_json::Value>,
}

/// Default interval suggested to agents that declare none.
const DEFAULT_INTERVAL_SECONDS: u32 = 30;

/// Handles one heartbeat: the gate, then the writer, then the pending commands.
pub async fn heartbeat(State(state): State<AppState>, request: Request) -> Response {
    let admitted = match state.gate.admit(request).await {
        Ok(admitted) => admitted,
        Err(refusal) => return ApiError::from(refusal).into_response(),
    };
    let server_id = admitted.heartbeat.decoded.server_id.clone();
    let signed = admitted.heartbeat.signed;
    let interval = admitted
        .heartbeat
        .decoded
        .interval_seconds
        .unwrap_or(DEFAULT_INTERVAL_SECONDS);
    match state.engine.submit_heartbeat(admitted.heartbeat).await {
        Ok(ack) => {
            // An exact repeat proves nothing: the last accepted body (signature included) is
            // public, so anyone can post it again; nor does an unsigned heartbeat (with
            // `require_signature = false`). Commands go only with a new signed heartbeat.
            let pending_commands = if ack.duplicate || !signed {
                Vec::new()
            } else {
                state
                    .commands
                    .deliver(&server_id)
                    .await
                    .unwrap_or_else(|e| {
                        // The heartbeat is stored; the commands stay queued for the next one.
                        tracing::error!(%server_id, error = %e, "could not take pending commands");
                        Vec::new()
                    })
            };
            let body = HeartbeatAccepted {
                accepted: true,
                duplicate: ack.duplicate,
                server_registered: admitted.server_registered,
                status: ack.status,
                confidence: ack.confidence,
                policy: ack.policy,
                next_heartbeat_seconds: interval,
                pending_commands,
            };
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
        Err(e) => {
            let error = ApiError::from(e);
            tracing::info!(%server_id, code = error.code, "heartbeat refused by the writer");
            error.into_response()
        }
    }
}

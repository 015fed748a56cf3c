//! `POST /v1/agent/heartbeat`: the agent-facing endpoint (wire contract v1).
//!
//! Every refusal is answered as problem+json, logged, and appended to `rejections` (folded into
//! the named server's policy when it is known) before the answer leaves. An accepted heartbeat
//! is answered 202 only after its batch is committed.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::engine::{RejectionNotice, now_ms};
use crate::ingest::decode::MAX_BODY_BYTES;
use crate::ingest::{Refusal, TrustRules, bad_signature, prepare};
use crate::policy::digest_of;

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

/// Handles one heartbeat.
pub async fn heartbeat(State(state): State<AppState>, request: Request) -> Response {
    let received_at_ms = now_ms();
    let source_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string());
    let bytes = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let refusal = Refusal {
                status: 413,
                code: "payload_too_large",
                detail: format!("body exceeds {MAX_BODY_BYTES} bytes"),
                claimed_server_id: None,
            };
            return refuse(&state, refusal, received_at_ms, source_ip, None).await;
        }
    };
    let config = state.config.current();
    let rules = TrustRules {
        require_verified: config.trust.require_verified,
        max_clock_skew_ms: i64::try_from(config.trust.max_clock_skew_seconds * 1000)
            .unwrap_or(i64::MAX),
    };
    let digest = || Some(digest_of(&bytes));
    let mut prepared = match prepare(&bytes, |id| state.engine.identity(id)) {
        Ok(prepared) => prepared,
        Err(refusal) => return refuse(&state, refusal, received_at_ms, source_ip, digest()).await,
    };
    let key = prepared.identity.public_key.clone();
    let message = std::mem::take(&mut prepared.message);
    let verified = state
        .verifier
        .verify(&key, message, prepared.signature)
        .await;
    if verified.is_err() {
        let refusal = bad_signature(&prepared.decoded);
        return refuse(&state, refusal, received_at_ms, source_ip, digest()).await;
    }
    let verified = match prepared.finish(&bytes, received_at_ms, rules, source_ip.clone()) {
        Ok(verified) => verified,
        Err(refusal) => return refuse(&state, refusal, received_at_ms, source_ip, digest()).await,
    };
    let interval = verified
        .decoded
        .interval_seconds
        .unwrap_or(DEFAULT_INTERVAL_SECONDS);
    let server_id = verified.decoded.server_id.clone();
    match state.engine.submit_heartbeat(verified).await {
        Ok(ack) => {
            let pending_commands = state
                .commands
                .deliver(&server_id)
                .await
                .unwrap_or_else(|e| {
                    // The heartbeat is stored; the commands stay queued for the next one.
                    tracing::error!(%server_id, error = %e, "could not take pending commands");
                    Vec::new()
                });
            tracing::debug!(%server_id, duplicate = ack.duplicate, status = %ack.status, "heartbeat accepted");
            let body = HeartbeatAccepted {
                accepted: true,
                duplicate: ack.duplicate,
                server_registered: false,
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

/// Logs, appends and answers a refusal.
async fn refuse(
    state: &AppState,
    refusal: Refusal,
    received_at_ms: i64,
    source_ip: Option<String>,
    body_sha256: Option<String>,
) -> Response {
    tracing::info!(
        code = refusal.code,
        status = refusal.status,
        server_id = refusal.claimed_server_id.as_deref().unwrap_or("-"),
        source_ip = source_ip.as_deref().unwrap_or("-"),
        detail = %refusal.detail,
        "heartbeat rejected"
    );
    let notice = RejectionNotice {
        received_at_ms,
        code: refusal.code,
        http_status: refusal.status,
        detail: refusal.detail.clone(),
        claimed_server_id: refusal.claimed_server_id.clone(),
        source_ip,
        body_sha256,
    };
    if let Err(e) = state.engine.record_rejection(notice).await {
        // The client still learns why it was refused; the audit row is what failed.
        tracing::error!(error = %e, code = refusal.code, "could not append the rejection");
    }
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(status, refusal.code, refusal.detail).into_response()
}

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
use crate::clock::now_ms;
use crate::engine::WriteError;
use crate::ingest::decode::{MAX_BODY_BYTES, decode};
use crate::ingest::verified::RejectionNotice;
use crate::ingest::{Refusal, TrustRules, bad_signature, prepare};
use crate::policy::digest_of;
use crate::store::NewServer;
use crate::trust::Registration;
use crate::trust::registration::verify_first_heartbeat;

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

/// The client address of a request: the TCP peer, or the `X-Forwarded-For` hop a trusted proxy
/// vouches for.
pub(crate) fn source_ip(request: &Request, trusted: &[ipnet::IpNet]) -> Option<std::net::IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    crate::trust::client_ip(peer, request.headers(), trusted)
}

/// 429 with `Retry-After`; logged at debug and never stored (a flood must not become writes).
pub(crate) fn limited(
    limited: crate::trust::limits::Limited,
    server_id: Option<&str>,
    ip: Option<std::net::IpAddr>,
) -> Response {
    tracing::debug!(?limited, server_id = server_id.unwrap_or("-"), source_ip = ?ip, "rate limited");
    let which = match limited {
        crate::trust::limits::Limited::Ip { .. } => "this client address",
        crate::trust::limits::Limited::Server { .. } => "this server",
    };
    ApiError {
        retry_after: Some(limited.retry_after()),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from {which}; retry later"),
        )
    }
    .into_response()
}

/// Handles one heartbeat: per-IP bucket → body → decode → per-server bucket → (open
/// registration) → key, signature, clock and trust rules → the writer.
pub async fn heartbeat(State(state): State<AppState>, request: Request) -> Response {
    let received_at_ms = now_ms();
    let config = state.config.current();
    let ip = source_ip(&request, &config.server.trusted_proxies);
    if let Some(addr) = ip
        && let Err(l) = state.trust.limits.check_ip(&config.rate_limit, addr)
    {
        return limited(l, None, ip);
    }
    let source_ip = ip.map(|a| a.to_string());
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
    let rules = TrustRules::from(&config.trust);
    let decoded = match decode(&bytes) {
        Ok(decoded) => decoded,
        Err(e) => {
            let digest = Some(digest_of(&bytes));
            return refuse(&state, e.into(), received_at_ms, source_ip, digest).await;
        }
    };
    let server_id = decoded.server_id.clone();
    if state.engine.identity(&server_id).is_none() && state.store.is_shared() {
        // Several hosts on one database: another host may have registered it a moment ago,
        // before its notification reached this one.
        match state.store.get_server(&server_id).await {
            Ok(Some(record)) => state.engine.learn(&record),
            Ok(None) => {}
            Err(e) => tracing::warn!(%server_id, error = %e, "cannot look up an unknown server"),
        }
    }
    let known = state.engine.identity(&server_id).is_some();
    let opens =
        !known && config.trust.registration == Registration::Open && decoded.public_key.is_some();
    if (known || opens)
        && let Err(l) = state
            .trust
            .limits
            .check_server(&config.rate_limit, &server_id)
    {
        return limited(l, Some(&server_id), ip);
    }
    let mut server_registered = false;
    if opens {
        match open_registration(&state, &decoded, received_at_ms, rules).await {
            Ok(registered) => server_registered = registered,
            Err(refusal) => {
                let digest = Some(digest_of(&bytes));
                return refuse(&state, refusal, received_at_ms, source_ip, digest).await;
            }
        }
    }
    let digest = || Some(digest_of(&bytes));
    let mut prepared = match prepare(decoded, rules, |id| state.engine.identity(id)) {
        Ok(prepared) => prepared,
        Err(refusal) => return refuse(&state, refusal, received_at_ms, source_ip, digest()).await,
    };
    // Signatures are checked on the batching verifier thread, off the async executor.
    if let Some((message, signature)) = prepared.signed.take() {
        let key = prepared.identity.public_key.clone();
        if state
            .verifier
            .verify(&key, message.clone(), signature)
            .await
            .is_err()
        {
            let refusal = bad_signature(&prepared.decoded, source_ip.as_deref());
            return refuse(&state, refusal, received_at_ms, source_ip, digest()).await;
        }
        prepared.signed = Some((message, signature));
    }
    let verified = match prepared.finish(&bytes, received_at_ms, rules, source_ip.clone()) {
        Ok(verified) => verified,
        Err(refusal) => return refuse(&state, refusal, received_at_ms, source_ip, digest()).await,
    };
    let interval = verified
        .decoded
        .interval_seconds
        .unwrap_or(DEFAULT_INTERVAL_SECONDS);
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
            let body = HeartbeatAccepted {
                accepted: true,
                duplicate: ack.duplicate,
                server_registered,
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

/// Registers an unknown server from its first heartbeat (open mode). `Ok(false)` when another
/// request registered it first: the ordinary checks then run against the stored key.
async fn open_registration(
    state: &AppState,
    decoded: &crate::ingest::decode::DecodedHeartbeat,
    received_at_ms: i64,
    rules: TrustRules,
) -> Result<bool, Refusal> {
    let key = verify_first_heartbeat(decoded, received_at_ms, rules)?;
    let server = NewServer {
        server_id: decoded.server_id.clone(),
        public_key: key.to_base64(),
        fingerprint: key.fingerprint(),
        display_name: None,
        cluster_id: None,
        registered_at_ms: received_at_ms,
        added_by: "open-registration".into(),
    };
    match state.engine.register(server).await {
        Ok(()) => Ok(true),
        Err(WriteError::Conflict(_)) => Ok(false),
        Err(e) => {
            let error = ApiError::from(e);
            Err(Refusal {
                status: error.status.as_u16(),
                code: error.code,
                detail: error.detail,
                claimed_server_id: Some(decoded.server_id.clone()),
            })
        }
    }
}

/// Logs, appends and answers a refusal.
pub(crate) async fn refuse(
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

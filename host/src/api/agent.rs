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
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

/// Interval suggested when neither the agent nor the policy gives one (a claimed `offline`
/// asks for no check, say).
const FALLBACK_INTERVAL_SECONDS: u32 = 30;
/// The longest interval the wire accepts (`interval_seconds` is at most a week).
const MAX_INTERVAL_SECONDS: u32 = 604_800;

/// When the agent should send its next heartbeat: the interval it declared (the policy built
/// its deadline from it), else half the time until the policy's next check (so one lost beat
/// still lands before the deadline), else (the policy asked for no check: a claimed `offline`)
/// 30 s. Always 1 s to a week.
pub fn next_heartbeat_seconds(declared: Option<u32>, next_check_in_ms: Option<i64>) -> u32 {
    let half_to_check = next_check_in_ms
        .filter(|ms| *ms > 0)
        .map(|ms| u32::try_from(ms / 2_000).unwrap_or(u32::MAX));
    let seconds = declared
        .filter(|s| *s > 0)
        .or(half_to_check)
        .unwrap_or(FALLBACK_INTERVAL_SECONDS);
    seconds.clamp(1, MAX_INTERVAL_SECONDS)
}

/// Handles one heartbeat: the gate, then the writer, then the pending commands.
pub async fn heartbeat(State(state): State<AppState>, request: Request) -> Response {
    let admitted = match state.gate.admit(request).await {
        Ok(admitted) => admitted,
        Err(refusal) => return ApiError::from(refusal).into_response(),
    };
    let server_id = admitted.heartbeat.decoded.server_id.clone();
    let signed = admitted.heartbeat.signed;
    let declared_interval = admitted.heartbeat.decoded.interval_seconds;
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
                next_heartbeat_seconds: next_heartbeat_seconds(
                    declared_interval,
                    ack.next_check_in_ms,
                ),
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

#[cfg(test)]
mod tests {
    use super::next_heartbeat_seconds;

    #[test]
    fn the_suggestion_follows_the_policy_check() {
        // Declared 30 s, offline deadline in 60 s: 30 s.
        assert_eq!(next_heartbeat_seconds(Some(30), Some(60_000)), 30);
        // No declared interval, the default 5-minute grace: half of it.
        assert_eq!(next_heartbeat_seconds(None, Some(300_000)), 150);
        // A daily job with two days of grace: once a day.
        assert_eq!(
            next_heartbeat_seconds(Some(86_400), Some(172_800_000)),
            86_400
        );
        // The declared interval wins over a nearer check (a new server's settle time).
        assert_eq!(next_heartbeat_seconds(Some(86_400), Some(600_000)), 86_400);
        // Neither: the fallback; never 0, never beyond a week.
        assert_eq!(next_heartbeat_seconds(None, None), 30);
        assert_eq!(next_heartbeat_seconds(None, Some(500)), 1);
        assert_eq!(next_heartbeat_seconds(None, Some(i64::MAX)), 604_800);
        assert_eq!(next_heartbeat_seconds(Some(0), Some(-5)), 30);
    }
}

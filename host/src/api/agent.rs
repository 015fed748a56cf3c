//! `POST /v1/agent/heartbeat` and `POST /v1/agent/heartbeats`: the agent-facing endpoints
//! (wire contract v1, one heartbeat or a batch of them), HTTP only.
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
    let item = Item::of(&admitted);
    match state.engine.submit_heartbeat(admitted.heartbeat).await {
        Ok(ack) => {
            let body = item.accepted(&state, ack).await;
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
        Err(e) => item.failed(e).into_response(),
    }
}

/// What the answer to an admitted heartbeat needs once the heartbeat went to the writer.
struct Item {
    server_id: String,
    signed: bool,
    declared_interval: Option<u32>,
    server_registered: bool,
}

impl Item {
    fn of(admitted: &crate::ingest::Admitted) -> Self {
        Self {
            server_id: admitted.heartbeat.decoded.server_id.clone(),
            signed: admitted.heartbeat.signed,
            declared_interval: admitted.heartbeat.decoded.interval_seconds,
            server_registered: admitted.server_registered,
        }
    }

    /// The 202 body, with the commands queued for the agent.
    async fn accepted(&self, state: &AppState, ack: crate::engine::Ack) -> HeartbeatAccepted {
        // An exact repeat proves nothing: the last accepted body (signature included) is
        // public, so anyone can post it again; nor does an unsigned heartbeat (with
        // `require_signature = false`). Commands go only with a new signed heartbeat.
        let pending_commands = if ack.duplicate || !self.signed {
            Vec::new()
        } else {
            let server_id = &self.server_id;
            state.commands.deliver(server_id).await.unwrap_or_else(|e| {
                // The heartbeat is stored; the commands stay queued for the next one.
                tracing::error!(%server_id, error = %e, "could not take pending commands");
                Vec::new()
            })
        };
        HeartbeatAccepted {
            accepted: true,
            duplicate: ack.duplicate,
            server_registered: self.server_registered,
            status: ack.status,
            confidence: ack.confidence,
            policy: ack.policy,
            next_heartbeat_seconds: next_heartbeat_seconds(
                self.declared_interval,
                ack.next_check_in_ms,
            ),
            pending_commands,
        }
    }

    /// The writer's refusal (a replay) or failure, as answered.
    fn failed(&self, e: crate::engine::WriteError) -> ApiError {
        let error = ApiError::from(e);
        tracing::info!(server_id = %self.server_id, code = error.code, "heartbeat refused by the writer");
        error
    }
}

/// One item's answer in a batch: the status and body the single route would have answered.
#[derive(Debug, Serialize)]
pub struct BatchItem {
    /// The HTTP status the single route would answer (202, 401, 409, ...).
    pub status: u16,
    /// The problem `code` of a refusal (absent on 202).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// Seconds to wait before retrying this item (429, 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The 202 body, or the RFC 9457 problem object.
    pub body: serde_json::Value,
}

impl BatchItem {
    fn accepted(body: &HeartbeatAccepted) -> Self {
        Self {
            status: 202,
            code: None,
            retry_after: None,
            body: serde_json::to_value(body).unwrap_or_default(),
        }
    }

    fn refused(error: &ApiError) -> Self {
        Self {
            status: error.status.as_u16(),
            code: Some(error.code),
            retry_after: error.retry_after,
            body: error.problem(),
        }
    }
}

/// The 200 body of `POST /v1/agent/heartbeats`.
#[derive(Debug, Serialize)]
pub struct BatchAnswer {
    /// Items answered 202.
    pub accepted: usize,
    /// Items answered otherwise.
    pub refused: usize,
    /// One answer per item, in the order of the body's lines.
    pub items: Vec<BatchItem>,
}

/// Handles a batch (`POST /v1/agent/heartbeats`, NDJSON; see
/// [`crate::ingest::Gate::admit_batch`] for the format, bounds and budget): every item through
/// the gate, the admitted ones to the writer together, and one answer per item once every
/// admitted one is committed (or failed). An item's refusal never touches its neighbours. The
/// request is answered 200 with the items' answers; only a refusal of the whole request (an
/// empty budget, a body or item count over the bound) is a problem+json of its own.
pub async fn heartbeats(State(state): State<AppState>, request: Request) -> Response {
    let results = match state.gate.admit_batch(request).await {
        Ok(results) => results,
        Err(refusal) => return ApiError::from(refusal).into_response(),
    };
    let mut answers: Vec<Option<BatchItem>> = Vec::with_capacity(results.len());
    let mut admitted = Vec::new();
    let mut heartbeats = Vec::new();
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(item) => {
                admitted.push((index, Item::of(&item)));
                heartbeats.push(item.heartbeat);
                answers.push(None);
            }
            Err(refusal) => answers.push(Some(BatchItem::refused(&ApiError::from(refusal)))),
        }
    }
    let acks = state.engine.submit_heartbeats(heartbeats).await;
    for ((index, item), ack) in admitted.into_iter().zip(acks) {
        answers[index] = Some(match ack {
            Ok(ack) => BatchItem::accepted(&item.accepted(&state, ack).await),
            Err(e) => BatchItem::refused(&item.failed(e)),
        });
    }
    let items: Vec<BatchItem> = answers.into_iter().flatten().collect();
    let accepted = items.iter().filter(|i| i.status == 202).count();
    let body = BatchAnswer {
        accepted,
        refused: items.len() - accepted,
        items,
    };
    (StatusCode::OK, axum::Json(body)).into_response()
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

//! Route families for clients already deployed that speak another tool's protocol, each off
//! by default under `[compat.<source>]` and each a variant of the admission gate: the
//! credential is checked first ([`crate::ingest::Gate::admit_token`]), the body is mapped to a
//! v1 heartbeat that carries how it was authenticated, stored with the body as sent, and folded
//! by the same policy. Each answers in its client's own shape (see `docs/migrating.md`).
//!
//! - Healthchecks pings, `/ping/{uuid}` and `/ping/{uuid}/start|fail|{exit_status}`, in
//!   [`healthchecks`];
//! - Uptime Kuma pushes, `/api/push/{token}`, in [`uptime_kuma`];
//! - HomelabCmd agents, `POST /api/v1/agents/heartbeat`, in [`homelabcmd`];
//! - the Sprint-4 agents' `POST /agent/heartbeat` (the v1 route at its old path), in
//!   [`sprint4`];
//! - PAP agents, `POST /heartbeat/{agentId}`, and the collector's `GET /agents`,
//!   `/agents/{id}`, `/health`, in [`pap`].
//! - and one read surface rather than a way in: the Hermes agent marketplace's trust score,
//!   reputation and leaderboard (`/api/v1/marketplace/…`), in [`hermes`].

pub mod healthchecks;
pub mod hermes;
pub mod homelabcmd;
pub mod pap;
pub mod sprint4;
pub mod uptime_kuma;

use super::{ApiError, AppState};
use crate::engine::Ack;
use crate::ingest::{Admitted, Refusal};

/// What a disabled source answers: exactly what an unknown route does.
pub(crate) fn disabled() -> ApiError {
    ApiError::not_found("this route")
}

/// Hands an admitted compat heartbeat to the writer; the acknowledgement, or the refusal to
/// answer in the client's own shape.
pub(crate) async fn submit(state: &AppState, admitted: Admitted) -> Result<Ack, Refusal> {
    let server_id = admitted.heartbeat.decoded.server_id.clone();
    state
        .engine
        .submit_heartbeat(admitted.heartbeat)
        .await
        .map_err(|e| {
            let error = ApiError::from(e);
            tracing::info!(server_id = ?server_id, code = error.code, "compat heartbeat refused by the writer");
            Refusal {
                retry_after: error.retry_after,
                ..Refusal::new(
                    error.status.as_u16(),
                    error.code,
                    error.detail,
                    Some(&server_id),
                )
            }
        })
}

/// The `Retry-After` header of a refusal that has one.
pub(crate) fn retry_after(refusal: &Refusal) -> Option<(axum::http::HeaderName, String)> {
    refusal
        .retry_after
        .map(|s| (axum::http::header::RETRY_AFTER, s.to_string()))
}

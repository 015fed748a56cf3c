//! The Sprint-4 directory agents (`[compat.sprint4]`): `POST /agent/heartbeat` with the v1
//! signed body, answered exactly as `POST /v1/agent/heartbeat` (same gate, same answers).

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::super::AppState;

/// `POST /agent/heartbeat`: the v1 route at its old path, when enabled.
pub async fn heartbeat(State(state): State<AppState>, request: Request) -> Response {
    if !state.config.current().compat.sprint4.enabled {
        return super::disabled().into_response();
    }
    super::super::agent::heartbeat(State(state), request).await
}

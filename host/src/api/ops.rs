//! Operations routes: `GET /healthz` (the process is up), `GET /readyz` (the database
//! answers), `GET /metrics` (Prometheus, OpenMetrics text) and the request-latency layer that
//! feeds it. These routes only report; they never change state.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::metrics::{Metrics, RequestLabels};

/// The content type Prometheus negotiates for OpenMetrics.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /healthz` — the process is up; includes the engine's counters.
pub async fn healthz(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({
        "status": "ok",
        "policy": state.engine.policy().digest(),
        "engine": state.engine.stats(),
    }))
    .into_response()
}

/// `GET /readyz` — the database answers.
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(serde_json::json!({ "status": "ready" })).into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "database not ready");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "database unavailable",
            ))
        }
    }
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .set_queue_depth("writer", state.engine.queue_depth());
    let mut response = state.metrics.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    response
}

/// The method as a label from a fixed set: any other token a client sends is `other`, so a
/// request cannot mint a new series (the route is the matched template, never the raw path).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: observes each request's latency by method, matched route and status.
pub async fn track_latency(
    State(metrics): State<Arc<Metrics>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method()).to_owned();
    let response = next.run(request).await;
    let labels = RequestLabels {
        method,
        route: matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned()),
        status: response.status().as_u16(),
    };
    metrics
        .request_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

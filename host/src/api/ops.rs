//! Operations routes: `GET /metrics` (Prometheus, OpenMetrics text) and the request-latency
//! layer that feeds it.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{Metrics, RequestLabels};

/// The content type Prometheus negotiates for OpenMetrics.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
pub async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    state
        .metrics
        .set_queue_depth("writer", state.engine.queue_depth());
    let mut response = state.metrics.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    response
}

/// Middleware: observes each request's latency by method, matched route and status.
pub async fn track_latency(
    State(metrics): State<Arc<Metrics>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
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

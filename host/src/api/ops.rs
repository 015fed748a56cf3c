//! Operations routes: `GET /healthz` (the process is up), `GET /readyz` (the database
//! answers), `GET /metrics` (Prometheus, OpenMetrics text) and the request-latency layer that
//! feeds it. These routes only report; they never change state.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::metrics::RequestLabels;

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
    let (reload_ok, reload_at) = state.config.reload_status();
    state.metrics.set_config_reload(reload_ok, reload_at);
    if state.config.current().metrics.per_server {
        match state.store.load_servers().await {
            Ok(servers) => {
                let now = crate::clock::now_ms();
                state.metrics.set_servers(
                    servers
                        .iter()
                        .filter(|s| s.admin.retired_at_ms.is_none())
                        .map(|s| crate::metrics::ServerSample {
                            server: &s.server_id,
                            status: &s.snapshot.status,
                            confidence: &s.snapshot.confidence,
                            uptime_percent: s.snapshot.uptime_percent,
                            last_seen_age_seconds: s
                                .snapshot
                                .last_seen_at_ms
                                .map(|at| (now - at) as f64 / 1000.0),
                        }),
                );
            }
            // The aggregate families are still worth a scrape; the per-server ones keep
            // their last values.
            Err(e) => tracing::warn!(error = %e, "per-server metrics: reading servers failed"),
        }
    } else {
        state.metrics.set_servers([]);
    }
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

/// The request id header: taken from the request when it is a plain token (at most 64 of
/// `[A-Za-z0-9._:-]`, as a proxy sets it), otherwise made here; echoed on the response.
pub const REQUEST_ID: &str = "x-request-id";

/// Middleware around every request: gives it a request id (echoed in the `x-request-id`
/// header and as `request_id` in every problem+json body), observes its latency by method,
/// matched route and status, and with `[log] access` writes one `vigil::access` event.
pub async fn observe(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| plain_token(v))
        .map_or_else(fresh_request_id, str::to_owned);
    let header_value = HeaderValue::from_str(&id).expect("a plain token is a header value");
    request
        .headers_mut()
        .insert(REQUEST_ID, header_value.clone());
    let client = state.config.current().log.access.then(|| {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let trusted = &state.config.current().server.trusted_proxies;
        crate::ingest::client_ip::client_ip(peer, request.headers(), trusted)
    });
    let mut response = next.run(request).await;
    let route = matched.as_ref().map_or("unmatched", |m| m.as_str());
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state
        .metrics
        .request_duration
        .get_or_create(&RequestLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        })
        .observe(elapsed.as_secs_f64());
    if let Some(client) = client {
        tracing::info!(
            target: "vigil::access",
            method,
            route,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            client = ?client,
            request_id = %id,
        );
    }
    response.headers_mut().insert(REQUEST_ID, header_value);
    if is_problem(&response) {
        response = with_request_id(response, &id).await;
    }
    response
}

/// Whether `text` is a request id we keep as sent.
fn plain_token(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// 16 random hex digits.
fn fresh_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"))
}

/// A problem+json body with `request_id` added. Problem bodies are small JSON objects made
/// here, so the member is spliced in before the closing brace (the id is a plain token: no
/// escaping needed) instead of parsing and printing the object again.
async fn with_request_id(response: Response, id: &str) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let body = match bytes.strip_suffix(b"}") {
        Some(head) if bytes.starts_with(b"{") => {
            let separator = if head.len() > 1 { "," } else { "" };
            let mut body = Vec::with_capacity(bytes.len() + id.len() + 16);
            body.extend_from_slice(head);
            body.extend_from_slice(format!("{separator}\"request_id\":\"{id}\"}}").as_bytes());
            parts.headers.remove(header::CONTENT_LENGTH);
            body
        }
        _ => bytes.to_vec(),
    };
    Response::from_parts(parts, axum::body::Body::from(body))
}

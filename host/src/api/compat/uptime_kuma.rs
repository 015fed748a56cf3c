//! Uptime Kuma push monitors (`[compat.uptime_kuma]`): `GET|POST
//! /api/push/{push_token}?status=up|down&msg=…&ping=…`. The push token is a per-server ingest
//! token of kind `push`.
//!
//! Answers as Uptime Kuma does: 200 `{"ok":true}`, 404 `{"ok":false,"msg":"…"}` for an
//! unknown or revoked token (other refusals keep their status with the same shape).
//! `status=down` (anything but `up`, as Kuma reads it) is a claimed offline; `ping` is a
//! latency metric (`metrics.ping_ms`); `msg` is the diagnostic (`payload.msg`).

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::super::AppState;
use super::healthchecks::url_query;
use crate::ingest::Refusal;
use crate::ingest::decode::MAX_NESTED_STRING_CHARS;
use crate::ingest::gate::TokenClaim;
use crate::store::TokenKind;

/// Largest request body read (a push carries its data in the query; a body is ignored).
const MAX_PUSH_BODY_BYTES: usize = 4096;

/// Kuma's own words for an unknown token.
const NOT_FOUND: &str = "Monitor not found or not active.";

fn refused(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let msg = match refusal.status {
        404 => NOT_FOUND.to_owned(),
        429 => "Too many requests, retry later.".to_owned(),
        _ => refusal.detail.clone(),
    };
    let mut response = (status, Json(json!({"ok": false, "msg": msg}))).into_response();
    if let Some((name, value)) = super::retry_after(refusal)
        && let Ok(value) = value.parse()
    {
        response.headers_mut().insert(name, value);
    }
    response
}

/// The v1 members of a push: `status`, `metrics.ping_ms`, `payload.msg`.
pub fn members(status: Option<&str>, msg: Option<&str>, ping: Option<&str>) -> Map<String, Value> {
    let mut members = Map::new();
    let up = status.is_none_or(|s| s == "up");
    members.insert(
        "status".into(),
        if up { "online" } else { "offline" }.into(),
    );
    if let Some(ms) = ping
        .and_then(|p| p.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms < 9.0e15)
    {
        members.insert("metrics".into(), json!({ "ping_ms": ms }));
    }
    let mut payload = Map::new();
    payload.insert("source".into(), "uptime_kuma".into());
    let msg: String = msg
        .unwrap_or("OK")
        .chars()
        .take(MAX_NESTED_STRING_CHARS)
        .collect();
    payload.insert("msg".into(), msg.into());
    members.insert("payload".into(), Value::Object(payload));
    members
}

/// `GET|POST /api/push/{push_token}`.
pub async fn push(
    State(state): State<AppState>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    if !state.config.current().compat.uptime_kuma.enabled {
        return super::disabled().into_response();
    }
    let uri = request.uri().clone();
    let status = url_query(&uri, "status");
    let msg = url_query(&uri, "msg");
    let ping = url_query(&uri, "ping");
    let claim = TokenClaim {
        kind: TokenKind::Push,
        token: &token,
    };
    let admitted = state
        .gate
        .admit_token(request, claim, MAX_PUSH_BODY_BYTES, |_body| {
            Ok(members(status.as_deref(), msg.as_deref(), ping.as_deref()))
        })
        .await;
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(&refusal),
    };
    match super::submit(&state, admitted).await {
        Ok(_) => Json(json!({"ok": true})).into_response(),
        Err(refusal) => refused(&refusal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_map_to_status_latency_and_diagnostic() {
        let m = members(Some("down"), Some("disk full"), Some("12.5"));
        assert_eq!(m["status"], "offline");
        assert_eq!(m["metrics"], json!({"ping_ms": 12.5}));
        assert_eq!(m["payload"]["msg"], "disk full");
        let m = members(None, None, Some("NaN"));
        assert_eq!(m["status"], "online");
        assert!(!m.contains_key("metrics"));
        assert_eq!(m["payload"]["msg"], "OK");
        // Kuma reads anything but `up` as down.
        assert_eq!(members(Some("UP"), None, None)["status"], "offline");
    }
}

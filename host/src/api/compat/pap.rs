//! PAP agents (`[compat.pap]`, PAP-RFC-001 §8.1): Vigil stands where a PAP Heartbeat
//! Collector stood. `POST /heartbeat/{agentId}` with `{"mode": "EMERGENCY"|"IDLE"|"SLEEP",
//! "uptime_seconds": N, "agent_name": "…"?}` (modes case-insensitive; `uptime_seconds` may
//! be fractional, as the TypeScript emitter sends it; other members are kept with the body as
//! sent), and the collector's query routes `GET /agents`, `GET /agents/{id}` and `GET /health`.
//!
//! PAP agents carry no credential: the heartbeat route answers only clients in `[compat.pap]
//! allow_from` (default loopback), and the heartbeat is stored with `auth: network` (the
//! default policy never grants it green). An unknown agent id is registered, unverified, into
//! `[compat.pap] cluster_id` (its `agent_name` as display name), within `[trust]`'s hourly
//! registration caps. The mode becomes the v1 `mode` (lowercase), the uptime the v1
//! `uptime_seconds` (whole seconds), so the policy judges the agent by its mode's interval
//! (grace = 2 × 5 s / 30 s / 15 min with the default parameters), raises `restart-detected`
//! when the uptime goes down and `emergency-mode` on entering `EMERGENCY`.
//!
//! Answers as the collector does: 200 `{"received": true, "is_new", "restart_detected",
//! "next_heartbeat_ms"}`, where `is_new` says this heartbeat registered the agent,
//! `restart_detected` is the policy's `restart-detected` signal of this fold and
//! `next_heartbeat_ms` is half the grace the policy gave (its `grace_seconds` score: 5 s,
//! 30 s, 15 min by mode with the default parameters); 400 `{"error", "required": [...]}` or
//! `{"error", "valid": [...]}` for a bad body; other refusals `{"error": "…"}` with their
//! status (403 outside `allow_from`, 429 with `Retry-After`).
//!
//! The query routes need the collector key (`X-Collector-Key` or `Authorization: Bearer`)
//! when `[compat.pap] collector_key` is set, else a client in `allow_from`. They list the
//! servers of `cluster_id` (at most [`MAX_AGENTS`]), each with the mode and uptime of its last
//! heartbeat; `healthy` is the policy's `online`. Not served: the WebSocket `/observe/{id}`
//! (`/v1/servers/{id}/observe` streams the same heartbeats in Vigil's shape), so `observed`
//! and `observation_mode` report that no PAP observer is connected.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq as _;

use super::super::AppState;
use crate::clock::format_rfc3339_ms;
use crate::engine::Ack;
use crate::ingest::Refusal;
use crate::store::{ServerQuery, ServerRecord, ServerSort};

/// Largest body read (a PAP heartbeat is liveness only: about 80 bytes).
pub const MAX_BODY_BYTES: usize = 4096;

/// Most agents `GET /agents` lists (each costs one read of its last heartbeat).
pub const MAX_AGENTS: u32 = 1000;

/// Longest `agent_name` kept as the display name.
const MAX_AGENT_NAME_CHARS: usize = 128;

/// PAP's modes, as it spells them.
pub const MODES: [&str; 3] = ["EMERGENCY", "IDLE", "SLEEP"];

/// What the next-heartbeat hint falls back to when the policy gives no grace (30 s, as the
/// v1 route).
const FALLBACK_NEXT_MS: u64 = 30_000;

/// One invalid body, in the collector's words.
#[derive(Debug, Clone, PartialEq)]
pub enum Invalid {
    /// `mode` missing or `uptime_seconds` not a (non-negative, finite) number.
    Payload,
    /// `mode` is none of [`MODES`].
    Mode,
}

impl Invalid {
    /// The 400 body.
    pub fn body(&self) -> Value {
        match self {
            Invalid::Payload => json!({
                "error": "Invalid heartbeat payload",
                "required": ["mode", "uptime_seconds"],
            }),
            Invalid::Mode => json!({"error": "Invalid mode", "valid": MODES}),
        }
    }

    fn refusal(&self) -> Refusal {
        Refusal::new(400, "invalid_field", self.body().to_string(), None)
    }
}

/// A validated PAP heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The mode, as PAP spells it (upper case).
    pub mode: &'static str,
    /// `agent_name`, if the agent sent one (cut to 128 characters).
    pub agent_name: Option<String>,
    /// The v1 members: `status`, `mode` (lower case), `uptime_seconds` (whole seconds),
    /// `payload`.
    pub members: Map<String, Value>,
}

/// Validates a PAP heartbeat body and maps it.
pub fn map(bytes: &[u8]) -> Result<Mapped, Invalid> {
    let body: Map<String, Value> = serde_json::from_slice(bytes).map_err(|_| Invalid::Payload)?;
    let mode = match body.get("mode") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return Err(Invalid::Payload),
    };
    let uptime = body
        .get("uptime_seconds")
        .and_then(Value::as_f64)
        .filter(|u| u.is_finite() && *u >= 0.0 && *u < 9.0e15)
        .ok_or(Invalid::Payload)?;
    let mode = MODES
        .iter()
        .copied()
        .find(|known| known.eq_ignore_ascii_case(mode))
        .ok_or(Invalid::Mode)?;
    let agent_name = match body.get("agent_name") {
        Some(Value::String(name)) if !name.is_empty() => {
            Some(name.chars().take(MAX_AGENT_NAME_CHARS).collect::<String>())
        }
        _ => None,
    };
    let mut members = Map::new();
    members.insert("status".into(), "online".into());
    members.insert("mode".into(), mode.to_ascii_lowercase().into());
    // Whole seconds: `floor` keeps the order, so a restart still shows as a decrease.
    members.insert("uptime_seconds".into(), (uptime.floor() as u64).into());
    let mut payload = Map::new();
    payload.insert("source".into(), "pap".into());
    if let Some(name) = &agent_name {
        payload.insert("agent_name".into(), name.clone().into());
    }
    members.insert("payload".into(), Value::Object(payload));
    Ok(Mapped {
        mode,
        agent_name,
        members,
    })
}

/// `next_heartbeat_ms`: half the grace the policy gave (its `grace_seconds` score), so one lost
/// beat still lands before the deadline; else half the time to its next check; else 30 s.
/// Always 1 s to a week.
pub fn next_heartbeat_ms(ack: &Ack) -> u64 {
    let from_grace = ack
        .scores
        .get("grace_seconds")
        .filter(|g| g.is_finite() && *g > 0.0)
        .map(|g| (g * 500.0).round() as u64);
    let from_check = ack
        .next_check_in_ms
        .filter(|ms| *ms > 0)
        .map(|ms| ms.unsigned_abs() / 2);
    from_grace
        .or(from_check)
        .unwrap_or(FALLBACK_NEXT_MS)
        .clamp(1_000, 604_800_000)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A refusal in the collector's words.
fn refused(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = match refusal.status {
        400 => match serde_json::from_str::<Value>(&refusal.detail) {
            Ok(body @ Value::Object(_)) => (status, Json(body)).into_response(),
            _ => error(status, "Invalid agent id"),
        },
        403 => error(status, "Forbidden"),
        404 => error(status, "Agent not found"),
        413 => error(status, "Payload too large"),
        429 => error(status, "Too many requests"),
        _ => error(status, "Service unavailable"),
    };
    if let Some((name, value)) = super::retry_after(refusal)
        && let Ok(value) = value.parse()
    {
        response.headers_mut().insert(name, value);
    }
    response
}

/// `POST /heartbeat/{agentId}`.
pub async fn heartbeat(
    State(state): State<AppState>,
    Path(agent_id): Path<String>,
    request: Request,
) -> Response {
    let config = state.config.current();
    let pap = &config.compat.pap;
    if !pap.enabled {
        return super::disabled().into_response();
    }
    let admitted = state
        .gate
        .admit_network_at(
            request,
            &agent_id,
            &pap.allow_from,
            Some(&pap.cluster_id),
            MAX_BODY_BYTES,
            crate::clock::now_ms(),
            |bytes| {
                let mapped = map(bytes).map_err(|i| i.refusal())?;
                Ok((mapped.agent_name, mapped.members))
            },
        )
        .await;
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(&refusal),
    };
    let is_new = admitted.server_registered;
    match super::submit(&state, admitted).await {
        Ok(ack) => Json(json!({
            "received": true,
            "is_new": is_new,
            "restart_detected": ack.signals.iter().any(|s| s == "restart-detected"),
            "next_heartbeat_ms": next_heartbeat_ms(&ack),
        }))
        .into_response(),
        Err(refusal) => refused(&refusal),
    }
}

/// The collector key presented, if any: `X-Collector-Key`, else `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-collector-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .filter(|k| !k.is_empty())
}

/// The query routes' guard: the source's budget, then the collector key when one is set, else
/// an `allow_from` client. `Err` is the answer.
#[allow(clippy::result_large_err)] // the answer itself, built once on the error path
fn guard(state: &AppState, request: &Request) -> Result<(), Response> {
    let config = state.config.current();
    let pap = &config.compat.pap;
    if !pap.enabled {
        return Err(super::disabled().into_response());
    }
    let ip = state
        .gate
        .charge_source_ip(request)
        .map_err(|refusal| refused(&refusal))?;
    match pap.collector_key() {
        Some(expected) => {
            let presented = presented_key(request.headers()).unwrap_or("");
            let same: bool = crate::api::auth::hash(presented)
                .as_bytes()
                .ct_eq(crate::api::auth::hash(expected).as_bytes())
                .into();
            if !same {
                tracing::info!(source_ip = ?ip, "PAP query refused: no valid collector key");
                return Err(error(
                    StatusCode::UNAUTHORIZED,
                    "Invalid or missing collector key",
                ));
            }
        }
        None if !pap.allows(ip) => {
            tracing::info!(source_ip = ?ip, "PAP query refused: not an allowed network");
            return Err(error(StatusCode::FORBIDDEN, "Forbidden"));
        }
        None => {}
    }
    Ok(())
}

/// One agent as the collector lists it.
#[allow(clippy::result_large_err)] // the answer itself, built once on the error path
async fn agent_status(state: &AppState, server: &ServerRecord) -> Result<Value, Response> {
    let last = state
        .store
        .heartbeats(&server.server_id, None, 1)
        .await
        .map_err(|e| {
            tracing::error!(server_id = %server.server_id, error = %e, "cannot read the last heartbeat");
            error(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
        })?;
    let body: Value = last
        .first()
        .and_then(|h| serde_json::from_str(&h.row.body).ok())
        .unwrap_or(Value::Null);
    let mode = body["mode"].as_str().map(str::to_ascii_uppercase);
    Ok(json!({
        "agent_uuid": server.server_id,
        "agent_name": server.display_name.as_deref().unwrap_or(&server.server_id),
        "mode": mode,
        "uptime_seconds": body["uptime_seconds"],
        "last_seen": server.snapshot.last_seen_at_ms.map(format_rfc3339_ms),
        "healthy": server.snapshot.status == "online",
        "observation_mode": false,
    }))
}

#[allow(clippy::result_large_err)] // the answer itself, built once on the error path
async fn cluster_agents(state: &AppState, cluster_id: &str) -> Result<Vec<Value>, Response> {
    let query = ServerQuery {
        status: None,
        confidence: None,
        verified: None,
        cluster: Some(cluster_id.to_owned()),
        paused: None,
        search: None,
        sort: ServerSort::Id,
        limit: MAX_AGENTS,
        after: None,
    };
    let servers = state.store.list_servers(&query).await.map_err(|e| {
        tracing::error!(error = %e, "cannot list the PAP cluster");
        error(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
    })?;
    let mut agents = Vec::with_capacity(servers.len());
    for server in &servers {
        agents.push(agent_status(state, server).await?);
    }
    Ok(agents)
}

/// `{total, healthy, unhealthy, by_mode, observed}` of listed agents.
pub fn stats(agents: &[Value]) -> Value {
    let healthy = agents.iter().filter(|a| a["healthy"] == true).count();
    let mut by_mode = Map::new();
    for mode in MODES {
        let n = agents.iter().filter(|a| a["mode"] == mode).count();
        by_mode.insert(mode.into(), n.into());
    }
    json!({
        "total": agents.len(),
        "healthy": healthy,
        "unhealthy": agents.len() - healthy,
        "by_mode": by_mode,
        "observed": agents.iter().filter(|a| a["observation_mode"] == true).count(),
    })
}

/// `GET /agents`.
pub async fn agents(State(state): State<AppState>, request: Request) -> Response {
    if let Err(answer) = guard(&state, &request) {
        return answer;
    }
    let config = state.config.current();
    let pap = &config.compat.pap;
    let agents = match cluster_agents(&state, &pap.cluster_id).await {
        Ok(agents) => agents,
        Err(answer) => return answer,
    };
    Json(json!({
        "cluster_id": pap.cluster_id,
        "cluster_name": pap.cluster_name(),
        "stats": stats(&agents),
        "agents": agents,
    }))
    .into_response()
}

/// `GET /agents/{id}`.
pub async fn agent(
    State(state): State<AppState>,
    Path(agent_id): Path<String>,
    request: Request,
) -> Response {
    if let Err(answer) = guard(&state, &request) {
        return answer;
    }
    let config = state.config.current();
    let pap = &config.compat.pap;
    let not_found = || {
        let id: String = agent_id.chars().take(MAX_AGENT_NAME_CHARS).collect();
        (
            StatusCode::NOT_FOUND,
            Json(
                json!({"error": "Agent not found", "agent_uuid": id, "cluster_id": pap.cluster_id}),
            ),
        )
            .into_response()
    };
    if !crate::ingest::decode::valid_server_id(&agent_id) {
        return not_found();
    }
    let server = match state.store.get_server(&agent_id).await {
        Ok(Some(server)) if server.cluster_id.as_deref() == Some(pap.cluster_id.as_str()) => server,
        Ok(_) => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a PAP agent");
            return error(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
        }
    };
    match agent_status(&state, &server).await {
        Ok(agent) => Json(json!({
            "cluster_id": pap.cluster_id,
            "cluster_name": pap.cluster_name(),
            "agent": agent,
        }))
        .into_response(),
        Err(answer) => answer,
    }
}

/// `GET /health`: the collector's health answer (Vigil's own probes are `/healthz` and
/// `/readyz`).
pub async fn health(State(state): State<AppState>, request: Request) -> Response {
    if let Err(answer) = guard(&state, &request) {
        return answer;
    }
    let config = state.config.current();
    let pap = &config.compat.pap;
    let agents = match cluster_agents(&state, &pap.cluster_id).await {
        Ok(agents) => agents,
        Err(answer) => return answer,
    };
    let stats = stats(&agents);
    let queue = match state.store.pending_deliveries().await {
        Ok(pending) => json!({
            "size": pending.count,
            "oldest_age_ms": Value::Null,
        }),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the alert outbox");
            return error(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
        }
    };
    Json(json!({
        "status": "healthy",
        "cluster_id": pap.cluster_id,
        "cluster_name": pap.cluster_name(),
        "agents": {
            "total": stats["total"],
            "healthy": stats["healthy"],
            "unhealthy": stats["unhealthy"],
        },
        "alert_queue": queue,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_map_case_insensitively_and_refuse_in_pap_words() {
        let ok = map(br#"{"mode":"idle","uptime_seconds":3600.789,"agent_name":"focus","x":1}"#)
            .expect("valid");
        assert_eq!(ok.mode, "IDLE");
        assert_eq!(ok.agent_name.as_deref(), Some("focus"));
        assert_eq!(ok.members["mode"], "idle");
        assert_eq!(ok.members["uptime_seconds"], 3600);
        assert_eq!(
            map(br#"{"mode":"Emergency","uptime_seconds":0}"#)
                .expect("valid")
                .mode,
            "EMERGENCY"
        );
        for bad in [
            &br#"{"uptime_seconds":1}"#[..],
            br#"{"mode":"IDLE"}"#,
            br#"{"mode":"IDLE","uptime_seconds":"5"}"#,
            br#"{"mode":"IDLE","uptime_seconds":-1}"#,
            br#"[1]"#,
            b"not json",
        ] {
            assert_eq!(
                map(bad),
                Err(Invalid::Payload),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            map(br#"{"mode":"TURBO","uptime_seconds":1}"#),
            Err(Invalid::Mode)
        );
        assert_eq!(
            Invalid::Mode.body(),
            json!({"error": "Invalid mode", "valid": ["EMERGENCY", "IDLE", "SLEEP"]})
        );
        assert_eq!(
            Invalid::Payload.body()["required"],
            json!(["mode", "uptime_seconds"])
        );
    }

    #[test]
    fn the_next_heartbeat_is_half_the_policys_grace() {
        let ack = |grace: Option<f64>, check: Option<i64>| Ack {
            duplicate: false,
            status: "online".into(),
            confidence: "yellow".into(),
            policy: "default@1.3.0".into(),
            next_check_in_ms: check,
            scores: grace
                .map(|g| std::collections::BTreeMap::from([("grace_seconds".to_owned(), g)]))
                .unwrap_or_default()
                .into(),
            signals: Vec::new(),
        };
        assert_eq!(next_heartbeat_ms(&ack(Some(10.0), Some(10_000))), 5_000);
        assert_eq!(next_heartbeat_ms(&ack(Some(60.0), None)), 30_000);
        assert_eq!(
            next_heartbeat_ms(&ack(Some(1800.0), Some(600_000))),
            900_000
        );
        assert_eq!(next_heartbeat_ms(&ack(None, Some(8_000))), 4_000);
        assert_eq!(next_heartbeat_ms(&ack(None, None)), 30_000);
        assert_eq!(next_heartbeat_ms(&ack(Some(0.1), None)), 1_000);
    }

    #[test]
    fn stats_count_health_and_modes() {
        let agents = [
            json!({"healthy": true, "mode": "IDLE", "observation_mode": false}),
            json!({"healthy": false, "mode": "EMERGENCY", "observation_mode": false}),
            json!({"healthy": true, "mode": null, "observation_mode": false}),
        ];
        assert_eq!(
            stats(&agents),
            json!({"total": 3, "healthy": 2, "unhealthy": 1,
                   "by_mode": {"EMERGENCY": 1, "IDLE": 1, "SLEEP": 0}, "observed": 0})
        );
    }
}

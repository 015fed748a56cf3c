//! HomelabCmd agents (`[compat.homelabcmd]`): `POST /api/v1/agents/heartbeat` with a shared
//! `X-API-Key` (an admin-issued key of the `ingest` scope) or a per-agent `X-Agent-Token` (an
//! ingest token of kind `agent`) with `X-Server-GUID`. The body is HomelabCmd's: `server_id`,
//! `hostname`, `timestamp`, `os_info`, `metrics` and whatever else the agent sends
//! (`server_guid`, `agent_version`, `agent_mode`, `updates_available`, `packages`, ...), all
//! kept as sent; none of it is refused for being unknown.
//!
//! Answers as HomelabCmd's server (FastAPI) does: 200 `{"status":"ok","server_registered":
//! bool,"pending_commands":[]}`; 401 `{"detail":"…"}` for a missing, wrong or revoked
//! credential; 422 `{"detail":[{"type","loc":["body","metrics","cpu_percent"],"msg"}]}` for an
//! invalid value (percentages 0–100, counts ≥ 0), naming the member's path; 404 for an unknown
//! server without `auto_register`. Accepted heartbeats apply `hostname`, `os_info` and the
//! metrics to the server record (`host_info` on `GET /v1/servers/{id}`).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::super::AppState;
use crate::ingest::Refusal;
use crate::ingest::decode::MAX_NESTED_STRING_CHARS;
use crate::ingest::gate::TokenClaim;
use crate::store::TokenKind;

/// Largest body read: a 2.0.0 agent's with its package list is ≈ 22 kB.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// Metrics that are percentages (0 to 100).
const PERCENTAGES: &[&str] = &["cpu_percent", "memory_percent", "disk_percent"];

/// Metrics that are counts or amounts (at least 0).
const COUNTS: &[&str] = &[
    "memory_total_mb",
    "memory_used_mb",
    "disk_total_gb",
    "disk_used_gb",
    "network_rx_bytes",
    "network_tx_bytes",
    "load_1m",
    "load_5m",
    "load_15m",
    "uptime_seconds",
];

/// One invalid member, as FastAPI reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The member's path in the body (`["metrics", "cpu_percent"]`).
    pub loc: Vec<&'static str>,
    /// Pydantic's error type.
    pub kind: &'static str,
    /// What is wrong.
    pub msg: &'static str,
}

impl Invalid {
    fn new(loc: Vec<&'static str>, kind: &'static str, msg: &'static str) -> Self {
        Self { loc, kind, msg }
    }

    fn refusal(&self) -> Refusal {
        let detail = json!([{
            "type": self.kind,
            "loc": std::iter::once("body").chain(self.loc.iter().copied()).collect::<Vec<_>>(),
            "msg": self.msg,
        }]);
        Refusal::new(422, "invalid_field", detail.to_string(), None)
    }
}

/// A validated HomelabCmd body: its server, the v1 members the policy reads, and what the
/// server record takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// `server_id`.
    pub server_id: String,
    /// `status`, `agent_version`, `uptime_seconds`, `metrics`, `os_info`, `payload`.
    pub members: Map<String, Value>,
    /// `{hostname, os_info, metrics}` for `servers.host_info`.
    pub host_info: Value,
}

fn text<'b>(
    body: &'b Map<String, Value>,
    name: &'static str,
    required: bool,
) -> Result<Option<&'b str>, Invalid> {
    match body.get(name) {
        None | Some(Value::Null) if required => {
            Err(Invalid::new(vec![name], "missing", "Field required"))
        }
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_NESTED_STRING_CHARS => {
            Ok(Some(s.as_str()))
        }
        Some(Value::String(_)) => Err(Invalid::new(
            vec![name],
            "string_too_long",
            "String should have at most 4096 characters",
        )),
        Some(_) => Err(Invalid::new(
            vec![name],
            "string_type",
            "Input should be a valid string",
        )),
    }
}

/// Validates a HomelabCmd heartbeat body and maps it.
pub fn map(bytes: &[u8]) -> Result<Mapped, Invalid> {
    let body: Map<String, Value> = serde_json::from_slice(bytes).map_err(|_| {
        Invalid::new(
            vec![],
            "json_invalid",
            "JSON decode error: the body must be a JSON object",
        )
    })?;
    let server_id = text(&body, "server_id", true)?
        .unwrap_or_default()
        .to_owned();
    let hostname = text(&body, "hostname", true)?.unwrap_or_default();
    text(&body, "timestamp", true)?;
    let agent_version = text(&body, "agent_version", false)?;
    let os_info = match body.get("os_info") {
        None | Some(Value::Null) => None,
        Some(Value::Object(info)) => {
            for name in ["distribution", "version", "kernel", "architecture"] {
                let field: &'static str = name;
                match info.get(field) {
                    None | Some(Value::Null) | Some(Value::String(_)) => {}
                    Some(_) => {
                        return Err(Invalid::new(
                            vec!["os_info", field],
                            "string_type",
                            "Input should be a valid string",
                        ));
                    }
                }
            }
            Some(Value::Object(info.clone()))
        }
        Some(_) => {
            return Err(Invalid::new(
                vec!["os_info"],
                "model_type",
                "Input should be an object",
            ));
        }
    };
    let metrics = match body.get("metrics") {
        None | Some(Value::Null) => None,
        Some(Value::Object(metrics)) => {
            let number = |name: &'static str| -> Result<Option<f64>, Invalid> {
                match metrics.get(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::Number(n)) => Ok(n.as_f64()),
                    Some(_) => Err(Invalid::new(
                        vec!["metrics", name],
                        "float_type",
                        "Input should be a valid number",
                    )),
                }
            };
            for name in PERCENTAGES {
                match number(name)? {
                    Some(v) if v < 0.0 => {
                        return Err(Invalid::new(
                            vec!["metrics", name],
                            "greater_than_equal",
                            "Input should be greater than or equal to 0",
                        ));
                    }
                    Some(v) if v > 100.0 => {
                        return Err(Invalid::new(
                            vec!["metrics", name],
                            "less_than_equal",
                            "Input should be less than or equal to 100",
                        ));
                    }
                    _ => {}
                }
            }
            for name in COUNTS {
                if number(name)?.is_some_and(|v| v < 0.0) {
                    return Err(Invalid::new(
                        vec!["metrics", name],
                        "greater_than_equal",
                        "Input should be greater than or equal to 0",
                    ));
                }
            }
            Some(metrics.clone())
        }
        Some(_) => {
            return Err(Invalid::new(
                vec!["metrics"],
                "model_type",
                "Input should be an object",
            ));
        }
    };
    let mut members = Map::new();
    members.insert("status".into(), "online".into());
    if let Some(version) = agent_version.filter(|v| v.chars().count() <= 64) {
        members.insert("agent_version".into(), version.into());
    }
    if let Some(uptime) = metrics
        .as_ref()
        .and_then(|m| m.get("uptime_seconds"))
        .and_then(Value::as_f64)
        .filter(|u| *u < 9.0e15)
    {
        members.insert("uptime_seconds".into(), (uptime.floor() as u64).into());
    }
    if let Some(metrics) = &metrics {
        members.insert("metrics".into(), Value::Object(metrics.clone()));
    }
    if let Some(os_info) = &os_info {
        members.insert("os_info".into(), os_info.clone());
    }
    members.insert(
        "payload".into(),
        json!({"source": "homelabcmd", "hostname": hostname}),
    );
    let host_info = json!({
        "hostname": hostname,
        "os_info": os_info,
        "metrics": metrics,
    });
    Ok(Mapped {
        server_id,
        members,
        host_info,
    })
}

/// A refusal in HomelabCmd's (FastAPI's) words.
fn refused(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let detail = match refusal.status {
        401 => json!("Invalid or missing API key or agent token"),
        404 => json!("Server not found"),
        429 => json!("Rate limit exceeded"),
        413 => json!("Request body too large"),
        // The mapping's own 422 carries FastAPI's list already; a v1 decode refusal of the
        // mapped body (a server_id the v1 rules refuse) is named as the `server_id` member.
        400 | 422 => serde_json::from_str::<Value>(&refusal.detail)
            .ok()
            .filter(Value::is_array)
            .unwrap_or_else(|| {
                json!([{"type": "value_error", "loc": ["body", "server_id"],
                        "msg": "Value error, not a valid server id"}])
            }),
        403 => json!("Server not verified"),
        _ => json!("Service unavailable"),
    };
    let status = if refusal.status == 400 {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        status
    };
    let mut response = (status, Json(json!({ "detail": detail }))).into_response();
    if let Some((name, value)) = super::retry_after(refusal)
        && let Ok(value) = value.parse()
    {
        response.headers_mut().insert(name, value);
    }
    response
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// `POST /api/v1/agents/heartbeat`.
pub async fn heartbeat(State(state): State<AppState>, request: Request) -> Response {
    let config = state.config.current();
    if !config.compat.homelabcmd.enabled {
        return super::disabled().into_response();
    }
    let auto_register = config.compat.homelabcmd.auto_register;
    let api_key = header(request.headers(), "x-api-key").map(str::to_owned);
    let agent_token = header(request.headers(), "x-agent-token").map(str::to_owned);
    let mut host_info = Value::Null;
    let admitted = match (api_key, agent_token) {
        (Some(key), _) => {
            state
                .gate
                .admit_api_key_at(
                    request,
                    &key,
                    MAX_BODY_BYTES,
                    crate::clock::now_ms(),
                    auto_register,
                    |bytes| {
                        let mapped = map(bytes).map_err(|i| i.refusal())?;
                        host_info = mapped.host_info;
                        Ok((mapped.server_id, mapped.members))
                    },
                )
                .await
        }
        (None, Some(token)) => {
            let claim = TokenClaim {
                kind: TokenKind::Agent,
                token: &token,
            };
            state
                .gate
                .admit_token(request, claim, MAX_BODY_BYTES, |bytes| {
                    let mapped = map(bytes).map_err(|i| i.refusal())?;
                    host_info = mapped.host_info;
                    Ok(mapped.members)
                })
                .await
                // A wrong agent token is HomelabCmd's 401, not a ping's 404.
                .map_err(|r| match r.status {
                    404 if r.code == "unknown_token" => Refusal { status: 401, ..r },
                    _ => r,
                })
        }
        (None, None) => {
            // Costs the source's budget, and nothing else is looked at or kept.
            if let Err(refusal) = state.gate.charge_source(&request) {
                return refused(&refusal);
            }
            return refused(&Refusal::new(
                401,
                "unauthorized",
                "X-API-Key or X-Agent-Token is required",
                None,
            ));
        }
    };
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(&refusal),
    };
    let server_id = admitted.heartbeat.decoded.server_id.clone();
    let received_at_ms = admitted.heartbeat.received_at_ms;
    let server_registered = admitted.server_registered;
    if let Err(refusal) = super::submit(&state, admitted).await {
        return refused(&refusal);
    }
    if let Value::Object(info) = &mut host_info {
        info.insert("reported_at_ms".into(), received_at_ms.into());
        if let Err(e) = state.store.set_host_info(&server_id, &host_info).await {
            // The heartbeat is stored (with the body as sent); only the cache is behind.
            tracing::warn!(server_id = ?server_id, error = %e, "could not apply host_info");
        }
    }
    Json(json!({
        "status": "ok",
        "server_registered": server_registered,
        "pending_commands": [],
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_checked_by_range_with_their_path() {
        let body = |metrics: Value| {
            json!({"server_id": "a", "hostname": "a", "timestamp": "2026-12-01T09:43:42.123439+00:00",
                   "metrics": metrics})
            .to_string()
        };
        let bad = map(body(json!({"cpu_percent": 100.5})).as_bytes()).unwrap_err();
        assert_eq!(bad.loc, ["metrics", "cpu_percent"]);
        assert_eq!(bad.kind, "less_than_equal");
        let bad = map(body(json!({"network_rx_bytes": -1})).as_bytes()).unwrap_err();
        assert_eq!(bad.loc, ["metrics", "network_rx_bytes"]);
        let bad = map(body(json!({"load_1m": "high"})).as_bytes()).unwrap_err();
        assert_eq!(
            (bad.loc, bad.kind),
            (vec!["metrics", "load_1m"], "float_type")
        );
        let ok = map(body(json!({"reboot_required": true, "uptime_seconds": 12.7})).as_bytes())
            .expect("valid");
        assert_eq!(ok.members["uptime_seconds"], 12);
        assert_eq!(ok.members["metrics"]["reboot_required"], true);
        let missing = map(br#"{"hostname":"a","timestamp":"t"}"#).unwrap_err();
        assert_eq!((missing.loc, missing.kind), (vec!["server_id"], "missing"));
        let refusal = bad_refusal();
        assert_eq!(
            serde_json::from_str::<Value>(&refusal.detail).expect("json")[0]["loc"],
            json!(["body", "metrics", "disk_percent"])
        );
    }

    fn bad_refusal() -> Refusal {
        Invalid::new(
            vec!["metrics", "disk_percent"],
            "less_than_equal",
            "Input should be less than or equal to 100",
        )
        .refusal()
    }
}

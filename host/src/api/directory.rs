//! Public read routes: the server directory and a server's history (heartbeats,
//! transitions).
//!
//! Read paths only read the snapshot and history; they never call a policy. Health and
//! readiness live with the other operations routes in `api/ops.rs`.

use std::collections::{BTreeMap, HashMap};

use super::error::ApiPath;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::clock::format_rfc3339_ms;
use crate::ingest::signature::PublicKey;
use crate::store::{PolicyRef, ServerQuery, ServerRecord, ServerSort, StoredTransition};

/// Largest page any list route returns.
const MAX_LIMIT: u32 = 500;
const DEFAULT_LIMIT: u32 = 50;

/// A server as the directory shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerView {
    /// Identifier.
    pub server_id: String,
    /// Human-friendly name.
    pub display_name: Option<String>,
    /// Cluster.
    pub cluster_id: Option<String>,
    /// Set by an operator only.
    pub is_verified: bool,
    /// Current key version.
    pub key_version: u32,
    /// `SHA256:...` of the current key.
    pub public_fingerprint: Option<String>,
    /// Derived status, or `paused` while an operator paused the server (see `policy_status`).
    pub effective_status: String,
    /// The status the policy derived (also while paused).
    pub policy_status: String,
    /// Derived confidence.
    pub confidence: String,
    /// 0–100.
    pub uptime_percent: f64,
    /// 0–100.
    pub quality_score: f64,
    /// RFC 3339 time of the last accepted heartbeat.
    pub last_seen_at: Option<String>,
    /// Last reported players.
    pub players_current: Option<u32>,
    /// Last reported capacity.
    pub players_capacity: Option<u32>,
    /// Last reported map.
    pub map_name: Option<String>,
    /// Last reported agent version.
    pub agent_version: Option<String>,
    /// Named scores.
    pub scores: BTreeMap<String, f64>,
    /// Badges.
    pub badges: Vec<String>,
    /// When the policy next re-evaluates without a heartbeat.
    pub next_check_at: Option<String>,
    /// Registration time.
    pub registered_at: String,
    /// The policy that computed this state.
    pub policy: Option<PolicyRef>,
    /// Failed evaluations of this server.
    pub policy_errors: i64,
    /// Labels set by operators.
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 time the server was paused, while it is.
    pub paused_at: Option<String>,
    /// RFC 3339 time the server was retired, if it is.
    pub retired_at: Option<String>,
    /// The operator's schedule for the server, if any.
    pub schedule: Option<crate::store::StoredSchedule>,
    /// What its agent last said about the machine (a HomelabCmd agent's `hostname`,
    /// `os_info` and `metrics`, with `reported_at_ms`); shown on `GET /v1/servers/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub host_info: Option<serde_json::Value>,
}

impl From<ServerRecord> for ServerView {
    fn from(r: ServerRecord) -> Self {
        let s = r.snapshot;
        Self {
            public_fingerprint: PublicKey::from_base64(&r.public_key)
                .ok()
                .map(|k| k.fingerprint()),
            server_id: r.server_id,
            display_name: r.display_name,
            cluster_id: r.cluster_id,
            is_verified: r.is_verified,
            key_version: r.key_version,
            effective_status: if r.admin.paused_at_ms.is_some() {
                "paused".to_owned()
            } else {
                s.status.clone()
            },
            policy_status: s.status,
            confidence: s.confidence,
            uptime_percent: s.uptime_percent,
            quality_score: s.quality_score,
            last_seen_at: s.last_seen_at_ms.map(format_rfc3339_ms),
            players_current: s.players_current,
            players_capacity: s.players_capacity,
            map_name: s.map_name,
            agent_version: s.agent_version,
            scores: s.scores.to_map(),
            badges: s.badges,
            next_check_at: s.next_check_at_ms.map(format_rfc3339_ms),
            registered_at: format_rfc3339_ms(r.registered_at_ms),
            policy: s.policy.map(|p| PolicyRef::clone(&p)),
            policy_errors: s.policy_errors,
            labels: r.admin.labels,
            paused_at: r.admin.paused_at_ms.map(format_rfc3339_ms),
            retired_at: r.admin.retired_at_ms.map(format_rfc3339_ms),
            schedule: r.admin.schedule,
            host_info: None,
        }
    }
}

pub(super) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(super) fn params(query: Params, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(map) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            "invalid_query",
            format!(
                "unknown query parameter `{unknown}` (allowed: {})",
                allowed.join(", ")
            ),
        ));
    }
    Ok(map)
}

pub(super) fn limit(map: &HashMap<String, String>) -> Result<u32, ApiError> {
    match map.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "invalid_query",
                    format!("limit must be from 1 to {MAX_LIMIT}"),
                )
            }),
    }
}

pub(super) fn one_of(
    map: &HashMap<String, String>,
    name: &str,
    values: &[&str],
) -> Result<Option<String>, ApiError> {
    match map.get(name) {
        None => Ok(None),
        Some(v) if values.contains(&v.as_str()) => Ok(Some(v.clone())),
        Some(v) => Err(ApiError::invalid(
            "invalid_query",
            format!("{name}={v:?} is not one of {}", values.join(", ")),
        )),
    }
}

fn sort_key(record: &ServerRecord, sort: ServerSort) -> f64 {
    let s = &record.snapshot;
    match sort {
        ServerSort::Quality => s.quality_score,
        ServerSort::Uptime => s.uptime_percent,
        ServerSort::Players => s.players_current.map_or(-1.0, f64::from),
        ServerSort::LastSeen => s.last_seen_at_ms.map_or(-1.0, |v| v as f64),
        ServerSort::Id => 0.0,
    }
}

/// `GET /v1/servers?status=&confidence=&verified=&cluster=&q=&sort=&limit=&cursor=` (retired
/// servers are never listed; `status=paused` lists the paused ones, any other status only
/// servers not paused; `q` searches ids and display names).
pub async fn list_servers(
    State(state): State<AppState>,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(
        query,
        &[
            "status",
            "confidence",
            "verified",
            "cluster",
            "q",
            "sort",
            "limit",
            "cursor",
        ],
    )?;
    let sort = match one_of(
        &map,
        "sort",
        &["quality", "uptime", "players", "last_seen", "id"],
    )?
    .as_deref()
    {
        None | Some("quality") => ServerSort::Quality,
        Some("uptime") => ServerSort::Uptime,
        Some("players") => ServerSort::Players,
        Some("last_seen") => ServerSort::LastSeen,
        _ => ServerSort::Id,
    };
    let after = match map.get("cursor") {
        None => None,
        Some(cursor) => {
            let bad = || ApiError::invalid("invalid_query", "cursor is not one this API issued");
            let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
            let (value, id): (f64, String) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
            Some((value, id))
        }
    };
    let status = one_of(&map, "status", &["online", "offline", "unknown", "paused"])?;
    let paused = status.as_deref().map(|s| s == "paused");
    let query = ServerQuery {
        status: status.filter(|s| s != "paused"),
        cluster: map.get("cluster").cloned(),
        paused,
        search: map.get("q").filter(|q| !q.is_empty()).cloned(),
        confidence: one_of(&map, "confidence", &["green", "yellow", "red"])?,
        verified: one_of(&map, "verified", &["true", "false"])?.map(|v| v == "true"),
        sort,
        limit: limit(&map)?,
        after,
    };
    let records = state.store.list_servers(&query).await?;
    let next_cursor = (records.len() == query.limit as usize)
        .then(|| records.last())
        .flatten()
        .map(|last| {
            let key =
                serde_json::to_vec(&(sort_key(last, sort), &last.server_id)).unwrap_or_default();
            URL_SAFE_NO_PAD.encode(key)
        });
    let servers: Vec<ServerView> = records.into_iter().map(ServerView::from).collect();
    Ok(Json(serde_json::json!({ "servers": servers, "next_cursor": next_cursor })).into_response())
}

/// `GET /v1/servers/{id}`
pub async fn get_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ServerView>, ApiError> {
    let record = state
        .store
        .get_server(&id)
        .await?
        .ok_or_else(|| server_not_found(&id))?;
    let mut view = ServerView::from(record);
    view.host_info = state.store.host_info(&id).await?;
    Ok(Json(view))
}

fn server_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_server",
        format!("server `{id}` is not registered"),
    )
}

fn before(map: &HashMap<String, String>) -> Result<Option<i64>, ApiError> {
    map.get("before")
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::invalid("invalid_query", "before must be an integer"))
        })
        .transpose()
}

/// `GET /v1/servers/{id}/heartbeats?limit=&before=` — newest first; `before` is a `seq`.
pub async fn heartbeats(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(query, &["limit", "before"])?;
    let limit = limit(&map)?;
    if state.engine.identity(&id).is_none() && state.store.get_server(&id).await?.is_none() {
        return Err(server_not_found(&id));
    }
    let rows = state.store.heartbeats(&id, before(&map)?, limit).await?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|h| h.row.seq))
        .flatten();
    let items: Vec<Value> = rows
        .into_iter()
        .map(|h| {
            let body: Value = serde_json::from_str(&h.row.body).unwrap_or(Value::Null);
            serde_json::json!({
                "seq": h.row.seq,
                "received_at": format_rfc3339_ms(h.row.received_at_ms),
                "sent_at": format_rfc3339_ms(h.row.sent_at_ms),
                "key_version": h.row.key_version,
                "signed": !h.row.signature.is_empty(),
                "auth": h.row.auth,
                "policy_digest": h.row.policy_digest,
                "body": body,
            })
        })
        .collect();
    Ok(
        Json(serde_json::json!({ "heartbeats": items, "next_before": next_before }))
            .into_response(),
    )
}

/// `GET /v1/servers/{id}/transitions?limit=&before=` — newest first; `before` is an `id`.
pub async fn transitions(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(query, &["limit", "before"])?;
    let limit = limit(&map)?;
    if state.engine.identity(&id).is_none() && state.store.get_server(&id).await?.is_none() {
        return Err(server_not_found(&id));
    }
    let rows: Vec<StoredTransition> = state.store.transitions(&id, before(&map)?, limit).await?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|t| t.id))
        .flatten();
    let items: Vec<Value> = rows
        .into_iter()
        .map(|t| {
            let mut v = serde_json::to_value(&t).unwrap_or(Value::Null);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("at".into(), Value::from(format_rfc3339_ms(t.row.at_ms)));
            }
            v
        })
        .collect();
    Ok(
        Json(serde_json::json!({ "transitions": items, "next_before": next_before }))
            .into_response(),
    )
}

/// `GET /v1/servers/{id}/uptime?window=24h|7d|30d|90d` (default `24h`) — uptime, quality and
/// counts from the rollups: one bucket per hour (24h) or UTC day (7/30/90d), oldest first, the
/// last one still open, and their total. `uptime_percent` and `quality` are `null` for a bucket
/// where the policy's status was never known.
pub async fn uptime(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    query: Params,
) -> Result<Response, ApiError> {
    use crate::engine::rollup::{Window, report};
    let map = params(query, &["window"])?;
    let window = match map.get("window") {
        None => Window::Hours24,
        Some(text) => Window::parse(text).ok_or_else(|| {
            ApiError::invalid(
                "invalid_window",
                format!(
                    "window={:?} is not one of 24h, 7d, 30d, 90d",
                    text.chars().take(32).collect::<String>()
                ),
            )
        })?,
    };
    let record = state
        .store
        .get_server(&id)
        .await?
        .ok_or_else(|| server_not_found(&id))?;
    let now = crate::clock::now_ms();
    let rows = state
        .store
        .rollups(&id, window.span(), window.from_ms(now))
        .await?;
    let r = report(window, now, &rows, &record.snapshot);
    let figures = |s: &crate::store::RollupSums| {
        serde_json::json!({
            "uptime_percent": s.uptime_percent(),
            "quality": s.quality(),
            "observed_seconds": s.observed_ms / 1000,
            "online_seconds": s.online_ms / 1000,
            "beats": s.beats,
            "rejections": s.rejections,
        })
    };
    let buckets: Vec<Value> = r
        .buckets
        .iter()
        .map(|b| {
            let mut v = figures(&b.sums);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("start".into(), format_rfc3339_ms(b.start_ms).into());
            }
            v
        })
        .collect();
    let mut body = figures(&r.total);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("server_id".into(), record.server_id.into());
        obj.insert("window".into(), window.as_str().into());
        obj.insert("from".into(), format_rfc3339_ms(r.from_ms).into());
        obj.insert("to".into(), format_rfc3339_ms(r.to_ms).into());
        obj.insert("buckets".into(), buckets.into());
    }
    Ok(Json(body).into_response())
}

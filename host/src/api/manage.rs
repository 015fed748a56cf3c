//! Server management under `/v1/admin/…`: edit a server's display name, cluster and labels,
//! pause and resume it, retire it, set or clear its schedule, read its audit trail, and set or
//! cancel maintenance windows. Every change is recorded with the acting credential (`admin` or `key:<name>`).
//!
//! Writes need an `admin`-scoped credential; the audit trail and the window list also open to
//! `read` keys. The changes themselves go through the engine's writer (which owns the working
//! set); windows are plain rows the alert dispatcher reads.

use std::collections::BTreeMap;

use super::error::ApiPath;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::{authorize, authorize_read};
use super::directory::ServerView;
use super::{ApiError, AppState};
use crate::clock::{format_rfc3339_ms, now_ms, parse_rfc3339_ms};
use crate::engine::{ServerAction, ServerEdit};
use std::str::FromStr as _;

use crate::store::{MaintenanceRow, StoredAudit, StoredSchedule};

/// At most this many labels per server.
const MAX_LABELS: usize = 32;
/// Longest label value, display name, reason.
const MAX_TEXT: usize = 256;
/// Most windows `GET /v1/admin/maintenance` lists.
const MAX_WINDOWS: u32 = 500;

/// An optional body: none (or only whitespace) or JSON `null` is the default.
fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))
}

fn check_text(name: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    if value.is_some_and(|v| v.chars().count() > max) {
        return Err(ApiError::invalid(
            "invalid_field",
            format!("{name} must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// A label name: `^[a-z0-9][a-z0-9._/-]{0,62}$`.
fn valid_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/-".contains(b))
}

/// A JSON member that may be absent (unchanged), `null` (cleared) or a value.
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PATCH /v1/admin/servers/{id}`: only the members present change.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditServer {
    /// New display name (`null` clears it).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 256)]
    pub display_name: Option<Option<String>>,
    /// New cluster (`null` clears it).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 128)]
    pub cluster_id: Option<Option<String>>,
    /// The whole new label set: at most 32, names `^[a-z0-9][a-z0-9._/-]{0,62}$`, values at
    /// most 256 characters.
    #[schema(schema_with = label_set)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The schema of [`EditServer::labels`] (utoipa has no attribute for `propertyNames`).
fn label_set() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::schema::Type::Object,
            utoipa::openapi::schema::Type::Null,
        ]))
        .additional_properties(Some(
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .max_length(Some(MAX_TEXT)),
        ))
        .property_names(Some(
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .pattern(Some(r"^[a-z0-9][a-z0-9._/-]{0,62}$")),
        ))
        .max_properties(Some(MAX_LABELS))
        .build()
}

/// Optional body of pause and retire.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Why (audited).
    #[schema(max_length = 256)]
    pub reason: Option<String>,
}

async fn apply(
    state: &AppState,
    headers: &HeaderMap,
    id: String,
    action: ServerAction,
) -> Result<Response, ApiError> {
    let actor = authorize(state, headers).await?;
    let record = state
        .engine
        .manage(ServerEdit {
            server_id: id,
            actor,
            at_ms: now_ms(),
            action,
        })
        .await?;
    Ok(Json(ServerView::from(record)).into_response())
}

/// `PATCH /v1/admin/servers/{id}` `{"display_name"?, "cluster_id"?, "labels"?}` → the server.
pub async fn edit(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers).await?;
    let edit: EditServer = parse(&body)?;
    check_text(
        "display_name",
        edit.display_name.as_ref().and_then(Option::as_deref),
        MAX_TEXT,
    )?;
    check_text(
        "cluster_id",
        edit.cluster_id.as_ref().and_then(Option::as_deref),
        128,
    )?;
    if let Some(labels) = &edit.labels {
        if labels.len() > MAX_LABELS {
            return Err(ApiError::invalid(
                "invalid_field",
                format!("at most {MAX_LABELS} labels"),
            ));
        }
        for (name, value) in labels {
            if !valid_label_name(name) {
                return Err(ApiError::invalid(
                    "invalid_field",
                    "label names must match ^[a-z0-9][a-z0-9._/-]{0,62}$",
                ));
            }
            check_text("a label value", Some(value), MAX_TEXT)?;
        }
    }
    let action = ServerAction::Edit {
        display_name: edit.display_name,
        cluster_id: edit.cluster_id,
        labels: edit.labels,
    };
    apply(&state, &headers, id, action).await
}

/// The longest schedule period and the longest grace or run time, seconds (thirty days).
const MAX_SCHEDULE_SECONDS: u32 = 30 * 86_400;

/// Checks a schedule: exactly one of a period (1 s to 30 days) and a five-field cron expression
/// that parses, read in a known IANA zone (`UTC` when none is named); grace and longest run
/// at most 30 days.
fn check_schedule(s: &StoredSchedule) -> Result<(), ApiError> {
    let bad = |msg: &str| ApiError::invalid("invalid_schedule", msg.to_owned());
    match (&s.period_seconds, &s.cron) {
        (Some(p), None) => {
            if !(1..=MAX_SCHEDULE_SECONDS).contains(p) {
                return Err(bad("period_seconds must be 1 to 2592000 (30 days)"));
            }
            if s.tz.is_some() {
                return Err(bad("tz goes with cron only"));
            }
        }
        (None, Some(expr)) => {
            if expr.len() > 128
                || expr.split_whitespace().count() != 5
                || croner::Cron::from_str(expr).is_err()
            {
                return Err(bad(
                    "cron must be a five-field expression (minute hour day month weekday)",
                ));
            }
            if let Some(tz) = &s.tz
                && tz.parse::<chrono_tz::Tz>().is_err()
            {
                return Err(bad("tz must be an IANA time zone, e.g. Europe/Berlin"));
            }
        }
        _ => return Err(bad("a schedule has exactly one of period_seconds and cron")),
    }
    if s.grace_seconds > MAX_SCHEDULE_SECONDS
        || s.max_run_seconds
            .is_some_and(|m| m == 0 || m > MAX_SCHEDULE_SECONDS)
    {
        return Err(bad(
            "grace_seconds must be at most 30 days, max_run_seconds 1 s to 30 days",
        ));
    }
    Ok(())
}

/// `PUT /v1/admin/servers/{id}/schedule` `{"period_seconds" | "cron" + "tz"?, "grace_seconds",
/// "max_run_seconds"?}` → the server, with its schedule (audited; the policy sees it from the
/// server's next event on).
pub async fn set_schedule(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers).await?;
    let schedule: StoredSchedule = serde_json::from_slice(&body).map_err(|e| {
        let msg: String = e.to_string().chars().take(200).collect();
        ApiError::invalid("invalid_schedule", msg)
    })?;
    check_schedule(&schedule)?;
    let schedule = Some(schedule);
    apply(&state, &headers, id, ServerAction::Schedule { schedule }).await
}

/// `DELETE /v1/admin/servers/{id}/schedule` → the server, unscheduled again (audited).
pub async fn clear_schedule(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    apply(
        &state,
        &headers,
        id,
        ServerAction::Schedule { schedule: None },
    )
    .await
}

/// `POST /v1/admin/servers/{id}/pause` `{"reason"?}` → the server (`effective_status: paused`).
pub async fn pause(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers).await?;
    let Reason { reason } = parse(&body)?;
    check_text("reason", reason.as_deref(), MAX_TEXT)?;
    apply(&state, &headers, id, ServerAction::Pause { reason }).await
}

/// `POST /v1/admin/servers/{id}/resume` → the server.
pub async fn resume(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    apply(&state, &headers, id, ServerAction::Resume).await
}

/// `POST /v1/admin/servers/{id}/retire` `{"reason"?}` → the server (`retired_at` set).
pub async fn retire(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers).await?;
    let Reason { reason } = parse(&body)?;
    check_text("reason", reason.as_deref(), MAX_TEXT)?;
    apply(&state, &headers, id, ServerAction::Retire { reason }).await
}

fn audit_view(a: StoredAudit) -> serde_json::Value {
    let detail: serde_json::Value =
        serde_json::from_str(&a.row.detail).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "id": a.id,
        "server_id": a.row.server_id,
        "at": format_rfc3339_ms(a.row.at_ms),
        "action": a.row.action,
        "actor": a.row.actor,
        "detail": detail,
    })
}

/// `GET /v1/admin/servers/{id}/audit?limit=&before=` → operator actions, newest first.
pub async fn audit(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    authorize_read(&state, &headers).await?;
    let limit = match query.get("limit") {
        None => 50,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::invalid("invalid_query", "limit must be from 1 to 500"))?,
    };
    let before = query
        .get("before")
        .map(|v| v.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::invalid("invalid_query", "before must be an integer"))?;
    let rows = state.store.server_audit(&id, before, limit).await?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|a| a.id))
        .flatten();
    let items: Vec<serde_json::Value> = rows.into_iter().map(audit_view).collect();
    Ok(Json(serde_json::json!({ "audit": items, "next_before": next_before })).into_response())
}

/// Body of `POST /v1/admin/maintenance`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWindow {
    /// The server to mute (exactly one of `server_id` and `cluster_id`).
    #[schema(max_length = 128)]
    pub server_id: Option<String>,
    /// The cluster to mute.
    #[schema(max_length = 128)]
    pub cluster_id: Option<String>,
    /// Start (inclusive), RFC 3339.
    #[schema(format = DateTime)]
    pub start: String,
    /// End (exclusive), RFC 3339.
    #[schema(format = DateTime)]
    pub end: String,
    /// Why.
    #[schema(max_length = 256)]
    pub reason: Option<String>,
}

fn window_view(w: &MaintenanceRow) -> serde_json::Value {
    serde_json::json!({
        "id": w.id,
        "server_id": w.server_id,
        "cluster_id": w.cluster_id,
        "start": format_rfc3339_ms(w.starts_at_ms),
        "end": format_rfc3339_ms(w.ends_at_ms),
        "reason": w.reason,
        "created_by": w.created_by,
        "created_at": format_rfc3339_ms(w.created_at_ms),
        "cancelled_at": w.cancelled_at_ms.map(format_rfc3339_ms),
        "cancelled_by": w.cancelled_by,
    })
}

/// `POST /v1/admin/maintenance` `{"server_id" | "cluster_id", "start", "end", "reason"?}` →
/// 201 with the window. Alerts of the server (or cluster) raised in `[start, end)` are muted,
/// as with `[[alerts.maintenance]]` in the configuration (which still loads).
pub async fn add_window(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let actor = authorize(&state, &headers).await?;
    let w: NewWindow = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?;
    if w.server_id.is_some() == w.cluster_id.is_some() {
        return Err(ApiError::invalid(
            "invalid_field",
            "exactly one of server_id and cluster_id is required",
        ));
    }
    check_text("server_id", w.server_id.as_deref(), 128)?;
    check_text("cluster_id", w.cluster_id.as_deref(), 128)?;
    check_text("reason", w.reason.as_deref(), MAX_TEXT)?;
    let (Some(start), Some(end)) = (parse_rfc3339_ms(&w.start), parse_rfc3339_ms(&w.end)) else {
        return Err(ApiError::invalid(
            "invalid_field",
            "start and end must be RFC 3339 times",
        ));
    };
    if start >= end {
        return Err(ApiError::invalid(
            "invalid_field",
            "start must be before end",
        ));
    }
    if let Some(id) = &w.server_id
        && state.store.get_server(id).await?.is_none()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_server",
            format!("server `{id}` is not registered"),
        ));
    }
    let mut row = MaintenanceRow {
        id: 0,
        server_id: w.server_id,
        cluster_id: w.cluster_id,
        starts_at_ms: start,
        ends_at_ms: end,
        reason: w.reason,
        created_by: actor.clone(),
        created_at_ms: now_ms(),
        cancelled_at_ms: None,
        cancelled_by: None,
    };
    row.id = state.store.insert_maintenance(&row).await?;
    tracing::info!(target: "vigil::audit", %actor, window = row.id, "maintenance window set");
    Ok((StatusCode::CREATED, Json(window_view(&row))).into_response())
}

/// `GET /v1/admin/maintenance` → the windows not cancelled that have not ended.
pub async fn list_windows(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_read(&state, &headers).await?;
    let rows = state
        .store
        .maintenance_windows(now_ms(), MAX_WINDOWS)
        .await?;
    let items: Vec<serde_json::Value> = rows.iter().map(window_view).collect();
    Ok(Json(serde_json::json!({ "windows": items })).into_response())
}

/// `DELETE /v1/admin/maintenance/{id}` → the window, cancelled (kept, with who cancelled it).
pub async fn cancel_window(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = authorize(&state, &headers).await?;
    let row = state
        .store
        .cancel_maintenance(id, now_ms(), &actor)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("maintenance window {id}")))?;
    tracing::info!(target: "vigil::audit", %actor, window = id, "maintenance window cancelled");
    Ok(Json(window_view(&row)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_checked() {
        for good in ["region", "a", "team/game", "x.y-z_0"] {
            assert!(valid_label_name(good), "{good}");
        }
        for bad in ["", "Region", "-a", "a b", &"a".repeat(64)] {
            assert!(!valid_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn edit_tells_absent_from_null() {
        let e: EditServer = serde_json::from_str(r#"{"display_name": null}"#).expect("parses");
        assert_eq!(e.display_name, Some(None));
        assert_eq!(e.cluster_id, None);
        let e: EditServer = serde_json::from_str(r#"{"cluster_id": "eu"}"#).expect("parses");
        assert_eq!(e.cluster_id, Some(Some("eu".into())));
        assert!(serde_json::from_str::<EditServer>(r#"{"server_id": "x"}"#).is_err());
    }
}

//! The Hermes agent marketplace's read surface (`[compat.hermes]`): a Hermes client reads an
//! agent's trust score, reputation and the leaderboard from Vigil, in Hermes's own shapes.
//!
//! - `GET /api/v1/marketplace/agents/{id}/trust-score` → `{"agent_id", "trust_score", "grade"}`;
//! - `GET /api/v1/marketplace/agents/{id}/reputation` → `{"agent_id", "trust_score", "grade",
//!   "breakdown": {success_rate, latency_score, rating_score, uptime_score,
//!   consistency_score}, "badges", "stats": {total_contracts, successful_contracts,
//!   failed_contracts, success_percentage, avg_execution_time}, "last_updated"}`;
//! - `GET /api/v1/marketplace/leaderboard?metric=trust_score|total_contracts&limit=1..50` →
//!   `{"metric", "leaderboard": [{"rank", "agent_id", "agent_name", "trust_score", "grade",
//!   "total_contracts", "success_rate"}]}`.
//!
//! Read paths only, like the directory (and behind its guard): they read the snapshot a
//! Hermes-compatible policy (the bundled `reputation`) wrote — its `trust_score`, component and
//! task scores and its `grade-<letter>` badge — and never compute a score themselves. An agent
//! whose snapshot has no `trust_score` (scored by another policy, or retired) is not found.
//! Rounding is Hermes's: trust scores to 3 decimals, percentages to 1, seconds to 2. Hermes's
//! earnings fields have no Vigil counterpart and are left out. Errors answer in Hermes's
//! (FastAPI's) shape, `{"detail": "…"}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::directory::{Params, params};
use super::super::error::ApiPath;
use super::super::{ApiError, AppState};
use crate::clock::format_rfc3339_ms;
use crate::store::{RankValue, RankingQuery, ServerRecord};

/// The score a Hermes-compatible policy puts its 0.0–1.0 trust score in.
pub const TRUST_SCORE: &str = "trust_score";
/// The badge prefix that carries the letter grade.
pub const GRADE_BADGE: &str = "grade-";
/// Hermes's largest leaderboard page.
pub const MAX_LEADERBOARD: u32 = 50;

fn detail(status: StatusCode, detail: impl Into<String>) -> Response {
    (status, Json(json!({ "detail": detail.into() }))).into_response()
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// The grade the policy gave, from its `grade-<letter>` badge.
fn grade(record: &ServerRecord) -> Option<&str> {
    record
        .snapshot
        .badges
        .iter()
        .find_map(|b| b.strip_prefix(GRADE_BADGE))
}

fn score(record: &ServerRecord, name: &str) -> f64 {
    record.snapshot.scores.get(name).unwrap_or(0.0)
}

/// The agent's record when a Hermes-compatible policy scored it, else Hermes's 404.
async fn scored(state: &AppState, id: &str) -> Result<ServerRecord, Response> {
    if !state.config.current().compat.hermes.enabled {
        return Err(super::disabled().into_response());
    }
    let record = match state.store.get_server(id).await {
        Ok(record) => record,
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    match record {
        Some(r)
            if r.admin.retired_at_ms.is_none() && r.snapshot.scores.get(TRUST_SCORE).is_some() =>
        {
            Ok(r)
        }
        _ => Err(detail(
            StatusCode::NOT_FOUND,
            "No reputation data found for this agent",
        )),
    }
}

/// `GET /api/v1/marketplace/agents/{id}/trust-score`
pub async fn trust_score(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Response {
    match scored(&state, &id).await {
        Ok(r) => Json(json!({
            "agent_id": r.server_id,
            "trust_score": round(score(&r, TRUST_SCORE), 3),
            "grade": grade(&r),
        }))
        .into_response(),
        Err(response) => response,
    }
}

/// `GET /api/v1/marketplace/agents/{id}/reputation`
pub async fn reputation(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Response {
    let r = match scored(&state, &id).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let tasks = score(&r, "tasks");
    let succeeded = score(&r, "tasks_succeeded");
    let badges: Vec<&str> = r
        .snapshot
        .badges
        .iter()
        .map(String::as_str)
        .filter(|b| !b.starts_with(GRADE_BADGE))
        .collect();
    Json(json!({
        "agent_id": r.server_id,
        "trust_score": score(&r, TRUST_SCORE),
        "grade": grade(&r),
        "breakdown": {
            "success_rate": score(&r, "success_rate"),
            "latency_score": score(&r, "latency_score"),
            "rating_score": score(&r, "rating_score"),
            "uptime_score": score(&r, "uptime_score"),
            "consistency_score": score(&r, "consistency_score"),
        },
        "badges": badges,
        "stats": {
            "total_contracts": tasks as u64,
            "successful_contracts": succeeded as u64,
            "failed_contracts": score(&r, "tasks_failed") as u64,
            "success_percentage": if tasks > 0.0 { round(succeeded / tasks * 100.0, 1) } else { 0.0 },
            "avg_execution_time": round(score(&r, "avg_execution_seconds"), 2),
        },
        "last_updated": r.snapshot.evaluated_at_ms.map(format_rfc3339_ms),
    }))
    .into_response()
}

/// `GET /api/v1/marketplace/leaderboard?metric=&limit=`: best first by the policy's value
/// times `[directory] unverified_weight` for agents no operator verified (the rule of every
/// Vigil board: self-reported task metrics of an unverified agent count for less); paused and
/// retired agents are left out.
pub async fn leaderboard(State(state): State<AppState>, query: Params) -> Response {
    let config = state.config.current();
    if !config.compat.hermes.enabled {
        return super::disabled().into_response();
    }
    let map = match params(query, &["metric", "limit"]) {
        Ok(map) => map,
        Err(e) => return detail(StatusCode::UNPROCESSABLE_ENTITY, e.detail),
    };
    let metric = map
        .get("metric")
        .map_or("trust_score", String::as_str)
        .to_owned();
    let value = match metric.as_str() {
        "trust_score" => RankValue::Score(TRUST_SCORE.to_owned()),
        "total_contracts" => RankValue::Score("tasks".to_owned()),
        _ => return detail(StatusCode::BAD_REQUEST, "Invalid metric"),
    };
    let limit = match map.get("limit").map(|l| l.parse::<u32>()) {
        None => 10,
        Some(Ok(n)) if (1..=MAX_LEADERBOARD).contains(&n) => n,
        Some(_) => {
            return detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("limit must be a whole number from 1 to {MAX_LEADERBOARD}"),
            );
        }
    };
    let query = RankingQuery {
        value,
        cluster: None,
        unverified_weight: config.directory.unverified_weight,
        limit,
        after: None,
    };
    let rows = match state.store.ranking(&query).await {
        Ok(rows) => rows,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let leaderboard: Vec<Value> = rows
        .iter()
        // Only agents a Hermes-compatible policy scored (ranking by `tasks` alone would let
        // another policy's same-named score in).
        .filter(|r| r.record.snapshot.scores.get(TRUST_SCORE).is_some())
        .enumerate()
        .map(|(i, ranked)| {
            let r = &ranked.record;
            json!({
                "rank": i + 1,
                "agent_id": r.server_id,
                "agent_name": r.display_name.as_deref().unwrap_or(&r.server_id),
                "trust_score": round(score(r, TRUST_SCORE), 3),
                "grade": grade(r),
                "total_contracts": score(r, "tasks") as u64,
                "success_rate": round(score(r, "success_rate") * 100.0, 1),
            })
        })
        .collect();
    Json(json!({ "metric": metric, "leaderboard": leaderboard })).into_response()
}

//! Rankings and leaderboards (public reads, like the directory): servers ordered by a value of
//! their snapshot times `[directory] unverified_weight` for servers no operator verified.
//! Paused and retired servers are left out. Read paths only: no policy is called.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::directory::{Params, limit, one_of, params};
use super::{ApiError, AppState};
use crate::store::{RankValue, Ranked, RankingQuery};

/// The named score `mode=trending` ranks by (computed by the policy).
pub const TRENDING_SCORE: &str = "trending";

fn entry(r: &Ranked) -> Value {
    let s = &r.record.snapshot;
    json!({
        "server_id": r.record.server_id,
        "display_name": r.record.display_name,
        "cluster_id": r.record.cluster_id,
        "is_verified": r.record.is_verified,
        "value": r.value,
        "weighted_value": r.weighted,
        "effective_status": s.status,
        "confidence": s.confidence,
        "badges": s.badges,
    })
}

fn cursor(text: Option<&String>) -> Result<Option<(f64, String)>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let bad = || ApiError::invalid("invalid_query", "cursor is not one this API issued");
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map(Some).map_err(|_| bad())
}

/// `GET /v1/rankings?mode=players|uptime|quality|trending&cluster=&limit=&cursor=` → best
/// first, ties by id; `next_cursor` pages on.
pub async fn rankings(State(state): State<AppState>, query: Params) -> Result<Response, ApiError> {
    let map = params(query, &["mode", "cluster", "limit", "cursor"])?;
    let mode = one_of(&map, "mode", &["players", "uptime", "quality", "trending"])?
        .unwrap_or_else(|| "quality".to_owned());
    let value = match mode.as_str() {
        "players" => RankValue::Players,
        "uptime" => RankValue::Uptime,
        "trending" => RankValue::Score(TRENDING_SCORE.to_owned()),
        _ => RankValue::Quality,
    };
    let weight = state.config.current().directory.unverified_weight;
    let query = RankingQuery {
        value,
        cluster: map.get("cluster").cloned(),
        unverified_weight: weight,
        limit: limit(&map)?,
        after: cursor(map.get("cursor"))?,
    };
    let rows = state.store.ranking(&query).await?;
    let next_cursor = (rows.len() == query.limit as usize)
        .then(|| rows.last())
        .flatten()
        .map(|last| {
            let key =
                serde_json::to_vec(&(last.weighted, &last.record.server_id)).unwrap_or_default();
            URL_SAFE_NO_PAD.encode(key)
        });
    let items: Vec<Value> = rows.iter().map(entry).collect();
    Ok(Json(json!({
        "mode": mode,
        "unverified_weight": weight,
        "rankings": items,
        "next_cursor": next_cursor,
    }))
    .into_response())
}

/// A score name as policies return them: `^[a-z0-9][a-z0-9_.-]{0,63}$`.
fn valid_score_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

/// `GET /v1/leaderboard?score=NAME&cluster=&limit=` → the top servers by a named score (or
/// `quality`, `uptime`, `players`), each with its `rank` (competition ranking: equal weighted
/// values share a rank), the score, the weighted score, its `grade` when the policy returns a
/// `NAME_grade` score, and its badges.
pub async fn leaderboard(
    State(state): State<AppState>,
    query: Params,
) -> Result<Response, ApiError> {
    let map = params(query, &["score", "cluster", "limit"])?;
    let score = map
        .get("score")
        .cloned()
        .unwrap_or_else(|| "quality".to_owned());
    if !valid_score_name(&score) {
        return Err(ApiError::invalid(
            "invalid_query",
            "score must match ^[a-z0-9][a-z0-9_.-]{0,63}$",
        ));
    }
    let value = match score.as_str() {
        "quality" => RankValue::Quality,
        "uptime" => RankValue::Uptime,
        "players" => RankValue::Players,
        name => RankValue::Score(name.to_owned()),
    };
    let weight = state.config.current().directory.unverified_weight;
    let query = RankingQuery {
        value,
        cluster: map.get("cluster").cloned(),
        unverified_weight: weight,
        limit: limit(&map)?,
        after: None,
    };
    let rows = state.store.ranking(&query).await?;
    let grade_name = format!("{score}_grade");
    let mut rank = 0usize;
    let mut previous: Option<f64> = None;
    let entries: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if previous != Some(r.weighted) {
                rank = i + 1;
                previous = Some(r.weighted);
            }
            let mut e = entry(r);
            e["rank"] = json!(rank);
            e["score"] = json!(r.value);
            e["weighted_score"] = json!(r.weighted);
            e["grade"] = json!(r.record.snapshot.scores.get(&grade_name));
            e["policy"] = json!(r.record.snapshot.policy.as_deref());
            e
        })
        .collect();
    Ok(Json(json!({
        "score": score,
        "unverified_weight": weight,
        "entries": entries,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_names_are_checked() {
        assert!(valid_score_name("trending"));
        assert!(valid_score_name("players_7d.avg-x"));
        assert!(!valid_score_name(""));
        assert!(!valid_score_name("Trending"));
        assert!(!valid_score_name("a'b"));
        assert!(!valid_score_name(&"a".repeat(65)));
    }
}

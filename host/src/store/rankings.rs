//! Rankings and leaderboards: servers ordered by a value of their snapshot (players, uptime,
//! quality or any named score the policy returned) times a weight for unverified servers,
//! written once for both backends except the named score's JSON lookup.
//!
//! The values are the policy's outputs as stored; the store only multiplies and orders. Paused
//! and retired servers are never ranked; a server without the named score is not on that
//! board. Ties are broken by id, and a keyset cursor (weighted value, id) pages without
//! duplicates or gaps for rows that do not move.

use sqlx::{QueryBuilder, Row};

use super::{Db, ServerRecord, Store, StoreError};
use crate::store::reads::{SERVER_COLUMNS, server_row};

/// What a ranking orders by.
#[derive(Debug, Clone, PartialEq)]
pub enum RankValue {
    /// Last reported players (none counts as 0).
    Players,
    /// The policy's uptime percent.
    Uptime,
    /// The policy's quality score.
    Quality,
    /// A named score of the policy (servers without it are left out).
    Score(String),
}

/// A ranking query.
#[derive(Debug, Clone, PartialEq)]
pub struct RankingQuery {
    /// The value.
    pub value: RankValue,
    /// Only this cluster.
    pub cluster: Option<String>,
    /// What an unverified server's value is multiplied by.
    pub unverified_weight: f64,
    /// Page size.
    pub limit: u32,
    /// Keyset cursor: weighted value and id of the previous page's last row.
    pub after: Option<(f64, String)>,
}

/// One ranked server.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The server.
    pub record: ServerRecord,
    /// The value before weighting.
    pub value: f64,
    /// The value the order uses.
    pub weighted: f64,
}

/// Pushes the value expression of `value` (binding what it needs).
fn push_value<DB: sqlx::Database>(q: &mut QueryBuilder<DB>, value: &RankValue, postgres: bool)
where
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    match value {
        RankValue::Players => {
            q.push("CAST(COALESCE(players_current, 0) AS DOUBLE PRECISION)");
        }
        RankValue::Uptime => {
            q.push("uptime_percent");
        }
        RankValue::Quality => {
            q.push("quality_score");
        }
        RankValue::Score(name) if postgres => {
            q.push("CAST(CAST(scores AS JSONB) ->> ")
                .push_bind(name.clone())
                .push(" AS DOUBLE PRECISION)");
        }
        RankValue::Score(name) => {
            q.push("CAST(scores ->> ")
                .push_bind(name.clone())
                .push(" AS DOUBLE PRECISION)");
        }
    }
}

/// Pushes the weighted value: the value times the weight when the server is unverified.
fn push_weighted<DB: sqlx::Database>(q: &mut QueryBuilder<DB>, query: &RankingQuery, postgres: bool)
where
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> f64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push("((");
    push_value(q, &query.value, postgres);
    q.push(") * CASE WHEN is_verified THEN 1.0 ELSE ")
        .push_bind(query.unverified_weight)
        .push(" END)");
}

impl Store {
    /// A page of a ranking, best first.
    pub async fn ranking(&self, query: &RankingQuery) -> Result<Vec<Ranked>, StoreError> {
        let postgres = matches!(self.db, Db::Postgres(_));
        crate::store::with_pool!(&self.db, pool => {
            let mut q = QueryBuilder::new(format!("SELECT {SERVER_COLUMNS}, "));
            push_value(&mut q, &query.value, postgres);
            q.push(" AS rank_value, ");
            push_weighted(&mut q, query, postgres);
            q.push(" AS rank_weighted FROM servers \
                     WHERE paused_at_ms IS NULL AND retired_at_ms IS NULL AND ");
            push_value(&mut q, &query.value, postgres);
            q.push(" IS NOT NULL");
            if let Some(cluster) = &query.cluster {
                q.push(" AND cluster_id = ").push_bind(cluster.clone());
            }
            if let Some((value, id)) = &query.after {
                q.push(" AND (");
                push_weighted(&mut q, query, postgres);
                q.push(" < ").push_bind(*value).push(" OR (");
                push_weighted(&mut q, query, postgres);
                q.push(" = ")
                    .push_bind(*value)
                    .push(" AND server_id > ")
                    .push_bind(id.clone())
                    .push("))");
            }
            q.push(" ORDER BY rank_weighted DESC, server_id ASC LIMIT ")
                .push_bind(i64::from(query.limit));
            let rows = q.build().fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(Ranked {
                    record: server_row!(row)?,
                    value: row.try_get("rank_value")?,
                    weighted: row.try_get("rank_weighted")?,
                });
            }
            Ok(out)
        })
    }
}

//! `host_runs` and `host_alive`: the host's own up-periods (migration 0012), append-only.
//!
//! A start appends a run (with the gap it closed, if every host was down); a running host
//! appends an alive mark every minute and one at its clean stop. The engine decides what a gap
//! means (`engine/host_periods.rs`); replay reads the gaps back through [`Store::host_gaps`].

use sqlx::Row;

use crate::store::with_pool;
use crate::store::{Store, StoreError};

/// A host whose last mark is younger than this (and that did not stop cleanly) is alive.
pub const ALIVE_STALE_MS: i64 = 120_000;

/// What [`Store::begin_host_run`] recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRun {
    /// The run's id (for its alive marks).
    pub id: i64,
    /// When it started.
    pub started_at_ms: i64,
    /// The gap this start closed: when a host was last known alive (`None` when another host
    /// was alive, or nothing ran on this database before).
    pub resumed_from_ms: Option<i64>,
}

impl Store {
    /// Appends this host's run, starting at `now_ms`, with the gap it closes: when every host
    /// that ran on this database stopped cleanly or has been silent for [`ALIVE_STALE_MS`],
    /// the gap starts at the latest of their last marks and of the newest heartbeat and
    /// transition committed (so a tick a crashed host fired after its last mark is not taken
    /// for one that fell inside the gap).
    pub async fn begin_host_run(&self, now_ms: i64) -> Result<HostRun, StoreError> {
        with_pool!(&self.db, pool => {
            let runs = sqlx::query(
                "SELECT r.started_at_ms, \
                 (SELECT a.at_ms FROM host_alive a WHERE a.run_id = r.id \
                  ORDER BY a.at_ms DESC LIMIT 1) AS last_ms, \
                 (SELECT a.stopped FROM host_alive a WHERE a.run_id = r.id \
                  ORDER BY a.at_ms DESC LIMIT 1) AS stopped \
                 FROM host_runs r",
            )
            .fetch_all(pool)
            .await?;
            let mut down_at: Option<i64> = None;
            let mut alive = false;
            for row in &runs {
                let started: i64 = row.try_get("started_at_ms")?;
                let last: Option<i64> = row.try_get("last_ms")?;
                let stopped: Option<bool> = row.try_get("stopped")?;
                let last = last.unwrap_or(started).max(started);
                if stopped != Some(true) && now_ms.saturating_sub(last) < ALIVE_STALE_MS {
                    alive = true;
                }
                down_at = Some(down_at.map_or(last, |d| d.max(last)));
            }
            let resumed_from_ms = match down_at {
                Some(mut down) if !alive => {
                    let newest_beat: Option<i64> =
                        sqlx::query_scalar("SELECT MAX(received_at_ms) FROM heartbeats")
                            .fetch_one(pool)
                            .await?;
                    let newest_transition: Option<i64> = sqlx::query_scalar(
                        "SELECT at_ms FROM status_transitions ORDER BY id DESC LIMIT 1",
                    )
                    .fetch_optional(pool)
                    .await?;
                    for at in [newest_beat, newest_transition].into_iter().flatten() {
                        down = down.max(at);
                    }
                    (down < now_ms).then_some(down)
                }
                _ => None,
            };
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO host_runs (started_at_ms, resumed_from_ms) VALUES ($1, $2) \
                 RETURNING id",
            )
            .bind(now_ms)
            .bind(resumed_from_ms)
            .fetch_one(pool)
            .await?;
            Ok(HostRun {
                id,
                started_at_ms: now_ms,
                resumed_from_ms,
            })
        })
    }

    /// Appends an alive mark of run `run_id` at `at_ms` (`stopped` for its clean stop). A mark
    /// at the same millisecond as an earlier one of the run is a no-op.
    pub async fn mark_host_alive(
        &self,
        run_id: i64,
        at_ms: i64,
        stopped: bool,
    ) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO host_alive (run_id, at_ms, stopped) VALUES ($1, $2, $3) \
                 ON CONFLICT (run_id, at_ms) DO NOTHING",
            )
            .bind(run_id)
            .bind(at_ms)
            .bind(stopped)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The host gaps `(down_at_ms, up_at_ms)` that ended after `after_ms`, oldest first.
    pub async fn host_gaps(&self, after_ms: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT resumed_from_ms, started_at_ms FROM host_runs \
                 WHERE resumed_from_ms IS NOT NULL AND started_at_ms > $1 \
                 ORDER BY started_at_ms",
            )
            .bind(after_ms)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect()
        })
    }
}

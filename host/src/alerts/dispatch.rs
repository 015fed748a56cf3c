//! The alert delivery task: outbox → routes → sinks, durably.
//!
//! Each pass (1) routes every outbox row not yet routed: muted rows (maintenance window) and
//! duplicates (same server and kind pending or delivered to that sink within the dedup window)
//! get a terminal delivery row, the rest a `pending` one; (2) attempts every due `pending`
//! delivery, scheduling a retry with exponential backoff on failure and giving up on alerts
//! older than `give_up_after_seconds`. All state is in the database, so a restart resumes
//! exactly where the previous host stopped. The writer wakes the task after each commit that
//! wrote alerts; otherwise it polls every `poll_interval_ms`. It stops when the engine stops
//! (the wake-up channel closes). Deliveries are attempted one at a time, in due order.
//!
//! This speaks SQL directly (the outbox is an operations table, not history), in statements both
//! backends accept. With several hosts on one PostgreSQL database every host runs a
//! dispatcher: routing claims a row with a conditional UPDATE, and each delivery attempt first
//! claims the delivery by moving its due time (a lease), so one host at a time sends it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::AlertsConfig;
use super::sinks::{self, OutboxAlert};
use crate::clock::now_ms;
use crate::config::ConfigHandle;
use crate::metrics::Metrics;
use crate::store::Db;
use crate::with_pool;

/// Rows handled per pass and query.
const PAGE: i64 = 200;
/// How long past its request timeout a claimed delivery attempt stays claimed.
const LEASE_MARGIN_MS: i64 = 5_000;

/// Starts the dispatcher; it ends when every sender of `wake` is dropped.
pub fn spawn(
    pool: Db,
    config: ConfigHandle,
    metrics: Arc<Metrics>,
    wake: mpsc::Receiver<()>,
) -> JoinHandle<()> {
    let dispatcher = Dispatcher {
        db: pool,
        config,
        metrics,
        client: reqwest::Client::new(),
    };
    tokio::spawn(dispatcher.run(wake))
}

struct Dispatcher {
    db: Db,
    config: ConfigHandle,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
}

/// The retry delay after `attempts` failed attempts: initial × 2^(attempts−1), capped.
pub fn backoff_ms(config: &AlertsConfig, attempts: u32) -> u64 {
    let factor = 1u64 << attempts.saturating_sub(1).min(32);
    config
        .retry_initial_ms
        .saturating_mul(factor)
        .min(config.retry_max_ms)
}

impl Dispatcher {
    async fn run(self, mut wake: mpsc::Receiver<()>) {
        loop {
            let config = self.config.current();
            let mut wait = Duration::from_millis(config.alerts.poll_interval_ms);
            match self.pass(&config.alerts).await {
                Ok(Some(next_at)) => {
                    let until = u64::try_from(next_at - now_ms()).unwrap_or(0);
                    wait = wait.min(Duration::from_millis(until));
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "alert dispatch pass failed; retrying"),
            }
            tokio::select! {
                woken = wake.recv() => if woken.is_none() { break },
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("alert dispatcher stopped");
    }

    /// Routes new alerts, attempts due deliveries; returns when the next delivery is due.
    async fn pass(&self, config: &AlertsConfig) -> Result<Option<i64>, sqlx::Error> {
        self.route(config).await?;
        self.deliver_due(config).await?;
        let (next, depth): (Option<i64>, i64) = with_pool!(&self.db, pool => sqlx::query_as(
            "SELECT MIN(next_attempt_at_ms), COUNT(*) FROM alert_deliveries WHERE state = 'pending'",
        )
        .fetch_one(pool)
        .await?);
        self.metrics
            .set_queue_depth("alert_outbox", usize::try_from(depth).unwrap_or(0));
        Ok(next)
    }

    async fn route(&self, config: &AlertsConfig) -> Result<(), sqlx::Error> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT id, server_id, cluster_id, kind, severity, at_ms FROM alert_outbox \
                 WHERE routed_at_ms IS NULL ORDER BY id LIMIT $1",
            )
            .bind(PAGE)
            .fetch_all(pool)
            .await?;
            let window_ms =
                i64::try_from(config.dedup_window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
            for row in rows {
                let id: i64 = row.try_get("id")?;
                let server_id: String = row.try_get("server_id")?;
                let cluster_id: Option<String> = row.try_get("cluster_id")?;
                let kind: String = row.try_get("kind")?;
                let severity: String = row.try_get("severity")?;
                let at_ms: i64 = row.try_get("at_ms")?;
                let sinks: BTreeSet<&str> = config
                    .routes
                    .iter()
                    .filter(|r| r.matches(&kind, &severity, cluster_id.as_deref()))
                    .map(|r| r.sink.as_str())
                    .collect();
                let window = config
                    .maintenance
                    .iter()
                    .find(|w| w.mutes(&server_id, cluster_id.as_deref(), at_ms));
                let now = now_ms();
                let mut tx = pool.begin().await?;
                // Write first: the transaction takes SQLite's write lock up front (waiting out the
                // busy timeout) instead of failing to upgrade a read lock after the engine
                // committed; and a row another dispatcher already routed is skipped.
                let claimed = sqlx::query(
                    "UPDATE alert_outbox SET routed_at_ms = $1 WHERE id = $2 AND routed_at_ms IS NULL",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                if claimed.rows_affected() == 0 {
                    continue;
                }
                for sink in sinks {
                    let state = if window.is_some() {
                        "muted"
                    } else {
                        let earlier: Option<i64> = sqlx::query_scalar(
                            "SELECT d.id FROM alert_deliveries d JOIN alert_outbox a \
                             ON a.id = d.alert_id WHERE d.sink = $1 AND a.server_id = $2 \
                             AND a.kind = $3 AND a.id <> $4 AND a.at_ms > $5 \
                             AND d.state IN ('pending', 'delivered') LIMIT 1",
                        )
                        .bind(sink)
                        .bind(&server_id)
                        .bind(&kind)
                        .bind(id)
                        .bind(at_ms.saturating_sub(window_ms))
                        .fetch_optional(&mut *tx)
                        .await?;
                        if earlier.is_some() {
                            "duplicate"
                        } else {
                            "pending"
                        }
                    };
                    let terminal = state != "pending";
                    sqlx::query(
                        "INSERT INTO alert_deliveries (alert_id, sink, state, next_attempt_at_ms, \
                         created_at_ms, done_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (alert_id, sink) DO NOTHING",
                    )
                    .bind(id)
                    .bind(sink)
                    .bind(state)
                    .bind((!terminal).then_some(now))
                    .bind(now)
                    .bind(terminal.then_some(now))
                    .execute(&mut *tx)
                    .await?;
                    if terminal {
                        self.metrics.delivery(sink, state);
                        tracing::info!(
                            alert_id = id, %server_id, %kind, sink, state,
                            reason = window.and_then(|w| w.reason.as_deref()).unwrap_or(""),
                            "alert not sent"
                        );
                    }
                }
                tx.commit().await?;
            }
            Ok(())
        })
    }

    async fn deliver_due(&self, config: &AlertsConfig) -> Result<(), sqlx::Error> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT d.id AS delivery_id, d.sink, d.attempts, d.next_attempt_at_ms AS due_at_ms, a.id, a.server_id, a.cluster_id, \
                 a.kind, a.severity, a.at_ms, a.summary, a.details, a.policy_digest \
                 FROM alert_deliveries d JOIN alert_outbox a ON a.id = d.alert_id \
                 WHERE d.state = 'pending' AND d.next_attempt_at_ms <= $1 \
                 ORDER BY d.next_attempt_at_ms, d.id LIMIT $2",
            )
            .bind(now_ms())
            .bind(PAGE)
            .fetch_all(pool)
            .await?;
            let give_up_ms =
                i64::try_from(config.give_up_after_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
            let timeout = Duration::from_millis(config.request_timeout_ms);
            for row in rows {
                let delivery_id: i64 = row.try_get("delivery_id")?;
                let sink_name: String = row.try_get("sink")?;
                let attempts: i64 = row.try_get("attempts")?;
                let details: String = row.try_get("details")?;
                let alert = OutboxAlert {
                    id: row.try_get("id")?,
                    server_id: row.try_get("server_id")?,
                    cluster_id: row.try_get("cluster_id")?,
                    kind: row.try_get("kind")?,
                    severity: row.try_get("severity")?,
                    at_ms: row.try_get("at_ms")?,
                    summary: row.try_get("summary")?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                    policy_digest: row.try_get("policy_digest")?,
                };
                // Claim the attempt: move its due time past the attempt (a lease). Another host's
                // dispatcher that read the same row finds it moved and skips it; if this host
                // dies mid-attempt, the lease expires and the delivery is retried.
                let due_at_ms: i64 = row.try_get("due_at_ms")?;
                let lease_ms = i64::try_from(config.request_timeout_ms)
                    .unwrap_or(i64::MAX)
                    .saturating_add(LEASE_MARGIN_MS);
                let claimed = sqlx::query(
                    "UPDATE alert_deliveries SET next_attempt_at_ms = $1 \
                     WHERE id = $2 AND state = 'pending' AND next_attempt_at_ms = $3",
                )
                .bind(now_ms().saturating_add(lease_ms))
                .bind(delivery_id)
                .bind(due_at_ms)
                .execute(pool)
                .await?;
                if claimed.rows_affected() == 0 {
                    continue;
                }
                let age = now_ms() - alert.at_ms;
                let sink = config.sinks.iter().find(|s| s.name == sink_name);
                let outcome = match sink {
                    None => Err("the sink is no longer configured".to_owned()),
                    Some(_) if age > give_up_ms => Err(format!(
                        "gave up after {} attempts: older than {} s",
                        attempts, config.give_up_after_seconds
                    )),
                    Some(sink) => sinks::send(&self.client, sink, &alert, timeout).await,
                };
                let attempts = attempts + 1;
                let now = now_ms();
                match outcome {
                    Ok(()) => {
                        sqlx::query(
                            "UPDATE alert_deliveries SET state = 'delivered', attempts = $1, \
                             next_attempt_at_ms = NULL, done_at_ms = $2, last_error = NULL \
                             WHERE id = $3",
                        )
                        .bind(attempts)
                        .bind(now)
                        .bind(delivery_id)
                        .execute(pool)
                        .await?;
                        self.metrics.delivery(&sink_name, "delivered");
                        tracing::info!(alert_id = alert.id, kind = %alert.kind, server_id = %alert.server_id, sink = %sink_name, attempts, "alert delivered");
                    }
                    Err(reason) if sink.is_none() || age > give_up_ms => {
                        sqlx::query(
                            "UPDATE alert_deliveries SET state = 'failed', next_attempt_at_ms = NULL, \
                             done_at_ms = $1, last_error = $2 WHERE id = $3",
                        )
                        .bind(now)
                        .bind(&reason)
                        .bind(delivery_id)
                        .execute(pool)
                        .await?;
                        self.metrics.delivery(&sink_name, "failed");
                        tracing::error!(alert_id = alert.id, kind = %alert.kind, server_id = %alert.server_id, sink = %sink_name, %reason, "alert delivery given up");
                    }
                    Err(reason) => {
                        let delay = backoff_ms(config, u32::try_from(attempts).unwrap_or(u32::MAX));
                        let next = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
                        sqlx::query(
                            "UPDATE alert_deliveries SET attempts = $1, next_attempt_at_ms = $2, \
                             last_error = $3 WHERE id = $4",
                        )
                        .bind(attempts)
                        .bind(next)
                        .bind(&reason)
                        .bind(delivery_id)
                        .execute(pool)
                        .await?;
                        self.metrics.delivery(&sink_name, "retry");
                        tracing::warn!(alert_id = alert.id, sink = %sink_name, attempts, retry_in_ms = delay, %reason, "alert delivery failed; will retry");
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let c = AlertsConfig {
            retry_initial_ms: 100,
            retry_max_ms: 1_000,
            ..AlertsConfig::default()
        };
        let delays: Vec<u64> = (1..=6).map(|a| backoff_ms(&c, a)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
    }
}

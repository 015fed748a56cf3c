//! `alert_outbox` and `alert_deliveries`: routing claims and delivery leases.
//!
//! With several hosts on one PostgreSQL database every host runs a dispatcher: routing claims
//! an outbox row with a conditional UPDATE, and each delivery attempt first claims the delivery
//! by moving its due time (a lease), so one host at a time sends it. Which sinks an alert goes
//! to, whether a maintenance window mutes it and what to send are decided by
//! `alerts/dispatch.rs`; nothing here sends anything.

use sqlx::Row;

use crate::store::with_pool;
use crate::store::{AlertRouting, DueDelivery, OutboxAlert, PendingDeliveries, Store, StoreError};

/// The outbox columns [`outbox_alert!`] reads (from `alert_outbox a`).
const ALERT_COLUMNS: &str = "a.id, a.server_id, a.cluster_id, a.kind, a.severity, a.at_ms, a.summary, a.details, \
     a.policy_digest";

/// An [`OutboxAlert`] from a row of either backend.
macro_rules! outbox_alert {
    ($row:expr) => {
        OutboxAlert {
            id: $row.try_get("id")?,
            server_id: $row.try_get("server_id")?,
            cluster_id: $row.try_get("cluster_id")?,
            kind: $row.try_get("kind")?,
            severity: $row.try_get("severity")?,
            at_ms: $row.try_get("at_ms")?,
            summary: $row.try_get("summary")?,
            details: serde_json::from_str(&$row.try_get::<String, _>("details")?)
                .unwrap_or(serde_json::Value::Null),
            policy_digest: $row.try_get("policy_digest")?,
        }
    };
}

impl Store {
    /// How many deliveries are pending, and when the next one is due.
    pub async fn pending_deliveries(&self) -> Result<PendingDeliveries, StoreError> {
        let (next_at_ms, count): (Option<i64>, i64) = with_pool!(&self.db, pool => sqlx::query_as(
            "SELECT MIN(next_attempt_at_ms), COUNT(*) FROM alert_deliveries WHERE state = 'pending'",
        )
        .fetch_one(pool)
        .await?);
        Ok(PendingDeliveries { next_at_ms, count })
    }

    /// Up to `limit` outbox alerts not yet routed, oldest first.
    pub async fn unrouted_alerts(&self, limit: i64) -> Result<Vec<OutboxAlert>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ALERT_COLUMNS} FROM alert_outbox a \
                 WHERE a.routed_at_ms IS NULL ORDER BY a.id LIMIT $1"
            )))
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(outbox_alert!(row));
            }
            Ok(out)
        })
    }

    /// Claims an unrouted alert and creates its deliveries, one per sink, in one transaction:
    /// `muted` when [`AlertRouting::muted`], `duplicate` when the same server and kind has a
    /// pending or delivered delivery to that sink for an alert after
    /// [`AlertRouting::dedup_after_ms`], `pending` (due now) otherwise. Returns each sink with
    /// its state, or `None` when another dispatcher routed the alert first.
    pub async fn route_alert<'a>(
        &self,
        routing: &AlertRouting<'a>,
    ) -> Result<Option<Vec<(&'a str, &'static str)>>, StoreError> {
        let (alert, now) = (routing.alert, routing.now_ms);
        let mut states = Vec::with_capacity(routing.sinks.len());
        with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            // Write first: the transaction takes SQLite's write lock up front (waiting out the
            // busy timeout) instead of failing to upgrade a read lock after the engine
            // committed; and a row another dispatcher already routed is skipped.
            let claimed = sqlx::query(
                "UPDATE alert_outbox SET routed_at_ms = $1 WHERE id = $2 AND routed_at_ms IS NULL",
            )
            .bind(now)
            .bind(alert.id)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                return Ok(None);
            }
            for &sink in routing.sinks {
                let state = if routing.muted {
                    "muted"
                } else {
                    let earlier: Option<i64> = sqlx::query_scalar(
                        "SELECT d.id FROM alert_deliveries d JOIN alert_outbox a \
                         ON a.id = d.alert_id WHERE d.sink = $1 AND a.server_id = $2 \
                         AND a.kind = $3 AND a.id <> $4 AND a.at_ms > $5 \
                         AND d.state IN ('pending', 'delivered') LIMIT 1",
                    )
                    .bind(sink)
                    .bind(&alert.server_id)
                    .bind(&alert.kind)
                    .bind(alert.id)
                    .bind(routing.dedup_after_ms)
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
                .bind(alert.id)
                .bind(sink)
                .bind(state)
                .bind((!terminal).then_some(now))
                .bind(now)
                .bind(terminal.then_some(now))
                .execute(&mut *tx)
                .await?;
                states.push((sink, state));
            }
            tx.commit().await?;
        });
        Ok(Some(states))
    }

    /// Up to `limit` pending deliveries due at `now_ms`, in due order, with their alerts.
    pub async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT d.id AS delivery_id, d.sink, d.attempts, \
                 d.next_attempt_at_ms AS due_at_ms, {ALERT_COLUMNS} \
                 FROM alert_deliveries d JOIN alert_outbox a ON a.id = d.alert_id \
                 WHERE d.state = 'pending' AND d.next_attempt_at_ms <= $1 \
                 ORDER BY d.next_attempt_at_ms, d.id LIMIT $2"
            )))
            .bind(now_ms)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(DueDelivery {
                    delivery_id: row.try_get("delivery_id")?,
                    sink: row.try_get("sink")?,
                    attempts: row.try_get("attempts")?,
                    due_at_ms: row.try_get("due_at_ms")?,
                    alert: outbox_alert!(row),
                });
            }
            Ok(out)
        })
    }

    /// Claims a due delivery for one attempt by moving its due time to `lease_until_ms`, if it
    /// is still pending and due at `due_at_ms`; `false` if another dispatcher claimed it. If
    /// the claiming host dies mid-attempt, the lease expires and the delivery is retried.
    pub async fn claim_delivery(
        &self,
        delivery_id: i64,
        due_at_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let claimed = with_pool!(&self.db, pool => sqlx::query(
            "UPDATE alert_deliveries SET next_attempt_at_ms = $1 \
             WHERE id = $2 AND state = 'pending' AND next_attempt_at_ms = $3",
        )
        .bind(lease_until_ms)
        .bind(delivery_id)
        .bind(due_at_ms)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(claimed != 0)
    }

    /// Marks a delivery sent after `attempts` attempts.
    pub async fn delivery_sent(
        &self,
        delivery_id: i64,
        attempts: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => sqlx::query(
            "UPDATE alert_deliveries SET state = 'delivered', attempts = $1, \
             next_attempt_at_ms = NULL, done_at_ms = $2, last_error = NULL \
             WHERE id = $3",
        )
        .bind(attempts)
        .bind(now_ms)
        .bind(delivery_id)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Gives a delivery up for `reason`.
    pub async fn delivery_failed(
        &self,
        delivery_id: i64,
        now_ms: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => sqlx::query(
            "UPDATE alert_deliveries SET state = 'failed', next_attempt_at_ms = NULL, \
             done_at_ms = $1, last_error = $2 WHERE id = $3",
        )
        .bind(now_ms)
        .bind(reason)
        .bind(delivery_id)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Schedules the next attempt of a delivery that failed for `reason` after `attempts`.
    pub async fn delivery_retry(
        &self,
        delivery_id: i64,
        attempts: i64,
        next_at_ms: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => sqlx::query(
            "UPDATE alert_deliveries SET attempts = $1, next_attempt_at_ms = $2, \
             last_error = $3 WHERE id = $4",
        )
        .bind(attempts)
        .bind(next_at_ms)
        .bind(reason)
        .bind(delivery_id)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}

//! `commands` and `command_log`: pending commands, delivered and answered once each.
//!
//! Every step (queued, delivered, result) is appended to `command_log` in the transaction that
//! makes it. Envelopes and results arrive as JSON text already signed or verified by
//! `commands.rs`; nothing here signs or parses them.

use sqlx::Row;

use crate::store::with_pool;
use crate::store::{
    CommandResultRow, CommandSummary, DeliveredCommand, NewCommand, ResultRecorded, Store,
    StoreError,
};

/// Appends one step to `command_log` inside the open transaction `$tx`.
macro_rules! log {
    ($tx:ident, $command_id:expr, $at_ms:expr, $event:expr, $detail:expr) => {
        sqlx::query(
            "INSERT INTO command_log (command_id, at_ms, event, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind($command_id)
        .bind($at_ms)
        .bind($event)
        .bind($detail.to_string())
        .execute(&mut *$tx)
        .await?
    };
}

impl Store {
    /// A server's latest commands, newest first (the admin sections of its dashboard page).
    pub async fn server_commands(
        &self,
        server_id: &str,
        limit: u32,
    ) -> Result<Vec<CommandSummary>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT command_id, command, issued_at_ms, expires_at_ms, created_by, \
                 delivered_at_ms, CAST(delivery_count AS BIGINT) AS delivery_count, result_at_ms, \
                 result_status FROM commands \
                 WHERE server_id = $1 ORDER BY issued_at_ms DESC, command_id LIMIT $2",
            )
            .bind(server_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(CommandSummary {
                    command_id: r.try_get("command_id")?,
                    command: r.try_get("command")?,
                    issued_at_ms: r.try_get("issued_at_ms")?,
                    expires_at_ms: r.try_get("expires_at_ms")?,
                    created_by: r.try_get("created_by")?,
                    delivered_at_ms: r.try_get("delivered_at_ms")?,
                    delivery_count: r.try_get("delivery_count")?,
                    result_at_ms: r.try_get("result_at_ms")?,
                    result_status: r.try_get("result_status")?,
                });
            }
            Ok(out)
        })
    }

    /// Servers with an unanswered command unexpired at `now_ms`.
    pub async fn servers_with_commands(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        Ok(with_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT DISTINCT server_id FROM commands WHERE result_at_ms IS NULL \
             AND expires_at_ms > $1",
        )
        .bind(now_ms)
        .fetch_all(pool)
        .await?))
    }

    /// Queues a command and logs `queued` with `{"by": created_by}`.
    pub async fn insert_command(&self, command: &NewCommand) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO commands (command_id, server_id, command, envelope, issued_at_ms, \
                 expires_at_ms, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&command.command_id)
            .bind(&command.server_id)
            .bind(&command.command)
            .bind(&command.envelope)
            .bind(command.issued_at_ms)
            .bind(command.expires_at_ms)
            .bind(&command.created_by)
            .execute(&mut *tx)
            .await?;
            log!(
                tx,
                &command.command_id,
                command.issued_at_ms,
                "queued",
                serde_json::json!({ "by": command.created_by })
            );
            tx.commit().await?;
        });
        Ok(())
    }

    /// Takes every command of `server_id` unanswered and unexpired at `now_ms` for delivery
    /// (at least once: again on every call until its result is recorded), counting each
    /// delivery and logging `delivered` on the first; returns them in no particular order.
    pub async fn take_commands(
        &self,
        server_id: &str,
        now_ms: i64,
    ) -> Result<Vec<DeliveredCommand>, StoreError> {
        let mut out = Vec::new();
        with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let rows = sqlx::query(
                "UPDATE commands SET delivered_at_ms = COALESCE(delivered_at_ms, $1), \
                 delivery_count = delivery_count + 1 WHERE server_id = $2 \
                 AND result_at_ms IS NULL AND expires_at_ms > $3 \
                 RETURNING command_id, envelope, issued_at_ms, delivery_count",
            )
            .bind(now_ms)
            .bind(server_id)
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let command_id: String = row.try_get("command_id")?;
                let count: i64 = row.try_get::<i64, _>("delivery_count").or_else(|_| {
                    row.try_get::<i32, _>("delivery_count").map(i64::from)
                })?;
                if count == 1 {
                    log!(tx, &command_id, now_ms, "delivered", serde_json::json!({}));
                }
                out.push(DeliveredCommand {
                    command_id,
                    envelope: row.try_get("envelope")?,
                    issued_at_ms: row.try_get("issued_at_ms")?,
                });
            }
            tx.commit().await?;
        });
        Ok(out)
    }

    /// Records the result of a delivered command, once (logging `result` with its status).
    pub async fn record_command_result(
        &self,
        result: &CommandResultRow,
    ) -> Result<ResultRecorded, StoreError> {
        with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE commands SET result_at_ms = $1, result_status = $2, result_body = $3 \
                 WHERE command_id = $4 AND server_id = $5 AND delivered_at_ms IS NOT NULL \
                 AND result_at_ms IS NULL",
            )
            .bind(result.at_ms)
            .bind(&result.status)
            .bind(&result.body)
            .bind(&result.command_id)
            .bind(&result.server_id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
                    "SELECT delivered_at_ms, result_at_ms FROM commands \
                     WHERE command_id = $1 AND server_id = $2",
                )
                .bind(&result.command_id)
                .bind(&result.server_id)
                .fetch_optional(&mut *tx)
                .await?;
                return Ok(match row {
                    None => ResultRecorded::Unknown,
                    Some((None, _)) => ResultRecorded::NotDelivered,
                    Some((Some(_), _)) => ResultRecorded::AlreadyRecorded,
                });
            }
            log!(
                tx,
                &result.command_id,
                result.at_ms,
                "result",
                serde_json::json!({ "status": result.status })
            );
            tx.commit().await?;
        });
        Ok(ResultRecorded::Recorded)
    }
}

//! Operator changes to servers, written once for both backends: labels, pause, retirement
//! (with their append-only audit rows) and maintenance windows.
//!
//! The engine's writer calls [`Store::update_server_admin`] (it mirrors the change in its working
//! set); the API reads the audit trail and manages the windows, and the alert dispatcher reads
//! the windows in force.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{AuditRow, MaintenanceRow, ServerAdminUpdate, Store, StoreError, StoredAudit};
use crate::store::with_pool;

const WINDOW_COLUMNS: &str = "id, server_id, cluster_id, starts_at_ms, ends_at_ms, reason, \
    created_by, created_at_ms, cancelled_at_ms, cancelled_by";

macro_rules! window_row {
    ($r:expr) => {
        MaintenanceRow {
            id: $r.try_get("id")?,
            server_id: $r.try_get("server_id")?,
            cluster_id: $r.try_get("cluster_id")?,
            starts_at_ms: $r.try_get("starts_at_ms")?,
            ends_at_ms: $r.try_get("ends_at_ms")?,
            reason: $r.try_get("reason")?,
            created_by: $r.try_get("created_by")?,
            created_at_ms: $r.try_get("created_at_ms")?,
            cancelled_at_ms: $r.try_get("cancelled_at_ms")?,
            cancelled_by: $r.try_get("cancelled_by")?,
        }
    };
}

/// Labels as stored (a JSON object).
fn labels_text(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

impl Store {
    /// Sets what a server's agent says about the machine (`servers.host_info`, a JSON
    /// object: HomelabCmd's hostname, os_info and metrics); `false` if the server is unknown.
    pub async fn set_host_info(
        &self,
        server_id: &str,
        info: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let text = info.to_string();
        with_pool!(&self.db, pool => {
            let done = sqlx::query("UPDATE servers SET host_info = $1 WHERE server_id = $2")
                .bind(&text)
                .bind(server_id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// What a server's agent last said about the machine (`servers.host_info`), if anything.
    pub async fn host_info(
        &self,
        server_id: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<Option<String>> = with_pool!(&self.db, pool => {
            sqlx::query_scalar("SELECT host_info FROM servers WHERE server_id = $1")
                .bind(server_id)
                .fetch_optional(pool)
                .await?
        });
        match text.flatten() {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("host_info: {e}"))),
            None => Ok(None),
        }
    }

    /// Writes an operator's change to a server and appends its audit row, in one transaction.
    /// `false` if the server is unknown (nothing written).
    pub async fn update_server_admin(&self, u: &ServerAdminUpdate) -> Result<bool, StoreError> {
        with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE servers SET display_name = $1, cluster_id = $2, labels = $3, \
                 paused_at_ms = $4, retired_at_ms = $5, schedule = $6 WHERE server_id = $7",
            )
            .bind(&u.display_name)
            .bind(&u.cluster_id)
            .bind(labels_text(&u.admin.labels))
            .bind(u.admin.paused_at_ms)
            .bind(u.admin.retired_at_ms)
            .bind(
                u.admin
                    .schedule
                    .as_ref()
                    .and_then(|s| serde_json::to_string(s).ok()),
            )
            .bind(&u.server_id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Ok(false);
            }
            let a = &u.audit;
            sqlx::query(
                "INSERT INTO server_audit (server_id, at_ms, action, actor, detail) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&a.server_id)
            .bind(a.at_ms)
            .bind(&a.action)
            .bind(&a.actor)
            .bind(&a.detail)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        self.backend.announce_server(&u.server_id).await?;
        Ok(true)
    }

    /// A server's audit trail, newest first, before row id `before`.
    pub async fn server_audit(
        &self,
        server_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredAudit>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT id, server_id, at_ms, action, actor, detail FROM server_audit \
                 WHERE server_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(server_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(StoredAudit {
                    id: r.try_get("id")?,
                    row: AuditRow {
                        server_id: r.try_get("server_id")?,
                        at_ms: r.try_get("at_ms")?,
                        action: r.try_get("action")?,
                        actor: r.try_get("actor")?,
                        detail: r.try_get("detail")?,
                    },
                });
            }
            Ok(out)
        })
    }

    /// Stores a maintenance window; answers its id.
    pub async fn insert_maintenance(&self, w: &MaintenanceRow) -> Result<i64, StoreError> {
        with_pool!(&self.db, pool => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO maintenance_windows (server_id, cluster_id, starts_at_ms, ends_at_ms, \
                 reason, created_by, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(&w.server_id)
            .bind(&w.cluster_id)
            .bind(w.starts_at_ms)
            .bind(w.ends_at_ms)
            .bind(&w.reason)
            .bind(&w.created_by)
            .bind(w.created_at_ms)
            .fetch_one(pool)
            .await?;
            Ok(id)
        })
    }

    /// Cancels a window (once); the window as it now stands, `None` if there is no such window.
    pub async fn cancel_maintenance(
        &self,
        id: i64,
        at_ms: i64,
        by: &str,
    ) -> Result<Option<MaintenanceRow>, StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query(
                "UPDATE maintenance_windows SET cancelled_at_ms = $1, cancelled_by = $2 \
                 WHERE id = $3 AND cancelled_at_ms IS NULL",
            )
            .bind(at_ms)
            .bind(by)
            .bind(id)
            .execute(pool)
            .await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {WINDOW_COLUMNS} FROM maintenance_windows WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            match row {
                Some(r) => Ok(Some(window_row!(r))),
                None => Ok(None),
            }
        })
    }

    /// Windows not cancelled that end after `after_ms`, soonest start first, at most `limit`.
    pub async fn maintenance_windows(
        &self,
        after_ms: i64,
        limit: u32,
    ) -> Result<Vec<MaintenanceRow>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {WINDOW_COLUMNS} FROM maintenance_windows \
                 WHERE ends_at_ms > $1 AND cancelled_at_ms IS NULL \
                 ORDER BY starts_at_ms, id LIMIT $2"
            )))
            .bind(after_ms)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(window_row!(r));
            }
            Ok(out)
        })
    }
}

//! The reads, written once for both backends: [`Store`]'s own methods over its pool.
//!
//! Each runs its body through [`with_pool!`], so the statements are compiled once per backend
//! and must be accepted by both: numbered `$n` placeholders, `CAST($n AS TEXT)` where PostgreSQL
//! needs a parameter's type, no backend-only functions. Nothing here writes; what differs
//! between the backends (the batch commit, registrations, locks, change notices) is behind
//! [`Backend`](super::Backend) in `sqlite/` and `postgres/`.

use sqlx::{QueryBuilder, Row};

use super::{
    AuthKind, ClusterTransition, HeartbeatRow, HistoryEvent, PolicyRecord, PolicySummary,
    RejectionQuery, RollupRow, RollupSpan, RollupSums, ServerKeyRow, ServerQuery, ServerRecord,
    ServerSort, Store, StoreError, StoredActivation, StoredHeartbeat, StoredRejection,
    StoredTransition, TransitionRow,
};
use crate::store::with_pool;

/// The columns `server_row!` reads.
pub(super) const SERVER_COLUMNS: &str = "server_id, display_name, cluster_id, public_key, \
    key_version, is_verified, registered_at_ms, status, confidence, uptime_percent, quality_score, \
    scores, badges, last_seen_at_ms, last_sent_at_ms, last_signature, players_current, \
    players_capacity, map_name, agent_version, event_seq, evaluated_at_ms, policy_name, \
    policy_version, policy_digest, policy_state, next_check_at_ms, policy_errors, labels, \
    paused_at_ms, retired_at_ms, schedule, rollup";

/// The columns [`heartbeat_row!`] reads.
pub(super) const HEARTBEAT_COLUMNS: &str = "server_id, seq, received_at_ms, sent_at_ms, key_version, signature, body, policy_digest, \
     auth, original_body";

/// A [`HeartbeatRow`] from a row of either backend.
macro_rules! heartbeat_row {
    ($r:expr) => {
        HeartbeatRow {
            server_id: $r.try_get("server_id")?,
            seq: $r.try_get("seq")?,
            received_at_ms: $r.try_get("received_at_ms")?,
            sent_at_ms: $r.try_get("sent_at_ms")?,
            key_version: u32::try_from($r.try_get::<i64, _>("key_version")?)
                .map_err(|e| StoreError::Corrupt(format!("key_version: {e}")))?,
            auth: AuthKind::parse(
                $r.try_get::<Option<String>, _>("auth")?.as_deref(),
                !$r.try_get::<String, _>("signature")?.is_empty(),
            )?,
            signature: $r.try_get("signature")?,
            body: $r.try_get("body")?,
            policy_digest: $r.try_get("policy_digest")?,
            original_body: $r.try_get("original_body")?,
        }
    };
}

/// A [`ServerRecord`](super::ServerRecord) (with its snapshot) from a `servers` row of either
/// backend: `Result<ServerRecord, StoreError>`.
macro_rules! server_row {
    ($row:expr) => {{
        use sqlx::Row as _;
        use $crate::store::{PolicyRef, ServerRecord, Snapshot, StoreError};
        let corrupt =
            |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
        let scores: String = $row.try_get("scores")?;
        let labels: String = $row.try_get("labels")?;
        let schedule: Option<String> = $row.try_get("schedule")?;
        let badges: String = $row.try_get("badges")?;
        let rollup: Option<String> = $row.try_get("rollup")?;
        let policy_digest: Option<String> = $row.try_get("policy_digest")?;
        let policy = match policy_digest {
            Some(digest) => Some(std::sync::Arc::new(PolicyRef {
                name: $row
                    .try_get::<Option<String>, _>("policy_name")?
                    .unwrap_or_default(),
                version: $row
                    .try_get::<Option<String>, _>("policy_version")?
                    .unwrap_or_default(),
                digest,
            })),
            None => None,
        };
        let opt_u32 = |name: &str| -> Result<Option<u32>, StoreError> {
            Ok($row
                .try_get::<Option<i64>, _>(name)?
                .and_then(|v| u32::try_from(v).ok()))
        };
        Ok::<ServerRecord, StoreError>(ServerRecord {
            server_id: $row.try_get("server_id")?,
            display_name: $row.try_get("display_name")?,
            cluster_id: $row.try_get("cluster_id")?,
            public_key: $row.try_get("public_key")?,
            key_version: u32::try_from($row.try_get::<i64, _>("key_version")?)
                .map_err(|e| corrupt("key_version", &e))?,
            is_verified: $row.try_get("is_verified")?,
            registered_at_ms: $row.try_get("registered_at_ms")?,
            admin: $crate::store::ServerAdmin {
                labels: serde_json::from_str(&labels).map_err(|e| corrupt("labels", &e))?,
                paused_at_ms: $row.try_get("paused_at_ms")?,
                retired_at_ms: $row.try_get("retired_at_ms")?,
                schedule: match schedule {
                    Some(text) => {
                        Some(serde_json::from_str(&text).map_err(|e| corrupt("schedule", &e))?)
                    }
                    None => None,
                },
            },
            snapshot: Snapshot {
                status: $row.try_get("status")?,
                confidence: $row.try_get("confidence")?,
                uptime_percent: $row.try_get("uptime_percent")?,
                quality_score: $row.try_get("quality_score")?,
                scores: serde_json::from_str(&scores).map_err(|e| corrupt("scores", &e))?,
                badges: serde_json::from_str(&badges).map_err(|e| corrupt("badges", &e))?,
                last_seen_at_ms: $row.try_get("last_seen_at_ms")?,
                last_sent_at_ms: $row.try_get("last_sent_at_ms")?,
                last_signature: $row.try_get("last_signature")?,
                players_current: opt_u32("players_current")?,
                players_capacity: opt_u32("players_capacity")?,
                map_name: $row.try_get("map_name")?,
                agent_version: $row.try_get("agent_version")?,
                event_seq: $row.try_get("event_seq")?,
                evaluated_at_ms: $row.try_get("evaluated_at_ms")?,
                policy,
                policy_state: $row.try_get("policy_state")?,
                next_check_at_ms: $row.try_get("next_check_at_ms")?,
                policy_errors: $row.try_get("policy_errors")?,
                rollup: match rollup {
                    Some(text) => {
                        Some(serde_json::from_str(&text).map_err(|e| corrupt("rollup", &e))?)
                    }
                    None => None,
                },
            },
        })
    }};
}
pub(super) use server_row;

/// A [`StoredTransition`] from a row of either backend.
macro_rules! transition_row {
    ($r:expr) => {
        StoredTransition {
            id: $r.try_get("id")?,
            row: TransitionRow {
                server_id: $r.try_get("server_id")?,
                at_ms: $r.try_get("at_ms")?,
                cause: $r.try_get("cause")?,
                from_status: $r.try_get("from_status")?,
                to_status: $r.try_get("to_status")?,
                from_confidence: $r.try_get("from_confidence")?,
                to_confidence: $r.try_get("to_confidence")?,
                policy_digest: $r.try_get("policy_digest")?,
            },
        }
    };
}

/// A [`PolicyRecord`] from a row of either backend.
macro_rules! policy_row {
    ($r:expr) => {
        PolicyRecord {
            digest: $r.try_get("digest")?,
            name: $r.try_get("name")?,
            version: $r.try_get("version")?,
            component: $r.try_get("component")?,
            uploaded_by: $r.try_get("uploaded_by")?,
            uploaded_at_ms: $r.try_get("uploaded_at_ms")?,
            signer: $r.try_get("signer")?,
            signature: $r.try_get("signature")?,
        }
    };
}

const POLICY_COLUMNS: &str =
    "digest, name, version, component, uploaded_by, uploaded_at_ms, signer, signature";

impl Store {
    /// A server's folded events with `received_at_ms >= since_ms`, in sequence order.
    pub async fn history(
        &self,
        server_id: &str,
        since_ms: i64,
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        let mut events = Vec::new();
        with_pool!(&self.db, pool => {
            // The window starts after the newest heartbeat received before it: both look-ups walk
            // the UNIQUE (server_id, seq) index over the window only, however long the history.
            let heartbeats = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {HEARTBEAT_COLUMNS} FROM heartbeats \
                 WHERE server_id = $1 AND received_at_ms >= $2 AND seq > COALESCE(( \
                 SELECT seq FROM heartbeats WHERE server_id = $1 AND received_at_ms < $2 \
                 ORDER BY seq DESC LIMIT 1), -1) ORDER BY seq"
            )))
            .bind(server_id)
            .bind(since_ms)
            .fetch_all(pool)
            .await?;
            let rejections = sqlx::query(
                "SELECT seq, received_at_ms, code FROM rejections WHERE claimed_server_id = $1 \
                 AND seq IS NOT NULL AND received_at_ms >= $2 ORDER BY seq",
            )
            .bind(server_id)
            .bind(since_ms)
            .fetch_all(pool)
            .await?;
            events.reserve(heartbeats.len() + rejections.len());
            for row in &heartbeats {
                events.push(HistoryEvent::Heartbeat(heartbeat_row!(row)));
            }
            for row in &rejections {
                events.push(HistoryEvent::Rejected {
                    seq: row.try_get("seq")?,
                    received_at_ms: row.try_get("received_at_ms")?,
                    code: row.try_get("code")?,
                });
            }
        });
        events.sort_by_key(HistoryEvent::seq);
        self.merge_host_gaps(&mut events).await?;
        Ok(events)
    }

    /// Inserts the host gaps that ended after the first of `events` (the server had an event
    /// before them), each before the first event received at or after its end.
    async fn merge_host_gaps(&self, events: &mut Vec<HistoryEvent>) -> Result<(), StoreError> {
        let Some(first) = events.first().map(HistoryEvent::at_ms) else {
            return Ok(());
        };
        let gaps = self.host_gaps(first).await?;
        if gaps.is_empty() {
            return Ok(());
        }
        let mut merged = Vec::with_capacity(events.len() + gaps.len());
        let mut gaps = gaps.into_iter().peekable();
        for event in events.drain(..) {
            while let Some(&(down_at_ms, up_at_ms)) = gaps.peek() {
                if up_at_ms > event.at_ms() {
                    break;
                }
                merged.push(HistoryEvent::HostResumed {
                    after_seq: merged.last().map_or(event.seq() - 1, HistoryEvent::seq),
                    down_at_ms,
                    up_at_ms,
                });
                gaps.next();
            }
            merged.push(event);
        }
        let after_seq = merged.last().map_or(0, HistoryEvent::seq);
        merged.extend(
            gaps.map(|(down_at_ms, up_at_ms)| HistoryEvent::HostResumed {
                after_seq,
                down_at_ms,
                up_at_ms,
            }),
        );
        *events = merged;
        Ok(())
    }

    /// The events a rebuild replays: every folded event with `received_at_ms` in
    /// `[newest − window, newest]` (newest = the server's latest event), plus the last heartbeat
    /// before that window (it still covers minutes inside it), in sequence order.
    /// `window_ms = 0` means the whole history.
    pub async fn replay_history(
        &self,
        server_id: &str,
        window_ms: i64,
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        if window_ms <= 0 {
            return self.history(server_id, i64::MIN).await;
        }
        let mut events = Vec::new();
        let since = with_pool!(&self.db, pool => {
            // The newest event: the last heartbeat by seq (an index look-up), or a later rejection.
            let newest: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(t) FROM (\
                 SELECT (SELECT received_at_ms FROM heartbeats WHERE server_id = $1 \
                 ORDER BY seq DESC LIMIT 1) AS t UNION ALL \
                 SELECT MAX(received_at_ms) FROM rejections \
                 WHERE claimed_server_id = $1 AND seq IS NOT NULL) newest",
            )
            .bind(server_id)
            .fetch_one(pool)
            .await?;
            let Some(newest) = newest else {
                return Ok(Vec::new());
            };
            let since = newest.saturating_sub(window_ms);
            let before = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {HEARTBEAT_COLUMNS} FROM heartbeats WHERE server_id = $1 \
                 AND received_at_ms < $2 ORDER BY seq DESC LIMIT 1"
            )))
            .bind(server_id)
            .bind(since)
            .fetch_optional(pool)
            .await?;
            if let Some(row) = before {
                events.push(HistoryEvent::Heartbeat(heartbeat_row!(row)));
            }
            since
        });
        events.extend(self.history(server_id, since).await?);
        Ok(events)
    }

    /// Transitions of every server with `id > after_id`, oldest first, optionally only one
    /// server's or one cluster's (the live stream's replay after `Last-Event-ID`).
    pub async fn transitions_after(
        &self,
        after_id: i64,
        server_id: Option<&str>,
        cluster_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ClusterTransition>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT t.id, t.server_id, t.at_ms, t.cause, t.from_status, t.to_status, \
                 t.from_confidence, t.to_confidence, t.policy_digest, s.cluster_id \
                 FROM status_transitions t LEFT JOIN servers s ON s.server_id = t.server_id \
                 WHERE t.id > $1 AND (CAST($2 AS TEXT) IS NULL OR t.server_id = $2) \
                 AND (CAST($3 AS TEXT) IS NULL OR s.cluster_id = $3) ORDER BY t.id LIMIT $4",
            )
            .bind(after_id)
            .bind(server_id)
            .bind(cluster_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(ClusterTransition {
                    transition: transition_row!(r),
                    cluster_id: r.try_get("cluster_id")?,
                });
            }
            Ok(out)
        })
    }

    /// The newest `limit` transitions of a cluster's servers that are not retired, newest
    /// first (a status page's timeline).
    pub async fn cluster_transitions(
        &self,
        cluster_id: &str,
        limit: u32,
    ) -> Result<Vec<StoredTransition>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT t.id, t.server_id, t.at_ms, t.cause, t.from_status, t.to_status, \
                 t.from_confidence, t.to_confidence, t.policy_digest \
                 FROM status_transitions t JOIN servers s ON s.server_id = t.server_id \
                 WHERE s.cluster_id = $1 AND s.retired_at_ms IS NULL ORDER BY t.id DESC LIMIT $2",
            )
            .bind(cluster_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(transition_row!(r));
            }
            Ok(out)
        })
    }

    /// The digest of the most recent activation.
    pub async fn active_policy_digest(&self) -> Result<Option<String>, StoreError> {
        Ok(with_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT to_digest FROM policy_activations ORDER BY id DESC LIMIT 1"
        )
        .fetch_optional(pool)
        .await?))
    }

    /// Every stored policy version, newest upload first (without bytes).
    pub async fn list_policies(&self) -> Result<Vec<PolicySummary>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT digest, name, version, size_bytes, uploaded_by, uploaded_at_ms, signer \
                 FROM policies ORDER BY uploaded_at_ms DESC, digest",
            )
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(PolicySummary {
                    digest: r.try_get("digest")?,
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    size_bytes: r.try_get("size_bytes")?,
                    uploaded_by: r.try_get("uploaded_by")?,
                    uploaded_at_ms: r.try_get("uploaded_at_ms")?,
                    signer: r.try_get("signer")?,
                });
            }
            Ok(out)
        })
    }

    /// One stored policy version by digest.
    pub async fn load_policy(&self, digest: &str) -> Result<Option<PolicyRecord>, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {POLICY_COLUMNS} FROM policies WHERE digest = $1"
            )))
            .bind(digest)
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                Some(r) => Some(policy_row!(r)),
                None => None,
            })
        })
    }

    /// The most recently uploaded version with this name and version.
    pub async fn find_policy(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {POLICY_COLUMNS} FROM policies WHERE name = $1 AND version = $2 \
                 ORDER BY uploaded_at_ms DESC LIMIT 1"
            )))
            .bind(name)
            .bind(version)
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                Some(r) => Some(policy_row!(r)),
                None => None,
            })
        })
    }

    /// The most recent activations, newest first.
    pub async fn activations(&self, limit: u32) -> Result<Vec<StoredActivation>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT id, at_ms, who, from_digest, to_digest, reason FROM policy_activations \
                 ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(StoredActivation {
                    id: r.try_get("id")?,
                    at_ms: r.try_get("at_ms")?,
                    who: r.try_get("who")?,
                    from_digest: r.try_get("from_digest")?,
                    to_digest: r.try_get("to_digest")?,
                    reason: r.try_get("reason")?,
                });
            }
            Ok(out)
        })
    }

    /// A server's key history, oldest first.
    pub async fn server_keys(&self, server_id: &str) -> Result<Vec<ServerKeyRow>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT key_version, public_key, fingerprint, added_at_ms, added_by \
                 FROM server_keys WHERE server_id = $1 ORDER BY key_version",
            )
            .bind(server_id)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(ServerKeyRow {
                    key_version: u32::try_from(r.try_get::<i64, _>("key_version")?)
                        .map_err(|e| StoreError::Corrupt(format!("key_version: {e}")))?,
                    public_key: r.try_get("public_key")?,
                    fingerprint: r.try_get("fingerprint")?,
                    added_at_ms: r.try_get("added_at_ms")?,
                    added_by: r.try_get("added_by")?,
                });
            }
            Ok(out)
        })
    }

    /// A page of the rejection audit trail, newest first.
    pub async fn rejections(
        &self,
        query: &RejectionQuery,
    ) -> Result<Vec<StoredRejection>, StoreError> {
        with_pool!(&self.db, pool => {
            let mut sql = QueryBuilder::new(
                "SELECT id, received_at_ms, code, http_status, detail, claimed_server_id, seq, \
                 source_ip, body_sha256 FROM rejections WHERE id < ",
            );
            sql.push_bind(query.before_id.unwrap_or(i64::MAX));
            if let Some(server) = &query.server_id {
                sql.push(" AND claimed_server_id = ").push_bind(server.clone());
            }
            if let Some(code) = &query.code {
                sql.push(" AND code = ").push_bind(code.clone());
            }
            if let Some(since) = query.since_ms {
                sql.push(" AND received_at_ms >= ").push_bind(since);
            }
            sql.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(query.limit));
            let rows = sql.build().fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(StoredRejection {
                    id: r.try_get("id")?,
                    received_at_ms: r.try_get("received_at_ms")?,
                    code: r.try_get("code")?,
                    http_status: u16::try_from(r.try_get::<i64, _>("http_status")?)
                        .map_err(|e| StoreError::Corrupt(format!("http_status: {e}")))?,
                    detail: r.try_get("detail")?,
                    claimed_server_id: r.try_get("claimed_server_id")?,
                    seq: r.try_get("seq")?,
                    source_ip: r.try_get("source_ip")?,
                    body_sha256: r.try_get("body_sha256")?,
                });
            }
            Ok(out)
        })
    }

    /// A page of a server's heartbeats, newest first, with `seq < before_seq`.
    pub async fn heartbeats(
        &self,
        server_id: &str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredHeartbeat>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT id, {HEARTBEAT_COLUMNS} FROM heartbeats WHERE server_id = $1 AND seq < $2 \
                 ORDER BY seq DESC LIMIT $3"
            )))
            .bind(server_id)
            .bind(before_seq.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(StoredHeartbeat {
                    id: r.try_get("id")?,
                    row: heartbeat_row!(r),
                });
            }
            Ok(out)
        })
    }

    /// A page of a server's transitions, newest first, with `id < before_id`.
    pub async fn transitions(
        &self,
        server_id: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredTransition>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT id, server_id, at_ms, cause, from_status, to_status, from_confidence, \
                 to_confidence, policy_digest FROM status_transitions \
                 WHERE server_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(server_id)
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(transition_row!(r));
            }
            Ok(out)
        })
    }

    /// A server's closed rollup buckets of `span` starting at or after `from_ms`, oldest
    /// first (at most a window's worth: callers ask for 90 days of days or a day of hours).
    pub async fn rollups(
        &self,
        server_id: &str,
        span: RollupSpan,
        from_ms: i64,
    ) -> Result<Vec<RollupRow>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT server_id, span, start_ms, observed_ms, online_ms, quality_sum, beats, \
                 rejections, policy_digest FROM rollups \
                 WHERE server_id = $1 AND span = $2 AND start_ms >= $3 \
                 ORDER BY start_ms LIMIT 2200",
            )
            .bind(server_id)
            .bind(span.as_str())
            .bind(from_ms)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let span: String = r.try_get("span")?;
                out.push(RollupRow {
                    server_id: r.try_get("server_id")?,
                    span: RollupSpan::parse(&span)
                        .ok_or_else(|| StoreError::Corrupt(format!("rollup span {span:?}")))?,
                    start_ms: r.try_get("start_ms")?,
                    sums: RollupSums {
                        observed_ms: r.try_get("observed_ms")?,
                        online_ms: r.try_get("online_ms")?,
                        quality_sum: r.try_get("quality_sum")?,
                        beats: r.try_get("beats")?,
                        rejections: r.try_get("rejections")?,
                    },
                    policy_digest: r.try_get("policy_digest")?,
                });
            }
            Ok(out)
        })
    }

    /// Every registered server with its snapshot (the engine's working set at start-up).
    pub async fn load_servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SERVER_COLUMNS} FROM servers")))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(server_row!(row)?);
            }
            Ok(out)
        })
    }

    /// One server.
    pub async fn get_server(&self, server_id: &str) -> Result<Option<ServerRecord>, StoreError> {
        with_pool!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SERVER_COLUMNS} FROM servers WHERE server_id = $1"
            )))
            .bind(server_id)
            .fetch_optional(pool)
            .await?;
            match row {
                Some(row) => Ok(Some(server_row!(row)?)),
                None => Ok(None),
            }
        })
    }

    /// A page of the directory: filtered, in one sort order, after a keyset cursor.
    pub async fn list_servers(&self, query: &ServerQuery) -> Result<Vec<ServerRecord>, StoreError> {
        // Sort keys are numbers (NULLs ranked as -1) so one keyset cursor shape serves all.
        let key = match query.sort {
            ServerSort::Quality => "quality_score",
            ServerSort::Uptime => "uptime_percent",
            ServerSort::Players => "CAST(COALESCE(players_current, -1) AS DOUBLE PRECISION)",
            ServerSort::LastSeen => "CAST(COALESCE(last_seen_at_ms, -1) AS DOUBLE PRECISION)",
            ServerSort::Id => "CAST(0 AS DOUBLE PRECISION)",
        };
        with_pool!(&self.db, pool => {
            let mut q = QueryBuilder::new(format!(
                "SELECT {SERVER_COLUMNS} FROM servers WHERE retired_at_ms IS NULL"
            ));
            if let Some(status) = &query.status {
                q.push(" AND status = ").push_bind(status.clone());
            }
            if let Some(cluster) = &query.cluster {
                q.push(" AND cluster_id = ").push_bind(cluster.clone());
            }
            if let Some(text) = &query.search {
                let escaped: String = text
                    .to_lowercase()
                    .chars()
                    .flat_map(|c| match c {
                        '%' | '_' | '\\' => vec!['\\', c],
                        c => vec![c],
                    })
                    .collect();
                let pattern = format!("%{escaped}%");
                q.push(" AND (LOWER(server_id) LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR LOWER(COALESCE(display_name, '')) LIKE ")
                    .push_bind(pattern)
                    .push(" ESCAPE '\\')");
            }
            match query.paused {
                Some(true) => {
                    q.push(" AND paused_at_ms IS NOT NULL");
                }
                Some(false) => {
                    q.push(" AND paused_at_ms IS NULL");
                }
                None => {}
            }
            if let Some(confidence) = &query.confidence {
                q.push(" AND confidence = ").push_bind(confidence.clone());
            }
            if let Some(verified) = query.verified {
                q.push(" AND is_verified = ").push_bind(verified);
            }
            if let Some((value, id)) = &query.after {
                q.push(format!(" AND ({key} < "))
                    .push_bind(*value)
                    .push(format!(" OR ({key} = "))
                    .push_bind(*value)
                    .push(" AND server_id > ")
                    .push_bind(id.clone())
                    .push("))");
            }
            q.push(format!(" ORDER BY {key} DESC, server_id ASC LIMIT "))
                .push_bind(i64::from(query.limit));
            let rows = q.build().fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(server_row!(row)?);
            }
            Ok(out)
        })
    }

    /// Cheap liveness probe of the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }
}

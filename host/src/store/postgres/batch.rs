//! One PostgreSQL batch: every table's rows travel as arrays (`INSERT … SELECT FROM UNNEST`),
//! one statement per table, inside the transaction [`super::PostgresStore`] opened (usually by
//! `lock_servers`) and commits.
//!
//! The snapshot update is conditional on the previous `event_seq`, so two commits can never
//! hand out the same sequence number even without the row locks (the partitioned `heartbeats`
//! cannot declare `UNIQUE (server_id, seq)`, see the migration).

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};

use crate::store::{
    AlertRow, CommitReceipt, HeartbeatRow, RejectionRow, RollupRow, Snapshot, SnapshotRow,
    StoreError, TransitionRow, WriteBatch,
};

/// The transaction a batch is written in.
type Tx = Transaction<'static, Postgres>;

/// Writes every table of `batch` in `tx` (which the caller commits or rolls back).
pub(super) async fn write(tx: &mut Tx, batch: &WriteBatch) -> Result<CommitReceipt, StoreError> {
    let mut receipt = CommitReceipt::default();
    if !batch.heartbeats.is_empty() {
        insert_heartbeats(tx, &batch.heartbeats).await?;
    }
    if !batch.rejections.is_empty() {
        insert_rejections(tx, &batch.rejections).await?;
    }
    if !batch.transitions.is_empty() {
        receipt.transition_ids = insert_transitions(tx, &batch.transitions).await?;
    }
    if !batch.alerts.is_empty() {
        insert_alerts(tx, &batch.alerts).await?;
    }
    if !batch.rollups.is_empty() {
        insert_rollups(tx, &batch.rollups).await?;
    }
    if !batch.snapshots.is_empty() {
        update_snapshots(tx, &batch.snapshots, &previous_event_seqs(batch)).await?;
    }
    Ok(receipt)
}

/// Appends the accepted heartbeats.
async fn insert_heartbeats(tx: &mut Tx, h: &[HeartbeatRow]) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO heartbeats (server_id, seq, received_at_ms, sent_at_ms, key_version, \
             signature, body, policy_digest, auth, original_body) SELECT * FROM UNNEST($1::text[], \
             $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::text[], $7::text[], $8::text[], \
             $9::text[], $10::text[])",
    )
    .bind(h.iter().map(|r| r.server_id.clone()).collect::<Vec<_>>())
    .bind(h.iter().map(|r| r.seq).collect::<Vec<_>>())
    .bind(h.iter().map(|r| r.received_at_ms).collect::<Vec<_>>())
    .bind(h.iter().map(|r| r.sent_at_ms).collect::<Vec<_>>())
    .bind(
        h.iter()
            .map(|r| i64::from(r.key_version))
            .collect::<Vec<_>>(),
    )
    .bind(h.iter().map(|r| r.signature.clone()).collect::<Vec<_>>())
    .bind(h.iter().map(|r| r.body.clone()).collect::<Vec<_>>())
    .bind(
        h.iter()
            .map(|r| r.policy_digest.clone())
            .collect::<Vec<_>>(),
    )
    .bind(h.iter().map(|r| r.auth.as_str()).collect::<Vec<_>>())
    .bind(
        h.iter()
            .map(|r| r.original_body.clone())
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends the refused requests.
async fn insert_rejections(tx: &mut Tx, r: &[RejectionRow]) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO rejections (received_at_ms, code, http_status, detail, \
             claimed_server_id, seq, source_ip, body_sha256) SELECT * FROM UNNEST( \
             $1::int8[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::int8[], \
             $7::text[], $8::text[])",
    )
    .bind(r.iter().map(|r| r.received_at_ms).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.code.clone()).collect::<Vec<_>>())
    .bind(
        r.iter()
            .map(|r| i64::from(r.http_status))
            .collect::<Vec<_>>(),
    )
    .bind(r.iter().map(|r| r.detail.clone()).collect::<Vec<_>>())
    .bind(
        r.iter()
            .map(|r| r.claimed_server_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(r.iter().map(|r| r.seq).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.source_ip.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.body_sha256.clone()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends the transitions; their ids, in the order of `t`.
async fn insert_transitions(tx: &mut Tx, t: &[TransitionRow]) -> Result<Vec<i64>, StoreError> {
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO status_transitions (server_id, at_ms, cause, from_status, to_status, \
             from_confidence, to_confidence, policy_digest) SELECT * FROM UNNEST( \
             $1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[]) RETURNING id",
    )
    .bind(t.iter().map(|t| t.server_id.clone()).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.at_ms).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.cause.clone()).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.from_status.clone()).collect::<Vec<_>>())
    .bind(t.iter().map(|t| t.to_status.clone()).collect::<Vec<_>>())
    .bind(
        t.iter()
            .map(|t| t.from_confidence.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        t.iter()
            .map(|t| t.to_confidence.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        t.iter()
            .map(|t| t.policy_digest.clone())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut **tx)
    .await?;
    // Identity values follow the UNNEST order; sorted, they line up with `t`.
    ids.sort_unstable();
    Ok(ids)
}

/// Appends the alerts to the outbox.
async fn insert_alerts(tx: &mut Tx, a: &[AlertRow]) -> Result<(), StoreError> {
    let text = |f: &dyn Fn(&AlertRow) -> String| a.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO alert_outbox (server_id, cluster_id, kind, severity, at_ms, summary, \
             details, policy_digest) SELECT * FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::text[])",
    )
    .bind(text(&|a| a.server_id.clone()))
    .bind(a.iter().map(|a| a.cluster_id.clone()).collect::<Vec<_>>())
    .bind(text(&|a| a.kind.clone()))
    .bind(text(&|a| a.severity.clone()))
    .bind(a.iter().map(|a| a.at_ms).collect::<Vec<_>>())
    .bind(text(&|a| a.summary.clone()))
    .bind(text(&|a| a.details.clone()))
    .bind(text(&|a| a.policy_digest.clone()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends the closed rollup buckets (a bucket already written keeps its first row).
async fn insert_rollups(tx: &mut Tx, r: &[RollupRow]) -> Result<(), StoreError> {
    let int = |f: &dyn Fn(&RollupRow) -> i64| -> Vec<i64> { r.iter().map(f).collect() };
    sqlx::query(
        "INSERT INTO rollups (server_id, span, start_ms, observed_ms, online_ms, quality_sum, \
             beats, rejections, policy_digest) SELECT * FROM UNNEST($1::text[], $2::text[], \
             $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::text[]) \
             ON CONFLICT DO NOTHING",
    )
    .bind(r.iter().map(|r| r.server_id.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.span.as_str()).collect::<Vec<_>>())
    .bind(int(&|r| r.start_ms))
    .bind(int(&|r| r.sums.observed_ms))
    .bind(int(&|r| r.sums.online_ms))
    .bind(int(&|r| r.sums.quality_sum))
    .bind(int(&|r| r.sums.beats))
    .bind(int(&|r| r.sums.rejections))
    .bind(
        r.iter()
            .map(|r| r.policy_digest.clone())
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The `event_seq` each server's snapshot started from, for the servers whose events this
/// batch folds: every event folded in this batch took the next number, so it is the new
/// `event_seq` minus the batch's events (servers absent here folded none).
fn previous_event_seqs(batch: &WriteBatch) -> HashMap<&str, i64> {
    let mut events: HashMap<&str, i64> = HashMap::new();
    for h in &batch.heartbeats {
        *events.entry(h.server_id.as_str()).or_default() += 1;
    }
    for r in &batch.rejections {
        if let (Some(id), Some(_)) = (&r.claimed_server_id, r.seq) {
            *events.entry(id.as_str()).or_default() += 1;
        }
    }
    events
}

/// Overwrites the snapshots, each only if its `event_seq` is still the one it started from
/// (`events`: the events this batch folded per server); `Conflict` if any changed under it.
async fn update_snapshots(
    tx: &mut Tx,
    s: &[SnapshotRow],
    events: &HashMap<&str, i64>,
) -> Result<(), StoreError> {
    let snap = |f: &dyn Fn(&Snapshot) -> Option<String>| -> Vec<Option<String>> {
        s.iter().map(|row| f(&row.snapshot)).collect()
    };
    let int = |f: &dyn Fn(&Snapshot) -> Option<i64>| -> Vec<Option<i64>> {
        s.iter().map(|row| f(&row.snapshot)).collect()
    };
    let updated = sqlx::query(
        "UPDATE servers SET status = v.status, confidence = v.confidence, \
             uptime_percent = v.uptime_percent, quality_score = v.quality_score, \
             scores = v.scores, badges = v.badges, last_seen_at_ms = v.last_seen_at_ms, \
             last_sent_at_ms = v.last_sent_at_ms, last_signature = v.last_signature, \
             players_current = v.players_current, players_capacity = v.players_capacity, \
             map_name = v.map_name, agent_version = v.agent_version, \
             event_seq = v.event_seq, evaluated_at_ms = v.evaluated_at_ms, \
             policy_name = v.policy_name, policy_version = v.policy_version, \
             policy_digest = v.policy_digest, policy_state = v.policy_state, \
             next_check_at_ms = v.next_check_at_ms, policy_errors = v.policy_errors, \
             rollup = v.rollup \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], \
             $6::text[], $7::text[], $8::int8[], $9::int8[], $10::text[], $11::int8[], \
             $12::int8[], $13::text[], $14::text[], $15::int8[], $16::int8[], $17::text[], \
             $18::text[], $19::text[], $20::bytea[], $21::int8[], $22::int8[], $23::int8[], \
             $24::text[]) \
             AS v(server_id, status, confidence, uptime_percent, quality_score, scores, \
             badges, last_seen_at_ms, last_sent_at_ms, last_signature, players_current, \
             players_capacity, map_name, agent_version, event_seq, evaluated_at_ms, \
             policy_name, policy_version, policy_digest, policy_state, next_check_at_ms, \
             policy_errors, previous_event_seq, rollup) \
             WHERE servers.server_id = v.server_id \
             AND servers.event_seq = v.previous_event_seq",
    )
    .bind(s.iter().map(|r| r.server_id.clone()).collect::<Vec<_>>())
    .bind(snap(&|s| Some(s.status.clone())))
    .bind(snap(&|s| Some(s.confidence.clone())))
    .bind(
        s.iter()
            .map(|r| r.snapshot.uptime_percent)
            .collect::<Vec<_>>(),
    )
    .bind(
        s.iter()
            .map(|r| r.snapshot.quality_score)
            .collect::<Vec<_>>(),
    )
    .bind(snap(&|s| {
        Some(serde_json::to_string(&s.scores).unwrap_or_else(|_| "{}".into()))
    }))
    .bind(snap(&|s| {
        Some(serde_json::to_string(&s.badges).unwrap_or_else(|_| "[]".into()))
    }))
    .bind(int(&|s| s.last_seen_at_ms))
    .bind(int(&|s| s.last_sent_at_ms))
    .bind(snap(&|s| s.last_signature.clone()))
    .bind(int(&|s| s.players_current.map(i64::from)))
    .bind(int(&|s| s.players_capacity.map(i64::from)))
    .bind(snap(&|s| s.map_name.clone()))
    .bind(snap(&|s| s.agent_version.clone()))
    .bind(int(&|s| Some(s.event_seq)))
    .bind(int(&|s| s.evaluated_at_ms))
    .bind(snap(&|s| s.policy.as_ref().map(|p| p.name.clone())))
    .bind(snap(&|s| s.policy.as_ref().map(|p| p.version.clone())))
    .bind(snap(&|s| s.policy.as_ref().map(|p| p.digest.clone())))
    .bind(
        s.iter()
            .map(|r| r.snapshot.policy_state.clone())
            .collect::<Vec<_>>(),
    )
    .bind(int(&|s| s.next_check_at_ms))
    .bind(int(&|s| Some(s.policy_errors)))
    .bind(
        s.iter()
            .map(|r| r.snapshot.event_seq - events.get(r.server_id.as_str()).copied().unwrap_or(0))
            .collect::<Vec<_>>(),
    )
    .bind(snap(&|s| {
        s.rollup
            .as_ref()
            .and_then(|r| serde_json::to_string(r).ok())
    }))
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() != s.len() as u64 {
        return Err(StoreError::Conflict(
            "a snapshot changed under this batch (stale event_seq)".into(),
        ));
    }
    Ok(())
}

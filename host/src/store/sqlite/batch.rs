//! One SQLite batch in one multi-statement query, in either of two encodings of the same
//! statements: rows bound as one JSON array per table (the usual path: its text depends only
//! on which tables the batch touches, so SQLite prepares it once), or multi-row `VALUES` with
//! every value bound (for the rare batch JSON cannot carry exactly, see [`fits_json`]).
//!
//! Both run `BEGIN IMMEDIATE; … COMMIT;` as one query on the writer's connection; the caller
//! rolls back on failure.

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::store::{
    AlertRow, HeartbeatRow, RejectionRow, RollupRow, StoreError, TransitionRow, WriteBatch,
};

/// Rows per multi-row statement (SQLite allows 32,766 bound variables; snapshots bind 22).
const ROWS_PER_STATEMENT: usize = 500;

/// Runs `batch` on `conn` in one transaction; the ids of its transitions, in no order.
pub(super) async fn run(
    conn: &mut SqliteConnection,
    batch: &WriteBatch,
) -> Result<Vec<i64>, StoreError> {
    // The whole batch is ONE multi-statement query (sqlx-sqlite binds the arguments across
    // its statements), so the writer hands it to the connection's worker thread once
    // instead of once per statement plus BEGIN and COMMIT.
    let ids = if fits_json(batch) {
        // Rows travel as one JSON array per table: the text depends only on which tables
        // the batch touches, so its statements are prepared once and cached.
        let (sql, args) = json_batch(batch)?;
        let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
        for arg in args {
            query = query.bind(arg);
        }
        query.fetch_all(&mut *conn).await?
    } else {
        let mut q = values_batch(batch);
        // Not kept in the statement cache: the text differs with every batch size.
        q.build_query_scalar::<i64>()
            .persistent(false)
            .fetch_all(&mut *conn)
            .await?
    };
    Ok(ids)
}

/// Whether [`json_batch`] carries this batch exactly. Integers and text survive JSON as they
/// are; a REAL goes through SQLite's JSON number parser, which returns the same `f64` for every
/// magnitude between 1e-30 and 1e30 (pinned by a test) but can miss the last bit outside it.
pub(super) fn fits_json(batch: &WriteBatch) -> bool {
    let exact = |x: f64| x == 0.0 || (1e-30..=1e30).contains(&x.abs());
    batch
        .snapshots
        .iter()
        .all(|r| exact(r.snapshot.uptime_percent) && exact(r.snapshot.quality_score))
}

/// One batch as statements whose text depends only on which tables it touches, each reading
/// its rows from one bound JSON array (`json_each`): SQLite parses the statements once (the
/// `VALUES` form re-parsed ≈ 30 placeholders per heartbeat on every commit, a fifth of the
/// writer's time), and `OR ROLLBACK` spares it a statement journal (any failure fails the
/// whole batch anyway).
fn json_batch(batch: &WriteBatch) -> Result<(String, Vec<String>), StoreError> {
    let json = |v: &dyn json_rows::Rows| {
        v.to_json()
            .map_err(|e| StoreError::Corrupt(format!("batch not serialisable: {e}")))
    };
    let mut sql = String::from("BEGIN IMMEDIATE; ");
    let mut args = Vec::with_capacity(6);
    if !batch.heartbeats.is_empty() {
        push_insert::<HeartbeatRow>(&mut sql, "heartbeats", "");
        args.push(json(&batch.heartbeats)?);
    }
    if !batch.rejections.is_empty() {
        push_insert::<RejectionRow>(&mut sql, "rejections", "");
        args.push(json(&batch.rejections)?);
    }
    if !batch.transitions.is_empty() {
        // The only statement that returns rows.
        push_insert::<TransitionRow>(&mut sql, "status_transitions", " RETURNING id");
        args.push(json(&batch.transitions)?);
    }
    if !batch.alerts.is_empty() {
        push_insert::<AlertRow>(&mut sql, "alert_outbox", "");
        args.push(json(&batch.alerts)?);
    }
    if !batch.rollups.is_empty() {
        // A bucket is written once: a second write of it (a snapshot restored from before its
        // row) keeps the first. `WHERE true` tells SQLite's parser the upsert clause is not a
        // join's.
        push_insert::<RollupRow>(&mut sql, "rollups", " WHERE true ON CONFLICT DO NOTHING");
        args.push(json(&batch.rollups)?);
    }
    if !batch.snapshots.is_empty() {
        sql.push_str(
            "UPDATE OR ROLLBACK servers SET status = v.value->>1, confidence = v.value->>2, \
             uptime_percent = v.value->>3, scores = v.value->>5, badges = v.value->>6, \
             last_seen_at_ms = v.value->>7, last_sent_at_ms = v.value->>8, \
             last_signature = v.value->>9, players_current = v.value->>10, \
             players_capacity = v.value->>11, map_name = v.value->>12, \
             agent_version = v.value->>13, event_seq = v.value->>14, \
             evaluated_at_ms = v.value->>15, policy_name = v.value->>16, \
             policy_version = v.value->>17, policy_digest = v.value->>18, \
             policy_state = unhex(v.value->>19), next_check_at_ms = v.value->>20, \
             policy_errors = v.value->>21, rollup = v.value->>22 \
             FROM jsonb_each(?) AS v WHERE servers.server_id = v.value->>0; ",
        );
        // `quality_score` is indexed (the directory's default sort): set it only where it
        // changed, since SQLite rewrites an index entry for every row whose SET names it.
        sql.push_str(
            "UPDATE OR ROLLBACK servers SET quality_score = v.value->>4 \
             FROM jsonb_each(?) AS v WHERE servers.server_id = v.value->>0 \
             AND servers.quality_score IS NOT v.value->>4; ",
        );
        // Positional: sqlx numbers `?` across the statements of one query, so the second
        // statement gets its own copy.
        let rows = json(&batch.snapshots)?;
        args.push(rows.clone());
        args.push(rows);
    }
    sql.push_str("COMMIT;");
    Ok((sql, args))
}

/// `INSERT … SELECT` of one table's rows from the JSON array bound at the next `?`: columns
/// named as the row's fields, read by position.
fn push_insert<R: json_rows::Row>(sql: &mut String, table: &str, tail: &str) {
    use std::fmt::Write;
    let _ = write!(
        sql,
        "INSERT OR ROLLBACK INTO {table} ({}) SELECT ",
        R::COLUMNS.join(", ")
    );
    for i in 0..R::COLUMNS.len() {
        let _ = write!(sql, "{}value->>{i}", if i == 0 { "" } else { ", " });
    }
    let _ = write!(sql, " FROM jsonb_each(?){tail}; ");
}

/// Each batch table as a JSON array of row arrays, in the column order [`json_batch`] reads.
mod json_rows {
    use serde::ser::{SerializeTuple, Serializer};

    use crate::store::{
        AlertRow, HeartbeatRow, RejectionRow, RollupRow, SnapshotRow, TransitionRow,
    };

    /// A table's rows, serialisable as `[[col, ...], ...]`.
    pub trait Rows {
        fn to_json(&self) -> serde_json::Result<String>;
    }

    impl<T: Row> Rows for Vec<T> {
        fn to_json(&self) -> serde_json::Result<String> {
            let mut out = Vec::with_capacity(self.len() * 256);
            let mut ser = serde_json::Serializer::new(&mut out);
            ser.collect_seq(self.iter().map(AsTuple))?;
            // serde_json writes UTF-8 only.
            Ok(String::from_utf8(out).unwrap_or_default())
        }
    }

    /// One row's columns, in order.
    pub trait Row {
        /// The column each element fills, in order.
        const COLUMNS: &'static [&'static str];
        fn columns<T: SerializeTuple>(&self, t: &mut T) -> Result<(), T::Error>;
    }

    /// A row whose columns are its fields, same names, in this order.
    macro_rules! fields_row {
        ($ty:ty: $($field:ident),+) => {
            impl Row for $ty {
                const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),+];
                fn columns<T: SerializeTuple>(&self, t: &mut T) -> Result<(), T::Error> {
                    $(t.serialize_element(&self.$field)?;)+
                    Ok(())
                }
            }
        };
    }

    fields_row!(HeartbeatRow: server_id, seq, received_at_ms, sent_at_ms, key_version, signature,
        body, policy_digest, auth, original_body);
    fields_row!(RejectionRow: received_at_ms, code, http_status, detail, claimed_server_id, seq,
        source_ip, body_sha256);
    fields_row!(TransitionRow: server_id, at_ms, cause, from_status, to_status, from_confidence,
        to_confidence, policy_digest);
    fields_row!(AlertRow: server_id, cluster_id, kind, severity, at_ms, summary, details,
        policy_digest);

    impl Row for RollupRow {
        const COLUMNS: &'static [&'static str] = &[
            "server_id",
            "span",
            "start_ms",
            "observed_ms",
            "online_ms",
            "quality_sum",
            "beats",
            "rejections",
            "policy_digest",
        ];
        fn columns<T: SerializeTuple>(&self, t: &mut T) -> Result<(), T::Error> {
            t.serialize_element(&self.server_id)?;
            t.serialize_element(self.span.as_str())?;
            t.serialize_element(&self.start_ms)?;
            t.serialize_element(&self.sums.observed_ms)?;
            t.serialize_element(&self.sums.online_ms)?;
            t.serialize_element(&self.sums.quality_sum)?;
            t.serialize_element(&self.sums.beats)?;
            t.serialize_element(&self.sums.rejections)?;
            t.serialize_element(&self.policy_digest)
        }
    }

    struct AsTuple<'a, R>(&'a R);

    impl<R: Row> serde::Serialize for AsTuple<'_, R> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut t = s.serialize_tuple(R::COLUMNS.len())?;
            self.0.columns(&mut t)?;
            t.end()
        }
    }

    impl Row for SnapshotRow {
        // Read by position in `json_batch`'s UPDATE, not inserted by name.
        const COLUMNS: &'static [&'static str] = &[
            "server_id",
            "status",
            "confidence",
            "uptime_percent",
            "quality_score",
            "scores",
            "badges",
            "last_seen_at_ms",
            "last_sent_at_ms",
            "last_signature",
            "players_current",
            "players_capacity",
            "map_name",
            "agent_version",
            "event_seq",
            "evaluated_at_ms",
            "policy_name",
            "policy_version",
            "policy_digest",
            "policy_state",
            "next_check_at_ms",
            "policy_errors",
            "rollup",
        ];
        fn columns<T: SerializeTuple>(&self, t: &mut T) -> Result<(), T::Error> {
            use serde::ser::Error;
            let s = &self.snapshot;
            t.serialize_element(&self.server_id)?;
            t.serialize_element(&s.status)?;
            t.serialize_element(&s.confidence)?;
            t.serialize_element(&s.uptime_percent)?;
            t.serialize_element(&s.quality_score)?;
            // Stored as JSON text: a string inside the row array.
            t.serialize_element(&serde_json::to_string(&s.scores).map_err(T::Error::custom)?)?;
            t.serialize_element(&serde_json::to_string(&s.badges).map_err(T::Error::custom)?)?;
            t.serialize_element(&s.last_seen_at_ms)?;
            t.serialize_element(&s.last_sent_at_ms)?;
            t.serialize_element(&s.last_signature)?;
            t.serialize_element(&s.players_current)?;
            t.serialize_element(&s.players_capacity)?;
            t.serialize_element(&s.map_name)?;
            t.serialize_element(&s.agent_version)?;
            t.serialize_element(&s.event_seq)?;
            t.serialize_element(&s.evaluated_at_ms)?;
            t.serialize_element(&s.policy.as_ref().map(|p| &p.name))?;
            t.serialize_element(&s.policy.as_ref().map(|p| &p.version))?;
            t.serialize_element(&s.policy.as_ref().map(|p| &p.digest))?;
            // A BLOB column: hex here, `unhex()` in the statement. `encode_to_slice` writes
            // bytes; `hex::encode` collects `char`s one by one (≈ 1 % of the host's CPU).
            let state = match s.policy_state.as_deref() {
                None => None,
                Some(bytes) => {
                    let mut text = vec![0u8; bytes.len() * 2];
                    hex::encode_to_slice(bytes, &mut text).map_err(T::Error::custom)?;
                    Some(String::from_utf8(text).map_err(T::Error::custom)?)
                }
            };
            t.serialize_element(&state)?;
            t.serialize_element(&s.next_check_at_ms)?;
            t.serialize_element(&s.policy_errors)?;
            t.serialize_element(&super::rollup_text(s).map_err(T::Error::custom)?)
        }
    }
}

/// The snapshot's open rollup as stored (`servers.rollup`, JSON text).
fn rollup_text(s: &crate::store::Snapshot) -> serde_json::Result<Option<String>> {
    s.rollup.as_ref().map(serde_json::to_string).transpose()
}

/// The batch as multi-row `VALUES` statements with every value bound: the path for batches
/// [`json_batch`] cannot carry exactly. Its text differs with every batch size.
fn values_batch(batch: &WriteBatch) -> QueryBuilder<Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE; ");
    for chunk in batch.heartbeats.chunks(ROWS_PER_STATEMENT) {
        q.push(
                "INSERT OR ROLLBACK INTO heartbeats (server_id, seq, received_at_ms, sent_at_ms, key_version, \
                 signature, body, policy_digest, auth, original_body) ",
            );
        q.push_values(chunk, |mut b, h| {
            b.push_bind(&h.server_id)
                .push_bind(h.seq)
                .push_bind(h.received_at_ms)
                .push_bind(h.sent_at_ms)
                .push_bind(i64::from(h.key_version))
                .push_bind(&h.signature)
                .push_bind(&h.body)
                .push_bind(&h.policy_digest)
                .push_bind(h.auth.as_str())
                .push_bind(&h.original_body);
        });
        q.push("; ");
    }
    for chunk in batch.rejections.chunks(ROWS_PER_STATEMENT) {
        q.push(
            "INSERT OR ROLLBACK INTO rejections (received_at_ms, code, http_status, detail, \
                 claimed_server_id, seq, source_ip, body_sha256) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.received_at_ms)
                .push_bind(&r.code)
                .push_bind(i64::from(r.http_status))
                .push_bind(&r.detail)
                .push_bind(&r.claimed_server_id)
                .push_bind(r.seq)
                .push_bind(&r.source_ip)
                .push_bind(&r.body_sha256);
        });
        q.push("; ");
    }
    for chunk in batch.transitions.chunks(ROWS_PER_STATEMENT) {
        q.push(
                "INSERT OR ROLLBACK INTO status_transitions (server_id, at_ms, cause, from_status, to_status, \
                 from_confidence, to_confidence, policy_digest) ",
            );
        q.push_values(chunk, |mut b, t| {
            b.push_bind(&t.server_id)
                .push_bind(t.at_ms)
                .push_bind(&t.cause)
                .push_bind(&t.from_status)
                .push_bind(&t.to_status)
                .push_bind(&t.from_confidence)
                .push_bind(&t.to_confidence)
                .push_bind(&t.policy_digest);
        });
        // The only statement that returns rows.
        q.push(" RETURNING id; ");
    }
    for chunk in batch.alerts.chunks(ROWS_PER_STATEMENT) {
        q.push(
                "INSERT OR ROLLBACK INTO alert_outbox (server_id, cluster_id, kind, severity, at_ms, summary, \
                 details, policy_digest) ",
            );
        q.push_values(chunk, |mut b, a| {
            b.push_bind(&a.server_id)
                .push_bind(&a.cluster_id)
                .push_bind(&a.kind)
                .push_bind(&a.severity)
                .push_bind(a.at_ms)
                .push_bind(&a.summary)
                .push_bind(&a.details)
                .push_bind(&a.policy_digest);
        });
        q.push("; ");
    }
    for chunk in batch.rollups.chunks(ROWS_PER_STATEMENT) {
        q.push(
            "INSERT INTO rollups (server_id, span, start_ms, observed_ms, online_ms, \
                 quality_sum, beats, rejections, policy_digest) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(&r.server_id)
                .push_bind(r.span.as_str())
                .push_bind(r.start_ms)
                .push_bind(r.sums.observed_ms)
                .push_bind(r.sums.online_ms)
                .push_bind(r.sums.quality_sum)
                .push_bind(r.sums.beats)
                .push_bind(r.sums.rejections)
                .push_bind(&r.policy_digest);
        });
        q.push(" ON CONFLICT DO NOTHING; ");
    }
    for chunk in batch.snapshots.chunks(ROWS_PER_STATEMENT) {
        q.push(
            "WITH v(server_id, status, confidence, uptime_percent, quality_score, scores, \
                 badges, last_seen_at_ms, last_sent_at_ms, last_signature, players_current, \
                 players_capacity, map_name, agent_version, event_seq, evaluated_at_ms, \
                 policy_name, policy_version, policy_digest, policy_state, next_check_at_ms, \
                 policy_errors, rollup) AS (",
        );
        q.push_values(chunk, |mut b, row| {
            let s = &row.snapshot;
            b.push_bind(&row.server_id)
                .push_bind(&s.status)
                .push_bind(&s.confidence)
                .push_bind(s.uptime_percent)
                .push_bind(s.quality_score)
                .push_bind(serde_json::to_string(&s.scores).unwrap_or_else(|_| "{}".into()))
                .push_bind(serde_json::to_string(&s.badges).unwrap_or_else(|_| "[]".into()))
                .push_bind(s.last_seen_at_ms)
                .push_bind(s.last_sent_at_ms)
                .push_bind(&s.last_signature)
                .push_bind(s.players_current.map(i64::from))
                .push_bind(s.players_capacity.map(i64::from))
                .push_bind(&s.map_name)
                .push_bind(&s.agent_version)
                .push_bind(s.event_seq)
                .push_bind(s.evaluated_at_ms)
                .push_bind(s.policy.as_ref().map(|p| p.name.clone()))
                .push_bind(s.policy.as_ref().map(|p| p.version.clone()))
                .push_bind(s.policy.as_ref().map(|p| p.digest.clone()))
                .push_bind(&s.policy_state)
                .push_bind(s.next_check_at_ms)
                .push_bind(s.policy_errors)
                .push_bind(rollup_text(s).unwrap_or_default());
        });
        q.push(
            ") UPDATE OR ROLLBACK servers SET status = v.status, confidence = v.confidence, \
                 uptime_percent = v.uptime_percent, \
                 scores = v.scores, badges = v.badges, last_seen_at_ms = v.last_seen_at_ms, \
                 last_sent_at_ms = v.last_sent_at_ms, last_signature = v.last_signature, \
                 players_current = v.players_current, players_capacity = v.players_capacity, \
                 map_name = v.map_name, agent_version = v.agent_version, \
                 event_seq = v.event_seq, evaluated_at_ms = v.evaluated_at_ms, \
                 policy_name = v.policy_name, policy_version = v.policy_version, \
                 policy_digest = v.policy_digest, policy_state = v.policy_state, \
                 next_check_at_ms = v.next_check_at_ms, policy_errors = v.policy_errors, \
                 rollup = v.rollup FROM v WHERE servers.server_id = v.server_id",
        );
        // `quality_score` is indexed (the directory's default sort): set it only where it
        // changed, since SQLite rewrites an index entry for every row whose SET names it.
        q.push("; WITH v(server_id, quality_score) AS (");
        q.push_values(chunk, |mut b, row| {
            b.push_bind(&row.server_id)
                .push_bind(row.snapshot.quality_score);
        });
        q.push(
            ") UPDATE OR ROLLBACK servers SET quality_score = v.quality_score FROM v \
                 WHERE servers.server_id = v.server_id \
                 AND servers.quality_score IS NOT v.quality_score; ",
        );
    }
    q.push("COMMIT;");
    q
}

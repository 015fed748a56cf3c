//! The embedded SQLite backend (WAL, `synchronous = FULL`: an acknowledged batch survives a
//! power cut), for one host. A batch is one multi-statement query on a connection of its own
//! (`batch.rs`); a background task checkpoints the WAL between batches.

mod batch;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;

use super::{ActivationRow, Backend, CommitReceipt, NewServer, StoreError, WriteBatch};

/// A SQLite database holding Vigil's tables.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// sqlx pools are cheap-clone handles; WAL lets readers run beside the single writer.
    pool: SqlitePool,
    /// One connection kept for [`Backend::commit`], so the heartbeat writer finds its own page
    /// cache warm: a connection drops its cache whenever another one wrote, so batches spread
    /// over the shared pool re-read the same pages from the OS on every commit.
    writer: SqlitePool,
    /// Wakes the background checkpointer after a commit (see [`spawn_checkpointer`]).
    checkpoint: Arc<Notify>,
}

/// How long the background checkpointer waits after a commit before copying the write-ahead
/// log back into the database. Short, so each checkpoint copies little and its writes barely
/// overlap the commits' fsyncs: at 3,500 heartbeats/s, p99 went from 10–66 ms with 500 ms
/// to 7–8 ms with 25 ms (BENCHMARKS.md).
const CHECKPOINT_AFTER: Duration = Duration::from_millis(25);

/// The writer's own automatic checkpoint, in WAL pages (SQLite's default is 1,000). It only
/// acts if the background checkpointer falls far behind, so the log stays bounded (≈ 40 MiB).
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Creates the database file, if it does not exist yet, readable and writable by its owner
/// only (0600): it holds the host's command-signing key and the audit trail. SQLite gives the
/// `-wal` and `-shm` files it creates next to it the same mode. An existing file keeps the mode
/// its operator chose; `:memory:` databases have no file.
fn create_private(path: &std::path::Path) -> Result<(), StoreError> {
    if path.as_os_str().is_empty() || path == std::path::Path::new(":memory:") {
        return Ok(());
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(sqlx::Error::Io(e))),
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and runs the migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        create_private(options.get_filename())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(2))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        // A batch is one transaction of multi-row statements: each statement keeps a
        // statement journal to undo itself alone, held in memory rather than in a temp file.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.pragma("temp_store", "memory").pragma(
                "wal_autocheckpoint",
                WRITER_AUTOCHECKPOINT_PAGES.to_string(),
            ))
            .await?;
        let checkpoint = Arc::new(Notify::new());
        spawn_checkpointer(pool.clone(), Arc::clone(&checkpoint));
        Ok(Self {
            pool,
            writer,
            checkpoint,
        })
    }

    /// The pool the shared statements run on ([`super::Store`]'s reads and operations).
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Copies committed WAL frames into the database file from a pool connection, so the heartbeat
/// writer's commits never stop to checkpoint (SQLite otherwise runs one inside the commit that
/// crosses `wal_autocheckpoint`, stalling that batch for tens of milliseconds). A `PASSIVE`
/// checkpoint never blocks the writer or readers. It runs [`CHECKPOINT_AFTER`] after a commit
/// and not at all while nothing is written.
fn spawn_checkpointer(pool: SqlitePool, wake: Arc<Notify>) {
    tokio::spawn(async move {
        loop {
            wake.notified().await;
            tokio::time::sleep(CHECKPOINT_AFTER).await;
            if pool.is_closed() {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "background WAL checkpoint failed");
            }
        }
    });
}

#[async_trait]
impl Backend for SqliteStore {
    async fn close(&self) {
        // The writer's connection first: the last one to close checkpoints the WAL.
        self.writer.close().await;
        self.pool.close().await;
    }

    async fn insert_servers(
        &self,
        servers: &[NewServer],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut results = Vec::with_capacity(servers.len());
        for server in servers {
            let inserted = sqlx::query(
                "INSERT INTO servers (server_id, display_name, cluster_id, public_key, \
                 key_version, is_verified, registered_at_ms) VALUES (?, ?, ?, ?, 1, 0, ?) \
                 ON CONFLICT (server_id) DO NOTHING",
            )
            .bind(&server.server_id)
            .bind(&server.display_name)
            .bind(&server.cluster_id)
            .bind(&server.public_key)
            .bind(server.registered_at_ms)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                results.push(Err(StoreError::Conflict(format!(
                    "server {}",
                    server.server_id
                ))));
                continue;
            }
            sqlx::query(
                "INSERT INTO server_keys (server_id, key_version, public_key, fingerprint, \
                 added_at_ms, added_by) VALUES (?, 1, ?, ?, ?, ?)",
            )
            .bind(&server.server_id)
            .bind(&server.public_key)
            .bind(&server.fingerprint)
            .bind(server.registered_at_ms)
            .bind(&server.added_by)
            .execute(&mut *tx)
            .await?;
            results.push(Ok(()));
        }
        tx.commit().await?;
        Ok(results)
    }

    async fn set_verified(&self, server_id: &str, verified: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE servers SET is_verified = ? WHERE server_id = ?")
            .bind(verified)
            .bind(server_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn commit(&self, batch: &WriteBatch) -> Result<CommitReceipt, StoreError> {
        let mut receipt = CommitReceipt::default();
        if batch.is_empty() {
            return Ok(receipt);
        }
        let mut conn = self.writer.acquire().await?;
        match batch::run(&mut conn, batch).await {
            Ok(mut ids) => {
                // Ids of the single writer's inserts ascend in row order.
                ids.sort_unstable();
                receipt.transition_ids = ids;
                // Commits during the wait or the checkpoint leave a permit: it runs again.
                self.checkpoint.notify_one();
            }
            Err(e) => {
                // A statement failed inside the transaction: end it before the connection
                // goes back to the pool (an error if none is open, after OR ROLLBACK, is fine).
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(e);
            }
        }
        Ok(receipt)
    }

    async fn append_activation(&self, a: &ActivationRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO policy_activations (at_ms, who, from_digest, to_digest, reason) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(a.at_ms)
        .bind(&a.who)
        .bind(&a.from_digest)
        .bind(&a.to_digest)
        .bind(&a.reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::batch::fits_json as batch_fits_json;
    use super::*;
    use crate::store::{Db, HeartbeatRow, NewServer, Snapshot, SnapshotRow, Store};

    async fn store_with(ids: &[&str]) -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, 2).await.expect("opens");
        for id in ids {
            store
                .insert_server(&NewServer {
                    server_id: (*id).into(),
                    public_key: "k".into(),
                    fingerprint: "f".into(),
                    display_name: None,
                    cluster_id: None,
                    registered_at_ms: 1,
                    added_by: "test".into(),
                })
                .await
                .expect("registered");
        }
        (store, dir)
    }

    /// The SQLite pool behind `store`, to inspect tables.
    fn pool(store: &Store) -> SqlitePool {
        match store.pool_for_tests() {
            Db::Sqlite(pool) => pool,
            Db::Postgres(_) => unreachable!("a sqlite:// URL opens SQLite"),
        }
    }

    fn heartbeat(id: &str, seq: i64) -> HeartbeatRow {
        HeartbeatRow {
            server_id: id.into(),
            seq,
            received_at_ms: 1_000 + seq,
            sent_at_ms: 1_000 + seq,
            key_version: 1,
            signature: String::new(),
            body: "{}".into(),
            policy_digest: "sha256:test".into(),
            auth: crate::store::AuthKind::Network,
            original_body: None,
        }
    }

    fn snapshot(id: &str, seq: i64, quality: f64) -> SnapshotRow {
        let mut snapshot = Snapshot::unseen();
        snapshot.event_seq = seq;
        snapshot.quality_score = quality;
        SnapshotRow {
            server_id: id.into(),
            snapshot,
        }
    }

    /// Every column filled with awkward values: quotes, backslashes, control escapes, non-ASCII
    /// text, a state blob with zero bytes, absent optionals.
    fn awkward_snapshot(id: &str, seq: i64, uptime: f64, quality: f64) -> SnapshotRow {
        let mut s = Snapshot::unseen();
        s.status = "online".into();
        s.confidence = "green".into();
        s.uptime_percent = uptime;
        s.quality_score = quality;
        s.scores =
            std::collections::BTreeMap::from([("a\"b".to_owned(), 1.5), ("z".to_owned(), -0.0)])
                .into();
        s.badges = vec!["é\\n".into(), "\u{1F600}".into()];
        s.last_seen_at_ms = Some(i64::MAX);
        s.last_sent_at_ms = Some(-1);
        s.last_signature = Some("sig+/=".into());
        s.players_current = Some(u32::MAX);
        s.players_capacity = None;
        s.map_name = Some("The \"Island\"\t\u{7}".into());
        s.agent_version = None;
        s.event_seq = seq;
        s.evaluated_at_ms = Some(0);
        s.policy = Some(std::sync::Arc::new(crate::store::PolicyRef {
            name: "default".into(),
            version: "1.2.3".into(),
            digest: "sha256:00ff".into(),
        }));
        s.policy_state = Some(vec![0, 1, 0, 255, 0]);
        s.next_check_at_ms = None;
        s.policy_errors = 3;
        s.rollup = Some(crate::store::OpenRollup {
            at_ms: 7_200_001,
            hour_start_ms: 7_200_000,
            hour: crate::store::RollupSums {
                beats: 2,
                ..Default::default()
            },
            day: crate::store::RollupSums {
                observed_ms: 3_600_000,
                online_ms: 1,
                quality_sum: i64::MAX,
                beats: 0,
                rejections: 5,
            },
        });
        SnapshotRow {
            server_id: id.into(),
            snapshot: s,
        }
    }

    #[tokio::test]
    async fn every_column_reads_back_exactly_on_both_commit_paths() {
        let (store, _dir) = store_with(&["json", "values"]).await;
        let body = r#"{"map_name":"Z\u00fcrich \"north\"","note":"tab\there","emoji":"😀"}"#;
        let mut hb = heartbeat("json", 1);
        hb.body = body.into();
        hb.signature = "AAAA/+==".into();
        let json = awkward_snapshot("json", 1, 99.123_456_789_012_34, 1.0 / 3.0);
        // Below 1e-30: not carried by JSON, so the batch goes through bound VALUES.
        let values = awkward_snapshot("values", 1, 1e-300, 5e-324);
        for (hb, row) in [(hb, json), (heartbeat("values", 1), values)] {
            let rollup = crate::store::RollupRow {
                server_id: row.server_id.clone(),
                span: crate::store::RollupSpan::Day,
                start_ms: 86_400_000,
                sums: crate::store::RollupSums {
                    observed_ms: 86_400_000,
                    online_ms: 86_399_999,
                    quality_sum: i64::MAX,
                    beats: 3,
                    rejections: 4,
                },
                policy_digest: "sha256:\"r\"".into(),
            };
            let batch = WriteBatch {
                heartbeats: vec![hb.clone()],
                snapshots: vec![row.clone()],
                rollups: vec![rollup.clone()],
                ..WriteBatch::default()
            };
            assert_eq!(
                batch_fits_json(&batch),
                row.server_id == "json",
                "{}",
                row.server_id
            );
            store.commit(&batch).await.expect("commits");
            let back = store
                .get_server(&row.server_id)
                .await
                .expect("reads")
                .expect("exists");
            assert_eq!(back.snapshot, row.snapshot, "{}", row.server_id);
            let stored = store
                .heartbeats(&row.server_id, None, 10)
                .await
                .expect("history");
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0].row, hb, "{}", row.server_id);
            let rollups = store
                .rollups(&row.server_id, crate::store::RollupSpan::Day, 0)
                .await
                .expect("rollups");
            assert_eq!(rollups, vec![rollup.clone()], "{}", row.server_id);
            // A bucket is written once: writing it again keeps the first row.
            let mut again = rollup.clone();
            again.sums.beats = 99;
            let batch = WriteBatch {
                rollups: vec![again],
                ..WriteBatch::default()
            };
            store.commit(&batch).await.expect("commits");
            let rollups = store
                .rollups(&row.server_id, crate::store::RollupSpan::Day, 0)
                .await
                .expect("rollups");
            assert_eq!(rollups, vec![rollup], "{}", row.server_id);
        }
    }

    #[tokio::test]
    async fn transitions_rejections_and_alerts_read_back_exactly_from_json_rows() {
        let (store, _dir) = store_with(&["a"]).await;
        let transition = crate::store::TransitionRow {
            server_id: "a".into(),
            at_ms: 7,
            cause: "heartbeat".into(),
            from_status: "unknown".into(),
            to_status: "online".into(),
            from_confidence: "yellow".into(),
            to_confidence: "green".into(),
            policy_digest: "sha256:\"q\"".into(),
        };
        let rejection = crate::store::RejectionRow {
            received_at_ms: 8,
            code: "bad-signature".into(),
            http_status: 401,
            detail: "line\nbreak, \\ and é".into(),
            claimed_server_id: None,
            seq: Some(2),
            source_ip: Some("::1".into()),
            body_sha256: None,
        };
        let alert = crate::store::AlertRow {
            server_id: "a".into(),
            cluster_id: None,
            kind: "server_online".into(),
            severity: "recovery".into(),
            at_ms: 9,
            summary: "a is \"online\"".into(),
            details: r#"{"x":[1,2.5,"y"]}"#.into(),
            policy_digest: "sha256:q".into(),
        };
        let batch = WriteBatch {
            transitions: vec![transition.clone(), transition.clone()],
            rejections: vec![rejection.clone()],
            alerts: vec![alert.clone()],
            ..WriteBatch::default()
        };
        assert!(batch_fits_json(&batch));
        let receipt = store.commit(&batch).await.expect("commits");
        let stored = store.transitions("a", None, 10).await.expect("reads");
        let mut ids: Vec<i64> = stored.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        assert_eq!(receipt.transition_ids, ids);
        assert!(stored.iter().all(|t| t.row == transition));
        // Each stored row as a JSON array, to compare every column at once.
        let row = |sql: &'static str| {
            let pool = pool(&store);
            async move {
                let text: String = sqlx::query_scalar(sql).fetch_one(&pool).await.expect("row");
                serde_json::from_str::<serde_json::Value>(&text).expect("json")
            }
        };
        assert_eq!(
            row(
                "SELECT json_array(received_at_ms, code, http_status, detail, \
                 claimed_server_id, seq, source_ip, body_sha256) FROM rejections"
            )
            .await,
            serde_json::json!([
                8,
                rejection.code,
                401,
                rejection.detail,
                null,
                2,
                "::1",
                null
            ])
        );
        assert_eq!(
            row(
                "SELECT json_array(server_id, cluster_id, kind, severity, at_ms, summary, \
                 details, policy_digest) FROM alert_outbox"
            )
            .await,
            serde_json::json!([
                "a",
                null,
                alert.kind,
                alert.severity,
                9,
                alert.summary,
                alert.details,
                alert.policy_digest
            ])
        );
    }

    #[tokio::test]
    async fn sqlite_reads_every_json_real_in_the_carried_range_as_the_same_f64() {
        // `batch_fits_json` relies on this: pinned against the SQLite build we link.
        let (store, _dir) = store_with(&[]).await;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values = Vec::new();
        for i in 0..100_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mantissa = 1.0 + (x >> 11) as f64 / (1u64 << 53) as f64;
            let value = match i % 3 {
                // Log-uniform over the whole carried range, either sign.
                0 => mantissa * 10f64.powi((x % 61) as i32 - 30),
                1 => -mantissa * 10f64.powi((x % 59) as i32 - 29),
                // Percentages, the usual case.
                _ => (x >> 11) as f64 / (1u64 << 53) as f64 * 100.0,
            };
            let exact = value == 0.0 || (1e-30..=1e30).contains(&value.abs());
            if exact {
                values.push(value);
            }
        }
        let text = serde_json::to_string(&values).expect("serialises");
        let back: Vec<f64> = sqlx::query_scalar("SELECT value FROM jsonb_each(?) ORDER BY key")
            .bind(&text)
            .fetch_all(&pool(&store))
            .await
            .expect("reads");
        assert_eq!(back.len(), values.len());
        let differ: Vec<_> = values
            .iter()
            .zip(&back)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .take(5)
            .collect();
        assert!(differ.is_empty(), "{differ:?}");
    }

    #[tokio::test]
    async fn committed_batches_reach_the_database_file_without_a_checkpoint_in_the_commit() {
        let (store, dir) = store_with(&["a"]).await;
        let batch = WriteBatch {
            heartbeats: (1..=200).map(|seq| heartbeat("a", seq)).collect(),
            snapshots: vec![snapshot("a", 200, 10.0)],
            ..WriteBatch::default()
        };
        store.commit(&batch).await.expect("commit");
        // The writer's own auto-checkpoint is far away (10,000 pages) and nothing else writes:
        // the rows reach the main file (read here without its WAL) only through the background
        // checkpointer.
        use sqlx::Connection;
        let copy = dir.path().join("copy.db");
        let mut stored = 0;
        for _ in 0..100 {
            std::fs::copy(dir.path().join("t.db"), &copy).expect("copy the main file");
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", copy.display()))
                .expect("url");
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .expect("open the copy");
            stored = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM heartbeats")
                .fetch_one(&mut conn)
                .await
                .unwrap_or(0);
            if stored == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            stored, 200,
            "the WAL was never checkpointed into the database file"
        );
    }

    #[tokio::test]
    async fn a_failing_batch_stores_nothing_and_the_next_one_commits() {
        let (store, _dir) = store_with(&["a", "b"]).await;
        let first = WriteBatch {
            heartbeats: vec![heartbeat("a", 1)],
            snapshots: vec![snapshot("a", 1, 10.0)],
            ..WriteBatch::default()
        };
        store.commit(&first).await.expect("first batch");
        // Seq 1 of `a` again (UNIQUE (server_id, seq)) after a valid row of `b`: the whole batch
        // is refused, including `b`'s heartbeat and both snapshots.
        let failing = WriteBatch {
            heartbeats: vec![heartbeat("b", 1), heartbeat("a", 1)],
            snapshots: vec![snapshot("a", 2, 20.0), snapshot("b", 1, 20.0)],
            ..WriteBatch::default()
        };
        assert!(store.commit(&failing).await.is_err());
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM heartbeats")
            .fetch_one(&pool(&store))
            .await
            .expect("count");
        assert_eq!(count, 1);
        let a = store.get_server("a").await.expect("read").expect("a");
        assert_eq!((a.snapshot.event_seq, a.snapshot.quality_score), (1, 10.0));
        // No transaction was left open on a pooled connection: every later batch commits.
        for round in 0..4 {
            let next = WriteBatch {
                heartbeats: vec![heartbeat("b", round + 1)],
                snapshots: vec![snapshot("b", round + 1, 30.0)],
                ..WriteBatch::default()
            };
            store.commit(&next).await.expect("later batch");
        }
        let b = store.get_server("b").await.expect("read").expect("b");
        assert_eq!((b.snapshot.event_seq, b.snapshot.quality_score), (4, 30.0));
    }

    #[tokio::test]
    async fn quality_is_written_when_it_changes_and_kept_when_it_does_not() {
        let (store, _dir) = store_with(&["q"]).await;
        for (seq, quality) in [(1, 50.0), (2, 50.0), (3, 61.5), (4, 61.5)] {
            let batch = WriteBatch {
                heartbeats: vec![heartbeat("q", seq)],
                snapshots: vec![snapshot("q", seq, quality)],
                ..WriteBatch::default()
            };
            store.commit(&batch).await.expect("commits");
            let q = store.get_server("q").await.expect("read").expect("q");
            assert_eq!(
                (q.snapshot.event_seq, q.snapshot.quality_score),
                (seq, quality)
            );
        }
    }
}

//! Group commit: the batch being built ([`Pending`]), the batch whose commit runs in the
//! background ([`InFlight`]), and how a commit's outcome is applied — counters, live events and
//! the shadow's offer on success, restored snapshots on failure, every request answered.
//!
//! Commits stay in order: a batch is committed only after the one before it is settled, and a
//! batch folded on top of a failed one fails too. This module never folds an event (that is
//! `writer.rs`) and touches storage only to commit a batch or abandon a failed one.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::handle::{Reply, WriteError};
use super::shadow;
use super::writer::Writer;
use crate::store::{CommitReceipt, ServerRecord, Snapshot, SnapshotRow, StoreError, WriteBatch};

/// One batch being built: rows to write, snapshots before the batch touched them, answers.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) batch: WriteBatch,
    pub(super) before: HashMap<String, Snapshot>,
    pub(super) replies: Vec<Reply>,
    pub(super) accepted: u64,
    pub(super) duplicates: u64,
    /// Live events to publish once the batch is committed.
    pub(super) live: Vec<crate::live::LiveEvent>,
    /// Locking the batch's rows failed (shared backends): the batch fails without a commit.
    pub(super) lock_failure: Option<StoreError>,
    /// When the writer started folding this batch (for the `fold` phase metric).
    pub(super) started: Option<std::time::Instant>,
}

/// A batch whose commit runs in the background.
pub(super) struct InFlight {
    /// Its requests and bookkeeping (the batch itself is with the commit task).
    pub(super) pending: Pending,
    pub(super) commit: JoinHandle<(WriteBatch, Result<CommitReceipt, StoreError>)>,
}

impl InFlight {
    /// The batch back, and how its commit ended.
    async fn wait(&mut self) -> (WriteBatch, Result<CommitReceipt, StoreError>) {
        match (&mut self.commit).await {
            Ok(done) => done,
            Err(e) => (
                WriteBatch::default(),
                Err(StoreError::Corrupt(format!("the commit task ended: {e}"))),
            ),
        }
    }
}

impl Writer {
    /// Writes a folded batch and answers its requests once that is decided. On a single-host
    /// backend the commit runs in the background while the writer folds the next batch
    /// (pipelining): the previous batch is settled first, so commits stay in order, and if it
    /// failed this batch — folded on top of it — fails too.
    pub(super) async fn flush(&mut self, mut pending: Pending) {
        if let Some(started) = pending.started {
            self.observers
                .metrics
                .batch_duration
                .get_or_create(&crate::metrics::PhaseLabel { phase: "fold" })
                .observe(started.elapsed().as_secs_f64());
        }
        for id in pending.before.keys() {
            if let Some(server) = self.servers.get(id) {
                pending.batch.snapshots.push(SnapshotRow {
                    server_id: id.clone(),
                    snapshot: server.snapshot.clone(),
                });
            }
        }
        if let Some(mut inflight) = self.inflight.take() {
            let (batch, result) = inflight.wait().await;
            let mut previous = inflight.pending;
            previous.batch = batch;
            if let Err(e) = result {
                // Undo this batch first (its `before` is the previous batch's result), then
                // the previous one; both fail.
                let cascaded = StoreError::Corrupt(format!("the previous batch failed: {e}"));
                self.complete(pending, Err(cascaded));
                self.complete(previous, Err(e));
                return;
            }
            self.complete(previous, result);
        }
        if let Some(e) = pending.lock_failure.take() {
            self.store.abandon().await;
            return self.complete(pending, Err(e));
        }
        let batch = std::mem::take(&mut pending.batch);
        // An injected failure (tests) fails inside the commit task, like a real one.
        let inject = !batch.is_empty() && std::mem::take(&mut self.fail_next_commit);
        let (store, metrics) = (self.store.clone(), self.observers.metrics.clone());
        let commit = tokio::spawn(async move {
            let committing = std::time::Instant::now();
            let result = if inject {
                // Slow, like a disk that times out: the writer folds the next batch meanwhile.
                tokio::time::sleep(Duration::from_millis(50)).await;
                store.abandon().await;
                Err(StoreError::Corrupt("injected commit failure".into()))
            } else {
                store.commit(&batch).await
            };
            metrics
                .batch_duration
                .get_or_create(&crate::metrics::PhaseLabel { phase: "commit" })
                .observe(committing.elapsed().as_secs_f64());
            (batch, result)
        });
        self.inflight = Some(InFlight { pending, commit });
        if self.store.is_shared() {
            // Several hosts: the next batch's row locks open a new transaction, so this one
            // must be over first.
            self.settle().await;
        }
    }

    /// [`Writer::flush`], then waits until the batch is committed (or failed): before
    /// anything that reads or writes the database outside a batch.
    pub(super) async fn flush_settled(&mut self, pending: Pending) {
        self.flush(pending).await;
        self.settle().await;
    }

    /// Waits for the batch in flight, if any, and answers its requests.
    pub(super) async fn settle(&mut self) {
        if let Some(mut inflight) = self.inflight.take() {
            let (batch, result) = inflight.wait().await;
            let mut pending = inflight.pending;
            pending.batch = batch;
            self.complete(pending, result);
        }
    }

    /// [`Writer::complete`] for a commit task that ended (or died).
    pub(super) fn complete_inflight(
        &mut self,
        mut pending: Pending,
        done: Result<(WriteBatch, Result<CommitReceipt, StoreError>), tokio::task::JoinError>,
    ) {
        let result = match done {
            Ok((batch, result)) => {
                pending.batch = batch;
                result
            }
            Err(e) => Err(StoreError::Corrupt(format!("the commit task ended: {e}"))),
        };
        self.complete(pending, result);
    }

    /// Applies the outcome of a batch's commit: metrics and live events on success, restored
    /// snapshots on failure; deadlines back in the index; every request answered.
    fn complete(&mut self, mut pending: Pending, result: Result<CommitReceipt, StoreError>) {
        let failure = match result {
            Ok(receipt) => {
                self.observers.committed(
                    &pending.batch,
                    &receipt,
                    (pending.accepted, pending.duplicates),
                    std::mem::take(&mut pending.live),
                    &pending.before,
                    &self.servers,
                );
                if !pending.batch.is_empty() {
                    self.stats.batches_committed.fetch_add(1, Ordering::Relaxed);
                }
                self.stats
                    .heartbeats_accepted
                    .fetch_add(pending.accepted, Ordering::Relaxed);
                self.stats
                    .heartbeats_duplicate
                    .fetch_add(pending.duplicates, Ordering::Relaxed);
                self.stats
                    .rejections
                    .fetch_add(pending.batch.rejections.len() as u64, Ordering::Relaxed);
                self.offer_to_shadow(&pending.batch);
                None
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    heartbeats = pending.batch.heartbeats.len(),
                    rejections = pending.batch.rejections.len(),
                    "batch commit failed; restoring snapshots and failing its requests"
                );
                self.stats.batches_failed.fetch_add(1, Ordering::Relaxed);
                self.observers.metrics.batches_failed.inc();
                for (id, snapshot) in pending.before.drain() {
                    if let Some(server) = self.servers.get_mut(&id) {
                        if let Some(at) = server.snapshot.next_check_at_ms {
                            self.deadlines.remove(&(at, id.clone()));
                        }
                        server.snapshot = snapshot;
                        // A rebuild that was not committed must run again.
                        self.swap.restale(server, self.policy.digest());
                    }
                }
                Some(WriteError::Storage(e.to_string()))
            }
        };
        for id in pending
            .before
            .keys()
            .chain(pending.batch.snapshots.iter().map(|s| &s.server_id))
        {
            if let Some(at) = self
                .servers
                .get(id)
                .and_then(|s| s.snapshot.next_check_at_ms)
            {
                self.deadlines.insert((at, id.clone()));
            }
        }
        for reply in pending.replies {
            reply.send(failure.as_ref());
        }
    }

    /// Offers a committed batch to the shadow, if one runs (never waits for it).
    fn offer_to_shadow(&self, batch: &WriteBatch) {
        let Some(shadow) = &self.shadow else { return };
        if batch.snapshots.is_empty() {
            return;
        }
        let mut events: HashMap<&str, Vec<crate::store::HistoryEvent>> = HashMap::new();
        for h in &batch.heartbeats {
            events
                .entry(h.server_id.as_str())
                .or_default()
                .push(crate::store::HistoryEvent::Heartbeat(h.clone()));
        }
        for r in &batch.rejections {
            if let (Some(id), Some(seq)) = (r.claimed_server_id.as_deref(), r.seq) {
                events
                    .entry(id)
                    .or_default()
                    .push(crate::store::HistoryEvent::Rejected {
                        seq,
                        received_at_ms: r.received_at_ms,
                        code: r.code.clone(),
                    });
            }
        }
        let offers = batch
            .snapshots
            .iter()
            .filter_map(|s| self.servers.get(&s.server_id))
            .map(|live| {
                let mut events = events.remove(live.server_id.as_str()).unwrap_or_default();
                events.sort_by_key(crate::store::HistoryEvent::seq);
                shadow::Offer {
                    live: ServerRecord::clone(live),
                    events,
                }
            })
            .collect();
        if shadow.tx.try_send(offers).is_err()
            && let Some(report) = &*self.shadow_slot.lock().unwrap_or_else(|p| p.into_inner())
            && let Ok(mut r) = report.lock()
        {
            r.dropped += 1;
        }
    }
}

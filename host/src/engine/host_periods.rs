//! Host downtime is not server downtime: the host's own up-periods, and what a restart does.
//!
//! At start-up [`super::start`] appends this host's run ([`Store::begin_host_run`]): when every
//! host was down, the run records the gap it closes, from the last sign of life (an alive mark,
//! a clean stop, or the newest heartbeat or transition committed) to now. While it runs the host
//! appends an alive mark every [`ALIVE_EVERY`] ([`spawn_alive_marks`]), and one at its clean
//! stop: append-only, 1,440 rows per host per day, and a crash leaves a gap known to within a
//! minute (the last mark).
//!
//! Before the writer folds anything else it resumes every server that had an event
//! ([`Writer::resume_after_downtime`]): the ticks due before the gap are folded, none of those
//! that fell inside it, then the policy is told of the gap (`resume`, `vigil:policy@1.4`) at
//! the restart. The default policy gives a server whose deadline fell inside the gap one fresh
//! grace window (no alert storm; still silent after it, it goes offline and alerts as usual)
//! and leaves the gap out of its uptime; the rollups count the gap as unobserved. Replay reads
//! the same gaps back from `host_runs` (they are part of each server's history), so rebuilt
//! snapshots equal the live ones.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::commit::Pending;
use super::fold::{FoldEffects, fold_host_resumed};
use super::writer::Writer;
use crate::clock::now_ms;
use crate::store::{HostRun, Store};

/// How often a running host appends its alive mark.
pub const ALIVE_EVERY: Duration = Duration::from_secs(60);

/// Appends an alive mark of `run` every [`ALIVE_EVERY`] until aborted (the writer aborts it when
/// it stops, then appends the stop mark). A failed mark is logged and retried at the next one.
pub(super) fn spawn_alive_marks(store: Store, run: HostRun) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(ALIVE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await; // the first tick is immediate: the run's start is its first mark
        loop {
            every.tick().await;
            if let Err(e) = store.mark_host_alive(run.id, now_ms(), false).await {
                tracing::warn!(error = %e, run = run.id, "appending the host's alive mark failed");
            }
        }
    })
}

impl Writer {
    /// Folds the host's downtime into every server that had an event, if this start closed a
    /// gap, in batches committed before anything else is folded.
    pub(super) async fn resume_after_downtime(&mut self) {
        let Some(down_at) = self.host_run.resumed_from_ms else {
            return;
        };
        let up_at = self.host_run.started_at_ms;
        let mut ids: Vec<String> = self
            .servers
            .iter()
            .filter(|(id, s)| s.snapshot.evaluated_at_ms.is_some() && !self.swap.is_stale(id))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        tracing::info!(
            down_at = %crate::clock::format_rfc3339_ms(down_at),
            up_at = %crate::clock::format_rfc3339_ms(up_at),
            servers = ids.len(),
            "the host was down: deadlines that fell meanwhile get a fresh interval, \
             and the gap is nobody's uptime"
        );
        for chunk in ids.chunks(self.max_batch.max(1)) {
            let mut pending = Pending {
                started: Some(std::time::Instant::now()),
                ..Pending::default()
            };
            if self.store.is_shared() {
                self.lock_and_adopt(chunk, &mut pending).await;
            }
            for id in chunk {
                self.touch(id, &mut pending);
                let Some(server) = self.servers.get_mut(id) else {
                    continue;
                };
                let mut effects = FoldEffects::default();
                fold_host_resumed(&self.policy, server, down_at, up_at, &mut effects);
                self.record_effects(id, effects, &mut pending);
            }
            self.flush(pending).await;
        }
        self.settle().await;
    }

    /// Stops the alive marks and appends the clean stop's mark.
    pub(super) async fn mark_stopped(&mut self) {
        if let Some(task) = self.alive_marks.take() {
            task.abort();
        }
        let at = now_ms().max(self.host_run.started_at_ms);
        if let Err(e) = self.store.mark_host_alive(self.host_run.id, at, true).await {
            tracing::warn!(error = %e, "appending the host's stop mark failed");
        }
    }
}

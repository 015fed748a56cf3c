//! Policy swaps inside the writer: activation between batches, the background rebuild of every
//! snapshot through the new version, and the probation that rolls a failing version back.
//!
//! Everything here runs on the writer task, so a rebuild never races a live event: a server
//! named by a queued event is rebuilt before that event is folded, the others in small chunks
//! between batches. A rebuilt snapshot goes through the same group commit (and the same undo on
//! a failed commit) as any other. This module never compiles or validates a policy; it is
//! handed a loaded one. The request and answer types ([`Activation`], [`ActivationOutcome`],
//! [`Probation`]) are the policy room's (`policy::activation`), re-exported here.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::commit::Pending;
use super::fold::FoldEffects;
use super::handle::{Command, WriteError};
use super::replay::{ReplayError, replay};
use super::writer::Writer;
use crate::clock::now_ms;
use crate::policy::LoadedPolicy;
pub use crate::policy::activation::{Activation, ActivationOutcome, Probation};
use crate::store::{ActivationRow, HistoryEvent, ServerRecord, TransitionRow};

/// Servers rebuilt per chunk at most (between two chunks the writer folds what is queued).
const CHUNK_SERVERS: usize = 32;
/// Time a chunk may take before it yields to live events.
const CHUNK_BUDGET: Duration = Duration::from_millis(20);

/// Fewest events (over the servers rebuilt together) worth a second replay thread: below it,
/// starting the thread costs about as much as it saves.
const PARALLEL_REPLAY_EVENTS: usize = 512;

struct Watch {
    previous: Arc<LoadedPolicy>,
    limits: Probation,
    base_evaluations: u64,
    base_errors: u64,
}

/// The writer's swap bookkeeping.
#[derive(Default)]
pub(super) struct SwapState {
    /// Servers whose snapshot is still computed by another version.
    stale: HashSet<String>,
    /// Rebuild order (may hold ids already rebuilt; they are skipped).
    queue: VecDeque<String>,
    started: Option<Instant>,
    rebuilt: u64,
    probation: Option<Watch>,
}

impl SwapState {
    pub(super) fn has_work(&self) -> bool {
        !self.stale.is_empty()
    }

    pub(super) fn is_stale(&self, id: &str) -> bool {
        self.stale.contains(id)
    }

    pub(super) fn prioritise(&mut self, id: &str) {
        self.queue.push_front(id.to_owned());
    }

    /// Puts a server back in the rebuild set if its snapshot is not by `active`.
    pub(super) fn restale(&mut self, server: &ServerRecord, active: &str) {
        if needs_rebuild(server, active) && self.stale.insert(server.server_id.clone()) {
            self.queue.push_back(server.server_id.clone());
        }
    }
}

fn needs_rebuild(server: &ServerRecord, active: &str) -> bool {
    match &server.snapshot.policy {
        Some(p) => p.digest != active,
        // Never evaluated successfully but has events: the new version may do better.
        None => server.snapshot.event_seq > 0,
    }
}

impl Writer {
    /// Marks every snapshot not computed by the active version for rebuild.
    pub(super) fn mark_stale(&mut self) -> u64 {
        let active = self.policy.digest().to_owned();
        let mut ids: Vec<&String> = self
            .servers
            .values()
            .filter(|s| needs_rebuild(s, &active))
            .map(|s| &s.server_id)
            .collect();
        ids.sort();
        self.swap.stale = ids.iter().map(|id| (*id).clone()).collect();
        self.swap.queue = ids.into_iter().cloned().collect();
        self.swap.started = Some(Instant::now());
        self.swap.rebuilt = 0;
        let pending = self.swap.stale.len() as u64;
        self.stats
            .rebuilds_pending
            .store(pending, Ordering::Relaxed);
        if pending > 0 {
            tracing::info!(
                policy = %active, snapshots = pending,
                "rebuilding snapshots through the active policy in the background"
            );
        }
        pending
    }

    /// Swaps the active policy (the caller flushed the batch before).
    pub(super) async fn activate(
        &mut self,
        activation: Activation,
    ) -> Result<ActivationOutcome, WriteError> {
        let previous = self.policy.digest().to_owned();
        let next = activation.policy.digest().to_owned();
        if previous == next {
            return Ok(ActivationOutcome {
                previous,
                active: next,
                changed: false,
                rebuilds: 0,
            });
        }
        // The record first: a swap that is not in the log never happens.
        let row = ActivationRow {
            at_ms: now_ms(),
            who: activation.who.clone(),
            from_digest: Some(previous.clone()),
            to_digest: next.clone(),
            reason: activation.reason.clone(),
        };
        if !activation.recorded {
            self.store
                .append_activation(&row)
                .await
                .map_err(|e| WriteError::Storage(e.to_string()))?;
        }
        let old = self.swap_to(activation.policy);
        self.announce(row);
        self.swap.probation = activation.probation.map(|limits| Watch {
            previous: old,
            limits,
            base_evaluations: self.stats.policy_evaluations.load(Ordering::Relaxed),
            base_errors: self.stats.policy_errors.load(Ordering::Relaxed),
        });
        let d = self.policy.description();
        tracing::info!(
            who = %activation.who, reason = %activation.reason, from = %previous, to = %next,
            policy = %format!("{}@{}", d.name, d.version), "policy activated"
        );
        let rebuilds = self.mark_stale();
        Ok(ActivationOutcome {
            previous,
            active: next,
            changed: true,
            rebuilds,
        })
    }

    fn swap_to(&mut self, policy: Arc<LoadedPolicy>) -> Arc<LoadedPolicy> {
        let old = std::mem::replace(&mut self.policy, policy.clone());
        match self.shared_policy.write() {
            Ok(mut shared) => *shared = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
        self.stats
            .policy_activations
            .fetch_add(1, Ordering::Relaxed);
        self.last_policy_error = None;
        old
    }

    /// Tells the observers about a recorded swap: the `policy_active` metric now names the
    /// active version, and live streams get a `policy_activation` event.
    fn announce(&self, row: ActivationRow) {
        let d = self.policy.description();
        self.observers
            .metrics
            .policy_activated(crate::metrics::PolicyInfoLabels {
                name: d.name.clone(),
                version: d.version.clone(),
                digest: d.digest.clone(),
            });
        self.observers
            .live
            .publish(crate::live::LiveEvent::PolicyActivation {
                at_ms: row.at_ms,
                from_digest: row.from_digest,
                to_digest: row.to_digest,
                reason: row.reason,
            });
    }

    /// Rolls a version on probation back when too many of its first evaluations failed, or
    /// ends its probation when enough succeeded.
    pub(super) async fn check_probation(&mut self) {
        let Some(watch) = &self.swap.probation else {
            return;
        };
        let evaluations =
            self.stats.policy_evaluations.load(Ordering::Relaxed) - watch.base_evaluations;
        let errors = self.stats.policy_errors.load(Ordering::Relaxed) - watch.base_errors;
        let allowed = watch.limits.max_failure_share * watch.limits.evaluations as f64;
        if (errors as f64) <= allowed {
            if evaluations >= watch.limits.evaluations {
                tracing::info!(
                    policy = %self.policy.digest(), evaluations, errors,
                    "policy passed its probation"
                );
                self.swap.probation = None;
            }
            return;
        }
        let Some(watch) = self.swap.probation.take() else {
            return;
        };
        let failed = self.policy.digest().to_owned();
        let back = watch.previous.digest().to_owned();
        let reason = format!(
            "automatic rollback: {errors} of the first {} evaluations failed (more than {:.0}%); \
             last error: {}",
            evaluations.max(errors),
            watch.limits.max_failure_share * 100.0,
            self.last_policy_error.as_deref().unwrap_or("unknown")
        );
        let row = ActivationRow {
            at_ms: now_ms(),
            who: "auto-rollback".into(),
            from_digest: Some(failed.clone()),
            to_digest: back.clone(),
            reason: reason.clone(),
        };
        if let Err(e) = self.store.append_activation(&row).await {
            // Keep watching: the next check retries the record and the rollback.
            tracing::error!(error = %e, "cannot record the automatic rollback; retrying");
            self.swap.probation = Some(watch);
            return;
        }
        self.swap_to(watch.previous);
        self.announce(row);
        self.stats.policy_rollbacks.fetch_add(1, Ordering::Relaxed);
        tracing::error!(from = %failed, to = %back, %reason, "POLICY ROLLED BACK to the last known good version");
        self.mark_stale();
    }

    /// Rebuilds, before they are folded, the stale servers the queued events name.
    pub(super) async fn rebuild_named(&mut self, commands: &[Command], pending: &mut Pending) {
        if !self.swap.has_work() {
            return;
        }
        let mut named: Vec<String> = Vec::new();
        for command in commands {
            let id = match command {
                Command::Heartbeat(hb, _) => Some(hb.decoded.server_id.as_str()),
                Command::Reject(notice, _) => notice.claimed_server_id.as_deref(),
                _ => None,
            };
            if let Some(id) = id
                && self.swap.is_stale(id)
                && !named.iter().any(|n| n == id)
            {
                named.push(id.to_owned());
            }
        }
        self.rebuild_some(&named, pending).await;
    }

    /// Rebuilds up to one chunk of stale servers (due ones first) and commits it.
    pub(super) async fn rebuild_chunk(&mut self) {
        // Rebuilds read history from the database: the batch in flight must be in it.
        self.settle().await;
        let mut pending = Pending::default();
        let now = now_ms();
        if self.store.is_shared() {
            // Lock what this chunk may rebuild (and the due deadlines) first, adopting what
            // other hosts committed: a snapshot another host already rebuilt is skipped.
            let mut ids: Vec<String> = self
                .swap
                .queue
                .iter()
                .filter(|id| self.swap.is_stale(id))
                .take(CHUNK_SERVERS)
                .cloned()
                .collect();
            ids.extend(
                self.deadlines
                    .iter()
                    .take_while(|(at, _)| *at <= now)
                    .map(|(_, id)| id.clone()),
            );
            ids.sort();
            ids.dedup();
            self.lock_and_adopt(&ids, &mut pending).await;
        }
        self.fire_due_ticks(now, &mut pending);
        let started = Instant::now();
        let mut done = 0;
        while done < CHUNK_SERVERS && started.elapsed() < CHUNK_BUDGET {
            // Two at a time: one per core, and the time budget is still checked often.
            let mut ids = Vec::with_capacity(2);
            while ids.len() < 2 {
                match self.swap.queue.pop_front() {
                    Some(id) if self.swap.is_stale(&id) => ids.push(id),
                    Some(_) => {}
                    None => break,
                }
            }
            if ids.is_empty() {
                // Everything queued was rebuilt by events first.
                self.swap.stale.clear();
                break;
            }
            done += ids.len();
            self.rebuild_some(&ids, &mut pending).await;
        }
        self.flush(pending).await;
        self.stats
            .rebuilds_pending
            .store(self.swap.stale.len() as u64, Ordering::Relaxed);
        if self.swap.stale.is_empty() {
            let elapsed = self.swap.started.take().map(|s| s.elapsed());
            tracing::info!(
                policy = %self.policy.digest(), rebuilt = self.swap.rebuilt,
                elapsed_ms = elapsed.map_or(0, |e| e.as_millis() as u64),
                "every snapshot is computed by the active policy"
            );
        } else {
            tracing::debug!(
                rebuilt = self.swap.rebuilt,
                remaining = self.swap.stale.len(),
                "rebuild progress"
            );
        }
    }

    /// Replays the history windows of `ids` through the active policy into their snapshots.
    /// Histories are read one after the other; when there are two or more and enough events,
    /// they are replayed on two threads at once (each replay is independent), then applied in
    /// order.
    async fn rebuild_some(&mut self, ids: &[String], pending: &mut Pending) {
        let window_ms = i64::try_from(
            self.policy
                .description()
                .history_window_seconds
                .saturating_mul(1000),
        )
        .unwrap_or(i64::MAX);
        let mut jobs: Vec<(&str, Vec<HistoryEvent>, i64)> = Vec::with_capacity(ids.len());
        for id in ids {
            self.swap.stale.remove(id.as_str());
            let Some(record) = self.servers.get(id.as_str()) else {
                continue;
            };
            if !needs_rebuild(record, self.policy.digest()) {
                // Already computed by the active version (another host rebuilt it).
                continue;
            }
            let until = now_ms().max(record.snapshot.evaluated_at_ms.unwrap_or(i64::MIN));
            match self.store.replay_history(id, window_ms).await {
                Ok(history) => jobs.push((id, history, until)),
                Err(e) => {
                    tracing::error!(server_id = %id, error = %e, "cannot read history to rebuild; keeping the snapshot");
                }
            }
        }
        let replayed = self.replay_jobs(&jobs);
        for ((id, _, until), replayed) in jobs.iter().zip(replayed) {
            if let Some(replayed) = replayed {
                self.finish_rebuild(id, *until, replayed, pending);
            }
        }
    }

    /// Replays each job's history onto its server (`None` for a server that is gone), on two
    /// threads when the work is worth a thread.
    fn replay_jobs(
        &self,
        jobs: &[(&str, Vec<HistoryEvent>, i64)],
    ) -> Vec<Option<Result<(ServerRecord, FoldEffects), ReplayError>>> {
        let one = |(id, history, until): &(&str, Vec<HistoryEvent>, i64)| {
            let record = self.servers.get(*id)?;
            Some(replay(&self.policy, record, history, Some(*until)))
        };
        let events: usize = jobs.iter().map(|(_, history, _)| history.len()).sum();
        if jobs.len() < 2 || events < PARALLEL_REPLAY_EVENTS {
            return jobs.iter().map(one).collect();
        }
        // Even jobs on a second thread, odd ones here, then back in order.
        let (mut even, odd) = std::thread::scope(|scope| {
            let even = scope.spawn(|| jobs.iter().step_by(2).map(one).collect::<Vec<_>>());
            let odd: Vec<_> = jobs.iter().skip(1).step_by(2).map(one).collect();
            let even = even
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (even.into_iter(), odd.into_iter())
        });
        let mut odd = odd;
        (0..jobs.len())
            .map(|i| {
                if i % 2 == 0 {
                    even.next().flatten()
                } else {
                    odd.next().flatten()
                }
            })
            .collect()
    }

    /// Applies one server's rebuilt snapshot (or keeps the old one when the replay failed).
    fn finish_rebuild(
        &mut self,
        id: &str,
        until: i64,
        replayed: Result<(ServerRecord, FoldEffects), ReplayError>,
        pending: &mut Pending,
    ) {
        self.touch(id, pending);
        let policy = self.policy.clone();
        let Some(server) = self.servers.get_mut(id) else {
            return;
        };
        let (rebuilt, effects) = match replayed {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(server_id = %id, error = %e, "cannot replay history; keeping the snapshot");
                return;
            }
        };
        let FoldEffects {
            evaluations,
            errors,
            ..
        } = effects;
        self.stats
            .policy_evaluations
            .fetch_add(evaluations, Ordering::Relaxed);
        self.stats
            .policy_errors
            .fetch_add(errors.len() as u64, Ordering::Relaxed);
        let old = &server.snapshot;
        if let Some(error) = errors.last() {
            // Keep the last good snapshot (it names the version that computed it); the next
            // event starts the new version from an empty state.
            tracing::warn!(
                server_id = %id, policy = %policy.digest(), failures = errors.len(), %error,
                "rebuild through the new policy failed; keeping the previous snapshot"
            );
            self.last_policy_error = Some(error.to_string());
            server.snapshot.policy_errors += errors.len() as i64;
            return;
        }
        let mut snapshot = rebuilt.snapshot;
        // Host facts do not depend on the policy, and the window may not reach back to them.
        snapshot.event_seq = old.event_seq;
        snapshot.last_seen_at_ms = old.last_seen_at_ms;
        snapshot.last_sent_at_ms = old.last_sent_at_ms;
        snapshot.last_signature.clone_from(&old.last_signature);
        snapshot.players_current = old.players_current;
        snapshot.players_capacity = old.players_capacity;
        snapshot.map_name.clone_from(&old.map_name);
        snapshot.agent_version.clone_from(&old.agent_version);
        snapshot.policy_errors = old.policy_errors;
        // Rollups are history: the closed buckets stay as they were written, and the open
        // ones continue (the new version's assessments count from here on).
        snapshot.rollup.clone_from(&old.rollup);
        if snapshot.status != old.status || snapshot.confidence != old.confidence {
            pending.batch.transitions.push(TransitionRow {
                server_id: id.to_owned(),
                at_ms: snapshot.evaluated_at_ms.unwrap_or(until),
                cause: "activation".into(),
                from_status: old.status.clone(),
                to_status: snapshot.status.clone(),
                from_confidence: old.confidence.clone(),
                to_confidence: snapshot.confidence.clone(),
                policy_digest: policy.digest().to_owned(),
            });
        }
        server.snapshot = snapshot;
        self.swap.rebuilt += 1;
        self.stats.snapshots_rebuilt.fetch_add(1, Ordering::Relaxed);
    }
}

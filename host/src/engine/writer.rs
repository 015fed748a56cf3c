//! The writer: the one task that owns every server's snapshot in memory. It drains the queue
//! into batches, fires due deadlines (ticks), applies the replay rules and folds each event
//! through the active policy, then hands the batch to group commit (`commit.rs`).
//!
//! Because only this task touches the snapshots, replay checks, sequence numbers and folds are
//! serialised without locks. This module never writes to storage itself (commits are
//! `commit.rs`, server admin `servers.rs`, swaps `swap.rs`) and never verifies a request: what
//! arrives here was verified by `ingest`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::commit::{InFlight, Pending};
use super::fold::{FoldEffects, catch_up, fold_heartbeat, fold_rejection};
use super::handle::{
    Ack, Command, IdentityCache, Reply, Responder, ShadowSlot, SharedPolicy, WriteError,
};
use super::stats::EngineStats;
use super::{Observers, shadow, swap};
use crate::clock::now_ms;
use crate::ingest::verified::{RejectionNotice, VerifiedHeartbeat};
use crate::policy::LoadedPolicy;
use crate::store::{HeartbeatRow, NewServer, RejectionRow, ServerRecord, Snapshot, Store};

/// The writer task's state (built by [`super::start`]).
pub(super) struct Writer {
    pub(super) store: Store,
    /// The batch whose commit runs while the next one is folded (single-host backends).
    pub(super) inflight: Option<InFlight>,
    pub(super) policy: Arc<LoadedPolicy>,
    /// What [`super::EngineHandle::policy`] reads; written only together with `policy`.
    pub(super) shared_policy: SharedPolicy,
    /// Snapshots to rebuild after a swap, and the probation of a fresh version.
    pub(super) swap: swap::SwapState,
    /// Boxed: a record is ≈ 500 bytes, and the table keeps a quarter to a half of its slots
    /// empty (and two tables while it grows), so inline records would cost ≈ 2× their size.
    pub(super) servers: HashMap<String, Box<ServerRecord>>,
    /// (deadline, server): the earliest is the next tick.
    pub(super) deadlines: BTreeSet<(i64, String)>,
    pub(super) identities: IdentityCache,
    pub(super) stats: Arc<EngineStats>,
    /// The far end of the handles' bounded queue; the writer stops when every sender is gone.
    pub(super) rx: mpsc::Receiver<Command>,
    pub(super) max_batch: usize,
    pub(super) fail_next_commit: bool,
    /// The last evaluation failure (for the auto-rollback reason).
    pub(super) last_policy_error: Option<String>,
    /// The running shadow, offered every committed batch.
    pub(super) shadow: Option<shadow::Shadow>,
    pub(super) shadow_slot: ShadowSlot,
    pub(super) observers: Observers,
    /// This host's run (and the gap its start closed: `host_periods.rs`).
    pub(super) host_run: crate::store::HostRun,
    /// The task appending this run's alive marks (aborted at the stop).
    pub(super) alive_marks: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    /// Runs until every handle is dropped, then settles the batch in flight.
    pub(super) async fn run(mut self) {
        self.resume_after_downtime().await;
        let mut commands = Vec::with_capacity(self.max_batch);
        loop {
            if self.swap.has_work() {
                // Rebuilding after a swap: take what is queued without waiting, fold it (the
                // servers it names are rebuilt first), then rebuild one chunk, and repeat.
                let mut closed = false;
                while commands.len() < self.max_batch {
                    match self.rx.try_recv() {
                        Ok(command) => commands.push(command),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                if !commands.is_empty() {
                    self.process(std::mem::take(&mut commands)).await;
                }
                if closed {
                    break;
                }
                self.rebuild_chunk().await;
                self.check_probation().await;
                continue;
            }
            let sleep = match self.deadlines.first() {
                Some((at, _)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
                None => Duration::from_secs(3600),
            };
            let (rx, inflight) = (&mut self.rx, &mut self.inflight);
            let committed = async {
                match inflight.as_mut() {
                    Some(f) => (&mut f.commit).await,
                    None => std::future::pending().await,
                }
            };
            let room = self.max_batch.saturating_sub(commands.len()).max(1);
            tokio::select! {
                received = rx.recv_many(&mut commands, room) => {
                    if received == 0 {
                        break;
                    }
                    // While a commit runs, keep gathering: the next batch is folded and
                    // committed when it ends (or when the batch is full), so smooth load makes
                    // batches of everything that arrived meanwhile, not of one or two events
                    // each paying a whole commit.
                    if self.inflight.is_some() && commands.len() < self.max_batch {
                        continue;
                    }
                }
                // The batch in flight is durable (or failed): answer it now, even when nothing
                // else arrives.
                done = committed => {
                    if let Some(f) = self.inflight.take() {
                        self.complete_inflight(f.pending, done);
                    }
                    if commands.is_empty() {
                        continue;
                    }
                }
                () = tokio::time::sleep(sleep) => {}
            }
            self.process(std::mem::take(&mut commands)).await;
            self.check_probation().await;
        }
        self.settle().await;
        self.mark_stopped().await;
        tracing::info!("engine writer stopped");
    }

    async fn process(&mut self, commands: Vec<Command>) {
        let mut pending = Pending {
            started: Some(std::time::Instant::now()),
            ..Pending::default()
        };
        let now = now_ms();
        let mut commands = VecDeque::from(commands);
        // On a shared database, lock (and refresh) what this batch folds before folding or
        // rebuilding it; a barrier command below commits, so what follows it is locked anew.
        let shared = self.store.is_shared();
        if shared {
            self.lock_ahead(&commands, Some(now), &mut pending).await;
        }
        if self.swap.has_work() {
            // A rebuild reads history from the database: what is in flight must be there.
            self.settle().await;
        }
        self.rebuild_named(commands.make_contiguous(), &mut pending)
            .await;
        // Consecutive registrations share one transaction (a bulk import registers thousands).
        let mut registrations: Vec<(NewServer, Responder<()>)> = Vec::new();
        self.fire_due_ticks(now, &mut pending);
        let mut locked = true;
        while let Some(command) = commands.pop_front() {
            let is_registration = matches!(command, Command::Register(..));
            if !registrations.is_empty() && !is_registration {
                self.flush_settled(std::mem::take(&mut pending)).await;
                self.register_all(std::mem::take(&mut registrations)).await;
                locked = false;
            }
            if shared && !locked && !is_registration {
                commands.push_front(command);
                self.lock_ahead(&commands, None, &mut pending).await;
                locked = true;
                continue;
            }
            match command {
                Command::Heartbeat(hb, reply) => {
                    let result = self.apply_heartbeat(&hb, &mut pending);
                    pending.replies.push(Reply::Heartbeat(reply, result));
                }
                Command::Reject(notice, reply) => {
                    self.apply_rejection(&notice, &mut pending);
                    pending.replies.push(Reply::Unit(reply, Ok(())));
                }
                Command::Register(server, reply) => registrations.push((*server, reply)),
                Command::SetVerified(id, verified, reply) => {
                    self.flush_settled(std::mem::take(&mut pending)).await;
                    locked = false;
                    let _ = reply.send(self.set_verified(&id, verified).await);
                }
                Command::RegisterMany(servers, reply) => {
                    self.flush_settled(std::mem::take(&mut pending)).await;
                    locked = false;
                    let _ = reply.send(Ok(self.register_many(servers).await));
                }
                Command::Manage(edit, reply) => {
                    self.flush_settled(std::mem::take(&mut pending)).await;
                    locked = false;
                    let _ = reply.send(self.manage(*edit).await);
                }
                Command::RotateKey(rotation, reply) => {
                    self.flush_settled(std::mem::take(&mut pending)).await;
                    locked = false;
                    let _ = reply.send(self.rotate_key(*rotation).await);
                }
                Command::Activate(activation, reply) => {
                    self.flush_settled(std::mem::take(&mut pending)).await;
                    locked = false;
                    let _ = reply.send(self.activate(*activation).await);
                }
                Command::Shadow(policy, reply) => {
                    self.shadow = policy.map(|p| shadow::start(self.store.clone(), p));
                    if let Ok(mut slot) = self.shadow_slot.lock() {
                        *slot = self.shadow.as_ref().map(|s| s.report.clone());
                    }
                    let _ = reply.send(());
                }
                Command::Refresh(notice) => {
                    self.flush_settled(std::mem::take(&mut pending)).await;
                    locked = false;
                    self.refresh(notice).await;
                }
                Command::FailNextCommit => self.fail_next_commit = true,
            }
        }
        self.flush(pending).await;
        if !registrations.is_empty() {
            self.register_all(registrations).await;
        }
    }

    /// Marks a server as touched by this batch (remembering its snapshot for a rollback) and
    /// takes its deadline out of the index until the batch is done.
    pub(super) fn touch(&mut self, server_id: &str, pending: &mut Pending) {
        if pending.before.contains_key(server_id) {
            return;
        }
        if let Some(server) = self.servers.get(server_id) {
            if let Some(at) = server.snapshot.next_check_at_ms {
                self.deadlines.remove(&(at, server_id.to_owned()));
            }
            pending
                .before
                .insert(server_id.to_owned(), server.snapshot.clone());
        }
    }

    pub(super) fn record_effects(
        &mut self,
        server_id: &str,
        effects: FoldEffects,
        pending: &mut Pending,
    ) {
        if let Some(error) = effects.errors.last() {
            self.last_policy_error = Some(error.to_string());
        }
        self.observers.folded(
            self.servers.get(server_id).map(|r| &**r),
            self.policy.digest(),
            &effects,
            &mut pending.batch,
        );
        self.stats
            .policy_evaluations
            .fetch_add(effects.evaluations, Ordering::Relaxed);
        self.stats
            .policy_errors
            .fetch_add(effects.errors.len() as u64, Ordering::Relaxed);
        for t in &effects.transitions {
            tracing::info!(
                server_id = %t.server_id, cause = %t.cause, from = %t.from_status,
                to = %t.to_status, confidence = %t.to_confidence, "status transition"
            );
        }
        pending.batch.transitions.extend(effects.transitions);
        pending.batch.rollups.extend(effects.rollups);
        for signal in effects.signals {
            tracing::debug!(%signal, "policy signal");
        }
    }

    /// Folds a tick into every server whose deadline is due at `now`.
    pub(super) fn fire_due_ticks(&mut self, now: i64, pending: &mut Pending) {
        while let Some((at, id)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            if self.servers.get(&id).is_some_and(|s| s.admin.is_quiet()) {
                // Paused or retired: deadlines are off (resuming puts this one back).
                self.deadlines.remove(&(at, id));
                continue;
            }
            if self.swap.is_stale(&id) {
                // Its deadline was set by the previous version: rebuild it soon instead.
                self.deadlines.remove(&(at, id.clone()));
                self.swap.prioritise(&id);
                continue;
            }
            self.touch(&id, pending);
            let Some(server) = self.servers.get_mut(&id) else {
                self.deadlines.remove(&(at, id));
                continue;
            };
            let mut effects = FoldEffects::default();
            catch_up(&self.policy, server, now, &mut effects);
            self.record_effects(&id, effects, pending);
        }
    }

    fn apply_heartbeat(
        &mut self,
        hb: &VerifiedHeartbeat,
        pending: &mut Pending,
    ) -> Result<Ack, WriteError> {
        let id = hb.decoded.server_id.as_str();
        if !self.servers.contains_key(id) {
            return Err(WriteError::UnknownServer(id.to_owned()));
        }
        self.touch(id, pending);
        let policy = self.policy.clone();
        let server = self.servers.get_mut(id).expect("checked above");
        let now = hb
            .received_at_ms
            .max(server.snapshot.evaluated_at_ms.unwrap_or(i64::MIN));
        let ack = |s: &Snapshot, duplicate: bool, signals: Vec<String>| Ack {
            duplicate,
            next_check_in_ms: s.next_check_at_ms.map(|at| at.saturating_sub(now)),
            scores: s.scores.clone(),
            signals,
            status: s.status.clone(),
            confidence: s.confidence.clone(),
            policy: format!(
                "{}@{}",
                policy.description().name,
                policy.description().version
            ),
        };
        if hb.signed
            && hb.decoded.signature.is_some()
            && server.snapshot.last_signature == hb.decoded.signature
        {
            pending.duplicates += 1;
            return Ok(ack(&server.snapshot, true, Vec::new()));
        }
        if hb.signed && hb.decoded.key_version != server.key_version {
            // Verified against the key that was current when the gate looked, but a rotation
            // committed ahead of it in the queue: the old key no longer speaks for the server.
            // Signed by the key holder, so it is no evidence of a forgery: recorded, not folded.
            let detail = format!(
                "signed with key version {}, but the server's key is now version {}",
                hb.decoded.key_version, server.key_version
            );
            pending.batch.rejections.push(RejectionRow {
                received_at_ms: now,
                code: "key_version_mismatch".into(),
                http_status: 409,
                detail: detail.clone(),
                claimed_server_id: Some(id.to_owned()),
                seq: None,
                source_ip: hb.source_ip.clone(),
                body_sha256: Some(crate::policy::digest_of(hb.body_text.as_bytes())),
            });
            return Err(WriteError::KeyVersion(detail));
        }
        if server
            .snapshot
            .last_sent_at_ms
            .is_some_and(|last| hb.decoded.sent_at_ms <= last)
        {
            let detail = "timestamp is not later than the last accepted heartbeat's".to_owned();
            let mut effects = FoldEffects::default();
            fold_rejection(&policy, server, now, "replay", &mut effects);
            pending.batch.rejections.push(RejectionRow {
                received_at_ms: now,
                code: "replay".into(),
                http_status: 409,
                detail: detail.clone(),
                claimed_server_id: Some(id.to_owned()),
                seq: Some(server.snapshot.event_seq),
                source_ip: hb.source_ip.clone(),
                body_sha256: Some(crate::policy::digest_of(hb.body_text.as_bytes())),
            });
            self.record_effects(id, effects, pending);
            return Err(WriteError::Replay(detail));
        }
        let mut effects = FoldEffects::default();
        fold_heartbeat(&policy, server, now, &hb.decoded, hb.auth, &mut effects);
        pending.batch.heartbeats.push(HeartbeatRow {
            server_id: id.to_owned(),
            seq: server.snapshot.event_seq,
            received_at_ms: now,
            sent_at_ms: hb.decoded.sent_at_ms,
            key_version: hb.decoded.key_version,
            signature: match (&hb.decoded.signature, hb.signed) {
                (Some(signature), true) => signature.clone(),
                _ => String::new(),
            },
            body: hb.body_text.clone(),
            policy_digest: policy.digest().to_owned(),
            auth: hb.auth,
            original_body: hb.original_body.clone(),
        });
        pending.accepted += 1;
        let answer = ack(&server.snapshot, false, effects.signals.clone());
        if let Some(event) = self.observers.heartbeat_event(server, &hb.body_text, now) {
            pending.live.push(event);
        }
        self.record_effects(id, effects, pending);
        Ok(answer)
    }

    fn apply_rejection(&mut self, notice: &RejectionNotice, pending: &mut Pending) {
        let known = notice
            .claimed_server_id
            .as_deref()
            .filter(|id| self.servers.contains_key(*id));
        let mut seq = None;
        if let Some(id) = known {
            let id = id.to_owned();
            self.touch(&id, pending);
            let server = self.servers.get_mut(&id).expect("checked above");
            let now = notice
                .received_at_ms
                .max(server.snapshot.evaluated_at_ms.unwrap_or(i64::MIN));
            let mut effects = FoldEffects::default();
            fold_rejection(&self.policy, server, now, notice.code, &mut effects);
            seq = Some(server.snapshot.event_seq);
            self.record_effects(&id, effects, pending);
        }
        pending.batch.rejections.push(RejectionRow {
            received_at_ms: notice.received_at_ms,
            code: notice.code.to_owned(),
            http_status: notice.http_status,
            detail: notice.detail.clone(),
            claimed_server_id: notice.claimed_server_id.clone(),
            seq,
            source_ip: notice.source_ip.clone(),
            body_sha256: notice.body_sha256.clone(),
        });
    }
}

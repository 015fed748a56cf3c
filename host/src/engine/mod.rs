//! The engine: the single writer path that folds events through the active policy, schedules
//! deadlines and group-commits history plus snapshots.
//!
//! Request handlers verify what they can alone (shape, key, signature, clock) and hand the rest
//! to the writer through a bounded queue ([`EngineHandle`]). The writer owns every server's
//! snapshot in memory, so replay checks, sequence numbers and folds are serialised without
//! locks; it drains the queue into batches, folds them, commits each batch in one transaction
//! and only then answers. A failed commit restores the in-memory snapshots and answers every
//! request of the batch with an error. Deadlines live in an ordered index: the writer sleeps
//! until the earliest one, it never scans every server.

mod activator;
pub mod backtest;
pub mod fold;
pub mod observe;
pub mod replay;
mod shadow;
mod shared;
mod swap;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::ingest::verified::{Identity, RejectionNotice, VerifiedHeartbeat};
use crate::policy::LoadedPolicy;
use crate::store::{
    ChangeNotice, CommitReceipt, HeartbeatRow, NewServer, RejectionRow, ServerRecord, Snapshot,
    SnapshotRow, Store, StoreError, WriteBatch,
};
use fold::{FoldEffects, catch_up, fold_heartbeat, fold_rejection};
pub use observe::Observers;
pub use shadow::{Disagreement, Judgement, ShadowReport};
pub use swap::{Activation, ActivationOutcome, Probation};

/// Counters of the engine (exposed by `/healthz` and `/metrics`).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Heartbeats stored.
    pub heartbeats_accepted: AtomicU64,
    /// Exact repeats acknowledged without storing.
    pub heartbeats_duplicate: AtomicU64,
    /// Rejections stored.
    pub rejections: AtomicU64,
    /// Policy evaluations that failed (trap, fuel, invalid output, guest error).
    pub policy_errors: AtomicU64,
    /// Policy evaluations run (events and ticks).
    pub policy_evaluations: AtomicU64,
    /// Batches committed.
    pub batches_committed: AtomicU64,
    /// Batches whose commit failed.
    pub batches_failed: AtomicU64,
    /// Snapshots rebuilt by replay after a policy swap.
    pub snapshots_rebuilt: AtomicU64,
    /// Snapshots still waiting to be rebuilt after the last swap (a gauge).
    pub rebuilds_pending: AtomicU64,
    /// Policy activations (including automatic rollbacks).
    pub policy_activations: AtomicU64,
    /// Automatic rollbacks to the last known good policy.
    pub policy_rollbacks: AtomicU64,
}

/// A point-in-time copy of [`EngineStats`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Heartbeats stored.
    pub heartbeats_accepted: u64,
    /// Exact repeats acknowledged.
    pub heartbeats_duplicate: u64,
    /// Rejections stored.
    pub rejections: u64,
    /// Failed policy evaluations.
    pub policy_errors: u64,
    /// Policy evaluations run.
    pub policy_evaluations: u64,
    /// Batches committed.
    pub batches_committed: u64,
    /// Batches failed.
    pub batches_failed: u64,
    /// Snapshots rebuilt after a policy swap.
    pub snapshots_rebuilt: u64,
    /// Snapshots waiting to be rebuilt.
    pub rebuilds_pending: u64,
    /// Policy activations.
    pub policy_activations: u64,
    /// Automatic rollbacks.
    pub policy_rollbacks: u64,
}

impl EngineStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            heartbeats_accepted: r(&self.heartbeats_accepted),
            heartbeats_duplicate: r(&self.heartbeats_duplicate),
            rejections: r(&self.rejections),
            policy_errors: r(&self.policy_errors),
            policy_evaluations: r(&self.policy_evaluations),
            batches_committed: r(&self.batches_committed),
            batches_failed: r(&self.batches_failed),
            snapshots_rebuilt: r(&self.snapshots_rebuilt),
            rebuilds_pending: r(&self.rebuilds_pending),
            policy_activations: r(&self.policy_activations),
            policy_rollbacks: r(&self.policy_rollbacks),
        }
    }
}

/// The writer's answer to an accepted heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ack {
    /// An exact repeat of the last accepted heartbeat (stored once).
    pub duplicate: bool,
    /// Derived status after the fold.
    pub status: String,
    /// Derived confidence after the fold.
    pub confidence: String,
    /// `name@version` of the policy that folded it.
    pub policy: String,
}

/// Why the writer refused or failed a request.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// Timestamp not later than the last accepted heartbeat's.
    #[error("{0}")]
    Replay(String),
    /// The server is not registered.
    #[error("server {0} is not registered")]
    UnknownServer(String),
    /// The server id is taken.
    #[error("server {0} already exists")]
    Conflict(String),
    /// The batch could not be committed.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A key rotation named a key version that is not the current one.
    #[error("{0}")]
    KeyVersion(String),
    /// The queue in front of the writer is full.
    #[error("the writer queue is full")]
    Overloaded,
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    Closed,
}

/// Where the writer sends one answer.
type Responder<T> = oneshot::Sender<Result<T, WriteError>>;

enum Command {
    Heartbeat(Box<VerifiedHeartbeat>, Responder<Ack>),
    Reject(Box<RejectionNotice>, Responder<()>),
    Register(Box<NewServer>, Responder<()>),
    SetVerified(String, bool, Responder<()>),
    RotateKey(Box<crate::store::trust::KeyRotation>, Responder<u32>),
    Activate(Box<Activation>, Responder<ActivationOutcome>),
    Shadow(Option<Arc<LoadedPolicy>>, oneshot::Sender<()>),
    /// Another host changed a server (shared backends): re-read it.
    Refresh(ChangeNotice),
    FailNextCommit,
}

/// The running shadow's report, if any: written by the writer when a shadow starts or stops,
/// read by `GET /v1/policies/shadow`. std mutexes: short critical sections, never awaited.
type ShadowSlot = Arc<std::sync::Mutex<Option<Arc<std::sync::Mutex<ShadowReport>>>>>;

/// The active policy, shared by the writer (who swaps it) and every reader. A std `RwLock`
/// around an `Arc` because a read is one pointer clone that never awaits, swaps are rare, and
/// readers that hold the old `Arc` (an in-flight batch) keep it alive until they finish.
type SharedPolicy = Arc<RwLock<Arc<LoadedPolicy>>>;

/// Shared identity cache: read by every request, written only by the writer after a commit.
/// A std `RwLock` because critical sections are a map lookup and never await.
type IdentityCache = Arc<RwLock<HashMap<String, Arc<Identity>>>>;

/// A cheap-clone handle to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    /// Bounded: a full queue answers 503 instead of growing memory.
    tx: mpsc::Sender<Command>,
    identities: IdentityCache,
    stats: Arc<EngineStats>,
    policy: SharedPolicy,
    shadow: ShadowSlot,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("policy", &self.policy().digest())
            .finish()
    }
}

impl EngineHandle {
    async fn ask<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<R, WriteError>>) -> Command,
    ) -> Result<R, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WriteError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => WriteError::Closed,
        })?;
        answer.await.map_err(|_| WriteError::Closed)?
    }

    /// Commands waiting in the writer's queue.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Folds and stores a verified heartbeat; answers after the commit.
    pub async fn submit_heartbeat(&self, heartbeat: VerifiedHeartbeat) -> Result<Ack, WriteError> {
        self.ask(|r| Command::Heartbeat(Box::new(heartbeat), r))
            .await
    }

    /// Appends a rejection (folded into the named server's policy when it is known).
    pub async fn record_rejection(&self, notice: RejectionNotice) -> Result<(), WriteError> {
        self.ask(|r| Command::Reject(Box::new(notice), r)).await
    }

    /// Registers a server (unverified).
    pub async fn register(&self, server: NewServer) -> Result<(), WriteError> {
        self.ask(|r| Command::Register(Box::new(server), r)).await
    }

    /// Sets or clears the operator's verified flag.
    pub async fn set_verified(&self, server_id: &str, verified: bool) -> Result<(), WriteError> {
        self.ask(|r| Command::SetVerified(server_id.to_owned(), verified, r))
            .await
    }

    /// Rotates a server's key (operator or agent); answers the new key version after the commit.
    pub async fn rotate_key(
        &self,
        rotation: crate::store::trust::KeyRotation,
    ) -> Result<u32, WriteError> {
        self.ask(|r| Command::RotateKey(Box::new(rotation), r))
            .await
    }

    /// Re-reads what another host sharing the database changed (see [`ChangeNotice`]).
    pub async fn refresh(&self, notice: ChangeNotice) {
        let _ = self.tx.send(Command::Refresh(notice)).await;
    }

    /// Makes the next non-empty batch commit fail, as a database failure would (tests of
    /// failure handling use it; it changes nothing else).
    #[doc(hidden)]
    pub async fn fail_next_commit(&self) {
        let _ = self.tx.send(Command::FailNextCommit).await;
    }

    /// The identity of a registered server.
    pub fn identity(&self, server_id: &str) -> Option<Arc<Identity>> {
        self.identities.read().ok()?.get(server_id).cloned()
    }

    /// Remembers the identity of a server this host has not seen yet (another host sharing
    /// the database registered it); the writer adopts the full record when it locks the row.
    pub fn learn(&self, record: &ServerRecord) {
        if let Some(identity) = Identity::of(record)
            && let Ok(mut cache) = self.identities.write()
        {
            cache
                .entry(record.server_id.clone())
                .or_insert_with(|| Arc::new(identity));
        }
    }

    /// The active policy (the one new events are folded with).
    pub fn policy(&self) -> Arc<LoadedPolicy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            // Only the writer writes it, with a plain assignment that cannot panic half-way.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes `activation.policy` the active policy between two batches (the batch in flight
    /// finishes on the old one), appends the activation record, and starts rebuilding every
    /// snapshot through the new version in the background. Waits for room in the queue rather
    /// than failing: an activation is rare and must not be lost to a burst of heartbeats.
    pub async fn activate(&self, activation: Activation) -> Result<ActivationOutcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Activate(Box::new(activation), reply))
            .await
            .map_err(|_| WriteError::Closed)?;
        answer.await.map_err(|_| WriteError::Closed)?
    }

    /// A handle that does not keep the writer alive (for background tasks).
    pub fn downgrade(&self) -> WeakEngineHandle {
        WeakEngineHandle {
            tx: self.tx.downgrade(),
            identities: self.identities.clone(),
            stats: self.stats.clone(),
            policy: self.policy.clone(),
            shadow: self.shadow.clone(),
        }
    }

    /// Starts (replacing any) or stops (`None`) shadow evaluation of a candidate on live
    /// events. The shadow never changes an answer or a snapshot.
    pub async fn set_shadow(&self, policy: Option<Arc<LoadedPolicy>>) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Shadow(policy, reply))
            .await
            .map_err(|_| WriteError::Closed)?;
        answer.await.map_err(|_| WriteError::Closed)
    }

    /// The running shadow's report so far.
    pub fn shadow_report(&self) -> Option<ShadowReport> {
        let slot = self.shadow.lock().ok()?;
        let report = slot.as_ref()?.lock().ok()?.clone();
        Some(report)
    }

    /// The engine's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

/// An [`EngineHandle`] that does not keep the writer running: background tasks hold this and
/// upgrade it per use, so dropping the last real handle still stops the writer.
#[derive(Clone)]
pub struct WeakEngineHandle {
    tx: mpsc::WeakSender<Command>,
    identities: IdentityCache,
    stats: Arc<EngineStats>,
    policy: SharedPolicy,
    shadow: ShadowSlot,
}

impl std::fmt::Debug for WeakEngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakEngineHandle").finish_non_exhaustive()
    }
}

impl WeakEngineHandle {
    /// The engine, while it still runs.
    pub fn upgrade(&self) -> Option<EngineHandle> {
        Some(EngineHandle {
            tx: self.tx.upgrade()?,
            identities: self.identities.clone(),
            stats: self.stats.clone(),
            policy: self.policy.clone(),
            shadow: self.shadow.clone(),
        })
    }
}

/// Loads every server, then spawns the writer. The writer stops when every handle is dropped,
/// after finishing what is queued.
pub async fn start(
    store: Arc<dyn Store>,
    policy: Arc<LoadedPolicy>,
    max_batch: usize,
    queue_capacity: usize,
    observers: Observers,
) -> Result<(EngineHandle, JoinHandle<()>), StoreError> {
    let records = store.load_servers().await?;
    let mut servers = HashMap::with_capacity(records.len());
    let mut identities = HashMap::with_capacity(records.len());
    let mut deadlines = BTreeSet::new();
    let active = policy.reference();
    for mut record in records {
        // Each stored row reads into its own reference; those of the active version share one.
        if record.snapshot.policy.as_deref() == Some(&*active) {
            record.snapshot.policy = Some(Arc::clone(&active));
        }
        match Identity::of(&record) {
            Some(identity) => {
                identities.insert(record.server_id.clone(), Arc::new(identity));
            }
            None => tracing::error!(server_id = %record.server_id, "stored public key is invalid"),
        }
        if let Some(at) = record.snapshot.next_check_at_ms {
            deadlines.insert((at, record.server_id.clone()));
        }
        let s = &record.snapshot;
        observers
            .metrics
            .server_moved(None, (&s.status, &s.confidence));
        servers.insert(record.server_id.clone(), Box::new(record));
    }
    tracing::info!(servers = servers.len(), policy = %policy.digest(), "engine loaded");
    let (tx, rx) = mpsc::channel(queue_capacity);
    let identities = Arc::new(RwLock::new(identities));
    let stats = Arc::new(EngineStats::default());
    let shared_policy: SharedPolicy = Arc::new(RwLock::new(policy.clone()));
    let shadow_slot: ShadowSlot = Arc::default();
    let mut writer = Writer {
        shadow: None,
        shadow_slot: shadow_slot.clone(),
        store,
        policy: policy.clone(),
        shared_policy: shared_policy.clone(),
        swap: swap::SwapState::default(),
        servers,
        deadlines,
        identities: identities.clone(),
        stats: stats.clone(),
        rx,
        max_batch,
        fail_next_commit: false,
        inflight: None,
        last_policy_error: None,
        observers,
    };
    // Snapshots computed by another version (the configured policy changed while the host was
    // down) are rebuilt like after a swap.
    writer.mark_stale();
    let task = tokio::spawn(writer.run());
    Ok((
        EngineHandle {
            tx,
            identities,
            stats,
            policy: shared_policy,
            shadow: shadow_slot,
        },
        task,
    ))
}

enum Reply {
    Heartbeat(
        oneshot::Sender<Result<Ack, WriteError>>,
        Result<Ack, WriteError>,
    ),
    Unit(
        oneshot::Sender<Result<(), WriteError>>,
        Result<(), WriteError>,
    ),
}

impl Reply {
    fn send(self, failure: Option<&WriteError>) {
        // A closed receiver means the client went away; its row is committed (or not) anyway.
        match (self, failure) {
            (Reply::Heartbeat(tx, _), Some(e)) => drop(tx.send(Err(e.clone()))),
            (Reply::Heartbeat(tx, r), None) => drop(tx.send(r)),
            (Reply::Unit(tx, _), Some(e)) => drop(tx.send(Err(e.clone()))),
            (Reply::Unit(tx, r), None) => drop(tx.send(r)),
        }
    }
}

/// One batch being built: rows to write, snapshots before the batch touched them, answers.
#[derive(Default)]
struct Pending {
    batch: WriteBatch,
    before: HashMap<String, Snapshot>,
    replies: Vec<Reply>,
    accepted: u64,
    duplicates: u64,
    /// Live events to publish once the batch is committed.
    live: Vec<crate::live::LiveEvent>,
    /// Locking the batch's rows failed (shared backends): the batch fails without a commit.
    lock_failure: Option<StoreError>,
    /// When the writer started folding this batch (for the `fold` phase metric).
    started: Option<std::time::Instant>,
}

/// A batch whose commit runs in the background.
struct InFlight {
    /// Its requests and bookkeeping (the batch itself is with the commit task).
    pending: Pending,
    commit: JoinHandle<(WriteBatch, Result<CommitReceipt, StoreError>)>,
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

struct Writer {
    store: Arc<dyn Store>,
    /// The batch whose commit runs while the next one is folded (single-host backends).
    inflight: Option<InFlight>,
    policy: Arc<LoadedPolicy>,
    /// What [`EngineHandle::policy`] reads; written only together with `policy`.
    shared_policy: SharedPolicy,
    /// Snapshots to rebuild after a swap, and the probation of a fresh version.
    swap: swap::SwapState,
    /// Boxed: a record is ≈ 500 bytes, and the table keeps a quarter to a half of its slots
    /// empty (and two tables while it grows), so inline records would cost ≈ 2× their size.
    servers: HashMap<String, Box<ServerRecord>>,
    /// (deadline, server): the earliest is the next tick.
    deadlines: BTreeSet<(i64, String)>,
    identities: IdentityCache,
    stats: Arc<EngineStats>,
    rx: mpsc::Receiver<Command>,
    max_batch: usize,
    fail_next_commit: bool,
    /// The last evaluation failure (for the auto-rollback reason).
    last_policy_error: Option<String>,
    /// The running shadow, offered every committed batch.
    shadow: Option<shadow::Shadow>,
    shadow_slot: ShadowSlot,
    observers: Observers,
}

impl Writer {
    async fn run(mut self) {
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
    fn touch(&mut self, server_id: &str, pending: &mut Pending) {
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

    fn record_effects(&mut self, server_id: &str, effects: FoldEffects, pending: &mut Pending) {
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
        for signal in effects.signals {
            tracing::debug!(%signal, "policy signal");
        }
    }

    fn fire_due_ticks(&mut self, now: i64, pending: &mut Pending) {
        while let Some((at, id)) = self.deadlines.first().cloned() {
            if at > now {
                break;
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
        let ack = |s: &Snapshot, duplicate: bool| Ack {
            duplicate,
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
            return Ok(ack(&server.snapshot, true));
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
        fold_heartbeat(&policy, server, now, &hb.decoded, hb.signed, &mut effects);
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
        });
        pending.accepted += 1;
        let answer = ack(&server.snapshot, false);
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

    /// Writes a folded batch and answers its requests once that is decided. On a single-host
    /// backend the commit runs in the background while the writer folds the next batch
    /// (pipelining): the previous batch is settled first, so commits stay in order, and if it
    /// failed this batch — folded on top of it — fails too.
    async fn flush(&mut self, mut pending: Pending) {
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
    async fn flush_settled(&mut self, pending: Pending) {
        self.flush(pending).await;
        self.settle().await;
    }

    /// Waits for the batch in flight, if any, and answers its requests.
    async fn settle(&mut self) {
        if let Some(mut inflight) = self.inflight.take() {
            let (batch, result) = inflight.wait().await;
            let mut pending = inflight.pending;
            pending.batch = batch;
            self.complete(pending, result);
        }
    }

    /// [`Writer::complete`] for a commit task that ended (or died).
    fn complete_inflight(
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

    async fn register_all(&mut self, registrations: Vec<(NewServer, Responder<()>)>) {
        let servers: Vec<NewServer> = registrations.iter().map(|(s, _)| s.clone()).collect();
        let results = match self.store.insert_servers(&servers).await {
            Ok(results) => results,
            Err(e) => {
                let error = WriteError::Storage(e.to_string());
                for (_, reply) in registrations {
                    let _ = reply.send(Err(error.clone()));
                }
                return;
            }
        };
        for ((server, reply), result) in registrations.into_iter().zip(results) {
            let answer = match result {
                Ok(()) => {
                    self.remember(server);
                    Ok(())
                }
                Err(StoreError::Conflict(_)) => Err(WriteError::Conflict(server.server_id)),
                Err(e) => Err(WriteError::Storage(e.to_string())),
            };
            let _ = reply.send(answer);
        }
    }

    /// Adds a newly registered server to the working set and the identity cache.
    fn remember(&mut self, server: NewServer) {
        let record = ServerRecord {
            server_id: server.server_id.clone(),
            display_name: server.display_name,
            cluster_id: server.cluster_id,
            public_key: server.public_key,
            key_version: 1,
            is_verified: false,
            registered_at_ms: server.registered_at_ms,
            snapshot: Snapshot::unseen(),
        };
        if let Some(identity) = Identity::of(&record)
            && let Ok(mut cache) = self.identities.write()
        {
            cache.insert(record.server_id.clone(), Arc::new(identity));
        }
        tracing::info!(target: "vigil::audit", server_id = %record.server_id,
            added_by = %server.added_by, fingerprint = %server.fingerprint, "server registered");
        self.observers
            .metrics
            .server_moved(None, (&record.snapshot.status, &record.snapshot.confidence));
        self.observers
            .live
            .publish(crate::live::LiveEvent::Registration {
                server_id: record.server_id.clone(),
                cluster_id: record.cluster_id.clone(),
                at_ms: record.registered_at_ms,
            });
        self.servers
            .insert(record.server_id.clone(), Box::new(record));
    }

    async fn set_verified(&mut self, id: &str, verified: bool) -> Result<(), WriteError> {
        if !self.servers.contains_key(id) && self.store.is_shared() {
            // Registered on another host a moment ago.
            self.refresh(ChangeNotice::Server(id.to_owned())).await;
        }
        let Some(server) = self.servers.get_mut(id) else {
            return Err(WriteError::UnknownServer(id.to_owned()));
        };
        self.store
            .set_verified(id, verified)
            .await
            .map_err(|e| WriteError::Storage(e.to_string()))?;
        server.is_verified = verified;
        if let Some(identity) = Identity::of(server)
            && let Ok(mut cache) = self.identities.write()
        {
            cache.insert(id.to_owned(), Arc::new(identity));
        }
        tracing::info!(server_id = %id, verified, "verification changed");
        Ok(())
    }

    async fn rotate_key(
        &mut self,
        rotation: crate::store::trust::KeyRotation,
    ) -> Result<u32, WriteError> {
        let id = rotation.server_id.clone();
        let Some(server) = self.servers.get_mut(&id) else {
            return Err(WriteError::UnknownServer(id));
        };
        let stale = |current: u32| {
            WriteError::KeyVersion(format!(
                "the rotation names key version {}, the server's current key is version {current}",
                rotation.expected_version
            ))
        };
        if server.key_version != rotation.expected_version {
            return Err(stale(server.key_version));
        }
        match self.store.rotate_key(&rotation).await {
            Ok(true) => {}
            Ok(false) => return Err(stale(server.key_version)),
            Err(e) => return Err(WriteError::Storage(e.to_string())),
        }
        server.key_version = rotation.expected_version + 1;
        server.public_key.clone_from(&rotation.public_key);
        if let Some(identity) = Identity::of(server)
            && let Ok(mut cache) = self.identities.write()
        {
            cache.insert(id.clone(), Arc::new(identity));
        }
        tracing::info!(target: "vigil::audit", server_id = %id, key_version = server.key_version,
            fingerprint = %rotation.fingerprint, by = %rotation.added_by, "key rotated");
        Ok(server.key_version)
    }
}

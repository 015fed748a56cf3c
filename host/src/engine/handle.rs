//! The engine's protocol: the cheap-clone [`EngineHandle`] request handlers hold, the
//! `Command`s it queues for the writer, and the answers that come back ([`Ack`],
//! [`WriteError`], and the writer-side `Reply` held until a batch's commit is decided).
//!
//! A handle reads shared state (identities, the active policy, the shadow's report, counters)
//! without the writer and sends everything else through the writer's bounded queue. This module
//! never folds, commits or touches storage; the writer (`writer.rs`) does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::stats::{EngineStats, StatsSnapshot};
use super::{Activation, ActivationOutcome, ShadowReport};
use crate::ingest::verified::{Identity, RejectionNotice, VerifiedHeartbeat};
use crate::policy::LoadedPolicy;
use crate::store::{ChangeNotice, NewServer, ServerRecord};

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
    /// How long after this heartbeat's arrival the policy next needs to look at the server
    /// (its `next-check-at-ms` minus the heartbeat's evaluation time), if it asked for one.
    pub next_check_in_ms: Option<i64>,
    /// The snapshot's named scores after the fold (a compat answer reads the policy's
    /// `grace_seconds` from them).
    pub scores: crate::store::Scores,
    /// The signals this fold raised (none for an exact repeat).
    pub signals: Vec<String>,
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
    /// The server is retired: nothing about it changes any more.
    #[error("server {0} is retired")]
    Retired(String),
    /// The queue in front of the writer is full.
    #[error("the writer queue is full")]
    Overloaded,
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    Closed,
}

/// What an operator does to a registered server (see [`EngineHandle::manage`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ServerAction {
    /// Changes the named fields (`None`: unchanged; `Some(None)`: cleared). `labels` replaces
    /// the whole set.
    Edit {
        /// New display name.
        display_name: Option<Option<String>>,
        /// New cluster.
        cluster_id: Option<Option<String>>,
        /// New labels.
        labels: Option<BTreeMap<String, String>>,
    },
    /// Status shown as `paused`, no alerts, no deadlines (heartbeats are still stored and
    /// folded, so history stays whole). Pausing a paused server changes nothing.
    Pause {
        /// Why (audited).
        reason: Option<String>,
    },
    /// Ends a pause; the deadline is back in force (a server silent meanwhile turns offline).
    Resume,
    /// Sets (`Some`, checked by the caller) or clears (`None`) the server's schedule; the
    /// policy sees it from the server's next event on.
    Schedule {
        /// The new schedule.
        schedule: Option<crate::store::StoredSchedule>,
    },
    /// Hidden from the directory and rankings for good; history kept, the id stays taken.
    Retire {
        /// Why (audited).
        reason: Option<String>,
    },
}

impl ServerAction {
    /// The audit row's `action`.
    pub fn name(&self) -> &'static str {
        match self {
            ServerAction::Edit { .. } => "edit",
            ServerAction::Pause { .. } => "pause",
            ServerAction::Resume => "resume",
            ServerAction::Schedule { .. } => "schedule",
            ServerAction::Retire { .. } => "retire",
        }
    }
}

/// An operator's [`ServerAction`] on one server, with who and when.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEdit {
    /// The server.
    pub server_id: String,
    /// Who (`admin` or `key:<name>`), recorded in the audit row.
    pub actor: String,
    /// When.
    pub at_ms: i64,
    /// What.
    pub action: ServerAction,
}

/// Where the writer sends one answer (a oneshot: each request gets exactly one).
pub(super) type Responder<T> = oneshot::Sender<Result<T, WriteError>>;

/// What a handle asks the writer to do, in queue order.
pub(super) enum Command {
    Heartbeat(Box<VerifiedHeartbeat>, Responder<Ack>),
    Reject(Box<RejectionNotice>, Responder<()>),
    Register(Box<NewServer>, Responder<()>),
    SetVerified(String, bool, Responder<()>),
    RotateKey(Box<crate::store::KeyRotation>, Responder<u32>),
    RegisterMany(Vec<NewServer>, Responder<Vec<Result<(), WriteError>>>),
    Manage(Box<ServerEdit>, Responder<ServerRecord>),
    Activate(Box<Activation>, Responder<ActivationOutcome>),
    Shadow(Option<Arc<LoadedPolicy>>, oneshot::Sender<()>),
    /// Another host changed a server (shared backends): re-read it.
    Refresh(ChangeNotice),
    FailNextCommit,
}

/// The running shadow's report, if any: written by the writer when a shadow starts or stops,
/// read by `GET /v1/policies/shadow`. std mutexes: short critical sections, never awaited.
pub(super) type ShadowSlot = Arc<std::sync::Mutex<Option<Arc<std::sync::Mutex<ShadowReport>>>>>;

/// The active policy, shared by the writer (who swaps it) and every reader. A std `RwLock`
/// around an `Arc` because a read is one pointer clone that never awaits, swaps are rare, and
/// readers that hold the old `Arc` (an in-flight batch) keep it alive until they finish.
pub(super) type SharedPolicy = Arc<RwLock<Arc<LoadedPolicy>>>;

/// Shared identity cache: read by every request, written only by the writer after a commit.
/// A std `RwLock` because critical sections are a map lookup and never await.
pub(super) type IdentityCache = Arc<RwLock<HashMap<String, Arc<Identity>>>>;

/// A cheap-clone handle to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    /// Bounded: a full queue answers 503 instead of growing memory.
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) identities: IdentityCache,
    pub(super) stats: Arc<EngineStats>,
    pub(super) policy: SharedPolicy,
    pub(super) shadow: ShadowSlot,
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

    /// Folds and stores several verified heartbeats (a batch request's admitted items): one
    /// answer per heartbeat, in order, each after the commit of the writer batch it landed in.
    ///
    /// The queue takes them all or none (one slot each, reserved at once, so the queue stays
    /// bounded in heartbeats): when it has no room for all, every one is answered
    /// [`WriteError::Overloaded`]. They are queued in order from one task, so heartbeats of
    /// one server are folded in the order given. Each is its own writer command, so they join
    /// the writer's group commit like single requests (a large batch may span two commits; a
    /// failed commit fails exactly the heartbeats in it).
    pub async fn submit_heartbeats(
        &self,
        heartbeats: Vec<VerifiedHeartbeat>,
    ) -> Vec<Result<Ack, WriteError>> {
        let n = heartbeats.len();
        if n == 0 {
            return Vec::new();
        }
        let permits = match self.tx.try_reserve_many(n) {
            Ok(permits) => permits,
            Err(e) => {
                let error = match e {
                    mpsc::error::TrySendError::Full(()) => WriteError::Overloaded,
                    mpsc::error::TrySendError::Closed(()) => WriteError::Closed,
                };
                return vec![Err(error); n];
            }
        };
        let mut answers = Vec::with_capacity(n);
        for (permit, heartbeat) in permits.zip(heartbeats) {
            let (reply, answer) = oneshot::channel();
            permit.send(Command::Heartbeat(Box::new(heartbeat), reply));
            answers.push(answer);
        }
        let mut out = Vec::with_capacity(n);
        for answer in answers {
            out.push(answer.await.unwrap_or(Err(WriteError::Closed)));
        }
        out
    }

    /// Appends a rejection (folded into the named server's policy when it is known).
    pub async fn record_rejection(&self, notice: RejectionNotice) -> Result<(), WriteError> {
        self.ask(|r| Command::Reject(Box::new(notice), r)).await
    }

    /// Registers a server (unverified).
    pub async fn register(&self, server: NewServer) -> Result<(), WriteError> {
        self.ask(|r| Command::Register(Box::new(server), r)).await
    }

    /// Registers several servers in one transaction (one queue slot for all): one answer per
    /// server, in order.
    pub async fn register_many(
        &self,
        servers: Vec<NewServer>,
    ) -> Result<Vec<Result<(), WriteError>>, WriteError> {
        self.ask(|r| Command::RegisterMany(servers, r)).await
    }

    /// Applies an operator's change to a server (stored with its audit row, then mirrored in
    /// the working set); answers the server as it now stands.
    pub async fn manage(&self, edit: ServerEdit) -> Result<ServerRecord, WriteError> {
        self.ask(|r| Command::Manage(Box::new(edit), r)).await
    }

    /// Sets or clears the operator's verified flag.
    pub async fn set_verified(&self, server_id: &str, verified: bool) -> Result<(), WriteError> {
        self.ask(|r| Command::SetVerified(server_id.to_owned(), verified, r))
            .await
    }

    /// Rotates a server's key (operator or agent); answers the new key version after the commit.
    pub async fn rotate_key(&self, rotation: crate::store::KeyRotation) -> Result<u32, WriteError> {
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
    /// Weak: background tasks must not keep the writer's queue open.
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

/// An answer the writer holds until its batch's commit is decided.
pub(super) enum Reply {
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
    /// Sends the answer, or `failure` instead when the batch failed.
    pub(super) fn send(self, failure: Option<&WriteError>) {
        // A closed receiver means the client went away; its row is committed (or not) anyway.
        match (self, failure) {
            (Reply::Heartbeat(tx, _), Some(e)) => drop(tx.send(Err(e.clone()))),
            (Reply::Heartbeat(tx, r), None) => drop(tx.send(r)),
            (Reply::Unit(tx, _), Some(e)) => drop(tx.send(Err(e.clone()))),
            (Reply::Unit(tx, r), None) => drop(tx.send(r)),
        }
    }
}

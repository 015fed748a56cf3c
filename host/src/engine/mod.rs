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

pub mod fold;
pub mod replay;
mod shared;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::ingest::decode::DecodedHeartbeat;
use crate::ingest::signature::PublicKey;
use crate::policy::LoadedPolicy;
use crate::store::{
    ChangeNotice, HeartbeatRow, NewServer, RejectionRow, ServerRecord, Snapshot, SnapshotRow,
    Store, StoreError, WriteBatch,
};
use fold::{FoldEffects, catch_up, fold_heartbeat, fold_rejection};

/// Milliseconds since the Unix epoch, from the host clock.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// What a request handler needs to know about a server to verify a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The server.
    pub server_id: String,
    /// Its current key.
    pub public_key: PublicKey,
    /// The current key's version.
    pub key_version: u32,
    /// Operator-verified.
    pub is_verified: bool,
}

impl Identity {
    fn of(server: &ServerRecord) -> Option<Self> {
        Some(Self {
            server_id: server.server_id.clone(),
            public_key: PublicKey::from_base64(&server.public_key).ok()?,
            key_version: server.key_version,
            is_verified: server.is_verified,
        })
    }
}

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
        }
    }
}

/// A heartbeat that passed every check a handler can make alone.
#[derive(Debug, Clone)]
pub struct VerifiedHeartbeat {
    /// The decoded body.
    pub decoded: DecodedHeartbeat,
    /// The body as received (JSON text), stored verbatim.
    pub body_text: String,
    /// Host receive time.
    pub received_at_ms: i64,
    /// Whether a signature was verified.
    pub signed: bool,
    /// Client address, for the audit trail.
    pub source_ip: Option<String>,
}

/// A refused request to append (and fold, when it names a known server).
#[derive(Debug, Clone)]
pub struct RejectionNotice {
    /// Host receive time.
    pub received_at_ms: i64,
    /// Stable problem code.
    pub code: &'static str,
    /// HTTP status answered.
    pub http_status: u16,
    /// Detail sent to the client.
    pub detail: String,
    /// The claimed server, if readable.
    pub claimed_server_id: Option<String>,
    /// Client address.
    pub source_ip: Option<String>,
    /// `sha256:<hex>` of the body.
    pub body_sha256: Option<String>,
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
    /// The queue in front of the writer is full.
    #[error("the writer queue is full")]
    Overloaded,
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    Closed,
}

enum Command {
    Heartbeat(
        Box<VerifiedHeartbeat>,
        oneshot::Sender<Result<Ack, WriteError>>,
    ),
    Reject(
        Box<RejectionNotice>,
        oneshot::Sender<Result<(), WriteError>>,
    ),
    Register(Box<NewServer>, oneshot::Sender<Result<(), WriteError>>),
    SetVerified(String, bool, oneshot::Sender<Result<(), WriteError>>),
    /// Another host changed a server (shared backends): re-read it.
    Refresh(ChangeNotice),
    FailNextCommit,
}

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
    policy: Arc<LoadedPolicy>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("policy", &self.policy.digest())
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

    /// The active policy.
    pub fn policy(&self) -> &Arc<LoadedPolicy> {
        &self.policy
    }

    /// The engine's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

/// Loads every server, then spawns the writer. The writer stops when every handle is dropped,
/// after finishing what is queued.
pub async fn start(
    store: Arc<dyn Store>,
    policy: Arc<LoadedPolicy>,
    max_batch: usize,
    queue_capacity: usize,
) -> Result<(EngineHandle, JoinHandle<()>), StoreError> {
    let records = store.load_servers().await?;
    let mut servers = HashMap::with_capacity(records.len());
    let mut identities = HashMap::with_capacity(records.len());
    let mut deadlines = BTreeSet::new();
    for record in records {
        match Identity::of(&record) {
            Some(identity) => {
                identities.insert(record.server_id.clone(), Arc::new(identity));
            }
            None => tracing::error!(server_id = %record.server_id, "stored public key is invalid"),
        }
        if let Some(at) = record.snapshot.next_check_at_ms {
            deadlines.insert((at, record.server_id.clone()));
        }
        servers.insert(record.server_id.clone(), record);
    }
    tracing::info!(servers = servers.len(), policy = %policy.digest(), "engine loaded");
    let (tx, rx) = mpsc::channel(queue_capacity);
    let identities = Arc::new(RwLock::new(identities));
    let stats = Arc::new(EngineStats::default());
    let writer = Writer {
        store,
        policy: policy.clone(),
        servers,
        deadlines,
        identities: identities.clone(),
        stats: stats.clone(),
        rx,
        max_batch,
        fail_next_commit: false,
    };
    let changes = shared::forward_changes(writer.store.as_ref(), tx.downgrade()).await?;
    let task = tokio::spawn(async move {
        writer.run().await;
        if let Some(forwarder) = changes {
            forwarder.abort();
        }
    });
    Ok((
        EngineHandle {
            tx,
            identities,
            stats,
            policy,
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
    /// Locking the batch's rows failed (shared backends): the batch fails without a commit.
    lock_failure: Option<StoreError>,
}

struct Writer {
    store: Arc<dyn Store>,
    policy: Arc<LoadedPolicy>,
    servers: HashMap<String, ServerRecord>,
    /// (deadline, server): the earliest is the next tick.
    deadlines: BTreeSet<(i64, String)>,
    identities: IdentityCache,
    stats: Arc<EngineStats>,
    rx: mpsc::Receiver<Command>,
    max_batch: usize,
    fail_next_commit: bool,
}

impl Writer {
    async fn run(mut self) {
        let mut commands = Vec::with_capacity(self.max_batch);
        loop {
            let sleep = match self.deadlines.first() {
                Some((at, _)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                received = self.rx.recv_many(&mut commands, self.max_batch) => {
                    if received == 0 {
                        break;
                    }
                }
                () = tokio::time::sleep(sleep) => {}
            }
            self.process(std::mem::take(&mut commands)).await;
        }
        tracing::info!("engine writer stopped");
    }

    async fn process(&mut self, commands: Vec<Command>) {
        let mut pending = Pending::default();
        let now = now_ms();
        let mut commands = VecDeque::from(commands);
        // On a shared database, lock (and refresh) what this batch folds before folding it;
        // a barrier command below commits, so what follows it is locked anew.
        let shared = self.store.is_shared();
        if shared {
            self.lock_ahead(&commands, Some(now), &mut pending).await;
        }
        self.fire_due_ticks(now, &mut pending);
        let mut locked = true;
        while let Some(command) = commands.pop_front() {
            if shared && !locked {
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
                Command::Register(server, reply) => {
                    self.flush(std::mem::take(&mut pending)).await;
                    locked = false;
                    let _ = reply.send(self.register(*server).await);
                }
                Command::SetVerified(id, verified, reply) => {
                    self.flush(std::mem::take(&mut pending)).await;
                    locked = false;
                    let _ = reply.send(self.set_verified(&id, verified).await);
                }
                Command::Refresh(notice) => {
                    self.flush(std::mem::take(&mut pending)).await;
                    locked = false;
                    self.refresh(notice).await;
                }
                Command::FailNextCommit => self.fail_next_commit = true,
            }
        }
        self.flush(pending).await;
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

    fn record_effects(&self, effects: FoldEffects, pending: &mut Pending) {
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
            self.touch(&id, pending);
            let Some(server) = self.servers.get_mut(&id) else {
                self.deadlines.remove(&(at, id));
                continue;
            };
            let mut effects = FoldEffects::default();
            catch_up(&self.policy, server, now, &mut effects);
            self.record_effects(effects, pending);
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
        if server.snapshot.last_signature.as_deref() == Some(hb.decoded.signature.as_str()) {
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
            self.record_effects(effects, pending);
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
            signature: if hb.signed {
                hb.decoded.signature.clone()
            } else {
                String::new()
            },
            body: hb.body_text.clone(),
            policy_digest: policy.digest().to_owned(),
        });
        pending.accepted += 1;
        let answer = ack(&server.snapshot, false);
        self.record_effects(effects, pending);
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
            self.record_effects(effects, pending);
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

    async fn flush(&mut self, mut pending: Pending) {
        for id in pending.before.keys() {
            if let Some(server) = self.servers.get(id) {
                pending.batch.snapshots.push(SnapshotRow {
                    server_id: id.clone(),
                    snapshot: server.snapshot.clone(),
                });
            }
        }
        let result = if let Some(e) = pending.lock_failure.take() {
            self.store.abandon().await;
            Err(e)
        } else if self.fail_next_commit && !pending.batch.is_empty() {
            self.fail_next_commit = false;
            self.store.abandon().await;
            Err(StoreError::Corrupt("injected commit failure".into()))
        } else {
            self.store.commit(&pending.batch).await
        };
        let failure = match result {
            Ok(()) => {
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
                for (id, snapshot) in pending.before.drain() {
                    if let Some(server) = self.servers.get_mut(&id) {
                        server.snapshot = snapshot;
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

    async fn register(&mut self, server: NewServer) -> Result<(), WriteError> {
        match self.store.insert_server(&server).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(WriteError::Conflict(server.server_id)),
            Err(e) => return Err(WriteError::Storage(e.to_string())),
        }
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
        tracing::info!(server_id = %record.server_id, "server registered");
        self.servers.insert(record.server_id.clone(), record);
        Ok(())
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
}

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
//!
//! This file is the index: [`start`] and the re-exports. The rooms, one concern each:
//! `handle.rs` (the protocol: handle, commands, answers), `stats.rs` (counters), `writer.rs`
//! (the loop, ticks, the fold of each event), `commit.rs` (group commit and its outcome),
//! `servers.rs` (registration, verification, key rotation), `shared.rs` (several hosts on one
//! database), `host_periods.rs` (the host's own up-periods; a restart is not the servers' fault), `swap.rs` (policy activation, rebuild, probation), `shadow.rs`, [`fold`],
//! [`rollup`], [`replay`], [`backtest`] and [`observe`].

mod activator;
pub mod backtest;
mod commit;
pub mod fold;
mod handle;
mod host_periods;
pub mod observe;
pub mod replay;
pub mod rollup;
mod servers;
mod shadow;
mod shared;
mod stats;
mod swap;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ingest::verified::Identity;
use crate::policy::LoadedPolicy;
use crate::store::{Store, StoreError};
pub use handle::{Ack, EngineHandle, ServerAction, ServerEdit, WeakEngineHandle, WriteError};
use handle::{ShadowSlot, SharedPolicy};
pub use observe::Observers;
pub use shadow::{Disagreement, Judgement, ShadowReport};
pub use stats::{EngineStats, StatsSnapshot};
pub use swap::{Activation, ActivationOutcome, Probation};
use writer::Writer;

/// Loads every server, then spawns the writer. The writer stops when every handle is dropped,
/// after finishing what is queued.
pub async fn start(
    store: Store,
    policy: Arc<LoadedPolicy>,
    max_batch: usize,
    queue_capacity: usize,
    observers: Observers,
) -> Result<(EngineHandle, JoinHandle<()>), StoreError> {
    let host_run = store.begin_host_run(crate::clock::now_ms()).await?;
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
    let store_for_marks = store.clone();
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
        alive_marks: Some(host_periods::spawn_alive_marks(store_for_marks, host_run)),
        host_run,
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

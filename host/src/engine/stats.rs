//! The engine's counters: what the writer counts as it folds and commits, read by `/healthz`
//! and `/metrics` through [`super::EngineHandle::stats`].
//!
//! This module only holds and reads counters; it never decides anything from them (the
//! probation in `swap.rs` reads two of them, it does not live here).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of the engine (exposed by `/healthz` and `/metrics`). Relaxed atomics: only the
/// writer task writes, any request reads, and no counter orders other memory.
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

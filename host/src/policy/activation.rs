//! What an activation asks of the engine, and the narrow trait it asks through.
//!
//! The registry validates, stores and chooses versions; making one active (between two
//! batches, with a rebuild and a probation), running a shadow and re-reading what another host
//! changed are the engine's. [`Activator`] is the whole of what the policy room needs from the
//! engine; the engine implements it, so this room never imports the engine and the registry is
//! built once the engine runs. This module holds only the requests, the answers and the trait;
//! it never swaps anything itself.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use super::LoadedPolicy;
use crate::store::ChangeNotice;

/// When a freshly activated version is rolled back by itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probation {
    /// How many of its first evaluations are watched.
    pub evaluations: u64,
    /// The share of those that may fail; more rolls the version back.
    pub max_failure_share: f64,
}

/// A request to make a policy the active one.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The loaded, validated version.
    pub policy: Arc<LoadedPolicy>,
    /// Who asks (`admin`, `watched-folder`, `config`, ...), for the activation log.
    pub who: String,
    /// Why, for the activation log.
    pub reason: String,
    /// Roll back to the current version if the new one fails too often at first.
    pub probation: Option<Probation>,
    /// Already in the activation log: another host sharing the database activated it and this
    /// host follows (nothing is recorded again; that host runs the probation).
    pub recorded: bool,
}

/// What an activation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivationOutcome {
    /// The digest active before.
    pub previous: String,
    /// The digest active now.
    pub active: String,
    /// `false` when the version was already active (nothing recorded).
    pub changed: bool,
    /// Snapshots queued for rebuild.
    pub rebuilds: u64,
}

/// Why the engine did not do what an [`Activator`] call asked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ActivationError {
    /// The activation could not be recorded.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    Closed,
}

/// The engine, as the policy room sees it. Implemented by the engine's handle.
#[async_trait]
pub trait Activator: Send + Sync + 'static {
    /// The active version (the one new events are folded with).
    fn active(&self) -> Arc<LoadedPolicy>;

    /// Makes `activation.policy` the active version (recorded unless already recorded).
    async fn activate(&self, activation: Activation) -> Result<ActivationOutcome, ActivationError>;

    /// Starts (replacing any) or stops (`None`) shadow evaluation of a candidate.
    async fn set_shadow(&self, policy: Option<Arc<LoadedPolicy>>) -> Result<(), ActivationError>;

    /// Passes on what another host sharing the database changed about a server (or a resync),
    /// for the engine to re-read; the change follower (`watch.rs`) calls it.
    async fn refresh(&self, notice: ChangeNotice);
}

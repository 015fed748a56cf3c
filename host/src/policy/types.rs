//! The policy room's vocabulary: what a policy is told (facts, events), what it answers once
//! validated (verdicts, outcomes), what it says about itself (descriptions), the limits every
//! call runs under, and why a load or an evaluation failed.
//!
//! Plain data only: this module never touches wasmtime, the generated bindings, storage or
//! HTTP (the conversions to and from the WIT types are `convert.rs`'s).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::PolicyConfig;
use crate::ingest::decode::DecodedHeartbeat;

/// Why a policy could not be loaded or an evaluation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The bytes are not a loadable component for this host (bad bytes, wrong world major).
    #[error("policy cannot be loaded: {0}")]
    Load(String),
    /// A configured parameter is unknown to the policy or has the wrong type.
    #[error("policy parameter: {0}")]
    Params(String),
    /// The guest trapped (panic, unreachable, memory limit, ...).
    #[error("policy trapped: {0}")]
    Trap(String),
    /// The guest used up its fuel (a loop, or too much work for one event).
    #[error("policy ran out of fuel")]
    OutOfFuel,
    /// The guest returned `err`.
    #[error("policy returned an error: {0}")]
    Guest(String),
    /// The guest returned something out of range (NaN, > 100, oversized state, ...).
    #[error("policy returned invalid output: {0}")]
    InvalidOutput(String),
}

impl PolicyError {
    /// Every [`PolicyError::kind`], so counters can start at zero for each.
    pub const KINDS: [&'static str; 6] = [
        "load",
        "params",
        "trap",
        "out_of_fuel",
        "guest_error",
        "invalid_output",
    ];

    /// A short stable label for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::Load(_) => "load",
            PolicyError::Params(_) => "params",
            PolicyError::Trap(_) => "trap",
            PolicyError::OutOfFuel => "out_of_fuel",
            PolicyError::Guest(_) => "guest_error",
            PolicyError::InvalidOutput(_) => "invalid_output",
        }
    }
}

/// Limits applied to every evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Fuel per call.
    pub fuel: u64,
    /// Linear memory cap, bytes.
    pub memory_bytes: usize,
    /// Largest returned state, bytes.
    pub max_state_bytes: usize,
    /// Largest returned assessment (names of scores, badges, signals), bytes.
    pub max_output_bytes: usize,
    /// Calls one instance serves before a fresh one is made (1 = a fresh instance per call).
    pub reuse_instance_calls: u32,
}

impl From<&PolicyConfig> for PolicyLimits {
    fn from(c: &PolicyConfig) -> Self {
        Self {
            fuel: c.fuel,
            memory_bytes: c.memory_bytes,
            max_state_bytes: c.max_state_bytes,
            max_output_bytes: c.max_output_bytes,
            reuse_instance_calls: c.reuse_instance_calls,
        }
    }
}

/// A declared parameter, for the directory and operators.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamDescription {
    /// Name.
    pub name: String,
    /// What it changes.
    pub description: String,
    /// Default value.
    pub default: serde_json::Value,
}

/// What a policy says about itself (`describe()`), plus its digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyDescription {
    /// Name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// History a replay needs, seconds (0 = all).
    pub history_window_seconds: u64,
    /// Declared parameters.
    pub params: Vec<ParamDescription>,
}

/// What the host knows about a server.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerFacts {
    /// Identifier.
    pub server_id: String,
    /// Operator-verified.
    pub is_verified: bool,
    /// Current key version.
    pub key_version: u32,
    /// Registration time.
    pub registered_at_ms: i64,
    /// The schedule an operator set (a 1.3 policy sees it; older ones do not).
    pub schedule: Option<Schedule>,
}

/// When a scheduled server is expected to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cadence {
    /// Every this many seconds (1 to 30 days).
    Period(u32),
    /// At every time a five-field cron expression names, read in an IANA time zone.
    Cron {
        /// The expression, e.g. `0 3 * * *`.
        expression: String,
        /// The zone, e.g. `Europe/Berlin`.
        time_zone: String,
    },
}

/// An operator-set schedule: cadence, grace and the longest a run may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schedule {
    /// When reports are expected.
    pub cadence: Cadence,
    /// How late a report may be, seconds.
    pub grace_seconds: u32,
    /// The longest a run may take from `start` to its end, seconds; `None` for no limit.
    pub max_run_seconds: Option<u32>,
}

/// How the host authenticated a heartbeat (the WIT `auth-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// A verified Ed25519 signature.
    Signature,
    /// A per-server token.
    Token,
    /// An operator's API key.
    ApiKey,
    /// Nothing but the network.
    Network,
}

impl AuthKind {
    /// Whether this is a verified signature (what a 1.0 to 1.2 guest sees as `signed`).
    pub fn is_signature(self) -> bool {
        self == AuthKind::Signature
    }
}

/// An event to fold.
#[derive(Debug, Clone, Copy)]
pub enum PolicyEvent<'a> {
    /// An accepted heartbeat.
    Heartbeat {
        /// Host receive time.
        received_at_ms: i64,
        /// How the host authenticated it (`Signature` exactly when a signature was verified).
        auth: AuthKind,
        /// The decoded body.
        heartbeat: &'a DecodedHeartbeat,
    },
    /// A refused request naming the server.
    Rejected {
        /// Host receive time.
        received_at_ms: i64,
        /// The problem code answered.
        code: &'a str,
    },
    /// A deadline the policy asked for passed.
    Tick,
    /// The host was down from `down_at_ms` and came back at `up_at_ms` (the evaluation's
    /// `now_ms`). A 1.4 guest is called with `resume`; an older one sees a `tick`.
    HostResumed {
        /// When the host was last known alive.
        down_at_ms: i64,
        /// When it came back.
        up_at_ms: i64,
    },
}

impl PolicyEvent<'_> {
    /// `heartbeat`, `rejected`, `tick` or `host_resumed`.
    pub fn cause(&self) -> &'static str {
        match self {
            PolicyEvent::Heartbeat { .. } => "heartbeat",
            PolicyEvent::Rejected { .. } => "rejected",
            PolicyEvent::Tick => "tick",
            PolicyEvent::HostResumed { .. } => "host_resumed",
        }
    }
}

/// A validated assessment.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `online`, `offline` or `unknown`.
    pub status: &'static str,
    /// `green`, `yellow` or `red`.
    pub confidence: &'static str,
    /// 0–100.
    pub uptime_percent: f64,
    /// 0–100.
    pub quality_score: f64,
    /// Named scores.
    pub scores: BTreeMap<String, f64>,
    /// Badges.
    pub badges: Vec<String>,
    /// Signals raised by this event.
    pub signals: Vec<String>,
    /// When to tick.
    pub next_check_at_ms: Option<i64>,
}

/// One event of a run ([`LoadedPolicy::evaluate_run`]), with the host's clock for it.
///
/// [`LoadedPolicy::evaluate_run`]: super::LoadedPolicy::evaluate_run
#[derive(Debug, Clone, Copy)]
pub struct TimedEvent<'a> {
    /// The host's clock for this event (what `now_ms` is to
    /// [`LoadedPolicy::evaluate`](super::LoadedPolicy::evaluate)).
    pub now_ms: i64,
    /// The event.
    pub event: PolicyEvent<'a>,
}

/// What a run folded: the first `verdicts.len()` events of the run, each validated as a
/// single evaluation would be.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The assessment of each folded event, in order.
    pub verdicts: Vec<Verdict>,
    /// The state after the last folded event (`None` when none was).
    pub state: Option<Vec<u8>>,
    /// Fuel the whole call used.
    pub fuel_used: u64,
}

/// A validated evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// New opaque state.
    pub state: Vec<u8>,
    /// The assessment.
    pub verdict: Verdict,
    /// Fuel the call used (≈ WebAssembly instructions executed, the argument and result
    /// copies' guest allocations included): a load-independent measure of a policy's cost.
    pub fuel_used: u64,
}

/// Which calls a loaded policy is evaluated with, decided at load by its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAbi {
    /// Built against `vigil:policy@1.0.x`: `evaluate`, with the parameters on every call.
    ParamsPerCall,
    /// Built against `vigil:policy@1.1`: `configure` once per instance, then
    /// `evaluate-configured` without the parameters.
    Configured,
    /// Built against `vigil:policy@1.2`: as [`PolicyAbi::Configured`], and a run of
    /// events about one server folds in one call
    /// ([`LoadedPolicy::evaluate_run`](super::LoadedPolicy::evaluate_run)).
    Runs,
    /// Built against `vigil:policy@1.3`: as [`PolicyAbi::Runs`], with the 1.3 facts
    /// and events (`evaluate-ext`, `evaluate-run-ext`): the schedule, the kind of
    /// authentication and the job run reach the policy.
    Extended,
    /// Built against `vigil:policy@1.4` or later: as [`PolicyAbi::Extended`], and told about
    /// the host's own downtime (`resume`, [`PolicyEvent::HostResumed`]).
    Resuming,
}

impl PolicyAbi {
    /// Whether a run of events folds in one call (1.2 or later).
    pub fn folds_runs(self) -> bool {
        matches!(
            self,
            PolicyAbi::Runs | PolicyAbi::Extended | PolicyAbi::Resuming
        )
    }
}

pub use crate::crypto::digest_of;

#[cfg(test)]
mod kind_tests {
    use super::PolicyError;

    #[test]
    fn kinds_lists_every_error_kind() {
        let all = [
            PolicyError::Load(String::new()),
            PolicyError::Params(String::new()),
            PolicyError::Trap(String::new()),
            PolicyError::OutOfFuel,
            PolicyError::Guest(String::new()),
            PolicyError::InvalidOutput(String::new()),
        ];
        let kinds: Vec<_> = all.iter().map(PolicyError::kind).collect();
        assert_eq!(kinds, PolicyError::KINDS);
    }
}

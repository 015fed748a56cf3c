//! # vigil-policy-sdk
//!
//! The crate Vigil policy authors depend on. A policy is a pure fold: the host hands it one
//! [`Event`] about one server, the server's [`Facts`], the policy's own previous state bytes and
//! the host's clock value, and the policy answers with an [`Evaluation`]: its new state bytes
//! and an [`Assessment`] (status, confidence, uptime, quality, ...).
//!
//! Write a type implementing [`Policy`] and hand it to [`export_policy!`]:
//!
//! ```
//! use vigil_policy_sdk::{
//!     Assessment, Confidence, Evaluation, Event, Facts, ParamSpec, Params, Policy, PolicyInfo,
//!     Status,
//! };
//!
//! pub struct AlwaysOnline;
//!
//! impl Policy for AlwaysOnline {
//!     fn describe() -> PolicyInfo {
//!         PolicyInfo {
//!             name: "always-online".into(),
//!             version: "1.0.0".into(),
//!             history_window_seconds: 0,
//!             params: vec![ParamSpec::number("quality", "The quality score to report.", 50.0)],
//!         }
//!     }
//!
//!     fn evaluate(
//!         params: &Params,
//!         _facts: &Facts,
//!         _state: Option<&[u8]>,
//!         _now_ms: i64,
//!         _event: &Event,
//!     ) -> Result<Evaluation, String> {
//!         let mut assessment = Assessment::new(Status::Online, Confidence::Yellow);
//!         assessment.uptime_percent = 100.0;
//!         assessment.quality_score = params.number_or("quality", 50.0).clamp(0.0, 100.0);
//!         Ok(Evaluation { state: Vec::new(), assessment })
//!     }
//! }
//!
//! vigil_policy_sdk::export_policy!(AlwaysOnline);
//! # fn main() {}
//! ```
//!
//! # Layout
//!
//! The plain types in this file mirror the WIT package `vigil:policy@1.4.0` (`wit/policy.wit`
//! at the repository root) one to one (the 1.3 records: [`Facts`] is `facts-ext`,
//! [`Heartbeat`] is `heartbeat-ext`), so policy logic can be unit-tested natively with
//! `cargo test`. The raw bindings (`wit_bindgen::generate!`) live only in a hidden module that
//! exists on `wasm32` targets; [`export_policy!`] converts between them and these types. On
//! native targets [`export_policy!`] expands to nothing.

#![deny(missing_docs)]

// Lets the paths that `wit_bindgen::generate!` bakes into its export macro
// (`::vigil_policy_sdk::...`) resolve inside this crate too.
extern crate self as vigil_policy_sdk;

use std::any::Any;
use std::sync::{Arc, OnceLock};

/// The value of one policy parameter, as configured by the operator in `[policy] params`.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// A number (every TOML integer or float is passed as a double).
    Number(f64),
    /// A string.
    Text(String),
    /// A boolean switch.
    Flag(bool),
}

/// A parameter the policy understands, as declared by [`Policy::describe`].
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// The name operators use in `[policy] params`.
    pub name: String,
    /// One sentence saying what the parameter changes.
    pub description: String,
    /// The value used when the operator sets none.
    pub default: ParamValue,
}

impl ParamSpec {
    /// A number parameter.
    pub fn number(name: &str, description: &str, default: f64) -> Self {
        Self::new(name, description, ParamValue::Number(default))
    }

    /// A text parameter.
    pub fn text(name: &str, description: &str, default: &str) -> Self {
        Self::new(name, description, ParamValue::Text(default.to_string()))
    }

    /// A boolean parameter.
    pub fn flag(name: &str, description: &str, default: bool) -> Self {
        Self::new(name, description, ParamValue::Flag(default))
    }

    fn new(name: &str, description: &str, default: ParamValue) -> Self {
        Self {
            name: name.to_string(),
            description: description.to_string(),
            default,
        }
    }
}

/// What the policy says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInfo {
    /// The policy's name, lowercase `[a-z0-9-]+`, e.g. `default`.
    pub name: String,
    /// Its semantic version, e.g. `1.0.0`.
    pub version: String,
    /// How much history (seconds before the newest event) a replay must feed so that the
    /// rebuilt state equals the live one. 0 means "all of it".
    pub history_window_seconds: u64,
    /// The parameters the policy understands, with their defaults.
    pub params: Vec<ParamSpec>,
}

/// The operator's parameters for one evaluation, as `(name, value)` pairs.
///
/// The host passes every declared parameter, defaults filled in. Lookups return the first
/// pair with the given name; [`Params::with`] replaces a value in place.
///
/// A component keeps one `Params` per instance (the host hands them over once, with
/// `configure`), so a value derived from them, such as a policy's validated configuration,
/// can be computed once and kept with them: see [`Params::derived`].
#[derive(Default)]
pub struct Params {
    entries: Vec<(String, ParamValue)>,
    /// The value [`Params::derived`] computed from `entries`, type-erased. Reset by every
    /// change to `entries`; a `OnceLock` (not a `OnceCell`) so `Params` stays `Send + Sync`.
    derived: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl Clone for Params {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            // Same entries, so the same derived value.
            derived: self.derived.clone(),
        }
    }
}

impl PartialEq for Params {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl Params {
    /// Parameters from `(name, value)` pairs, in the host's order.
    pub fn new(entries: Vec<(String, ParamValue)>) -> Self {
        Self {
            entries,
            derived: OnceLock::new(),
        }
    }

    /// Every declared parameter at its default value (handy in tests).
    pub fn defaults(specs: &[ParamSpec]) -> Self {
        Self::new(
            specs
                .iter()
                .map(|spec| (spec.name.clone(), spec.default.clone()))
                .collect(),
        )
    }

    /// These parameters with `name` set to `value` (replaced in place, or appended).
    #[must_use]
    pub fn with(mut self, name: &str, value: ParamValue) -> Self {
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name.to_string(), value)),
        }
        self.derived = OnceLock::new();
        self
    }

    /// Runs `f` with the value `derive` computes from these parameters, computing it only the
    /// first time: later calls on the same `Params` (or a clone) reuse it.
    ///
    /// Made for a policy's validated configuration: the component keeps one `Params` per
    /// instance, so `derive` runs once per instance instead of once per event. `derive` must
    /// be a function of the parameters alone. One value is kept: asking for a different type
    /// `T` than the kept one computes it afresh each time (correct, just not cached).
    pub fn derived<T, R>(&self, derive: impl FnOnce(&Self) -> T, f: impl FnOnce(&T) -> R) -> R
    where
        T: Any + Send + Sync,
    {
        match self.derived.get() {
            Some(kept) => match kept.downcast_ref::<T>() {
                Some(value) => f(value),
                None => f(&derive(self)),
            },
            None => {
                let value = Arc::new(derive(self));
                let result = f(&value);
                let _ = self.derived.set(value);
                result
            }
        }
    }

    /// `self == other`, comparing strings eight bytes at a time (on wasm32 `==` on strings is
    /// a byte-by-byte `memcmp`). Used to recognise the parameters of the previous 1.0
    /// `evaluate` call, which a 1.0 host passes again on every call.
    pub fn same_as(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(
                |((name_a, value_a), (name_b, value_b))| {
                    let same_value = match (value_a, value_b) {
                        (ParamValue::Number(x), ParamValue::Number(y)) => x == y,
                        (ParamValue::Flag(x), ParamValue::Flag(y)) => x == y,
                        (ParamValue::Text(x), ParamValue::Text(y)) => same_bytes(x, y),
                        _ => false,
                    };
                    same_value && same_bytes(name_a, name_b)
                },
            )
    }

    /// The value of `name`, whatever its kind.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// The number `name`; `None` when absent or not a number.
    pub fn number(&self, name: &str) -> Option<f64> {
        match self.get(name) {
            Some(ParamValue::Number(value)) => Some(*value),
            _ => None,
        }
    }

    /// The text `name`; `None` when absent or not a text.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(ParamValue::Text(value)) => Some(value),
            _ => None,
        }
    }

    /// The flag `name`; `None` when absent or not a flag.
    pub fn flag(&self, name: &str) -> Option<bool> {
        match self.get(name) {
            Some(ParamValue::Flag(value)) => Some(*value),
            _ => None,
        }
    }

    /// The number `name`, or `default` when absent or not a number.
    pub fn number_or(&self, name: &str, default: f64) -> f64 {
        self.number(name).unwrap_or(default)
    }

    /// The text `name`, or `default` when absent or not a text.
    pub fn text_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.text(name).unwrap_or(default)
    }

    /// The flag `name`, or `default` when absent or not a flag.
    pub fn flag_or(&self, name: &str, default: bool) -> bool {
        self.flag(name).unwrap_or(default)
    }

    /// Every `(name, value)` pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.entries
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }
}

/// `a == b` eight bytes at a time.
fn same_bytes(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let word = |chunk: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        u64::from_le_bytes(w)
    };
    let (mut words_a, mut words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    words_a
        .by_ref()
        .zip(words_b.by_ref())
        .all(|(x, y)| word(x) == word(y))
        && words_a.remainder() == words_b.remainder()
}

/// What the host knows about the server, independently of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    /// The server's identifier.
    pub server_id: String,
    /// Whether an operator verified the server. Never inferred by the host.
    pub is_verified: bool,
    /// The version of the server's current signing key.
    pub key_version: u32,
    /// When the server was registered, milliseconds since the Unix epoch (UTC).
    pub registered_at_ms: i64,
    /// The schedule an operator set for the server; `None` for an unscheduled server (and
    /// always with a host older than 1.3, which does not send it).
    pub schedule: Option<Schedule>,
}

/// When a scheduled server is expected to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// Once every this many seconds (1 to 2,592,000, thirty days), counted from the previous
    /// report.
    Period(u32),
    /// At every time the cron expression names.
    Cron {
        /// A five-field cron expression, e.g. `0 3 * * *` (the host checked that it parses).
        expression: String,
        /// The IANA time zone it is read in, e.g. `Europe/Berlin`.
        time_zone: String,
    },
}

/// The schedule an operator set for a server (a cron job, a backup, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// When the server is expected to report.
    pub cadence: Cadence,
    /// How late, in seconds, a report may be before the server counts as late.
    pub grace_seconds: u32,
    /// The longest a run may take, in seconds, from its `start` to its end; `None` means no
    /// limit.
    pub max_run_seconds: Option<u32>,
}

/// How the host authenticated a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthKind {
    /// An Ed25519 signature by the server's key, verified by the host.
    Signature,
    /// A per-server token the host issued.
    Token,
    /// An API key of the operator's.
    ApiKey,
    /// Nothing but the network: an unsigned heartbeat accepted as it came.
    #[default]
    Network,
}

/// Where a job run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPhase {
    /// The job started.
    Start,
    /// The job ended with success (exit code 0).
    Success,
    /// The job ended with a failure.
    Fail,
}

/// A job run's report (the heartbeat's `run` member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Where the run is.
    pub phase: RunPhase,
    /// The job's exit status, if sent (ends only).
    pub exit_code: Option<i32>,
    /// How long the job ran, in milliseconds, if sent (ends only).
    pub duration_ms: Option<u64>,
    /// The agent's identifier of the run, tying its start to its end, if any.
    pub run_id: Option<String>,
}

/// A named metric an agent reported, e.g. `cpu_percent`.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The metric's name, as sent by the agent.
    pub name: String,
    /// Its value.
    pub value: f64,
}

/// An accepted heartbeat, as the agent sent it (the host already verified it).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Heartbeat {
    /// When the host received it, milliseconds since the Unix epoch (UTC). Equals `now_ms`.
    pub received_at_ms: i64,
    /// The agent's own timestamp, milliseconds since the Unix epoch (UTC).
    pub sent_at_ms: i64,
    /// Whether the heartbeat carried a signature the host verified.
    pub signed: bool,
    /// How the host authenticated it (a host older than 1.3 does not say: the SDK then
    /// answers `Signature` for a signed heartbeat and `Network` otherwise).
    pub auth: AuthKind,
    /// The status the agent claims (`online`, `maintenance`, ...), if any.
    pub status: Option<String>,
    /// The agent's mode (`emergency`, `idle`, `sleep`, ...), if any.
    pub mode: Option<String>,
    /// The interval the agent declares between its heartbeats, in seconds.
    pub interval_seconds: Option<u32>,
    /// How long the agent's host or process has been up, in seconds.
    pub uptime_seconds: Option<u64>,
    /// Current players or users, if the agent reports them.
    pub players_current: Option<u32>,
    /// Capacity for players or users, if reported.
    pub players_capacity: Option<u32>,
    /// The agent's software version.
    pub agent_version: Option<String>,
    /// Numeric metrics the agent reported (numbers only, sorted by name).
    pub metrics: Vec<Metric>,
    /// The job run this heartbeat reports, if any (always `None` with a host older than 1.3).
    pub run: Option<RunReport>,
}

/// A request that named this server but was refused by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// When the host received it, milliseconds since the Unix epoch (UTC). Equals `now_ms`.
    pub received_at_ms: i64,
    /// The stable error code the host answered with, e.g. `bad_signature`.
    pub code: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A verified, accepted heartbeat.
    Heartbeat(Heartbeat),
    /// A refused request naming this server (bad signature, replay, ...).
    Rejected(Rejection),
    /// Nothing arrived before the deadline the policy asked for (`next_check_at_ms`).
    Tick,
}

/// A stretch of time no host was running (WIT `host-gap`, 1.4): the host's own downtime,
/// handed to [`Policy::resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostGap {
    /// When the host was last known to be alive, milliseconds since the Unix epoch (UTC).
    pub down_at_ms: i64,
    /// When a host came back (the `now_ms` of the resume), always later than `down_at_ms`.
    pub up_at_ms: i64,
}

/// The server's derived status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Alive within the policy's grace window.
    Online,
    /// Silent past the grace window.
    Offline,
    /// Never seen.
    Unknown,
}

impl Status {
    /// The WIT name: `online`, `offline` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
            Status::Unknown => "unknown",
        }
    }
}

/// How much the status can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Confidence {
    /// Verified and consistent.
    Green,
    /// New or intermittent.
    Yellow,
    /// Stale, inconsistent or under spoof attempts.
    Red,
}

impl Confidence {
    /// The WIT name: `green`, `yellow` or `red`.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Green => "green",
            Confidence::Yellow => "yellow",
            Confidence::Red => "red",
        }
    }
}

/// A named number for rankings and leaderboards, e.g. `activity`.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// The score's name, lowercase `[a-z0-9_-]+`.
    pub name: String,
    /// Its value; must be finite.
    pub value: f64,
}

impl Score {
    /// A score named `name` with `value`.
    pub fn new(name: &str, value: f64) -> Self {
        Self {
            name: name.to_string(),
            value,
        }
    }
}

/// What the policy derived for the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The derived status.
    pub status: Status,
    /// How far the status can be trusted.
    pub confidence: Confidence,
    /// Share of the uptime window the server was online, 0 to 100.
    pub uptime_percent: f64,
    /// Overall quality, 0 to 100.
    pub quality_score: f64,
    /// Extra named scores (finite numbers).
    pub scores: Vec<Score>,
    /// Badges earned, e.g. `reliable`.
    pub badges: Vec<String>,
    /// Things the host should know happened at this event, e.g. `restart-detected`.
    pub signals: Vec<String>,
    /// When the host must send a tick if nothing else arrives, milliseconds since the Unix
    /// epoch (UTC). `None` means no deadline.
    pub next_check_at_ms: Option<i64>,
}

impl Assessment {
    /// An assessment with `status` and `confidence`, zero uptime and quality, no scores,
    /// badges or signals, and no deadline.
    pub fn new(status: Status, confidence: Confidence) -> Self {
        Self {
            status,
            confidence,
            uptime_percent: 0.0,
            quality_score: 0.0,
            scores: Vec::new(),
            badges: Vec::new(),
            signals: Vec::new(),
            next_check_at_ms: None,
        }
    }

    /// The score named `name`, if present.
    pub fn score(&self, name: &str) -> Option<f64> {
        self.scores
            .iter()
            .find(|score| score.name == name)
            .map(|score| score.value)
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The policy's new private state for this server; handed back on the next event.
    pub state: Vec<u8>,
    /// The derived assessment.
    pub assessment: Assessment,
}

/// A scoring policy: a pure fold over a server's events.
///
/// Implementations must be deterministic: the same inputs give the same outputs, always. The
/// host gives a policy no clock, randomness, files, environment or network; `now_ms` is the
/// only time there is.
pub trait Policy {
    /// Describes the policy: name, version, replay window and parameters.
    fn describe() -> PolicyInfo;

    /// Checks the operator's parameters once, when the host hands them to an instance
    /// (`configure`), before any event. An `Err` refuses them: the instance evaluates nothing.
    ///
    /// Optional: the default accepts everything, and [`Policy::evaluate`] still sees the
    /// parameters on every call. A policy that derives a configuration from its parameters can
    /// compute it here with [`Params::derived`], so that it is computed once per instance and
    /// a bad value is reported before the first event.
    fn configure(params: &Params) -> Result<(), String> {
        let _ = params;
        Ok(())
    }

    /// Folds one event into the server's state.
    ///
    /// - `params`: the operator's parameters (every declared one, defaults filled in).
    /// - `facts`: what the host knows about the server.
    /// - `state`: the state this policy returned last time, `None` for the first event.
    /// - `now_ms`: the host's clock for this event, milliseconds since the Unix epoch (UTC);
    ///   never earlier than the `now_ms` of the previous event for this server.
    /// - `event`: what happened.
    ///
    /// An `Err` fails this evaluation only: the host keeps the last good assessment.
    fn evaluate(
        params: &Params,
        facts: &Facts,
        state: Option<&[u8]>,
        now_ms: i64,
        event: &Event,
    ) -> Result<Evaluation, String>;

    /// The host was down for `gap` and is back (WIT `resume`, 1.4): folded once per server
    /// that had an event before the gap, at `now_ms` = `gap.up_at_ms`, before anything that
    /// arrives after the restart. The deadlines that fell inside the gap were not sent as
    /// ticks.
    ///
    /// Optional: the default folds a [`Event::Tick`] at `gap.up_at_ms`, i.e. the silence
    /// counts as the server's (what a host that knows nothing of its downtime would do).
    fn resume(
        params: &Params,
        facts: &Facts,
        state: Option<&[u8]>,
        gap: &HostGap,
    ) -> Result<Evaluation, String> {
        Self::evaluate(params, facts, state, gap.up_at_ms, &Event::Tick)
    }
}

/// Exports a type implementing [`Policy`] as a `vigil:policy@1.4.0` component: `describe`,
/// `configure`, `evaluate-ext`, `evaluate-run-ext`, `resume` ([`Policy::resume`]), and for older hosts `evaluate-configured`,
/// `evaluate-run` and the 1.0 `evaluate` (given the older records, [`Policy::evaluate`] sees
/// no schedule and no run).
///
/// `configure` keeps the parameters for the life of the instance (after [`Policy::configure`]
/// accepted them) and `evaluate-configured` hands them to [`Policy::evaluate`], so the host
/// copies them into the component once per instance instead of once per event.
/// `evaluate-run-ext` calls [`Policy::evaluate`] for each event of the run in turn (replay folds
/// a server's history with one call per run instead of one per event). The 1.0
/// `evaluate` (for hosts that only know 1.0) keeps them too, and reuses them while the host
/// passes the same ones again.
///
/// Use it once, in the policy crate's root, which must be a `cdylib` built with
/// `cargo build --target wasm32-wasip2 --release`. On other targets it expands to nothing, so
/// the same crate can also be an `rlib` and be unit-tested natively.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct VigilPolicyExport;

            impl $crate::__bindings::raw::Guest for VigilPolicyExport {
                fn describe() -> $crate::__bindings::raw::PolicyInfo {
                    $crate::__bindings::describe::<$policy>()
                }

                fn evaluate(
                    params: ::std::vec::Vec<$crate::__bindings::raw::Param>,
                    facts: $crate::__bindings::raw::Facts,
                    state: ::std::option::Option<::std::vec::Vec<u8>>,
                    now_ms: i64,
                    event: $crate::__bindings::raw::Event,
                ) -> ::std::result::Result<$crate::__bindings::raw::Evaluation, ::std::string::String>
                {
                    $crate::__bindings::evaluate::<$policy>(params, facts, state, now_ms, event)
                }

                fn configure(
                    params: ::std::vec::Vec<$crate::__bindings::raw::Param>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__bindings::configure::<$policy>(params)
                }

                fn evaluate_configured(
                    facts: $crate::__bindings::raw::Facts,
                    state: ::std::option::Option<::std::vec::Vec<u8>>,
                    now_ms: i64,
                    event: $crate::__bindings::raw::Event,
                ) -> ::std::result::Result<$crate::__bindings::raw::Evaluation, ::std::string::String>
                {
                    $crate::__bindings::evaluate_configured::<$policy>(facts, state, now_ms, event)
                }

                fn evaluate_run(
                    facts: $crate::__bindings::raw::Facts,
                    state: ::std::option::Option<::std::vec::Vec<u8>>,
                    events: ::std::vec::Vec<$crate::__bindings::raw::TimedEvent>,
                ) -> $crate::__bindings::raw::RunResult {
                    $crate::__bindings::evaluate_run::<$policy>(facts, state, events)
                }

                fn evaluate_ext(
                    facts: $crate::__bindings::raw::FactsExt,
                    state: ::std::option::Option<::std::vec::Vec<u8>>,
                    now_ms: i64,
                    event: $crate::__bindings::raw::EventExt,
                ) -> ::std::result::Result<$crate::__bindings::raw::Evaluation, ::std::string::String>
                {
                    $crate::__bindings::evaluate_ext::<$policy>(facts, state, now_ms, event)
                }

                fn evaluate_run_ext(
                    facts: $crate::__bindings::raw::FactsExt,
                    state: ::std::option::Option<::std::vec::Vec<u8>>,
                    events: ::std::vec::Vec<$crate::__bindings::raw::TimedEventExt>,
                ) -> $crate::__bindings::raw::RunResult {
                    $crate::__bindings::evaluate_run_ext::<$policy>(facts, state, events)
                }

                fn resume(
                    facts: $crate::__bindings::raw::FactsExt,
                    state: ::std::option::Option<::std::vec::Vec<u8>>,
                    gap: $crate::__bindings::raw::HostGap,
                ) -> ::std::result::Result<$crate::__bindings::raw::Evaluation, ::std::string::String>
                {
                    $crate::__bindings::resume::<$policy>(facts, state, gap)
                }
            }

            $crate::__bindings::raw::__export_policy_world!(
                VigilPolicyExport with_types_in $crate::__bindings::raw
            );
        };
    };
}

/// The raw component bindings and their conversions. Not part of the API: only
/// [`export_policy!`] uses them.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[path = "bindings.rs"]
pub mod __bindings;

#[cfg(test)]
mod tests {
    use super::*;

    const CODES: &str = "bad_signature,key_version_mismatch,replay,clock_skew";

    /// [`CODES`] with the byte at `at` replaced.
    fn changed_at(at: usize) -> String {
        let mut bytes = CODES.as_bytes().to_vec();
        bytes[at] = b'X';
        String::from_utf8(bytes).expect("ascii")
    }

    #[test]
    fn same_as_is_equality() {
        assert_ne!(CODES.len() % 8, 0, "the tail case below needs a tail");
        let base = Params::new(vec![
            ("grace_seconds".into(), ParamValue::Number(300.0)),
            ("spoof_codes".into(), ParamValue::Text(CODES.into())),
            ("strict".into(), ParamValue::Flag(false)),
        ]);
        let variants = [
            base.clone(),
            Params::default(),
            base.clone()
                .with("grace_seconds", ParamValue::Number(301.0)),
            // The same length, differing in a whole word, then in the tail that is not one.
            base.clone()
                .with("spoof_codes", ParamValue::Text(changed_at(8))),
            base.clone()
                .with("spoof_codes", ParamValue::Text(changed_at(CODES.len() - 1))),
            base.clone().with("spoof_codes", ParamValue::Flag(true)),
            base.clone().with("spoof_codez", ParamValue::Flag(true)),
            base.clone().with("strict", ParamValue::Flag(true)),
            base.clone()
                .with("grace_seconds", ParamValue::Number(f64::NAN)),
            base.clone().with("extra", ParamValue::Number(1.0)),
        ];
        for a in &variants {
            for b in &variants {
                assert_eq!(a.same_as(b), a == b, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn a_derived_value_is_computed_once_per_params() {
        let params = Params::new(vec![("n".into(), ParamValue::Number(2.0))]);
        let mut runs = 0;
        let mut double = |p: &Params| {
            runs += 1;
            p.number_or("n", 0.0) * 2.0
        };
        assert_eq!(params.derived(&mut double, |v| *v), 4.0);
        assert_eq!(params.derived(&mut double, |v| *v), 4.0);
        let copy = params.clone();
        assert_eq!(copy.derived(&mut double, |v| *v), 4.0, "kept by a clone");
        let changed = copy.with("n", ParamValue::Number(5.0));
        assert_eq!(changed.derived(&mut double, |v| *v), 10.0, "reset by with");
        // Another type than the kept one is computed every time, and is still right.
        assert_eq!(changed.derived(|p| p.iter().count(), |n| *n), 1);
        assert_eq!(changed.derived(&mut double, |v| *v), 10.0);
        assert_eq!(runs, 2);
    }
}

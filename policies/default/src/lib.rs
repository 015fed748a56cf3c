//! # vigil-policy-default
//!
//! Vigil's bundled scoring policy: the founding formulas for status, confidence, uptime and
//! quality. `policies/README.md` documents every rule and parameter; the code says the same
//! thing in the same order.
//!
//! It is a library as well as the `default` component, so other policies (a reputation
//! policy, say) can reuse its fold: [`Config::from_params`] validates parameters, and
//! [`evaluate`] folds one event with an explicit [`Config`].
//!
//! # Layout
//!
//! - `config`: the parameter table (names, defaults, ranges, descriptions) and [`Config`].
//! - `fold`: one event into the state, then the assessment from the state.
//! - `state`: the per-server state and its versioned, hand-written binary encoding.
//! - `ring`: one bit per minute over the uptime window.
//! - `schedule`: a scheduled server's slots (cron in its zone, or a period).
//! - `downtime`: the host's own downtime (`resume`): a fresh grace window, and out of uptime.
//!
//! The code is panic-free by construction (checked or saturating arithmetic, no indexing that
//! can fail), deterministic (no clock, randomness or hash-map iteration: only `now_ms` and the
//! inputs) and treats the state bytes as hostile input.

mod config;
mod downtime;
mod fold;
mod ring;
mod schedule;
mod state;

#[cfg(test)]
mod tests;

pub use config::{
    Config, DEFAULT_SPOOF_CODES, MAX_GRACE_SECONDS, MAX_INTERVAL_GRACE_SECONDS,
    MAX_UPTIME_WINDOW_SECONDS, param_specs,
};
pub use downtime::resume;
pub use fold::{
    SIGNAL_CAME_ONLINE, SIGNAL_EMERGENCY, SIGNAL_INCONSISTENT, SIGNAL_JOB_FAILED, SIGNAL_RESTART,
    SIGNAL_RUN_OVERDUE, SIGNAL_SPOOF, SIGNAL_WENT_OFFLINE, evaluate,
};
pub use ring::{MinuteRing, minute_of};
pub use schedule::{Expected, MAX_WINDOWS, SlotState, WINDOW_HORIZON_MS};
pub use state::{
    HOST_GAPS_FLAG, LastHeartbeat, MAX_FLIPS, MAX_HOST_GAPS, MAX_SPOOFS, STATE_VERSION,
    STATE_VERSION_SCHEDULED, State,
};

use vigil_policy_sdk::{Evaluation, Event, Facts, HostGap, Params, Policy, PolicyInfo};

/// The policy's name.
pub const NAME: &str = "default";
/// The policy's version. `VIGIL_POLICY_VERSION` at build time overrides it (the host's tests
/// build distinct versions of the same policy to swap between; the bundled build never sets it).
pub const VERSION: &str = match option_env!("VIGIL_POLICY_VERSION") {
    Some(v) => v,
    None => "1.3.0",
};
/// How much history a replay needs: the longest uptime window plus the longest grace (a
/// declared interval's), since a heartbeat up to one grace before the window still covers
/// minutes inside it, and is still the server's last heartbeat.
pub const HISTORY_WINDOW_SECONDS: u64 =
    (MAX_UPTIME_WINDOW_SECONDS as u64) + (MAX_INTERVAL_GRACE_SECONDS as u64);

/// The default policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl Policy for DefaultPolicy {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: NAME.to_string(),
            version: VERSION.to_string(),
            history_window_seconds: HISTORY_WINDOW_SECONDS,
            params: param_specs(),
        }
    }

    fn configure(params: &Params) -> Result<(), String> {
        // Validates once per instance and keeps the config with the params for `evaluate`.
        Config::with_cached(params, |_| ())
    }

    fn evaluate(
        params: &Params,
        facts: &Facts,
        state: Option<&[u8]>,
        now_ms: i64,
        event: &Event,
    ) -> Result<Evaluation, String> {
        Config::with_cached(params, |config| {
            fold::evaluate(config, facts, state, now_ms, event)
        })?
    }

    fn resume(
        params: &Params,
        facts: &Facts,
        state: Option<&[u8]>,
        gap: &HostGap,
    ) -> Result<Evaluation, String> {
        Config::with_cached(params, |config| downtime::resume(config, facts, state, gap))?
    }
}

#[cfg(feature = "component")]
vigil_policy_sdk::export_policy!(DefaultPolicy);

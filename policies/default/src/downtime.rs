//! The host's own downtime (`resume`, `vigil:policy@1.4`): not the server's fault.
//!
//! When the host comes back after a gap, a server whose deadline fell inside the gap (it was
//! online when the host went down, and no one was listening when its grace ran out) gets one
//! fresh grace window from the restart: no alert storm, and a server still silent after it
//! goes offline as usual. The gap's whole minutes are left out of the uptime percentage
//! (neither online nor offline). A scheduled server is judged by its slots as before.

use vigil_policy_sdk::{Evaluation, Event, Facts, HostGap};

use crate::config::Config;
use crate::fold;
use crate::ring::{MinuteRing, minute_of};
use crate::state::{MAX_HOST_GAPS, State};

/// Folds the host gap into the server's state, then evaluates at the restart.
pub fn resume(
    config: &Config,
    facts: &Facts,
    state: Option<&[u8]>,
    gap: &HostGap,
) -> Result<Evaluation, String> {
    let Some(bytes) = state else {
        return fold::evaluate(config, facts, None, gap.up_at_ms, &Event::Tick);
    };
    let mut state = State::decode(bytes)?;
    if gap.up_at_ms <= gap.down_at_ms {
        return Err(format!(
            "host gap ends at {} before it starts at {}",
            gap.up_at_ms, gap.down_at_ms
        ));
    }
    let judged_until = state.last_eval_ms.max(gap.down_at_ms);
    if state.slots.is_none()
        && let Some(last) = &mut state.last
        && last.deadline_ms > last.at_ms
        && last.deadline_ms > judged_until
        && last.deadline_ms <= gap.up_at_ms
    {
        last.deadline_ms = gap.up_at_ms.saturating_add(i64::from(last.grace_ms));
    }
    let from = state
        .host_gaps
        .last()
        .map_or(gap.down_at_ms, |(_, up)| gap.down_at_ms.max(*up));
    if from < gap.up_at_ms {
        state.host_gaps.push((from, gap.up_at_ms));
        let excess = state.host_gaps.len().saturating_sub(MAX_HOST_GAPS);
        state.host_gaps.drain(..excess);
    }
    fold::evaluate(
        config,
        facts,
        Some(&state.encode()),
        gap.up_at_ms,
        &Event::Tick,
    )
}

/// Forgets the gaps that ended at or before `horizon_ms` (out of every window).
pub fn forget_before(state: &mut State, horizon_ms: i64) {
    state.host_gaps.retain(|(_, up)| *up > horizon_ms);
}

/// The whole minutes of host gaps within `[first, last]` (minute numbers, inclusive): how
/// many, and how many of them the ring marks online.
pub fn excluded_minutes(state: &State, ring: &MinuteRing, first: i64, last: i64) -> (i64, u32) {
    let mut minutes = 0;
    let mut online = 0;
    for (down, up) in &state.host_gaps {
        let from = minute_of(down.saturating_add(59_999)).max(first);
        let to = minute_of(*up).saturating_sub(1).min(last);
        if from <= to {
            minutes += to - from + 1;
            online += ring.count_online(from, to);
        }
    }
    (minutes, online)
}

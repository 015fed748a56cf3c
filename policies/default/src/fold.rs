//! The fold: one event into the state, then the assessment from the state.
//!
//! The state after an evaluation depends only on the heartbeats and rejections folded so far
//! and on the final `now_ms`, never on which ticks happened in between: a flip to offline is
//! dated at the deadline whether a tick arrived then or not. So replaying the stored history
//! (which has no ticks) rebuilds the same bytes.

use vigil_policy_sdk::{
    Assessment, Confidence, Evaluation, Event, Facts, Heartbeat, Rejection, Score, Status,
};

use vigil_policy_sdk::RunPhase;

use crate::config::Config;
use crate::ring::minute_of;
use crate::schedule::{Expected, SlotState};
use crate::state::{LastHeartbeat, MAX_FLIPS, MAX_SPOOFS, State};

/// Signal: the agent's `uptime_seconds` went down since its previous heartbeat.
pub const SIGNAL_RESTART: &str = "restart-detected";
/// Signal: the agent entered mode `emergency`.
pub const SIGNAL_EMERGENCY: &str = "emergency-mode";
/// Signal: the server went offline (silence past its deadline, or a claimed `offline`).
pub const SIGNAL_WENT_OFFLINE: &str = "went-offline";
/// Signal: the server came online (first heartbeat, or back after being offline).
pub const SIGNAL_CAME_ONLINE: &str = "came-online";
/// Signal: a spoof-like rejection arrived.
pub const SIGNAL_SPOOF: &str = "spoof-attempt";
/// Signal: this rejection brought the spoof-like rejections in the window to the threshold
/// (an operator alert; the server's confidence is capped at yellow, never red, by it).
pub const SIGNAL_SPOOF_BURST: &str = "spoof-burst";
/// Badge: spoof-like rejections in the window reached the threshold.
pub const BADGE_UNDER_ATTACK: &str = "under-attack";
/// Signal: the heartbeat is inconsistent.
pub const SIGNAL_INCONSISTENT: &str = "inconsistent";
/// Signal: a job run ended with `fail` (the host's `job_failed` alert).
pub const SIGNAL_JOB_FAILED: &str = "job-failed";
/// Signal: a scheduled server's run `start` had no end within the schedule's longest run
/// (the host's `run_overdue` alert).
pub const SIGNAL_RUN_OVERDUE: &str = "run-overdue";

/// Folds one event into `state` (`None` for the first event) and assesses the server.
pub fn evaluate(
    config: &Config,
    facts: &Facts,
    state: Option<&[u8]>,
    now_ms: i64,
    event: &Event,
) -> Result<Evaluation, String> {
    let mut state = match state {
        Some(bytes) => State::decode(bytes)?,
        None => State::new(now_ms, config.uptime_window_minutes),
    };
    if now_ms < state.last_eval_ms {
        return Err(format!(
            "now_ms {now_ms} is earlier than the previous evaluation's {}",
            state.last_eval_ms
        ));
    }
    if state.ring.minutes() != config.uptime_window_minutes {
        state.ring = state.ring.resized(config.uptime_window_minutes);
    }
    let mut signals = Vec::new();
    let expected = facts.schedule.as_ref().and_then(Expected::new);
    if expected.is_none() {
        // Unscheduled (again): judged by grace after each heartbeat.
        state.slots = None;
    }

    // What silence did since the previous evaluation.
    if let Some(last) = &state.last
        && state.last_eval_ms < last.deadline_ms
        && now_ms >= last.deadline_ms
    {
        state.flips.push(last.deadline_ms);
        signals.push(SIGNAL_WENT_OFFLINE);
    }
    if let (Some(expected), Some(slots)) = (&expected, &mut state.slots) {
        if let Some(at) = slots.overdue_at(expected)
            && state.last_eval_ms < at
            && now_ms >= at
        {
            signals.push(SIGNAL_RUN_OVERDUE);
            slots.run_started_ms = None;
        }
        slots.close_until(expected, now_ms);
        slots.trim(now_ms);
    }
    state.ring.advance_to(minute_of(now_ms));
    mark_coverage(&mut state, now_ms);
    state.last_eval_ms = now_ms;

    match event {
        Event::Heartbeat(heartbeat) => {
            let phase = heartbeat.run.as_ref().map(|run| run.phase);
            if phase == Some(RunPhase::Fail) {
                signals.push(SIGNAL_JOB_FAILED);
            }
            apply_heartbeat(
                config,
                facts,
                expected.as_ref(),
                &mut state,
                now_ms,
                heartbeat,
                &mut signals,
            );
            mark_coverage(&mut state, now_ms);
        }
        Event::Rejected(Rejection { code, .. }) => {
            if config.is_spoof_code(code) {
                retain_after(
                    &mut state.spoofs,
                    now_ms.saturating_sub(config.spoof_window_ms),
                    MAX_SPOOFS,
                );
                let before = state.spoofs.len();
                state.spoofs.push(now_ms);
                signals.push(SIGNAL_SPOOF);
                if before < config.spoof_threshold && before + 1 >= config.spoof_threshold {
                    signals.push(SIGNAL_SPOOF_BURST);
                }
            }
        }
        Event::Tick => {}
    }

    // Forget what fell out of the windows, keeping the lists bounded.
    let flip_horizon =
        now_ms.saturating_sub(config.uptime_window_ms().max(config.intermittent_window_ms));
    retain_after(&mut state.flips, flip_horizon, MAX_FLIPS);
    retain_after(
        &mut state.spoofs,
        now_ms.saturating_sub(config.spoof_window_ms),
        MAX_SPOOFS,
    );
    crate::downtime::forget_before(&mut state, now_ms.saturating_sub(config.uptime_window_ms()));
    if is_established(config, facts, now_ms) {
        state.first_seen_ms = None;
    }

    let assessment = assess(config, facts, expected.as_ref(), &state, now_ms, signals);
    Ok(Evaluation {
        state: state.encode(),
        assessment,
    })
}

/// Registered a whole uptime window ago: judged over the full window, never "new".
fn is_established(config: &Config, facts: &Facts, now_ms: i64) -> bool {
    facts.registered_at_ms <= now_ms.saturating_sub(config.uptime_window_ms())
}

/// Keeps the entries after `horizon`, and at most the newest `max` of them.
fn retain_after(list: &mut Vec<i64>, horizon: i64, max: usize) {
    list.retain(|at| *at > horizon);
    let excess = list.len().saturating_sub(max);
    if excess > 0 {
        list.drain(..excess);
    }
}

/// Marks the minutes the newest heartbeat kept the server online, up to `now_ms`.
fn mark_coverage(state: &mut State, now_ms: i64) {
    if let Some(last) = &state.last
        && last.deadline_ms > last.at_ms
    {
        let end = last.deadline_ms.saturating_sub(1).min(now_ms);
        if end >= last.at_ms {
            state.ring.set_range(minute_of(last.at_ms), minute_of(end));
        }
    }
}

/// A scheduled server's report at `now_ms`: fills the open slot if it is due, tracks the run,
/// and answers the deadline (the close of the first slot not filled). `None` when the
/// schedule names no slot at all (the heartbeat then earns the usual grace).
fn report_slot(
    expected: &Expected,
    state: &mut State,
    now_ms: i64,
    online_before: bool,
    heartbeat: &Heartbeat,
) -> Option<i64> {
    let grace = expected.grace_ms();
    let slots = match state.slots.take() {
        Some(slots) => slots,
        None => SlotState {
            slot_ms: expected.first_slot(now_ms)?,
            filled_at: None,
            run_started_ms: None,
            windows: Vec::new(),
        },
    };
    let mut slots = slots;
    if expected.is_period() && !online_before {
        // Back from offline (or first seen): a period counts from this report.
        slots.slot_ms = now_ms;
        slots.filled_at = None;
    }
    if slots.filled_at.is_none() && now_ms >= slots.slot_ms.saturating_sub(grace) {
        slots.filled_at = Some(now_ms);
        slots.windows.push((now_ms, true));
    }
    match heartbeat.run.as_ref().map(|run| run.phase) {
        Some(RunPhase::Start) => slots.run_started_ms = Some(now_ms),
        Some(RunPhase::Success | RunPhase::Fail) => slots.run_started_ms = None,
        None => {}
    }
    slots.trim(now_ms);
    let deadline = slots.status_deadline(expected);
    state.slots = Some(slots);
    deadline
}

fn apply_heartbeat(
    config: &Config,
    facts: &Facts,
    expected: Option<&Expected>,
    state: &mut State,
    now_ms: i64,
    heartbeat: &Heartbeat,
    signals: &mut Vec<&'static str>,
) {
    let previous = state.last.clone();
    let previous = previous.as_ref();
    let online_before = previous.is_some_and(|last| now_ms < last.deadline_ms);
    let claimed = heartbeat.status.as_deref();
    let claims_offline = claimed == Some("offline");
    let mut grace_ms = config.grace_ms(heartbeat.interval_seconds, heartbeat.mode.as_deref());
    let scheduled_deadline = expected.and_then(|expected| {
        let deadline = report_slot(expected, state, now_ms, online_before, heartbeat)?;
        grace_ms = expected.grace_ms();
        Some(deadline)
    });

    let previous_uptime = previous.and_then(|last| last.uptime_seconds);
    let restarted = matches!(
        (previous_uptime, heartbeat.uptime_seconds),
        (Some(before), Some(now)) if now < before
    );
    if restarted {
        signals.push(SIGNAL_RESTART);
    }
    let emergency = heartbeat.mode.as_deref() == Some("emergency");
    if emergency && !previous.is_some_and(|last| last.emergency) {
        signals.push(SIGNAL_EMERGENCY);
    }

    let skew_ms = config.max_clock_skew_ms;
    let players_overflow = matches!(
        (heartbeat.players_current, heartbeat.players_capacity),
        (Some(current), Some(capacity)) if current > capacity
    );
    let clock_drift = heartbeat.sent_at_ms.abs_diff(now_ms) > skew_ms.unsigned_abs();
    // Uptime cannot grow faster than the wall clock (beyond the allowed skew).
    let uptime_ahead = match (previous, heartbeat.uptime_seconds) {
        (Some(last), Some(now_uptime)) if !restarted => {
            let elapsed_ms = now_ms.saturating_sub(last.at_ms);
            let grown_ms = now_uptime
                .saturating_sub(last.uptime_seconds.unwrap_or(now_uptime))
                .saturating_mul(1000);
            grown_ms > elapsed_ms.saturating_add(skew_ms).unsigned_abs()
        }
        _ => false,
    };
    let inconsistent = players_overflow || clock_drift || uptime_ahead;
    if inconsistent {
        signals.push(SIGNAL_INCONSISTENT);
    }

    let deadline_ms = if claims_offline {
        if online_before {
            state.flips.push(now_ms);
            signals.push(SIGNAL_WENT_OFFLINE);
        }
        now_ms
    } else {
        match previous {
            Some(_) if !online_before => {
                state.flips.push(now_ms);
                signals.push(SIGNAL_CAME_ONLINE);
            }
            None => signals.push(SIGNAL_CAME_ONLINE),
            Some(_) => {}
        }
        scheduled_deadline.unwrap_or_else(|| now_ms.saturating_add(grace_ms))
    };

    if state.first_seen_ms.is_none()
        && state.last.is_none()
        && !is_established(config, facts, now_ms)
    {
        state.first_seen_ms = Some(now_ms);
    }
    state.last = Some(LastHeartbeat {
        at_ms: now_ms,
        deadline_ms,
        // Grace is at most thirty days (2.6e9 ms), so it always fits.
        grace_ms: u32::try_from(grace_ms).unwrap_or(u32::MAX),
        signed: heartbeat.signed,
        inconsistent,
        emergency,
        maintenance: claimed == Some("maintenance"),
        uptime_seconds: heartbeat.uptime_seconds,
        players_current: heartbeat.players_current,
        players_capacity: heartbeat.players_capacity,
    });
}

/// The minutes the uptime percentage is computed over: `(first, last)` inclusive.
fn uptime_window(config: &Config, facts: &Facts, state: &State, now_ms: i64) -> (i64, i64) {
    let now_min = minute_of(now_ms);
    let full_start = now_min.saturating_sub(i64::from(config.uptime_window_minutes) - 1);
    let start = match state.first_seen_ms {
        Some(first) if !is_established(config, facts, now_ms) => full_start.max(minute_of(first)),
        _ => full_start,
    };
    (start, now_min)
}

fn assess(
    config: &Config,
    facts: &Facts,
    expected: Option<&Expected>,
    state: &State,
    now_ms: i64,
    signals: Vec<&'static str>,
) -> Assessment {
    let status = match &state.last {
        None => Status::Unknown,
        Some(last) if now_ms < last.deadline_ms => Status::Online,
        Some(_) => Status::Offline,
    };
    let online = status == Status::Online;

    let (window_start, window_end) = uptime_window(config, facts, state, now_ms);
    let window_minutes = window_end
        .saturating_sub(window_start)
        .saturating_add(1)
        .max(1);
    let scheduled = expected.zip(state.slots.as_ref());
    let window_full = match scheduled {
        // Slots, not minutes: judged over a full window once registered a window ago.
        Some(_) => is_established(config, facts, now_ms),
        None => window_minutes >= i64::from(config.uptime_window_minutes),
    };
    let uptime_percent = match (&state.last, scheduled) {
        (None, _) => 0.0,
        (Some(_), Some((_, slots))) => match slots.counts() {
            (_, 0) if online => 100.0,
            (_, 0) => 0.0,
            (filled, counted) => (filled as f64 * 100.0 / counted as f64).clamp(0.0, 100.0),
        },
        (Some(_), None) => {
            // The host's own downtime is nobody's uptime: out of both counts.
            let (gap_minutes, gap_online) =
                crate::downtime::excluded_minutes(state, &state.ring, window_start, window_end);
            let online_minutes = state
                .ring
                .count_online(window_start, window_end)
                .saturating_sub(gap_online);
            let counted = window_minutes.saturating_sub(gap_minutes).max(1);
            (f64::from(online_minutes) * 100.0 / counted as f64).clamp(0.0, 100.0)
        }
    };

    let window_horizon = now_ms.saturating_sub(config.uptime_window_ms());
    let flaps = state
        .flips
        .iter()
        .filter(|at| **at > window_horizon)
        .count();
    let intermittent_horizon = now_ms.saturating_sub(config.intermittent_window_ms);
    let last_flip = state.flips.last().copied();
    let recently_flipped = last_flip.is_some_and(|at| at > intermittent_horizon);

    let players =
        state
            .last
            .as_ref()
            .and_then(|last| match (last.players_current, last.players_capacity) {
                (Some(current), Some(capacity)) if capacity > 0 => Some((current, capacity)),
                _ => None,
            });
    let activity = match players {
        Some((current, capacity)) if online => {
            (f64::from(current) * 100.0 / f64::from(capacity)).clamp(0.0, 100.0)
        }
        _ => 0.0,
    };
    let weights = config.weight_uptime + config.weight_activity;
    let base = match players {
        Some(_) if weights > 0.0 => {
            (config.weight_uptime * uptime_percent + config.weight_activity * activity) / weights
        }
        _ => uptime_percent,
    };
    let flap_penalty = (flaps as f64 * config.flap_penalty).min(config.flap_penalty_max);
    let quality_score = finite_or_zero(base - flap_penalty).clamp(0.0, 100.0);

    let spoof_count = state.spoofs.len();
    let under_attack = spoof_count >= config.spoof_threshold;
    let settled = is_established(config, facts, now_ms)
        || state
            .first_seen_ms
            .is_none_or(|first| now_ms.saturating_sub(first) >= config.settle_ms);
    // Spoof-like rejections prove nothing about the key holder (anyone can send one), so they
    // cap confidence at yellow but never make it red: red is for what the key holder signed
    // (an inconsistent heartbeat) and for staleness.
    let confidence = match &state.last {
        None => Confidence::Yellow,
        Some(_) if !online => Confidence::Red,
        Some(last) if last.inconsistent => Confidence::Red,
        Some(last)
            if facts.is_verified
                && !under_attack
                && last.signed
                && settled
                && !recently_flipped
                && !last.maintenance =>
        {
            Confidence::Green
        }
        Some(_) => Confidence::Yellow,
    };

    // When the assessment would change if nothing arrives: the earliest of these that is
    // still ahead.
    let mut next_check_at_ms: Option<i64> = None;
    let mut deadline = |at: i64| {
        if at > now_ms {
            next_check_at_ms = Some(next_check_at_ms.map_or(at, |next| next.min(at)));
        }
    };
    match &state.last {
        Some(last) if online => {
            deadline(last.deadline_ms);
            if !settled && let Some(first) = state.first_seen_ms {
                deadline(first.saturating_add(config.settle_ms));
            }
            if let Some(at) = last_flip.filter(|_| recently_flipped) {
                deadline(at.saturating_add(config.intermittent_window_ms));
            }
        }
        // A scheduled server's uptime changes at slot closes (below), not by the minute.
        Some(_) if scheduled.is_none() && state.ring.count_online(window_start, window_end) > 0 => {
            deadline(now_ms.saturating_add(config.offline_recheck_ms));
        }
        _ => {}
    }
    if let Some((expected, slots)) = scheduled {
        if let Some(at) = slots.unfilled_close(expected) {
            deadline(at);
        }
        if let Some(at) = slots.overdue_at(expected) {
            deadline(at);
        }
    }
    if under_attack {
        // Capped at yellow until enough of the counted rejections have aged out of the window.
        let index = spoof_count.saturating_sub(config.spoof_threshold);
        if let Some(at) = state.spoofs.get(index) {
            deadline(at.saturating_add(config.spoof_window_ms));
        }
    }

    let grace_ms = state
        .last
        .as_ref()
        .map_or(config.grace_ms, |last| i64::from(last.grace_ms));
    let mut badges = Vec::new();
    if facts.is_verified {
        badges.push("verified".to_string());
    }
    if window_full && state.last.is_some() && uptime_percent >= config.reliable_uptime_percent {
        badges.push("reliable".to_string());
    }
    if under_attack {
        badges.push(BADGE_UNDER_ATTACK.to_string());
    }

    Assessment {
        status,
        confidence,
        uptime_percent,
        quality_score,
        scores: vec![
            Score::new("activity", activity),
            Score::new("flaps_24h", flaps as f64),
            Score::new("grace_seconds", grace_ms as f64 / 1000.0),
            Score::new("spoof_attempts", spoof_count as f64),
        ],
        badges,
        signals: signals.into_iter().map(str::to_string).collect(),
        next_check_at_ms,
    }
}

fn finite_or_zero(value: f64) -> f64 {
    if value.is_finite() { value } else { 0.0 }
}

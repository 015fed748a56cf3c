//! Scheduled servers (cron jobs, backups, nightly tasks): a server whose operator set a
//! schedule is judged by the slots the schedule expects, not by a grace after each heartbeat.
//!
//! - A **slot** is one expected report: the times a cron expression names (read in its IANA
//!   zone), or, for a period, one period after the report that filled the previous slot. A
//!   slot's **close** is its time plus the schedule's grace.
//! - A report at `t` **fills** the open slot when the slot is not filled yet and `t` is no
//!   earlier than the slot's time minus the grace (a report well before it, an extra run, is
//!   still a report but fills nothing). For a period, a report that brings an offline server
//!   back starts the slots again from itself.
//! - The server is online until the close of the first slot not filled; a slot closing
//!   unfilled sends it offline exactly then (`went-offline`, the host's `server_offline`).
//! - Uptime counts slots: filled slots / closed-or-filled slots among the newest
//!   [`MAX_WINDOWS`] of the last [`WINDOW_HORIZON_MS`] (14 days), not minutes.
//! - A run `start` with no `success`/`fail` within the schedule's `max_run_seconds` raises
//!   `run-overdue` at that moment (once per run).
//!
//! Cron is read in the guest with `croner` and `chrono-tz`: the time-zone rules are then part
//! of the policy's digest, so a replay with the same policy computes the same deadlines
//! whatever host, and whatever tz database the host machine has, runs it. Everything is a
//! function of the schedule, the heartbeats' times and `now_ms`.

use core::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use vigil_policy_sdk::{Cadence, Schedule};

/// The most slot outcomes kept (the newest).
pub const MAX_WINDOWS: usize = 64;
/// How long a slot outcome counts for uptime: 14 days (within the 15-day replay window).
pub const WINDOW_HORIZON_MS: i64 = 14 * 86_400_000;

/// A schedule, ready to answer "when is the next slot".
pub struct Expected {
    kind: Kind,
    grace_ms: i64,
    max_run_ms: Option<i64>,
}

enum Kind {
    Period(i64),
    Cron(Box<croner::Cron>, chrono_tz::Tz),
}

impl Expected {
    /// `None` for a cron expression or a zone this policy cannot read (the host checks both
    /// before storing a schedule, so this is a schedule from a newer host's rules): the server
    /// is then judged as an unscheduled one.
    pub fn new(schedule: &Schedule) -> Option<Self> {
        let kind = match &schedule.cadence {
            Cadence::Period(seconds) if *seconds > 0 => Kind::Period(i64::from(*seconds) * 1000),
            Cadence::Period(_) => return None,
            Cadence::Cron {
                expression,
                time_zone,
            } => Kind::Cron(
                Box::new(croner::Cron::from_str(expression).ok()?),
                chrono_tz::Tz::from_str(time_zone).ok()?,
            ),
        };
        Some(Self {
            kind,
            grace_ms: i64::from(schedule.grace_seconds) * 1000,
            max_run_ms: schedule.max_run_seconds.map(|s| i64::from(s) * 1000),
        })
    }

    /// The grace, ms.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// The longest run, ms, if limited.
    pub fn max_run_ms(&self) -> Option<i64> {
        self.max_run_ms
    }

    /// Whether slots restart from a report (a period) rather than lie on a fixed grid (cron).
    pub fn is_period(&self) -> bool {
        matches!(self.kind, Kind::Period(_))
    }

    /// The first cron time strictly after `after_ms`, ms (cron only; `None` for a period or
    /// when the expression names no later time).
    fn cron_after(&self, after_ms: i64) -> Option<i64> {
        let Kind::Cron(cron, tz) = &self.kind else {
            return None;
        };
        let start = Utc.timestamp_millis_opt(after_ms).single()?;
        let local: DateTime<chrono_tz::Tz> = start.with_timezone(tz);
        let next = cron.find_next_occurrence(&local, false).ok()?;
        Some(next.timestamp_millis())
    }

    /// The slot a report at `t_ms` can fill when no slot is open yet: for a period `t_ms`
    /// itself, for cron the first cron time whose close is after `t_ms`.
    pub fn first_slot(&self, t_ms: i64) -> Option<i64> {
        match self.kind {
            Kind::Period(_) => Some(t_ms),
            Kind::Cron(..) => self.cron_after(t_ms.saturating_sub(self.grace_ms)),
        }
    }

    /// The slot after `slot_ms`, which was filled at `filled_at` (or not at all): for a
    /// period one period after the report that filled it (after the slot itself when none
    /// did), for cron the next cron time.
    pub fn following(&self, slot_ms: i64, filled_at: Option<i64>) -> Option<i64> {
        match self.kind {
            Kind::Period(period) => Some(filled_at.unwrap_or(slot_ms).saturating_add(period)),
            Kind::Cron(..) => self.cron_after(slot_ms),
        }
    }
}

/// What a scheduled server's state adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// The open slot's time.
    pub slot_ms: i64,
    /// When a report filled it.
    pub filled_at: Option<i64>,
    /// An open run's `start` time.
    pub run_started_ms: Option<i64>,
    /// Slot outcomes, ascending by time: `(time, filled)`, filled slots dated by their
    /// report, missed ones by their close; at most [`MAX_WINDOWS`] within the horizon.
    pub windows: Vec<(i64, bool)>,
}

impl SlotState {
    /// The close of the first slot not filled: the server is online before it.
    pub fn status_deadline(&self, expected: &Expected) -> Option<i64> {
        let slot = match self.filled_at {
            Some(_) => expected.following(self.slot_ms, self.filled_at)?,
            None => self.slot_ms,
        };
        Some(slot.saturating_add(expected.grace_ms))
    }

    /// The open slot's close when it is not filled (an outcome is recorded then).
    pub fn unfilled_close(&self, expected: &Expected) -> Option<i64> {
        self.filled_at
            .is_none()
            .then(|| self.slot_ms.saturating_add(expected.grace_ms))
    }

    /// When the open run becomes overdue, if there is one and runs are limited.
    pub fn overdue_at(&self, expected: &Expected) -> Option<i64> {
        Some(self.run_started_ms?.saturating_add(expected.max_run_ms()?))
    }

    /// Closes every slot whose close is at or before `now_ms`, recording the unfilled ones
    /// as missed. Independent of how many evaluations happened in between (a long silence
    /// gives the same outcomes whether ticks came or not).
    pub fn close_until(&mut self, expected: &Expected, now_ms: i64) {
        for _ in 0..=MAX_WINDOWS {
            let close = self.slot_ms.saturating_add(expected.grace_ms);
            if close > now_ms {
                return;
            }
            if self.filled_at.is_none() {
                self.windows.push((close, false));
            }
            match expected.following(self.slot_ms, self.filled_at) {
                Some(next) if next > self.slot_ms => self.slot_ms = next,
                _ => return,
            }
            self.filled_at = None;
        }
        // More slots closed than are kept: the newest ones are all missed. Walk them again
        // from the slot the cap left off at, keeping only the newest `MAX_WINDOWS`.
        let mut recent: Vec<i64> = Vec::new();
        let mut guard = 0u32;
        loop {
            let close = self.slot_ms.saturating_add(expected.grace_ms);
            if close > now_ms {
                break;
            }
            recent.push(close);
            if recent.len() > MAX_WINDOWS {
                recent.remove(0);
            }
            match expected.following(self.slot_ms, None) {
                Some(next) if next > self.slot_ms => self.slot_ms = next,
                _ => break,
            }
            guard += 1;
            if guard > 256 {
                // Very many short slots: jump near now (the outcomes stay all missed).
                match self.jump_near(expected, now_ms) {
                    Some(slot) => self.slot_ms = slot,
                    None => break,
                }
                guard = 0;
            }
        }
        self.windows
            .extend(recent.into_iter().map(|at| (at, false)));
    }

    /// A slot of the schedule just before `now_ms`, reached without walking every slot.
    fn jump_near(&self, expected: &Expected, now_ms: i64) -> Option<i64> {
        match expected.kind {
            Kind::Period(period) => {
                let close = self.slot_ms.saturating_add(expected.grace_ms);
                let behind = now_ms.saturating_sub(close) / period;
                let skip = behind.saturating_sub(MAX_WINDOWS as i64 + 1).max(1);
                Some(self.slot_ms.saturating_add(skip.saturating_mul(period)))
            }
            // A cron expression has at most one slot a minute (five fields): 64 slots lie
            // within 64 minutes before the newest close.
            Kind::Cron(..) => {
                let from = now_ms
                    .saturating_sub(expected.grace_ms)
                    .saturating_sub((MAX_WINDOWS as i64 + 1) * 60_000);
                expected.cron_after(from.max(self.slot_ms))
            }
        }
    }

    /// Forgets outcomes older than the horizon and beyond the cap.
    pub fn trim(&mut self, now_ms: i64) {
        let horizon = now_ms.saturating_sub(WINDOW_HORIZON_MS);
        self.windows.retain(|(at, _)| *at > horizon);
        let excess = self.windows.len().saturating_sub(MAX_WINDOWS);
        if excess > 0 {
            self.windows.drain(..excess);
        }
    }

    /// `(filled, counted)` slots.
    pub fn counts(&self) -> (usize, usize) {
        let filled = self.windows.iter().filter(|(_, f)| *f).count();
        (filled, self.windows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(expr: &str, tz: &str, grace: u32) -> Expected {
        Expected::new(&Schedule {
            cadence: Cadence::Cron {
                expression: expr.into(),
                time_zone: tz.into(),
            },
            grace_seconds: grace,
            max_run_seconds: None,
        })
        .expect("readable")
    }

    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn cron_slots_are_read_in_their_zone() {
        let utc = cron("0 3 * * *", "UTC", 3600);
        assert_eq!(utc.first_slot(T0), Some(T0 + 3 * HOUR));
        // Berlin is UTC+1 in January: 03:00 there is 02:00 UTC.
        let berlin = cron("0 3 * * *", "Europe/Berlin", 0);
        assert_eq!(berlin.first_slot(T0), Some(T0 + 2 * HOUR));
        assert_eq!(berlin.following(T0 + 2 * HOUR, None), Some(T0 + 26 * HOUR));
        // Within the grace of today's 03:00, a report fills today's slot.
        assert_eq!(utc.first_slot(T0 + 3 * HOUR + 60_000), Some(T0 + 3 * HOUR));
        assert!(
            Expected::new(&Schedule {
                cadence: Cadence::Cron {
                    expression: "0 3 * * *".into(),
                    time_zone: "Mars/Olympus".into()
                },
                grace_seconds: 0,
                max_run_seconds: None
            })
            .is_none()
        );
    }

    #[test]
    fn a_long_silence_of_short_slots_keeps_the_newest_missed() {
        let every_minute = cron("* * * * *", "UTC", 0);
        let mut ticked = SlotState {
            slot_ms: T0 + 60_000,
            filled_at: Some(T0),
            run_started_ms: None,
            windows: vec![],
        };
        let mut at_once = ticked.clone();
        let end = T0 + 10 * HOUR;
        let mut now = T0;
        while now < end {
            now += 7 * 60_000;
            ticked.close_until(&every_minute, now.min(end));
            ticked.trim(now.min(end));
        }
        at_once.close_until(&every_minute, end);
        at_once.trim(end);
        assert_eq!(ticked, at_once);
        assert_eq!(at_once.counts(), (0, MAX_WINDOWS));
        assert_eq!(at_once.windows.last().map(|w| w.0), Some(end));
    }
}

//! Rollups: hourly and daily uptime, quality and counts per server, folded from the policy's
//! outputs as they happen.
//!
//! Every evaluation (live or in replay, through [`super::fold`]) first counts the time since the
//! previous one at the status and quality the previous one assessed, then the event itself (a
//! beat or a rejection) in the bucket of its `now`. Buckets are UTC hours and days; one that
//! ends at or before `now` is closed into a [`RollupRow`] (appended once, never changed) and the
//! open ones stay in the snapshot ([`OpenRollup`]). Replaying the same history through the same
//! policy therefore closes the same rows and leaves the same open buckets.
//!
//! Reads ([`report`]) add the open buckets, carried forward to the reader's `now` at the
//! current status, to the closed rows of the window: the figures of
//! `GET /v1/servers/{id}/uptime`, the server page's bars and the status pages.

use crate::store::{OpenRollup, RollupRow, RollupSpan, RollupSums, Snapshot};

const HOUR: i64 = RollupSpan::Hour.ms();
const DAY: i64 = RollupSpan::Day.ms();

/// The longest silence counted bucket by bucket: older time cannot appear in any window (the
/// longest is 90 days), so a server silent for a year closes at most this many days of rows.
const MAX_GAP_MS: i64 = 91 * DAY;

/// What the event that ends a stretch of time is, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// An accepted heartbeat.
    Beat,
    /// A refused request folded into the server's policy.
    Rejection,
    /// A tick (counted as time only).
    Tick,
}

/// Counts the time from the last evaluation to `now_ms` at the snapshot's current status and
/// quality, then `event` in the bucket of `now_ms`; every bucket this closes is pushed onto
/// `closed`. Call it before the snapshot takes the new assessment.
pub fn advance(
    snapshot: &mut Snapshot,
    server_id: &str,
    policy_digest: &str,
    now_ms: i64,
    event: Counted,
    closed: &mut Vec<RollupRow>,
) {
    let status = snapshot.status.as_str();
    let quality = snapshot.quality_score;
    let open = snapshot.rollup.get_or_insert_with(|| OpenRollup {
        at_ms: now_ms,
        hour_start_ms: floor(now_ms, HOUR),
        hour: RollupSums::default(),
        day: RollupSums::default(),
    });
    carry(
        open,
        now_ms,
        status,
        quality,
        &mut |span, start_ms, sums| {
            closed.push(RollupRow {
                server_id: server_id.to_owned(),
                span,
                start_ms,
                sums,
                policy_digest: policy_digest.to_owned(),
            });
        },
    );
    match event {
        Counted::Beat => open.hour.beats += 1,
        Counted::Rejection => open.hour.rejections += 1,
        Counted::Tick => {}
    }
}

/// Carries the open buckets to `to_ms` without counting the time as observed: the host's own
/// downtime ([`crate::policy::PolicyEvent::HostResumed`]) is nobody's uptime or downtime.
/// Buckets this closes are pushed onto `closed`, as [`advance`] does.
pub fn unobserved(
    snapshot: &mut Snapshot,
    server_id: &str,
    policy_digest: &str,
    to_ms: i64,
    closed: &mut Vec<RollupRow>,
) {
    let Some(open) = snapshot.rollup.as_mut() else {
        return;
    };
    carry(open, to_ms, "unknown", 0.0, &mut |span, start_ms, sums| {
        closed.push(RollupRow {
            server_id: server_id.to_owned(),
            span,
            start_ms,
            sums,
            policy_digest: policy_digest.to_owned(),
        });
    });
}

/// Adds the time from `open.at_ms` to `to_ms` at `status`/`quality`, closing every bucket that
/// ends at or before `to_ms` (through `close`, oldest first; empty buckets are skipped).
fn carry(
    open: &mut OpenRollup,
    to_ms: i64,
    status: &str,
    quality: f64,
    close: &mut dyn FnMut(RollupSpan, i64, RollupSums),
) {
    let observed = status != "unknown";
    let online = status == "online";
    // Quality in hundredths of a point, so the sums are integers.
    let centi = (quality.clamp(0.0, 100.0) * 100.0).round() as i64;
    let mut t = open.at_ms;
    while t < to_ms {
        let hour_end = open.hour_start_ms + HOUR;
        let until = to_ms.min(hour_end);
        if observed {
            let ms = until - t;
            open.hour.observed_ms += ms;
            if online {
                open.hour.online_ms += ms;
            }
            open.hour.quality_sum += centi * ms;
        }
        t = until;
        if t < hour_end {
            break;
        }
        close_hour(open, close);
        // Nothing to add: jump to the hour of `to_ms` (closing the day on the way), and skip
        // what no window can show of a long silence.
        let quiet = !observed || to_ms - t > MAX_GAP_MS;
        if quiet && open.hour.is_empty() {
            let target = if observed {
                floor(to_ms - MAX_GAP_MS, HOUR).max(open.hour_start_ms)
            } else {
                floor(to_ms, HOUR)
            };
            if floor(target, DAY) != floor(open.hour_start_ms, DAY) && !open.day.is_empty() {
                close(RollupSpan::Day, floor(open.hour_start_ms, DAY), open.day);
            }
            if floor(target, DAY) != floor(open.hour_start_ms, DAY) {
                open.day = RollupSums::default();
            }
            if target > open.hour_start_ms {
                open.hour_start_ms = target;
                t = t.max(target);
            }
        }
    }
    open.at_ms = open.at_ms.max(to_ms);
}

/// Closes the open hour (and the day, when the hour was its last), opening the next hour.
fn close_hour(open: &mut OpenRollup, close: &mut dyn FnMut(RollupSpan, i64, RollupSums)) {
    if !open.hour.is_empty() {
        close(RollupSpan::Hour, open.hour_start_ms, open.hour);
    }
    open.day.add(&open.hour);
    open.hour = RollupSums::default();
    open.hour_start_ms += HOUR;
    if open.hour_start_ms % DAY == 0 {
        if !open.day.is_empty() {
            close(RollupSpan::Day, open.hour_start_ms - DAY, open.day);
        }
        open.day = RollupSums::default();
    }
}

fn floor(ms: i64, unit: i64) -> i64 {
    ms.div_euclid(unit) * unit
}

/// A window of `GET /v1/servers/{id}/uptime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last 24 hours, in hours.
    Hours24,
    /// The last 7, 30 or 90 days (today included), in days.
    Days(u16),
}

impl Window {
    /// `24h`, `7d`, `30d` or `90d`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "24h" => Some(Window::Hours24),
            "7d" => Some(Window::Days(7)),
            "30d" => Some(Window::Days(30)),
            "90d" => Some(Window::Days(90)),
            _ => None,
        }
    }

    /// As written in a query.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hours24 => "24h",
            Window::Days(7) => "7d",
            Window::Days(30) => "30d",
            Window::Days(_) => "90d",
        }
    }

    /// The span of its buckets.
    pub fn span(self) -> RollupSpan {
        match self {
            Window::Hours24 => RollupSpan::Hour,
            Window::Days(_) => RollupSpan::Day,
        }
    }

    /// How many buckets it shows.
    pub fn buckets(self) -> usize {
        match self {
            Window::Hours24 => 24,
            Window::Days(n) => usize::from(n),
        }
    }

    /// The start of its first bucket, for a reader at `now_ms`.
    pub fn from_ms(self, now_ms: i64) -> i64 {
        let unit = self.span().ms();
        floor(now_ms, unit) - (self.buckets() as i64 - 1) * unit
    }
}

/// One bucket of a [`Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Its UTC start.
    pub start_ms: i64,
    /// What it adds up (empty where nothing was known).
    pub sums: RollupSums,
}

/// A window's figures: one bucket per hour or day, oldest first, and their total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Which window.
    pub window: Window,
    /// Start of the first bucket.
    pub from_ms: i64,
    /// The reader's now.
    pub to_ms: i64,
    /// Every bucket of the window, oldest first (the last one still open).
    pub buckets: Vec<Bucket>,
    /// Their sum.
    pub total: RollupSums,
}

/// The window's figures at `now_ms`: `closed` (the server's closed rows of the window's span,
/// any order) plus the snapshot's open buckets carried forward to `now_ms` at its current
/// status and quality.
pub fn report(window: Window, now_ms: i64, closed: &[RollupRow], snapshot: &Snapshot) -> Report {
    let span = window.span();
    let from_ms = window.from_ms(now_ms);
    let mut buckets: Vec<Bucket> = (0..window.buckets())
        .map(|i| Bucket {
            start_ms: from_ms + i as i64 * span.ms(),
            sums: RollupSums::default(),
        })
        .collect();
    let mut put = |start_ms: i64, sums: &RollupSums| {
        if start_ms < from_ms {
            return;
        }
        let i = usize::try_from((start_ms - from_ms) / span.ms()).unwrap_or(usize::MAX);
        if let Some(b) = buckets.get_mut(i) {
            b.sums.add(sums);
        }
    };
    for row in closed.iter().filter(|r| r.span == span) {
        put(row.start_ms, &row.sums);
    }
    if let Some(open) = &snapshot.rollup {
        let mut open = open.clone();
        carry(
            &mut open,
            now_ms,
            &snapshot.status,
            snapshot.quality_score,
            &mut |s, start, sums| {
                if s == span {
                    put(start, &sums);
                }
            },
        );
        match span {
            RollupSpan::Hour => put(open.hour_start_ms, &open.hour),
            RollupSpan::Day => {
                let mut today = open.day;
                today.add(&open.hour);
                put(floor(open.hour_start_ms, DAY), &today);
            }
        }
    }
    let mut total = RollupSums::default();
    for b in &buckets {
        total.add(&b.sums);
    }
    Report {
        window,
        from_ms,
        to_ms: now_ms,
        buckets,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_780_000_000_000 / DAY * DAY; // a UTC midnight

    fn snapshot(status: &str, quality: f64) -> Snapshot {
        Snapshot {
            status: status.into(),
            quality_score: quality,
            ..Snapshot::unseen()
        }
    }

    fn step(s: &mut Snapshot, at: i64, event: Counted, out: &mut Vec<RollupRow>) {
        advance(s, "a", "sha256:p", at, event, out);
    }

    #[test]
    fn time_is_counted_at_the_previous_status_and_split_at_hour_and_day_ends() {
        let mut s = snapshot("unknown", 0.0);
        let mut rows = Vec::new();
        step(
            &mut s,
            T0 + 23 * HOUR + 30 * 60_000,
            Counted::Beat,
            &mut rows,
        );
        assert!(rows.is_empty(), "nothing closed yet");
        s.status = "online".into();
        s.quality_score = 80.0;
        // 30 minutes online up to midnight, then 15 more minutes.
        step(&mut s, T0 + DAY + 15 * 60_000, Counted::Beat, &mut rows);
        let hour = rows
            .iter()
            .find(|r| r.span == RollupSpan::Hour)
            .expect("hour");
        assert_eq!(hour.start_ms, T0 + 23 * HOUR);
        assert_eq!(hour.sums.observed_ms, 30 * 60_000);
        assert_eq!(hour.sums.online_ms, 30 * 60_000);
        assert_eq!(hour.sums.beats, 1);
        assert_eq!(hour.sums.quality(), Some(80.0));
        let day = rows
            .iter()
            .find(|r| r.span == RollupSpan::Day)
            .expect("day");
        assert_eq!((day.start_ms, day.sums), (T0, hour.sums));
        let open = s.rollup.as_ref().expect("open");
        assert_eq!(open.hour_start_ms, T0 + DAY);
        assert_eq!(open.hour.online_ms, 15 * 60_000);
        assert_eq!(open.hour.beats, 1);
        assert!(open.day.is_empty());
    }

    #[test]
    fn an_unknown_stretch_closes_nothing_and_a_long_silence_is_bounded() {
        let mut s = snapshot("unknown", 0.0);
        let mut rows = Vec::new();
        step(&mut s, T0, Counted::Tick, &mut rows);
        step(&mut s, T0 + 500 * DAY, Counted::Tick, &mut rows);
        assert!(rows.is_empty());
        s.status = "offline".into();
        step(&mut s, T0 + 900 * DAY, Counted::Tick, &mut rows);
        let days = rows.iter().filter(|r| r.span == RollupSpan::Day).count();
        assert!((90..=92).contains(&days), "{days} days closed");
        assert!(rows.iter().all(|r| r.sums.online_ms == 0));
    }

    #[test]
    fn a_report_adds_the_open_buckets_carried_to_now() {
        let mut s = snapshot("unknown", 0.0);
        let mut rows = Vec::new();
        step(&mut s, T0, Counted::Beat, &mut rows);
        s.status = "online".into();
        s.quality_score = 50.0;
        step(&mut s, T0 + 2 * HOUR, Counted::Beat, &mut rows);
        s.status = "offline".into();
        let now = T0 + 3 * HOUR;
        let r = report(Window::Hours24, now, &rows, &s);
        assert_eq!(r.buckets.len(), 24);
        assert_eq!(r.buckets.last().map(|b| b.start_ms), Some(T0 + 3 * HOUR));
        assert_eq!(r.total.observed_ms, 3 * HOUR);
        assert_eq!(r.total.online_ms, 2 * HOUR);
        assert_eq!(r.total.beats, 2);
        let week = report(Window::Days(7), now, &rows, &s);
        assert_eq!(week.total, r.total);
        assert_eq!(week.buckets.last().map(|b| b.start_ms), Some(T0));
        assert_eq!(Window::parse("7d"), Some(Window::Days(7)));
        assert_eq!(Window::parse("1y"), None);
    }
}

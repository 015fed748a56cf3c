//! The default policy's per-server state and its hand-written binary encoding.
//!
//! Format version 1, all integers little-endian, every field always in the same order:
//!
//! ```text
//! u8   version = 1
//! i64  last_eval_ms            now_ms of the previous evaluation
//! u8   flags                   bit 0: first_seen present, bit 1: last heartbeat present
//! [i64 first_seen_ms]
//! [last heartbeat:
//!    i64 at_ms, i64 deadline_ms, u32 grace_ms,
//!    u8  flags                 bit 0 signed, 1 inconsistent, 2 emergency, 3 maintenance,
//!                              4 uptime present, 5 players_current present,
//!                              6 players_capacity present
//!    [u64 uptime_seconds] [u32 players_current] [u32 players_capacity]]
//! u16  ring minutes (60..=1440), i64 ring head minute, ceil(minutes / 8) bytes of bits
//! u16  flip count (<= 512),  i64 each, ascending
//! u16  spoof count (<= 64),  i64 each, ascending
//! [version 2 only, a scheduled server's slots:
//!    i64 slot_ms, u8 flags     bit 0 filled_at present, bit 1 run_started present
//!    [i64 filled_at] [i64 run_started_ms]
//!    u16 window count (<= 64), each i64 at + u8 filled (0 or 1), ascending]
//! [version byte bit 7 set only, the host's own downtime inside the uptime window:
//!    u8 gap count (1..=16), each i64 down_at + i64 up_at, down < up, ascending, disjoint]
//! ```
//!
//! An unscheduled server's state is written as version 1, byte for byte what `default@1.1.0`
//! wrote; a scheduled one's as version 2. Both are read. Bit 7 of the version byte
//! ([`HOST_GAPS_FLAG`], `default@1.3.0`) adds the host gaps; a state without any is written
//! exactly as before.
//!
//! Decoding is strict: an unknown version, an unknown flag bit, a truncated or over-long
//! input, a non-canonical ring or an unsorted list is an `Err`, never a panic. Encoding the
//! decoded state gives back the same bytes.

use crate::ring::MinuteRing;
use crate::schedule::{MAX_WINDOWS, SlotState};

/// The state format of an unscheduled server (read and written).
pub const STATE_VERSION: u8 = 1;
/// The state format of a scheduled server: version 1 plus its slots.
pub const STATE_VERSION_SCHEDULED: u8 = 2;
/// Set in the version byte when the host-gaps section follows.
pub const HOST_GAPS_FLAG: u8 = 0x80;
/// The most host gaps kept (the newest ones within the uptime window).
pub const MAX_HOST_GAPS: usize = 16;
/// The most flips kept (the newest ones); the flap penalty saturates long before.
pub const MAX_FLIPS: usize = 512;
/// The most spoof-like rejections kept (the newest ones); `spoof_threshold` is at most 64.
pub const MAX_SPOOFS: usize = 64;

/// What the policy remembers about a server between events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// `now_ms` of the previous evaluation.
    pub last_eval_ms: i64,
    /// The first heartbeat, while the server is younger than the uptime window (forgotten
    /// once it was registered a whole window ago, so a replay of the window rebuilds it).
    pub first_seen_ms: Option<i64>,
    /// The newest heartbeat, if any was ever seen.
    pub last: Option<LastHeartbeat>,
    /// Online minutes over the uptime window.
    pub ring: MinuteRing,
    /// When the server flipped online/offline, ascending, within the uptime window.
    pub flips: Vec<i64>,
    /// When spoof-like rejections arrived, ascending, within the spoof window.
    pub spoofs: Vec<i64>,
    /// A scheduled server's slots (`None` while unscheduled).
    pub slots: Option<SlotState>,
    /// The host's own downtime `(down_at_ms, up_at_ms)` within the uptime window, ascending:
    /// left out of uptime (`downtime.rs`).
    pub host_gaps: Vec<(i64, i64)>,
}

/// What the policy keeps of the newest heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastHeartbeat {
    /// When it was received.
    pub at_ms: i64,
    /// Online while `now < deadline_ms`; equals `at_ms` when the agent claimed `offline`.
    pub deadline_ms: i64,
    /// The grace it earned, ms.
    pub grace_ms: u32,
    /// Whether it was signed.
    pub signed: bool,
    /// Whether it was inconsistent (see the README).
    pub inconsistent: bool,
    /// Whether its mode was `emergency`.
    pub emergency: bool,
    /// Whether it claimed status `maintenance`.
    pub maintenance: bool,
    /// The uptime it reported.
    pub uptime_seconds: Option<u64>,
    /// Players it reported.
    pub players_current: Option<u32>,
    /// Player capacity it reported.
    pub players_capacity: Option<u32>,
}

impl State {
    /// The state before any event: nothing seen, an empty ring ending at `now_ms`.
    pub fn new(now_ms: i64, ring_minutes: u16) -> Self {
        Self {
            last_eval_ms: now_ms,
            first_seen_ms: None,
            last: None,
            ring: MinuteRing::new(ring_minutes, crate::ring::minute_of(now_ms)),
            flips: Vec::new(),
            spoofs: Vec::new(),
            slots: None,
            host_gaps: Vec::new(),
        }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.ring.bits().len() + 8 * (self.flips.len() + self.spoofs.len()),
        );
        let version = if self.slots.is_some() {
            STATE_VERSION_SCHEDULED
        } else {
            STATE_VERSION
        };
        let gaps = self.host_gaps.len().min(MAX_HOST_GAPS);
        out.push(if gaps > 0 {
            version | HOST_GAPS_FLAG
        } else {
            version
        });
        out.extend_from_slice(&self.last_eval_ms.to_le_bytes());
        let flags = u8::from(self.first_seen_ms.is_some()) | u8::from(self.last.is_some()) << 1;
        out.push(flags);
        if let Some(first) = self.first_seen_ms {
            out.extend_from_slice(&first.to_le_bytes());
        }
        if let Some(last) = &self.last {
            out.extend_from_slice(&last.at_ms.to_le_bytes());
            out.extend_from_slice(&last.deadline_ms.to_le_bytes());
            out.extend_from_slice(&last.grace_ms.to_le_bytes());
            let flags = u8::from(last.signed)
                | u8::from(last.inconsistent) << 1
                | u8::from(last.emergency) << 2
                | u8::from(last.maintenance) << 3
                | u8::from(last.uptime_seconds.is_some()) << 4
                | u8::from(last.players_current.is_some()) << 5
                | u8::from(last.players_capacity.is_some()) << 6;
            out.push(flags);
            if let Some(uptime) = last.uptime_seconds {
                out.extend_from_slice(&uptime.to_le_bytes());
            }
            if let Some(current) = last.players_current {
                out.extend_from_slice(&current.to_le_bytes());
            }
            if let Some(capacity) = last.players_capacity {
                out.extend_from_slice(&capacity.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.ring.minutes().to_le_bytes());
        out.extend_from_slice(&self.ring.head().to_le_bytes());
        out.extend_from_slice(self.ring.bits());
        for list in [&self.flips, &self.spoofs] {
            // Both lists are capped far below u16::MAX by the fold.
            let count = u16::try_from(list.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&count.to_le_bytes());
            for at in list.iter().take(usize::from(count)) {
                out.extend_from_slice(&at.to_le_bytes());
            }
        }
        if let Some(slots) = &self.slots {
            out.extend_from_slice(&slots.slot_ms.to_le_bytes());
            out.push(
                u8::from(slots.filled_at.is_some()) | u8::from(slots.run_started_ms.is_some()) << 1,
            );
            for at in [slots.filled_at, slots.run_started_ms]
                .into_iter()
                .flatten()
            {
                out.extend_from_slice(&at.to_le_bytes());
            }
            // Capped at MAX_WINDOWS by the fold.
            let count = u16::try_from(slots.windows.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&count.to_le_bytes());
            for (at, filled) in slots.windows.iter().take(usize::from(count)) {
                out.extend_from_slice(&at.to_le_bytes());
                out.push(u8::from(*filled));
            }
        }
        if gaps > 0 {
            out.push(u8::try_from(gaps).unwrap_or(u8::MAX));
            for (down, up) in self.host_gaps.iter().take(gaps) {
                out.extend_from_slice(&down.to_le_bytes());
                out.extend_from_slice(&up.to_le_bytes());
            }
        }
        out
    }

    /// Decodes a state written by [`State::encode`]; anything else is an `Err`.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { rest: bytes };
        let version_byte = r.u8()?;
        let has_gaps = version_byte & HOST_GAPS_FLAG != 0;
        let version = version_byte & !HOST_GAPS_FLAG;
        if version != STATE_VERSION && version != STATE_VERSION_SCHEDULED {
            return Err(format!(
                "state format version {version} is not supported (expected {STATE_VERSION} or {STATE_VERSION_SCHEDULED})"
            ));
        }
        let last_eval_ms = r.i64()?;
        let flags = r.u8()?;
        if flags & !0b11 != 0 {
            return Err("state: unknown flags".to_string());
        }
        let first_seen_ms = if flags & 1 != 0 { Some(r.i64()?) } else { None };
        let last = if flags & 2 != 0 {
            let at_ms = r.i64()?;
            let deadline_ms = r.i64()?;
            let grace_ms = r.u32()?;
            let hb = r.u8()?;
            if hb & 0x80 != 0 {
                return Err("state: unknown heartbeat flags".to_string());
            }
            Some(LastHeartbeat {
                at_ms,
                deadline_ms,
                grace_ms,
                signed: hb & 1 != 0,
                inconsistent: hb & 2 != 0,
                emergency: hb & 4 != 0,
                maintenance: hb & 8 != 0,
                uptime_seconds: if hb & 16 != 0 { Some(r.u64()?) } else { None },
                players_current: if hb & 32 != 0 { Some(r.u32()?) } else { None },
                players_capacity: if hb & 64 != 0 { Some(r.u32()?) } else { None },
            })
        } else {
            None
        };
        let ring_len = r.u16()?;
        let ring_head = r.i64()?;
        let byte_len = usize::from(ring_len).div_ceil(8);
        let ring = MinuteRing::from_parts(ring_len, ring_head, r.bytes(byte_len)?.to_vec())
            .ok_or_else(|| "state: malformed minute ring".to_string())?;
        let flips = r.sorted_list(MAX_FLIPS, "flips")?;
        let spoofs = r.sorted_list(MAX_SPOOFS, "spoofs")?;
        let slots = if version == STATE_VERSION_SCHEDULED {
            Some(r.slots()?)
        } else {
            None
        };
        let host_gaps = if has_gaps { r.host_gaps()? } else { Vec::new() };
        if !r.rest.is_empty() {
            return Err("state: trailing bytes".to_string());
        }
        Ok(Self {
            last_eval_ms,
            first_seen_ms,
            last,
            ring,
            flips,
            spoofs,
            slots,
            host_gaps,
        })
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("state: truncated".to_string());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn host_gaps(&mut self) -> Result<Vec<(i64, i64)>, String> {
        let count = usize::from(self.u8()?);
        if count == 0 || count > MAX_HOST_GAPS {
            return Err(format!("state: {count} host gaps (1 to {MAX_HOST_GAPS})"));
        }
        let mut gaps: Vec<(i64, i64)> = Vec::with_capacity(count);
        for _ in 0..count {
            let (down, up) = (self.i64()?, self.i64()?);
            if down >= up || gaps.last().is_some_and(|(_, prev_up)| *prev_up > down) {
                return Err("state: host gaps out of order".to_string());
            }
            gaps.push((down, up));
        }
        Ok(gaps)
    }

    fn slots(&mut self) -> Result<SlotState, String> {
        let slot_ms = self.i64()?;
        let flags = self.u8()?;
        if flags & !0b11 != 0 {
            return Err("state: unknown slot flags".to_string());
        }
        let filled_at = if flags & 1 != 0 {
            Some(self.i64()?)
        } else {
            None
        };
        let run_started_ms = if flags & 2 != 0 {
            Some(self.i64()?)
        } else {
            None
        };
        let count = usize::from(self.u16()?);
        if count > MAX_WINDOWS {
            return Err(format!(
                "state: too many slot windows ({count} > {MAX_WINDOWS})"
            ));
        }
        let mut windows: Vec<(i64, bool)> = Vec::with_capacity(count);
        for _ in 0..count {
            let at = self.i64()?;
            let filled = match self.u8()? {
                0 => false,
                1 => true,
                _ => return Err("state: a slot window is neither filled nor missed".to_string()),
            };
            if windows.last().is_some_and(|(prev, _)| *prev > at) {
                return Err("state: slot windows out of order".to_string());
            }
            windows.push((at, filled));
        }
        Ok(SlotState {
            slot_ms,
            filled_at,
            run_started_ms,
            windows,
        })
    }

    fn sorted_list(&mut self, max: usize, what: &str) -> Result<Vec<i64>, String> {
        let count = usize::from(self.u16()?);
        if count > max {
            return Err(format!("state: too many {what} ({count} > {max})"));
        }
        let mut list = Vec::with_capacity(count);
        for _ in 0..count {
            let at = self.i64()?;
            if list.last().is_some_and(|prev| *prev > at) {
                return Err(format!("state: {what} out of order"));
            }
            list.push(at);
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut state = State::new(1_700_000_000_000, 1440);
        state.first_seen_ms = Some(1_699_999_000_000);
        state.last = Some(LastHeartbeat {
            at_ms: 1_699_999_990_000,
            deadline_ms: 1_700_000_290_000,
            grace_ms: 300_000,
            signed: true,
            inconsistent: false,
            emergency: true,
            maintenance: false,
            uptime_seconds: Some(3600),
            players_current: None,
            players_capacity: Some(70),
        });
        state.ring.set_range(28_333_300, 28_333_333);
        state.flips = vec![1, 2, 3];
        state.spoofs = vec![-5, 7];
        state
    }

    #[test]
    fn host_gaps_round_trip_and_a_state_without_any_is_unchanged() {
        let plain = sample().encode();
        assert_eq!(plain[0], STATE_VERSION);
        let mut state = sample();
        state.host_gaps = vec![(10, 20), (20, 35)];
        let bytes = state.encode();
        assert_eq!(bytes[0], STATE_VERSION | HOST_GAPS_FLAG);
        assert_eq!(bytes.len(), plain.len() + 1 + 32);
        assert_eq!(State::decode(&bytes), Ok(state.clone()));
        let mut unsorted = state.clone();
        unsorted.host_gaps = vec![(30, 40), (10, 20)];
        assert!(State::decode(&unsorted.encode()).is_err());
        let mut empty_gap = state;
        empty_gap.host_gaps = vec![(5, 5)];
        assert!(State::decode(&empty_gap.encode()).is_err());
        let mut no_gaps = plain.clone();
        no_gaps[0] |= HOST_GAPS_FLAG;
        no_gaps.push(0);
        assert!(State::decode(&no_gaps).is_err(), "a gaps section of none");
    }

    fn scheduled() -> State {
        let mut state = sample();
        state.slots = Some(SlotState {
            slot_ms: 1_700_000_100_000,
            filled_at: None,
            run_started_ms: Some(1_700_000_000_000),
            windows: vec![(1, true), (2, false), (2, true)],
        });
        state
    }

    #[test]
    fn a_scheduled_state_round_trips_as_version_2() {
        let state = scheduled();
        let bytes = state.encode();
        assert_eq!(bytes.first(), Some(&STATE_VERSION_SCHEDULED));
        assert_eq!(State::decode(&bytes).unwrap(), state);
        assert_eq!(sample().encode().first(), Some(&STATE_VERSION));
        for cut in 0..bytes.len() {
            assert!(State::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut garbled = bytes.clone();
                garbled[i] ^= 1 << bit;
                if let Ok(state) = State::decode(&garbled) {
                    assert_eq!(state.encode(), garbled, "accepted states are canonical");
                }
            }
        }
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let state = sample();
        let bytes = state.encode();
        let decoded = State::decode(&bytes).unwrap();
        assert_eq!(decoded, state);
        assert_eq!(decoded.encode(), bytes);
        let empty = State::new(0, 60);
        assert_eq!(State::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let bytes = sample().encode();
        assert!(State::decode(&[]).is_err());
        assert!(State::decode(&[3]).is_err(), "unknown version");
        for cut in 0..bytes.len() {
            assert!(State::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(State::decode(&long).is_err(), "trailing byte");
        // Flip every bit of every byte: decoding must answer (Ok or Err), never panic.
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut garbled = bytes.clone();
                garbled[i] ^= 1 << bit;
                if let Ok(state) = State::decode(&garbled) {
                    assert_eq!(state.encode(), garbled, "accepted states are canonical");
                }
            }
        }
        // Pseudo-random garbage after a valid version byte.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..600 {
            let mut garbage = vec![STATE_VERSION];
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                garbage.push(seed as u8);
            }
            let _ = State::decode(&garbage);
        }
    }

    #[test]
    fn unsorted_lists_and_oversized_counts_are_rejected() {
        let mut state = sample();
        state.flips = vec![3, 1];
        assert!(State::decode(&state.encode()).is_err());
        let mut state = sample();
        state.spoofs = vec![0; MAX_SPOOFS + 1];
        assert!(State::decode(&state.encode()).is_err());
    }
}

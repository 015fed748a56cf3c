//! A ring of one bit per minute: was the server online at some moment of that minute?
//!
//! Minute `m` is absolute: `floor(ms / 60_000)` since the Unix epoch. The ring holds the
//! `len` minutes ending with `head` (inclusive); a minute outside that range reads as offline.
//! Every operation is bounded by `len` and cannot panic.

/// One bit per minute over the last `len` minutes ending at `head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteRing {
    len: u16,
    head: i64,
    bits: Vec<u8>,
}

/// The absolute minute containing `ms`.
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

impl MinuteRing {
    /// The shortest and longest ring, in minutes.
    pub const LEN_RANGE: core::ops::RangeInclusive<u16> = 60..=1440;

    /// An empty ring of `len` minutes ending at `head`. `len` is clamped to [`Self::LEN_RANGE`].
    pub fn new(len: u16, head: i64) -> Self {
        let len = len.clamp(*Self::LEN_RANGE.start(), *Self::LEN_RANGE.end());
        Self {
            len,
            head,
            bits: vec![0; Self::byte_len(len)],
        }
    }

    /// A ring from its encoded parts; `None` unless the parts are canonical (length in range,
    /// exact byte count, unused high bits zero).
    pub fn from_parts(len: u16, head: i64, bits: Vec<u8>) -> Option<Self> {
        if !Self::LEN_RANGE.contains(&len) || bits.len() != Self::byte_len(len) {
            return None;
        }
        let used_in_last = len % 8;
        if used_in_last != 0 {
            let last = *bits.last()?;
            if last >> used_in_last != 0 {
                return None;
            }
        }
        Some(Self { len, head, bits })
    }

    fn byte_len(len: u16) -> usize {
        usize::from(len).div_ceil(8)
    }

    /// The ring's length in minutes.
    pub fn minutes(&self) -> u16 {
        self.len
    }

    /// The newest minute the ring covers.
    pub fn head(&self) -> i64 {
        self.head
    }

    /// The raw bits (bit `i % 8` of byte `i / 8` is slot `i`; minute `m` is slot `m mod len`).
    pub fn bits(&self) -> &[u8] {
        &self.bits
    }

    /// The oldest minute the ring covers.
    pub fn oldest(&self) -> i64 {
        self.head.saturating_sub(i64::from(self.len) - 1)
    }

    fn contains(&self, minute: i64) -> bool {
        minute >= self.oldest() && minute <= self.head
    }

    fn slot(&self, minute: i64) -> (usize, u8) {
        // `len` is at least 60 (checked, not `%`, so no panic path is compiled in); the
        // remainder is in 0..len, so the cast is lossless.
        let slot = minute.checked_rem_euclid(i64::from(self.len)).unwrap_or(0) as usize;
        (slot / 8, 1u8 << (slot % 8))
    }

    /// Whether `minute` is marked online (false outside the ring).
    pub fn get(&self, minute: i64) -> bool {
        if !self.contains(minute) {
            return false;
        }
        let (byte, mask) = self.slot(minute);
        self.bits.get(byte).is_some_and(|b| b & mask != 0)
    }

    fn put(&mut self, minute: i64, online: bool) {
        let (byte, mask) = self.slot(minute);
        if let Some(b) = self.bits.get_mut(byte) {
            if online {
                *b |= mask;
            } else {
                *b &= !mask;
            }
        }
    }

    /// Marks `minute` online; ignored outside the ring.
    pub fn set(&mut self, minute: i64) {
        if self.contains(minute) {
            self.put(minute, true);
        }
    }

    /// Marks every minute of `from..=to` that lies in the ring online.
    pub fn set_range(&mut self, from: i64, to: i64) {
        // Clipped to the ring, so at most `len` iterations; `RangeInclusive` never overflows.
        for minute in from.max(self.oldest())..=to.min(self.head) {
            self.put(minute, true);
        }
    }

    /// Moves the head forward to `minute`, clearing the minutes that enter the ring. A minute
    /// at or before the head changes nothing.
    pub fn advance_to(&mut self, minute: i64) {
        if minute <= self.head {
            return;
        }
        if minute.saturating_sub(self.head) >= i64::from(self.len) {
            self.bits.iter_mut().for_each(|b| *b = 0);
        } else {
            // `minute > head` here, so `head + 1` cannot overflow; fewer than `len` minutes.
            for m in self.head.saturating_add(1)..=minute {
                self.put(m, false);
            }
        }
        self.head = minute;
    }

    /// The same minutes in a ring of `len` minutes (clamped to [`Self::LEN_RANGE`]) with the
    /// same head: a shorter ring forgets the oldest minutes, a longer one reads them as
    /// offline.
    pub fn resized(&self, len: u16) -> Self {
        let mut ring = Self::new(len, self.head);
        for minute in ring.oldest().max(self.oldest())..=self.head {
            if self.get(minute) {
                ring.put(minute, true);
            }
        }
        ring
    }

    /// How many minutes of `from..=to` (clipped to the ring) are marked online.
    pub fn count_online(&self, from: i64, to: i64) -> u32 {
        let minutes = from.max(self.oldest())..=to.min(self.head);
        let online = minutes.filter(|minute| self.get(*minute)).count();
        u32::try_from(online).unwrap_or(u32::MAX)
    }

    /// Whether any minute in the ring is marked online.
    pub fn any_online(&self) -> bool {
        self.bits.iter().any(|b| *b != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_counts_and_forgets() {
        let mut ring = MinuteRing::new(60, 1000);
        ring.set_range(900, 1000); // only 941..=1000 are in the ring
        assert_eq!(ring.count_online(0, 2000), 60);
        assert!(!ring.get(940));
        ring.advance_to(1010);
        assert_eq!(ring.count_online(0, 2000), 50);
        assert!(!ring.get(1005));
        ring.advance_to(5000);
        assert!(!ring.any_online());
    }

    #[test]
    fn negative_minutes_and_extremes_do_not_panic() {
        let mut ring = MinuteRing::new(1440, -5);
        ring.set_range(-100, 10);
        assert_eq!(ring.count_online(i64::MIN, i64::MAX), 96);
        let mut ring = MinuteRing::new(60, i64::MAX - 1);
        ring.set_range(i64::MAX - 100, i64::MAX);
        ring.advance_to(i64::MAX);
        assert_eq!(ring.count_online(i64::MIN, i64::MAX), 59);
        let mut ring = MinuteRing::new(60, i64::MIN);
        ring.set_range(i64::MIN, i64::MIN + 5);
        ring.advance_to(i64::MIN + 10);
        // The ring cannot reach before i64::MIN: only that minute was ever in it.
        assert_eq!(ring.count_online(i64::MIN, i64::MAX), 1);
    }

    #[test]
    fn resize_keeps_recent_minutes() {
        let mut ring = MinuteRing::new(120, 500);
        ring.set_range(381, 500);
        assert_eq!(ring.resized(60).count_online(0, 1000), 60);
        assert_eq!(ring.resized(1440).count_online(0, 1000), 120);
    }

    #[test]
    fn from_parts_rejects_non_canonical() {
        assert!(MinuteRing::from_parts(60, 0, vec![0; 8]).is_some());
        assert!(MinuteRing::from_parts(60, 0, vec![0; 7]).is_none());
        assert!(MinuteRing::from_parts(60, 0, vec![0, 0, 0, 0, 0, 0, 0, 0x10]).is_none());
        assert!(MinuteRing::from_parts(59, 0, vec![0; 8]).is_none());
    }
}

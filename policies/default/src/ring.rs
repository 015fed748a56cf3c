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
        let slot = self.slot_index(minute);
        (slot / 8, 1u8 << (slot % 8))
    }

    /// Minute `minute`'s slot, `minute mod len`, in `0..len`.
    fn slot_index(&self, minute: i64) -> usize {
        // `len` is at least 60 (checked, not `%`, so no panic path is compiled in); the
        // remainder is in 0..len, so the cast is lossless.
        minute.checked_rem_euclid(i64::from(self.len)).unwrap_or(0) as usize
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
        self.fill(from.max(self.oldest()), to.min(self.head), true);
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
            self.fill(self.head.saturating_add(1), minute, false);
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
        let (from, to) = (from.max(self.oldest()), to.min(self.head));
        self.slot_ranges(from, to)
            .into_iter()
            .flatten()
            .map(|(start, end)| count_bits(&self.bits, start, end))
            .sum()
    }

    /// Sets (or clears) the minutes `from..=to`, which the caller clipped to at most `len`
    /// minutes.
    fn fill(&mut self, from: i64, to: i64, online: bool) {
        for (start, end) in self.slot_ranges(from, to).into_iter().flatten() {
            fill_bits(&mut self.bits, start, end, online);
        }
    }

    /// The slots of the minutes `from..=to` (at most `len` of them) as at most two half-open
    /// slot ranges: one, or two when the minutes wrap around the end of the ring. Empty
    /// when `from > to`.
    fn slot_ranges(&self, from: i64, to: i64) -> [Option<(usize, usize)>; 2] {
        if from > to {
            return [None, None];
        }
        let len = usize::from(self.len);
        // `to - from + 1` minutes, at most `len` (callers clip to the ring); `i128` because the
        // difference of two `i64` can overflow `i64`.
        let count = usize::try_from((i128::from(to) - i128::from(from) + 1).min(len as i128))
            .unwrap_or(len);
        let start = self.slot_index(from);
        let first_end = (start + count).min(len);
        let wrapped = start + count - first_end;
        [
            Some((start, first_end)),
            (wrapped > 0).then_some((0, wrapped)),
        ]
    }

    /// Whether any minute in the ring is marked online.
    pub fn any_online(&self) -> bool {
        self.bits.iter().any(|b| *b != 0)
    }
}

/// The mask of bits `from..to` of one byte (`from <= to <= 8`).
fn byte_mask(from: usize, to: usize) -> u8 {
    // Bits `0..n` of a byte; `u16` so that `n = 8` does not overflow the shift.
    let below = |n: usize| ((1u16 << n.min(8)) - 1) as u8;
    below(to) & !below(from)
}

/// How many of bits `start..end` are set (bit `i % 8` of byte `i / 8` is bit `i`): whole
/// 64-bit words are counted with one popcount each, the partial bytes at either end masked.
fn count_bits(bits: &[u8], start: usize, end: usize) -> u32 {
    if start >= end {
        return 0;
    }
    let (first, last) = (start / 8, (end - 1) / 8);
    let Some(bytes) = bits.get(first..=last) else {
        return 0;
    };
    if first == last {
        return bytes.first().map_or(0, |b| {
            (b & byte_mask(start % 8, end - 8 * first)).count_ones()
        });
    }
    let head = bytes
        .first()
        .map_or(0, |b| (b & byte_mask(start % 8, 8)).count_ones());
    let tail = bytes
        .last()
        .map_or(0, |b| (b & byte_mask(0, end - 8 * last)).count_ones());
    let middle = bytes.get(1..bytes.len() - 1).unwrap_or_default();
    let mut words = middle.chunks_exact(8);
    let mut count: u32 = words
        .by_ref()
        .map(|word| {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            u64::from_le_bytes(w).count_ones()
        })
        .sum();
    count += words
        .remainder()
        .iter()
        .map(|b| b.count_ones())
        .sum::<u32>();
    head + count + tail
}

/// Sets (or clears) bits `start..end`.
fn fill_bits(bits: &mut [u8], start: usize, end: usize, online: bool) {
    if start >= end {
        return;
    }
    let (first, last) = (start / 8, (end - 1) / 8);
    let Some(bytes) = bits.get_mut(first..=last) else {
        return;
    };
    let n = bytes.len();
    for (i, byte) in bytes.iter_mut().enumerate() {
        let from = if i == 0 { start % 8 } else { 0 };
        let to = if i + 1 == n { end - 8 * last } else { 8 };
        let mask = byte_mask(from, to);
        if online {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
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

    /// The ring against a model that keeps every online minute in a set, over random
    /// lengths, heads, ranges (wrapping or not) and advances.
    #[test]
    fn word_wise_operations_match_a_minute_by_minute_model() {
        use std::collections::BTreeSet;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for len in [60u16, 61, 67, 500, 1439, 1440] {
            let mut head = 28_333_333 + next(10_000) as i64;
            let mut ring = MinuteRing::new(len, head);
            let mut model = BTreeSet::new();
            for _ in 0..400 {
                let oldest = head - i64::from(len) + 1;
                match next(4) {
                    0 => {
                        let from = oldest - 30 + next(u64::from(len) + 60) as i64;
                        let to = from + next(u64::from(len) + 30) as i64;
                        ring.set_range(from, to);
                        model.extend(from.max(oldest)..=to.min(head));
                    }
                    1 => {
                        head += next(u64::from(len) * 2 / 3 + 2) as i64;
                        head += if next(20) == 0 { i64::from(len) } else { 0 };
                        ring.advance_to(head);
                        let oldest = head - i64::from(len) + 1;
                        model.retain(|m| *m >= oldest);
                    }
                    _ => {
                        let from = oldest - 10 + next(u64::from(len) + 20) as i64;
                        let to = from + next(u64::from(len) + 20) as i64 - 10;
                        let expected = model.range(from..=to.max(from)).count();
                        let expected = if to < from { 0 } else { expected };
                        assert_eq!(
                            ring.count_online(from, to) as usize,
                            expected,
                            "len {len} head {head} {from}..={to}"
                        );
                    }
                }
                for minute in oldest..=head {
                    assert_eq!(ring.get(minute), model.contains(&minute), "minute {minute}");
                }
            }
        }
    }

    #[test]
    fn from_parts_rejects_non_canonical() {
        assert!(MinuteRing::from_parts(60, 0, vec![0; 8]).is_some());
        assert!(MinuteRing::from_parts(60, 0, vec![0; 7]).is_none());
        assert!(MinuteRing::from_parts(60, 0, vec![0, 0, 0, 0, 0, 0, 0, 0x10]).is_none());
        assert!(MinuteRing::from_parts(59, 0, vec![0; 8]).is_none());
    }
}

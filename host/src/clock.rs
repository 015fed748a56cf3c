//! The host's clock and its one timestamp format: milliseconds since the Unix epoch, UTC, and
//! RFC 3339 text. The ground floor: every room may import it, and it imports nothing of Vigil's.
//!
//! Policies never read this clock: the engine passes its value in as `now-ms`, so replay,
//! backtest and shadow evaluation stay deterministic.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, from the host clock.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Parses an RFC 3339 timestamp to milliseconds since the Unix epoch.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC (millisecond precision).
pub fn format_rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_at_millisecond_precision() {
        let ms = parse_rfc3339_ms("2026-01-22T21:05:00.123Z").expect("valid");
        assert_eq!(format_rfc3339_ms(ms), "2026-01-22T21:05:00.123Z");
        assert_eq!(
            parse_rfc3339_ms("2026-01-22T23:05:00+02:00"),
            Some(ms - 123)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}

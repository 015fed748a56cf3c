//! `heartbeats` is partitioned by month: the partitions around now are created ahead of time,
//! at open and hourly (while the host follows changes, see `changes.rs`).

use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPool;

use crate::store::StoreError;

/// How often the monthly partitions ahead are checked.
pub(super) const PARTITIONS_EVERY: Duration = Duration::from_secs(3600);

/// Creates the monthly `heartbeats` partitions from last month to three months ahead, if
/// missing. Several hosts may race here: a partition another host just created is fine.
pub(super) async fn ensure(pool: &PgPool, now_ms: i64) -> Result<(), StoreError> {
    for offset in -1..=3 {
        let (name, from, to) = month_partition(now_ms, offset)?;
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(&name)
            .fetch_one(pool)
            .await?;
        if exists.is_some() {
            continue;
        }
        let created = sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF heartbeats \
             FOR VALUES FROM ({from}) TO ({to})"
        )))
        .execute(pool)
        .await;
        match created {
            Ok(_) => tracing::info!(partition = %name, "heartbeats partition created"),
            // Another host created it at the same moment, or rows in the DEFAULT partition
            // overlap the range (an operator must move them; inserts still succeed there).
            Err(e) => tracing::warn!(partition = %name, error = %e, "partition not created"),
        }
    }
    Ok(())
}

/// `(name, from_ms, to_ms)` of the month `offset` months from the one holding `now_ms`.
fn month_partition(now_ms: i64, offset: i32) -> Result<(String, i64, i64), StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("partition date: {e}"));
    let now = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .map_err(|e| corrupt(&e))?;
    let index = now.year() * 12 + i32::from(u8::from(now.month())) - 1 + offset;
    let start = |index: i32| -> Result<(i32, u8, i64), StoreError> {
        let (year, month) = (index.div_euclid(12), (index.rem_euclid(12) + 1) as u8);
        let month_enum = time::Month::try_from(month).map_err(|e| corrupt(&e))?;
        let date = time::Date::from_calendar_date(year, month_enum, 1).map_err(|e| corrupt(&e))?;
        let ms = date.midnight().assume_utc().unix_timestamp() * 1000;
        Ok((year, month, ms))
    };
    let (year, month, from) = start(index)?;
    let (_, _, to) = start(index + 1)?;
    Ok((format!("heartbeats_y{year:04}m{month:02}"), from, to))
}

#[cfg(test)]
mod tests {
    use super::month_partition;

    #[test]
    fn month_partitions_cover_whole_utc_months_across_a_year_end() {
        // 2026-12-15T00:00:00Z
        let mid_december = 1_797_292_800_000;
        let (name, from, to) = month_partition(mid_december, 0).expect("valid");
        assert_eq!(name, "heartbeats_y2026m12");
        assert_eq!(from, 1_796_083_200_000); // 2026-12-01
        assert_eq!(to, 1_798_761_600_000); // 2027-01-01
        let (next, next_from, _) = month_partition(mid_december, 1).expect("valid");
        assert_eq!((next.as_str(), next_from), ("heartbeats_y2027m01", to));
        let (previous, _, previous_to) = month_partition(mid_december, -12).expect("valid");
        assert_eq!(previous, "heartbeats_y2025m12");
        assert_eq!(previous_to, 1_767_225_600_000); // 2026-01-01
    }
}

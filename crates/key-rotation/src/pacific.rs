//! Google resets requests-per-day at midnight US/Pacific. Day boundaries are
//! computed here, DST included, and handed to the limiter backends.
//!
//! The US rule (since 2007): daylight time from the second Sunday of March at
//! 02:00 PST to the first Sunday of November at 02:00 PDT. A tz database
//! would be a large dependency for one zone with one rule.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

const PST_HOURS: i64 = -8;
const PDT_HOURS: i64 = -7;

fn nth_sunday(year: i32, month: u32, n: u32) -> NaiveDate {
    let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or_default();
    let offset = (7 - first.weekday().num_days_from_sunday()) % 7;
    first + Duration::days(i64::from(offset + 7 * (n - 1)))
}

fn dst_dates(year: i32) -> (NaiveDate, NaiveDate) {
    (nth_sunday(year, 3, 2), nth_sunday(year, 11, 1))
}

/// The UTC offset in hours at a UTC instant.
fn offset_at(instant: DateTime<Utc>) -> i64 {
    let (start, end) = dst_dates(instant.year());
    // 02:00 PST is 10:00 UTC; 02:00 PDT is 09:00 UTC.
    let dst_begins = Utc.from_utc_datetime(&start.and_hms_opt(10, 0, 0).unwrap_or_default());
    let dst_ends = Utc.from_utc_datetime(&end.and_hms_opt(9, 0, 0).unwrap_or_default());
    if instant >= dst_begins && instant < dst_ends {
        PDT_HOURS
    } else {
        PST_HOURS
    }
}

/// The offset in force at local midnight starting `date` (transitions happen
/// at 02:00, so the change day starts on the old offset).
fn offset_at_local_midnight(date: NaiveDate) -> i64 {
    let (start, end) = dst_dates(date.year());
    if date > start && date <= end {
        PDT_HOURS
    } else {
        PST_HOURS
    }
}

fn local_midnight_utc(date: NaiveDate) -> DateTime<Utc> {
    let midnight = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default());
    midnight - Duration::hours(offset_at_local_midnight(date))
}

/// The Pacific day containing `instant`: its start and end, in UTC.
pub fn day_bounds(instant: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let local_date = (instant + Duration::hours(offset_at(instant))).date_naive();
    let start = local_midnight_utc(local_date);
    let end = local_midnight_utc(local_date + Duration::days(1));
    (start, end)
}

/// `day_bounds` of a millisecond timestamp, in milliseconds.
pub fn day_bounds_ms(now_ms: u64) -> (u64, u64) {
    let instant = DateTime::from_timestamp_millis(i64::try_from(now_ms).unwrap_or(i64::MAX)).unwrap_or_default();
    let (start, end) = day_bounds(instant);
    let to_ms = |t: DateTime<Utc>| u64::try_from(t.timestamp_millis()).unwrap_or(0);
    (to_ms(start), to_ms(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn an_ordinary_winter_day_is_utc_minus_eight() {
        let (start, end) = day_bounds(utc("2026-01-15T20:00:00Z"));
        assert_eq!(start, utc("2026-01-15T08:00:00Z"));
        assert_eq!(end, utc("2026-01-16T08:00:00Z"));
        // 03:00 UTC on the 16th is still the evening of the 15th in California.
        assert_eq!(day_bounds(utc("2026-01-16T03:00:00Z")).0, utc("2026-01-15T08:00:00Z"));
    }

    #[test]
    fn an_ordinary_summer_day_is_utc_minus_seven() {
        let (start, end) = day_bounds(utc("2026-07-04T12:00:00Z"));
        assert_eq!(start, utc("2026-07-04T07:00:00Z"));
        assert_eq!(end, utc("2026-07-05T07:00:00Z"));
    }

    #[test]
    fn the_spring_forward_day_has_23_hours() {
        // 2026-03-08 is the second Sunday of March.
        let (start, end) = day_bounds(utc("2026-03-08T12:00:00Z"));
        assert_eq!(start, utc("2026-03-08T08:00:00Z"));
        assert_eq!(end, utc("2026-03-09T07:00:00Z"));
        assert_eq!(end - start, Duration::hours(23));
    }

    #[test]
    fn the_fall_back_day_has_25_hours() {
        // 2026-11-01 is the first Sunday of November.
        let (start, end) = day_bounds(utc("2026-11-01T12:00:00Z"));
        assert_eq!(start, utc("2026-11-01T07:00:00Z"));
        assert_eq!(end, utc("2026-11-02T08:00:00Z"));
        assert_eq!(end - start, Duration::hours(25));
        // Just before and after the 09:00 UTC switch the day is the same one.
        assert_eq!(day_bounds(utc("2026-11-01T08:59:59Z")).0, start);
        assert_eq!(day_bounds(utc("2026-11-01T09:00:01Z")).0, start);
    }

    #[test]
    fn nth_sunday_finds_the_rule_dates() {
        assert_eq!(nth_sunday(2027, 3, 2), NaiveDate::from_ymd_opt(2027, 3, 14).unwrap());
        assert_eq!(nth_sunday(2027, 11, 1), NaiveDate::from_ymd_opt(2027, 11, 7).unwrap());
        assert_eq!(nth_sunday(2030, 3, 2).weekday(), chrono::Weekday::Sun);
    }
}

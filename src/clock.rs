//! Timestamps: RFC 3339 UTC with millisecond precision, fixed width so text order is time order.

use time::{format_description::BorrowedFormatItem, macros::format_description, OffsetDateTime};

const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Now, formatted for storage and the API.
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

pub fn format(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .expect("a UTC time always formats")
}

const FORMAT_NANOS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Now, in nanoseconds since the Unix epoch (the unit runtime log lines are stored in).
pub fn now_nanos() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// Nanoseconds since the epoch as RFC 3339 UTC with nine fraction digits, fixed width.
pub fn format_nanos(nanos: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .map(|at| at.format(FORMAT_NANOS).expect("a UTC time always formats"))
        .unwrap_or_default()
}

/// Parses an RFC 3339 time (any offset, any fraction width) to nanoseconds since the epoch.
pub fn parse_nanos(text: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_fixed_width_utc() {
        assert_eq!(
            format(datetime!(2026-01-02 03:04:05.6 +02:00)),
            "2026-01-02T01:04:05.600Z"
        );
    }

    #[test]
    fn nanoseconds_round_trip_through_rfc_3339() {
        let nanos = parse_nanos("2026-01-02T03:04:05.123456789+02:00").unwrap();
        assert_eq!(format_nanos(nanos), "2026-01-02T01:04:05.123456789Z");
        // Docker trims trailing zeros of the fraction.
        assert_eq!(
            format_nanos(parse_nanos("2026-01-02T01:04:05.1Z").unwrap()),
            "2026-01-02T01:04:05.100000000Z"
        );
        assert_eq!(parse_nanos("yesterday"), None);
    }
}

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
}

//! Relative durations as people type them in query strings and config: `30s`, `10m`,
//! `2h`, `1d`, `1w`. One parser, shared by every endpoint that takes a window or a step,
//! so they all accept the same forms and reject the rest with the same message.

use std::{fmt, time::Duration};

/// The accepted forms, quoted by every error message so a caller can fix the input.
pub const ACCEPTED_FORMS: &str =
    "a whole number followed by a unit: s (seconds), m (minutes), h (hours), d (days) or w (weeks), such as `30s`, `10m`, `2h`, `1d`";

/// The longest duration accepted: ten years, so arithmetic on seconds never overflows.
const MAX_SECS: u64 = 10 * 366 * 24 * 3600;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDuration {
    input: String,
}

impl fmt::Display for InvalidDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a duration; use {ACCEPTED_FORMS}",
            self.input.escape_default()
        )
    }
}

impl std::error::Error for InvalidDuration {}

/// Parses `<digits><unit>` (one unit, no sign, no spaces, not zero) into a duration.
pub fn parse(input: &str) -> Result<Duration, InvalidDuration> {
    match parse_offset(input)? {
        zero if zero.is_zero() => Err(InvalidDuration {
            input: input.chars().take(40).collect(),
        }),
        duration => Ok(duration),
    }
}

/// Like `parse`, but zero is accepted: an offset back from now, where `0s` means now.
pub fn parse_offset(input: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration {
        input: input.chars().take(40).collect(),
    };
    let split = input
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (digits, unit) = input.split_at(split);
    if digits.is_empty() || digits.len() > 12 {
        return Err(invalid());
    }
    let count: u64 = digits.parse().map_err(|_| invalid())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(invalid()),
    };
    let secs = count.checked_mul(unit_secs).ok_or_else(invalid)?;
    if secs > MAX_SECS {
        return Err(invalid());
    }
    Ok(Duration::from_secs(secs))
}

/// Writes a whole number of seconds in the largest unit that divides it (`3600` → `1h`).
pub fn format_secs(secs: u64) -> String {
    for (unit, size) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size && secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<u64>) {
        assert_eq!(
            parse(input).ok().map(|d| d.as_secs()),
            expected,
            "parse({input:?})"
        );
    }

    #[test]
    fn accepts_one_unit_after_digits() {
        check("30s", Some(30));
        check("10m", Some(600));
        check("2h", Some(7200));
        check("1d", Some(86_400));
        check("1w", Some(604_800));
        check("90s", Some(90));
        check("007m", Some(420));
    }

    #[test]
    fn rejects_everything_else() {
        for input in [
            "",
            "s",
            "10",
            "0s",
            "-5m",
            "+5m",
            "1.5h",
            "5 m",
            " 5m",
            "5m ",
            "5M",
            "5min",
            "1h30m",
            "5ms",
            "1y",
            "99999999999999999999s",
            "999999999999w",
            "১০m",
            "10m\n",
        ] {
            check(input, None);
        }
    }

    #[test]
    fn the_error_names_the_input_and_the_accepted_forms() {
        let message = parse("yesterday").unwrap_err().to_string();
        assert!(message.contains("`yesterday`"), "{message}");
        assert!(message.contains("`10m`"), "{message}");
    }

    #[test]
    fn formats_in_the_largest_whole_unit() {
        for (secs, text) in [
            (10, "10s"),
            (60, "1m"),
            (90, "90s"),
            (3600, "1h"),
            (5400, "90m"),
            (86_400, "1d"),
            (604_800, "1w"),
        ] {
            assert_eq!(format_secs(secs), text);
            assert_eq!(parse(text).unwrap().as_secs(), secs);
        }
    }
}

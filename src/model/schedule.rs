//! Backup schedules and retention, as pure functions of time: `daily at HH:MM` or a
//! five-field cron expression (UTC), whether a run is due, and which scheduled backups a
//! keep-N-daily/keep-N-weekly policy prunes.

use std::collections::HashSet;

use time::{Duration, OffsetDateTime};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// Once a day at this UTC time.
    Daily { hour: u8, minute: u8 },
    /// `minute hour day-of-month month day-of-week`, each `*`, a number, a range `a-b`,
    /// a list `a,b` or a step `*/n` / `a-b/n`.
    Cron(Cron),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// Cron's rule: when both day fields are restricted, either may match.
    day_of_month_any: bool,
    day_of_week_any: bool,
}

const EXPECTED: &str =
    "use `daily at HH:MM` (UTC) or five cron fields `minute hour day-of-month month day-of-week`, e.g. `30 2 * * 1-5`";

impl Spec {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(time) = text.strip_prefix("daily at ") {
            let (hour, minute) = time
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("schedule `{text}` is invalid; {EXPECTED}"))?;
            let hour: u8 = hour
                .parse()
                .ok()
                .filter(|h| *h < 24)
                .ok_or_else(|| format!("hour `{hour}` is not 00-23; {EXPECTED}"))?;
            let minute: u8 = minute
                .parse()
                .ok()
                .filter(|m| *m < 60)
                .ok_or_else(|| format!("minute `{minute}` is not 00-59; {EXPECTED}"))?;
            return Ok(Self::Daily { hour, minute });
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!("schedule `{text}` is invalid; {EXPECTED}"));
        }
        let field = |index: usize, min: u32, max: u32, name: &str| {
            parse_field(fields[index], min, max).map_err(|why| {
                format!(
                    "cron {name} `{}` is invalid: {why}; {EXPECTED}",
                    fields[index]
                )
            })
        };
        let minutes = field(0, 0, 59, "minute")?;
        let hours = field(1, 0, 23, "hour")?;
        let days_of_month = field(2, 1, 31, "day of month")?;
        let months = field(3, 1, 12, "month")?;
        // 7 is Sunday too.
        let mut days_of_week = field(4, 0, 7, "day of week")?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week |= 1;
        }
        Ok(Self::Cron(Cron {
            minutes,
            hours: hours as u32,
            days_of_month: days_of_month as u32,
            months: months as u16,
            days_of_week: (days_of_week & 0x7f) as u8,
            day_of_month_any: fields[2] == "*",
            day_of_week_any: fields[4] == "*",
        }))
    }

    /// Whether the schedule fires in the minute of `at`.
    pub fn fires_at(&self, at: OffsetDateTime) -> bool {
        match self {
            Self::Daily { hour, minute } => at.hour() == *hour && at.minute() == *minute,
            Self::Cron(cron) => {
                let bit = |mask: u64, value: u8| mask & (1u64 << value) != 0;
                let dom = bit(cron.days_of_month as u64, at.day());
                let dow = bit(
                    cron.days_of_week as u64,
                    at.weekday().number_days_from_sunday(),
                );
                let day = match (cron.day_of_month_any, cron.day_of_week_any) {
                    (true, true) => true,
                    (true, false) => dow,
                    (false, true) => dom,
                    (false, false) => dom || dow,
                };
                bit(cron.minutes, at.minute())
                    && bit(cron.hours as u64, at.hour())
                    && bit(cron.months as u64, u8::from(at.month()))
                    && day
            }
        }
    }

    /// Whether the schedule fired in a minute after `since` up to and including `now`.
    /// Only the last two days are looked at: a daemon that was down longer runs once.
    pub fn due(&self, since: OffsetDateTime, now: OffsetDateTime) -> bool {
        let start = since.max(now - Duration::days(2));
        let mut minute = truncate_to_minute(start) + Duration::minutes(1);
        let end = truncate_to_minute(now);
        while minute <= end {
            if self.fires_at(minute) {
                return true;
            }
            minute += Duration::minutes(1);
        }
        false
    }
}

fn truncate_to_minute(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_second(0)
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap_or(at)
}

fn parse_field(text: &str, min: u32, max: u32) -> Result<u64, String> {
    let mut mask = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("step `{step}` is not a positive number"))?;
                (range, step)
            }
            None => (part, 1),
        };
        let number = |s: &str| -> Result<u32, String> {
            s.parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| format!("`{s}` is not a number from {min} to {max}"))
        };
        let (from, to) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!("range `{range}` runs backwards"));
            }
            (a, b)
        } else {
            let n = number(range)?;
            // `5/15` means from 5 to the end in steps of 15, as in Vixie cron.
            if step > 1 {
                (n, max)
            } else {
                (n, n)
            }
        };
        let mut value = from;
        while value <= to {
            mask |= 1 << value;
            value += step;
        }
    }
    Ok(mask)
}

/// Which of a target's scheduled backups to prune: `backups` are (id, started) newest
/// first; the newest of each of the last `keep_daily` days and of each of the last
/// `keep_weekly` ISO weeks (that have backups) are kept, the rest returned.
pub fn prune(
    backups: &[(String, OffsetDateTime)],
    keep_daily: u32,
    keep_weekly: u32,
) -> Vec<String> {
    let mut keep: HashSet<&str> = HashSet::new();
    let mut days = Vec::new();
    let mut weeks = Vec::new();
    for (id, at) in backups {
        let day = at.date();
        if !days.contains(&day) {
            days.push(day);
            if days.len() <= keep_daily as usize {
                keep.insert(id);
            }
        }
        let week = (at.date().iso_week(), at.date().to_iso_week_date().0);
        if !weeks.contains(&week) {
            weeks.push(week);
            if weeks.len() <= keep_weekly as usize {
                keep.insert(id);
            }
        }
    }
    backups
        .iter()
        .filter(|(id, _)| !keep.contains(id.as_str()))
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn schedules_parse_or_say_what_is_accepted() {
        assert_eq!(
            Spec::parse("daily at 03:30").unwrap(),
            Spec::Daily {
                hour: 3,
                minute: 30
            }
        );
        for bad in [
            "daily at 24:00",
            "daily at 3",
            "hourly",
            "* * * *",
            "60 * * * *",
            "* * 0 * *",
            "5-1 * * * *",
            "*/0 * * * *",
            "a * * * *",
        ] {
            let err = Spec::parse(bad).unwrap_err();
            assert!(err.contains("daily at HH:MM"), "{bad}: {err}");
        }
    }

    #[test]
    fn cron_fields_match_like_cron() {
        let check = |spec: &str, at: OffsetDateTime, expected: bool| {
            assert_eq!(
                Spec::parse(spec).unwrap().fires_at(at),
                expected,
                "{spec} at {at}"
            );
        };
        // 2026-03-02 is a Monday.
        check("30 2 * * 1-5", datetime!(2026-03-02 02:30 UTC), true);
        check("30 2 * * 1-5", datetime!(2026-03-01 02:30 UTC), false);
        check("*/15 * * * *", datetime!(2026-03-01 10:45 UTC), true);
        check("*/15 * * * *", datetime!(2026-03-01 10:46 UTC), false);
        check("0 0 1 * 0", datetime!(2026-03-01 00:00 UTC), true); // the 1st (a Sunday)
        check("0 0 15 * 1", datetime!(2026-03-02 00:00 UTC), true); // a Monday: either day field
        check("0 0 * * 7", datetime!(2026-03-01 00:00 UTC), true); // 7 is Sunday
        check("0 12 * 6 *", datetime!(2026-03-01 12:00 UTC), false);
        check("5,10 * * * *", datetime!(2026-03-01 12:10 UTC), true);
        check("daily at 03:00", datetime!(2026-03-01 03:00:59 UTC), true);
    }

    #[test]
    fn due_looks_at_the_minutes_since_the_last_run() {
        let spec = Spec::parse("daily at 03:00").unwrap();
        assert!(spec.due(
            datetime!(2026-03-01 02:59:30 UTC),
            datetime!(2026-03-01 03:00:05 UTC)
        ));
        assert!(!spec.due(
            datetime!(2026-03-01 03:00:05 UTC),
            datetime!(2026-03-01 03:00:40 UTC)
        ));
        assert!(!spec.due(
            datetime!(2026-03-01 03:01 UTC),
            datetime!(2026-03-02 02:59 UTC)
        ));
        assert!(spec.due(
            datetime!(2026-02-01 00:00 UTC),
            datetime!(2026-03-02 04:00 UTC)
        ));
    }

    #[test]
    fn retention_keeps_the_newest_of_each_day_and_week() {
        // Newest first: two on the 10th (a Tuesday), one each on the 9th, 8th (Sunday),
        // 1st and February 20th.
        let backups: Vec<(String, OffsetDateTime)> = [
            ("a", datetime!(2026-03-10 12:00 UTC)),
            ("b", datetime!(2026-03-10 03:00 UTC)),
            ("c", datetime!(2026-03-09 03:00 UTC)),
            ("d", datetime!(2026-03-08 03:00 UTC)),
            ("e", datetime!(2026-03-01 03:00 UTC)),
            ("f", datetime!(2026-02-20 03:00 UTC)),
        ]
        .into_iter()
        .map(|(id, at)| (id.to_owned(), at))
        .collect();
        // Two days (a, c) and two weeks (a for week 11, d for week 10).
        assert_eq!(prune(&backups, 2, 2), vec!["b", "e", "f"]);
        assert_eq!(prune(&backups, 0, 0).len(), 6);
        assert_eq!(prune(&backups, 30, 0), vec!["b"]);
    }
}

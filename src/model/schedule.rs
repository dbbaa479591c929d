//! Schedules of backups and jobs, as pure functions of time: five cron fields (searched by
//! `croner`), `daily at HH:MM`, `hourly`, `every 15m` / `every 2h`, in UTC or an IANA time
//! zone (from `jiff`, which reads the system's time zone database); when a schedule next
//! fires, whether a backup is due, and which scheduled backups a keep-N-daily/keep-N-weekly
//! policy prunes.
//!
//! One parser serves both: `Spec::parse` takes the forms the backup API has always taken
//! (`daily at HH:MM` and cron, UTC), `Spec::parse_job` every form; a job adds a time zone
//! through `Zone`. Neither `croner` nor `jiff` appears outside this file: callers speak
//! `time::OffsetDateTime`.

use std::{collections::HashSet, fmt, str::FromStr};

use croner::parser::{CronParser, Seconds, Year};
use time::{Duration, OffsetDateTime};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// Once a day at this wall clock time (of UTC or the job's zone).
    Daily { hour: u8, minute: u8 },
    /// At minute 0 of every hour.
    Hourly,
    /// Every this many minutes, counted from midnight UTC of the Unix epoch, so `every 15m`
    /// fires at :00, :15, :30 and :45 whatever the day the job was made, and a restart
    /// never shifts it.
    Every { minutes: u32 },
    /// `minute hour day-of-month month day-of-week`, each `*`, a number, a name (`MON`,
    /// `JAN`), a range `a-b`, a list `a,b` or a step `*/n` / `a-b/n` / `a/n`.
    Cron(Cron),
}

/// Five cron fields, kept with their text (what the API shows back).
#[derive(Debug, Clone)]
pub struct Cron {
    text: String,
    /// Boxed: a parsed pattern is some 300 bytes, the other forms a few.
    cron: Box<croner::Cron>,
}

impl PartialEq for Cron {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Cron {}

/// The forms of the backup API, quoted by each of its errors.
const EXPECTED: &str =
    "use `daily at HH:MM` (UTC) or five cron fields `minute hour day-of-month month day-of-week`, e.g. `30 2 * * 1-5`";

/// The forms of a job's schedule, quoted by each of its errors.
pub const JOB_FORMS: &str = "use five cron fields `minute hour day-of-month month day-of-week` (e.g. `0 3 * * *`), `daily at HH:MM`, `hourly`, or `every N` with N minutes (`every 15m`) or hours (`every 2h`), from 1m to 7 days";

/// The longest interval `every` takes: a week, in minutes.
pub const MAX_EVERY_MINUTES: u32 = 7 * 24 * 60;

impl Spec {
    /// The backup API's forms: `daily at HH:MM` or five cron fields, in UTC.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(time) = text.strip_prefix("daily at ") {
            return parse_daily(text, time, EXPECTED);
        }
        parse_cron(text, EXPECTED).map(Self::Cron)
    }

    /// A job's forms: the backup forms, `hourly`, and `every Nm` / `every Nh`.
    pub fn parse_job(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(time) = text.strip_prefix("daily at ") {
            return parse_daily(text, time, JOB_FORMS);
        }
        if text == "hourly" {
            return Ok(Self::Hourly);
        }
        if let Some(interval) = text.strip_prefix("every ") {
            return parse_every(interval.trim(), JOB_FORMS);
        }
        parse_cron(text, JOB_FORMS).map(Self::Cron)
    }

    /// Whether the schedule fires in the minute of `at` (UTC).
    pub fn fires_at(&self, at: OffsetDateTime) -> bool {
        let minute = truncate_to_minute(at);
        match self.next_after(minute - Duration::seconds(1), &Zone::utc()) {
            Some(next) => next == minute,
            None => false,
        }
    }

    /// Whether the schedule fired in a minute after `since` up to and including `now`
    /// (UTC). Only the last two days are looked at: a daemon that was down longer runs once.
    pub fn due(&self, since: OffsetDateTime, now: OffsetDateTime) -> bool {
        let start = truncate_to_minute(since.max(now - Duration::days(2)));
        self.next_after(start, &Zone::utc())
            .is_some_and(|next| next <= truncate_to_minute(now))
    }

    /// The first time strictly after `after` when the schedule fires in `zone`, or `None`
    /// if it never fires again (a cron date that does not exist, such as February 30th).
    /// A wall clock time a DST change skips fires as the clock resumes (the OCPS rule, as
    /// Vixie cron does); one it repeats fires once.
    pub fn next_after(&self, after: OffsetDateTime, zone: &Zone) -> Option<OffsetDateTime> {
        match self {
            Self::Every { minutes } => {
                let step = i128::from(*minutes) * 60 * 1_000_000_000;
                let nanos = after.unix_timestamp_nanos();
                let next = (nanos.div_euclid(step) + 1) * step;
                OffsetDateTime::from_unix_timestamp_nanos(next).ok()
            }
            Self::Daily { hour, minute } => {
                next_cron(&cron_of(&format!("{minute} {hour} * * *"))?, after, zone)
            }
            Self::Hourly => next_cron(&cron_of("0 * * * *")?, after, zone),
            Self::Cron(cron) => next_cron(&cron.cron, after, zone),
        }
    }

    /// The last time at or before `at` when the schedule fires in `zone`, or `None` if it
    /// never fired before (within the search's reach).
    pub fn last_at_or_before(&self, at: OffsetDateTime, zone: &Zone) -> Option<OffsetDateTime> {
        match self {
            Self::Every { minutes } => {
                let step = i128::from(*minutes) * 60 * 1_000_000_000;
                let last = at.unix_timestamp_nanos().div_euclid(step) * step;
                OffsetDateTime::from_unix_timestamp_nanos(last).ok()
            }
            Self::Daily { hour, minute } => {
                previous_cron(&cron_of(&format!("{minute} {hour} * * *"))?, at, zone)
            }
            Self::Hourly => previous_cron(&cron_of("0 * * * *")?, at, zone),
            Self::Cron(cron) => previous_cron(&cron.cron, at, zone),
        }
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Daily { hour, minute } => write!(f, "daily at {hour:02}:{minute:02}"),
            Self::Hourly => f.write_str("hourly"),
            Self::Every { minutes } if minutes % 60 == 0 => write!(f, "every {}h", minutes / 60),
            Self::Every { minutes } => write!(f, "every {minutes}m"),
            Self::Cron(cron) => f.write_str(&cron.text),
        }
    }
}

/// A time zone: UTC, or one of the IANA database's names (`Europe/Paris`).
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    zone: jiff::tz::TimeZone,
}

impl Zone {
    pub fn utc() -> Self {
        Self {
            name: "UTC".to_owned(),
            zone: jiff::tz::TimeZone::UTC,
        }
    }

    /// An IANA name, looked up in the system's time zone database.
    pub fn parse(name: &str) -> Result<Self, String> {
        let name = name.trim();
        // A name is looked up in a database of files: only the characters IANA names use,
        // in segments that are neither empty nor start with a sign (no absolute path).
        let known = name.len() <= 64
            && name.split('/').all(|segment| {
                segment
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
            });
        let zone = known
            .then(|| jiff::tz::db().get(name).ok())
            .flatten()
            .ok_or_else(|| {
                format!(
                    "time zone `{}` is not an IANA time zone name; use one such as `Europe/Paris`, `America/New_York` or `UTC`",
                    name.chars().take(64).collect::<String>().escape_default()
                )
            })?;
        Ok(Self {
            name: name.to_owned(),
            zone,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn parse_daily(text: &str, time: &str, expected: &str) -> Result<Spec, String> {
    let (hour, minute) = time
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("schedule `{text}` is invalid; {expected}"))?;
    let hour: u8 = hour
        .parse()
        .ok()
        .filter(|h| *h < 24)
        .ok_or_else(|| format!("hour `{hour}` is not 00-23; {expected}"))?;
    let minute: u8 = minute
        .parse()
        .ok()
        .filter(|m| *m < 60)
        .ok_or_else(|| format!("minute `{minute}` is not 00-59; {expected}"))?;
    Ok(Spec::Daily { hour, minute })
}

fn parse_every(interval: &str, expected: &str) -> Result<Spec, String> {
    let invalid = || format!("interval `{interval}` is invalid; {expected}");
    let (number, unit) = interval.split_at(interval.len().saturating_sub(1));
    let scale = match unit {
        "m" => 1,
        "h" => 60,
        _ => return Err(invalid()),
    };
    let minutes = number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|m| (1..=MAX_EVERY_MINUTES).contains(m))
        .ok_or_else(invalid)?;
    Ok(Spec::Every { minutes })
}

fn parse_cron(text: &str, expected: &str) -> Result<Cron, String> {
    // Five fields exactly: croner would also take seconds, a year or `@daily`.
    if text.split_whitespace().count() != 5 || text.contains('@') {
        return Err(format!(
            "schedule `{}` is invalid; {expected}",
            text.chars().take(100).collect::<String>().escape_default()
        ));
    }
    let cron = cron_of(text)
        .ok_or_else(|| format!("cron `{}` is invalid; {expected}", text.escape_default()))?;
    Ok(Cron {
        text: text.split_whitespace().collect::<Vec<_>>().join(" "),
        cron: Box::new(cron),
    })
}

/// Cron's classic rules: five fields, no seconds or year, either day field matching when
/// both are restricted, and `5/15` meaning from 5 in steps of 15 (as the backup API took).
fn cron_of(text: &str) -> Option<croner::Cron> {
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .sloppy_ranges(true)
        .build();
    parser.parse(text).ok()
}

fn next_cron(cron: &croner::Cron, after: OffsetDateTime, zone: &Zone) -> Option<OffsetDateTime> {
    let timestamp = jiff::Timestamp::from_nanosecond(after.unix_timestamp_nanos()).ok()?;
    let next = cron
        .find_next_occurrence(&timestamp.to_zoned(zone.zone.clone()), false)
        .ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(next.timestamp().as_nanosecond()).ok()
}

fn previous_cron(cron: &croner::Cron, at: OffsetDateTime, zone: &Zone) -> Option<OffsetDateTime> {
    // Firings fall on whole seconds; croner compares whole seconds too.
    let timestamp = jiff::Timestamp::from_second(at.unix_timestamp()).ok()?;
    let previous = cron
        .find_previous_occurrence(&timestamp.to_zoned(zone.zone.clone()), true)
        .ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(previous.timestamp().as_nanosecond()).ok()
}

impl FromStr for Zone {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::parse(name)
    }
}

fn truncate_to_minute(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_second(0)
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap_or(at)
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

    #[test]
    fn job_forms_parse_or_name_every_form() {
        let check = |text: &str, expected: Spec| {
            assert_eq!(Spec::parse_job(text).unwrap(), expected, "{text}");
            // What the API shows back parses to the same schedule.
            assert_eq!(Spec::parse_job(&expected.to_string()).unwrap(), expected);
        };
        check("hourly", Spec::Hourly);
        check("every 15m", Spec::Every { minutes: 15 });
        check("every 2h", Spec::Every { minutes: 120 });
        check("every 1m", Spec::Every { minutes: 1 });
        check("every 168h", Spec::Every { minutes: 10080 });
        check("daily at 03:00", Spec::Daily { hour: 3, minute: 0 });
        assert_eq!(
            Spec::parse_job("  0  3 * * *").unwrap().to_string(),
            "0 3 * * *"
        );
        // `5/15` is from 5 in steps of 15, as the hand-written parser took it.
        let sloppy = Spec::parse("5/15 * * * *").unwrap();
        assert!(sloppy.fires_at(datetime!(2026-03-01 10:20 UTC)));
        assert!(!sloppy.fires_at(datetime!(2026-03-01 10:15 UTC)));
        for bad in [
            "every 0m",
            "every 30s",
            "every 169h",
            "every m",
            "every -5m",
            "every 15",
            "daily at 7pm",
            "0 0 * * * *",
            "@daily",
            "* * * * * 2026",
            "weekly",
            "",
        ] {
            let err = Spec::parse_job(bad).unwrap_err();
            assert!(
                err.contains("every N") && err.contains("hourly"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_next_firing_follows_the_zone_and_its_clock_changes() {
        let paris = Zone::parse("Europe/Paris").unwrap();
        let next = |text: &str, after: OffsetDateTime, zone: &Zone| {
            Spec::parse_job(text).unwrap().next_after(after, zone)
        };
        // 03:00 in Paris is 02:00 UTC in winter, 01:00 UTC in summer.
        assert_eq!(
            next("daily at 03:00", datetime!(2026-01-10 12:00 UTC), &paris),
            Some(datetime!(2026-01-11 02:00 UTC))
        );
        assert_eq!(
            next("daily at 03:00", datetime!(2026-07-10 12:00 UTC), &paris),
            Some(datetime!(2026-07-11 01:00 UTC))
        );
        // 2026-03-29 02:30 does not exist in Paris (the clock jumps from 02:00 to 03:00):
        // it fires as the clock resumes, at 03:00, and the next day as usual.
        let gap = next("30 2 * * *", datetime!(2026-03-28 12:00 UTC), &paris).unwrap();
        assert_eq!(gap, datetime!(2026-03-29 01:00 UTC));
        assert_eq!(
            next("30 2 * * *", gap, &paris),
            Some(datetime!(2026-03-30 00:30 UTC))
        );
        // 2026-10-25 02:30 happens twice in Paris: it fires once.
        let first = next("30 2 * * *", datetime!(2026-10-24 12:00 UTC), &paris).unwrap();
        assert_eq!(first, datetime!(2026-10-25 00:30 UTC));
        assert_eq!(
            next("30 2 * * *", first, &paris),
            Some(datetime!(2026-10-26 01:30 UTC))
        );
        // Strictly after: the firing itself is not its own next one.
        assert_eq!(
            next("hourly", datetime!(2026-03-01 10:00 UTC), &Zone::utc()),
            Some(datetime!(2026-03-01 11:00 UTC))
        );
        assert_eq!(
            next(
                "every 15m",
                datetime!(2026-03-01 10:07:30 UTC),
                &Zone::utc()
            ),
            Some(datetime!(2026-03-01 10:15 UTC))
        );
        assert_eq!(
            next("every 15m", datetime!(2026-03-01 10:15 UTC), &paris),
            Some(datetime!(2026-03-01 10:30 UTC))
        );
        // The last firing at or before a time includes that time.
        let last = |text: &str, at: OffsetDateTime, zone: &Zone| {
            Spec::parse_job(text).unwrap().last_at_or_before(at, zone)
        };
        assert_eq!(
            last("hourly", datetime!(2026-03-01 10:00 UTC), &Zone::utc()),
            Some(datetime!(2026-03-01 10:00 UTC))
        );
        assert_eq!(
            last("daily at 03:00", datetime!(2026-01-11 07:59:59 UTC), &paris),
            Some(datetime!(2026-01-11 02:00 UTC))
        );
        assert_eq!(
            last(
                "every 15m",
                datetime!(2026-03-01 10:29:59.9 UTC),
                &Zone::utc()
            ),
            Some(datetime!(2026-03-01 10:15 UTC))
        );
        // February 30th never comes.
        assert_eq!(
            next("0 0 30 2 *", datetime!(2026-03-01 10:00 UTC), &Zone::utc()),
            None
        );
    }

    #[test]
    fn zones_are_iana_names() {
        assert_eq!(
            Zone::parse("America/New_York").unwrap().name(),
            "America/New_York"
        );
        assert_eq!(Zone::parse("UTC").unwrap().name(), "UTC");
        for bad in [
            "Mars/Olympus",
            "../../etc/passwd",
            "/etc/passwd",
            "Europe//Paris",
            "",
            "Europe/Paris/x",
        ] {
            let err = Zone::parse(bad).map(|z| z.name().to_owned()).unwrap_err();
            assert!(err.contains("IANA"), "{bad}: {err}");
        }
    }
}

//! Scheduled jobs as declared and as stored: a command of a project run on a schedule,
//! each firing a one-off run (`model::run`). A job is declared through the API or in the
//! repository's `cantila.toml` (`[[jobs]]`); both are written as `JobFields` and checked
//! into a `JobSpec` before anything uses them.
//! Invariant: a `JobSpec` that exists has a valid name, a schedule in one of the accepted
//! forms that fires at least once more, a known time zone (or none: UTC), a non-empty
//! command within the run bounds, and a timeout inside `TIMEOUT_SECS`.

use std::{fmt, ops::RangeInclusive};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{
    error::Error,
    model::{
        run::RunCommand,
        schedule::{Spec, Zone, JOB_FORMS},
    },
    names::JobName,
};

/// The timeout of a job's runs, in seconds: the runs' own bounds.
pub const TIMEOUT_SECS: RangeInclusive<u64> = 1..=86_400;
/// A job's runs' timeout when none is given: an hour, as for a one-off run.
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;
/// The most jobs one project may have, so a file or a script cannot fill the scheduler.
pub const MAX_JOBS_PER_PROJECT: usize = 100;

/// What a firing does while an earlier run of the same job is still pending or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// The firing is skipped (recorded on the job with the reason).
    #[default]
    Forbid,
    /// Another run starts beside it.
    Allow,
    /// The running one is canceled, then the new one starts.
    Replace,
}

impl Concurrency {
    pub fn as_str(self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Allow => "allow",
            Concurrency::Replace => "replace",
        }
    }

    /// A stored word; the store only holds the three (a CHECK constraint).
    pub fn from_stored(word: &str) -> Self {
        match word {
            "allow" => Concurrency::Allow,
            "replace" => Concurrency::Replace,
            _ => Concurrency::Forbid,
        }
    }
}

/// Where a job was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum JobSource {
    /// Through the API (or the CLI): changed only through it.
    #[serde(rename = "api")]
    Api,
    /// In the repository's `cantila.toml`: each production release makes the project's
    /// file jobs match its file, and the API does not change them.
    #[serde(rename = "cantila.toml")]
    File,
}

impl JobSource {
    pub fn as_str(self) -> &'static str {
        match self {
            JobSource::Api => "api",
            JobSource::File => "cantila.toml",
        }
    }

    pub fn from_stored(word: &str) -> Self {
        match word {
            "cantila.toml" => JobSource::File,
            _ => JobSource::Api,
        }
    }
}

/// A job as written: the body of `POST /v1/projects/:id/jobs` and one `[[jobs]]` table of
/// `cantila.toml` (camelCase keys; the snake_case spelling is accepted too, as TOML files
/// tend to use it). Unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobFields {
    /// A lowercase DNS label, unique within the project.
    #[schema(example = "digest", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Five cron fields (`0 3 * * *`), `daily at HH:MM`, `hourly`, or `every 15m` /
    /// `every 2h` (from 1m to 7 days, counted from midnight UTC).
    #[schema(example = "0 3 * * *")]
    pub schedule: String,
    /// An IANA time zone name the schedule's wall clock times are in; UTC when absent.
    #[serde(default, alias = "time_zone", skip_serializing_if = "Option::is_none")]
    #[schema(example = "Europe/Paris")]
    pub time_zone: Option<String>,
    /// The program and its arguments (no shell unless the command names one).
    #[schema(example = json!(["python", "manage.py", "send_digest"]), min_items = 1, max_items = 1024)]
    pub command: Vec<String>,
    /// Each run's timeout in seconds (default 3600).
    #[serde(
        default,
        alias = "timeout_secs",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 86400, example = 600)]
    pub timeout_secs: Option<u64>,
    /// `forbid` (the default), `allow` or `replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// A size tier from `[scale.sizes]`; the project's size when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "nano")]
    pub size: Option<String>,
    /// Whether the job fires on its schedule (default true); run-now works either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A checked job declaration: what the store keeps of a job besides its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub name: JobName,
    pub schedule: Spec,
    /// `None` is UTC.
    pub zone: Option<ZoneName>,
    pub command: RunCommand,
    pub timeout_secs: u64,
    pub concurrency: Concurrency,
    /// Checked against the configured tiers by the service, which knows them.
    pub size: Option<String>,
    pub enabled: bool,
}

/// A time zone's IANA name, checked to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneName(String);

impl ZoneName {
    pub fn parse(field: &str, name: &str) -> Result<Self, Error> {
        Zone::parse(name)
            .map(|zone| Self(zone.name().to_owned()))
            .map_err(|why| Error::Invalid(format!("`{field}`: {why}")))
    }

    /// A name read back from the store, which only ever holds checked ones.
    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The zone, looked up again; a name that vanished from the system's database since it
    /// was checked reads as UTC, so a job keeps firing.
    pub fn zone(&self) -> Zone {
        Zone::parse(&self.0).unwrap_or_else(|_| Zone::utc())
    }
}

impl fmt::Display for ZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a schedule given as `field`, naming the accepted forms on failure.
pub fn parse_schedule(field: &str, text: &str) -> Result<Spec, Error> {
    Spec::parse_job(text).map_err(|why| Error::Invalid(format!("`{field}`: {why}")))
}

/// Checks a timeout given as `field`.
pub fn check_timeout(field: &str, secs: u64) -> Result<u64, Error> {
    if TIMEOUT_SECS.contains(&secs) {
        Ok(secs)
    } else {
        Err(Error::Invalid(format!(
            "`{field}` must be from {} to {} seconds, got {secs}",
            TIMEOUT_SECS.start(),
            TIMEOUT_SECS.end()
        )))
    }
}

impl JobSpec {
    /// Checks written fields; `prefix` goes before each field's name in messages (`jobs[2].`
    /// for a file's table), so an error says which job and which key.
    pub fn check(fields: JobFields, prefix: &str) -> Result<Self, Error> {
        let field = |name: &str| format!("{prefix}{name}");
        let name = JobName::parse(&fields.name)
            .map_err(|err| Error::Invalid(format!("`{}`: {err}", field("name"))))?;
        let schedule = parse_schedule(&field("schedule"), &fields.schedule)?;
        let zone = fields
            .time_zone
            .as_deref()
            .map(|zone| ZoneName::parse(&field("timeZone"), zone))
            .transpose()?;
        let command = RunCommand::parse(&field("command"), fields.command)?;
        let timeout_secs = check_timeout(
            &field("timeoutSecs"),
            fields.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS),
        )?;
        let spec = Self {
            name,
            schedule,
            zone,
            command,
            timeout_secs,
            concurrency: fields.concurrency.unwrap_or_default(),
            size: fields.size,
            enabled: fields.enabled.unwrap_or(true),
        };
        spec.check_fires(&field("schedule"))?;
        Ok(spec)
    }

    /// The zone the schedule's wall clock reads.
    pub fn zone(&self) -> Zone {
        self.zone.as_ref().map_or_else(Zone::utc, ZoneName::zone)
    }

    /// The first firing strictly after `after`.
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        self.schedule.next_after(after, &self.zone())
    }

    /// The first firing strictly after `after` while the job is enabled; `None` while it
    /// is disabled (what the store's `next_fire_at` holds).
    pub fn scheduled_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        if self.enabled {
            self.next_after(after)
        } else {
            None
        }
    }

    /// A schedule that never fires (`0 0 30 2 *`) is refused rather than kept silent.
    fn check_fires(&self, field: &str) -> Result<(), Error> {
        // From a fixed instant, so checking reads no clock: a pattern that fires at all
        // fires within the four years after it (leap days included).
        let reference = OffsetDateTime::UNIX_EPOCH + time::Duration::days(365 * 56);
        match self.next_after(reference) {
            Some(_) => Ok(()),
            None => Err(Error::Invalid(format!(
                "`{field}` `{}` never fires (no such date); {JOB_FORMS}",
                self.schedule
            ))),
        }
    }

    /// The fields as written back (the plan, the CLI).
    pub fn to_fields(&self) -> JobFields {
        JobFields {
            name: self.name.to_string(),
            schedule: self.schedule.to_string(),
            time_zone: self.zone.as_ref().map(ToString::to_string),
            command: self.command.args().to_vec(),
            timeout_secs: Some(self.timeout_secs),
            concurrency: Some(self.concurrency),
            size: self.size.clone(),
            enabled: Some(self.enabled),
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub account_id: String,
    pub project_id: String,
    pub spec: JobSpec,
    pub source: JobSource,
    /// When it fires next; `None` while disabled.
    pub next_fire_at: Option<String>,
    /// The scheduled time of its latest firing that started a run.
    pub last_fire_at: Option<String>,
    /// Its latest skipped firing, if any.
    pub last_skip: Option<Skip>,
    /// How many firings were skipped since the job was made.
    pub skipped_count: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// A firing that started no run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The scheduled time of the firing (the latest one, when several were skipped at once).
    pub scheduled_at: String,
    /// When the scheduler recorded it.
    pub recorded_at: String,
    pub reason: String,
}

impl Job {
    pub fn name(&self) -> &str {
        self.spec.name.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(name: &str, schedule: &str, command: &[&str]) -> JobFields {
        JobFields {
            name: name.to_owned(),
            schedule: schedule.to_owned(),
            time_zone: None,
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            timeout_secs: None,
            concurrency: None,
            size: None,
            enabled: None,
        }
    }

    fn message(result: Result<JobSpec, Error>) -> String {
        match result {
            Err(Error::Invalid(message)) => message,
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn a_job_gets_its_defaults_and_round_trips() {
        let spec = JobSpec::check(fields("digest", "every 15m", &["true"]), "").unwrap();
        assert_eq!(spec.timeout_secs, 3600);
        assert_eq!(spec.concurrency, Concurrency::Forbid);
        assert!(spec.enabled);
        assert_eq!(JobSpec::check(spec.to_fields(), "").unwrap(), spec);
    }

    #[test]
    fn each_bad_field_is_named_with_what_is_accepted() {
        let check = |fields: JobFields, expected: &[&str]| {
            let text = message(JobSpec::check(fields, "jobs[1]."));
            for part in expected {
                assert!(text.contains(part), "{text} lacks {part}");
            }
        };
        check(
            fields("digest", "every 30s", &["true"]),
            &[
                "`jobs[1].schedule`",
                "daily at HH:MM",
                "every 15m",
                "hourly",
            ],
        );
        check(
            fields("digest", "0 0 30 2 *", &["true"]),
            &["`jobs[1].schedule`", "never fires"],
        );
        check(
            fields("digest", "hourly", &[]),
            &["`jobs[1].command`", "empty"],
        );
        check(fields("Digest!", "hourly", &["true"]), &["`jobs[1].name`"]);
        let mut zoned = fields("digest", "hourly", &["true"]);
        zoned.time_zone = Some("Moon/Base".to_owned());
        check(zoned, &["`jobs[1].timeZone`", "IANA"]);
        let mut slow = fields("digest", "hourly", &["true"]);
        slow.timeout_secs = Some(86_401);
        check(slow, &["`jobs[1].timeoutSecs`", "86400"]);
    }

    #[test]
    fn the_next_firing_reads_the_jobs_zone() {
        let mut zoned = fields("digest", "daily at 03:00", &["true"]);
        zoned.time_zone = Some("America/New_York".to_owned());
        let spec = JobSpec::check(zoned, "").unwrap();
        assert_eq!(
            spec.next_after(time::macros::datetime!(2026-01-10 12:00 UTC)),
            Some(time::macros::datetime!(2026-01-11 08:00 UTC))
        );
    }
}

//! SQL for scheduled jobs. The scheduler's writes are compare-and-set on the firing time it
//! read (`next_fire_at`), so an edit made while a firing was being handled is never
//! overwritten by the older schedule's next time.

use rusqlite::{params, OptionalExtension, Row};

use crate::{
    error::Result,
    model::{
        job::{Concurrency, Job, JobSource, JobSpec, Skip, ZoneName},
        run::{Run, RunCommand},
        schedule::Spec,
    },
    names::JobName,
};

use super::Db;

const COLUMNS: &str = "id, account_id, project_id, name, schedule, time_zone, command, timeout_secs, concurrency, size, enabled, source, next_fire_at, last_fire_at, last_skip_at, last_skip_recorded_at, last_skip_reason, skipped_count, created_at, updated_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let name: String = row.get(3)?;
    let schedule: String = row.get(4)?;
    let zone: Option<String> = row.get(5)?;
    let command: String = row.get(6)?;
    let timeout: i64 = row.get(7)?;
    let concurrency: String = row.get(8)?;
    let source: String = row.get(11)?;
    let skip_at: Option<String> = row.get(14)?;
    let skip_recorded: Option<String> = row.get(15)?;
    let skip_reason: Option<String> = row.get(16)?;
    let skipped: i64 = row.get(17)?;
    // Only checked specs are stored; a schedule that no longer parses (a newer binary's
    // form read by an older one) reads as one that never fires, rather than failing reads.
    let spec = JobSpec {
        name: JobName::parse(&name).unwrap_or_else(|_| JobName::parse("job").unwrap()),
        schedule: Spec::parse_job(&schedule).unwrap_or(Spec::Cron(never())),
        zone: zone.map(ZoneName::from_stored),
        command: RunCommand::from_stored(serde_json::from_str(&command).unwrap_or_default()),
        timeout_secs: u64::try_from(timeout).unwrap_or(1),
        concurrency: Concurrency::from_stored(&concurrency),
        size: row.get(9)?,
        enabled: row.get(10)?,
    };
    Ok(Job {
        id: row.get(0)?,
        account_id: row.get(1)?,
        project_id: row.get(2)?,
        spec,
        source: JobSource::from_stored(&source),
        next_fire_at: row.get(12)?,
        last_fire_at: row.get(13)?,
        last_skip: match (skip_at, skip_recorded, skip_reason) {
            (Some(scheduled_at), Some(recorded_at), Some(reason)) => Some(Skip {
                scheduled_at,
                recorded_at,
                reason,
            }),
            _ => None,
        },
        skipped_count: u64::try_from(skipped).unwrap_or(0),
        created_at: row.get(18)?,
        updated_at: row.get(19)?,
    })
}

/// A cron that never fires: what an unreadable stored schedule becomes.
fn never() -> crate::model::schedule::Cron {
    match Spec::parse_job("0 0 30 2 *") {
        Ok(Spec::Cron(cron)) => cron,
        _ => unreachable!("February 30th parses as cron"),
    }
}

fn command_json(spec: &JobSpec) -> String {
    serde_json::to_string(spec.command.args()).unwrap_or_else(|_| "[]".to_owned())
}

pub fn insert(db: &Db, job: &Job) -> Result<()> {
    let spec = &job.spec;
    db.execute(
        "INSERT INTO jobs (id, account_id, project_id, name, schedule, time_zone, command, timeout_secs, concurrency, size, enabled, source, next_fire_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            job.id,
            job.account_id,
            job.project_id,
            spec.name.as_str(),
            spec.schedule.to_string(),
            spec.zone.as_ref().map(ZoneName::as_str),
            command_json(spec),
            i64::try_from(spec.timeout_secs).unwrap_or(i64::MAX),
            spec.concurrency.as_str(),
            spec.size,
            spec.enabled,
            job.source.as_str(),
            job.next_fire_at,
            job.created_at,
            job.updated_at,
        ],
    )?;
    Ok(())
}

/// Replaces a job's declaration and its next firing time (the name stays).
pub fn update_spec(
    db: &Db,
    id: &str,
    spec: &JobSpec,
    next_fire_at: Option<&str>,
    at: &str,
) -> Result<bool> {
    Ok(db.execute(
        "UPDATE jobs SET schedule = ?2, time_zone = ?3, command = ?4, timeout_secs = ?5, concurrency = ?6,
             size = ?7, enabled = ?8, next_fire_at = ?9, updated_at = ?10
         WHERE id = ?1",
        params![
            id,
            spec.schedule.to_string(),
            spec.zone.as_ref().map(ZoneName::as_str),
            command_json(spec),
            i64::try_from(spec.timeout_secs).unwrap_or(i64::MAX),
            spec.concurrency.as_str(),
            spec.size,
            spec.enabled,
            next_fire_at,
            at,
        ],
    )? > 0)
}

pub fn delete(db: &Db, id: &str) -> Result<bool> {
    Ok(db.execute("DELETE FROM jobs WHERE id = ?1", [id])? > 0)
}

pub fn by_id(db: &Db, id: &str) -> Result<Option<Job>> {
    Ok(db
        .query_row(
            &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

pub fn by_name(db: &Db, project_id: &str, name: &str) -> Result<Option<Job>> {
    Ok(db
        .query_row(
            &format!("SELECT {COLUMNS} FROM jobs WHERE project_id = ?1 AND name = ?2"),
            params![project_id, name],
            from_row,
        )
        .optional()?)
}

/// A project's jobs by name.
pub fn of_project(db: &Db, project_id: &str) -> Result<Vec<Job>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE project_id = ?1 ORDER BY name"
    ))?;
    let jobs = statement
        .query_map([project_id], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(jobs)
}

pub fn count(db: &Db, project_id: &str) -> Result<usize> {
    Ok(db.query_row(
        "SELECT COUNT(*) FROM jobs WHERE project_id = ?1",
        [project_id],
        |row| row.get::<_, i64>(0),
    )? as usize)
}

/// The earliest next firing of any job, for the scheduler's wait.
pub fn next_fire_at(db: &Db) -> Result<Option<String>> {
    Ok(db.query_row(
        "SELECT MIN(next_fire_at) FROM jobs WHERE next_fire_at IS NOT NULL",
        [],
        |row| row.get(0),
    )?)
}

/// The jobs whose next firing is at or before `now` (RFC 3339, the store's fixed width, so
/// text order is time order), earliest first.
pub fn due(db: &Db, now: &str) -> Result<Vec<Job>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE next_fire_at IS NOT NULL AND next_fire_at <= ?1 ORDER BY next_fire_at"
    ))?;
    let jobs = statement
        .query_map([now], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(jobs)
}

/// Records that the firing due at `due` was handled: a run started (`fired`), and the next
/// firing time. False when the job changed (or went) meanwhile, and nothing was written.
pub fn record_fired(db: &Db, id: &str, due: &str, fired: &str, next: Option<&str>) -> Result<bool> {
    Ok(db.execute(
        "UPDATE jobs SET last_fire_at = ?3, next_fire_at = ?4 WHERE id = ?1 AND next_fire_at = ?2",
        params![id, due, fired, next],
    )? > 0)
}

/// Records skipped firings (`count` of them, the latest described by `skip`), leaving the
/// next firing time alone; compare-and-set on `due` like `record_fired`.
pub fn record_skip(db: &Db, id: &str, due: &str, skip: &Skip, count: u64) -> Result<bool> {
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    Ok(db.execute(
        "UPDATE jobs SET last_skip_at = ?3, last_skip_recorded_at = ?4, last_skip_reason = ?5,
             skipped_count = skipped_count + ?6
         WHERE id = ?1 AND next_fire_at = ?2",
        params![
            id,
            due,
            skip.scheduled_at,
            skip.recorded_at,
            skip.reason,
            count
        ],
    )? > 0)
}

/// Moves a job's next firing from `due` to `next` (compare-and-set on `due`).
pub fn set_next(db: &Db, id: &str, due: &str, next: Option<&str>) -> Result<bool> {
    Ok(db.execute(
        "UPDATE jobs SET next_fire_at = ?3 WHERE id = ?1 AND next_fire_at = ?2",
        params![id, due, next],
    )? > 0)
}

/// What a release changed of a project's `cantila.toml` jobs, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSync {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    /// Declared in the file but the name is an API job's, which stays as it is.
    pub taken: Vec<String>,
}

impl FileSync {
    pub fn changed(&self) -> bool {
        !(self.created.is_empty() && self.updated.is_empty() && self.removed.is_empty())
    }
}

/// Makes the project's `cantila.toml` jobs match `declared` (a release's file): new names
/// are created, changed declarations updated in place (so their history stays theirs),
/// names no longer declared removed; jobs made through the API are never touched, and a
/// declared name one of them holds is reported as `taken`. `next` gives a job's first
/// firing; an unchanged declaration keeps its own.
pub fn sync_file(
    db: &Db,
    account_id: &str,
    project_id: &str,
    declared: &[JobSpec],
    now: &str,
    next: impl Fn(&JobSpec) -> Option<String>,
) -> Result<FileSync> {
    let existing = of_project(db, project_id)?;
    let mut sync = FileSync::default();
    for spec in declared {
        match existing.iter().find(|job| job.spec.name == spec.name) {
            Some(job) if job.source == JobSource::Api => sync.taken.push(spec.name.to_string()),
            Some(job) if job.spec == *spec => {}
            Some(job) => {
                let keeps_time = job.spec.schedule == spec.schedule
                    && job.spec.zone == spec.zone
                    && job.spec.enabled == spec.enabled;
                let next_fire_at = if keeps_time {
                    job.next_fire_at.clone()
                } else {
                    next(spec)
                };
                update_spec(db, &job.id, spec, next_fire_at.as_deref(), now)?;
                sync.updated.push(spec.name.to_string());
            }
            None => {
                insert(
                    db,
                    &Job {
                        id: crate::ids::new_id("job"),
                        account_id: account_id.to_owned(),
                        project_id: project_id.to_owned(),
                        spec: spec.clone(),
                        source: JobSource::File,
                        next_fire_at: next(spec),
                        last_fire_at: None,
                        last_skip: None,
                        skipped_count: 0,
                        created_at: now.to_owned(),
                        updated_at: now.to_owned(),
                    },
                )?;
                sync.created.push(spec.name.to_string());
            }
        }
    }
    for job in existing {
        if job.source == JobSource::File && !declared.iter().any(|spec| spec.name == job.spec.name)
        {
            delete(db, &job.id)?;
            sync.removed.push(job.spec.name.to_string());
        }
    }
    Ok(sync)
}

/// The newest run a job started, if any is still kept.
pub fn last_run(db: &Db, job_id: &str) -> Result<Option<Run>> {
    let id: Option<String> = db
        .query_row(
            "SELECT id FROM runs WHERE job_id = ?1 ORDER BY seq DESC LIMIT 1",
            [job_id],
            |row| row.get(0),
        )
        .optional()?;
    match id {
        Some(id) => super::runs::by_id(db, &id),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::job::JobFields, store::Store};

    fn spec(name: &str, schedule: &str) -> JobSpec {
        JobSpec::check(
            JobFields {
                name: name.to_owned(),
                schedule: schedule.to_owned(),
                time_zone: Some("Europe/Paris".to_owned()),
                command: vec!["sh".to_owned(), "-c".to_owned(), "echo hi".to_owned()],
                timeout_secs: Some(60),
                concurrency: Some(Concurrency::Replace),
                size: Some("nano".to_owned()),
                enabled: None,
            },
            "",
        )
        .unwrap()
    }

    fn job(id: &str, project_id: &str, spec: JobSpec, next: &str) -> Job {
        Job {
            id: id.to_owned(),
            account_id: "acc_1".to_owned(),
            project_id: project_id.to_owned(),
            spec,
            source: JobSource::Api,
            next_fire_at: Some(next.to_owned()),
            last_fire_at: None,
            last_skip: None,
            skipped_count: 0,
            created_at: "2026-03-01T00:00:00.000Z".to_owned(),
            updated_at: "2026-03-01T00:00:00.000Z".to_owned(),
        }
    }

    #[test]
    fn jobs_round_trip_and_firings_are_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .call_blocking(|db| {
                db.execute(
                    "INSERT INTO accounts (id, handle, created_at) VALUES ('acc_1', 'me', '2026-03-01T00:00:00.000Z')",
                    [],
                )?;
                db.execute(
                    "INSERT INTO projects (id, account_id, name, status, created_at, updated_at) VALUES ('prj_1', 'acc_1', 'web', 'created', '2026-03-01T00:00:00.000Z', '2026-03-01T00:00:00.000Z')",
                    [],
                )?;
                let first = job("job_1", "prj_1", spec("digest", "every 15m"), "2026-03-01T10:15:00.000Z");
                insert(db, &first)?;
                insert(db, &job("job_2", "prj_1", spec("backup", "0 3 * * *"), "2026-03-02T02:00:00.000Z"))?;
                let read = by_name(db, "prj_1", "digest")?.unwrap();
                assert_eq!(read.spec, first.spec);
                assert_eq!(read.source, JobSource::Api);
                assert_eq!(of_project(db, "prj_1")?.len(), 2);
                assert_eq!(next_fire_at(db)?.as_deref(), Some("2026-03-01T10:15:00.000Z"));
                assert_eq!(due(db, "2026-03-01T10:15:00.000Z")?.len(), 1);
                // A firing recorded against the time it read.
                assert!(record_fired(db, "job_1", "2026-03-01T10:15:00.000Z", "2026-03-01T10:15:00.000Z", Some("2026-03-01T10:30:00.000Z"))?);
                // The same firing again (a stale read) changes nothing.
                assert!(!record_fired(db, "job_1", "2026-03-01T10:15:00.000Z", "2026-03-01T10:15:00.000Z", Some("2026-03-01T10:45:00.000Z"))?);
                let skip = Skip {
                    scheduled_at: "2026-03-01T10:30:00.000Z".to_owned(),
                    recorded_at: "2026-03-01T10:30:00.010Z".to_owned(),
                    reason: "a run is still running".to_owned(),
                };
                assert!(record_skip(db, "job_1", "2026-03-01T10:30:00.000Z", &skip, 2)?);
                assert!(set_next(db, "job_1", "2026-03-01T10:30:00.000Z", Some("2026-03-01T10:45:00.000Z"))?);
                let read = by_id(db, "job_1")?.unwrap();
                assert_eq!(read.last_skip, Some(skip));
                assert_eq!(read.skipped_count, 2);
                assert_eq!(read.last_fire_at.as_deref(), Some("2026-03-01T10:15:00.000Z"));
                assert_eq!(read.next_fire_at.as_deref(), Some("2026-03-01T10:45:00.000Z"));
                assert!(last_run(db, "job_1")?.is_none());
                // A release's file: `backup` is an API job's name (kept), `report` is new.
                let next = |_: &JobSpec| Some("2026-03-02T00:00:00.000Z".to_owned());
                let declared = vec![spec("backup", "hourly"), spec("report", "hourly")];
                let sync = sync_file(db, "acc_1", "prj_1", &declared, "2026-03-01T12:00:00.000Z", next)?;
                assert_eq!(sync.created, vec!["report"]);
                assert_eq!(sync.taken, vec!["backup"]);
                assert_eq!(by_name(db, "prj_1", "backup")?.unwrap().spec.schedule.to_string(), "0 3 * * *");
                // The same file again changes nothing; a changed one updates in place.
                let report_id = by_name(db, "prj_1", "report")?.unwrap().id;
                assert!(!sync_file(db, "acc_1", "prj_1", &declared, "2026-03-01T12:00:00.000Z", next)?.changed());
                let changed = vec![spec("report", "every 2h")];
                let sync = sync_file(db, "acc_1", "prj_1", &changed, "2026-03-01T12:00:00.000Z", next)?;
                assert_eq!(sync.updated, vec!["report"]);
                assert_eq!(by_name(db, "prj_1", "report")?.unwrap().id, report_id);
                // A file without it removes it; the API's jobs stay.
                let sync = sync_file(db, "acc_1", "prj_1", &[], "2026-03-01T12:00:00.000Z", next)?;
                assert_eq!(sync.removed, vec!["report"]);
                assert!(by_name(db, "prj_1", "backup")?.is_some());
                assert!(delete(db, "job_1")?);
                assert_eq!(count(db, "prj_1")?, 1);
                Ok(())
            })
            .unwrap();
    }
}

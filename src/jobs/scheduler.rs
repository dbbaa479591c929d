//! The job scheduler: one background task that sleeps until the earliest `next_fire_at` of
//! any job (or until a change wakes it), fires what is due, and records each firing.
//!
//! What a firing does:
//! - Firings missed while the daemon was down (or while the scheduler was held up): each
//!   firing runs once if it is less than one interval late, else it is recorded skipped.
//!   The interval of a firing is the time to the schedule's next one, so of several missed
//!   firings only the latest is less than an interval late (the next one after it is still
//!   ahead): it runs, once, and the older ones are recorded as skipped, with their count.
//! - Concurrency, when the job still has a run pending or running: `forbid` records the
//!   firing skipped with the run's id, `replace` cancels those runs and starts a new one,
//!   `allow` starts another beside them.
//! - A run that cannot start (no release to run, a bad size) records the firing skipped
//!   with the reason, so nothing is lost silently.
//!
//! Skips are visible on the job (`lastSkipped`, `skippedCount`) and in the audit log
//! (`job.skip`, by `scheduler`).

use std::future::Future;

use time::OffsetDateTime;

use crate::{
    clock,
    error::{Error, Result},
    model::job::{Concurrency, Job, JobSpec, Skip},
    store,
};

use super::Jobs;

/// The audit log's name for the scheduler, and the actor of the runs it starts.
pub const ACTOR: &str = "scheduler";

/// How long the scheduler waits after the store failed before it reads it again.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The most missed firings counted one by one; past that the count stops growing (a job
/// every minute that was down for weeks), since each is one step of the schedule.
const MAX_COUNTED: u64 = 100_000;

/// The firings of one job that are due at `now`: the latest runs, the ones before it were
/// missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Due {
    /// The firing to run: the latest at or before `now`.
    pub latest: OffsetDateTime,
    /// How many firings before `latest` were missed.
    pub missed: u64,
    /// The last of the missed ones.
    pub last_missed: Option<OffsetDateTime>,
    /// The firing after `latest`, the job's next.
    pub next: Option<OffsetDateTime>,
}

/// Works out which firings of a job due at `due` (its stored next firing) are due at `now`.
pub(super) fn due_firings(spec: &JobSpec, due: OffsetDateTime, now: OffsetDateTime) -> Due {
    let latest = spec
        .schedule
        .last_at_or_before(now, &spec.zone())
        .filter(|latest| *latest >= due)
        .unwrap_or(due);
    let mut missed = 0;
    let mut last_missed = None;
    let mut at = due;
    while at < latest && missed < MAX_COUNTED {
        missed += 1;
        last_missed = Some(at);
        match spec.next_after(at) {
            Some(next) => at = next,
            None => break,
        }
    }
    if missed == MAX_COUNTED {
        last_missed = spec
            .schedule
            .last_at_or_before(latest - time::Duration::nanoseconds(1), &spec.zone());
    }
    Due {
        latest,
        missed,
        last_missed,
        next: spec.next_after(latest),
    }
}

/// What came of the firing that was run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Started { run_id: String },
    Skipped { reason: String },
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

impl Jobs {
    /// Starts a run of a due job, following its concurrency policy.
    pub(super) async fn fire(&self, job: &Job) -> Outcome {
        let started = async {
            let active = self.launcher.active(&job.id).await?;
            match (job.spec.concurrency, active.first()) {
                (Concurrency::Forbid, Some(run)) => {
                    return Ok(Outcome::Skipped {
                        reason: format!(
                            "run {} was still {}, and the job's concurrency is forbid",
                            run.id,
                            run.status.as_str()
                        ),
                    })
                }
                (Concurrency::Replace, Some(_)) => {
                    for run in &active {
                        self.launcher.cancel(&job.account_id, &run.id).await?;
                    }
                }
                (Concurrency::Replace | Concurrency::Forbid | Concurrency::Allow, _) => {}
            }
            let run = self.launcher.start(job, ACTOR).await?;
            Ok::<_, Error>(Outcome::Started { run_id: run.id })
        };
        match started.await {
            Ok(outcome) => outcome,
            Err(err) => Outcome::Skipped {
                reason: format!("the run could not start: {}", reason_of(&err)),
            },
        }
    }

    /// Handles one due job at `now`, `started` being when the daemon started (a firing
    /// before it was missed while the daemon was down).
    pub(super) async fn handle(
        &self,
        job: &Job,
        now: OffsetDateTime,
        started: OffsetDateTime,
    ) -> Result<Outcome> {
        let Some(due_text) = job.next_fire_at.clone() else {
            return Err(Error::Internal(format!("job {} is not scheduled", job.id)));
        };
        let due = parse_time(&due_text).unwrap_or(now);
        let firings = due_firings(&job.spec, due, now);
        let outcome = self.fire(job).await;
        let recorded_at = clock::now();
        let missed_skip = firings.last_missed.map(|at| Skip {
            scheduled_at: clock::format(at),
            recorded_at: recorded_at.clone(),
            reason: if at < started {
                format!(
                    "missed while the daemon was down ({} firing(s) more than one interval late); the firing of {} ran instead",
                    firings.missed,
                    clock::format(firings.latest)
                )
            } else {
                format!(
                    "the scheduler was held up ({} firing(s) more than one interval late); the firing of {} ran instead",
                    firings.missed,
                    clock::format(firings.latest)
                )
            },
        });
        let next = firings.next.map(clock::format);
        let id = job.id.clone();
        let fired_at = clock::format(firings.latest);
        let (skip, skipped) = match &outcome {
            Outcome::Started { .. } => (missed_skip, firings.missed),
            Outcome::Skipped { reason } => (
                Some(Skip {
                    scheduled_at: fired_at.clone(),
                    recorded_at: recorded_at.clone(),
                    reason: reason.clone(),
                }),
                firings.missed + 1,
            ),
        };
        let audit = skip.as_ref().map(|skip| {
            store::Audit::by_daemon(
                &job.account_id,
                ACTOR,
                "job.skip",
                format!("{}:{} {}", job.project_id, job.name(), skip.reason),
            )
        });
        let started_run = matches!(outcome, Outcome::Started { .. });
        let written = self
            .store
            .write_audited(audit, move |tx| {
                if let Some(skip) = &skip {
                    if !store::jobs::record_skip(tx, &id, &due_text, skip, skipped)? {
                        return Ok(false);
                    }
                }
                if started_run {
                    store::jobs::record_fired(tx, &id, &due_text, &fired_at, next.as_deref())
                } else {
                    store::jobs::set_next(tx, &id, &due_text, next.as_deref())
                }
            })
            .await?;
        if !written {
            tracing::debug!(job = %job.id, "the job changed while it fired; its new schedule stands");
        }
        match &outcome {
            Outcome::Started { run_id } => {
                tracing::info!(job = %job.id, project = %job.project_id, run = %run_id, "job fired")
            }
            Outcome::Skipped { reason } => {
                tracing::info!(job = %job.id, project = %job.project_id, reason = %reason, "job firing skipped")
            }
        }
        Ok(outcome)
    }

    /// Fires every job due at the time of the call.
    async fn fire_due(&self, started: OffsetDateTime) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let at = clock::format(now);
        let due = self.store.call(move |db| store::jobs::due(db, &at)).await?;
        for job in due {
            self.handle(&job, now, started).await?;
        }
        Ok(())
    }
}

/// The message of an error as a skip's reason: the detail of a 500 stays in the log.
fn reason_of(err: &Error) -> String {
    match err {
        Error::Store(_) | Error::Internal(_) => {
            tracing::warn!(error = %err, "starting a job's run");
            "an internal error (the server log has the detail)".to_owned()
        }
        Error::NotFound(message)
        | Error::Conflict(message)
        | Error::Invalid(message)
        | Error::BadRequest(message)
        | Error::Unauthenticated(message)
        | Error::Forbidden(message)
        | Error::Unavailable(message)
        | Error::StorageFull(message) => message.clone(),
        Error::RateLimited { .. } => err.to_string(),
    }
}

/// The scheduler's loop: fire what is due, then sleep until the earliest next firing, a
/// change (`wake`) or `stopped`. No polling: with no job scheduled it waits only for a
/// change.
pub(super) async fn run(jobs: Jobs, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    let started = OffsetDateTime::now_utc();
    loop {
        let next = match jobs.fire_due(started).await {
            Ok(()) => jobs.store.call(|db| store::jobs::next_fire_at(db)).await,
            Err(err) => Err(err),
        };
        let wait = match next {
            Ok(Some(at)) => {
                let until = parse_time(&at)
                    .map(|at| at - OffsetDateTime::now_utc())
                    .unwrap_or(time::Duration::ZERO);
                Some(std::time::Duration::try_from(until).unwrap_or_default())
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(error = %err, "running the job scheduler; retrying");
                Some(RETRY_AFTER)
            }
        };
        let sleep = async {
            match wait {
                Some(wait) => tokio::time::sleep_until(tokio::time::Instant::now() + wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = jobs.wake.notified() => {}
            _ = &mut stopped => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use time::macros::datetime;

    use super::*;
    use crate::{
        accounts::Actor,
        config::ScaleConfig,
        model::{
            account::Account,
            job::{JobFields, JobSource},
            project::{Project, ProjectStatus},
            run::{Run, RunCommand, RunStatus, RunTrigger},
        },
        names::{Handle, ProjectName},
        store::Store,
    };

    fn spec(schedule: &str, concurrency: Concurrency) -> JobSpec {
        JobSpec::check(
            JobFields {
                name: "digest".to_owned(),
                schedule: schedule.to_owned(),
                time_zone: None,
                command: vec!["true".to_owned()],
                timeout_secs: None,
                concurrency: Some(concurrency),
                size: None,
                enabled: None,
            },
            "",
        )
        .unwrap()
    }

    #[test]
    fn of_missed_firings_the_latest_runs_and_the_older_are_counted() {
        let every_minute = spec("every 1m", Concurrency::Forbid);
        // On time (a few milliseconds late): that firing, nothing missed.
        assert_eq!(
            due_firings(
                &every_minute,
                datetime!(2026-03-01 10:01 UTC),
                datetime!(2026-03-01 10:01:00.2 UTC)
            ),
            Due {
                latest: datetime!(2026-03-01 10:01 UTC),
                missed: 0,
                last_missed: None,
                next: Some(datetime!(2026-03-01 10:02 UTC)),
            }
        );
        // Down from before 10:01 to 10:05:30: 10:05 is less than an interval late and runs;
        // 10:01 to 10:04 are more than one late.
        assert_eq!(
            due_firings(
                &every_minute,
                datetime!(2026-03-01 10:01 UTC),
                datetime!(2026-03-01 10:05:30 UTC)
            ),
            Due {
                latest: datetime!(2026-03-01 10:05 UTC),
                missed: 4,
                last_missed: Some(datetime!(2026-03-01 10:04 UTC)),
                next: Some(datetime!(2026-03-01 10:06 UTC)),
            }
        );
        // A daily job down for a day and a half: yesterday's 03:00 was missed, today's runs.
        let daily = spec("daily at 03:00", Concurrency::Forbid);
        assert_eq!(
            due_firings(
                &daily,
                datetime!(2026-03-01 03:00 UTC),
                datetime!(2026-03-02 15:00 UTC)
            ),
            Due {
                latest: datetime!(2026-03-02 03:00 UTC),
                missed: 1,
                last_missed: Some(datetime!(2026-03-01 03:00 UTC)),
                next: Some(datetime!(2026-03-03 03:00 UTC)),
            }
        );
    }

    /// A launcher that records what it was asked, with the job's active runs set by the
    /// test, and a start that fails when told to.
    #[derive(Default)]
    struct FakeLauncher {
        active: Mutex<Vec<Run>>,
        calls: Mutex<Vec<String>>,
        fail_start: Mutex<Option<String>>,
    }

    fn run(id: &str, status: RunStatus) -> Run {
        Run {
            id: id.to_owned(),
            account_id: "acc_ada".to_owned(),
            project_id: "prj_a".to_owned(),
            deploy_id: "dep_1".to_owned(),
            command: RunCommand::from_stored(vec!["true".to_owned()]),
            status,
            exit_code: None,
            error: None,
            trigger: RunTrigger::Job {
                job_id: "job_1".to_owned(),
            },
            started_by: ACTOR.to_owned(),
            size: "nano".to_owned(),
            timeout_secs: 60,
            interactive: false,
            container_id: None,
            created_at: clock::now(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
        }
    }

    #[async_trait::async_trait]
    impl super::super::Launcher for FakeLauncher {
        async fn start(&self, job: &Job, actor: &str) -> Result<Run> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("start {} as {actor}", job.id));
            match self.fail_start.lock().unwrap().clone() {
                Some(message) => Err(Error::Invalid(message)),
                None => Ok(run("run_new", RunStatus::Running)),
            }
        }

        async fn active(&self, _job_id: &str) -> Result<Vec<Run>> {
            Ok(self.active.lock().unwrap().clone())
        }

        async fn cancel(&self, _account_id: &str, run_id: &str) -> Result<()> {
            self.calls.lock().unwrap().push(format!("cancel {run_id}"));
            self.active.lock().unwrap().retain(|run| run.id != run_id);
            Ok(())
        }
    }

    /// A real store with one project and one job due at `due`, and the handle over it.
    async fn fixture(
        spec: JobSpec,
        due: &str,
    ) -> (tempfile::TempDir, Jobs, Arc<FakeLauncher>, Job) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let account = Account {
            id: "acc_ada".to_owned(),
            handle: Handle::parse("ada").unwrap(),
            created_at: clock::now(),
        };
        let project = Project {
            id: "prj_a".to_owned(),
            account_id: account.id.clone(),
            handle: account.handle.clone(),
            name: ProjectName::parse("shop").unwrap(),
            runtime: None,
            status: ProjectStatus::Running,
            created_at: clock::now(),
            updated_at: clock::now(),
            instances: 1,
            size: None,
            preview_branches: Vec::new(),
            process_instances: Default::default(),
            build: Default::default(),
            health_check: None,
        };
        let job = Job {
            id: "job_1".to_owned(),
            account_id: account.id.clone(),
            project_id: project.id.clone(),
            spec,
            source: JobSource::Api,
            next_fire_at: Some(due.to_owned()),
            last_fire_at: None,
            last_skip: None,
            skipped_count: 0,
            created_at: clock::now(),
            updated_at: clock::now(),
        };
        let rows = (account, project, job.clone());
        store
            .write_audited(None::<store::Audit>, move |tx| {
                store::accounts::insert_account(tx, &rows.0)?;
                store::projects::insert(tx, &rows.1)?;
                store::jobs::insert(tx, &rows.2)
            })
            .await
            .unwrap();
        let launcher = Arc::new(FakeLauncher::default());
        let jobs = Jobs::new(
            store,
            launcher.clone(),
            ScaleConfig::default(),
            Arc::new(tokio::sync::Notify::new()),
        );
        (dir, jobs, launcher, job)
    }

    async fn stored(jobs: &Jobs) -> Job {
        jobs.store
            .call(|db| store::jobs::by_id(db, "job_1"))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn concurrency_decides_what_a_firing_does_beside_a_running_run() {
        let due = "2026-03-01T10:01:00.000Z";
        let now = datetime!(2026-03-01 10:01:00.1 UTC);
        let started = datetime!(2026-03-01 09:00 UTC);
        // forbid: skipped, naming the run; the next firing is set all the same.
        let (_dir, jobs, launcher, job) = fixture(spec("every 1m", Concurrency::Forbid), due).await;
        launcher
            .active
            .lock()
            .unwrap()
            .push(run("run_old", RunStatus::Running));
        let outcome = jobs.handle(&job, now, started).await.unwrap();
        assert!(
            matches!(&outcome, Outcome::Skipped { reason } if reason.contains("run_old") && reason.contains("forbid")),
            "{outcome:?}"
        );
        assert!(launcher.calls.lock().unwrap().is_empty());
        let after = stored(&jobs).await;
        assert_eq!(after.skipped_count, 1);
        assert_eq!(after.last_skip.unwrap().scheduled_at, due);
        assert_eq!(after.last_fire_at, None);
        assert_eq!(
            after.next_fire_at.as_deref(),
            Some("2026-03-01T10:02:00.000Z")
        );

        // replace: the running one canceled, then a new one started.
        let (_dir, jobs, launcher, job) =
            fixture(spec("every 1m", Concurrency::Replace), due).await;
        launcher
            .active
            .lock()
            .unwrap()
            .push(run("run_old", RunStatus::Running));
        let outcome = jobs.handle(&job, now, started).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Started {
                run_id: "run_new".to_owned()
            }
        );
        assert_eq!(
            *launcher.calls.lock().unwrap(),
            vec![
                "cancel run_old".to_owned(),
                "start job_1 as scheduler".to_owned()
            ]
        );
        let after = stored(&jobs).await;
        assert_eq!(after.last_fire_at.as_deref(), Some(due));
        assert_eq!(after.skipped_count, 0);

        // allow: another beside it.
        let (_dir, jobs, launcher, job) = fixture(spec("every 1m", Concurrency::Allow), due).await;
        launcher
            .active
            .lock()
            .unwrap()
            .push(run("run_old", RunStatus::Pending));
        let outcome = jobs.handle(&job, now, started).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Started {
                run_id: "run_new".to_owned()
            }
        );
        assert_eq!(
            *launcher.calls.lock().unwrap(),
            vec!["start job_1 as scheduler".to_owned()]
        );
    }

    #[tokio::test]
    async fn a_run_that_cannot_start_is_a_skip_with_its_reason() {
        let due = "2026-03-01T10:01:00.000Z";
        let (_dir, jobs, launcher, job) = fixture(spec("every 1m", Concurrency::Forbid), due).await;
        *launcher.fail_start.lock().unwrap() = Some("the project has no release to run".to_owned());
        let outcome = jobs
            .handle(
                &job,
                datetime!(2026-03-01 10:01:00.1 UTC),
                datetime!(2026-03-01 09:00 UTC),
            )
            .await
            .unwrap();
        assert!(
            matches!(&outcome, Outcome::Skipped { reason } if reason.contains("no release")),
            "{outcome:?}"
        );
        let after = stored(&jobs).await;
        assert!(after.last_skip.unwrap().reason.contains("no release"));
        assert_eq!(
            after.next_fire_at.as_deref(),
            Some("2026-03-01T10:02:00.000Z")
        );
    }

    #[tokio::test]
    async fn a_firing_missed_while_the_daemon_was_down_runs_once_and_older_ones_are_skipped() {
        // The daemon stopped before 10:01 and started at 10:05:30.
        let due = "2026-03-01T10:01:00.000Z";
        let started = datetime!(2026-03-01 10:05:30 UTC);
        let (_dir, jobs, launcher, job) = fixture(spec("every 1m", Concurrency::Forbid), due).await;
        let outcome = jobs.handle(&job, started, started).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Started {
                run_id: "run_new".to_owned()
            }
        );
        assert_eq!(launcher.calls.lock().unwrap().len(), 1, "one run, not five");
        let after = stored(&jobs).await;
        assert_eq!(
            after.last_fire_at.as_deref(),
            Some("2026-03-01T10:05:00.000Z")
        );
        assert_eq!(after.skipped_count, 4);
        let skip = after.last_skip.unwrap();
        assert_eq!(skip.scheduled_at, "2026-03-01T10:04:00.000Z");
        assert!(
            skip.reason.contains("missed while the daemon was down"),
            "{}",
            skip.reason
        );
        assert_eq!(
            after.next_fire_at.as_deref(),
            Some("2026-03-01T10:06:00.000Z")
        );
        // Less than one interval late: it runs, and nothing is skipped.
        let (_dir, jobs, _launcher, job) =
            fixture(spec("every 1m", Concurrency::Forbid), due).await;
        let late = datetime!(2026-03-01 10:01:40 UTC);
        jobs.handle(&job, late, late).await.unwrap();
        let after = stored(&jobs).await;
        assert_eq!(after.last_fire_at.as_deref(), Some(due));
        assert_eq!(after.skipped_count, 0);
    }

    #[tokio::test]
    async fn an_edit_made_while_a_job_fired_is_kept() {
        let due = "2026-03-01T10:01:00.000Z";
        let (_dir, jobs, _launcher, job) =
            fixture(spec("every 1m", Concurrency::Forbid), due).await;
        // The job's schedule changed after the scheduler read it.
        jobs.store
            .call(|db| {
                store::jobs::set_next(
                    db,
                    "job_1",
                    "2026-03-01T10:01:00.000Z",
                    Some("2026-03-01T11:00:00.000Z"),
                )
            })
            .await
            .unwrap();
        jobs.handle(
            &job,
            datetime!(2026-03-01 10:01:00.1 UTC),
            datetime!(2026-03-01 09:00 UTC),
        )
        .await
        .unwrap();
        assert_eq!(
            stored(&jobs).await.next_fire_at.as_deref(),
            Some("2026-03-01T11:00:00.000Z")
        );
    }

    #[tokio::test]
    async fn the_api_changes_only_its_own_jobs_and_a_new_job_wakes_the_scheduler() {
        let (_dir, jobs, _launcher, _job) = fixture(
            spec("every 1m", Concurrency::Forbid),
            "2026-03-01T10:01:00.000Z",
        )
        .await;
        let account = Account {
            id: "acc_ada".to_owned(),
            handle: Handle::parse("ada").unwrap(),
            created_at: clock::now(),
        };
        let actor = Actor::operator(&account);
        let woken = jobs.wake.clone();
        let created = jobs
            .create(
                &actor,
                "prj_a".to_owned(),
                JobFields {
                    name: "nightly".to_owned(),
                    schedule: "daily at 03:00".to_owned(),
                    time_zone: Some("Europe/Paris".to_owned()),
                    command: vec!["true".to_owned()],
                    timeout_secs: Some(600),
                    concurrency: None,
                    size: None,
                    enabled: None,
                },
            )
            .await
            .unwrap();
        assert!(created.job.next_fire_at.is_some());
        // The permit `create` left wakes a waiter at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), woken.notified())
            .await
            .unwrap();
        let taken = jobs
            .create(&actor, "prj_a".to_owned(), created.job.spec.to_fields())
            .await;
        assert!(matches!(taken, Err(Error::Conflict(_))), "{taken:?}");
        // Disabled: no next firing; enabled again: one from now.
        let disabled = jobs
            .update(
                &actor,
                "prj_a".to_owned(),
                "nightly",
                super::super::JobPatch {
                    enabled: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(disabled.job.next_fire_at, None);
        // A job the file declared is the file's.
        jobs.store
            .call(|db| {
                let mut job = store::jobs::by_name(db, "prj_a", "nightly")?.unwrap();
                store::jobs::delete(db, &job.id)?;
                job.source = JobSource::File;
                store::jobs::insert(db, &job)
            })
            .await
            .unwrap();
        let refused = jobs.delete(&actor, "prj_a".to_owned(), "nightly").await;
        assert!(
            matches!(&refused, Err(Error::Conflict(message)) if message.contains("cantila.toml")),
            "{refused:?}"
        );
        let unknown_size = jobs
            .update(
                &actor,
                "prj_a".to_owned(),
                "digest",
                super::super::JobPatch {
                    size: Some(Some("huge".to_owned())),
                    ..Default::default()
                },
            )
            .await;
        assert!(
            matches!(&unknown_size, Err(Error::Invalid(message)) if message.contains("`size`") && message.contains("nano")),
            "{unknown_size:?}"
        );
    }
}

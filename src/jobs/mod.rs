//! Scheduled jobs: a project's commands run on a schedule, each firing a one-off run
//! (`runs`). `Jobs` is the handle: create, list, change, delete and run-now for the API,
//! and the scheduler (`scheduler.rs`), a background task that waits for the next due time
//! and fires through a `Launcher` (the runs service in the daemon, a fake in unit tests).
//! Jobs declared in `cantila.toml` are written by the release that ships the file
//! (`store::jobs::sync_file`, called by `deploy`), which wakes the scheduler through the
//! same `Notify` as the API's changes.
//! Invariant: the API changes only jobs of source `api`; a job's `next_fire_at` is set
//! whenever it is enabled and cleared while it is disabled, so the scheduler's one query
//! (the earliest `next_fire_at`) is the whole of its wait.

mod scheduler;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::{
    accounts::Actor,
    clock,
    config::ScaleConfig,
    error::{Error, Result},
    ids,
    projects::{self, Project},
    runs::{RunRequest, RunTrigger, Runs},
    store::{self, Store},
};

pub use crate::model::job::{
    Concurrency, Job, JobFields, JobSource, JobSpec, Skip, ZoneName, MAX_JOBS_PER_PROJECT,
};
pub use crate::model::run::Run;

/// What a job's firing calls: starting a run of the job, the job's runs that are still
/// pending or running, and cancelling one. The daemon's is the runs service; the scheduler's
/// unit tests use a fake, so the scheduling logic is tested without an engine.
#[async_trait::async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// Starts a run of the job's command (trigger `job`), as `actor`.
    async fn start(&self, job: &Job, actor: &str) -> Result<Run>;
    /// The job's runs that are pending or running.
    async fn active(&self, job_id: &str) -> Result<Vec<Run>>;
    /// Cancels one run (SIGTERM, then SIGKILL after the grace period).
    async fn cancel(&self, account_id: &str, run_id: &str) -> Result<()>;
}

/// The jobs handle: cheap to clone, one per daemon.
#[derive(Clone)]
pub struct Jobs {
    store: Store,
    /// Starts and inspects the runs a firing makes.
    launcher: Arc<dyn Launcher>,
    /// The size tiers a job may name (`[scale.sizes]`).
    scale: Arc<ScaleConfig>,
    /// Wakes the scheduler when a job changes (the API's changes and, through `deploy`'s
    /// copy, releases that apply a `cantila.toml`), so its wait is always on the earliest
    /// next firing.
    wake: Arc<Notify>,
}

/// A job with its newest run (kept by the runs' history), as the API shows it.
#[derive(Debug, Clone)]
pub struct JobState {
    pub job: Job,
    pub last_run: Option<Run>,
}

/// A change to a job: each field present replaces the job's; `time_zone` and `size` may be
/// set to null (`Some(None)`) to go back to UTC and the project's size.
#[derive(Debug, Clone, Default)]
pub struct JobPatch {
    pub schedule: Option<String>,
    pub time_zone: Option<Option<String>>,
    pub command: Option<Vec<String>>,
    pub timeout_secs: Option<u64>,
    pub concurrency: Option<Concurrency>,
    pub size: Option<Option<String>>,
    pub enabled: Option<bool>,
}

fn not_found(project: &Project, name: &str) -> Error {
    Error::NotFound(format!(
        "project `{}` has no job named `{name}`",
        project.name
    ))
}

/// The job's next firing strictly after `after`, formatted for the store; `None` while it
/// is disabled.
pub fn next_fire_at(spec: &JobSpec, after: OffsetDateTime) -> Option<String> {
    spec.scheduled_after(after).map(clock::format)
}

impl Jobs {
    pub fn new(
        store: Store,
        launcher: Arc<dyn Launcher>,
        scale: ScaleConfig,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            launcher,
            scale: Arc::new(scale),
            wake,
        }
    }

    /// Checks a size tier against `[scale.sizes]`.
    fn check_size(&self, field: &str, size: Option<&str>) -> Result<()> {
        match size {
            Some(size) if !self.scale.sizes.contains_key(size) => {
                let known: Vec<&str> = self.scale.sizes.keys().map(String::as_str).collect();
                Err(Error::Invalid(format!(
                    "`{field}` `{size}` is not a size tier; use one of {}",
                    known.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    async fn with_last_run(&self, jobs: Vec<Job>) -> Result<Vec<JobState>> {
        self.store
            .call(move |db| {
                jobs.into_iter()
                    .map(|job| {
                        let last_run = store::jobs::last_run(db, &job.id)?;
                        Ok(JobState { job, last_run })
                    })
                    .collect()
            })
            .await
    }

    async fn find(&self, project: &Project, name: &str) -> Result<Job> {
        let id = project.id.clone();
        let lookup = name.to_owned();
        self.store
            .call(move |db| store::jobs::by_name(db, &id, &lookup))
            .await?
            .ok_or_else(|| not_found(project, name))
    }

    /// The project's jobs by name, each with its newest run.
    pub async fn list(&self, actor: &Actor, project_id: String) -> Result<Vec<JobState>> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let id = project.id.clone();
        let jobs = self
            .store
            .call(move |db| store::jobs::of_project(db, &id))
            .await?;
        self.with_last_run(jobs).await
    }

    pub async fn get(&self, actor: &Actor, project_id: String, name: &str) -> Result<JobState> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let job = self.find(&project, name).await?;
        Ok(self.with_last_run(vec![job]).await?.remove(0))
    }

    /// Declares a job through the API; it first fires at its schedule's next time.
    pub async fn create(
        &self,
        actor: &Actor,
        project_id: String,
        fields: JobFields,
    ) -> Result<JobState> {
        let spec = JobSpec::check(fields, "")?;
        self.check_size("size", spec.size.as_deref())?;
        let project = projects::get(&self.store, actor, project_id).await?;
        let now = OffsetDateTime::now_utc();
        let at = clock::format(now);
        let job = Job {
            id: ids::new_id("job"),
            account_id: project.account_id.clone(),
            project_id: project.id.clone(),
            next_fire_at: next_fire_at(&spec, now),
            spec,
            source: JobSource::Api,
            last_fire_at: None,
            last_skip: None,
            skipped_count: 0,
            created_at: at.clone(),
            updated_at: at,
        };
        let saved = job.clone();
        let audit = store::Audit::by(
            actor,
            "job.create",
            format!("{}:{}", job.project_id, job.name()),
        );
        self.store
            .write_audited(audit, move |tx| {
                if let Some(existing) = store::jobs::by_name(tx, &saved.project_id, saved.name())? {
                    return Err(Error::Conflict(format!(
                        "the project already has a job named `{}` (from {})",
                        saved.name(),
                        existing.source.as_str()
                    )));
                }
                if store::jobs::count(tx, &saved.project_id)? >= MAX_JOBS_PER_PROJECT {
                    return Err(Error::Conflict(format!(
                        "the project has {MAX_JOBS_PER_PROJECT} jobs, the most it may have; delete one first"
                    )));
                }
                store::jobs::insert(tx, &saved)
            })
            .await?;
        self.wake.notify_one();
        Ok(JobState {
            job,
            last_run: None,
        })
    }

    /// Changes a job made through the API. A job from `cantila.toml` is changed by
    /// changing the file and deploying (409 here).
    pub async fn update(
        &self,
        actor: &Actor,
        project_id: String,
        name: &str,
        patch: JobPatch,
    ) -> Result<JobState> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let job = self.find(&project, name).await?;
        refuse_file_job(&job, "changed")?;
        let mut fields = job.spec.to_fields();
        if let Some(schedule) = patch.schedule {
            fields.schedule = schedule;
        }
        if let Some(zone) = patch.time_zone {
            fields.time_zone = zone;
        }
        if let Some(command) = patch.command {
            fields.command = command;
        }
        if let Some(timeout) = patch.timeout_secs {
            fields.timeout_secs = Some(timeout);
        }
        if let Some(concurrency) = patch.concurrency {
            fields.concurrency = Some(concurrency);
        }
        if let Some(size) = patch.size {
            fields.size = size;
        }
        if let Some(enabled) = patch.enabled {
            fields.enabled = Some(enabled);
        }
        let spec = JobSpec::check(fields, "")?;
        self.check_size("size", spec.size.as_deref())?;
        let now = OffsetDateTime::now_utc();
        // A new schedule (or a job enabled again) counts from now; an unchanged one keeps
        // its next firing.
        let next = if spec.schedule == job.spec.schedule
            && spec.zone == job.spec.zone
            && spec.enabled == job.spec.enabled
        {
            job.next_fire_at.clone()
        } else {
            next_fire_at(&spec, now)
        };
        let at = clock::format(now);
        let id = job.id.clone();
        let saved = spec.clone();
        let saved_next = next.clone();
        let saved_at = at.clone();
        let audit = store::Audit::by(actor, "job.update", format!("{}:{}", job.project_id, name));
        self.store
            .write_audited(audit, move |tx| {
                if !store::jobs::update_spec(tx, &id, &saved, saved_next.as_deref(), &saved_at)? {
                    return Err(Error::NotFound("the job was deleted meanwhile".to_owned()));
                }
                Ok(())
            })
            .await?;
        self.wake.notify_one();
        let job = Job {
            spec,
            next_fire_at: next,
            updated_at: at,
            ..job
        };
        Ok(self.with_last_run(vec![job]).await?.remove(0))
    }

    /// Deletes a job made through the API; its runs stay in the project's history.
    pub async fn delete(&self, actor: &Actor, project_id: String, name: &str) -> Result<()> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let job = self.find(&project, name).await?;
        refuse_file_job(&job, "deleted")?;
        let audit = store::Audit::by(actor, "job.delete", format!("{}:{}", job.project_id, name));
        self.store
            .write_audited(audit, move |tx| {
                store::jobs::delete(tx, &job.id).map(|_| ())
            })
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Starts a run of the job now, whatever its schedule, whether it is enabled and
    /// whatever else of it is running: asking for a run is asking for one.
    pub async fn run_now(&self, actor: &Actor, project_id: String, name: &str) -> Result<Run> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let job = self.find(&project, name).await?;
        let run = self.launcher.start(&job, &actor.label()).await?;
        let audit = store::Audit::by(
            actor,
            "job.run",
            format!("{}:{} {}", job.project_id, name, run.id),
        );
        self.store.write_audited(audit, |_| Ok(())).await?;
        Ok(run)
    }

    /// Runs the scheduler until `stopped`: see `scheduler.rs`.
    pub async fn run_scheduler(self, stopped: impl std::future::Future<Output = ()>) {
        scheduler::run(self, stopped).await;
    }
}

fn refuse_file_job(job: &Job, what: &str) -> Result<()> {
    match job.source {
        JobSource::Api => Ok(()),
        JobSource::File => Err(Error::Conflict(format!(
            "job `{}` is declared in cantila.toml and cannot be {what} through the API; change the file and deploy",
            job.name()
        ))),
    }
}

/// The daemon's launcher: each firing is `Runs::start` with the job's command, size and
/// timeout, trigger `job`, on the project's serving release; a cancel for `replace` is
/// audited as the scheduler's.
#[async_trait::async_trait]
impl Launcher for Runs {
    async fn start(&self, job: &Job, actor: &str) -> Result<Run> {
        let request = RunRequest {
            command: job.spec.command.clone(),
            size: job.spec.size.clone(),
            timeout: Duration::from_secs(job.spec.timeout_secs),
            env: BTreeMap::new(),
            deploy_id: None,
            trigger: RunTrigger::Job {
                job_id: job.id.clone(),
            },
            interactive: false,
        };
        Runs::start(self, &job.account_id, actor, &job.project_id, request).await
    }

    async fn active(&self, job_id: &str) -> Result<Vec<Run>> {
        self.active_for_job(job_id).await
    }

    async fn cancel(&self, account_id: &str, run_id: &str) -> Result<()> {
        match self.cancel_by(account_id, scheduler::ACTOR, run_id).await {
            // Ended on its own meanwhile: nothing left to replace.
            Ok(_) | Err(Error::Conflict(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

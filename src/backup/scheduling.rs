//! Backup schedules: each project's own or the configured default, set and removed
//! through the API; the scheduler that runs due ones every 20 seconds, records each run on
//! the schedule (a failure in the audit log too), and applies retention to scheduled
//! backups (their files, rows and copies in S3).

use time::OffsetDateTime;

use crate::{
    accounts::Actor,
    clock,
    error::{Error, Result},
    projects::{self, Project},
    store,
};

use super::{reason_of, schedule, BackupStatus, Backups, Schedule, Trigger};

/// The most days of daily backups a schedule may keep (a year and a day); the API's
/// `SetSchedule` documents the same bound.
pub const MAX_KEEP_DAILY: u32 = 366;
/// The most weeks of weekly backups a schedule may keep (ten years).
pub const MAX_KEEP_WEEKLY: u32 = 520;

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

impl Backups {
    /// The schedule the project follows: its own, or the configured default.
    pub fn effective_schedule(&self, project_id: &str, own: Option<Schedule>) -> Option<Schedule> {
        match own {
            Some(schedule) if schedule.explicit => Some(schedule),
            other => self.config.schedule.as_ref().map(|default| Schedule {
                project_id: project_id.to_owned(),
                schedule: default.clone(),
                keep_daily: self.config.keep_daily,
                keep_weekly: self.config.keep_weekly,
                explicit: false,
                updated_at: other
                    .as_ref()
                    .map(|s| s.updated_at.clone())
                    .unwrap_or_else(clock::now),
                last_run_at: other.as_ref().and_then(|s| s.last_run_at.clone()),
                last_status: other.as_ref().and_then(|s| s.last_status.clone()),
                last_error: other.and_then(|s| s.last_error),
            }),
        }
    }

    pub async fn get_schedule(
        &self,
        actor: &Actor,
        project_id: String,
    ) -> Result<Option<Schedule>> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let id = project.id.clone();
        let own = self
            .store
            .call(move |c| store::backups::schedule_of(c, &id))
            .await?;
        Ok(self.effective_schedule(&project.id, own))
    }

    /// Sets the project's own schedule and retention.
    pub async fn set_schedule(
        &self,
        actor: &Actor,
        project_id: String,
        spec: String,
        keep_daily: Option<u32>,
        keep_weekly: Option<u32>,
    ) -> Result<Schedule> {
        schedule::Spec::parse(&spec).map_err(Error::Invalid)?;
        let keep_daily = keep_daily.unwrap_or(self.config.keep_daily);
        let keep_weekly = keep_weekly.unwrap_or(self.config.keep_weekly);
        for (field, value, max) in [
            ("keepDaily", keep_daily, MAX_KEEP_DAILY),
            ("keepWeekly", keep_weekly, MAX_KEEP_WEEKLY),
        ] {
            if value > max {
                return Err(Error::Invalid(format!(
                    "{field} must be between 0 and {max}, got {value}"
                )));
            }
        }
        if keep_daily == 0 && keep_weekly == 0 {
            return Err(Error::Invalid(
                "keepDaily and keepWeekly are both 0: every scheduled backup would be pruned at once; keep at least one"
                    .to_owned(),
            ));
        }
        let project = projects::get(&self.store, actor, project_id).await?;
        let schedule = Schedule {
            project_id: project.id.clone(),
            schedule: spec.trim().to_owned(),
            keep_daily,
            keep_weekly,
            explicit: true,
            updated_at: clock::now(),
            last_run_at: None,
            last_status: None,
            last_error: None,
        };
        let saved = schedule.clone();
        let audit = store::Audit::by(actor, "backup.schedule.set", &schedule.project_id);
        self.store
            .write_audited(audit, move |tx| {
                store::backups::put_schedule(tx, &saved)?;
                let stored = store::backups::schedule_of(tx, &saved.project_id)?;
                Ok(stored)
            })
            .await?
            .ok_or_else(|| Error::Internal("a saved schedule vanished".to_owned()))
    }

    /// Removes the project's own schedule; the configured default (if any) applies again.
    pub async fn delete_schedule(&self, actor: &Actor, project_id: String) -> Result<()> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let audit = store::Audit::by(actor, "backup.schedule.delete", &project.id);
        self.store
            .write_audited(audit, move |tx| {
                if !store::backups::delete_schedule(tx, &project.id)? {
                    return Err(Error::NotFound(format!(
                        "project `{}` has no backup schedule of its own",
                        project.id
                    )));
                }
                Ok(())
            })
            .await
    }

    /// Runs due schedules every 20 seconds until `stopped`.
    pub async fn run_scheduler(self, stopped: impl std::future::Future<Output = ()>) {
        tokio::pin!(stopped);
        let started = OffsetDateTime::now_utc();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(20)) => {}
                _ = &mut stopped => break,
            }
            if let Err(err) = self.run_due(started).await {
                tracing::warn!(error = %err, "running backup schedules");
            }
        }
    }

    async fn run_due(&self, started: OffsetDateTime) -> Result<()> {
        let (projects, schedules) = self
            .store
            .call(|c| {
                Ok((
                    store::backups::projects_with_data(c)?,
                    store::backups::all_schedules(c)?,
                ))
            })
            .await?;
        let now = OffsetDateTime::now_utc();
        for project_id in projects {
            let own = schedules
                .iter()
                .find(|s| s.project_id == project_id)
                .cloned();
            let Some(schedule) = self.effective_schedule(&project_id, own) else {
                continue;
            };
            let Ok(spec) = schedule::Spec::parse(&schedule.schedule) else {
                continue;
            };
            // A default schedule counts from the daemon's start, an own one from when it was
            // set; after that, from its last run.
            let since = schedule
                .last_run_at
                .as_deref()
                .and_then(parse_time)
                .or_else(|| {
                    if schedule.explicit {
                        parse_time(&schedule.updated_at)
                    } else {
                        Some(started)
                    }
                })
                .unwrap_or(started);
            if !spec.due(since, now) {
                continue;
            }
            let project = projects::get_unscoped(&self.store, project_id.clone()).await?;
            self.run_scheduled(&project, &schedule).await;
        }
        Ok(())
    }

    /// One scheduled run: every target backed up, the outcome recorded on the schedule (and a
    /// failure in the audit log), then retention applied.
    async fn run_scheduled(&self, project: &Project, schedule: &Schedule) {
        let mut failures = Vec::new();
        match self.targets_of(project).await {
            Ok(targets) => {
                for target in targets {
                    match self
                        .run_now(project, target.clone(), Trigger::Scheduled)
                        .await
                    {
                        Ok(backup) if backup.status == BackupStatus::Completed => {}
                        Ok(backup) => failures.push(format!(
                            "{} {}: {}",
                            backup.kind.as_str(),
                            backup.subject,
                            backup.error.unwrap_or_default()
                        )),
                        Err(err) => failures.push(reason_of(&err)),
                    }
                }
            }
            Err(err) => failures.push(reason_of(&err)),
        }
        let error = (!failures.is_empty()).then(|| failures.join("; "));
        let status = if error.is_some() {
            "failed"
        } else {
            "completed"
        };
        let saved = schedule.clone();
        let audit = error.is_some().then(|| {
            store::Audit::by_daemon(
                &project.account_id,
                "scheduler",
                "backup.scheduled.failed",
                &schedule.project_id,
            )
        });
        let now = clock::now();
        let recorded = self
            .store
            .write_audited(audit, move |tx| {
                store::backups::record_schedule_run(tx, &saved, &now, status, error.as_deref())
            })
            .await;
        if let Err(err) = recorded {
            tracing::error!(project = %project.id, error = %err, "recording a scheduled backup run");
        }
        if let Err(err) = self.apply_retention(project, schedule).await {
            tracing::warn!(project = %project.id, error = %err, "pruning scheduled backups");
        }
    }

    /// Deletes the scheduled backups the retention policy no longer keeps, per target.
    async fn apply_retention(&self, project: &Project, schedule: &Schedule) -> Result<()> {
        let id = project.id.clone();
        let backups = self
            .store
            .call(move |c| store::backups::of_project(c, &id))
            .await?;
        let mut groups: std::collections::BTreeMap<(&str, &str), Vec<(String, OffsetDateTime)>> =
            Default::default();
        for backup in backups.iter().rev() {
            if backup.trigger != Trigger::Scheduled.as_str()
                || backup.status != BackupStatus::Completed
            {
                continue;
            }
            if let Some(at) = parse_time(&backup.started_at) {
                groups
                    .entry((backup.kind.as_str(), backup.subject.as_str()))
                    .or_default()
                    .push((backup.id.clone(), at));
            }
        }
        for newest_first in groups.values() {
            for id in schedule::prune(newest_first, schedule.keep_daily, schedule.keep_weekly) {
                let Some(backup) = backups.iter().find(|b| b.id == id) else {
                    continue;
                };
                if let Some(file) = &backup.file {
                    let path = self.backups_dir.join(file);
                    if let Err(err) = tokio::fs::remove_file(&path).await {
                        if err.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(file = %path.display(), error = %err, "removing a pruned backup");
                            continue;
                        }
                    }
                }
                self.delete_copy(backup).await;
                let audit =
                    store::Audit::by_daemon(&project.account_id, "scheduler", "backup.prune", &id);
                self.store
                    .write_audited(audit, move |tx| store::backups::delete(tx, &id))
                    .await?;
            }
        }
        Ok(())
    }
}

//! Backups of a project's data: its database (`pg_dump` custom format, or SQLite's online
//! backup API) and its volumes (tar archives), taken on demand, before destructive
//! operations and on a schedule; listed, downloaded, restored, and pruned by retention.
//! Invariant: a backup is `completed` only once its file is whole on disk (written under
//! a temporary name, fsynced, checksummed, renamed); a crash leaves it `failed` with the
//! reason "interrupted", never `completed`.

mod addon;
mod archive;
pub mod latest;
pub mod remote;
mod scheduling;

pub use crate::model::schedule;
pub use scheduling::{MAX_KEEP_DAILY, MAX_KEEP_WEEKLY};

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    accounts::Actor,
    clock,
    config::BackupConfig,
    database::{DatabaseEngine, Databases},
    error::{Error, Result},
    ids,
    locks::ProjectLocks,
    names::VolumeName,
    pagination::{Page, PageRequest},
    projects::{self, Project},
    routing::Routing,
    runtime::Runtime,
    services::{addons::AddonData, Services},
    store::{self, Store},
};

pub use crate::model::backup::{
    Backup, BackupKind, BackupStatus, RemoteCopy, RemoteStatus, Schedule, Target, Trigger,
};

/// The backups handle: cheap to clone (every field is), one per daemon. The scheduler
/// and the uploader's retry timer run with a clone of it.
#[derive(Clone)]
pub struct Backups {
    store: Store,
    /// The container runtime; it connects on first use, so the API runs without one.
    runtime: Runtime,
    /// This installation's id, labelled on helper containers and used to find the ones a
    /// crash left behind.
    installation: Arc<str>,
    /// `[backups]`: the tools, the helper image, the default schedule and retention.
    config: Arc<BackupConfig>,
    /// Where backup files live, one directory per project.
    backups_dir: Arc<Path>,
    /// `[deploy] stop_grace_secs`: a restore stops the project's containers with it.
    stop_grace_secs: u64,
    /// The database a backup dumps and a restore writes back, and its credentials.
    databases: Databases,
    /// The add-ons a `service` backup dumps and a restore writes back.
    services: Services,
    /// Shared with deploys: containers are held still only while no release change runs.
    locks: ProjectLocks,
    /// The route table follows containers a restore restarted, or start-up resumed.
    routing: Routing,
    /// Backups that may run at once (`backups.concurrent`), so dumps and archives do not
    /// starve the apps of disk and CPU.
    slots: Arc<tokio::sync::Semaphore>,
    /// Copies of completed backups in S3-compatible storage; `None` when `[backups.s3]`
    /// is off.
    uploads: Option<Arc<remote::Uploader>>,
    /// `restore_latest`'s runs in progress and recently finished, for their progress.
    latest_runs: latest::LatestRuns,
}

/// What `Backups` is made of, from the composition root.
pub struct BackupsParts {
    pub store: Store,
    pub runtime: Runtime,
    pub installation: Arc<str>,
    pub config: BackupConfig,
    pub backups_dir: PathBuf,
    pub stop_grace_secs: u64,
    pub databases: Databases,
    pub services: Services,
    pub locks: ProjectLocks,
    pub routing: Routing,
    pub uploads: Option<remote::Uploader>,
}

impl Backups {
    pub fn new(parts: BackupsParts) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(parts.config.concurrent)),
            store: parts.store,
            runtime: parts.runtime,
            installation: parts.installation,
            config: Arc::new(parts.config),
            backups_dir: parts.backups_dir.into(),
            stop_grace_secs: parts.stop_grace_secs,
            databases: parts.databases,
            services: parts.services,
            locks: parts.locks,
            routing: parts.routing,
            uploads: parts.uploads.map(Arc::new),
            latest_runs: latest::new_runs(),
        }
    }

    /// The container runtime, once it answers (the first call connects).
    async fn engine(&self) -> Result<Runtime> {
        self.runtime.ready().await?;
        Ok(self.runtime.clone())
    }

    /// What a backup request names; `None` backs up everything the project holds.
    pub async fn create(
        &self,
        actor: &Actor,
        project_id: String,
        target: Option<Target>,
    ) -> Result<Vec<Backup>> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let targets = match target {
            Some(target) => {
                self.check_target(&project, &target).await?;
                vec![target]
            }
            None => self.targets_of(&project).await?,
        };
        if targets.is_empty() {
            return Err(Error::Invalid(format!(
                "project `{}` has no database, no volumes and no add-ons with data: there is nothing to back up",
                project.id
            )));
        }
        let mut started = Vec::new();
        for target in targets {
            let backup = self
                .begin(&project, &target, Trigger::Manual, Some(actor))
                .await?;
            let (backups, project, task_backup) = (self.clone(), project.clone(), backup.clone());
            tokio::spawn(async move {
                backups.finish(&project, task_backup).await;
            });
            started.push(backup);
        }
        Ok(started)
    }

    async fn check_target(&self, project: &Project, target: &Target) -> Result<()> {
        let id = project.id.clone();
        let (database, volumes) = self
            .store
            .call(move |c| {
                Ok((
                    store::volumes::database_of(c, &id)?,
                    store::volumes::volumes_of(c, &id)?,
                ))
            })
            .await?;
        match target {
            Target::Database if database.is_none() => Err(Error::Invalid(format!(
                "project `{}` has no database to back up",
                project.id
            ))),
            Target::Database => Ok(()),
            Target::Service(name) => self.addon_of(project, name).await.map(|_| ()),
            Target::Volume(name) => {
                VolumeName::parse(name)?;
                let Some(volume) = volumes.iter().find(|v| &v.name == name) else {
                    return Err(Error::Invalid(format!(
                        "project `{}` has no volume `{name}`",
                        project.id
                    )));
                };
                if let Some(owner) = &volume.service {
                    if self.addon_of(project, owner).await.is_ok() {
                        return Err(Error::Invalid(format!(
                            "volume `{name}` holds the data of add-on `{owner}`; back up `kind: service` (`{owner}`) instead, with the engine's own tools"
                        )));
                    }
                }
                if database.is_some_and(|db| db.volume.as_deref() == Some(name.as_str())) {
                    return Err(Error::Invalid(format!(
                        "volume `{name}` holds the SQLite database; back up `kind: database` instead"
                    )));
                }
                Ok(())
            }
        }
    }

    /// Everything the project holds: its database, and each volume that is not the SQLite
    /// database's own (that one is backed up as the database).
    async fn targets_of(&self, project: &Project) -> Result<Vec<Target>> {
        let id = project.id.clone();
        let (database, volumes) = self
            .store
            .call(move |c| {
                Ok((
                    store::volumes::database_of(c, &id)?,
                    store::volumes::volumes_of(c, &id)?,
                ))
            })
            .await?;
        let database_volume = database.as_ref().and_then(|db| db.volume.clone());
        let addons = self.services.addons_of(&project.id).await?;
        let mut targets = Vec::new();
        if database.is_some() {
            targets.push(Target::Database);
        }
        // An add-on's volume is backed up as the add-on, with its engine's tools; a cache's
        // (which has none) not at all.
        let addon_volume = |v: &crate::volumes::Volume| {
            v.service
                .as_deref()
                .is_some_and(|owner| addons.iter().any(|(s, _)| s.name().as_str() == owner))
        };
        targets.extend(
            volumes
                .into_iter()
                .filter(|v| Some(&v.name) != database_volume.as_ref() && !addon_volume(v))
                .map(|v| Target::Volume(v.name)),
        );
        targets.extend(
            addons
                .iter()
                .filter(|(_, engine)| engine.backs_up())
                .map(|(service, _)| Target::Service(service.name().to_string())),
        );
        Ok(targets)
    }

    /// Records a `running` backup (audited when an actor asked for it).
    async fn begin(
        &self,
        project: &Project,
        target: &Target,
        trigger: Trigger,
        actor: Option<&Actor>,
    ) -> Result<Backup> {
        let id = project.id.clone();
        let database = self
            .store
            .call(move |c| store::volumes::database_of(c, &id))
            .await?;
        let (kind, subject, engine) = match target {
            Target::Database => {
                let database = database.ok_or_else(|| {
                    Error::Invalid(format!("project `{}` has no database", project.id))
                })?;
                (
                    BackupKind::Database,
                    database.name,
                    Some(database.engine.as_str().to_owned()),
                )
            }
            Target::Volume(name) => (BackupKind::Volume, name.clone(), None),
            Target::Service(name) => {
                let addon = self.addon_of(project, name).await?;
                (
                    BackupKind::Service,
                    name.clone(),
                    Some(addon.engine.as_str().to_owned()),
                )
            }
        };
        let backup = Backup {
            id: ids::new_id("bak"),
            project_id: project.id.clone(),
            kind,
            subject,
            engine,
            trigger: trigger.as_str().to_owned(),
            status: BackupStatus::Running,
            error: None,
            file: None,
            size_bytes: None,
            sha256: None,
            started_at: clock::now(),
            finished_at: None,
            restored_at: None,
            remote: None,
        };
        let saved = backup.clone();
        // The daemon's own backups (scheduled, safety, final) are not audited here.
        let audit = actor.map(|actor| store::Audit::by(actor, "backup.create", &backup.id));
        self.store
            .write_audited(audit, move |tx| store::backups::insert(tx, &saved))
            .await?;
        Ok(backup)
    }

    /// Runs a recorded backup to its end and records the outcome; returns the final row.
    async fn finish(&self, project: &Project, backup: Backup) -> Backup {
        let permit = self.slots.acquire().await;
        let outcome = self.take(project, &backup).await;
        drop(permit);
        let id = backup.id.clone();
        let now = clock::now();
        let recorded = match &outcome {
            Ok(file) => {
                tracing::info!(project = %project.id, backup = %backup.id, bytes = file.size_bytes, "backup completed");
                let file = file.clone();
                let remote_key = self.key_for(&file.relative);
                self.store
                    .call(move |c| {
                        store::backups::complete(
                            c,
                            &id,
                            &file.relative,
                            file.size_bytes,
                            &file.sha256,
                            &now,
                            remote_key.as_deref(),
                        )
                    })
                    .await
            }
            Err(err) => {
                let reason = reason_of(err);
                tracing::warn!(project = %project.id, backup = %backup.id, reason = %reason, "backup failed");
                self.store
                    .call(move |c| store::backups::fail(c, &id, &reason, &now))
                    .await
            }
        };
        match recorded {
            // In the background: the local backup is done, and a caller waiting for it (a
            // restore's safety backup) never waits for the network.
            Ok(()) if outcome.is_ok() => self.spawn_upload(backup.id.clone()),
            Ok(()) => {}
            Err(err) => {
                tracing::error!(backup = %backup.id, error = %err, "recording a backup's outcome")
            }
        }
        let id = backup.id.clone();
        self.store
            .call(move |c| store::backups::by_id(c, &id))
            .await
            .ok()
            .flatten()
            .unwrap_or(backup)
    }

    /// Takes a backup now and waits for it (final and safety backups, schedules).
    pub async fn run_now(
        &self,
        project: &Project,
        target: Target,
        trigger: Trigger,
    ) -> Result<Backup> {
        let backup = self.begin(project, &target, trigger, None).await?;
        // Spawned, so a caller that goes away (a timed-out request) never leaves it running.
        let (backups, task_project) = (self.clone(), project.clone());
        tokio::spawn(async move { backups.finish(&task_project, backup).await })
            .await
            .map_err(|err| Error::Internal(format!("backup task: {err}")))
    }

    pub async fn list(
        &self,
        actor: &Actor,
        project_id: String,
        page: PageRequest,
    ) -> Result<Page<Backup>> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let rows = self
            .store
            .call(move |c| store::backups::page(c, &project.id, page.after, page.limit + 1))
            .await?;
        Ok(page.finish(rows))
    }

    /// A backup of the actor's account, with its project; another account's is not found.
    pub async fn get(&self, actor: &Actor, backup_id: String) -> Result<(Backup, Project)> {
        let id = backup_id.clone();
        let backup = self
            .store
            .call(move |c| store::backups::by_id(c, &id))
            .await?;
        let not_found = || Error::NotFound(format!("backup `{backup_id}` not found"));
        let backup = backup.ok_or_else(not_found)?;
        let project = projects::get(&self.store, actor, backup.project_id.clone())
            .await
            .map_err(|_| not_found())?;
        Ok((backup, project))
    }

    /// The file of a completed backup, for download.
    pub async fn file_of(
        &self,
        actor: &Actor,
        backup_id: String,
    ) -> Result<(Backup, Project, PathBuf)> {
        let (backup, project) = self.get(actor, backup_id).await?;
        let file = self.completed_file(&backup)?;
        self.ensure_local_file(&backup, &file).await?;
        Ok((backup, project, file))
    }

    fn completed_file(&self, backup: &Backup) -> Result<PathBuf> {
        match (&backup.status, &backup.file) {
            (BackupStatus::Completed, Some(file)) => Ok(self.backups_dir.join(file)),
            (BackupStatus::Running, _) => Err(Error::Conflict(format!(
                "backup `{}` is still running",
                backup.id
            ))),
            (BackupStatus::Failed, _) | (BackupStatus::Completed, None) => Err(Error::Conflict(
                format!("backup `{}` did not complete, so it has no file", backup.id),
            )),
        }
    }

    /// Restores a completed backup over the project's current data, after taking a safety
    /// backup of that data (a failed safety backup stops the restore).
    pub async fn restore(
        &self,
        actor: &Actor,
        backup_id: String,
        confirm: Option<String>,
    ) -> Result<Restored> {
        let (backup, project) = self.get(actor, backup_id).await?;
        crate::volumes::check_confirmation(&project, confirm.as_deref())?;
        let file = self.completed_file(&backup)?;
        let target = backup.target();
        self.check_target(&project, &target).await?;
        if let (Target::Database, Some(engine)) = (&target, &backup.engine) {
            let id = project.id.clone();
            let current = self
                .store
                .call(move |c| store::volumes::database_of(c, &id))
                .await?;
            if current.is_some_and(|db| db.engine.as_str() != engine) {
                return Err(Error::Invalid(format!(
                    "backup `{}` is of a {engine} database, but the project's database now uses another engine",
                    backup.id
                )));
            }
        }
        if let (Target::Service(name), Some(engine)) = (&target, &backup.engine) {
            let current = self.addon_of(&project, name).await?;
            if current.engine.as_str() != engine {
                return Err(Error::Invalid(format!(
                    "backup `{}` is of a {engine} add-on, but add-on `{name}` now runs {}",
                    backup.id, current.engine
                )));
            }
        }
        self.ensure_local_file(&backup, &file).await?;
        archive::verify(&file, &backup).await?;
        let safety_backup = self.run_now(&project, target, Trigger::Safety).await?;
        if safety_backup.status != BackupStatus::Completed {
            return Err(Error::Conflict(format!(
                "the safety backup before the restore failed ({}); nothing was restored",
                safety_backup.error.clone().unwrap_or_default()
            )));
        }
        // Spawned, so the restore runs to its end even if the request times out.
        let (backups, task_project, task_backup) = (self.clone(), project.clone(), backup.clone());
        tokio::spawn(async move {
            backups
                .restore_file(&task_project, &task_backup, &file)
                .await
        })
        .await
        .map_err(|err| Error::Internal(format!("restore task: {err}")))??;
        let id = backup.id.clone();
        let audit = store::Audit::by(actor, "backup.restore", &id);
        let backup = self
            .store
            .write_audited(audit, move |tx| {
                store::backups::set_restored(tx, &id, &clock::now())?;
                let backup = store::backups::by_id(tx, &id)?;
                Ok(backup)
            })
            .await?
            .ok_or_else(|| Error::Internal("a restored backup vanished".to_owned()))?;
        Ok(Restored {
            backup,
            safety_backup,
        })
    }

    /// Unwires and destroys the project's database, after a final backup. A database
    /// already gone (from its server, or a SQLite file the app never made) has nothing
    /// left to back up and is unwired without one.
    pub async fn delete_database(
        &self,
        actor: &Actor,
        project_id: String,
        confirm: Option<String>,
    ) -> Result<Option<Backup>> {
        let (project, record) = self
            .databases
            .prepare_delete(actor, project_id, confirm)
            .await?;
        let gone = match record.engine {
            DatabaseEngine::Postgres => self.databases.postgres_gone(&record).await?,
            DatabaseEngine::Sqlite => !self.sqlite_file_exists(&project, &record).await?,
        };
        let final_backup = if gone {
            None
        } else {
            let backup = self
                .run_now(&project, Target::Database, Trigger::Final)
                .await?;
            if backup.status != BackupStatus::Completed {
                return Err(Error::Conflict(format!(
                    "the final backup failed ({}); the database was kept",
                    backup.error.unwrap_or_default()
                )));
            }
            Some(backup)
        };
        self.databases.destroy(actor, &project, &record).await?;
        Ok(final_backup)
    }

    /// At start-up: backups a crash interrupted are marked failed, their partial files and
    /// helper containers removed, files no completed backup owns deleted, and the project
    /// containers a crash left paused mid-copy resumed.
    pub async fn recover(&self) -> Result<()> {
        let now = clock::now();
        let interrupted = self
            .store
            .call(move |c| {
                store::backups::fail_running(
                    c,
                    "interrupted: the daemon stopped while the backup was running",
                    &now,
                )
            })
            .await?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "marked interrupted backups failed");
        }
        let owned = self
            .store
            .call(|c| store::backups::completed_files(c))
            .await?;
        let root = self.backups_dir.to_path_buf();
        tokio::task::spawn_blocking(move || archive::sweep(&root, &owned))
            .await
            .map_err(|err| Error::Internal(err.to_string()))?;
        self.remove_helpers().await;
        self.resume_paused().await;
        Ok(())
    }
}

impl Backups {
    /// Deletes a service; with `delete_data`, an add-on holding data is backed up first
    /// (a `final` backup with its engine's tools, or of its volume when it is not running
    /// to dump from), and a failed final backup keeps the add-on.
    pub async fn delete_service(
        &self,
        actor: &Actor,
        project_id: &str,
        name: &crate::names::ServiceName,
        delete_data: bool,
    ) -> Result<Option<Backup>> {
        let project = projects::get(&self.store, actor, project_id.to_owned()).await?;
        let addon = match delete_data {
            true => self.services.addon_data(&project.id, name.as_str()).await?,
            false => None,
        };
        let final_backup = match addon {
            Some(addon) if addon.engine.backs_up() => {
                let target = match (&addon.container, &addon.volume_name) {
                    (Some(_), _) => Some(Target::Service(name.to_string())),
                    (None, Some(volume)) => Some(Target::Volume(volume.clone())),
                    (None, None) => None,
                };
                match target {
                    Some(target) => {
                        let backup = self.run_now(&project, target, Trigger::Final).await?;
                        if backup.status != BackupStatus::Completed {
                            return Err(Error::Conflict(format!(
                                "the final backup of add-on `{name}` failed ({}); the add-on was kept",
                                backup.error.unwrap_or_default()
                            )));
                        }
                        Some(backup)
                    }
                    None => None,
                }
            }
            Some(_) | None => None,
        };
        self.services
            .delete(actor, &project.id, name, delete_data)
            .await?;
        Ok(final_backup)
    }

    /// The project's add-on `name`, when it is one whose data is backed up.
    pub(crate) async fn addon_of(&self, project: &Project, name: &str) -> Result<AddonData> {
        let addon = self
            .services
            .addon_data(&project.id, name)
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "project `{}` has no add-on named `{name}`",
                    project.id
                ))
            })?;
        if !addon.engine.backs_up() {
            return Err(Error::Invalid(format!(
                "add-on `{name}` is a {} cache: it holds no data to back up",
                addon.engine
            )));
        }
        Ok(addon)
    }
}

/// A failure as the backup row shows it: internal details stay in the server log.
fn reason_of(err: &Error) -> String {
    match err {
        Error::Store(_) | Error::Internal(_) => {
            tracing::error!(error = %err, "backup failed");
            format!("internal error: {err}")
        }
        other => other.to_string(),
    }
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub backup: Backup,
    /// The backup of the data as it was just before the restore.
    pub safety_backup: Backup,
}

/// Whether the project's database is a `DatabaseEngine`, for callers that branch.
pub fn engine_of(backup: &Backup) -> Option<DatabaseEngine> {
    backup
        .engine
        .as_deref()
        .and_then(|e| DatabaseEngine::parse(e).ok())
}

//! The work of one backup or restore, per kind:
//! - PostgreSQL: `pg_dump --format=custom` / `pg_restore --clean --single-transaction`,
//!   run as the project's own role with argument arrays; the password goes through
//!   `PGPASSWORD` in the child's environment, never its command line.
//! - SQLite: the daemon reaches the file on its Docker volume through a helper container
//!   (created, never started) and the engine's archive API, so it needs no access to
//!   Docker's own directories. The project's containers are paused while `app.db` and its
//!   `-wal` are copied out (a crash-consistent copy), and SQLite's online backup API turns
//!   that copy into one self-contained, integrity-checked file.
//! - Volumes: a tar archive of the whole volume read through the same helper, with the
//!   project's containers paused, so the archive is a consistent point in time.
//!
//! Restores of files stop the project's containers (under the project lock, so neither
//! the reconciler nor a scale replaces them meanwhile), write, and start them again.
//! Every file is written under a temporary name, fsynced, checksummed and renamed.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::{
    database::{self, postgres, DatabaseEngine, DatabaseRecord},
    error::{Error, Result},
    labels::{Filter, Kind, Labels},
    projects::Project,
    runtime::{Runtime, VolumeMount},
    store,
};

use super::{Backup, BackupKind, Backups};

/// A finished backup file.
#[derive(Debug, Clone)]
pub struct Written {
    /// Relative to the backups directory.
    pub relative: String,
    pub size_bytes: i64,
    pub sha256: String,
}

pub(super) const VOLUME_MOUNT: &str = "/volume";

fn io_error(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |err| Error::Internal(format!("{what}: {err}"))
}

impl Backups {
    /// Takes the backup described by `backup`; returns its file.
    pub(super) async fn take(&self, project: &Project, backup: &Backup) -> Result<Written> {
        let dir = self.backups_dir.join(&project.id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_error("creating the backups directory"))?;
        match backup.kind {
            BackupKind::Database => {
                let id = project.id.clone();
                let record = self
                    .store
                    .call(move |c| store::volumes::database_of(c, &id))
                    .await?
                    .ok_or_else(|| {
                        Error::Invalid("the project no longer has a database".to_owned())
                    })?;
                match record.engine {
                    DatabaseEngine::Postgres => {
                        self.dump_postgres(project, backup, &record, &dir).await
                    }
                    DatabaseEngine::Sqlite => {
                        self.copy_sqlite(project, backup, &record, &dir).await
                    }
                }
            }
            BackupKind::Volume => self.archive_volume(project, backup, &dir).await,
            BackupKind::Service => {
                let addon = self.addon_of(project, &backup.subject).await?;
                self.dump_addon(project, backup, &addon, &dir).await
            }
        }
    }

    fn pg_target(&self, record: &DatabaseRecord) -> Result<PgTarget> {
        // The admin URL says where the server is now; the stored host is where it was.
        let server = match self.databases.admin_url() {
            Some(url) => postgres::server_address(url)?,
            None => postgres::ServerAddress {
                host: record
                    .host
                    .clone()
                    .unwrap_or_else(|| "localhost".to_owned()),
                port: record.port.unwrap_or(5432),
            },
        };
        Ok(PgTarget {
            host: server.host,
            port: server.port,
            user: record.user.clone().unwrap_or_default(),
            database: record.name.clone(),
            password: self.databases.password_of(record)?,
        })
    }

    async fn dump_postgres(
        &self,
        project: &Project,
        backup: &Backup,
        record: &DatabaseRecord,
        dir: &Path,
    ) -> Result<Written> {
        // A clear reason when the database was dropped behind Cantila's back.
        if let Some(url) = self.databases.admin_url() {
            if postgres::size(url, &record.name).await?.is_none() {
                return Err(Error::Invalid(format!(
                    "database `{}` no longer exists on the PostgreSQL server; nothing to back up",
                    record.name
                )));
            }
        }
        let target = self.pg_target(record)?;
        let partial = partial_path(dir, backup);
        let args = vec![
            "--format=custom".to_owned(),
            "--no-password".to_owned(),
            format!("--file={}", partial.display()),
            format!("--host={}", target.host),
            format!("--port={}", target.port),
            format!("--username={}", target.user),
            format!("--dbname={}", target.database),
        ];
        if let Err(err) = run_pg_tool(&self.config.pg_dump, &args, &target).await {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(err);
        }
        seal_file(partial, project, backup, "pgdump").await
    }

    /// Removes helper containers a crash left behind (at start-up), of backups and of asset
    /// extraction alike.
    pub(super) async fn remove_helpers(&self) {
        let Ok(engine) = self.engine().await else {
            return;
        };
        let leftovers = engine
            .containers_matching(
                &Filter::new()
                    .kind(Kind::Helper)
                    .installation(&self.installation),
            )
            .await
            .unwrap_or_default();
        for container in leftovers {
            let _ = engine
                .stop_and_remove(&container.id, Duration::from_secs(1))
                .await;
        }
    }

    /// Unpauses the containers a crash left paused while a backup copied their files (at
    /// start-up). Only a backup's copy pauses containers, so every paused container of this
    /// installation is one of those; the route table then takes them back.
    pub(super) async fn resume_paused(&self) {
        let Ok(engine) = self.engine().await else {
            return;
        };
        let paused: Vec<_> = engine
            .containers_matching(&Filter::new().installation(&self.installation))
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|container| container.state == "paused")
            .collect();
        if paused.is_empty() {
            return;
        }
        for container in &paused {
            match engine.unpause(&container.id).await {
                Ok(()) => {
                    tracing::warn!(container = %container.name, "resumed a container a crash left paused mid-backup")
                }
                Err(err) => {
                    tracing::error!(container = %container.name, error = %err, "resuming a container a crash left paused")
                }
            }
        }
        if let Err(err) = self.routing.refresh().await {
            tracing::warn!(error = %err, "refreshing routes after resuming paused containers");
        }
    }

    /// Runs `work` with the project's running containers paused or stopped, under the
    /// project lock, and resumes them afterwards whatever `work` returned.
    async fn with_containers_held<T>(
        &self,
        engine: &Runtime,
        project: &Project,
        hold: Hold,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let lock = self.locks.of(&project.id);
        let _guard = lock.lock().await;
        // A preview's containers mount none of the project's data, so they run on.
        let running: Vec<String> = engine
            .containers_matching(&Filter::production(&project.id))
            .await?
            .into_iter()
            .filter(|c| c.state == "running")
            .map(|c| c.id)
            .collect();
        let mut held = Vec::new();
        let mut failure = None;
        for id in &running {
            let result = match hold {
                Hold::Pause => engine.pause(id).await,
                Hold::Stop => engine.stop(id, self.stop_grace_secs).await,
            };
            match result {
                Ok(()) => held.push(id.clone()),
                Err(err) => {
                    failure = Some(Error::Invalid(format!(
                        "cannot {} the project's container {id}: {err}",
                        if hold == Hold::Pause { "pause" } else { "stop" }
                    )));
                    break;
                }
            }
        }
        let result = match failure {
            Some(err) => Err(err),
            None => work.await,
        };
        for id in &held {
            let resumed = match hold {
                Hold::Pause => engine.unpause(id).await,
                Hold::Stop => engine.start_again(id).await,
            };
            if let Err(err) = resumed {
                tracing::error!(project = %project.id, container = %id, error = %err, "resuming a container after a backup or restore");
            }
        }
        if hold == Hold::Stop && !held.is_empty() {
            drop(_guard);
            if let Err(err) = self.routing.refresh().await {
                tracing::warn!(error = %err, "refreshing routes after a restore");
            }
        }
        result
    }

    async fn archive_volume(
        &self,
        project: &Project,
        backup: &Backup,
        dir: &Path,
    ) -> Result<Written> {
        let (id, name) = (project.id.clone(), backup.subject.clone());
        let volume = self
            .store
            .call(move |c| store::volumes::volume(c, &id, &name))
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!("volume `{}` no longer exists", backup.subject))
            })?;
        let engine = self.engine().await?;
        if !engine.volume_exists(&volume.docker_name).await? {
            return Err(Error::Invalid(format!(
                "the Docker volume `{}` is gone (removed outside Cantila); nothing to back up",
                volume.docker_name
            )));
        }
        let helper = Helper::create(
            self,
            &engine,
            project,
            &backup.id.to_ascii_lowercase(),
            &volume.docker_name,
            VOLUME_MOUNT,
            None,
        )
        .await?;
        let partial = partial_path(dir, backup);
        let result = async {
            let mut out = tokio::fs::File::create(&partial)
                .await
                .map_err(io_error("creating a backup file"))?;
            self.with_containers_held(&engine, project, Hold::Pause, async {
                download_into(&engine, &helper.id, VOLUME_MOUNT, &mut out).await
            })
            .await
        }
        .await;
        helper.remove().await;
        if let Err(err) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(err);
        }
        seal_file(partial, project, backup, "tar").await
    }

    async fn copy_sqlite(
        &self,
        project: &Project,
        backup: &Backup,
        record: &DatabaseRecord,
        dir: &Path,
    ) -> Result<Written> {
        let volume_name = record.volume.clone().unwrap_or_default();
        let (id, name) = (project.id.clone(), volume_name.clone());
        let volume = self
            .store
            .call(move |c| store::volumes::volume(c, &id, &name))
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!("the database's volume `{volume_name}` is gone"))
            })?;
        let engine = self.engine().await?;
        if !engine.volume_exists(&volume.docker_name).await? {
            return Err(Error::Invalid(format!(
                "the database's Docker volume `{}` is gone (removed outside Cantila); nothing to back up",
                volume.docker_name
            )));
        }
        let helper = Helper::create(
            self,
            &engine,
            project,
            &backup.id.to_ascii_lowercase(),
            &volume.docker_name,
            database::SQLITE_MOUNT,
            None,
        )
        .await?;
        let work = dir.join(format!(".{}.work", backup.id));
        let result = async {
            tokio::fs::create_dir_all(&work)
                .await
                .map_err(io_error("creating a scratch directory"))?;
            let file = format!("{}/{}", database::SQLITE_MOUNT, database::SQLITE_FILE);
            let main_tar = work.join("main.tar");
            let wal_tar = work.join("wal.tar");
            let has_wal = self.with_containers_held(&engine, project, Hold::Pause, async {
                let mut out = tokio::fs::File::create(&main_tar)
                    .await
                    .map_err(io_error("creating a scratch file"))?;
                download_into(&engine, &helper.id, &file, &mut out)
                    .await
                    .map_err(|err| match err {
                        Error::NotFound(_) => Error::Invalid(format!(
                            "the SQLite database file {file} does not exist yet: the app has not created it"
                        )),
                        other => other,
                    })?;
                let mut out = tokio::fs::File::create(&wal_tar)
                    .await
                    .map_err(io_error("creating a scratch file"))?;
                match download_into(&engine, &helper.id, &format!("{file}-wal"), &mut out).await {
                    Ok(_) => Ok(true),
                    Err(Error::NotFound(_)) => Ok(false),
                    Err(other) => Err(other),
                }
            })
            .await?;
            let partial = partial_path(dir, backup);
            let (work_dir, partial_copy) = (work.clone(), partial.clone());
            tokio::task::spawn_blocking(move || -> Result<()> {
                unpack_single(&work_dir.join("main.tar"), &work_dir.join(database::SQLITE_FILE))?;
                if has_wal {
                    unpack_single(
                        &work_dir.join("wal.tar"),
                        &work_dir.join(format!("{}-wal", database::SQLITE_FILE)),
                    )?;
                }
                store::app_sqlite::backup_file(&work_dir.join(database::SQLITE_FILE), &partial_copy)
            })
            .await
            .map_err(|err| Error::Internal(err.to_string()))??;
            Ok(partial)
        }
        .await;
        helper.remove().await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        match result {
            Ok(partial) => seal_file(partial, project, backup, "sqlite").await,
            Err(err) => {
                let _ = tokio::fs::remove_file(partial_path(dir, backup)).await;
                Err(err)
            }
        }
    }

    /// Whether the app has created its SQLite file yet (a database with no file has nothing to
    /// back up before it is deleted).
    pub(super) async fn sqlite_file_exists(
        &self,
        project: &Project,
        record: &DatabaseRecord,
    ) -> Result<bool> {
        let docker_name = crate::volumes::docker_name(
            &project.id,
            &crate::names::VolumeName::parse(record.volume.as_deref().unwrap_or_default())?,
        );
        let engine = self.engine().await?;
        if !engine.volume_exists(&docker_name).await? {
            return Ok(false);
        }
        let helper = Helper::create(
            self,
            &engine,
            project,
            &format!(
                "probe-{}",
                crate::ids::random_base62(6).to_ascii_lowercase()
            ),
            &docker_name,
            database::SQLITE_MOUNT,
            None,
        )
        .await?;
        let path = format!("{}/{}", database::SQLITE_MOUNT, database::SQLITE_FILE);
        let mut stream = Box::pin(engine.download_tar(&helper.id, &path));
        let exists = match stream.next().await {
            Some(Ok(_)) => Ok(true),
            Some(Err(crate::runtime::RuntimeError::NotFound(_))) | None => Ok(false),
            Some(Err(other)) => Err(Error::from(other)),
        };
        drop(stream);
        helper.remove().await;
        exists
    }

    /// Restores a verified backup file over the project's current data.
    pub(super) async fn restore_file(
        &self,
        project: &Project,
        backup: &Backup,
        file: &Path,
    ) -> Result<()> {
        match backup.kind {
            BackupKind::Database => {
                let id = project.id.clone();
                let record = self
                    .store
                    .call(move |c| store::volumes::database_of(c, &id))
                    .await?
                    .ok_or_else(|| {
                        Error::Invalid("the project no longer has a database".to_owned())
                    })?;
                match record.engine {
                    DatabaseEngine::Postgres => self.restore_postgres(&record, file).await,
                    DatabaseEngine::Sqlite => self.restore_sqlite(project, &record, file).await,
                }
            }
            BackupKind::Volume => self.restore_volume(project, backup, file).await,
            BackupKind::Service => {
                let addon = self.addon_of(project, &backup.subject).await?;
                self.restore_addon(project, &addon, file).await
            }
        }
    }

    async fn restore_postgres(&self, record: &DatabaseRecord, file: &Path) -> Result<()> {
        let target = self.pg_target(record)?;
        if let Some(url) = self.databases.admin_url() {
            if postgres::size(url, &record.name).await?.is_none() {
                return Err(Error::Invalid(format!(
                    "database `{}` no longer exists on the PostgreSQL server",
                    record.name
                )));
            }
            postgres::end_sessions(url, &record.name).await?;
        }
        let args = vec![
            "--clean".to_owned(),
            "--if-exists".to_owned(),
            "--no-owner".to_owned(),
            "--no-privileges".to_owned(),
            "--single-transaction".to_owned(),
            "--exit-on-error".to_owned(),
            "--no-password".to_owned(),
            format!("--host={}", target.host),
            format!("--port={}", target.port),
            format!("--username={}", target.user),
            format!("--dbname={}", target.database),
            file.display().to_string(),
        ];
        run_pg_tool(&self.config.pg_restore, &args, &target).await
    }

    async fn restore_sqlite(
        &self,
        project: &Project,
        record: &DatabaseRecord,
        file: &Path,
    ) -> Result<()> {
        let source = file.to_owned();
        // A tar of the database and empty `-wal`, `-shm` and `-journal` files: a stale WAL
        // beside a replaced database would be replayed onto it.
        let tar = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            store::app_sqlite::check_file(&source)?;
            let mut builder = tar::Builder::new(Vec::new());
            let mut add = |name: &str, data: &[u8]| -> std::io::Result<()> {
                let mut header = tar::Header::new_gnu();
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                );
                header.set_cksum();
                builder.append_data(&mut header, name, data)
            };
            let data = std::fs::read(&source).map_err(io_error("reading a backup"))?;
            add(database::SQLITE_FILE, &data).map_err(io_error("building an archive"))?;
            for suffix in ["-wal", "-shm", "-journal"] {
                add(&format!("{}{suffix}", database::SQLITE_FILE), &[])
                    .map_err(io_error("building an archive"))?;
            }
            builder
                .into_inner()
                .map_err(io_error("building an archive"))
        })
        .await
        .map_err(|err| Error::Internal(err.to_string()))??;
        let volume_name = record.volume.clone().unwrap_or_default();
        let docker_name = crate::volumes::docker_name(
            &project.id,
            &crate::names::VolumeName::parse(&volume_name)?,
        );
        let engine = self.engine().await?;
        let helper = Helper::create(
            self,
            &engine,
            project,
            &format!(
                "restore-{}",
                crate::ids::random_base62(6).to_ascii_lowercase()
            ),
            &docker_name,
            database::SQLITE_MOUNT,
            None,
        )
        .await?;
        let result = self
            .with_containers_held(&engine, project, Hold::Stop, async {
                engine
                    .upload_tar(&helper.id, database::SQLITE_MOUNT, tar_stream(tar).boxed())
                    .await
                    .map_err(|err| Error::Invalid(format!("writing the database file: {err}")))
            })
            .await;
        helper.remove().await;
        result
    }

    async fn restore_volume(&self, project: &Project, backup: &Backup, file: &Path) -> Result<()> {
        let (id, name) = (project.id.clone(), backup.subject.clone());
        let volume = self
            .store
            .call(move |c| store::volumes::volume(c, &id, &name))
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!("volume `{}` no longer exists", backup.subject))
            })?;
        let engine = self.engine().await?;
        // The volume is emptied first, so files made after the backup do not survive it.
        let wiper = Helper::create(
            self,
            &engine,
            project,
            &format!(
                "restore-{}",
                crate::ids::random_base62(6).to_ascii_lowercase()
            ),
            &volume.docker_name,
            VOLUME_MOUNT,
            Some(vec![
                "find".to_owned(),
                VOLUME_MOUNT.to_owned(),
                "-mindepth".to_owned(),
                "1".to_owned(),
                "-maxdepth".to_owned(),
                "1".to_owned(),
                "-exec".to_owned(),
                "rm".to_owned(),
                "-rf".to_owned(),
                "{}".to_owned(),
                "+".to_owned(),
            ]),
        )
        .await?;
        let archive = file.to_owned();
        let result = self
            .with_containers_held(&engine, project, Hold::Stop, async {
                engine.start_again(&wiper.id).await?;
                let code = engine.wait(&wiper.id).await?;
                if code != 0 {
                    return Err(Error::Invalid(format!(
                        "emptying the volume before the restore failed (exit code {code})"
                    )));
                }
                // The archive's top entry is `volume/`, so it unpacks onto the mount at `/volume`.
                engine
                    .upload_tar(&wiper.id, "/", file_stream(archive).boxed())
                    .await
                    .map_err(|err| Error::Invalid(format!("writing the volume's files: {err}")))
            })
            .await;
        wiper.remove().await;
        result
    }
}

pub(super) fn partial_path(dir: &Path, backup: &Backup) -> PathBuf {
    dir.join(format!(".{}.partial", backup.id))
}

/// fsyncs the file, checksums it, renames it to its final name and fsyncs the directory.
pub(super) async fn seal_file(
    partial: PathBuf,
    project: &Project,
    backup: &Backup,
    ext: &str,
) -> Result<Written> {
    let relative = format!("{}/{}.{ext}", project.id, backup.id);
    let target = partial.with_file_name(format!("{}.{ext}", backup.id));
    tokio::task::spawn_blocking(move || -> Result<Written> {
        let (size, sha256) = hash_file(&partial)?;
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io_error("syncing a backup"))?;
        std::fs::rename(&partial, &target).map_err(io_error("naming a backup"))?;
        if let Some(dir) = target.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error("syncing the backups directory"))?;
        }
        Ok(Written {
            relative,
            size_bytes: size as i64,
            sha256,
        })
    })
    .await
    .map_err(|err| Error::Internal(err.to_string()))?
}

fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(io_error("reading a backup"))?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher).map_err(io_error("reading a backup"))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Checks a backup file against its recorded size and checksum before it is restored.
pub async fn verify(path: &Path, backup: &Backup) -> Result<()> {
    let path = path.to_owned();
    let (size, sha256) = tokio::task::spawn_blocking(move || hash_file(&path))
        .await
        .map_err(|err| Error::Internal(err.to_string()))?
        .map_err(|_| Error::Conflict(format!("the file of backup `{}` is missing", backup.id)))?;
    if Some(size as i64) != backup.size_bytes || Some(&sha256) != backup.sha256.as_ref() {
        return Err(Error::Conflict(format!(
            "the file of backup `{}` does not match its recorded size and SHA-256: it was altered or damaged; nothing was restored",
            backup.id
        )));
    }
    Ok(())
}

/// What pg_dump and pg_restore need: where, who, and the password for their env.
struct PgTarget {
    host: String,
    port: u16,
    user: String,
    database: String,
    password: String,
}

/// Runs a PostgreSQL tool with an argument array and the password in its environment;
/// a failure carries the tool's last error lines.
async fn run_pg_tool(program: &Path, args: &[String], target: &PgTarget) -> Result<()> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .env("PGPASSWORD", &target.password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSFILE")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|err| {
            Error::Invalid(format!(
                "cannot run {}: {err}; install PostgreSQL's client tools or set [backups] pg_dump/pg_restore",
                program.display()
            ))
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let detail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let detail = detail[detail.len().saturating_sub(3)..].join(" / ");
    Err(Error::Invalid(format!(
        "{} failed ({}): {detail}",
        program
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("the tool"),
        output.status
    )))
}

/// Helper containers: created with the volume mounted, never started (the archive API
/// works on created containers), and removed afterwards.
pub(super) struct Helper {
    engine: Runtime,
    pub(super) id: String,
}

impl Helper {
    pub(super) async fn create(
        backups: &Backups,
        engine: &Runtime,
        project: &Project,
        name_suffix: &str,
        volume: &str,
        target: &str,
        command: Option<Vec<String>>,
    ) -> Result<Self> {
        let labels = Labels::helper(&backups.installation, &project.id).to_map();
        let id = engine
            .create_helper(
                &format!("cantila-{}-{name_suffix}", project.id.to_ascii_lowercase()),
                &backups.config.helper_image,
                &[VolumeMount {
                    volume: volume.to_owned(),
                    target: target.to_owned(),
                }],
                labels,
                command,
            )
            .await
            .map_err(|err| {
                Error::Invalid(format!(
                    "cannot create the helper container (image `{}`, [backups] helper_image): {err}",
                    backups.config.helper_image
                ))
            })?;
        Ok(Self {
            engine: engine.clone(),
            id,
        })
    }

    pub(super) async fn remove(self) {
        if let Err(err) = self
            .engine
            .stop_and_remove(&self.id, Duration::from_secs(1))
            .await
        {
            tracing::warn!(container = %self.id, error = %err, "removing a backup helper container");
        }
    }
}

/// How the project's containers are held still.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Frozen (cgroup freezer): for reading their files.
    Pause,
    /// Stopped: for replacing their files.
    Stop,
}

/// Streams a tar of `path` in the helper into `out`, returning bytes written.
async fn download_into(
    engine: &Runtime,
    helper: &str,
    path: &str,
    out: &mut tokio::fs::File,
) -> Result<u64> {
    use tokio::io::AsyncWriteExt;
    let mut stream = Box::pin(engine.download_tar(helper, path));
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| match err {
            crate::runtime::RuntimeError::NotFound(_) => {
                Error::NotFound(format!("`{path}` does not exist"))
            }
            other => Error::Invalid(format!("reading `{path}` through the engine: {other}")),
        })?;
        out.write_all(&chunk)
            .await
            .map_err(io_error("writing a backup"))?;
        written += chunk.len() as u64;
    }
    out.flush().await.map_err(io_error("writing a backup"))?;
    Ok(written)
}

/// Writes the one regular file of a tar archive to `to`.
fn unpack_single(tar_path: &Path, to: &Path) -> Result<()> {
    let file = std::fs::File::open(tar_path).map_err(io_error("reading a scratch file"))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(io_error("reading an archive"))? {
        let mut entry = entry.map_err(io_error("reading an archive"))?;
        if entry.header().entry_type().is_file() {
            let mut out = std::fs::File::create(to).map_err(io_error("writing a scratch file"))?;
            std::io::copy(&mut entry, &mut out).map_err(io_error("writing a scratch file"))?;
            return Ok(());
        }
    }
    Err(Error::Invalid(
        "the engine returned an archive without the file".to_owned(),
    ))
}

/// A tar stream in memory: small archives only (the SQLite restore builds one file).
fn tar_stream(tar: Vec<u8>) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::once(async move { Bytes::from(tar) })
}

/// A file's bytes as a stream of chunks, for uploading archives of any size.
fn file_stream(path: PathBuf) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::unfold(None::<tokio::fs::File>, move |file| {
        let path = path.clone();
        async move {
            use tokio::io::AsyncReadExt;
            let mut file = match file {
                Some(file) => file,
                None => tokio::fs::File::open(&path).await.ok()?,
            };
            let mut buffer = vec![0u8; 256 * 1024];
            let read = file.read(&mut buffer).await.ok()?;
            if read == 0 {
                return None;
            }
            buffer.truncate(read);
            Some((Bytes::from(buffer), Some(file)))
        }
    })
}

/// Removes partial files and scratch directories, and backup files no completed backup
/// owns (a crash between the rename and the store's update leaves one).
pub fn sweep(root: &Path, owned: &[String]) {
    let Ok(projects) = std::fs::read_dir(root) else {
        return;
    };
    for project in projects.flatten() {
        let Ok(entries) = std::fs::read_dir(project.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = format!("{}/{name}", project.file_name().to_string_lossy());
            if owned.contains(&relative) {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match removed {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "removed a backup file no completed backup owns")
                }
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "removing a stray backup file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sweep_keeps_owned_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("prj_a");
        std::fs::create_dir_all(project.join(".bak_2.work")).unwrap();
        std::fs::write(project.join("bak_1.tar"), b"x").unwrap();
        std::fs::write(project.join(".bak_2.partial"), b"x").unwrap();
        std::fs::write(project.join("bak_3.tar"), b"x").unwrap();
        sweep(dir.path(), &["prj_a/bak_1.tar".to_owned()]);
        let mut left: Vec<String> = std::fs::read_dir(&project)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["bak_1.tar"]);
    }

    #[test]
    fn written_files_are_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"abc")
            .unwrap();
        let (size, sha) = hash_file(&path).unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

//! The state backup service: takes one (a store snapshot, then the archive), records it,
//! copies it to S3 and verifies the copy, prunes to `[state_backup] keep`, and runs the
//! schedule. Used by the daemon (API, scheduler) and by `cantila admin backup`, which runs
//! it straight on the data directory beside a running daemon.
//! Invariant: a row is `completed` only once its archive is fsynced and renamed into
//! place with its SHA-256 recorded; retention deletes a copy in S3 only with its row.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use time::{macros::format_description, OffsetDateTime};

use crate::{
    clock,
    config::{S3Config, StateBackupConfig},
    error::Error,
    ids,
    model::{
        account::Actor,
        schedule::{Spec, Zone},
        state_backup::{StateBackup, StateBackupStatus, StateBackupTrigger, StateRemoteStatus},
    },
    s3::ObjectStore,
    store::{self, Store},
};

use super::{
    archive::{self, ArchiveInputs, Passphrase},
    remote, StateBackupError,
};

/// The bucket state backups are copied to, when `[backups.s3]` is on.
#[derive(Debug)]
struct Remote {
    store: ObjectStore,
    prefix: String,
    retry_interval: Duration,
}

/// What the service is made from.
#[derive(Debug)]
pub struct StateBackupsParts {
    pub store: Store,
    pub data_dir: PathBuf,
    pub config: StateBackupConfig,
    /// The config file the process runs with, whose text encrypted archives carry.
    pub config_file: Option<PathBuf>,
    pub s3: S3Config,
}

/// Takes, lists, copies and prunes state backups. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StateBackups {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    data_dir: PathBuf,
    config: StateBackupConfig,
    config_file: Option<PathBuf>,
    remote: Option<Remote>,
    /// One state backup at a time in this process: a second request while one runs is
    /// refused rather than queued, since it would capture the same state.
    running: Arc<tokio::sync::Mutex<()>>,
}

impl StateBackups {
    pub fn new(parts: StateBackupsParts) -> Result<Self, String> {
        let remote = if parts.s3.enabled {
            Some(Remote {
                store: ObjectStore::new(&parts.s3)?,
                prefix: parts.s3.prefix.clone(),
                retry_interval: Duration::from_secs(parts.s3.retry_interval_secs),
            })
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store: parts.store,
                data_dir: parts.data_dir,
                config: parts.config,
                config_file: parts.config_file,
                remote,
                running: Arc::new(tokio::sync::Mutex::new(())),
            }),
        })
    }

    /// Where archives are written.
    pub fn dir(&self) -> PathBuf {
        self.inner.data_dir.join("state-backups")
    }

    /// The bucket copies go to, when they do.
    pub fn bucket(&self) -> Option<&str> {
        self.inner.remote.as_ref().map(|r| r.store.bucket_name())
    }

    /// What an unencrypted archive lacks, said on its record and by the CLI.
    pub fn unencrypted_note(&self) -> String {
        format!(
            "{}; keep {} yourself",
            archive::UNENCRYPTED_NOTE,
            self.inner.data_dir.join(archive::SECRET_KEY).display()
        )
    }

    /// All state backups, newest first.
    pub async fn list(&self) -> Result<Vec<StateBackup>, Error> {
        self.inner
            .store
            .call(|db| store::state_backups::list(db))
            .await
    }

    /// Marks the state backups a stopped process left `running` as failed, and removes
    /// what they left half-written (the snapshot, the partial archive); at start.
    pub async fn recover(&self) -> Result<(), Error> {
        for record in self.list().await? {
            if record.status != StateBackupStatus::Running {
                continue;
            }
            let dir = self.dir();
            for leftover in [
                dir.join(format!(".{}.db", record.id)),
                dir.join(format!("{}{}.partial", record.id, remote::EXTENSION)),
            ] {
                let _ = tokio::fs::remove_file(leftover).await;
            }
        }
        let now = clock::now();
        self.inner
            .store
            .call(move |db| {
                store::state_backups::fail_running(db, "interrupted: the daemon stopped", &now)
            })
            .await?;
        Ok(())
    }

    /// Begins a state backup in the background and returns its `running` record (the
    /// API's 202), audited as `actor`'s; refused while another one runs in this process.
    pub async fn start(&self, actor: &Actor) -> Result<StateBackup, Error> {
        let guard = Arc::clone(&self.inner.running)
            .try_lock_owned()
            .map_err(|_| Error::Conflict("a state backup is already running".to_owned()))?;
        let passphrase = self.passphrase().map_err(Error::from)?;
        let record = self
            .begin(
                StateBackupTrigger::Manual,
                passphrase.is_some(),
                Some(actor),
            )
            .await?;
        let service = self.clone();
        let started = record.clone();
        tokio::spawn(async move {
            let _guard = guard;
            service.finish(started, passphrase, None).await;
        });
        Ok(record)
    }

    /// Takes a state backup to the end: the archive (at `out`, or in the state backups
    /// directory), its record, its copy in S3 (uploaded and verified) and the pruning of
    /// older ones. Returns the final record, `completed` or `failed`; a failed upload
    /// leaves it `completed` with the copy `failed` (retried by the daemon).
    pub async fn run(
        &self,
        trigger: StateBackupTrigger,
        out: Option<PathBuf>,
    ) -> Result<StateBackup, Error> {
        let _guard = self.inner.running.lock().await;
        let passphrase = self.passphrase().map_err(Error::from)?;
        let record = self.begin(trigger, passphrase.is_some(), None).await?;
        Ok(self.finish(record, passphrase, out).await)
    }

    fn passphrase(&self) -> Result<Option<Passphrase>, StateBackupError> {
        Passphrase::from_env_or_file(&self.inner.config)
    }

    /// Records a `running` state backup; one an API caller asked for is audited with it.
    async fn begin(
        &self,
        trigger: StateBackupTrigger,
        encrypted: bool,
        actor: Option<&Actor>,
    ) -> Result<StateBackup, Error> {
        let now = OffsetDateTime::now_utc();
        let record = StateBackup {
            id: new_id(now),
            created_at: clock::format(now),
            finished_at: None,
            status: StateBackupStatus::Running,
            error: None,
            trigger,
            file: None,
            size_bytes: None,
            sha256: None,
            encrypted,
            remote_status: StateRemoteStatus::None,
            remote_key: None,
            remote_error: None,
        };
        let inserted = record.clone();
        let audit = actor.map(|actor| store::Audit::by(actor, "state_backup.create", &record.id));
        self.inner
            .store
            .write_audited(audit, move |tx| store::state_backups::insert(tx, &inserted))
            .await?;
        Ok(record)
    }

    /// Writes the archive, records the outcome, uploads and prunes; never fails itself:
    /// every failure ends up on the record.
    async fn finish(
        &self,
        record: StateBackup,
        passphrase: Option<Passphrase>,
        out: Option<PathBuf>,
    ) -> StateBackup {
        let id = record.id.clone();
        let outcome = self.write_archive(&record, passphrase, out).await;
        let now = clock::now();
        let written = match outcome {
            Ok(written) => {
                let remote_key = self
                    .inner
                    .remote
                    .as_ref()
                    .map(|r| remote::key_for(&r.prefix, &id));
                let (id, file, sha) = (id.clone(), written.file.clone(), written.sha256.clone());
                let size = i64::try_from(written.size_bytes).unwrap_or(i64::MAX);
                let result = self
                    .inner
                    .store
                    .call(move |db| {
                        store::state_backups::complete(
                            db,
                            &id,
                            &file,
                            size,
                            &sha,
                            &now,
                            remote_key.as_deref(),
                        )
                    })
                    .await;
                match result {
                    Ok(()) => {
                        tracing::info!(
                            state_backup = %record.id,
                            file = %written.file,
                            bytes = written.size_bytes,
                            encrypted = record.encrypted,
                            "state backup written"
                        );
                        true
                    }
                    Err(err) => {
                        tracing::error!(state_backup = %record.id, error = %err, "recording a state backup");
                        false
                    }
                }
            }
            Err(err) => {
                tracing::warn!(state_backup = %record.id, error = %err, "state backup failed");
                let (id, reason) = (id.clone(), err.to_string());
                if let Err(err) = self
                    .inner
                    .store
                    .call(move |db| store::state_backups::fail(db, &id, &reason, &now))
                    .await
                {
                    tracing::error!(state_backup = %record.id, error = %err, "recording a failed state backup");
                }
                false
            }
        };
        if written {
            self.upload(&record.id).await;
            self.prune().await;
        }
        self.reload(&record).await
    }

    async fn reload(&self, record: &StateBackup) -> StateBackup {
        let id = record.id.clone();
        match self
            .inner
            .store
            .call(move |db| store::state_backups::by_id(db, &id))
            .await
        {
            Ok(Some(found)) => found,
            Ok(None) | Err(_) => record.clone(),
        }
    }

    /// The snapshot, then the archive, on the blocking pool.
    async fn write_archive(
        &self,
        record: &StateBackup,
        passphrase: Option<Passphrase>,
        out: Option<PathBuf>,
    ) -> Result<Written, StateBackupError> {
        let dir = self.dir();
        let store = self.inner.store.clone();
        let data_dir = self.inner.data_dir.clone();
        let config_file = self.inner.config_file.clone();
        let id = record.id.clone();
        tokio::task::spawn_blocking(move || {
            create_private_dir(&dir).map_err(StateBackupError::io("creating state-backups/"))?;
            let (path, file) = match out {
                Some(out) => {
                    let shown = out.display().to_string();
                    (out, shown)
                }
                None => {
                    let name = format!("{id}{}", remote::EXTENSION);
                    (dir.join(&name), name)
                }
            };
            // The snapshot sits beside the archives (same disk, owner-only) while it
            // is archived, under a name the listing never shows.
            let snapshot = dir.join(format!(".{id}.db"));
            let logs_snapshot = dir.join(format!(".{id}.logs.db"));
            let taken = (|| {
                let schema_version = store.snapshot_to(&snapshot)?;
                // The logs store is copied the same way, at its own point in time (lines
                // and points of a project removed in between are swept after a restore).
                let logs_database = store
                    .snapshot_logs_to(&logs_snapshot)?
                    .map(|version| (logs_snapshot.clone(), version));
                let config_text =
                    match &config_file {
                        Some(file) => Some(std::fs::read_to_string(file).map_err(|err| {
                            StateBackupError::Io {
                                what: format!("reading the config file {}", file.display()),
                                source: err,
                            }
                        })?),
                        None => None,
                    };
                let inputs = ArchiveInputs {
                    data_dir,
                    database: snapshot.clone(),
                    schema_version,
                    logs_database,
                    config_text,
                    created_at: OffsetDateTime::now_utc(),
                };
                archive::write(&path, &inputs, passphrase.as_ref())
            })();
            let _ = std::fs::remove_file(&snapshot);
            let _ = std::fs::remove_file(&logs_snapshot);
            let summary = taken?;
            Ok(Written {
                file,
                size_bytes: summary.size_bytes,
                sha256: summary.sha256,
            })
        })
        .await
        .map_err(|err| StateBackupError::Domain(Error::Internal(err.to_string())))?
    }

    /// The archive's path on disk: a bare name is under the state backups directory,
    /// anything else is where `--out` put it.
    fn path_of(&self, file: &str) -> PathBuf {
        if file.contains(std::path::MAIN_SEPARATOR) {
            PathBuf::from(file)
        } else {
            self.dir().join(file)
        }
    }

    /// Uploads a completed state backup whose copy is pending or failed, verifies it and
    /// records the outcome.
    async fn upload(&self, id: &str) {
        let Some(remote) = self.inner.remote.as_ref() else {
            return;
        };
        let lookup = id.to_owned();
        let record = match self
            .inner
            .store
            .call(move |db| store::state_backups::by_id(db, &lookup))
            .await
        {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(state_backup = id, error = %err, "reading a state backup to upload");
                return;
            }
        };
        let (Some(key), Some(file), Some(sha256)) = (
            record.remote_key.as_deref(),
            record.file.as_deref(),
            record.sha256.as_deref(),
        ) else {
            return;
        };
        if record.status != StateBackupStatus::Completed
            || record.remote_status == StateRemoteStatus::Uploaded
        {
            return;
        }
        let outcome = remote::upload(&remote.store, key, &self.path_of(file), sha256).await;
        let (status, error) = match outcome {
            Ok(()) => {
                tracing::info!(
                    state_backup = id,
                    bucket = remote.store.bucket_name(),
                    key,
                    "state backup uploaded and verified"
                );
                (StateRemoteStatus::Uploaded, None)
            }
            Err(reason) => {
                tracing::warn!(state_backup = id, key, reason = %reason, "state backup upload failed; it will be retried");
                (StateRemoteStatus::Failed, Some(reason))
            }
        };
        let id = id.to_owned();
        if let Err(err) = self
            .inner
            .store
            .call(move |db| store::state_backups::record_upload(db, &id, status, error.as_deref()))
            .await
        {
            tracing::error!(error = %err, "recording a state backup upload");
        }
    }

    /// Retries the uploads still pending or failed.
    pub async fn retry_uploads(&self) {
        if self.inner.remote.is_none() {
            return;
        }
        match self
            .inner
            .store
            .call(|db| store::state_backups::uploads_due(db))
            .await
        {
            Ok(due) => {
                for record in due {
                    self.upload(&record.id).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "listing state backup uploads to retry"),
        }
    }

    /// Keeps the newest `keep` completed state backups; deletes older ones (file, copy in
    /// S3, row) and the failed ones older than the oldest kept.
    pub async fn prune(&self) {
        let all = match self.list().await {
            Ok(all) => all,
            Err(err) => {
                tracing::warn!(error = %err, "listing state backups to prune");
                return;
            }
        };
        for record in pruned(&all, self.inner.config.keep as usize) {
            if let Some(file) = &record.file {
                let path = self.path_of(file);
                // Only archives in the state backups directory are this service's to
                // delete; one written elsewhere with `--out` is the operator's.
                if path.starts_with(self.dir()) {
                    if let Err(err) = tokio::fs::remove_file(&path).await {
                        if err.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(state_backup = %record.id, error = %err, "deleting a pruned state backup");
                            continue;
                        }
                    }
                }
            }
            if let (Some(remote), Some(key)) = (&self.inner.remote, &record.remote_key) {
                if let Err(err) = remote.store.delete(key).await {
                    tracing::warn!(state_backup = %record.id, key, error = %err, "deleting a pruned state backup's copy; kept for the next pass");
                    continue;
                }
            }
            let id = record.id.clone();
            if let Err(err) = self
                .inner
                .store
                .call(move |db| store::state_backups::delete(db, &id))
                .await
            {
                tracing::warn!(state_backup = %record.id, error = %err, "deleting a pruned state backup's row");
            }
        }
    }

    /// Runs scheduled state backups (when `[state_backup] enabled`) and retries failed
    /// uploads every `[backups.s3] retry_interval_secs`, until `stopped`. A schedule that
    /// fired while the daemon was down (after the last scheduled backup) runs at start.
    pub async fn run_scheduler(self, stopped: impl std::future::Future<Output = ()>) {
        tokio::pin!(stopped);
        let spec = match Spec::parse_job(&self.inner.config.schedule) {
            Ok(spec) => Some(spec).filter(|_| self.inner.config.enabled),
            Err(err) => {
                tracing::error!(error = %err, "state_backup.schedule; no scheduled state backups");
                None
            }
        };
        if let Some(spec) = &spec {
            if self.missed(spec).await {
                self.scheduled().await;
            }
        }
        self.retry_uploads().await;
        let retry = self
            .inner
            .remote
            .as_ref()
            .map(|r| r.retry_interval.max(Duration::from_secs(1)));
        let mut next_retry = retry.map(|every| tokio::time::Instant::now() + every);
        loop {
            let now = OffsetDateTime::now_utc();
            let next_run = spec
                .as_ref()
                .and_then(|spec| spec.next_after(now, &Zone::utc()))
                .map(|at| {
                    let wait = (at - now).try_into().unwrap_or(Duration::ZERO);
                    tokio::time::Instant::now() + wait
                });
            let far = tokio::time::Instant::now() + Duration::from_secs(24 * 3600);
            let run_at = next_run.unwrap_or(far);
            let retry_at = next_retry.unwrap_or(far);
            tokio::select! {
                _ = tokio::time::sleep_until(run_at), if next_run.is_some() => {
                    self.scheduled().await;
                }
                _ = tokio::time::sleep_until(retry_at), if next_retry.is_some() => {
                    self.retry_uploads().await;
                    next_retry = retry.map(|every| tokio::time::Instant::now() + every);
                }
                _ = &mut stopped => break,
                // Nothing scheduled and no uploads: wake once a day to look again.
                _ = tokio::time::sleep_until(far), if next_run.is_none() && next_retry.is_none() => {}
            }
        }
    }

    async fn missed(&self, spec: &Spec) -> bool {
        match self
            .inner
            .store
            .call(|db| store::state_backups::last_scheduled_at(db))
            .await
        {
            Ok(Some(last)) => clock::parse_nanos(&last)
                .and_then(|nanos| OffsetDateTime::from_unix_timestamp_nanos(nanos.into()).ok())
                .is_some_and(|last| spec.due(last, OffsetDateTime::now_utc())),
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(error = %err, "reading the last scheduled state backup");
                false
            }
        }
    }

    async fn scheduled(&self) {
        match self.run(StateBackupTrigger::Scheduled, None).await {
            Ok(record) => {
                tracing::info!(state_backup = %record.id, status = record.status.as_str(), "scheduled state backup")
            }
            Err(err) => tracing::warn!(error = %err, "scheduled state backup could not begin"),
        }
    }
}

/// A finished archive, before it is recorded.
struct Written {
    /// The name under the state backups directory, or the `--out` path.
    file: String,
    size_bytes: u64,
    sha256: String,
}

/// `sb_<UTC time>_<random>`: the time first, so names (and keys in S3) sort by age.
fn new_id(at: OffsetDateTime) -> String {
    let stamp = at
        .format(format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    format!("sb_{stamp}_{}", ids::random_base62(12))
}

/// What retention deletes from `all` (newest first): completed ones beyond the newest
/// `keep`, and failed ones older than the oldest kept completed one.
fn pruned(all: &[StateBackup], keep: usize) -> Vec<&StateBackup> {
    let mut kept = 0;
    let mut out = Vec::new();
    for record in all {
        match record.status {
            StateBackupStatus::Completed if kept < keep => kept += 1,
            StateBackupStatus::Completed => out.push(record),
            StateBackupStatus::Failed if kept >= keep => out.push(record),
            StateBackupStatus::Failed | StateBackupStatus::Running => {}
        }
    }
    out
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, status: StateBackupStatus) -> StateBackup {
        StateBackup {
            id: id.to_owned(),
            created_at: String::new(),
            finished_at: None,
            status,
            error: None,
            trigger: StateBackupTrigger::Scheduled,
            file: None,
            size_bytes: None,
            sha256: None,
            encrypted: true,
            remote_status: StateRemoteStatus::None,
            remote_key: None,
            remote_error: None,
        }
    }

    #[test]
    fn retention_keeps_the_newest_completed_and_the_recent_failures() {
        use StateBackupStatus::{Completed, Failed, Running};
        let all = [
            record("running", Running),
            record("c5", Completed),
            record("f4", Failed),
            record("c3", Completed),
            record("f2", Failed),
            record("c1", Completed),
        ];
        let check = |keep: usize, expected: &[&str]| {
            let ids: Vec<&str> = pruned(&all, keep).iter().map(|r| r.id.as_str()).collect();
            assert_eq!(ids, expected, "keep {keep}");
        };
        check(1, &["f4", "c3", "f2", "c1"]);
        check(2, &["f2", "c1"]);
        check(3, &[]);
        check(7, &[]);
    }

    fn service(data_dir: &Path, keep: u32) -> StateBackups {
        std::fs::write(data_dir.join("installation-id"), "inst-1\n").unwrap();
        StateBackups::new(StateBackupsParts {
            store: Store::open(data_dir).unwrap(),
            data_dir: data_dir.to_owned(),
            config: StateBackupConfig {
                keep,
                ..StateBackupConfig::default()
            },
            config_file: None,
            s3: S3Config::default(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_run_records_a_completed_archive_and_keep_prunes_the_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let backups = service(dir.path(), 1);
        let first = backups.run(StateBackupTrigger::Manual, None).await.unwrap();
        assert_eq!(first.status, StateBackupStatus::Completed, "{first:?}");
        assert!(!first.encrypted);
        assert_eq!(first.remote_status, StateRemoteStatus::None);
        let first_path = backups.dir().join(first.file.as_deref().unwrap());
        assert_eq!(
            first.sha256.as_deref(),
            Some(archive::sha256_of(&first_path).unwrap().as_str())
        );
        // Nothing but the archive is left in the directory.
        let names = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(&backups.dir()), [format!("{}.cstate", first.id)]);

        let second = backups
            .run(StateBackupTrigger::Scheduled, None)
            .await
            .unwrap();
        assert_eq!(second.status, StateBackupStatus::Completed);
        let listed: Vec<String> = backups
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(listed, std::slice::from_ref(&second.id));
        assert!(!first_path.exists());
        assert_eq!(names(&backups.dir()), [format!("{}.cstate", second.id)]);
    }

    #[tokio::test]
    async fn recovery_fails_what_a_stop_left_running_and_removes_its_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let backups = service(dir.path(), 7);
        let running = backups
            .begin(StateBackupTrigger::Scheduled, true, None)
            .await
            .unwrap();
        std::fs::create_dir_all(backups.dir()).unwrap();
        let snapshot = backups.dir().join(format!(".{}.db", running.id));
        let partial = backups.dir().join(format!("{}.cstate.partial", running.id));
        std::fs::write(&snapshot, "x").unwrap();
        std::fs::write(&partial, "x").unwrap();
        backups.recover().await.unwrap();
        let after = backups.list().await.unwrap();
        assert_eq!(after[0].status, StateBackupStatus::Failed);
        assert_eq!(
            after[0].error.as_deref(),
            Some("interrupted: the daemon stopped")
        );
        assert!(!snapshot.exists() && !partial.exists());
    }

    #[test]
    fn ids_sort_by_their_time() {
        let early = new_id(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
        let late = new_id(OffsetDateTime::from_unix_timestamp(1_700_000_001).unwrap());
        assert!(early.starts_with("sb_20231114T221320Z_"), "{early}");
        assert!(early < late);
    }
}

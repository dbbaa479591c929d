//! Copies of completed backups in S3-compatible storage (`[backups.s3]`): each completed
//! backup is uploaded in the background, verified (size, SHA-256 metadata, MD5-based
//! ETag) and the outcome recorded on the backup; failed and interrupted uploads are retried
//! on a timer; a restore or download whose local file is gone fetches the copy first and
//! checks it against the recorded size and SHA-256.
//! Invariant: the copy never changes the local backup: a failed upload leaves it
//! `completed` and restorable, and only a verified upload is recorded `uploaded`.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use tokio::sync::Semaphore;

use crate::{
    clock,
    config::S3Config,
    error::{Error, Result},
    projects,
    s3::{self, ObjectStore},
    store,
};

use super::{archive, Backup, BackupStatus, Backups};

pub use crate::model::backup::{RemoteCopy, RemoteStatus};

/// The bucket and the bookkeeping of uploads; present when `[backups.s3]` is enabled.
#[derive(Debug)]
pub struct Uploader {
    store: ObjectStore,
    prefix: String,
    retry_interval: Duration,
    /// One upload at a time, so a large copy does not take all of the server's bandwidth.
    slots: Semaphore,
    /// Backups being uploaded now, so the retry pass never starts a second upload of one.
    in_flight: Mutex<HashSet<String>>,
}

impl Uploader {
    /// `None` when uploads are off.
    pub fn from_config(config: &S3Config) -> std::result::Result<Option<Self>, String> {
        if !config.enabled {
            return Ok(None);
        }
        Ok(Some(Self {
            store: ObjectStore::new(config)?,
            prefix: config.prefix.clone(),
            retry_interval: Duration::from_secs(config.retry_interval_secs),
            slots: Semaphore::new(1),
            in_flight: Mutex::new(HashSet::new()),
        }))
    }

    /// The object key of a backup file (`<prefix><project id>/<backup id>.<ext>`).
    pub fn key_for(&self, relative_file: &str) -> String {
        format!("{}{relative_file}", self.prefix)
    }

    pub fn bucket(&self) -> &str {
        self.store.bucket_name()
    }
}

/// Marks a backup as being uploaded for as long as it lives.
struct InFlight<'a> {
    uploader: &'a Uploader,
    id: String,
}

impl<'a> InFlight<'a> {
    fn claim(uploader: &'a Uploader, id: &str) -> Option<Self> {
        let mut set = uploader.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(id.to_owned()).then(|| Self {
            uploader,
            id: id.to_owned(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.uploader
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Backups {
    /// The key a newly completed backup's copy gets; `None` when uploads are off.
    pub(super) fn key_for(&self, relative_file: &str) -> Option<String> {
        self.uploads.as_ref().map(|u| u.key_for(relative_file))
    }

    /// Uploads a completed backup in the background (when uploads are on).
    pub(super) fn spawn_upload(&self, backup_id: String) {
        if self.uploads.is_none() {
            return;
        }
        let backups = self.clone();
        tokio::spawn(async move { backups.upload(&backup_id).await });
    }

    /// Uploads one backup whose copy is pending or failed, verifies it, and records the
    /// outcome; does nothing when another upload of it is under way.
    pub async fn upload(&self, backup_id: &str) {
        let Some(uploader) = self.uploads.as_ref() else {
            return;
        };
        let Some(_claim) = InFlight::claim(uploader, backup_id) else {
            return;
        };
        let _slot = uploader.slots.acquire().await;
        let id = backup_id.to_owned();
        let backup = match self
            .store
            .call(move |c| store::backups::by_id(c, &id))
            .await
        {
            Ok(Some(backup)) => backup,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(backup = backup_id, error = %err, "reading a backup to upload");
                return;
            }
        };
        let (Some(remote), Some(file)) = (&backup.remote, &backup.file) else {
            return;
        };
        if remote.status == RemoteStatus::Uploaded || backup.status != BackupStatus::Completed {
            return;
        }
        let path = self.backups_dir.join(file);
        let started = std::time::Instant::now();
        let outcome = copy(uploader, &path, &backup, &remote.key).await;
        match &outcome {
            Ok(()) => tracing::info!(
                backup = %backup.id,
                bucket = uploader.bucket(),
                key = %remote.key,
                bytes = backup.size_bytes.unwrap_or_default(),
                millis = started.elapsed().as_millis() as u64,
                "backup uploaded and verified"
            ),
            Err(reason) => tracing::warn!(
                backup = %backup.id,
                bucket = uploader.bucket(),
                key = %remote.key,
                reason = %reason,
                "backup upload failed; the local backup is kept and the upload will be retried"
            ),
        }
        if let Err(err) = self.record(&backup, outcome).await {
            tracing::error!(backup = %backup.id, error = %err, "recording a backup upload");
        }
    }

    /// Records an attempt on the backup; a change of status is audited (a failure repeated by
    /// retries is not, so the audit log keeps one line per outcome, not one per retry).
    async fn record(
        &self,
        backup: &Backup,
        outcome: std::result::Result<(), String>,
    ) -> Result<()> {
        let project = projects::get_unscoped(&self.store, backup.project_id.clone()).await?;
        let (status, error) = match outcome {
            Ok(()) => (RemoteStatus::Uploaded, None),
            Err(reason) => (RemoteStatus::Failed, Some(reason)),
        };
        let id = backup.id.clone();
        let now = clock::now();
        // Only a change of the copy's status is audited, which the transaction finds out.
        let audit = {
            let id = id.clone();
            move |before: &Option<RemoteStatus>| {
                if !before.is_some_and(|before| before != status) {
                    return Vec::new();
                }
                let action = match status {
                    RemoteStatus::Uploaded => "backup.upload",
                    RemoteStatus::Failed | RemoteStatus::Pending => "backup.upload.failed",
                };
                vec![store::Audit::by_daemon(
                    &project.account_id,
                    "uploader",
                    action,
                    &id,
                )]
            }
        };
        self.store
            .write_audited(audit, move |tx| {
                store::backups::record_upload(tx, &id, status, error.as_deref(), &now)
            })
            .await?;
        Ok(())
    }

    /// Retries pending and failed uploads: once at start (uploads a stop interrupted), then
    /// every `retry_interval_secs`, until `stopped`.
    pub async fn run_retries(self, stopped: impl std::future::Future<Output = ()>) {
        let Some(interval) = self.uploads.as_ref().map(|u| u.retry_interval) else {
            return;
        };
        tokio::pin!(stopped);
        loop {
            // A stop drops an upload under way; it stays pending or failed for the next start.
            tokio::select! {
                _ = self.retry_due() => {}
                _ = &mut stopped => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = &mut stopped => break,
            }
        }
    }

    async fn retry_due(&self) {
        let due = match self.store.call(|c| store::backups::uploads_due(c)).await {
            Ok(due) => due,
            Err(err) => {
                tracing::warn!(error = %err, "listing backup uploads to retry");
                return;
            }
        };
        for id in due {
            self.upload(&id).await;
        }
    }

    /// Makes sure a completed backup's file is on disk. When it is missing and the backup has
    /// an uploaded copy, the copy is downloaded under a temporary name, checked against the
    /// recorded size and SHA-256, and renamed into place. Without a copy this does nothing:
    /// the caller's own check reports the missing file.
    pub(super) async fn ensure_local_file(&self, backup: &Backup, path: &Path) -> Result<()> {
        if tokio::fs::try_exists(path).await.unwrap_or(false) {
            return Ok(());
        }
        let Some(remote) = backup
            .remote
            .as_ref()
            .filter(|r| r.status == RemoteStatus::Uploaded)
        else {
            return Ok(());
        };
        let Some(uploader) = self.uploads.as_ref() else {
            return Err(Error::Conflict(format!(
                "the file of backup `{}` is missing, and its copy in S3 cannot be fetched while [backups.s3] is off",
                backup.id
            )));
        };
        let partial: PathBuf = path.with_file_name(format!(".{}.download", backup.id));
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|err| Error::Internal(format!("creating the backups directory: {err}")))?;
        }
        let fetched = async {
            uploader
                .store
                .download(&remote.key, &partial)
                .await
                .map_err(|err| {
                    Error::Conflict(format!(
                        "the file of backup `{}` is missing and fetching its copy from S3 failed: {err}",
                        backup.id
                    ))
                })?;
            archive::verify(&partial, backup).await?;
            let (from, to) = (partial.clone(), path.to_owned());
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::rename(&from, &to)?;
                if let Some(dir) = to.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            })
            .await
            .map_err(|err| Error::Internal(err.to_string()))?
            .map_err(|err| Error::Internal(format!("placing a fetched backup: {err}")))
        }
        .await;
        if fetched.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        } else {
            tracing::info!(backup = %backup.id, key = %remote.key, "fetched a backup's missing file from its copy in S3");
        }
        fetched
    }

    /// Deletes the copy of a backup retention prunes (best effort: a failure is logged, and
    /// the bucket's own lifecycle rules are the backstop).
    pub(super) async fn delete_copy(&self, backup: &Backup) {
        let (Some(uploader), Some(remote)) = (self.uploads.as_ref(), backup.remote.as_ref()) else {
            return;
        };
        if let Err(err) = uploader.store.delete(&remote.key).await {
            tracing::warn!(backup = %backup.id, key = %remote.key, error = %err, "deleting a pruned backup's copy in S3");
        }
    }
}

async fn copy(
    uploader: &Uploader,
    path: &Path,
    backup: &Backup,
    key: &str,
) -> std::result::Result<(), String> {
    let part_size = uploader.store.part_size();
    let digest_path = path.to_owned();
    let digest = tokio::task::spawn_blocking(move || s3::digest_file(&digest_path, part_size))
        .await
        .map_err(|err| format!("internal error: {err}"))?
        .map_err(|err| format!("cannot read the backup file: {err}"))?;
    // The file is read again for the upload; this pass also makes sure what goes up is
    // what the backup recorded.
    if Some(digest.size as i64) != backup.size_bytes
        || Some(&digest.sha256) != backup.sha256.as_ref()
    {
        return Err(
            "the backup file no longer matches its recorded size and SHA-256 (altered or damaged); it was not uploaded"
                .to_owned(),
        );
    }
    uploader
        .store
        .put_file(key, path, &digest)
        .await
        .map_err(|err| err.to_string())?;
    uploader
        .store
        .verify(key, &digest)
        .await
        .map_err(|err| format!("verifying the upload: {err}"))?;
    Ok(())
}

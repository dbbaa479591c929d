//! `cantila admin backup`: a state backup taken by the CLI straight on the data directory,
//! beside a running daemon (the store snapshot reads on its own connection), uploaded to
//! S3 and verified before the command exits.

use std::path::PathBuf;

use anyhow::Context;

use crate::{
    api::state_backups::StateBackupView,
    config::Config,
    state_backup::{
        StateBackupStatus, StateBackupTrigger, StateBackups, StateBackupsParts, StateRemoteStatus,
    },
    store::Store,
};

pub fn backup(
    config: &Config,
    store: Store,
    out: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    // The record keeps the path, and a bare name would read as one under state-backups/.
    let out = out
        .map(|path| std::path::absolute(&path).with_context(|| format!("--out {}", path.display())))
        .transpose()?;
    let service = StateBackups::new(StateBackupsParts {
        store,
        data_dir: config.data_dir.clone(),
        config: config.state_backup.clone(),
        config_file: config.file.clone(),
        s3: config.backups.s3.clone(),
    })
    .map_err(|err| anyhow::anyhow!("config: {err}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let backup = runtime.block_on(service.run(StateBackupTrigger::Manual, out))?;
    let path = backup.file.as_deref().map(|file| {
        if file.contains(std::path::MAIN_SEPARATOR) {
            PathBuf::from(file)
        } else {
            service.dir().join(file)
        }
    });
    let note = service.unencrypted_note();
    let bucket = service.bucket().map(str::to_owned);
    if json {
        let mut value = serde_json::to_value(StateBackupView::new(backup.clone(), &note))?;
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "path".to_owned(),
                serde_json::json!(path.as_ref().map(|p| p.display().to_string())),
            );
            object.insert("bucket".to_owned(), serde_json::json!(bucket));
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if backup.status == StateBackupStatus::Completed {
        println!("state backup {} completed", backup.id);
        if let Some(path) = &path {
            println!("file:      {}", path.display());
        }
        println!("size:      {} bytes", backup.size_bytes.unwrap_or_default());
        println!(
            "sha256:    {}",
            backup.sha256.as_deref().unwrap_or_default()
        );
        if backup.encrypted {
            println!("encrypted: yes");
        } else {
            println!("encrypted: no ({note})");
        }
        if let (Some(bucket), Some(key)) = (&bucket, &backup.remote_key) {
            match backup.remote_status {
                StateRemoteStatus::Uploaded => {
                    println!("s3:        s3://{bucket}/{key} (uploaded and verified)")
                }
                StateRemoteStatus::None
                | StateRemoteStatus::Pending
                | StateRemoteStatus::Failed => {
                    println!("s3:        s3://{bucket}/{key} (not uploaded)")
                }
            }
        }
    }
    match (backup.status, backup.remote_status) {
        (StateBackupStatus::Completed, StateRemoteStatus::Failed) => anyhow::bail!(
            "the copy to S3 failed: {}; the local archive is kept and the daemon retries the upload",
            backup.remote_error.as_deref().unwrap_or("unknown")
        ),
        (StateBackupStatus::Completed, _) => Ok(()),
        (StateBackupStatus::Failed | StateBackupStatus::Running, _) => anyhow::bail!(
            "state backup {} failed: {}",
            backup.id,
            backup.error.as_deref().unwrap_or("unknown")
        ),
    }
}

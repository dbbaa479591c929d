//! Backups and restores of add-ons (services of kind `addon`) with the engine's own tools,
//! run inside the add-on's running container (`services::addons` says which): the dump's
//! stdout streams into the backup file, a restore streams the file into the tool's stdin.
//! An engine restored offline (Redis, whose append-only files win over a dump at start)
//! is stopped, its data replaced through a helper container on its volume, and started
//! again, under the project lock that keeps the services reconciler off it meanwhile.
//! Invariant: no password is on a command line (the tools read the container's env), and
//! a backup whose tool exits non-zero leaves no file behind.

use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    error::{Error, Result},
    projects::Project,
    runtime::{ExecSpec, Runtime, TerminalOutput, TerminalSession},
    services::addons::{self, AddonData, Restore},
};

use super::{
    archive::{self, Written},
    Backup, Backups,
};

/// How much of a failing tool's stderr a backup's error keeps.
const STDERR_KEPT: usize = 4096;

impl Backups {
    /// Dumps an add-on into the backup's file.
    pub(super) async fn dump_addon(
        &self,
        project: &Project,
        backup: &Backup,
        addon: &AddonData,
        dir: &Path,
    ) -> Result<Written> {
        let (Some(command), Some(extension)) = (
            addons::dump_command(addon.engine),
            addons::backup_extension(addon.engine),
        ) else {
            return Err(Error::Invalid(format!(
                "a {} add-on holds no data to back up",
                addon.engine
            )));
        };
        let container = running(addon)?;
        let engine = self.engine().await?;
        let partial = archive::partial_path(dir, backup);
        let outcome = exec_into_file(&engine, container, command, &partial).await;
        if let Err(err) = outcome {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(err);
        }
        archive::seal_file(partial, project, backup, extension).await
    }

    /// Writes a verified backup back into its add-on.
    pub(super) async fn restore_addon(
        &self,
        project: &Project,
        addon: &AddonData,
        file: &Path,
    ) -> Result<()> {
        let engine = self.engine().await?;
        match addons::restore(addon.engine) {
            None => Err(Error::Invalid(format!(
                "a {} add-on has no data to restore",
                addon.engine
            ))),
            Some(Restore::Stdin(command)) => {
                exec_from_file(&engine, running(addon)?, command, file).await
            }
            Some(Restore::Offline { upload, command }) => {
                let volume = addon.volume.clone().ok_or_else(|| {
                    Error::Internal(format!("a {} add-on without a volume", addon.engine))
                })?;
                self.restore_offline(&engine, project, addon, &volume, upload, command, file)
                    .await
            }
        }
    }

    /// Stops the add-on, puts the backup on its volume as `upload`, runs `command` over the
    /// volume in a helper, and starts the add-on again, all under the project lock.
    #[allow(clippy::too_many_arguments)]
    async fn restore_offline(
        &self,
        engine: &Runtime,
        project: &Project,
        addon: &AddonData,
        volume: &str,
        upload: &str,
        command: Vec<String>,
        file: &Path,
    ) -> Result<()> {
        // The services' own lock: their reconciler leaves the stopped add-on alone.
        let _guard = self.services.hold(&project.id).await;
        let container = running(addon)?;
        let helper = archive::Helper::create(
            self,
            engine,
            project,
            &format!(
                "restore-{}",
                crate::ids::random_base62(6).to_ascii_lowercase()
            ),
            volume,
            archive::VOLUME_MOUNT,
            Some(command),
        )
        .await?;
        let tar = single_file_tar(file, upload).await?;
        let result = async {
            engine
                .stop(container, self.stop_grace_secs)
                .await
                .map_err(|err| Error::Invalid(format!("cannot stop the add-on: {err}")))?;
            let written = async {
                engine
                    .upload_tar(
                        &helper.id,
                        archive::VOLUME_MOUNT,
                        futures_util::stream::once(async move { Bytes::from(tar) }).boxed(),
                    )
                    .await
                    .map_err(|err| Error::Invalid(format!("writing the backup: {err}")))?;
                engine.start_again(&helper.id).await?;
                let code = engine.wait(&helper.id).await?;
                if code != 0 {
                    let logs = engine.tail_logs(&helper.id, 5).await.unwrap_or_default();
                    return Err(Error::Invalid(format!(
                        "replacing the add-on's data failed (exit code {code}): {}",
                        logs.join(" / ")
                    )));
                }
                Ok(())
            }
            .await;
            // Started again whatever happened: a failed restore leaves the data as it was.
            let started = engine.start_again(container).await;
            written?;
            started.map_err(|err| Error::Invalid(format!("cannot start the add-on again: {err}")))
        }
        .await;
        helper.remove().await;
        result
    }
}

/// The add-on's running container: a stopped add-on can neither be dumped nor restored.
fn running(addon: &AddonData) -> Result<&str> {
    addon.container.as_deref().ok_or_else(|| {
        Error::Conflict(format!(
            "add-on `{}` has no running container (it is stopped or still starting); start it and retry",
            addon.name
        ))
    })
}

/// A tar holding `file` as `name`, for the engine's archive upload.
async fn single_file_tar(file: &Path, name: &str) -> Result<Vec<u8>> {
    let (file, name) = (file.to_owned(), name.to_owned());
    tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let io = |err: std::io::Error| Error::Internal(format!("building an archive: {err}"));
        let data = std::fs::read(&file).map_err(io)?;
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, &name, data.as_slice())
            .map_err(io)?;
        builder.into_inner().map_err(io)
    })
    .await
    .map_err(|err| Error::Internal(err.to_string()))?
}

/// Starts `command` (without a terminal) in the add-on's container; `what` names it in the
/// error when the engine refuses.
async fn start_exec(
    engine: &Runtime,
    container: &str,
    command: Vec<String>,
    what: &str,
) -> Result<TerminalSession> {
    engine
        .exec(
            container,
            &ExecSpec {
                command,
                tty: false,
                size: None,
            },
        )
        .await
        .map_err(|err| Error::Invalid(format!("cannot run {what} in the add-on: {err}")))
}

/// Runs `command` in the container, its stdout written to `path`; a non-zero exit is an
/// error carrying the end of its stderr.
async fn exec_into_file(
    engine: &Runtime,
    container: &str,
    command: Vec<String>,
    path: &Path,
) -> Result<()> {
    let session = start_exec(engine, container, command, "the backup").await?;
    let mut input = session.input;
    // Nothing is read from stdin: closing it at once ends any tool that would wait on it.
    let _ = input.shutdown().await;
    let mut out = tokio::fs::File::create(path)
        .await
        .map_err(|err| Error::Internal(format!("creating a backup file: {err}")))?;
    let mut stderr = Vec::new();
    let mut output = session.output;
    while let Some(piece) = output.next().await {
        match piece? {
            TerminalOutput::Stdout(bytes) => out.write_all(&bytes).await.map_err(|err| {
                if crate::error::is_storage_full(&err) {
                    Error::storage_full()
                } else {
                    Error::Internal(format!("writing a backup file: {err}"))
                }
            })?,
            TerminalOutput::Stderr(bytes) => keep_tail(&mut stderr, &bytes),
        }
    }
    out.flush()
        .await
        .map_err(|err| Error::Internal(format!("writing a backup file: {err}")))?;
    check_exit(session.exit.await?, "the backup", &stderr)
}

/// Runs `command` in the container with `file` on its stdin.
async fn exec_from_file(
    engine: &Runtime,
    container: &str,
    command: Vec<String>,
    file: &Path,
) -> Result<()> {
    let session = start_exec(engine, container, command, "the restore").await?;
    let mut input = session.input;
    let mut source = tokio::fs::File::open(file)
        .await
        .map_err(|err| Error::Internal(format!("reading a backup: {err}")))?;
    // Written and read at once: a tool that reports as it reads would otherwise block.
    let feed = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = source.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            input.write_all(&buffer[..n]).await?;
        }
        input.shutdown().await
    };
    let mut stderr = Vec::new();
    let drain = async {
        let mut output = session.output;
        while let Some(piece) = output.next().await {
            match piece {
                Ok(TerminalOutput::Stderr(bytes) | TerminalOutput::Stdout(bytes)) => {
                    keep_tail(&mut stderr, &bytes)
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    };
    let (fed, drained) = tokio::join!(feed, drain);
    drained?;
    let code = session.exit.await?;
    // A tool that failed early stops reading: its exit code says more than the broken pipe.
    check_exit(code, "the restore", &stderr)?;
    fed.map_err(|err| Error::Invalid(format!("sending the backup to the add-on: {err}")))
}

fn keep_tail(kept: &mut Vec<u8>, bytes: &[u8]) {
    kept.extend_from_slice(bytes);
    if kept.len() > STDERR_KEPT {
        kept.drain(..kept.len() - STDERR_KEPT);
    }
}

fn check_exit(code: i64, what: &str, stderr: &[u8]) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let detail = lines[lines.len().saturating_sub(3)..].join(" / ");
    Err(Error::Invalid(format!(
        "{what} failed in the add-on (exit code {code}): {detail}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_the_last_stderr_lines() {
        assert!(check_exit(0, "the backup", b"noise").is_ok());
        let err = check_exit(1, "the backup", b"a\n\nb\nc\nd\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the backup failed in the add-on (exit code 1): b / c / d"
        );
        let mut kept = Vec::new();
        keep_tail(&mut kept, &vec![b'x'; STDERR_KEPT]);
        keep_tail(&mut kept, b"end");
        assert_eq!(kept.len(), STDERR_KEPT);
        assert!(kept.ends_with(b"end"));
    }
}

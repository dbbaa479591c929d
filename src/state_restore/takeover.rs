//! The takeover guard at daemon start: a data directory a restore just wrote may sit on the
//! same container engine as the original installation, still running under the same
//! installation id; two daemons driving one set of containers would fight over them. So the
//! first start after a restore looks for the id's containers and refuses unless told to
//! take over (`cantila serve --take-over`, `CANTILA_TAKE_OVER=1`).
//! Invariant: `restored.json` becomes `restored-done.json` only once a start got past the
//! guard, so every start until then is checked.

use std::path::Path;

use crate::{labels::Filter, runtime::Runtime};

use super::{RESTORED, RESTORED_DONE};

/// Why the daemon refuses to start on a freshly restored data directory.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error(
        "this data directory was restored from a state backup, and the container engine already \
         has {count} container(s) ({running} running) of installation `{installation}`: the \
         original server may still be running them. Stop the original installation first, or \
         start with `cantila serve --take-over` (or CANTILA_TAKE_OVER=1) to adopt them"
    )]
    Refused {
        count: usize,
        running: usize,
        installation: String,
    },
    #[error(
        "this data directory was restored from a state backup, and the container engine cannot \
         be asked whether the original installation `{installation}` still runs there ({reason}); \
         start the engine, or start with `cantila serve --take-over` (or CANTILA_TAKE_OVER=1)"
    )]
    EngineUnreachable {
        installation: String,
        reason: String,
    },
    #[error("marking the restore as started ({path}): {source}")]
    Marker {
        path: String,
        source: std::io::Error,
    },
}

/// Runs the guard; returns whether this start is the first after a restore (the
/// composition root hands that on, so what should run is rebuilt). Without `restored.json`
/// it does nothing and returns `false`.
pub async fn check_at_start(
    data_dir: &Path,
    installation: &str,
    runtime: &Runtime,
    take_over: bool,
) -> Result<bool, TakeoverError> {
    let marker = data_dir.join(RESTORED);
    if !tokio::fs::try_exists(&marker).await.unwrap_or(false) {
        return Ok(false);
    }
    match runtime
        .containers_matching(&Filter::new().installation(installation))
        .await
    {
        Ok(containers) if containers.is_empty() => {}
        Ok(containers) => {
            let count = containers.len();
            let running = containers.iter().filter(|c| c.state == "running").count();
            if !take_over {
                return Err(TakeoverError::Refused {
                    count,
                    running,
                    installation: installation.to_owned(),
                });
            }
            tracing::warn!(
                installation,
                containers = count,
                running,
                "taking over the containers of the restored installation (--take-over)"
            );
        }
        Err(err) if take_over => {
            tracing::warn!(installation, error = %err, "cannot list the engine's containers; starting anyway (--take-over)");
        }
        Err(err) => {
            return Err(TakeoverError::EngineUnreachable {
                installation: installation.to_owned(),
                reason: err.to_string(),
            })
        }
    }
    let done = data_dir.join(RESTORED_DONE);
    let renamed = {
        let (marker, done, dir) = (marker.clone(), done.clone(), data_dir.to_owned());
        tokio::task::spawn_blocking(move || {
            std::fs::rename(&marker, &done)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())))
    };
    renamed.map_err(|source| TakeoverError::Marker {
        path: marker.display().to_string(),
        source,
    })?;
    tracing::info!(
        installation,
        "first start after a restore from a state backup"
    );
    Ok(true)
}

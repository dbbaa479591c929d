//! Restoring Cantila's own state from a state backup (`cantila admin restore`) onto an
//! empty data directory, and the guard the first start after it passes (`takeover`).
//! Invariant: a restore that fails at any step leaves the data directory exactly as it was
//! (everything is staged beside it and renamed in, `cantila.db` last; see `target`).

mod run;
pub mod source;
pub mod takeover;
pub mod target;

use std::path::PathBuf;

use crate::state_backup::StateBackupError;

pub use run::{restore, RestoreRequest, Restored};
pub use source::{S3Object, Source};
pub use takeover::{check_at_start, TakeoverError};

/// Written by a restore into the data directory; its presence makes the next start run
/// the takeover guard.
pub const RESTORED: &str = "restored.json";
/// What `RESTORED` is renamed to once a start got past the guard.
pub const RESTORED_DONE: &str = "restored-done.json";
/// The config file the backed-up daemon was started with, when the archive carries one.
pub const RESTORED_CONFIG: &str = "restored-config.toml";

/// Why a restore did not happen. Every variant leaves the data directory as it was.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "refusing to restore into {data_dir}: it already holds {}; a restore needs a data \
         directory without state (a new server, or move this one aside first)",
        found.join(", ")
    )]
    NotEmpty {
        data_dir: PathBuf,
        found: Vec<String>,
    },
    #[error("{0}")]
    Source(String),
    #[error("{0}")]
    S3(String),
    /// The archive could not be opened: a wrong or missing passphrase, a damaged file.
    #[error("{0}")]
    Archive(#[from] StateBackupError),
    #[error("{0}")]
    Database(String),
    #[error("{0}")]
    SecretKey(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl RestoreError {
    pub(crate) fn io(what: String, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }
}

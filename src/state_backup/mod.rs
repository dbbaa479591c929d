//! Backups of Cantila's own state: the store, the installation id and, with a passphrase,
//! the sealing key, the certificates and the config file, in one archive per backup
//! (`archive`), encrypted when a passphrase is set (`sealed`); taken, recorded, copied
//! to S3 (`remote`), pruned and scheduled by `StateBackups` (`service`).
//! Invariant: `secret.key` and private keys are only ever written into an encrypted
//! archive; an unencrypted one leaves them out and says so in its manifest.

pub mod archive;
pub mod remote;
mod sealed;
mod service;

pub use crate::model::state_backup::{
    StateBackup, StateBackupStatus, StateBackupTrigger, StateRemoteStatus,
};
pub use service::{StateBackups, StateBackupsParts};

use crate::error::Error;

/// A failure of a state backup or of opening one. Messages are lowercase sentences for
/// the operator; none of them carries the passphrase or a secret.
#[derive(Debug, thiserror::Error)]
pub enum StateBackupError {
    /// The passphrase's source (environment, file) is unusable.
    #[error("{0}")]
    Passphrase(String),
    /// The archive is encrypted and no passphrase was given.
    #[error(
        "the archive is encrypted: set CANTILA_STATE_BACKUP_PASSPHRASE (or [state_backup] \
         passphrase_file) to the passphrase it was made with"
    )]
    PassphraseNeeded,
    /// The passphrase does not open the archive.
    #[error("wrong passphrase: the archive was encrypted with another one")]
    WrongPassphrase,
    /// The archive is truncated, altered, or lacks a member its manifest lists.
    #[error("the archive is damaged: {0}")]
    Damaged(String),
    /// The archive was written by a newer Cantila.
    #[error(
        "the archive has format {found}, newer than this binary reads ({known}); \
         use a newer Cantila"
    )]
    UnsupportedFormat { found: u32, known: u32 },
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The store failed (taking the database's snapshot, recording the backup).
    #[error(transparent)]
    Domain(#[from] Error),
}

impl StateBackupError {
    /// Wraps an I/O failure with what was being done, for `map_err`.
    pub fn io(what: &str) -> impl Fn(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            what: what.to_owned(),
            source,
        }
    }
}

/// The API's view of a state backup failure: the operator's mistakes are 4xx, the rest
/// is the server's.
impl From<StateBackupError> for Error {
    fn from(err: StateBackupError) -> Self {
        match err {
            // The server's own setting is wrong: not the client's doing, but shown so the
            // operator reading the answer can fix it.
            StateBackupError::Passphrase(_) => Error::Conflict(err.to_string()),
            StateBackupError::PassphraseNeeded | StateBackupError::WrongPassphrase => {
                Error::Invalid(err.to_string())
            }
            StateBackupError::Damaged(_) | StateBackupError::UnsupportedFormat { .. } => {
                Error::Conflict(err.to_string())
            }
            StateBackupError::Io { ref source, .. } if crate::error::is_storage_full(source) => {
                Error::storage_full()
            }
            StateBackupError::Io { .. } => Error::Internal(err.to_string()),
            StateBackupError::Domain(err) => err,
        }
    }
}

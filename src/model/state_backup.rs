//! State backups as stored: one archive of Cantila's own state, its outcome and its copy
//! in S3.

/// A state backup runs, completes or fails as a project backup does (the same three
/// names in its column).
pub use super::backup::BackupStatus as StateBackupStatus;

/// Why a state backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBackupTrigger {
    /// `cantila admin backup` or `POST /v1/admin/state-backups`.
    Manual,
    /// `[state_backup] schedule`.
    Scheduled,
}

impl StateBackupTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Scheduled => "scheduled",
        }
    }

    pub fn parse(value: &str) -> Self {
        match value {
            "scheduled" => Self::Scheduled,
            _ => Self::Manual,
        }
    }
}

/// Where the copy in S3 stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRemoteStatus {
    /// No copy is wanted (`[backups.s3]` is off, or the backup failed).
    None,
    Pending,
    Uploaded,
    Failed,
}

impl StateRemoteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Uploaded => "uploaded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Self {
        match value {
            "pending" => Self::Pending,
            "uploaded" => Self::Uploaded,
            "failed" => Self::Failed,
            _ => Self::None,
        }
    }
}

/// One state backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateBackup {
    /// `sb_...`.
    pub id: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub status: StateBackupStatus,
    pub error: Option<String>,
    pub trigger: StateBackupTrigger,
    /// The archive's file name under `<data_dir>/state-backups/`.
    pub file: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub encrypted: bool,
    pub remote_status: StateRemoteStatus,
    pub remote_key: Option<String>,
    pub remote_error: Option<String>,
}

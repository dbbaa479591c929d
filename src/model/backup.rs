//! Backups as stored: a backup of a project's database or volume, its remote copy, and a
//! project's schedule.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    Database,
    Volume,
    /// An add-on's data, dumped with its engine's own tools.
    Service,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Volume => "volume",
            Self::Service => "service",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupStatus {
    Running,
    Completed,
    Failed,
}

impl BackupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Self {
        match value {
            "running" => Self::Running,
            "completed" => Self::Completed,
            _ => Self::Failed,
        }
    }
}

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `POST /backups`.
    Manual,
    /// The project's schedule; the only kind retention prunes.
    Scheduled,
    /// Taken before a restore overwrites the data.
    Safety,
    /// Taken before the database is deleted.
    Final,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Scheduled => "scheduled",
            Self::Safety => "safety",
            Self::Final => "final",
        }
    }
}

/// What a backup copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Database,
    Volume(String),
    /// An add-on, by its service name.
    Service(String),
}

#[derive(Debug, Clone)]
pub struct Backup {
    pub id: String,
    pub project_id: String,
    pub kind: BackupKind,
    /// The database's name, the volume's name or the add-on's service name.
    pub subject: String,
    /// `postgres` or `sqlite` for database backups; the add-on's engine (`redis`,
    /// `postgres`, `mariadb`) for service backups.
    pub engine: Option<String>,
    pub trigger: String,
    pub status: BackupStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// The file, relative to the backups directory.
    pub file: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub restored_at: Option<String>,
    /// The copy in S3-compatible storage; `None` when none was asked for (uploads off).
    pub remote: Option<RemoteCopy>,
}

impl Backup {
    pub fn target(&self) -> Target {
        match self.kind {
            BackupKind::Database => Target::Database,
            BackupKind::Volume => Target::Volume(self.subject.clone()),
            BackupKind::Service => Target::Service(self.subject.clone()),
        }
    }
}

/// A project's backup schedule and the outcome of its last run.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub project_id: String,
    pub schedule: String,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    /// Set through the API (true) or following the configured default (false).
    pub explicit: bool,
    pub updated_at: String,
    pub last_run_at: Option<String>,
    /// `completed` or `failed`.
    pub last_status: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteStatus {
    /// Asked for and not yet tried, or interrupted by a stop.
    Pending,
    /// Uploaded and verified.
    Uploaded,
    /// The last attempt failed; retried on the timer.
    Failed,
}

impl RemoteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Uploaded => "uploaded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Self {
        match value {
            "uploaded" => Self::Uploaded,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// The remote copy of one backup.
#[derive(Debug, Clone)]
pub struct RemoteCopy {
    pub status: RemoteStatus,
    /// The object's key in the bucket.
    pub key: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub attempts: u32,
    pub attempted_at: Option<String>,
    pub uploaded_at: Option<String>,
}

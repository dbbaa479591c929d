//! A project's database as stored: its engine and where it lives (the password sealed).

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseEngine {
    Postgres,
    Sqlite,
}

impl DatabaseEngine {
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "postgres" => Ok(Self::Postgres),
            "sqlite" => Ok(Self::Sqlite),
            other => Err(Error::Invalid(format!(
                "engine `{other}` is unknown; use `postgres` or `sqlite`"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// The stored record of a project's database.
#[derive(Debug, Clone)]
pub struct DatabaseRecord {
    pub project_id: String,
    pub engine: DatabaseEngine,
    /// The server as the daemon reaches it (postgres only).
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The database name (postgres) or file name (sqlite).
    pub name: String,
    /// The role (postgres only).
    pub user: Option<String>,
    pub sealed_password: Option<Vec<u8>>,
    /// The volume holding the file (sqlite only).
    pub volume: Option<String>,
    pub created_at: String,
}

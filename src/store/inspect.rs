//! Looks at a database file that is not (yet) the store: a copy taken out of a state backup,
//! before a restore moves it into a data directory. Reads only; never migrates, so a copy
//! that fails a check is left exactly as it came out of the archive.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::migrations::LATEST;

/// What a restore shows and checks of a database copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySummary {
    /// `user_version`: the schema step the copy was written at (never above `LATEST`).
    pub schema_version: i64,
    /// Every account's handle, in order.
    pub accounts: Vec<String>,
    /// Every project as `(account handle, project name)`, in order.
    pub projects: Vec<(String, String)>,
    /// One sealed value from the copy (an env variable's), so the caller can prove the
    /// `secret.key` it is about to install opens the copy's secrets; `None` when the copy
    /// holds no env variable.
    pub sealed_sample: Option<Vec<u8>>,
}

/// Why a copy is not fit to become the store.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("the database {path} is missing from the archive")]
    Missing { path: PathBuf },
    #[error("cannot read the database {path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error(
        "the database in the archive has schema version {found}, newer than this binary knows \
         ({known}); restore it with the Cantila version that made it, or a newer one"
    )]
    TooNew { found: i64, known: i64 },
    #[error("the database in the archive fails SQLite's integrity check: {0}")]
    Corrupt(String),
}

/// Opens the file at `path` (it must exist), checks its schema version is one this binary
/// knows and that `PRAGMA integrity_check` finds it sound, and reads what a restore prints.
pub fn inspect_copy(path: &Path) -> Result<CopySummary, InspectError> {
    if !path.is_file() {
        return Err(InspectError::Missing {
            path: path.to_owned(),
        });
    }
    let unreadable = |err: rusqlite::Error| InspectError::Unreadable {
        path: path.to_owned(),
        message: err.to_string(),
    };
    // Read-write without CREATE: a WAL-mode file needs its shared-memory file beside it
    // even to be read, and nothing here writes a page.
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unreadable)?;
    let schema_version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(unreadable)?;
    if schema_version > LATEST {
        return Err(InspectError::TooNew {
            found: schema_version,
            known: LATEST,
        });
    }
    let findings = {
        let mut statement = connection
            .prepare("PRAGMA integrity_check")
            .map_err(unreadable)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(unreadable)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(unreadable)?
    };
    if findings != ["ok"] {
        return Err(InspectError::Corrupt(findings.join("; ")));
    }
    let accounts = {
        let mut statement = connection
            .prepare("SELECT handle FROM accounts ORDER BY handle")
            .map_err(unreadable)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(unreadable)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(unreadable)?
    };
    let projects = {
        let mut statement = connection
            .prepare(
                "SELECT a.handle, p.name FROM projects p JOIN accounts a ON a.id = p.account_id
                 ORDER BY a.handle, p.name",
            )
            .map_err(unreadable)?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))
            .map_err(unreadable)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(unreadable)?
    };
    let sealed_sample = connection
        .query_row("SELECT value FROM env_vars LIMIT 1", [], |row| {
            row.get::<_, Vec<u8>>(0)
        })
        .map(Some)
        .or_else(|err| match err {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(unreadable(other)),
        })?;
    Ok(CopySummary {
        schema_version,
        accounts,
        projects,
        sealed_sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_file_passes_and_lists_its_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::Store::open(dir.path()).unwrap();
        store
            .call_blocking(|db| {
                db.execute(
                    "INSERT INTO accounts (id, handle, created_at) VALUES ('acc_1', 'ada', 'now')",
                    [],
                )?;
                Ok(())
            })
            .unwrap();
        store.close();
        drop(store);
        let summary = inspect_copy(&dir.path().join("cantila.db")).unwrap();
        assert_eq!(summary.schema_version, LATEST);
        assert_eq!(summary.accounts, ["ada"]);
        assert!(summary.projects.is_empty());
        assert_eq!(summary.sealed_sample, None);
    }

    #[test]
    fn a_newer_schema_a_missing_file_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.db");
        assert!(matches!(
            inspect_copy(&missing),
            Err(InspectError::Missing { .. })
        ));

        let newer = dir.path().join("newer.db");
        let connection = Connection::open(&newer).unwrap();
        connection
            .pragma_update(None, "user_version", LATEST + 1)
            .unwrap();
        drop(connection);
        let err = inspect_copy(&newer).unwrap_err();
        assert!(matches!(err, InspectError::TooNew { found, .. } if found == LATEST + 1));

        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
        assert!(matches!(
            inspect_copy(&garbage),
            Err(InspectError::Unreadable { .. })
        ));
    }
}

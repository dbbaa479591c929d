//! What a database file that is not (yet) the store holds, in the words a restore prints:
//! a copy taken out of a state backup, after `store::inspect` found it sound and before it
//! is moved into a data directory. Reads only; never migrates.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::Error;

/// The accounts and projects of a database copy, and one sealed value from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySummary {
    /// Every account's handle, in order.
    pub accounts: Vec<String>,
    /// Every project as `(account handle, project name)`, in order.
    pub projects: Vec<(String, String)>,
    /// One sealed value (an env variable's), so the caller can prove the `secret.key` it
    /// is about to install opens the copy's secrets; `None` when the copy has no env
    /// variable.
    pub sealed_sample: Option<Vec<u8>>,
}

/// Reads the summary of the database file at `path`, read-only. The file must be one
/// `store::inspect` accepted (a schema this binary knows).
pub fn summarize(path: &Path) -> Result<CopySummary, Error> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let accounts = connection
        .prepare("SELECT handle FROM accounts ORDER BY handle")?
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let projects = connection
        .prepare(
            "SELECT a.handle, p.name FROM projects p JOIN accounts a ON a.id = p.account_id
             ORDER BY a.handle, p.name",
        )?
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let sealed_sample =
        match connection.query_row("SELECT value FROM env_vars LIMIT 1", [], |row| {
            row.get::<_, Vec<u8>>(0)
        }) {
            Ok(value) => Some(value),
            Err(rusqlite::Error::QueryReturnedNoRows) => None,
            Err(err) => return Err(err.into()),
        };
    Ok(CopySummary {
        accounts,
        projects,
        sealed_sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_file_lists_its_accounts_projects_and_a_sealed_value() {
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
        let copy = dir.path().join("copy.db");
        store.snapshot_to(&copy).unwrap();
        let summary = summarize(&copy).unwrap();
        assert_eq!(summary.accounts, ["ada"]);
        assert!(summary.projects.is_empty());
        assert_eq!(summary.sealed_sample, None);
    }
}

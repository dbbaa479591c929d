//! SQL for alias hostnames. The hostname is the primary key: unique across all accounts.

use rusqlite::params;

use crate::error::{Error, Result};

use super::{is_unique_violation, Db};

#[derive(Debug, Clone)]
pub struct StoredAlias {
    pub hostname: String,
    pub project_id: String,
    pub created_at: String,
}

pub fn insert(db: &Db, alias: &StoredAlias) -> Result<()> {
    db.execute(
        "INSERT INTO aliases (hostname, project_id, created_at) VALUES (?1, ?2, ?3)",
        params![alias.hostname, alias.project_id, alias.created_at],
    )
    .map_err(|err| {
        if is_unique_violation(&err) {
            Error::Conflict(format!(
                "hostname `{}` is already attached to a project",
                alias.hostname
            ))
        } else {
            err.into()
        }
    })?;
    Ok(())
}

pub fn count_of_project(db: &Db, project_id: &str) -> Result<u32> {
    Ok(db.query_row(
        "SELECT COUNT(*) FROM aliases WHERE project_id = ?1",
        [project_id],
        |row| row.get(0),
    )?)
}

pub fn of_project(db: &Db, project_id: &str) -> Result<Vec<StoredAlias>> {
    let mut statement = db.prepare_cached(
        "SELECT hostname, project_id, created_at FROM aliases WHERE project_id = ?1 ORDER BY hostname",
    )?;
    let aliases = statement
        .query_map([project_id], |row| {
            Ok(StoredAlias {
                hostname: row.get(0)?,
                project_id: row.get(1)?,
                created_at: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(aliases)
}

pub fn all(db: &Db) -> Result<Vec<StoredAlias>> {
    let mut statement = db
        .prepare_cached("SELECT hostname, project_id, created_at FROM aliases ORDER BY hostname")?;
    let aliases = statement
        .query_map([], |row| {
            Ok(StoredAlias {
                hostname: row.get(0)?,
                project_id: row.get(1)?,
                created_at: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(aliases)
}

pub fn delete(db: &Db, project_id: &str, hostname: &str) -> Result<bool> {
    Ok(db.execute(
        "DELETE FROM aliases WHERE project_id = ?1 AND hostname = ?2",
        params![project_id, hostname],
    )? > 0)
}

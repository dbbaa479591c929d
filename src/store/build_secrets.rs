//! SQL for build secrets. Values are stored sealed (see `secrets`) and read back only by
//! the deploy that hands them to a build.

use rusqlite::params;

use crate::error::Result;

use super::Db;

/// A build secret's name and dates, without its value.
#[derive(Debug, Clone)]
pub struct SecretEntry {
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
}

pub fn names(db: &Db, project_id: &str) -> Result<Vec<SecretEntry>> {
    let mut statement = db.prepare_cached(
        "SELECT name, created_at, updated_at FROM build_secrets WHERE project_id = ?1 ORDER BY name",
    )?;
    let entries = statement
        .query_map([project_id], |row| {
            Ok(SecretEntry {
                name: row.get(0)?,
                created_at: row.get(1)?,
                updated_at: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(entries)
}

/// Every secret of the project as (name, sealed value), for a build.
pub fn sealed(db: &Db, project_id: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut statement = db.prepare_cached(
        "SELECT name, value FROM build_secrets WHERE project_id = ?1 ORDER BY name",
    )?;
    let entries = statement
        .query_map([project_id], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(entries)
}

/// Sets the secret; a new one gets `at` as its creation time, an existing one keeps its own.
pub fn upsert(db: &Db, project_id: &str, name: &str, sealed_value: &[u8], at: &str) -> Result<()> {
    db.execute(
        "INSERT INTO build_secrets (project_id, name, value, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (project_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        params![project_id, name, sealed_value, at],
    )?;
    Ok(())
}

pub fn count(db: &Db, project_id: &str) -> Result<usize> {
    Ok(db.query_row(
        "SELECT COUNT(*) FROM build_secrets WHERE project_id = ?1",
        [project_id],
        |row| row.get::<_, i64>(0),
    )? as usize)
}

pub fn delete(db: &Db, project_id: &str, name: &str) -> Result<bool> {
    Ok(db.execute(
        "DELETE FROM build_secrets WHERE project_id = ?1 AND name = ?2",
        params![project_id, name],
    )? > 0)
}

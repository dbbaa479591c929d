//! SQL for project env vars. Values are stored sealed (see `secrets`).

use rusqlite::params;

use crate::error::Result;

use super::Db;

/// One stored variable: key, sealed value, secret flag, last update.
#[derive(Debug, Clone)]
pub struct StoredVar {
    pub key: String,
    pub sealed_value: Vec<u8>,
    pub secret: bool,
    pub updated_at: String,
}

pub fn all(db: &Db, project_id: &str) -> Result<Vec<StoredVar>> {
    let mut statement = db.prepare_cached(
        "SELECT key, value, secret, updated_at FROM env_vars WHERE project_id = ?1 ORDER BY key",
    )?;
    let vars = statement
        .query_map([project_id], |row| {
            Ok(StoredVar {
                key: row.get(0)?,
                sealed_value: row.get(1)?,
                secret: row.get(2)?,
                updated_at: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(vars)
}

/// A project's variables and the sealed env its running release started with, read
/// together so a listing compares like with like.
pub fn with_running(db: &Db, project_id: &str) -> Result<(Vec<StoredVar>, Option<Vec<u8>>)> {
    Ok((
        all(db, project_id)?,
        super::deploys::running_env(db, project_id)?,
    ))
}

pub fn upsert(db: &Db, project_id: &str, var: &StoredVar) -> Result<()> {
    db.execute(
        "INSERT INTO env_vars (project_id, key, value, secret, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (project_id, key) DO UPDATE SET value = excluded.value, secret = excluded.secret, updated_at = excluded.updated_at",
        params![project_id, var.key, var.sealed_value, var.secret, var.updated_at],
    )?;
    Ok(())
}

pub fn delete(db: &Db, project_id: &str, key: &str) -> Result<bool> {
    Ok(db.execute(
        "DELETE FROM env_vars WHERE project_id = ?1 AND key = ?2",
        params![project_id, key],
    )? > 0)
}

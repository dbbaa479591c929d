//! SQL for state backups (`state_backups`): their records, outcomes and S3 copies.

use rusqlite::{params, OptionalExtension, Row};

use crate::{
    error::Result,
    model::state_backup::{StateBackup, StateBackupStatus, StateBackupTrigger, StateRemoteStatus},
};

use super::Db;

const COLUMNS: &str = "id, created_at, finished_at, status, error, trigger, file, size_bytes, sha256, encrypted, remote_status, remote_key, remote_error";

fn from_row(row: &Row<'_>) -> rusqlite::Result<StateBackup> {
    Ok(StateBackup {
        id: row.get(0)?,
        created_at: row.get(1)?,
        finished_at: row.get(2)?,
        status: StateBackupStatus::parse(&row.get::<_, String>(3)?),
        error: row.get(4)?,
        trigger: StateBackupTrigger::parse(&row.get::<_, String>(5)?),
        file: row.get(6)?,
        size_bytes: row.get(7)?,
        sha256: row.get(8)?,
        encrypted: row.get(9)?,
        remote_status: StateRemoteStatus::parse(&row.get::<_, String>(10)?),
        remote_key: row.get(11)?,
        remote_error: row.get(12)?,
    })
}

/// Records a state backup that has begun.
pub fn insert(db: &Db, backup: &StateBackup) -> Result<()> {
    db.execute(
        "INSERT INTO state_backups (id, created_at, status, trigger, encrypted)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            backup.id,
            backup.created_at,
            backup.status.as_str(),
            backup.trigger.as_str(),
            backup.encrypted
        ],
    )?;
    Ok(())
}

pub fn by_id(db: &Db, id: &str) -> Result<Option<StateBackup>> {
    Ok(db
        .query_row(
            &format!("SELECT {COLUMNS} FROM state_backups WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// All state backups, newest first.
pub fn list(db: &Db) -> Result<Vec<StateBackup>> {
    let mut statement = db.prepare(&format!(
        "SELECT {COLUMNS} FROM state_backups ORDER BY seq DESC"
    ))?;
    let rows = statement.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records the finished archive; with `remote_key`, its copy is `pending` upload there.
pub fn complete(
    db: &Db,
    id: &str,
    file: &str,
    size_bytes: i64,
    sha256: &str,
    at: &str,
    remote_key: Option<&str>,
) -> Result<()> {
    db.execute(
        "UPDATE state_backups SET status = 'completed', file = ?2, size_bytes = ?3, sha256 = ?4,
             finished_at = ?5,
             remote_status = CASE WHEN ?6 IS NULL THEN 'none' ELSE 'pending' END, remote_key = ?6
         WHERE id = ?1",
        params![id, file, size_bytes, sha256, at, remote_key],
    )?;
    Ok(())
}

pub fn fail(db: &Db, id: &str, reason: &str, at: &str) -> Result<()> {
    db.execute(
        "UPDATE state_backups SET status = 'failed', error = ?2, finished_at = ?3 WHERE id = ?1",
        params![id, reason, at],
    )?;
    Ok(())
}

/// Marks state backups left `running` by a process that stopped as failed.
pub fn fail_running(db: &Db, reason: &str, at: &str) -> Result<usize> {
    Ok(db.execute(
        "UPDATE state_backups SET status = 'failed', error = ?1, finished_at = ?2
         WHERE status = 'running'",
        params![reason, at],
    )?)
}

/// The outcome of an upload: `uploaded`, or `failed` with the reason.
pub fn record_upload(
    db: &Db,
    id: &str,
    status: StateRemoteStatus,
    error: Option<&str>,
) -> Result<()> {
    db.execute(
        "UPDATE state_backups SET remote_status = ?2, remote_error = ?3 WHERE id = ?1",
        params![id, status.as_str(), error],
    )?;
    Ok(())
}

/// Completed state backups whose copy is still to be (re)uploaded.
pub fn uploads_due(db: &Db) -> Result<Vec<StateBackup>> {
    let mut statement = db.prepare(&format!(
        "SELECT {COLUMNS} FROM state_backups
         WHERE remote_status IN ('pending', 'failed') AND status = 'completed' ORDER BY seq"
    ))?;
    let rows = statement.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// When the newest scheduled state backup began, if any did.
pub fn last_scheduled_at(db: &Db) -> Result<Option<String>> {
    Ok(db
        .query_row(
            "SELECT created_at FROM state_backups WHERE trigger = 'scheduled'
             ORDER BY seq DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()?)
}

pub fn delete(db: &Db, id: &str) -> Result<()> {
    db.execute("DELETE FROM state_backups WHERE id = ?1", [id])?;
    Ok(())
}

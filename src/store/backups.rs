//! SQL for backups, their schedules and the asset index of releases.

use rusqlite::{params, OptionalExtension, Row};

use crate::{
    error::Result,
    model::{
        asset::Asset,
        backup::{Backup, BackupKind, BackupStatus, RemoteCopy, RemoteStatus, Schedule},
    },
};

use super::Db;

const COLUMNS: &str = "seq, id, project_id, kind, subject, engine, trigger, status, error, file, size_bytes, sha256, started_at, finished_at, restored_at, remote_status, remote_key, remote_error, remote_attempts, remote_attempted_at, remote_uploaded_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<(i64, Backup)> {
    let kind: String = row.get(3)?;
    let status: String = row.get(7)?;
    let remote_status: Option<String> = row.get(15)?;
    let remote = match (remote_status, row.get::<_, Option<String>>(16)?) {
        (Some(status), Some(key)) => Some(RemoteCopy {
            status: RemoteStatus::parse(&status),
            key,
            error: row.get(17)?,
            attempts: row.get(18)?,
            attempted_at: row.get(19)?,
            uploaded_at: row.get(20)?,
        }),
        _ => None,
    };
    Ok((
        row.get(0)?,
        Backup {
            id: row.get(1)?,
            project_id: row.get(2)?,
            kind: match kind.as_str() {
                "database" => BackupKind::Database,
                "service" => BackupKind::Service,
                _ => BackupKind::Volume,
            },
            subject: row.get(4)?,
            engine: row.get(5)?,
            trigger: row.get(6)?,
            status: BackupStatus::parse(&status),
            error: row.get(8)?,
            file: row.get(9)?,
            size_bytes: row.get(10)?,
            sha256: row.get(11)?,
            started_at: row.get(12)?,
            finished_at: row.get(13)?,
            restored_at: row.get(14)?,
            remote,
        },
    ))
}

pub fn insert(db: &Db, backup: &Backup) -> Result<()> {
    db.execute(
        "INSERT INTO backups (id, project_id, kind, subject, engine, trigger, status, error, started_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            backup.id,
            backup.project_id,
            backup.kind.as_str(),
            backup.subject,
            backup.engine,
            backup.trigger,
            backup.status.as_str(),
            backup.error,
            backup.started_at,
            backup.finished_at
        ],
    )?;
    Ok(())
}

pub fn by_id(db: &Db, id: &str) -> Result<Option<Backup>> {
    Ok(db
        .query_row(
            &format!("SELECT {COLUMNS} FROM backups WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?
        .map(|(_, backup)| backup))
}

/// Newest first, strictly older than `before` when given.
pub fn page(
    db: &Db,
    project_id: &str,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<(i64, Backup)>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM backups WHERE project_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
    ))?;
    let rows = statement
        .query_map(
            params![project_id, before.unwrap_or(i64::MAX), limit],
            from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Every backup of a project, oldest first.
pub fn of_project(db: &Db, project_id: &str) -> Result<Vec<Backup>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM backups WHERE project_id = ?1 ORDER BY seq"
    ))?;
    let rows = statement
        .query_map([project_id], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.into_iter().map(|(_, backup)| backup).collect())
}

/// Records a finished file; with `remote_key`, its copy is `pending` upload under that key.
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
        "UPDATE backups SET status = 'completed', file = ?2, size_bytes = ?3, sha256 = ?4, finished_at = ?5,
             remote_status = CASE WHEN ?6 IS NULL THEN NULL ELSE 'pending' END, remote_key = ?6
         WHERE id = ?1 AND status = 'running'",
        params![id, file, size_bytes, sha256, at, remote_key],
    )?;
    Ok(())
}

/// Records the outcome of one upload attempt (`uploaded` or `failed`); returns the status
/// it had before, or `None` when the backup is gone.
pub fn record_upload(
    db: &Db,
    id: &str,
    status: RemoteStatus,
    error: Option<&str>,
    at: &str,
) -> Result<Option<RemoteStatus>> {
    let before: Option<Option<String>> = db
        .query_row(
            "SELECT remote_status FROM backups WHERE id = ?1",
            [id],
            |row| row.get(0),
        )
        .optional()?;
    let Some(Some(before)) = before else {
        return Ok(None);
    };
    db.execute(
        "UPDATE backups SET remote_status = ?2, remote_error = ?3, remote_attempts = remote_attempts + 1,
             remote_attempted_at = ?4,
             remote_uploaded_at = CASE WHEN ?2 = 'uploaded' THEN ?4 ELSE remote_uploaded_at END
         WHERE id = ?1",
        params![id, status.as_str(), error, at],
    )?;
    Ok(Some(RemoteStatus::parse(&before)))
}

/// Completed backups whose copy is pending or failed, oldest first: what the retry pass
/// uploads.
pub fn uploads_due(db: &Db) -> Result<Vec<String>> {
    let mut statement = db.prepare_cached(
        "SELECT id FROM backups WHERE remote_status IN ('pending', 'failed') AND status = 'completed'
         ORDER BY seq",
    )?;
    let rows = statement
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(rows)
}

pub fn fail(db: &Db, id: &str, reason: &str, at: &str) -> Result<()> {
    db.execute(
        "UPDATE backups SET status = 'failed', error = ?2, finished_at = ?3 WHERE id = ?1 AND status = 'running'",
        params![id, reason, at],
    )?;
    Ok(())
}

pub fn set_restored(db: &Db, id: &str, at: &str) -> Result<()> {
    db.execute(
        "UPDATE backups SET restored_at = ?2 WHERE id = ?1",
        params![id, at],
    )?;
    Ok(())
}

/// Marks every `running` backup failed with `reason`; returns how many. Run at start-up,
/// when no backup can still be running.
pub fn fail_running(db: &Db, reason: &str, at: &str) -> Result<usize> {
    Ok(db.execute(
        "UPDATE backups SET status = 'failed', error = ?1, finished_at = ?2 WHERE status = 'running'",
        params![reason, at],
    )?)
}

/// The files of completed backups, for sweeping files no backup owns.
pub fn completed_files(db: &Db) -> Result<Vec<String>> {
    let mut statement = db.prepare_cached(
        "SELECT file FROM backups WHERE status = 'completed' AND file IS NOT NULL",
    )?;
    let rows = statement
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(rows)
}

pub fn delete(db: &Db, id: &str) -> Result<()> {
    db.execute("DELETE FROM backups WHERE id = ?1", [id])?;
    Ok(())
}

fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    Ok(Schedule {
        project_id: row.get(0)?,
        schedule: row.get(1)?,
        keep_daily: row.get(2)?,
        keep_weekly: row.get(3)?,
        explicit: row.get(4)?,
        updated_at: row.get(5)?,
        last_run_at: row.get(6)?,
        last_status: row.get(7)?,
        last_error: row.get(8)?,
    })
}

const SCHEDULE_COLUMNS: &str =
    "project_id, schedule, keep_daily, keep_weekly, explicit, updated_at, last_run_at, last_status, last_error";

pub fn put_schedule(db: &Db, schedule: &Schedule) -> Result<()> {
    db.execute(
        "INSERT INTO backup_schedules (project_id, schedule, keep_daily, keep_weekly, explicit, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (project_id) DO UPDATE SET schedule = ?2, keep_daily = ?3, keep_weekly = ?4, explicit = ?5, updated_at = ?6",
        params![
            schedule.project_id,
            schedule.schedule,
            schedule.keep_daily,
            schedule.keep_weekly,
            schedule.explicit,
            schedule.updated_at
        ],
    )?;
    Ok(())
}

pub fn schedule_of(db: &Db, project_id: &str) -> Result<Option<Schedule>> {
    Ok(db
        .query_row(
            &format!("SELECT {SCHEDULE_COLUMNS} FROM backup_schedules WHERE project_id = ?1"),
            [project_id],
            schedule_from_row,
        )
        .optional()?)
}

pub fn all_schedules(db: &Db) -> Result<Vec<Schedule>> {
    let mut statement =
        db.prepare_cached(&format!("SELECT {SCHEDULE_COLUMNS} FROM backup_schedules"))?;
    let rows = statement
        .query_map([], schedule_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn delete_schedule(db: &Db, project_id: &str) -> Result<bool> {
    Ok(db.execute(
        "DELETE FROM backup_schedules WHERE project_id = ?1",
        [project_id],
    )? > 0)
}

/// Records the outcome of a scheduled run. A project following the configured default
/// schedule gets a row holding that default, so its outcome is visible too.
pub fn record_schedule_run(
    db: &Db,
    schedule: &Schedule,
    at: &str,
    status: &str,
    error: Option<&str>,
) -> Result<()> {
    db.execute(
        "INSERT INTO backup_schedules (project_id, schedule, keep_daily, keep_weekly, explicit, updated_at, last_run_at, last_status, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (project_id) DO UPDATE SET last_run_at = ?7, last_status = ?8, last_error = ?9",
        params![
            schedule.project_id,
            schedule.schedule,
            schedule.keep_daily,
            schedule.keep_weekly,
            schedule.explicit,
            schedule.updated_at,
            at,
            status,
            error
        ],
    )?;
    Ok(())
}

pub fn replace_assets(db: &Db, deploy_id: &str, assets: &[Asset]) -> Result<()> {
    db.execute("DELETE FROM assets WHERE deploy_id = ?1", [deploy_id])?;
    let mut statement = db.prepare_cached(
        "INSERT INTO assets (deploy_id, path, size_bytes, content_type, sha256) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for asset in assets {
        statement.execute(params![
            deploy_id,
            asset.path,
            asset.size_bytes,
            asset.content_type,
            asset.sha256
        ])?;
    }
    Ok(())
}

pub fn has_assets_index(db: &Db, deploy_id: &str) -> Result<bool> {
    Ok(db
        .query_row(
            "SELECT 1 FROM assets WHERE deploy_id = ?1 LIMIT 1",
            [deploy_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Assets of a deploy in path order whose path starts with `prefix`, after row `after`.
pub fn assets_page(
    db: &Db,
    deploy_id: &str,
    prefix: &str,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<(i64, Asset)>> {
    let mut statement = db.prepare_cached(
        "SELECT rowid, path, size_bytes, content_type, sha256 FROM assets
         WHERE deploy_id = ?1 AND substr(path, 1, length(?2)) = ?2 AND rowid > ?3
         ORDER BY rowid LIMIT ?4",
    )?;
    let rows = statement
        .query_map(
            params![deploy_id, prefix, after.unwrap_or(0), limit],
            |row| {
                Ok((
                    row.get(0)?,
                    Asset {
                        path: row.get(1)?,
                        size_bytes: row.get(2)?,
                        content_type: row.get(3)?,
                        sha256: row.get(4)?,
                    },
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Projects holding data (a database or a volume), which scheduled backups cover.
pub fn projects_with_data(db: &Db) -> Result<Vec<String>> {
    let mut statement =
        db.prepare_cached("SELECT project_id FROM databases UNION SELECT project_id FROM volumes")?;
    let rows = statement
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(rows)
}

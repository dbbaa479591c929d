//! SQL for persistent volumes and the database wired to a project.

use rusqlite::{params, OptionalExtension, Row};

use crate::{
    error::{Error, Result},
    model::{
        database::{DatabaseEngine, DatabaseRecord},
        volume::Volume,
    },
};

use super::{is_unique_violation, Db};

fn volume_from_row(row: &Row<'_>) -> rusqlite::Result<Volume> {
    Ok(Volume {
        project_id: row.get(0)?,
        name: row.get(1)?,
        mount_path: row.get(2)?,
        docker_name: row.get(3)?,
        created_at: row.get(4)?,
        service: row
            .get::<_, String>(5)
            .map(|owner| Some(owner).filter(|owner| !owner.is_empty()))?,
    })
}

const VOLUME_COLUMNS: &str = "project_id, name, mount_path, docker_name, created_at, service";

pub fn insert_volume(db: &Db, volume: &Volume) -> Result<()> {
    db.execute(
        "INSERT INTO volumes (project_id, name, mount_path, docker_name, created_at, service)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            volume.project_id,
            volume.name,
            volume.mount_path,
            volume.docker_name,
            volume.created_at,
            volume.service.as_deref().unwrap_or_default()
        ],
    )
    .map_err(|err| {
        if is_unique_violation(&err) {
            Error::Conflict(format!(
                "the project already has a volume named `{}` or one mounted at `{}`",
                volume.name, volume.mount_path
            ))
        } else {
            err.into()
        }
    })?;
    Ok(())
}

pub fn volumes_of(db: &Db, project_id: &str) -> Result<Vec<Volume>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {VOLUME_COLUMNS} FROM volumes WHERE project_id = ?1 ORDER BY name"
    ))?;
    let found = statement
        .query_map([project_id], volume_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(found)
}

/// The app's volumes: the ones no service owns, which every app container mounts.
pub fn app_volumes_of(db: &Db, project_id: &str) -> Result<Vec<Volume>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {VOLUME_COLUMNS} FROM volumes WHERE project_id = ?1 AND service = '' ORDER BY name"
    ))?;
    let found = statement
        .query_map([project_id], volume_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(found)
}

/// The volumes one service owns.
pub fn volumes_of_service(db: &Db, project_id: &str, service: &str) -> Result<Vec<Volume>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {VOLUME_COLUMNS} FROM volumes WHERE project_id = ?1 AND service = ?2 ORDER BY name"
    ))?;
    let found = statement
        .query_map(params![project_id, service], volume_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(found)
}

pub fn volume(db: &Db, project_id: &str, name: &str) -> Result<Option<Volume>> {
    Ok(db
        .query_row(
            &format!("SELECT {VOLUME_COLUMNS} FROM volumes WHERE project_id = ?1 AND name = ?2"),
            params![project_id, name],
            volume_from_row,
        )
        .optional()?)
}

pub fn delete_volume(db: &Db, project_id: &str, name: &str) -> Result<bool> {
    Ok(db.execute(
        "DELETE FROM volumes WHERE project_id = ?1 AND name = ?2",
        params![project_id, name],
    )? > 0)
}

const DATABASE_COLUMNS: &str =
    "project_id, engine, host, port, name, user, password, volume, created_at";

fn database_from_row(row: &Row<'_>) -> rusqlite::Result<DatabaseRecord> {
    let engine: String = row.get(1)?;
    Ok(DatabaseRecord {
        project_id: row.get(0)?,
        engine: if engine == "postgres" {
            DatabaseEngine::Postgres
        } else {
            DatabaseEngine::Sqlite
        },
        host: row.get(2)?,
        port: row.get(3)?,
        name: row.get(4)?,
        user: row.get(5)?,
        sealed_password: row.get(6)?,
        volume: row.get(7)?,
        created_at: row.get(8)?,
    })
}

pub fn insert_database(db: &Db, record: &DatabaseRecord) -> Result<()> {
    db
        .execute(
            "INSERT INTO databases (project_id, engine, host, port, name, user, password, volume, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                record.project_id,
                record.engine.as_str(),
                record.host,
                record.port,
                record.name,
                record.user,
                record.sealed_password,
                record.volume,
                record.created_at
            ],
        )
        .map_err(|err| {
            if is_unique_violation(&err) {
                Error::Conflict(
                    "the project already has a database; delete it first to change engines"
                        .to_owned(),
                )
            } else {
                err.into()
            }
        })?;
    Ok(())
}

pub fn database_of(db: &Db, project_id: &str) -> Result<Option<DatabaseRecord>> {
    Ok(db
        .query_row(
            &format!("SELECT {DATABASE_COLUMNS} FROM databases WHERE project_id = ?1"),
            [project_id],
            database_from_row,
        )
        .optional()?)
}

pub fn delete_database(db: &Db, project_id: &str) -> Result<bool> {
    Ok(db.execute("DELETE FROM databases WHERE project_id = ?1", [project_id])? > 0)
}

/// Whether the project holds data Cantila must not drop with it: a database or a volume.
pub fn holds_data(db: &Db, project_id: &str) -> Result<Option<&'static str>> {
    if database_of(db, project_id)?.is_some() {
        return Ok(Some("a database"));
    }
    let volumes: i64 = db.query_row(
        "SELECT COUNT(*) FROM volumes WHERE project_id = ?1",
        [project_id],
        |row| row.get(0),
    )?;
    Ok((volumes > 0).then_some("volumes"))
}

//! SQL for projects. Every query is scoped by account id, so another account's project
//! is indistinguishable from a missing one.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Row};

use crate::{
    error::{Error, Result},
    model::{
        build::BuildSettings,
        health::HealthCheckSettings,
        project::{Project, ProjectStatus},
    },
    names::{Handle, ProjectName, Runtime},
};

use super::{is_unique_violation, Db};

const COLUMNS: &str = "p.seq, p.id, p.account_id, a.handle, p.name, p.runtime, p.status, \
    p.created_at, p.updated_at, p.instances, p.size, \
    (SELECT json_group_object(s.process, s.instances) FROM process_scale s \
     WHERE s.project_id = p.id), p.preview_branches, p.build_settings, \
     p.health_check";
const FROM: &str = "projects p JOIN accounts a ON a.id = p.account_id";

fn corrupt(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("stored {what} `{value}` is invalid").into(),
    )
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<(i64, Project)> {
    let handle: String = row.get(3)?;
    let name: String = row.get(4)?;
    let runtime: Option<String> = row.get(5)?;
    let status: String = row.get(6)?;
    let preview_branches: Option<String> = row.get(12)?;
    let build_settings: Option<String> = row.get(13)?;
    let health_check: Option<String> = row.get(14)?;
    Ok((
        row.get(0)?,
        Project {
            id: row.get(1)?,
            account_id: row.get(2)?,
            handle: Handle::parse(&handle).map_err(|_| corrupt("handle", &handle))?,
            name: ProjectName::parse(&name).map_err(|_| corrupt("project name", &name))?,
            runtime: runtime
                .map(|r| Runtime::parse(&r).map_err(|_| corrupt("runtime", &r)))
                .transpose()?,
            status: ProjectStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
            created_at: row.get(7)?,
            updated_at: row.get(8)?,
            instances: row.get(9)?,
            size: row.get(10)?,
            process_instances: match row.get::<_, Option<String>>(11)? {
                Some(json) => {
                    serde_json::from_str(&json).map_err(|_| corrupt("process counts", &json))?
                }
                None => BTreeMap::new(),
            },
            preview_branches: match preview_branches {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|_| corrupt("preview branch patterns", &text))?,
                None => Vec::new(),
            },
            build: match build_settings {
                Some(text) => {
                    serde_json::from_str(&text).map_err(|_| corrupt("build settings", &text))?
                }
                None => BuildSettings::default(),
            },
            health_check: health_check
                .map(|json| {
                    serde_json::from_str(&json).map_err(|_| corrupt("health check settings", &json))
                })
                .transpose()?,
        },
    ))
}

fn name_taken(name: &ProjectName) -> Error {
    Error::Conflict(format!(
        "a project named `{name}` already exists in this account; choose another name"
    ))
}

pub fn insert(db: &Db, project: &Project) -> Result<()> {
    db.execute(
        "INSERT INTO projects (id, account_id, name, runtime, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            project.id,
            project.account_id,
            project.name.as_str(),
            project.runtime.map(Runtime::as_str),
            project.status.as_str(),
            project.created_at,
            project.updated_at
        ],
    )
    .map_err(|err| {
        if is_unique_violation(&err) {
            name_taken(&project.name)
        } else {
            err.into()
        }
    })?;
    Ok(())
}

pub fn by_id(db: &Db, account_id: &str, id: &str) -> Result<Option<Project>> {
    Ok(db
        .query_row(
            &format!("SELECT {COLUMNS} FROM {FROM} WHERE p.account_id = ?1 AND p.id = ?2"),
            [account_id, id],
            from_row,
        )
        .optional()?
        .map(|(_, project)| project))
}

/// `Ok` when the account owns the project; another account's project is not found either.
pub fn check_owned(db: &Db, account_id: &str, id: &str) -> Result<()> {
    owned(db, account_id, id).map(|_| ())
}

/// The project when the account owns it; another account's project is not found either.
pub fn owned(db: &Db, account_id: &str, id: &str) -> Result<Project> {
    by_id(db, account_id, id)?.ok_or_else(|| Error::NotFound(format!("project `{id}` not found")))
}

pub fn by_name(db: &Db, account_id: &str, name: &str) -> Result<Option<Project>> {
    Ok(db
        .query_row(
            &format!("SELECT {COLUMNS} FROM {FROM} WHERE p.account_id = ?1 AND p.name = ?2"),
            [account_id, name],
            from_row,
        )
        .optional()?
        .map(|(_, project)| project))
}

/// Up to `limit` projects of the account in creation order, after sequence `after`.
pub fn page(
    db: &Db,
    account_id: &str,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<(i64, Project)>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE p.account_id = ?1 AND p.seq > ?2 ORDER BY p.seq LIMIT ?3"
    ))?;
    let rows = statement
        .query_map(params![account_id, after.unwrap_or(0), limit], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn update(db: &Db, project: &Project) -> Result<()> {
    db.execute(
        "UPDATE projects SET name = ?3, runtime = ?4, status = ?5, updated_at = ?6
             WHERE account_id = ?1 AND id = ?2",
        params![
            project.account_id,
            project.id,
            project.name.as_str(),
            project.runtime.map(Runtime::as_str),
            project.status.as_str(),
            project.updated_at
        ],
    )
    .map_err(|err| {
        if is_unique_violation(&err) {
            name_taken(&project.name)
        } else {
            err.into()
        }
    })?;
    Ok(())
}

pub fn delete(db: &Db, account_id: &str, id: &str) -> Result<bool> {
    let deleted = db.execute(
        "DELETE FROM projects WHERE account_id = ?1 AND id = ?2",
        [account_id, id],
    )?;
    Ok(deleted > 0)
}

/// Sets a project's status without an account check; for the deploy pipeline.
pub fn set_status(db: &Db, id: &str, status: ProjectStatus, at: &str) -> Result<()> {
    db.execute(
        "UPDATE projects SET status = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, status.as_str(), at],
    )?;
    Ok(())
}

/// A project by id without an account check; for webhooks (verified by signature) and
/// the deploy pipeline.
pub fn by_id_unscoped(db: &Db, id: &str) -> Result<Option<Project>> {
    Ok(db
        .query_row(
            &format!("SELECT {COLUMNS} FROM {FROM} WHERE p.id = ?1"),
            [id],
            from_row,
        )
        .optional()?
        .map(|(_, project)| project))
}

/// Every project of every account; for building the edge's route table.
pub fn all(db: &Db) -> Result<Vec<Project>> {
    let mut statement =
        db.prepare_cached(&format!("SELECT {COLUMNS} FROM {FROM} ORDER BY p.seq"))?;
    let rows = statement
        .query_map([], from_row)?
        .map(|row| row.map(|(_, project)| project))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Records the build settings set through the API (`None` when none are set).
pub fn set_build_settings(db: &Db, id: &str, settings: Option<&str>) -> Result<()> {
    db.execute(
        "UPDATE projects SET build_settings = ?2 WHERE id = ?1",
        params![id, settings],
    )?;
    Ok(())
}

/// Records a project's health check settings; `None` returns it to the defaults.
pub fn set_health_check(db: &Db, id: &str, settings: Option<&HealthCheckSettings>) -> Result<()> {
    let json = settings
        .map(serde_json::to_string)
        .transpose()
        .map_err(|err| Error::Internal(err.to_string()))?;
    db.execute(
        "UPDATE projects SET health_check = ?2 WHERE id = ?1",
        params![id, json],
    )?;
    Ok(())
}

/// Records the desired instance count of one non-web process type.
pub fn set_process_instances(db: &Db, id: &str, process: &str, instances: u32) -> Result<()> {
    db.execute(
        "INSERT INTO process_scale (project_id, process, instances) VALUES (?1, ?2, ?3)
         ON CONFLICT (project_id, process) DO UPDATE SET instances = excluded.instances",
        params![id, process, instances],
    )?;
    Ok(())
}

/// Records the desired instance count and size tier.
pub fn set_scale(db: &Db, id: &str, instances: u32, size: Option<&str>, at: &str) -> Result<()> {
    db.execute(
        "UPDATE projects SET instances = ?2, size = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, instances, size, at],
    )?;
    Ok(())
}

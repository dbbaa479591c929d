//! SQL for a project's services. The env is stored as one sealed blob (the JSON map sealed
//! by the secret box); this module only moves the bytes, `services` seals and opens them.

use rusqlite::{params, OptionalExtension, Row};

use crate::{
    error::{Error, Result},
    model::service::{
        AddonRef, RestartPolicy, Service, ServiceEnv, ServiceHealth, ServiceSource, ServiceSpec,
        ServiceVolume,
    },
    names::ServiceName,
};

use super::{is_unique_violation, Db};

const COLUMNS: &str = "id, account_id, project_id, name, source, image, addon_engine, addon_version, command, entrypoint, env, mounts, health, restart, size, count, port, depends_on, spec_hash, created_at, updated_at";

/// A stored service with its env still sealed (`spec.env` is empty until opened).
#[derive(Debug, Clone)]
pub struct StoredService {
    pub service: Service,
    pub sealed_env: Vec<u8>,
}

fn json<T: serde::de::DeserializeOwned + Default>(text: Option<String>) -> T {
    text.and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<StoredService> {
    let name: String = row.get(3)?;
    let source: String = row.get(4)?;
    let engine: Option<String> = row.get(6)?;
    let version: Option<String> = row.get(7)?;
    let command: Option<String> = row.get(8)?;
    let entrypoint: Option<String> = row.get(9)?;
    let restart: String = row.get(13)?;
    let count: i64 = row.get(15)?;
    let port: Option<i64> = row.get(16)?;
    let depends_on: Vec<String> = json(row.get(17)?);
    // Only checked specs are stored; a name that no longer parses (a newer binary's rule
    // read by an older one) is kept readable rather than failing every read.
    let parse_name = |name: &str| {
        ServiceName::parse(name).unwrap_or_else(|_| ServiceName::parse("service").unwrap())
    };
    let spec = ServiceSpec {
        name: parse_name(&name),
        image: row.get(5)?,
        addon: engine.map(|engine| AddonRef {
            engine,
            version: version.unwrap_or_default(),
        }),
        command: command.and_then(|c| serde_json::from_str(&c).ok()),
        entrypoint: entrypoint.and_then(|c| serde_json::from_str(&c).ok()),
        env: ServiceEnv::default(),
        volumes: json::<Vec<ServiceVolume>>(row.get(11)?),
        health: json::<ServiceHealth>(row.get(12)?),
        restart: RestartPolicy::from_stored(&restart),
        size: row.get(14)?,
        count: u32::try_from(count).unwrap_or(0),
        port: port.and_then(|p| u16::try_from(p).ok()),
        depends_on: depends_on.iter().map(|name| parse_name(name)).collect(),
    };
    Ok(StoredService {
        service: Service {
            id: row.get(0)?,
            account_id: row.get(1)?,
            project_id: row.get(2)?,
            source: ServiceSource::from_stored(&source),
            spec,
            spec_hash: row.get(18)?,
            created_at: row.get(19)?,
            updated_at: row.get(20)?,
        },
        sealed_env: row.get(10)?,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// Inserts a service; a name the project already uses is a conflict.
pub fn insert(db: &Db, service: &Service, sealed_env: &[u8]) -> Result<()> {
    let spec = &service.spec;
    db.execute(
        &format!("INSERT INTO services ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"),
        params![
            service.id,
            service.account_id,
            service.project_id,
            spec.name.as_str(),
            service.source.as_str(),
            spec.image,
            spec.addon.as_ref().map(|a| a.engine.as_str()),
            spec.addon.as_ref().map(|a| a.version.as_str()),
            spec.command.as_ref().map(to_json),
            spec.entrypoint.as_ref().map(to_json),
            sealed_env,
            to_json(&spec.volumes),
            to_json(&spec.health),
            spec.restart.as_str(),
            spec.size,
            spec.count,
            spec.port,
            to_json(&spec.depends_on),
            service.spec_hash,
            service.created_at,
            service.updated_at,
        ],
    )
    .map_err(|err| {
        if is_unique_violation(&err) {
            Error::Conflict(format!(
                "the project already has a service named `{}`",
                spec.name
            ))
        } else {
            err.into()
        }
    })?;
    Ok(())
}

/// Replaces a service's spec (found by id); its id, source and creation time stay.
pub fn update(db: &Db, service: &Service, sealed_env: &[u8]) -> Result<()> {
    let spec = &service.spec;
    db.execute(
        "UPDATE services SET image = ?2, addon_engine = ?3, addon_version = ?4, command = ?5,
             entrypoint = ?6, env = ?7, mounts = ?8, health = ?9, restart = ?10, size = ?11,
             count = ?12, port = ?13, depends_on = ?14, spec_hash = ?15, updated_at = ?16,
             source = ?17
         WHERE id = ?1",
        params![
            service.id,
            spec.image,
            spec.addon.as_ref().map(|a| a.engine.as_str()),
            spec.addon.as_ref().map(|a| a.version.as_str()),
            spec.command.as_ref().map(to_json),
            spec.entrypoint.as_ref().map(to_json),
            sealed_env,
            to_json(&spec.volumes),
            to_json(&spec.health),
            spec.restart.as_str(),
            spec.size,
            spec.count,
            spec.port,
            to_json(&spec.depends_on),
            service.spec_hash,
            service.updated_at,
            service.source.as_str(),
        ],
    )?;
    Ok(())
}

pub fn by_name(db: &Db, project_id: &str, name: &str) -> Result<Option<StoredService>> {
    Ok(db
        .query_row(
            &format!("SELECT {COLUMNS} FROM services WHERE project_id = ?1 AND name = ?2"),
            params![project_id, name],
            from_row,
        )
        .optional()?)
}

/// A project's services by name.
pub fn of_project(db: &Db, project_id: &str) -> Result<Vec<StoredService>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM services WHERE project_id = ?1 ORDER BY name"
    ))?;
    let found = statement
        .query_map([project_id], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(found)
}

/// Every service of the installation (the reconciler's desired state).
pub fn all(db: &Db) -> Result<Vec<StoredService>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM services ORDER BY project_id, name"
    ))?;
    let found = statement
        .query_map([], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(found)
}

pub fn count(db: &Db, project_id: &str) -> Result<usize> {
    let n: i64 = db.query_row(
        "SELECT COUNT(*) FROM services WHERE project_id = ?1",
        [project_id],
        |row| row.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Deletes a service's row; its volumes' rows are the caller's to keep or delete.
pub fn delete(db: &Db, id: &str) -> Result<bool> {
    Ok(db.execute("DELETE FROM services WHERE id = ?1", [id])? > 0)
}

/// Deletes the volume rows a service owns (after their data is removed).
pub fn delete_volumes_of(db: &Db, project_id: &str, service: &str) -> Result<usize> {
    Ok(db.execute(
        "DELETE FROM volumes WHERE project_id = ?1 AND service = ?2",
        params![project_id, service],
    )?)
}

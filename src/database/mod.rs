//! The database wired to a project: `postgres` (a role and a database of their own on the
//! operator's server) or `sqlite` (a file on a persistent volume at `/data`), its
//! metadata, its credentials and the env its containers get (`DATABASE_URL`, `PG*`).
//! Invariant: the password exists in clear only in memory on its way to a container or
//! to a deploy-scope caller; the store holds it sealed and nothing logs it.

pub mod postgres;

use std::collections::BTreeMap;

use crate::{
    accounts::Actor,
    clock,
    error::{Error, Result},
    ids,
    labels::Filter,
    names::{MountPath, VolumeName},
    projects::{self, Project},
    state::AppState,
    store, volumes,
};

pub use crate::model::database::{DatabaseEngine, DatabaseRecord};

/// Where the SQLite engine's volume is mounted, and the file the app is told to use.
pub const SQLITE_MOUNT: &str = "/data";
pub const SQLITE_FILE: &str = "app.db";
/// The name of the volume holding a SQLite database.
pub const SQLITE_VOLUME: &str = "database";

/// What `GET /database` shows: never the password.
#[derive(Debug, Clone)]
pub struct DatabaseInfo {
    pub engine: DatabaseEngine,
    /// The host the project's containers connect to.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: String,
    pub user: Option<String>,
    /// `available`, `missing` (the database is gone from the server) or `unreachable`.
    pub status: String,
    pub size_bytes: Option<i64>,
    pub volume: Option<String>,
    pub created_at: String,
}

/// Wires a new database to the project.
pub async fn create(
    app: &AppState,
    actor: &Actor,
    project_id: String,
    engine: DatabaseEngine,
) -> Result<DatabaseInfo> {
    let project = projects::get(&app.store, actor, project_id).await?;
    let id = project.id.clone();
    if app
        .store
        .call(move |c| store::volumes::database_of(c, &id))
        .await?
        .is_some()
    {
        return Err(Error::Conflict(
            "the project already has a database; delete it first to change engines".to_owned(),
        ));
    }
    let record = match engine {
        DatabaseEngine::Postgres => create_postgres(app, &project).await?,
        DatabaseEngine::Sqlite => {
            volumes::create_for(
                app,
                actor,
                &project,
                VolumeName::parse(SQLITE_VOLUME)?,
                MountPath::parse(SQLITE_MOUNT)?,
                "volume.create",
            )
            .await?;
            DatabaseRecord {
                project_id: project.id.clone(),
                engine,
                host: None,
                port: None,
                name: SQLITE_FILE.to_owned(),
                user: None,
                sealed_password: None,
                volume: Some(SQLITE_VOLUME.to_owned()),
                created_at: clock::now(),
            }
        }
    };
    let saved = record.clone();
    let audit = store::Audit::by(
        actor,
        "database.create",
        format!("{}:{}", record.project_id, record.engine.as_str()),
    );
    let stored = app
        .store
        .write_audited(audit, move |tx| store::volumes::insert_database(tx, &saved))
        .await;
    if let Err(err) = stored {
        // A concurrent create won: undo the role and database made for this one.
        if let (DatabaseEngine::Postgres, Some(url)) =
            (engine, app.config.database.postgres.admin_url.as_deref())
        {
            let _ = postgres::drop(url, &record.name).await;
        }
        return Err(err);
    }
    describe(app, &record).await
}

async fn create_postgres(app: &AppState, project: &Project) -> Result<DatabaseRecord> {
    let admin_url = app.config.database.postgres.admin_url.as_deref().ok_or_else(|| {
        Error::Invalid(
            "no PostgreSQL server is configured ([database.postgres] admin_url); use engine `sqlite` or ask the operator to configure one"
                .to_owned(),
        )
    })?;
    let server = postgres::server_address(admin_url)?;
    // Random, not derived from the project's name: names can change, and a dropped
    // project's name can be taken again.
    let name = format!("cantila_{}", ids::random_base62(16).to_ascii_lowercase());
    let password = ids::random_base62(32);
    postgres::create(admin_url, &name, &password).await?;
    Ok(DatabaseRecord {
        project_id: project.id.clone(),
        engine: DatabaseEngine::Postgres,
        host: Some(server.host),
        port: Some(server.port),
        name: name.clone(),
        user: Some(name),
        sealed_password: Some(app.secrets.seal(password.as_bytes())),
        volume: None,
        created_at: clock::now(),
    })
}

pub async fn record_of(app: &AppState, project: &Project) -> Result<DatabaseRecord> {
    let id = project.id.clone();
    app.store
        .call(move |c| store::volumes::database_of(c, &id))
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "project `{}` has no database; wire one with POST /v1/projects/{}/database",
                project.id, project.id
            ))
        })
}

pub async fn get(app: &AppState, actor: &Actor, project_id: String) -> Result<DatabaseInfo> {
    let project = projects::get(&app.store, actor, project_id).await?;
    let record = record_of(app, &project).await?;
    describe(app, &record).await
}

async fn describe(app: &AppState, record: &DatabaseRecord) -> Result<DatabaseInfo> {
    let (status, size_bytes) = match record.engine {
        DatabaseEngine::Postgres => match app.config.database.postgres.admin_url.as_deref() {
            Some(url) => match postgres::size(url, &record.name).await {
                Ok(Some(size)) => ("available", Some(size)),
                Ok(None) => ("missing", None),
                Err(_) => ("unreachable", None),
            },
            None => ("unreachable", None),
        },
        DatabaseEngine::Sqlite => ("available", None),
    };
    let host = match record.engine {
        DatabaseEngine::Postgres => Some(container_host(app, &record.project_id).await?),
        DatabaseEngine::Sqlite => None,
    };
    Ok(DatabaseInfo {
        engine: record.engine,
        host,
        port: record.port,
        database: match record.engine {
            DatabaseEngine::Postgres => record.name.clone(),
            DatabaseEngine::Sqlite => format!("{SQLITE_MOUNT}/{SQLITE_FILE}"),
        },
        user: record.user.clone(),
        status: status.to_owned(),
        size_bytes,
        volume: record.volume.clone(),
        created_at: record.created_at.clone(),
    })
}

/// The host the project's containers reach the PostgreSQL server at: by default the
/// gateway of production's own network (the Docker host, as its containers see it).
async fn container_host(app: &AppState, project_id: &str) -> Result<String> {
    if let Some(host) = &app.config.database.postgres.container_host {
        return Ok(host.clone());
    }
    let engine = app.engine().await?;
    let network = app
        .networks
        .ensure(
            &engine,
            project_id,
            &crate::deploy::ReleaseTarget::Production,
        )
        .await?;
    engine
        .network_gateway(&network)
        .await?
        .map(|ip| ip.to_string())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "the Docker network `{network}` has no IPv4 gateway; set [database.postgres] container_host"
            ))
        })
}

/// The env a project's containers get: `DATABASE_URL`, plus `PG*` for postgres.
pub async fn connection_env(
    app: &AppState,
    record: &DatabaseRecord,
) -> Result<Vec<(String, String)>> {
    match record.engine {
        DatabaseEngine::Sqlite => Ok(vec![(
            "DATABASE_URL".to_owned(),
            format!("sqlite://{SQLITE_MOUNT}/{SQLITE_FILE}"),
        )]),
        DatabaseEngine::Postgres => {
            let host = container_host(app, &record.project_id).await?;
            let port = record.port.unwrap_or(5432);
            let user = record.user.clone().unwrap_or_default();
            let password = password_of(app, record)?;
            let url = format!(
                "postgres://{user}:{password}@{}:{port}/{}",
                url_host(&host),
                record.name
            );
            Ok(vec![
                ("DATABASE_URL".to_owned(), url),
                ("PGHOST".to_owned(), host),
                ("PGPORT".to_owned(), port.to_string()),
                ("PGDATABASE".to_owned(), record.name.clone()),
                ("PGUSER".to_owned(), user),
                ("PGPASSWORD".to_owned(), password),
            ])
        }
    }
}

/// The names of the env vars an engine's containers get.
pub fn env_keys(engine: DatabaseEngine) -> &'static [&'static str] {
    match engine {
        DatabaseEngine::Sqlite => &["DATABASE_URL"],
        DatabaseEngine::Postgres => &[
            "DATABASE_URL",
            "PGHOST",
            "PGPORT",
            "PGDATABASE",
            "PGUSER",
            "PGPASSWORD",
        ],
    }
}

/// An IPv6 address needs brackets in a URL.
fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

pub(crate) fn password_of(app: &AppState, record: &DatabaseRecord) -> Result<String> {
    let sealed = record
        .sealed_password
        .as_ref()
        .ok_or_else(|| Error::Internal("a postgres database without a password".to_owned()))?;
    app.secrets.open_string(sealed)
}

/// The connection env for a deploy-scope caller (`GET /database/credentials`).
pub async fn credentials(
    app: &AppState,
    actor: &Actor,
    project_id: String,
) -> Result<BTreeMap<String, String>> {
    let project = projects::get(&app.store, actor, project_id).await?;
    let record = record_of(app, &project).await?;
    Ok(connection_env(app, &record).await?.into_iter().collect())
}

/// Unwires and destroys the database, after a final backup. A database already gone from
/// its server has nothing left to back up and is unwired without one.
pub async fn delete(
    app: &AppState,
    actor: &Actor,
    project_id: String,
    confirm: Option<String>,
) -> Result<Option<crate::backup::Backup>> {
    let project = projects::get(&app.store, actor, project_id).await?;
    volumes::check_confirmation(&project, confirm.as_deref())?;
    let record = record_of(app, &project).await?;
    if record.engine == DatabaseEngine::Sqlite && sqlite_volume_mounted(app, &project).await? {
        return Err(Error::Conflict(
            "the SQLite database's volume is mounted by the project's containers; scale the project to 0 first"
                .to_owned(),
        ));
    }
    let gone = match (record.engine, app.config.database.postgres.admin_url.as_deref()) {
        (DatabaseEngine::Postgres, Some(url)) => postgres::size(url, &record.name).await?.is_none(),
        (DatabaseEngine::Postgres, None) => {
            return Err(Error::Invalid(
                "no PostgreSQL server is configured ([database.postgres] admin_url), so the database cannot be dropped"
                    .to_owned(),
            ))
        }
        (DatabaseEngine::Sqlite, _) => !crate::backup::sqlite_file_exists(app, &project, &record).await?,
    };
    let final_backup = if gone {
        None
    } else {
        let backup = crate::backup::run_now(
            app,
            &project,
            crate::backup::Target::Database,
            crate::backup::Trigger::Final,
        )
        .await?;
        if backup.status != crate::backup::BackupStatus::Completed {
            return Err(Error::Conflict(format!(
                "the final backup failed ({}); the database was kept",
                backup.error.unwrap_or_default()
            )));
        }
        Some(backup)
    };
    match record.engine {
        DatabaseEngine::Postgres => {
            if let Some(url) = app.config.database.postgres.admin_url.as_deref() {
                postgres::drop(url, &record.name).await?;
            }
        }
        DatabaseEngine::Sqlite => {
            // The file lives on its volume: the volume goes with the database.
            let engine = app.engine().await?;
            let docker_name = volumes::docker_name(&project.id, &VolumeName::parse(SQLITE_VOLUME)?);
            engine.remove_volume(&docker_name).await?;
        }
    }
    let id = project.id.clone();
    let engine = record.engine;
    app.store
        .write_audited(store::Audit::by(actor, "database.delete", &id), move |tx| {
            store::volumes::delete_database(tx, &id)?;
            if engine == DatabaseEngine::Sqlite {
                store::volumes::delete_volume(tx, &id, SQLITE_VOLUME)?;
            }
            Ok(())
        })
        .await?;
    Ok(final_backup)
}

/// Whether a container of the project (which mounts every volume) exists.
async fn sqlite_volume_mounted(app: &AppState, project: &Project) -> Result<bool> {
    let engine = app.engine().await?;
    // Helpers carry `cantila.helper-for`, not `cantila.project`: they are not counted, nor
    // are a preview's containers, which mount no volume of the project.
    Ok(!engine
        .containers_matching(&Filter::production(&project.id))
        .await?
        .is_empty())
}

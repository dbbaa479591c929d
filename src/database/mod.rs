//! The database wired to a project: `postgres` (a role and a database of their own on the
//! operator's server) or `sqlite` (a file on a persistent volume at `/data`), its
//! metadata, its credentials and the env its containers get (`DATABASE_URL`, `PG*`).
//! Invariant: the password exists in clear only in memory on its way to a container or
//! to a deploy-scope caller; the store holds it sealed and nothing logs it.
//!
//! `Databases` is the handle: the store, the runtime, the secret box, the `[database]`
//! section, the `Networks` (production's gateway) and the `Volumes` a SQLite database
//! lives on.
//! Deleting a database takes a final backup first, so that orchestration lives above, in
//! `backup` (`Backups::delete_database`), which calls the two halves here.

pub mod postgres;

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    accounts::Actor,
    clock,
    config::DatabaseConfig,
    error::{Error, Result},
    ids,
    labels::{Filter, Key},
    model::deploy::ReleaseTarget,
    names::{MountPath, VolumeName},
    networks::Networks,
    projects::{self, Project},
    runtime::{ContainerSpec, Runtime},
    secrets::SecretBox,
    store::{self, Store},
    volumes::{self, Volumes},
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

/// The databases handle: cheap to clone, one per daemon.
#[derive(Clone)]
pub struct Databases(Arc<Inner>);

struct Inner {
    store: Store,
    /// The container runtime; it connects on first use, so the API runs without one.
    runtime: Runtime,
    /// Seals the generated passwords at rest.
    secrets: SecretBox,
    /// `[database]`: the PostgreSQL server and the host containers reach it at.
    config: DatabaseConfig,
    /// Production's network, whose gateway is the default container host.
    networks: Networks,
    /// A SQLite database lives on a volume of the project.
    volumes: Volumes,
}

impl Databases {
    pub fn new(
        store: Store,
        runtime: Runtime,
        secrets: SecretBox,
        config: DatabaseConfig,
        networks: Networks,
        volumes: Volumes,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            runtime,
            secrets,
            config,
            networks,
            volumes,
        }))
    }

    /// The operator's PostgreSQL server, when one is configured.
    pub(crate) fn admin_url(&self) -> Option<&str> {
        self.0.config.postgres.admin_url.as_deref()
    }

    /// Wires a new database to the project.
    pub async fn create(
        &self,
        actor: &Actor,
        project_id: String,
        engine: DatabaseEngine,
    ) -> Result<DatabaseInfo> {
        let project = projects::get(&self.0.store, actor, project_id).await?;
        let id = project.id.clone();
        if self
            .0
            .store
            .call(move |c| store::volumes::database_of(c, &id))
            .await?
            .is_some()
        {
            return Err(Error::Conflict(
                "the project already has a database; delete it first to change engines".to_owned(),
            ));
        }
        let id = project.id.clone();
        let services = self
            .0
            .store
            .call(move |c| store::services::of_project(c, &id))
            .await?;
        // The SQL add-ons (services::addons, a layer above) wire DATABASE_URL too: one
        // project has one DATABASE_URL.
        if let Some(addon) = services.iter().find(|s| {
            s.service
                .spec
                .addon
                .as_ref()
                .is_some_and(|a| matches!(a.engine.as_str(), "postgres" | "mariadb"))
        }) {
            return Err(Error::Conflict(format!(
                "the project's add-on `{}` is wired as DATABASE_URL; delete it first to wire a database",
                addon.service.spec.name
            )));
        }
        let record = match engine {
            DatabaseEngine::Postgres => self.create_postgres(&project).await?,
            DatabaseEngine::Sqlite => self.create_sqlite(actor, &project).await?,
        };
        let saved = record.clone();
        let audit = store::Audit::by(
            actor,
            "database.create",
            format!("{}:{}", record.project_id, record.engine.as_str()),
        );
        let stored = self
            .0
            .store
            .write_audited(audit, move |tx| store::volumes::insert_database(tx, &saved))
            .await;
        if let Err(err) = stored {
            // A concurrent create won: undo the role and database made for this one.
            if let (DatabaseEngine::Postgres, Some(url)) = (engine, self.admin_url()) {
                let _ = postgres::drop(url, &record.name).await;
            }
            return Err(err);
        }
        self.describe(&record).await
    }

    async fn create_postgres(&self, project: &Project) -> Result<DatabaseRecord> {
        let admin_url = self.admin_url().ok_or_else(|| {
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
            sealed_password: Some(self.0.secrets.seal(password.as_bytes())),
            volume: None,
            created_at: clock::now(),
        })
    }

    /// The SQLite engine's volume, made first; the record names it.
    async fn create_sqlite(&self, actor: &Actor, project: &Project) -> Result<DatabaseRecord> {
        self.0
            .volumes
            .create_for(
                actor,
                project,
                VolumeName::parse(SQLITE_VOLUME)?,
                MountPath::parse(SQLITE_MOUNT)?,
                "volume.create",
            )
            .await?;
        Ok(DatabaseRecord {
            project_id: project.id.clone(),
            engine: DatabaseEngine::Sqlite,
            host: None,
            port: None,
            name: SQLITE_FILE.to_owned(),
            user: None,
            sealed_password: None,
            volume: Some(SQLITE_VOLUME.to_owned()),
            created_at: clock::now(),
        })
    }

    /// Makes the project's PostgreSQL role and database exist on the operator's server
    /// with the recorded name and (sealed) password, when either is missing: a state
    /// restored onto a new server, or a server that lost them. Called before a release
    /// and at start, so an app never starts against a database that is not there. A
    /// SQLite database needs nothing: its volume is made when a container mounts it.
    /// True when something was made.
    pub async fn ensure_present(&self, project_id: &str) -> Result<bool> {
        let id = project_id.to_owned();
        let Some(record) = self
            .0
            .store
            .call(move |c| store::volumes::database_of(c, &id))
            .await?
        else {
            return Ok(false);
        };
        match record.engine {
            DatabaseEngine::Sqlite => Ok(false),
            DatabaseEngine::Postgres => {
                let Some(url) = self.admin_url() else {
                    return Ok(false);
                };
                let password = self.password_of(&record)?;
                let ensured = postgres::ensure(url, &record.name, &password).await?;
                let made = ensured != postgres::Ensured::default();
                if made {
                    tracing::info!(
                        project = %record.project_id,
                        database = %record.name,
                        role_created = ensured.role_created,
                        database_created = ensured.database_created,
                        "recreated a missing PostgreSQL database with its recorded credentials"
                    );
                }
                Ok(made)
            }
        }
    }

    /// `ensure_present` for every project with a PostgreSQL database (at start). The first
    /// failure ends the pass (the server is most likely unreachable, and each attempt would
    /// wait for its connect timeout); each release checks its own database again.
    pub async fn ensure_all_present(&self) -> Result<()> {
        if self.admin_url().is_none() {
            return Ok(());
        }
        let projects = self.0.store.call(|c| store::projects::all(c)).await?;
        for project in projects {
            self.ensure_present(&project.id).await?;
        }
        Ok(())
    }

    pub async fn record_of(&self, project: &Project) -> Result<DatabaseRecord> {
        let id = project.id.clone();
        self.0
            .store
            .call(move |c| store::volumes::database_of(c, &id))
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "project `{}` has no database; wire one with POST /v1/projects/{}/database",
                    project.id, project.id
                ))
            })
    }

    pub async fn get(&self, actor: &Actor, project_id: String) -> Result<DatabaseInfo> {
        let project = projects::get(&self.0.store, actor, project_id).await?;
        let record = self.record_of(&project).await?;
        self.describe(&record).await
    }

    async fn describe(&self, record: &DatabaseRecord) -> Result<DatabaseInfo> {
        let (status, size_bytes) = match record.engine {
            DatabaseEngine::Postgres => match self.admin_url() {
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
            DatabaseEngine::Postgres => Some(self.container_host(&record.project_id).await?),
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

    /// The container runtime, once it answers (the first call connects).
    async fn engine(&self) -> Result<Runtime> {
        self.0.runtime.ready().await?;
        Ok(self.0.runtime.clone())
    }

    /// The host the project's containers reach the PostgreSQL server at: by default the
    /// gateway of production's own network (the Docker host, as its containers see it).
    async fn container_host(&self, project_id: &str) -> Result<String> {
        if let Some(host) = &self.0.config.postgres.container_host {
            return Ok(host.clone());
        }
        let engine = self.engine().await?;
        let network = self
            .0
            .networks
            .ensure(&engine, project_id, &ReleaseTarget::Production)
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
    pub async fn connection_env(&self, record: &DatabaseRecord) -> Result<Vec<(String, String)>> {
        match record.engine {
            DatabaseEngine::Sqlite => Ok(vec![(
                "DATABASE_URL".to_owned(),
                format!("sqlite://{SQLITE_MOUNT}/{SQLITE_FILE}"),
            )]),
            DatabaseEngine::Postgres => {
                let host = self.container_host(&record.project_id).await?;
                let port = record.port.unwrap_or(5432);
                let user = record.user.clone().unwrap_or_default();
                let password = self.password_of(record)?;
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

    /// Adds the project's volumes (as mounts) and its database's connection env to a
    /// container spec. Called wherever a project container is built (instances, workers,
    /// release commands), so every release, including a rollback to a release older than
    /// the database, runs with the current volumes and credentials.
    pub async fn attach(&self, project_id: &str, spec: &mut ContainerSpec) -> Result<()> {
        self.0.volumes.mount_into(project_id, spec).await?;
        let id = project_id.to_owned();
        let database = self
            .0
            .store
            .call(move |c| store::volumes::database_of(c, &id))
            .await?;
        if let Some(database) = database {
            let env = self.connection_env(&database).await?;
            spec.env
                .retain(|(key, _)| !env.iter().any(|(wired, _)| wired == key));
            spec.env.extend(env);
        }
        Ok(())
    }

    pub(crate) fn password_of(&self, record: &DatabaseRecord) -> Result<String> {
        let sealed = record
            .sealed_password
            .as_ref()
            .ok_or_else(|| Error::Internal("a postgres database without a password".to_owned()))?;
        self.0.secrets.open_string(sealed)
    }

    /// The connection env for a deploy-scope caller (`GET /database/credentials`).
    pub async fn credentials(
        &self,
        actor: &Actor,
        project_id: String,
    ) -> Result<BTreeMap<String, String>> {
        let project = projects::get(&self.0.store, actor, project_id).await?;
        let record = self.record_of(&project).await?;
        Ok(self.connection_env(&record).await?.into_iter().collect())
    }

    /// The first half of deleting a database: the actor's project (confirmed by its name)
    /// and its database record; refused while the SQLite database's volume is mounted.
    /// The caller takes the final backup, then calls `destroy`.
    pub async fn prepare_delete(
        &self,
        actor: &Actor,
        project_id: String,
        confirm: Option<String>,
    ) -> Result<(Project, DatabaseRecord)> {
        let project = projects::get(&self.0.store, actor, project_id).await?;
        volumes::check_confirmation(&project, confirm.as_deref())?;
        let record = self.record_of(&project).await?;
        if record.engine == DatabaseEngine::Sqlite && self.sqlite_volume_mounted(&project).await? {
            return Err(Error::Conflict(
                "the SQLite database's volume is mounted by the project's containers; scale the project to 0 first"
                    .to_owned(),
            ));
        }
        Ok((project, record))
    }

    /// Whether a postgres database is already gone from its server (nothing left to back
    /// up); an error when no server is configured, since it could not be dropped either.
    pub async fn postgres_gone(&self, record: &DatabaseRecord) -> Result<bool> {
        match self.admin_url() {
            Some(url) => Ok(postgres::size(url, &record.name).await?.is_none()),
            None => Err(Error::Invalid(
                "no PostgreSQL server is configured ([database.postgres] admin_url), so the database cannot be dropped"
                    .to_owned(),
            )),
        }
    }

    /// The second half of deleting a database: drops it (a SQLite file goes with its
    /// volume) and unwires it from the project.
    pub async fn destroy(
        &self,
        actor: &Actor,
        project: &Project,
        record: &DatabaseRecord,
    ) -> Result<()> {
        match record.engine {
            DatabaseEngine::Postgres => {
                if let Some(url) = self.admin_url() {
                    postgres::drop(url, &record.name).await?;
                }
            }
            DatabaseEngine::Sqlite => {
                // The file lives on its volume: the volume goes with the database.
                let engine = self.engine().await?;
                let docker_name =
                    volumes::docker_name(&project.id, &VolumeName::parse(SQLITE_VOLUME)?);
                engine.remove_volume(&docker_name).await?;
            }
        }
        let id = project.id.clone();
        let engine = record.engine;
        self.0
            .store
            .write_audited(store::Audit::by(actor, "database.delete", &id), move |tx| {
                store::volumes::delete_database(tx, &id)?;
                if engine == DatabaseEngine::Sqlite {
                    store::volumes::delete_volume(tx, &id, SQLITE_VOLUME)?;
                }
                Ok(())
            })
            .await
    }

    /// Whether a container of the project (which mounts every volume) exists.
    async fn sqlite_volume_mounted(&self, project: &Project) -> Result<bool> {
        let engine = self.engine().await?;
        // Helpers carry `cantila.helper-for`, not `cantila.project`: they are not counted,
        // nor are a preview's containers, which mount no volume of the project.
        Ok(!engine
            // A service mounts only its own volumes, never the database's.
            .containers_matching(&Filter::production(&project.id).without(Key::Service))
            .await?
            .is_empty())
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

//! Add-ons: datastores a project gets from one word (`redis`, `postgres`, `mariadb` (alias
//! `mysql`), `memcached`), as pure definitions: the image, command, env, data path and
//! readiness check their service is made from, the connection env the project's
//! containers get, and the commands their backups and restores run.
//! Invariant: nothing here does I/O, and every definition works with the engines' official
//! images (the stand-ins `scripts/base-images.sh` builds only copy their contract). The
//! generated passwords live only in the service's env, sealed with it; nothing here puts
//! one in a command line, which the API returns.

use std::{collections::BTreeMap, fmt, time::Duration};

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::{
    accounts::Actor,
    error::{Error, Result},
    ids,
    labels::{self, Key},
    names::{MountPath, ServiceName, VolumeName},
    projects, store,
};

use super::{
    AddonRef, RestartPolicy, Service, ServiceEnv, ServiceHealth, ServiceHealthType, ServiceSpec,
    ServiceVolume, Services,
};

/// The database and user name of the SQL add-ons: one application database per add-on.
pub const APP_DATABASE: &str = "app";
pub const APP_USER: &str = "app";

/// The engines an add-on can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    Redis,
    Postgres,
    /// MariaDB; `mysql` is accepted as its name, since MariaDB speaks MySQL's protocol.
    Mariadb,
    /// A cache: no password (memcached has no authentication over its text protocol) and
    /// no backup (its data is disposable by design).
    Memcached,
}

impl Engine {
    pub const ALL: [Engine; 4] = [
        Engine::Redis,
        Engine::Postgres,
        Engine::Mariadb,
        Engine::Memcached,
    ];

    /// The engine an API or CLI word names; `field` is the request field, for the message.
    pub fn parse(value: &str, field: &str) -> std::result::Result<Self, Error> {
        match value {
            "redis" => Ok(Self::Redis),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mariadb" | "mysql" => Ok(Self::Mariadb),
            "memcached" => Ok(Self::Memcached),
            other => Err(Error::Invalid(format!(
                "{field} `{other}` is not an add-on engine; use one of redis, postgres, mariadb (or mysql), memcached"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Postgres => "postgres",
            Self::Mariadb => "mariadb",
            Self::Memcached => "memcached",
        }
    }

    /// The official image's repository on Docker Hub.
    fn repository(self) -> &'static str {
        self.as_str()
    }

    /// The major version an add-on runs unless the request names one.
    pub fn default_version(self) -> &'static str {
        match self {
            Self::Redis => "7",
            Self::Postgres => "16",
            Self::Mariadb => "11",
            Self::Memcached => "1",
        }
    }

    /// The port the engine listens on inside the project's network.
    pub fn port(self) -> u16 {
        match self {
            Self::Redis => 6379,
            Self::Postgres => 5432,
            Self::Mariadb => 3306,
            Self::Memcached => 11211,
        }
    }

    /// Where the official image keeps its data; the add-on's volume is mounted there.
    pub fn data_path(self) -> Option<&'static str> {
        match self {
            Self::Redis => Some("/data"),
            Self::Postgres => Some("/var/lib/postgresql/data"),
            Self::Mariadb => Some("/var/lib/mysql"),
            Self::Memcached => None,
        }
    }

    /// Whether the engine's data is backed up (a cache's is not).
    pub fn backs_up(self) -> bool {
        self.backup_format().is_some()
    }

    /// The env keys the project's containers get, as `connection_env` builds them.
    pub fn env_keys(self) -> &'static [&'static str] {
        match self {
            Self::Redis => &["REDIS_URL"],
            Self::Postgres => &[
                "DATABASE_URL",
                "PGHOST",
                "PGPORT",
                "PGDATABASE",
                "PGUSER",
                "PGPASSWORD",
            ],
            Self::Mariadb => &[
                "DATABASE_URL",
                "MYSQL_HOST",
                "MYSQL_PORT",
                "MYSQL_DATABASE",
                "MYSQL_USER",
                "MYSQL_PASSWORD",
            ],
            Self::Memcached => &["MEMCACHED_URL", "MEMCACHE_SERVERS"],
        }
    }

    /// The engines whose wiring would overwrite this one's: the same env keys. A project
    /// has one add-on of each engine, and one SQL database (`DATABASE_URL`) in all.
    pub fn clashes_with(self, other: Engine) -> bool {
        self.env_keys()
            .iter()
            .any(|key| other.env_keys().contains(key))
    }

    /// Whether the engine's wiring sets `DATABASE_URL`, as a project database does.
    pub fn claims_database_url(self) -> bool {
        self.env_keys().contains(&"DATABASE_URL")
    }

    fn backup_format(self) -> Option<BackupFormat> {
        match self {
            Self::Redis => Some(BackupFormat { extension: "rdb" }),
            Self::Postgres => Some(BackupFormat { extension: "dump" }),
            Self::Mariadb => Some(BackupFormat { extension: "sql" }),
            Self::Memcached => None,
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An image tag of an engine's official repository. Invariant: a Docker tag (1-64 of
/// letters, digits, `.`, `_`, `-`, not starting with `.` or `-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddonVersion(String);

impl AddonVersion {
    pub fn parse(value: &str) -> std::result::Result<Self, Error> {
        let valid = !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !value.starts_with(['.', '-']);
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(Error::Invalid(format!(
                "addon.version `{value}` is invalid: use an image tag of the engine's official image (1-64 letters, digits, `.`, `_`, `-`), such as `7` or `16.4`"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An add-on: an engine at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addon {
    pub engine: Engine,
    pub version: AddonVersion,
}

impl Addon {
    /// The engine at `version`, refused when a numbered version is older than the oldest
    /// whose tools the definitions use: Redis 7 (its restore writes Redis 7's append-only
    /// file manifest) and MariaDB 10.5 (the `mariadb-*` tool names). Named tags (`latest`,
    /// `alpine`) are the engine's to resolve.
    pub fn at(engine: Engine, version: AddonVersion) -> Result<Self> {
        let minimum = match engine {
            Engine::Redis => Some((7, 0)),
            Engine::Mariadb => Some((10, 5)),
            Engine::Postgres | Engine::Memcached => None,
        };
        let mut numbers = version
            .as_str()
            .split(['.', '-'])
            .map_while(|part| part.parse::<u32>().ok());
        if let (Some(minimum), Some(major)) = (minimum, numbers.next()) {
            let minor = numbers.next().unwrap_or(u32::MAX);
            if (major, minor) < minimum {
                return Err(Error::Invalid(format!(
                    "addon.version `{}` is too old for the {engine} add-on; use {}.{} or newer",
                    version.as_str(),
                    minimum.0,
                    minimum.1
                )));
            }
        }
        Ok(Self { engine, version })
    }

    /// The engine at its default version.
    pub fn of(engine: Engine) -> Self {
        Self {
            engine,
            version: AddonVersion(engine.default_version().to_owned()),
        }
    }

    /// The official image, such as `redis:7`.
    pub fn image(&self) -> String {
        format!("{}:{}", self.engine.repository(), self.version.as_str())
    }
}

/// How the daemon learns that an add-on is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// A shell command run inside the container (Docker's `CMD-SHELL` health check), so
    /// it reads the passwords from the container's env and no command line holds them.
    Command(String),
    /// A TCP connection to the port, from the host.
    Tcp(u16),
}

/// The timing of an add-on's readiness check: first start of a SQL engine initialises
/// its data directory, which takes a while on a busy machine.
pub const READY_INTERVAL: Duration = Duration::from_secs(2);
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);
pub const READY_RETRIES: u32 = 5;
pub const READY_START_PERIOD: Duration = Duration::from_secs(120);

/// What an add-on's service is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub image: String,
    /// `None` keeps the image's own command.
    pub command: Option<Vec<String>>,
    /// The service's env, sealed with it: the generated passwords live here.
    pub env: Vec<(String, String)>,
    /// Where the add-on's volume is mounted; `None` for an engine without data.
    pub data_path: Option<&'static str>,
    pub port: u16,
    pub readiness: Readiness,
}

/// The passwords an add-on is created with: base62 (nothing to escape in a URL or a
/// shell word), 32 characters (190 bits).
#[derive(Clone, PartialEq, Eq)]
pub struct Passwords {
    pub password: String,
    /// MariaDB's root password (its backups run as root, the app as `app`).
    pub root_password: String,
}

impl Passwords {
    pub fn generate() -> Self {
        Self {
            password: ids::random_base62(32),
            root_password: ids::random_base62(32),
        }
    }
}

impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passwords(..)")
    }
}

/// The service an add-on runs as.
pub fn definition(addon: &Addon, passwords: &Passwords) -> Definition {
    let engine = addon.engine;
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let (command, env, readiness) = match engine {
        Engine::Redis => (
            // Through a shell so the password comes from the env, not the command line;
            // `exec docker-entrypoint.sh` keeps the official image's drop to its user.
            Some(vec![
                "sh".to_owned(),
                "-c".to_owned(),
                "exec docker-entrypoint.sh redis-server --requirepass \"$REDIS_PASSWORD\" --appendonly yes --dir /data"
                    .to_owned(),
            ]),
            vec![
                pair("REDIS_PASSWORD", &passwords.password),
                // redis-cli reads it, so the health check and backups authenticate.
                pair("REDISCLI_AUTH", &passwords.password),
            ],
            Readiness::Command("redis-cli ping | grep -q PONG".to_owned()),
        ),
        Engine::Postgres => (
            None,
            vec![
                pair("POSTGRES_USER", APP_USER),
                pair("POSTGRES_PASSWORD", &passwords.password),
                pair("POSTGRES_DB", APP_DATABASE),
                pair("PGDATA", "/var/lib/postgresql/data"),
            ],
            // Over TCP: the first start's initialisation runs a server on the socket only,
            // which must not count as ready.
            Readiness::Command(
                "pg_isready -q -h 127.0.0.1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"".to_owned(),
            ),
        ),
        Engine::Mariadb => (
            None,
            vec![
                pair("MARIADB_ROOT_PASSWORD", &passwords.root_password),
                pair("MARIADB_DATABASE", APP_DATABASE),
                pair("MARIADB_USER", APP_USER),
                pair("MARIADB_PASSWORD", &passwords.password),
            ],
            // Over TCP for the same reason: initialisation runs with networking off.
            Readiness::Command(
                "MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" mariadb-admin ping -h 127.0.0.1 -uroot --silent"
                    .to_owned(),
            ),
        ),
        Engine::Memcached => (None, Vec::new(), Readiness::Tcp(engine.port())),
    };
    Definition {
        image: addon.image(),
        command,
        env,
        data_path: engine.data_path(),
        port: engine.port(),
        readiness,
    }
}

/// The env the project's containers get to reach the add-on at `host` (its service name
/// on the project's network), from the service's own env (where its passwords live).
pub fn connection_env(
    engine: Engine,
    host: &str,
    service_env: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, Error> {
    let get = |key: &str| {
        service_env.get(key).cloned().ok_or_else(|| {
            Error::Conflict(format!(
                "the {engine} add-on `{host}` has no {key} in its env, so it cannot be wired; set it again"
            ))
        })
    };
    let port = engine.port();
    let pair = |k: &str, v: String| (k.to_owned(), v);
    Ok(match engine {
        Engine::Redis => {
            let password = get("REDIS_PASSWORD")?;
            vec![pair(
                "REDIS_URL",
                format!("redis://:{}@{host}:{port}", url_part(&password)),
            )]
        }
        Engine::Postgres => {
            let (user, password, database) = (
                get("POSTGRES_USER")?,
                get("POSTGRES_PASSWORD")?,
                get("POSTGRES_DB")?,
            );
            vec![
                pair(
                    "DATABASE_URL",
                    format!(
                        "postgres://{}:{}@{host}:{port}/{}",
                        url_part(&user),
                        url_part(&password),
                        url_part(&database)
                    ),
                ),
                pair("PGHOST", host.to_owned()),
                pair("PGPORT", port.to_string()),
                pair("PGDATABASE", database),
                pair("PGUSER", user),
                pair("PGPASSWORD", password),
            ]
        }
        Engine::Mariadb => {
            let (user, password, database) = (
                get("MARIADB_USER")?,
                get("MARIADB_PASSWORD")?,
                get("MARIADB_DATABASE")?,
            );
            vec![
                pair(
                    "DATABASE_URL",
                    format!(
                        "mysql://{}:{}@{host}:{port}/{}",
                        url_part(&user),
                        url_part(&password),
                        url_part(&database)
                    ),
                ),
                pair("MYSQL_HOST", host.to_owned()),
                pair("MYSQL_PORT", port.to_string()),
                pair("MYSQL_DATABASE", database),
                pair("MYSQL_USER", user),
                pair("MYSQL_PASSWORD", password),
            ]
        }
        Engine::Memcached => vec![
            pair("MEMCACHED_URL", format!("memcached://{host}:{port}")),
            pair("MEMCACHE_SERVERS", format!("{host}:{port}")),
        ],
    })
}

/// A URL's user, password or path segment: everything but letters and digits escaped
/// (a password set by hand may hold `@`, `:` or `/`).
fn url_part(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

struct BackupFormat {
    extension: &'static str,
}

/// The extension of an engine's backup file (`rdb`, `dump`, `sql`); `None` for an engine
/// that is not backed up.
pub fn backup_extension(engine: Engine) -> Option<&'static str> {
    engine.backup_format().map(|f| f.extension)
}

/// The command a backup runs inside the add-on's running container: it writes the backup
/// to stdout and exits 0, or exits non-zero with the reason on stderr. Passwords come
/// from the container's env, which an exec inherits.
pub fn dump_command(engine: Engine) -> Option<Vec<String>> {
    let script = match engine {
        // A fresh RDB snapshot (BGSAVE, waited for), then the file itself.
        Engine::Redis => concat!(
            "set -e; ",
            "reply=$(redis-cli BGSAVE); ",
            "case \"$reply\" in *started*) ;; *) echo \"redis BGSAVE: $reply\" >&2; exit 1;; esac; ",
            "while redis-cli INFO persistence | grep -q '^rdb_bgsave_in_progress:1'; do sleep 0.1; done; ",
            "redis-cli INFO persistence | grep -q '^rdb_last_bgsave_status:ok' ",
            "|| { echo 'redis BGSAVE failed' >&2; exit 1; }; ",
            "exec cat \"$(redis-cli CONFIG GET dir | tail -n 1)/$(redis-cli CONFIG GET dbfilename | tail -n 1)\"",
        ),
        Engine::Postgres => {
            "PGPASSWORD=\"$POSTGRES_PASSWORD\" exec pg_dump --format=custom -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\""
        }
        Engine::Mariadb => concat!(
            "MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" exec mariadb-dump -uroot --single-transaction ",
            "--routines --triggers --events --add-drop-database --databases \"$MARIADB_DATABASE\""
        ),
        Engine::Memcached => return None,
    };
    Some(shell(script))
}

/// How a backup is written back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// Run this inside the running add-on with the backup on its stdin.
    Stdin(Vec<String>),
    /// Stop the add-on, put the backup at `upload` under the data path, run `command`
    /// (a shell script over the data path, in a helper that mounts it at `/volume`), and
    /// start the add-on again.
    Offline {
        upload: &'static str,
        command: Vec<String>,
    },
}

/// The restore of an engine's backup; `None` for an engine that is not backed up.
pub fn restore(engine: Engine) -> Option<Restore> {
    match engine {
        // Redis with `--appendonly yes` loads its append-only files at start and ignores
        // a dump.rdb; since Redis 7 an RDB can be the base of the append-only files, so
        // the backup becomes that base, with a manifest naming it.
        Engine::Redis => Some(Restore::Offline {
            upload: REDIS_RESTORE_FILE,
            command: shell(concat!(
                "set -e; cd /volume; ",
                "rm -rf appendonlydir dump.rdb; mkdir appendonlydir; ",
                "mv cantila-restore.rdb appendonlydir/appendonly.aof.1.base.rdb; ",
                "printf 'file appendonly.aof.1.base.rdb seq 1 type b\\n' >appendonlydir/appendonly.aof.manifest"
            )),
        }),
        Engine::Postgres => Some(Restore::Stdin(shell(concat!(
            "PGPASSWORD=\"$POSTGRES_PASSWORD\" exec pg_restore --clean --if-exists --no-owner ",
            "--single-transaction --exit-on-error -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\""
        )))),
        // The dump drops and recreates the database (`--add-drop-database`).
        Engine::Mariadb => Some(Restore::Stdin(shell(
            "MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" exec mariadb -uroot --binary-mode",
        ))),
        Engine::Memcached => None,
    }
}

/// Where an offline Redis restore puts the backup before its script moves it.
const REDIS_RESTORE_FILE: &str = "cantila-restore.rdb";

/// A fixed script for `sh -c`: never built from user input.
fn shell(script: &str) -> Vec<String> {
    vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]
}

/// The name of an add-on's data volume: `<service>-data`.
pub fn volume_name(service: &ServiceName) -> Result<VolumeName, Error> {
    VolumeName::parse(&format!("{service}-data")).map_err(|_| {
        Error::Invalid(format!(
            "add-on name `{service}` is too long for its volume `{service}-data` (at most 32 characters); use at most 27 characters"
        ))
    })
}

/// The spec of an add-on's service named `name`, with freshly generated passwords.
pub fn service_spec(
    name: ServiceName,
    addon: &Addon,
    passwords: &Passwords,
) -> Result<ServiceSpec, Error> {
    let definition = definition(addon, passwords);
    let volumes = match definition.data_path {
        Some(path) => vec![ServiceVolume {
            name: volume_name(&name)?,
            path: MountPath::parse(path)?,
        }],
        None => Vec::new(),
    };
    let health = match definition.readiness {
        Readiness::Command(script) => ServiceHealth {
            kind: ServiceHealthType::Command,
            command: Some(shell(&script)),
            ..ready_timing()
        },
        Readiness::Tcp(port) => ServiceHealth {
            kind: ServiceHealthType::Tcp,
            port: Some(port),
            ..ready_timing()
        },
    };
    Ok(ServiceSpec {
        name,
        image: definition.image,
        addon: Some(AddonRef {
            engine: addon.engine.as_str().to_owned(),
            version: addon.version.as_str().to_owned(),
        }),
        command: definition.command,
        entrypoint: None,
        env: ServiceEnv(definition.env.into_iter().collect()),
        volumes,
        health,
        restart: RestartPolicy::Always,
        size: None,
        count: 1,
        port: Some(definition.port),
        depends_on: Vec::new(),
    })
}

fn ready_timing() -> ServiceHealth {
    ServiceHealth {
        interval_secs: Some(READY_INTERVAL.as_secs() as u32),
        timeout_secs: Some(READY_TIMEOUT.as_secs() as u32),
        retries: Some(READY_RETRIES),
        start_period_secs: Some(READY_START_PERIOD.as_secs() as u32),
        ..ServiceHealth::default()
    }
}

/// The engine of a stored service, when it is an add-on Cantila knows.
pub fn engine_of(service: &Service) -> Option<Engine> {
    engine_of_spec(service.spec.addon.as_ref())
}

/// The engine an add-on reference names, when Cantila knows it.
pub fn engine_of_spec(addon: Option<&AddonRef>) -> Option<Engine> {
    Engine::parse(&addon?.engine, "addon").ok()
}

/// Why an add-on of `engine` cannot join a project with these add-ons and database: its
/// connection env would overwrite theirs. `None` when it can.
pub fn clash(engine: Engine, existing: &[(String, Engine)], has_database: bool) -> Option<String> {
    if let Some((name, other)) = existing
        .iter()
        .find(|(_, other)| engine.clashes_with(*other))
    {
        let keys: Vec<&str> = engine
            .env_keys()
            .iter()
            .copied()
            .filter(|key| other.env_keys().contains(key))
            .collect();
        return Some(format!(
            "the project already has the {other} add-on `{name}`, wired as {}; a project has one add-on setting each variable, so delete `{name}` first",
            keys.join(", ")
        ));
    }
    if has_database && engine.claims_database_url() {
        return Some(format!(
            "the project already has a database wired as DATABASE_URL; a {engine} add-on would replace it, so delete the database first"
        ));
    }
    None
}

/// Where an add-on's data is, for its backups.
#[derive(Debug, Clone)]
pub struct AddonData {
    pub name: ServiceName,
    pub engine: Engine,
    /// A running container of it; `None` when none runs (nothing can be dumped).
    pub container: Option<String>,
    /// The Docker name of its data volume.
    pub volume: Option<String>,
    /// The project's name for that volume.
    pub volume_name: Option<String>,
}

impl Services {
    /// Declares an add-on: its service (named after the engine unless `name` is given)
    /// with generated passwords sealed in its env and a volume for its data; the reconciler
    /// starts it. Refused (409) when its connection env would overwrite another add-on's
    /// or the project database's.
    pub async fn create_addon(
        &self,
        actor: &Actor,
        project_id: &str,
        name: Option<ServiceName>,
        addon: Addon,
    ) -> Result<Service> {
        let project = projects::get(&self.0.store, actor, project_id.to_owned()).await?;
        let name = match name {
            Some(name) => name,
            None => ServiceName::parse(addon.engine.as_str())?,
        };
        let existing = self.addons_of(&project.id).await?;
        let id = project.id.clone();
        let has_database = self
            .0
            .store
            .call(move |c| store::volumes::database_of(c, &id))
            .await?
            .is_some();
        let existing: Vec<(String, Engine)> = existing
            .into_iter()
            .map(|(service, engine)| (service.name().to_string(), engine))
            .collect();
        if let Some(reason) = clash(addon.engine, &existing, has_database) {
            return Err(Error::Conflict(reason));
        }
        let spec = service_spec(name, &addon, &Passwords::generate())?;
        self.create(actor, &project.id, spec).await
    }

    /// The project's add-on services with their engines.
    pub async fn addons_of(&self, project_id: &str) -> Result<Vec<(Service, Engine)>> {
        Ok(self
            .services_of(project_id)
            .await?
            .into_iter()
            .filter_map(|service| engine_of(&service).map(|engine| (service, engine)))
            .collect())
    }

    /// The connection env of the project's add-ons, for its containers.
    pub(super) async fn addon_env(&self, project_id: &str) -> Result<Vec<(String, String)>> {
        let mut env = Vec::new();
        for (service, engine) in self.addons_of(project_id).await? {
            env.extend(connection_env(
                engine,
                service.name().as_str(),
                &service.spec.env.0,
            )?);
        }
        Ok(env)
    }

    /// An add-on's engine, running container and data volume, for a backup or restore;
    /// `None` when the project has no add-on of that name.
    pub async fn addon_data(&self, project_id: &str, name: &str) -> Result<Option<AddonData>> {
        let (id, lookup) = (project_id.to_owned(), name.to_owned());
        let Some(stored) = self
            .0
            .store
            .call(move |db| store::services::by_name(db, &id, &lookup))
            .await?
        else {
            return Ok(None);
        };
        let service = stored.service;
        let Some(engine) = engine_of(&service) else {
            return Ok(None);
        };
        let engine_handle = self.engine().await?;
        let container = self
            .containers_of(&engine_handle, project_id, service.name().as_str())
            .await?
            .into_iter()
            .find(|c| {
                c.state == "running"
                    && labels::get(&c.labels, Key::SpecHash) == Some(service.spec_hash.as_str())
            })
            .map(|c| c.id);
        let volume = service
            .spec
            .volumes
            .first()
            .map(|v| crate::volumes::docker_name(project_id, &v.name));
        Ok(Some(AddonData {
            name: service.spec.name.clone(),
            engine,
            container,
            volume,
            volume_name: service.spec.volumes.first().map(|v| v.name.to_string()),
        }))
    }

    /// Holds the project's services still: neither the reconciler nor a compose release
    /// touches them until the guard drops (an offline restore stops an add-on meanwhile).
    pub async fn hold(&self, project_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.0.locks.of(project_id).lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords() -> Passwords {
        Passwords {
            password: "pw123".to_owned(),
            root_password: "root456".to_owned(),
        }
    }

    fn env_of(definition: &Definition) -> BTreeMap<String, String> {
        definition.env.iter().cloned().collect()
    }

    #[test]
    fn engine_words_parse_with_mysql_as_mariadb() {
        let check = |word: &str, expected: Option<Engine>| {
            assert_eq!(Engine::parse(word, "addon").ok(), expected, "{word}");
        };
        check("redis", Some(Engine::Redis));
        check("postgres", Some(Engine::Postgres));
        check("postgresql", Some(Engine::Postgres));
        check("mariadb", Some(Engine::Mariadb));
        check("mysql", Some(Engine::Mariadb));
        check("memcached", Some(Engine::Memcached));
        check("mongodb", None);
        check("Redis", None);
        let err = Engine::parse("mongodb", "addon").unwrap_err().to_string();
        assert!(err.contains("addon `mongodb`"), "{err}");
    }

    #[test]
    fn versions_are_image_tags() {
        let check = |v: &str, ok: bool| assert_eq!(AddonVersion::parse(v).is_ok(), ok, "{v}");
        check("7", true);
        check("16.4", true);
        check("7-alpine", true);
        check("", false);
        check("-7", false);
        check("7;rm", false);
        check("7 2", false);
        check("a/b", false);
        check(&"1".repeat(65), false);
    }

    #[test]
    fn images_are_the_official_repositories() {
        let check = |engine: Engine, image: &str| assert_eq!(Addon::of(engine).image(), image);
        check(Engine::Redis, "redis:7");
        check(Engine::Postgres, "postgres:16");
        check(Engine::Mariadb, "mariadb:11");
        check(Engine::Memcached, "memcached:1");
        let addon = Addon {
            engine: Engine::Postgres,
            version: AddonVersion::parse("15").unwrap(),
        };
        assert_eq!(addon.image(), "postgres:15");
    }

    #[test]
    fn no_password_is_on_a_command_line() {
        for engine in Engine::ALL {
            let definition = definition(&Addon::of(engine), &passwords());
            let mut lines: Vec<String> = definition.command.clone().unwrap_or_default();
            lines.extend(dump_command(engine).unwrap_or_default());
            if let Some(Restore::Stdin(c) | Restore::Offline { command: c, .. }) = restore(engine) {
                lines.extend(c);
            }
            if let Readiness::Command(c) = &definition.readiness {
                lines.push(c.clone());
            }
            for line in lines {
                assert!(
                    !line.contains("pw123") && !line.contains("root456"),
                    "{engine}: {line}"
                );
            }
        }
    }

    #[test]
    fn definitions_follow_the_official_images_contract() {
        let redis = definition(&Addon::of(Engine::Redis), &passwords());
        assert_eq!(redis.data_path, Some("/data"));
        assert!(redis.command.as_ref().unwrap()[2].contains("--appendonly yes"));
        assert_eq!(env_of(&redis)["REDISCLI_AUTH"], "pw123");

        let pg = definition(&Addon::of(Engine::Postgres), &passwords());
        let env = env_of(&pg);
        assert_eq!(pg.command, None);
        assert_eq!(pg.data_path, Some("/var/lib/postgresql/data"));
        assert_eq!(env["POSTGRES_PASSWORD"], "pw123");
        assert_eq!(env["POSTGRES_USER"], "app");
        assert_eq!(env["POSTGRES_DB"], "app");

        let maria = definition(&Addon::of(Engine::Mariadb), &passwords());
        let env = env_of(&maria);
        assert_eq!(maria.data_path, Some("/var/lib/mysql"));
        assert_eq!(env["MARIADB_ROOT_PASSWORD"], "root456");
        assert_eq!(env["MARIADB_PASSWORD"], "pw123");

        let memcached = definition(&Addon::of(Engine::Memcached), &passwords());
        assert!(memcached.env.is_empty());
        assert_eq!(memcached.data_path, None);
        assert_eq!(memcached.readiness, Readiness::Tcp(11211));
    }

    #[test]
    fn connection_env_is_built_from_the_service_env() {
        let check = |engine: Engine, expected: &[(&str, &str)]| {
            let env = env_of(&definition(&Addon::of(engine), &passwords()));
            let wired = connection_env(engine, "cache", &env).unwrap();
            let got: Vec<(&str, &str)> = wired
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(got, expected, "{engine}");
            let keys: Vec<&str> = wired.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, engine.env_keys(), "{engine}: env_keys matches");
        };
        check(Engine::Redis, &[("REDIS_URL", "redis://:pw123@cache:6379")]);
        check(
            Engine::Postgres,
            &[
                ("DATABASE_URL", "postgres://app:pw123@cache:5432/app"),
                ("PGHOST", "cache"),
                ("PGPORT", "5432"),
                ("PGDATABASE", "app"),
                ("PGUSER", "app"),
                ("PGPASSWORD", "pw123"),
            ],
        );
        check(
            Engine::Mariadb,
            &[
                ("DATABASE_URL", "mysql://app:pw123@cache:3306/app"),
                ("MYSQL_HOST", "cache"),
                ("MYSQL_PORT", "3306"),
                ("MYSQL_DATABASE", "app"),
                ("MYSQL_USER", "app"),
                ("MYSQL_PASSWORD", "pw123"),
            ],
        );
        check(
            Engine::Memcached,
            &[
                ("MEMCACHED_URL", "memcached://cache:11211"),
                ("MEMCACHE_SERVERS", "cache:11211"),
            ],
        );
    }

    #[test]
    fn hand_set_passwords_are_escaped_in_urls() {
        let env: BTreeMap<String, String> =
            [("REDIS_PASSWORD".to_owned(), "a@b:c/d".to_owned())].into();
        let wired = connection_env(Engine::Redis, "redis", &env).unwrap();
        assert_eq!(wired[0].1, "redis://:a%40b%3Ac%2Fd@redis:6379");
        let missing = connection_env(Engine::Postgres, "db", &BTreeMap::new()).unwrap_err();
        assert!(missing.to_string().contains("POSTGRES_USER"), "{missing}");
    }

    #[test]
    fn clashes_are_shared_env_keys() {
        let check = |a: Engine, b: Engine, clash: bool| {
            assert_eq!(a.clashes_with(b), clash, "{a} {b}");
            assert_eq!(b.clashes_with(a), clash, "{b} {a}");
        };
        check(Engine::Redis, Engine::Redis, true);
        check(Engine::Postgres, Engine::Mariadb, true);
        check(Engine::Postgres, Engine::Postgres, true);
        check(Engine::Redis, Engine::Postgres, false);
        check(Engine::Memcached, Engine::Redis, false);
        assert!(Engine::Postgres.claims_database_url());
        assert!(Engine::Mariadb.claims_database_url());
        assert!(!Engine::Redis.claims_database_url());
    }

    #[test]
    fn backups_exist_for_datastores_only() {
        for engine in Engine::ALL {
            let backs_up = engine != Engine::Memcached;
            assert_eq!(engine.backs_up(), backs_up, "{engine}");
            assert_eq!(dump_command(engine).is_some(), backs_up, "{engine}");
            assert_eq!(restore(engine).is_some(), backs_up, "{engine}");
            assert_eq!(backup_extension(engine).is_some(), backs_up, "{engine}");
        }
        assert!(matches!(
            restore(Engine::Redis),
            Some(Restore::Offline {
                upload: "cantila-restore.rdb",
                ..
            })
        ));
    }

    #[test]
    fn clashes_name_the_other_addon_and_the_variables() {
        let existing = vec![("db".to_owned(), Engine::Postgres)];
        let check = |engine: Engine,
                     existing: &[(String, Engine)],
                     database: bool,
                     needles: &[&str]| {
            match (clash(engine, existing, database), needles.is_empty()) {
                (None, true) => {}
                (Some(reason), false) => {
                    for needle in needles {
                        assert!(reason.contains(needle), "{engine}: {reason}");
                    }
                }
                (got, _) => panic!("{engine}: {got:?}, expected {needles:?}"),
            }
        };
        check(Engine::Mariadb, &existing, false, &["`db`", "DATABASE_URL"]);
        check(
            Engine::Postgres,
            &existing,
            false,
            &["postgres add-on `db`", "PGHOST"],
        );
        check(Engine::Redis, &existing, false, &[]);
        check(Engine::Redis, &[], true, &[]);
        check(Engine::Postgres, &[], true, &["already has a database"]);
        check(Engine::Memcached, &[], true, &[]);
    }

    #[test]
    fn service_specs_pass_the_services_checks() {
        for engine in Engine::ALL {
            let name = ServiceName::parse(engine.as_str()).unwrap();
            let spec = service_spec(name, &Addon::of(engine), &passwords()).unwrap();
            spec.check().unwrap_or_else(|err| panic!("{engine}: {err}"));
            assert_eq!(
                spec.volumes.len(),
                usize::from(engine.data_path().is_some())
            );
            assert_eq!(spec.count, 1);
            assert_eq!(
                engine_of(&crate::model::service::Service {
                    id: "svc_x".to_owned(),
                    account_id: "acc_x".to_owned(),
                    project_id: "prj_x".to_owned(),
                    source: crate::model::service::ServiceSource::Addon,
                    spec_hash: spec.hash(),
                    spec: spec.clone(),
                    created_at: String::new(),
                    updated_at: String::new(),
                }),
                Some(engine)
            );
        }
        let long = ServiceName::parse(&"a".repeat(28)).unwrap();
        let err = service_spec(long, &Addon::of(Engine::Redis), &passwords()).unwrap_err();
        assert!(err.to_string().contains("at most 27 characters"), "{err}");
        let fits = ServiceName::parse(&"a".repeat(27)).unwrap();
        assert!(service_spec(fits, &Addon::of(Engine::Redis), &passwords()).is_ok());
    }

    #[test]
    fn numbered_versions_older_than_the_tools_are_refused() {
        let check = |engine: Engine, version: &str, ok: bool| {
            let version = AddonVersion::parse(version).unwrap();
            assert_eq!(
                Addon::at(engine, version.clone()).is_ok(),
                ok,
                "{engine} {version:?}"
            );
        };
        check(Engine::Redis, "7", true);
        check(Engine::Redis, "7.2-alpine", true);
        check(Engine::Redis, "6.2", false);
        check(Engine::Redis, "latest", true);
        check(Engine::Mariadb, "11", true);
        check(Engine::Mariadb, "10.11", true);
        check(Engine::Mariadb, "10.4", false);
        check(Engine::Mariadb, "10", true);
        check(Engine::Postgres, "9.6", true);
    }
}

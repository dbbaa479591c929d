//! A project's services as declared and as stored: containers beside the app (a Redis, a
//! second database, a queue worker from an image), each with its own image, command, env,
//! volumes, health check, restart policy, size and count, reached by the project's other
//! containers at its name on the project's private network.
//! Invariant: a `ServiceSpec` that exists has passed `check`: every number is inside the
//! documented bounds, the health check has what its type needs, the env keys are valid, no
//! two volumes share a name or overlap, and `depends_on` names no service twice nor itself.
//! The env values are secrets: sealed at rest, never shown after creation, never in `Debug`.

use std::{collections::BTreeMap, fmt, ops::RangeInclusive};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::{
    error::Error,
    names::{EnvKey, MountPath, ServiceName, VolumeName},
};

/// The documented bounds, enforced by `ServiceSpec::check` and stated in the OpenAPI schema
/// (keep the two the same).
pub mod bounds {
    use std::ops::RangeInclusive;

    /// How many containers a service runs; 0 keeps it declared but stopped.
    pub const COUNT: RangeInclusive<u32> = 0..=10;
    pub const PORT: RangeInclusive<u16> = 1..=65535;
    pub const INTERVAL_SECS: RangeInclusive<u32> = 1..=3600;
    pub const TIMEOUT_SECS: RangeInclusive<u32> = 1..=600;
    pub const RETRIES: RangeInclusive<u32> = 1..=100;
    pub const START_PERIOD_SECS: RangeInclusive<u32> = 0..=3600;
    /// Arguments of a command or entrypoint, and bytes of each.
    pub const MAX_ARGS: usize = 256;
    pub const MAX_ARG_LEN: usize = 8192;
    /// Env entries of one service, and bytes of each value.
    pub const MAX_ENV: usize = 256;
    pub const MAX_ENV_VALUE_LEN: usize = 32 * 1024;
    pub const MAX_VOLUMES: usize = 16;
    /// Bytes of an image reference.
    pub const MAX_IMAGE_LEN: usize = 512;
    /// Bytes of an HTTP check's path.
    pub const MAX_PATH_LEN: usize = 1024;
}

/// The most services one project may have, so a script or a compose file cannot fill the
/// host.
pub const MAX_SERVICES_PER_PROJECT: usize = 32;

/// Where a service was declared: each source's services are changed only through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceSource {
    /// Through the API (or the CLI) from an image.
    Api,
    /// An add-on (a datastore Cantila knows how to run, wire and back up).
    Addon,
    /// The repository's compose file: each compose release makes them match the file.
    Compose,
}

impl ServiceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceSource::Api => "api",
            ServiceSource::Addon => "addon",
            ServiceSource::Compose => "compose",
        }
    }

    /// A stored word; the store only holds the three (a CHECK constraint).
    pub fn from_stored(word: &str) -> Self {
        match word {
            "addon" => ServiceSource::Addon,
            "compose" => ServiceSource::Compose,
            _ => ServiceSource::Api,
        }
    }
}

/// What the engine does when a service's process exits. Instances of the app always
/// restart; one-off containers never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restarted whatever the exit (unless Cantila stopped it).
    #[default]
    Always,
    /// Restarted after a failure (a non-zero exit) only.
    OnFailure,
    /// Never restarted.
    No,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::No => "no",
        }
    }

    pub fn from_stored(word: &str) -> Self {
        match word {
            "on-failure" => RestartPolicy::OnFailure,
            "no" => RestartPolicy::No,
            _ => RestartPolicy::Always,
        }
    }
}

/// A service health check's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceHealthType {
    /// No probe: ready once running (and still running after `startPeriodSecs`).
    #[default]
    None,
    /// The port must accept a TCP connection (probed by the daemon from the host).
    Tcp,
    /// A command run inside the container must exit 0 (the engine's own health check).
    Command,
    /// `GET path` on the port must answer below 500 (probed by the daemon from the host).
    Http,
}

/// A service's health check: what "ready" means for it. Unset numbers are the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceHealth {
    /// `none` (the default), `tcp`, `command` or `http`.
    #[serde(rename = "type", default)]
    pub kind: ServiceHealthType,
    /// The port probed (`tcp`, `http`); the service's `port` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// The command run inside the container (`command`), as an argument array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The path requested (`http`); `/` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Seconds between probes (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3600)]
    pub interval_secs: Option<u32>,
    /// Seconds each probe may take (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 600)]
    pub timeout_secs: Option<u32>,
    /// Failed probes in a row that make the service unhealthy (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub retries: Option<u32>,
    /// Seconds after a start during which failures do not count (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 3600)]
    pub start_period_secs: Option<u32>,
}

impl ServiceHealth {
    pub const DEFAULT_INTERVAL_SECS: u32 = 2;
    pub const DEFAULT_TIMEOUT_SECS: u32 = 2;
    pub const DEFAULT_RETRIES: u32 = 30;

    pub fn interval_secs(&self) -> u32 {
        self.interval_secs.unwrap_or(Self::DEFAULT_INTERVAL_SECS)
    }

    pub fn timeout_secs(&self) -> u32 {
        self.timeout_secs.unwrap_or(Self::DEFAULT_TIMEOUT_SECS)
    }

    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(Self::DEFAULT_RETRIES)
    }

    pub fn start_period_secs(&self) -> u32 {
        self.start_period_secs.unwrap_or(0)
    }

    /// How long a start may take before the service is given up on as never ready: its
    /// start period plus every retry's interval and timeout.
    pub fn readiness_budget_secs(&self) -> u64 {
        u64::from(self.start_period_secs())
            + u64::from(self.retries()) * u64::from(self.interval_secs() + self.timeout_secs())
    }
}

/// A named volume of the service and where it is mounted. It is a row of the project's
/// volumes (so it is listed, backed up and keeps the project from deletion while it holds
/// data) owned by this service, which alone mounts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub struct ServiceVolume {
    /// The volume's name, unique among the project's volumes.
    #[schema(value_type = String)]
    pub name: VolumeName,
    /// Where it is mounted inside the service's containers.
    #[schema(value_type = String)]
    pub path: MountPath,
}

/// The add-on a service runs (B's engines), kept with the service so its wiring and
/// backups know what it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub struct AddonRef {
    pub engine: String,
    pub version: String,
}

/// A service's env: values are secrets, so `Debug` shows only the keys.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ServiceEnv(pub BTreeMap<String, String>);

impl fmt::Debug for ServiceEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Everything a service's containers are made from, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: ServiceName,
    /// The image reference its containers start from (for a compose build, the built
    /// image's id).
    pub image: String,
    pub addon: Option<AddonRef>,
    /// Overrides the image's CMD when set.
    pub command: Option<Vec<String>>,
    /// Overrides the image's ENTRYPOINT when set.
    pub entrypoint: Option<Vec<String>>,
    pub env: ServiceEnv,
    pub volumes: Vec<ServiceVolume>,
    pub health: ServiceHealth,
    pub restart: RestartPolicy,
    /// The size tier; `None` is the configured default.
    pub size: Option<String>,
    pub count: u32,
    /// The port it listens on inside the project's network (documentation and the default
    /// of its health check's port); nothing is published.
    pub port: Option<u16>,
    /// Services started (and ready) before this one.
    pub depends_on: Vec<ServiceName>,
}

fn check_range<T: PartialOrd + fmt::Display + Copy>(
    field: &str,
    value: T,
    range: &RangeInclusive<T>,
) -> Result<(), Error> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "`{field}` is {value}; use {}..={}",
            range.start(),
            range.end()
        )))
    }
}

fn check_args(field: &str, args: &[String]) -> Result<(), Error> {
    if args.is_empty() {
        return Err(Error::Invalid(format!(
            "`{field}` is empty; give at least the program to run"
        )));
    }
    if args.len() > bounds::MAX_ARGS {
        return Err(Error::Invalid(format!(
            "`{field}` has {} arguments; at most {} are accepted",
            args.len(),
            bounds::MAX_ARGS
        )));
    }
    if let Some(arg) = args
        .iter()
        .find(|arg| arg.len() > bounds::MAX_ARG_LEN || arg.contains('\0'))
    {
        return Err(Error::Invalid(format!(
            "`{field}` has an argument longer than {} bytes or holding a NUL byte ({} bytes)",
            bounds::MAX_ARG_LEN,
            arg.len()
        )));
    }
    Ok(())
}

/// Checks an image reference's shape: `[registry/]repository[:tag][@digest]`, lowercase
/// repository, no whitespace. The engine resolves it; this only keeps junk out of the
/// store and the engine's API.
pub fn check_image(field: &str, image: &str) -> Result<(), Error> {
    let invalid = |why: &str| {
        Error::Invalid(format!(
            "`{field}` `{image}` is not an image reference: {why}; use e.g. `redis:7`, `ghcr.io/owner/app:1.2` or `busybox@sha256:...`"
        ))
    };
    if image.is_empty() {
        return Err(invalid("it is empty"));
    }
    if image.len() > bounds::MAX_IMAGE_LEN {
        return Err(invalid("it is too long"));
    }
    if let Some(bad) = image
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@')))
    {
        return Err(invalid(&format!("`{bad}` is not allowed")));
    }
    if image.starts_with(['-', '.', '/', ':', '@']) {
        return Err(invalid("it starts with a separator"));
    }
    Ok(())
}

impl ServiceSpec {
    /// Checks every field (see the module's invariant); the API's, the add-ons' and the
    /// compose files' specs all pass here before anything stores or starts them.
    pub fn check(&self) -> Result<(), Error> {
        check_image("image", &self.image)?;
        if let Some(command) = &self.command {
            check_args("command", command)?;
        }
        if let Some(entrypoint) = &self.entrypoint {
            check_args("entrypoint", entrypoint)?;
        }
        check_range("count", self.count, &bounds::COUNT)?;
        if let Some(port) = self.port {
            check_range("port", port, &bounds::PORT)?;
        }
        if self.env.0.len() > bounds::MAX_ENV {
            return Err(Error::Invalid(format!(
                "`env` has {} entries; at most {} are accepted",
                self.env.0.len(),
                bounds::MAX_ENV
            )));
        }
        for (key, value) in &self.env.0 {
            EnvKey::parse(key).map_err(|err| Error::Invalid(format!("`env`: {err}")))?;
            if value.len() > bounds::MAX_ENV_VALUE_LEN || value.contains('\0') {
                return Err(Error::Invalid(format!(
                    "`env.{key}` is longer than {} bytes or holds a NUL byte",
                    bounds::MAX_ENV_VALUE_LEN
                )));
            }
        }
        if self.volumes.len() > bounds::MAX_VOLUMES {
            return Err(Error::Invalid(format!(
                "`volumes` has {} entries; at most {} are accepted",
                self.volumes.len(),
                bounds::MAX_VOLUMES
            )));
        }
        for (i, volume) in self.volumes.iter().enumerate() {
            for other in &self.volumes[..i] {
                if other.name == volume.name {
                    return Err(Error::Invalid(format!(
                        "`volumes` names `{}` twice",
                        volume.name
                    )));
                }
                if other.path.overlaps(&volume.path) {
                    return Err(Error::Invalid(format!(
                        "`volumes`: `{}` overlaps `{}`",
                        volume.path, other.path
                    )));
                }
            }
        }
        self.check_health()?;
        for (i, dependency) in self.depends_on.iter().enumerate() {
            if *dependency == self.name {
                return Err(Error::Invalid(format!(
                    "`dependsOn`: service `{}` cannot depend on itself",
                    self.name
                )));
            }
            if self.depends_on[..i].contains(dependency) {
                return Err(Error::Invalid(format!(
                    "`dependsOn` names `{dependency}` twice"
                )));
            }
        }
        Ok(())
    }

    fn check_health(&self) -> Result<(), Error> {
        let health = &self.health;
        if let Some(v) = health.interval_secs {
            check_range("health.intervalSecs", v, &bounds::INTERVAL_SECS)?;
        }
        if let Some(v) = health.timeout_secs {
            check_range("health.timeoutSecs", v, &bounds::TIMEOUT_SECS)?;
        }
        if let Some(v) = health.retries {
            check_range("health.retries", v, &bounds::RETRIES)?;
        }
        if let Some(v) = health.start_period_secs {
            check_range("health.startPeriodSecs", v, &bounds::START_PERIOD_SECS)?;
        }
        if let Some(port) = health.port {
            check_range("health.port", port, &bounds::PORT)?;
        }
        let unused = |field: &str| {
            Error::Invalid(format!(
                "`health.{field}` is not used by a `{}` check",
                serde_json::to_value(health.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ))
        };
        match health.kind {
            ServiceHealthType::None => {
                if health.port.is_some() {
                    return Err(unused("port"));
                }
                if health.command.is_some() {
                    return Err(unused("command"));
                }
                if health.path.is_some() {
                    return Err(unused("path"));
                }
            }
            ServiceHealthType::Tcp | ServiceHealthType::Http => {
                if health.port.or(self.port).is_none() {
                    return Err(Error::Invalid(
                        "`health.port` is required for a tcp or http check when the service has no `port`".to_owned(),
                    ));
                }
                if health.command.is_some() {
                    return Err(unused("command"));
                }
                if health.kind == ServiceHealthType::Tcp && health.path.is_some() {
                    return Err(unused("path"));
                }
                if let Some(path) = &health.path {
                    if !path.starts_with('/')
                        || path.len() > bounds::MAX_PATH_LEN
                        || path.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(Error::Invalid(format!(
                            "`health.path` {path:?} is invalid; use an absolute path without spaces such as `/health`, at most {} bytes",
                            bounds::MAX_PATH_LEN
                        )));
                    }
                }
            }
            ServiceHealthType::Command => {
                let Some(command) = &health.command else {
                    return Err(Error::Invalid(
                        "`health.command` is required for a command check".to_owned(),
                    ));
                };
                check_args("health.command", command)?;
                if health.port.is_some() {
                    return Err(unused("port"));
                }
                if health.path.is_some() {
                    return Err(unused("path"));
                }
            }
        }
        Ok(())
    }

    /// The port a tcp or http check probes.
    pub fn health_port(&self) -> Option<u16> {
        self.health.port.or(self.port)
    }

    /// The hash of everything a container is made from (not the count nor the order of
    /// starts): a service whose hash changed has its containers replaced, and only those.
    pub fn hash(&self) -> String {
        let material = serde_json::json!({
            "name": self.name.as_str(),
            "image": self.image,
            "command": self.command,
            "entrypoint": self.entrypoint,
            "env": self.env.0,
            "volumes": self.volumes,
            "health": self.health,
            "restart": self.restart,
            "size": self.size,
            "port": self.port,
        });
        hex::encode(Sha256::digest(material.to_string().as_bytes()))
    }
}

/// A stored service.
#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub account_id: String,
    pub project_id: String,
    pub source: ServiceSource,
    pub spec: ServiceSpec,
    /// `spec.hash()` when it was stored: the label its containers carry.
    pub spec_hash: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Service {
    pub fn name(&self) -> &ServiceName {
        &self.spec.name
    }
}

/// A service's state as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Containers started, not ready yet (within their start period).
    Starting,
    /// Every container running and passing its check (or running, without one).
    Ready,
    /// Running, but failing its health check.
    Unhealthy,
    /// Exited with a failure, or restarting.
    Crashed,
    /// Count 0: declared, nothing runs.
    Stopped,
    /// Its image is being pulled.
    Pulling,
    /// It cannot start (image missing, pull refused, ...); `error` says why.
    Failed,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Ready => "ready",
            ServiceState::Unhealthy => "unhealthy",
            ServiceState::Crashed => "crashed",
            ServiceState::Stopped => "stopped",
            ServiceState::Pulling => "pulling",
            ServiceState::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: ServiceName::parse("redis").unwrap(),
            image: "redis:7".to_owned(),
            addon: None,
            command: None,
            entrypoint: None,
            env: ServiceEnv::default(),
            volumes: Vec::new(),
            health: ServiceHealth::default(),
            restart: RestartPolicy::Always,
            size: None,
            count: 1,
            port: Some(6379),
            depends_on: Vec::new(),
        }
    }

    /// A change made to a valid spec before it is checked.
    type Change = Box<dyn Fn(&mut ServiceSpec)>;

    #[test]
    fn checks_name_the_field() {
        let cases: Vec<(Change, Option<&str>)> = vec![
            (Box::new(|_| {}), None),
            (Box::new(|s| s.count = 11), Some("`count`")),
            (Box::new(|s| s.port = Some(0)), Some("`port`")),
            (
                Box::new(|s| s.image = "Redis 7".to_owned()),
                Some("`image`"),
            ),
            (Box::new(|s| s.image = String::new()), Some("`image`")),
            (Box::new(|s| s.command = Some(vec![])), Some("`command`")),
            (
                Box::new(|s| {
                    s.env.0.insert("1BAD".to_owned(), "x".to_owned());
                }),
                Some("`env`"),
            ),
            (
                Box::new(|s| {
                    s.health.kind = ServiceHealthType::Command;
                }),
                Some("`health.command`"),
            ),
            (
                Box::new(|s| {
                    s.health.kind = ServiceHealthType::Tcp;
                    s.port = None;
                }),
                Some("`health.port`"),
            ),
            (
                Box::new(|s| {
                    s.health.kind = ServiceHealthType::Tcp;
                }),
                None,
            ),
            (
                Box::new(|s| s.health.retries = Some(0)),
                Some("`health.retries`"),
            ),
            (
                Box::new(|s| s.depends_on = vec![ServiceName::parse("redis").unwrap()]),
                Some("itself"),
            ),
            (
                Box::new(|s| {
                    s.volumes = vec![
                        ServiceVolume {
                            name: VolumeName::parse("a").unwrap(),
                            path: MountPath::parse("/data").unwrap(),
                        },
                        ServiceVolume {
                            name: VolumeName::parse("b").unwrap(),
                            path: MountPath::parse("/data/x").unwrap(),
                        },
                    ]
                }),
                Some("overlaps"),
            ),
        ];
        for (i, (change, expected)) in cases.into_iter().enumerate() {
            let mut s = spec();
            change(&mut s);
            match (s.check(), expected) {
                (Ok(()), None) => {}
                (Err(err), Some(needle)) => {
                    assert!(err.to_string().contains(needle), "case {i}: {err}")
                }
                (result, expected) => panic!("case {i}: {result:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn the_hash_changes_with_what_a_container_is_made_from_only() {
        let base = spec();
        let mut scaled = spec();
        scaled.count = 3;
        scaled.depends_on = vec![ServiceName::parse("db").unwrap()];
        assert_eq!(base.hash(), scaled.hash());
        let mut changed = spec();
        changed
            .env
            .0
            .insert("MAXMEMORY".to_owned(), "10mb".to_owned());
        assert_ne!(base.hash(), changed.hash());
        let mut image = spec();
        image.image = "redis:7.2".to_owned();
        assert_ne!(base.hash(), image.hash());
    }

    #[test]
    fn debug_never_shows_env_values() {
        let mut s = spec();
        s.env.0.insert("PASSWORD".to_owned(), "hunter2".to_owned());
        let shown = format!("{s:?}");
        assert!(shown.contains("PASSWORD"));
        assert!(!shown.contains("hunter2"));
    }
}

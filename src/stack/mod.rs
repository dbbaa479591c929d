//! Compose files: a repository's `compose.yaml` read into a checked stack of services (the
//! public one released as the project's web, the others run as its services), with the
//! order they start in and every key that was refused or ignored, each named with why.
//! Reads text only and executes nothing; the planner gives it the files it asks for.
//! Invariant: a `Stack` that exists has no refused key, names each service validly and
//! once, has one public service with a port, only dependencies that exist and no cycle,
//! and build contexts and env files that are paths inside the repository.

mod order;
pub mod parse;
mod read;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    config::ScaleConfig,
    error::Error,
    model::service::{
        RestartPolicy, ServiceEnv, ServiceHealth, ServiceHealthType, ServiceSpec, ServiceVolume,
    },
    names::{EnvKey, MountPath, ServiceName, VolumeName},
};

pub use order::dependency_order;
pub use read::{duration_secs, memory_bytes, split_words};

/// The file names looked for at the root directory, in this order.
pub const COMPOSE_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// The most services a compose file may declare (a project's services are bounded).
pub const MAX_SERVICES: usize = 32;

/// A key refused before anything runs, and why it cannot be honoured on a shared host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefusedKey {
    /// The key's path in the file, e.g. `services.web.privileged` or
    /// `services.db.volumes[0]`.
    pub key: String,
    pub why: String,
}

/// A key the file sets that has no effect here, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IgnoredKey {
    pub key: String,
    pub reason: String,
}

/// A service's build: a directory of the repository and what to build in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = ComposeBuild)]
pub struct Build {
    /// The build context, as a path of the repository (`.` = its root).
    pub context: String,
    /// The Dockerfile, relative to the context; `Dockerfile` when null.
    pub dockerfile: Option<String>,
    /// The stage built; null = the last one.
    pub target: Option<String>,
    pub args: BTreeMap<String, String>,
}

/// When a dependent may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ComposeCondition)]
pub enum Condition {
    /// Once the dependency runs (or, with a health check, once it is ready: Cantila waits
    /// for readiness either way).
    #[serde(rename = "service_started")]
    Started,
    /// Once the dependency's health check passes.
    #[serde(rename = "service_healthy")]
    Healthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = ComposeDependency)]
pub struct Dependency {
    pub service: String,
    pub condition: Condition,
}

/// A named volume mounted into a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ComposeMount)]
pub struct Mount {
    /// The project's volume (the file's name, lowercased with `_` and `.` as `-`).
    pub volume: String,
    pub path: String,
    pub read_only: bool,
}

/// A compose health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", tag = "type")]
#[schema(as = ComposeHealth)]
pub enum Health {
    /// `disable: true` or `test: ["NONE"]`.
    #[serde(rename = "none")]
    Disabled,
    /// A command run inside the container (`CMD-SHELL` runs `/bin/sh -c`).
    #[serde(rename = "command", rename_all = "camelCase")]
    Command {
        test: Vec<String>,
        interval_secs: Option<u32>,
        timeout_secs: Option<u32>,
        start_period_secs: Option<u32>,
        retries: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
#[schema(as = ComposeRestart)]
pub enum Restart {
    /// Compose's default is `no`; a service here restarts unless told otherwise, since
    /// nobody is at the terminal to start it again.
    #[default]
    Always,
    OnFailure,
    No,
}

/// `deploy.resources.limits`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ComposeLimits)]
pub struct Limits {
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
}

/// One service, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct StackService {
    /// A DNS label: the name other services reach it at.
    pub name: String,
    pub image: Option<String>,
    pub build: Option<Build>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// The env, from `env_file`s then `environment` (which wins), interpolated.
    pub env: BTreeMap<String, String>,
    pub volumes: Vec<Mount>,
    pub depends_on: Vec<Dependency>,
    pub health: Option<Health>,
    pub restart: Restart,
    pub replicas: u32,
    pub limits: Limits,
    /// The port it listens on: its published or exposed port, when it names one.
    pub port: Option<u16>,
}

/// A compose file, checked and ordered.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// The file's path in the repository.
    pub file: String,
    /// The public service: released as the project's web process.
    pub public: StackService,
    pub public_port: u16,
    /// The other services, each after those it depends on.
    pub services: Vec<StackService>,
    /// The project volumes the file declares.
    pub volumes: Vec<String>,
    pub ignored: Vec<IgnoredKey>,
    pub warnings: Vec<String>,
}

/// What the loader needs from the repository: bounded reads of files and checks of
/// directories, by paths of the repository that it has checked never climb out of it.
pub trait Files {
    /// The text of a file, `None` when there is none; `Err` says why it cannot be used
    /// (a symlink, too large, not text).
    fn read(&mut self, path: &str) -> Result<Option<String>, String>;
    /// `Ok` when the path is a real directory of the repository.
    fn directory(&mut self, path: &str) -> Result<(), String>;
}

/// Joins a path relative to `base` (a directory of the repository, "" for its root) and
/// normalises it; `None` when it climbs out of the repository.
pub fn join_inside(base: &str, relative: &str) -> Option<String> {
    let mut parts: Vec<&str> = base
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    })
}

/// The directory of a repository path ("" for a file at the root).
fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Loads `file` (its text read already): parses it, interpolates `${VAR}` from the
/// project's env (`vars`) over the `.env` file beside it, reads the services' `env_file`s,
/// and checks it all. Refused keys fail with a 422 naming each key and why; so do
/// malformed values, unknown services in `depends_on`, cycles and bad names.
pub fn load(
    file: &str,
    text: &str,
    vars: &BTreeMap<String, String>,
    files: &mut dyn Files,
) -> Result<Stack, Error> {
    let mut tree = parse::yaml_tree(text, file)?;
    let dir = dir_of(file);
    let dotenv_path = join_inside(dir, ".env").unwrap_or_else(|| ".env".to_owned());
    let dotenv = match files.read(&dotenv_path) {
        Ok(Some(text)) => parse::dotenv(&text),
        Ok(None) => BTreeMap::new(),
        Err(why) => return Err(Error::Invalid(format!("{dotenv_path}: {why}"))),
    };
    let lookup = |name: &str| vars.get(name).or_else(|| dotenv.get(name)).cloned();
    parse::interpolate_tree(&mut tree, &lookup, "")
        .map_err(|err| Error::Invalid(format!("{file}: {err}")))?;
    let raw = read::read(&tree);
    if !raw.refused.is_empty() {
        return Err(refusal(file, &raw.refused));
    }
    if !raw.invalid.is_empty() {
        return Err(Error::Invalid(format!(
            "{file}: {}",
            raw.invalid.join("; ")
        )));
    }
    check(file, dir, raw, &lookup, files)
}

/// The 422 of refused keys: every key, and why.
pub fn refusal(file: &str, refused: &[RefusedKey]) -> Error {
    let listed: Vec<String> = refused
        .iter()
        .map(|r| format!("`{}`: {}", r.key, r.why))
        .collect();
    Error::Invalid(format!(
        "{file} cannot be deployed: {} refused before anything runs: {}",
        if refused.len() == 1 {
            "this key is"
        } else {
            "these keys are"
        },
        listed.join("; ")
    ))
}

/// Checks a service name: other services reach it at that name (`ServiceName`).
pub fn check_service_name(name: &str) -> Result<(), String> {
    ServiceName::parse(name)
        .map(|_| ())
        .map_err(|err| err.to_string())
}

/// A compose volume name as a project volume's: lowercase, `_` and `.` as `-`.
fn volume_name(compose: &str) -> Result<String, Error> {
    let mapped: String = compose
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '_' || c == '.' { '-' } else { c })
        .collect();
    VolumeName::parse(&mapped)
        .map(|name| name.as_str().to_owned())
        .map_err(|err| Error::Invalid(format!("volume `{compose}`: {err}")))
}

fn check(
    file: &str,
    dir: &str,
    raw: read::RawFile,
    lookup: &dyn Fn(&str) -> Option<String>,
    files: &mut dyn Files,
) -> Result<Stack, Error> {
    let invalid = |why: String| Error::Invalid(format!("{file}: {why}"));
    let mut ignored = raw.ignored;
    let mut warnings = Vec::new();
    let mut declared: Vec<read::RawService> = Vec::new();
    for service in raw.services {
        if !service.profiles.is_empty() {
            ignored.push(IgnoredKey {
                key: format!("services.{}", service.name),
                reason: format!(
                    "it belongs to the profiles {}, which are not started",
                    service.profiles.join(", ")
                ),
            });
            continue;
        }
        declared.push(service);
    }
    if declared.is_empty() {
        return Err(invalid(
            "no service to deploy: declare one under `services`".to_owned(),
        ));
    }
    if declared.len() > MAX_SERVICES {
        return Err(invalid(format!(
            "{} services are declared; at most {MAX_SERVICES} are accepted",
            declared.len()
        )));
    }
    let volume_names: BTreeMap<String, String> = raw
        .volumes
        .iter()
        .map(|name| Ok((name.clone(), volume_name(name)?)))
        .collect::<Result<_, Error>>()
        .map_err(|err| invalid(err.to_string()))?;
    let names: Vec<String> = declared.iter().map(|s| s.name.clone()).collect();

    // The public service: x-cantila's, else the one service that publishes a port.
    let publishing: Vec<&read::RawService> =
        declared.iter().filter(|s| !s.ports.is_empty()).collect();
    let (public_name, public_port) = match &raw.extension.public {
        Some(name) => {
            let Some(service) = declared.iter().find(|s| s.name == *name) else {
                return Err(invalid(format!(
                    "`x-cantila.public` names `{name}`, which is not a service of the file; services: {}",
                    names.join(", ")
                )));
            };
            let port = raw
                .extension
                .port
                .or_else(|| service.ports.first().copied())
                .or_else(|| service.expose.first().copied())
                .ok_or_else(|| {
                    invalid(format!(
                        "the public service `{name}` names no port; set `x-cantila.port`, or publish its container port (`ports: [\"3000\"]`)"
                    ))
                })?;
            (name.clone(), port)
        }
        None => match publishing.as_slice() {
            [only] => {
                let port = raw.extension.port.unwrap_or(only.ports[0]);
                (only.name.clone(), port)
            }
            [] => {
                return Err(invalid(
                    "no service is public: publish the web service's container port (`ports: [\"3000\"]`) or name it with `x-cantila: {public: web, port: 3000}`".to_owned(),
                ))
            }
            several => {
                let listed: Vec<&str> = several.iter().map(|s| s.name.as_str()).collect();
                return Err(invalid(format!(
                    "several services publish ports ({}); name the public one with `x-cantila: {{public: NAME, port: N}}`",
                    listed.join(", ")
                )));
            }
        },
    };
    for service in &declared {
        let public = service.name == public_name;
        if public {
            if service.ports.len() > 1 {
                warnings.push(format!(
                    "the public service `{}` publishes several ports; the edge serves {public_port}",
                    service.name
                ));
            }
        } else if !service.ports.is_empty() {
            ignored.push(IgnoredKey {
                key: format!("services.{}.ports", service.name),
                reason: format!(
                    "only the public service `{public_name}` is published; other services are reached inside the project's network"
                ),
            });
        }
    }

    // Dependencies exist; the order has no cycle.
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for service in &declared {
        for dependency in &service.depends_on {
            if !names.contains(&dependency.service) {
                return Err(invalid(format!(
                    "`services.{}.depends_on` names `{}`, which is not a service of the file",
                    service.name, dependency.service
                )));
            }
        }
        deps.insert(
            service.name.clone(),
            service
                .depends_on
                .iter()
                .map(|d| d.service.clone())
                .collect(),
        );
    }
    let order = dependency_order(&names, &deps).map_err(invalid)?;

    let mut checked: BTreeMap<String, StackService> = BTreeMap::new();
    for service in declared {
        let public = service.name == public_name;
        let service = check_service(
            file,
            dir,
            service,
            public,
            &volume_names,
            lookup,
            files,
            &mut ignored,
            &mut warnings,
        )?;
        checked.insert(service.name.clone(), service);
    }
    let public = checked
        .remove(&public_name)
        .ok_or_else(|| Error::Internal("the public service vanished".to_owned()))?;
    for service in checked.values_mut() {
        // The public service is released last, so nothing can wait for it.
        if service.depends_on.iter().any(|d| d.service == public.name) {
            warnings.push(format!(
                "`{}` depends on the public service `{}`, which is released after the other services; it starts without waiting for it",
                service.name, public.name
            ));
            service.depends_on.retain(|d| d.service != public.name);
        }
    }
    let services: Vec<StackService> = order
        .iter()
        .filter_map(|name| checked.remove(name))
        .collect();
    // Each service is checked as the services API checks one, before anything is built:
    // a value out of bounds is a 422 here rather than a failed deploy.
    for service in &services {
        let image = service
            .image
            .clone()
            .unwrap_or_else(|| "built-image:compose".to_owned());
        service
            .spec(image, None)
            .map_err(|err| Error::Invalid(format!("{file}: {err}")))?;
    }
    Ok(Stack {
        file: file.to_owned(),
        public,
        public_port,
        services,
        volumes: volume_names.into_values().collect(),
        ignored,
        warnings,
    })
}

#[allow(clippy::too_many_arguments)]
fn check_service(
    file: &str,
    dir: &str,
    raw: read::RawService,
    public: bool,
    volume_names: &BTreeMap<String, String>,
    lookup: &dyn Fn(&str) -> Option<String>,
    files: &mut dyn Files,
    ignored: &mut Vec<IgnoredKey>,
    warnings: &mut Vec<String>,
) -> Result<StackService, Error> {
    let name = raw.name.clone();
    let invalid = |why: String| Error::Invalid(format!("{file}: {why}"));
    check_service_name(&name).map_err(invalid)?;
    if !public && name == "web" {
        return Err(invalid(
            "a service other than the public one cannot be named `web`: the project's web instances answer at that name".to_owned(),
        ));
    }
    let build = match raw.build {
        Some(build) => {
            let context = join_inside(dir, &build.context).ok_or_else(|| {
                invalid(format!(
                    "`services.{name}.build.context` `{}` climbs out of the repository",
                    build.context
                ))
            })?;
            files.directory(&context).map_err(|why| {
                invalid(format!(
                    "`services.{name}.build.context` `{}`: {why}",
                    build.context
                ))
            })?;
            if let Some(dockerfile) = &build.dockerfile {
                if dockerfile.starts_with('/') || join_inside(&context, dockerfile).is_none() {
                    return Err(invalid(format!(
                        "`services.{name}.build.dockerfile` `{dockerfile}` is not a path inside the build context"
                    )));
                }
            }
            Some(Build { context, ..build })
        }
        None => None,
    };
    if build.is_some() && raw.image.is_some() {
        ignored.push(IgnoredKey {
            key: format!("services.{name}.image"),
            reason: "the service is built; Cantila tags the image itself".to_owned(),
        });
    }
    let image = if build.is_some() { None } else { raw.image };
    if image.is_none() && build.is_none() {
        return Err(invalid(format!(
            "`services.{name}` has neither `image` nor `build`; give one"
        )));
    }
    if let Some(image) = &image {
        if image.is_empty()
            || image.len() > 512
            || image.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(format!(
                "`services.{name}.image` `{image}` is not an image reference"
            )));
        }
    }

    // env_file entries first, then `environment` over them, as compose does.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (index, (path, required)) in raw.env_files.iter().enumerate() {
        let key = format!("services.{name}.env_file[{index}]");
        let Some(inside) =
            join_inside(dir, path).filter(|_| !path.starts_with('/') && !path.starts_with('~'))
        else {
            return Err(refusal(
                file,
                &[RefusedKey {
                    key,
                    why: format!("`{path}` is outside the repository; env files must be files of the repository"),
                }],
            ));
        };
        match files.read(&inside) {
            Ok(Some(text)) => env.extend(parse::dotenv(&text)),
            Ok(None) if !required => {}
            Ok(None) => {
                return Err(invalid(format!(
                    "`{key}`: `{path}` does not exist at this commit"
                )))
            }
            Err(why) => return Err(invalid(format!("`{key}`: {why}"))),
        }
    }
    for (key, value) in raw.environment {
        match value.or_else(|| lookup(&key)) {
            Some(value) => {
                env.insert(key, value);
            }
            None => ignored.push(IgnoredKey {
                key: format!("services.{name}.environment.{key}"),
                reason:
                    "no value, and no variable of that name is set in the project's env or .env"
                        .to_owned(),
            }),
        }
    }
    for key in env.keys() {
        EnvKey::parse(key)
            .map_err(|err| invalid(format!("`services.{name}.environment`: {err}")))?;
    }

    let mut volumes = Vec::new();
    for mount in raw.volumes {
        let Some(volume) = volume_names.get(&mount.volume) else {
            return Err(invalid(format!(
                "`services.{name}.volumes` mounts `{}`, which the top-level `volumes` does not declare",
                mount.volume
            )));
        };
        let path = MountPath::parse(&mount.path)
            .map_err(|err| invalid(format!("`services.{name}.volumes`: {err}")))?;
        if mount.read_only {
            ignored.push(IgnoredKey {
                key: format!("services.{name}.volumes ({})", mount.volume),
                reason: "read-only mounts are not supported: the volume is mounted read-write"
                    .to_owned(),
            });
        }
        volumes.push(Mount {
            volume: volume.clone(),
            path: path.as_str().to_owned(),
            read_only: false,
        });
    }
    if public && !volumes.is_empty() {
        ignored.push(IgnoredKey {
            key: format!("services.{name}.volumes"),
            reason: "the public service's instances mount the project's own volumes: add them with POST /v1/projects/:id/volumes".to_owned(),
        });
        volumes.clear();
    }
    if public && raw.replicas.is_some() {
        warnings.push(format!(
            "`services.{name}.deploy.replicas` does not scale the public service: set its instances with `cantila scale`"
        ));
    }
    if public && (raw.limits.cpus.is_some() || raw.limits.memory_bytes.is_some()) {
        warnings.push(format!(
            "`services.{name}.deploy.resources.limits` does not size the public service: set the project's size"
        ));
    }
    if public && raw.healthcheck.is_some() {
        warnings.push(format!(
            "`services.{name}.healthcheck` is not the public service's check: its release waits for HTTP on its port (set `[health]` in cantila.toml to change)"
        ));
    }
    if public && raw.restart.is_some() {
        ignored.push(IgnoredKey {
            key: format!("services.{name}.restart"),
            reason: "the web's instances always restart".to_owned(),
        });
    }
    let port = raw
        .ports
        .first()
        .copied()
        .or_else(|| raw.expose.first().copied());
    Ok(StackService {
        name,
        image,
        build,
        command: raw.command,
        entrypoint: raw.entrypoint,
        env,
        volumes,
        depends_on: raw.depends_on,
        health: raw.healthcheck,
        restart: raw.restart.unwrap_or_default(),
        replicas: raw.replicas.unwrap_or(1),
        limits: raw.limits,
        port,
    })
}

/// The smallest size tier that holds the limits (by memory, then CPUs); `None` without
/// limits (the default tier). Limits above every tier take the largest, said in `warn`.
pub fn fit_size(
    limits: &Limits,
    scale: &ScaleConfig,
    warn: &mut dyn FnMut(String),
) -> Option<String> {
    if limits.cpus.is_none() && limits.memory_bytes.is_none() {
        return None;
    }
    let mut tiers: Vec<(&String, &crate::config::SizeTier)> = scale.sizes.iter().collect();
    tiers.sort_by(|a, b| {
        (a.1.memory_mb, a.1.cpus)
            .partial_cmp(&(b.1.memory_mb, b.1.cpus))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let fits = |tier: &crate::config::SizeTier| {
        limits
            .memory_bytes
            .is_none_or(|bytes| u64::from(tier.memory_mb) * 1024 * 1024 >= bytes)
            && limits.cpus.is_none_or(|cpus| tier.cpus >= cpus)
    };
    match tiers.iter().find(|(_, tier)| fits(tier)) {
        Some((name, _)) => Some((*name).clone()),
        None => {
            let largest = tiers.last().map(|(name, _)| (*name).clone());
            if let Some(largest) = &largest {
                warn(format!(
                    "the limits are above every size tier; the largest, `{largest}`, is used"
                ));
            }
            largest
        }
    }
}

/// The compose part of a deploy plan: services in the order they start, the public one
/// last, with what each is made from.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComposePlan {
    /// The compose file, as a path of the repository.
    pub file: String,
    pub public: PublicService,
    /// Service names in the order they are started; the public service is last.
    pub order: Vec<String>,
    pub services: Vec<ComposeServicePlan>,
    /// The project volumes the file declares (names as Cantila keeps them).
    pub volumes: Vec<String>,
    /// Keys that have no effect here, each with why.
    pub ignored: Vec<IgnoredKey>,
    /// Keys refused before anything runs (a plan with any is answered 422 instead).
    pub refused: Vec<RefusedKey>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicService {
    pub service: String,
    /// The container port the edge serves.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComposeServicePlan {
    pub name: String,
    /// True for the service released as the project's web.
    pub public: bool,
    /// The image it runs, when it is not built.
    pub image: Option<String>,
    pub build: Option<Build>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// Names of its env vars (values are never part of a plan).
    pub env_keys: Vec<String>,
    pub volumes: Vec<Mount>,
    pub depends_on: Vec<Dependency>,
    pub health: Option<Health>,
    pub restart: Restart,
    #[schema(minimum = 0, maximum = 10)]
    pub replicas: u32,
    /// The size tier its limits fit; null = the default tier.
    pub size: Option<String>,
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
}

impl StackService {
    /// This service as a service spec running `image` at `size`, checked as the services
    /// API checks one; a value out of bounds is a 422 naming the service.
    pub fn spec(&self, image: String, size: Option<String>) -> Result<ServiceSpec, Error> {
        let named = |err: Error| match err {
            Error::Invalid(message) => {
                Error::Invalid(format!("`services.{}`: {message}", self.name))
            }
            other => other,
        };
        let volumes = self
            .volumes
            .iter()
            .map(|mount| {
                Ok(ServiceVolume {
                    name: VolumeName::parse(&mount.volume)?,
                    path: MountPath::parse(&mount.path)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()
            .map_err(named)?;
        let health = match &self.health {
            None | Some(Health::Disabled) => ServiceHealth::default(),
            Some(Health::Command {
                test,
                interval_secs,
                timeout_secs,
                start_period_secs,
                retries,
            }) => ServiceHealth {
                kind: ServiceHealthType::Command,
                command: Some(test.clone()),
                interval_secs: *interval_secs,
                timeout_secs: *timeout_secs,
                retries: *retries,
                start_period_secs: *start_period_secs,
                ..ServiceHealth::default()
            },
        };
        let spec = ServiceSpec {
            name: ServiceName::parse(&self.name).map_err(named)?,
            image,
            addon: None,
            command: self.command.clone(),
            entrypoint: self.entrypoint.clone(),
            env: ServiceEnv(self.env.clone()),
            volumes,
            health,
            restart: match self.restart {
                Restart::Always => RestartPolicy::Always,
                Restart::OnFailure => RestartPolicy::OnFailure,
                Restart::No => RestartPolicy::No,
            },
            size,
            count: self.replicas,
            port: self.port,
            depends_on: self
                .depends_on
                .iter()
                .map(|dependency| ServiceName::parse(&dependency.service))
                .collect::<Result<_, _>>()
                .map_err(named)?,
        };
        spec.check().map_err(named)?;
        Ok(spec)
    }
}

impl Stack {
    /// The plan's view: each service with what it is made from, in start order.
    pub fn plan(&self, scale: &ScaleConfig) -> ComposePlan {
        let mut warnings = Vec::new();
        let view =
            |service: &StackService, public: bool, warnings: &mut Vec<String>| ComposeServicePlan {
                name: service.name.clone(),
                public,
                image: service.image.clone(),
                build: service.build.clone(),
                command: service.command.clone(),
                entrypoint: service.entrypoint.clone(),
                env_keys: service.env.keys().cloned().collect(),
                volumes: service.volumes.clone(),
                depends_on: service.depends_on.clone(),
                health: service.health.clone(),
                restart: service.restart,
                replicas: service.replicas,
                size: if public {
                    None
                } else {
                    fit_size(&service.limits, scale, &mut |w| {
                        warnings.push(format!("`{}`: {w}", service.name))
                    })
                },
                port: if public {
                    Some(self.public_port)
                } else {
                    service.port
                },
            };
        let mut services: Vec<ComposeServicePlan> = self
            .services
            .iter()
            .map(|service| view(service, false, &mut warnings))
            .collect();
        services.push(view(&self.public, true, &mut warnings));
        ComposePlan {
            file: self.file.clone(),
            public: PublicService {
                service: self.public.name.clone(),
                port: self.public_port,
            },
            order: services.iter().map(|s| s.name.clone()).collect(),
            services,
            volumes: self.volumes.clone(),
            ignored: self.ignored.clone(),
            refused: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;

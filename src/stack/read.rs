//! The compose tree read into typed services: each key compose allows is either used
//! (short and long syntaxes), refused (it cannot be honoured safely on a shared host; the
//! key and why are kept), or ignored (named in the plan with why). Nothing is dropped
//! silently.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Build, Condition, Dependency, Health, IgnoredKey, Limits, Mount, RefusedKey, Restart};

/// One service as the file declares it, before names are checked and the order is found.
#[derive(Debug, Clone, Default)]
pub struct RawService {
    pub name: String,
    pub image: Option<String>,
    pub build: Option<Build>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub environment: BTreeMap<String, Option<String>>,
    /// `env_file` entries: paths relative to the compose file's directory, and whether
    /// each must exist (`required: false` in the long syntax).
    pub env_files: Vec<(String, bool)>,
    pub volumes: Vec<Mount>,
    pub depends_on: Vec<Dependency>,
    pub healthcheck: Option<Health>,
    pub restart: Option<Restart>,
    pub replicas: Option<u32>,
    pub limits: Limits,
    /// Container ports the file publishes (`ports` without a host port).
    pub ports: Vec<u16>,
    pub expose: Vec<u16>,
    pub profiles: Vec<String>,
}

/// The `x-cantila` extension: which service is public, and its port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extension {
    pub public: Option<String>,
    pub port: Option<u16>,
}

/// The whole file as read.
#[derive(Debug, Default)]
pub struct RawFile {
    pub services: Vec<RawService>,
    /// Top-level named volumes, in the file's order.
    pub volumes: Vec<String>,
    pub extension: Extension,
    pub refused: Vec<RefusedKey>,
    pub ignored: Vec<IgnoredKey>,
    /// Values that are malformed (a 422 of their own, not a refusal).
    pub invalid: Vec<String>,
}

impl RawFile {
    fn refuse(&mut self, key: impl Into<String>, why: impl Into<String>) {
        self.refused.push(RefusedKey {
            key: key.into(),
            why: why.into(),
        });
    }

    fn ignore(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.ignored.push(IgnoredKey {
            key: key.into(),
            reason: reason.into(),
        });
    }

    fn invalid(&mut self, key: &str, why: impl std::fmt::Display) {
        self.invalid.push(format!("`{key}` {why}"));
    }
}

/// Keys of a service that are accepted but have no effect here, with why.
const IGNORED_SERVICE_KEYS: &[(&str, &str)] = &[
    ("container_name", "Cantila names containers itself"),
    ("hostname", "services are reached at their service name"),
    ("domainname", "services are reached at their service name"),
    (
        "networks",
        "all services of a project share the project's private network",
    ),
    (
        "links",
        "all services of a project reach each other by name",
    ),
    (
        "external_links",
        "containers outside the project are never reachable",
    ),
    ("labels", "Cantila sets its own labels"),
    ("logging", "Cantila collects the logs itself"),
    ("stop_grace_period", "Cantila's stop timeout applies"),
    ("stop_signal", "containers are stopped with SIGTERM"),
    ("user", "the image's USER applies"),
    ("working_dir", "the image's WORKDIR applies"),
    ("tmpfs", "not supported"),
    ("shm_size", "not supported"),
    ("ulimits", "the engine's defaults apply"),
    ("sysctls", "the engine's defaults apply"),
    ("cap_drop", "not supported"),
    ("read_only", "not supported"),
    ("init", "not supported"),
    ("stdin_open", "services run without a terminal"),
    ("tty", "services run without a terminal"),
    ("extra_hosts", "not supported"),
    ("dns", "the engine's DNS serves the project's network"),
    (
        "dns_search",
        "the engine's DNS serves the project's network",
    ),
    ("dns_opt", "the engine's DNS serves the project's network"),
    ("mac_address", "not supported"),
    (
        "pull_policy",
        "an image missing locally is pulled; a build is always built",
    ),
    ("platform", "the server's own platform is used"),
    ("scale", "use `deploy.replicas`"),
    ("mem_limit", "use `deploy.resources.limits.memory`"),
    ("memswap_limit", "use `deploy.resources.limits.memory`"),
    ("mem_reservation", "use `deploy.resources.limits.memory`"),
    ("cpus", "use `deploy.resources.limits.cpus`"),
    ("cpu_shares", "use `deploy.resources.limits.cpus`"),
    ("cpu_quota", "use `deploy.resources.limits.cpus`"),
    ("cpuset", "use `deploy.resources.limits.cpus`"),
    ("oom_score_adj", "not supported"),
    ("oom_kill_disable", "not supported"),
    ("pids_limit", "not supported"),
    ("isolation", "not supported"),
    (
        "configs",
        "not supported; put the file in the image or a volume",
    ),
    (
        "secrets",
        "not supported; set the value as a secret env var of the project",
    ),
    ("annotations", "not supported"),
    ("attach", "not supported"),
    ("develop", "a development-only setting"),
    ("post_start", "not supported"),
    ("pre_stop", "not supported"),
    ("storage_opt", "not supported"),
    ("blkio_config", "not supported"),
    ("group_add", "not supported"),
    (
        "use_api_socket",
        "the engine's socket is never given to a container",
    ),
];

/// Reads the whole tree. Never fails: refusals, invalid values and ignored keys are
/// collected so one answer names them all.
pub fn read(tree: &Value) -> RawFile {
    let mut file = RawFile::default();
    let Some(top) = tree.as_object() else {
        file.invalid("(top)", "is not a mapping");
        return file;
    };
    for (key, value) in top {
        match key.as_str() {
            "services" => {}
            "version" => file.ignore(
                "version",
                "obsolete in compose; the file is read as the compose specification",
            ),
            "name" => file.ignore("name", "the project's own name is used"),
            "volumes" => read_volumes(&mut file, value),
            "networks" => read_networks(&mut file, value),
            "configs" | "secrets" => file.ignore(key.clone(), "not supported"),
            "include" => file.refuse(
                "include",
                "other compose files are not read; put every service in this file",
            ),
            "x-cantila" => file.extension = read_extension(&mut file, value),
            other if other.starts_with("x-") => {}
            other => file.ignore(other, "not a key of the compose specification"),
        }
    }
    match top.get("services") {
        Some(Value::Object(services)) => {
            for (name, value) in services {
                let service = read_service(&mut file, name, value);
                file.services.push(service);
            }
        }
        Some(_) => file.invalid("services", "is not a mapping of service names to services"),
        None => file.invalid("services", "is missing; declare at least one service"),
    }
    file
}

fn read_extension(file: &mut RawFile, value: &Value) -> Extension {
    let mut extension = Extension::default();
    let Some(map) = value.as_object() else {
        file.invalid(
            "x-cantila",
            "is not a mapping; write `x-cantila: {public: web, port: 3000}`",
        );
        return extension;
    };
    for (key, value) in map {
        let path = format!("x-cantila.{key}");
        match key.as_str() {
            "public" => match value.as_str() {
                Some(name) => extension.public = Some(name.to_owned()),
                None => file.invalid(&path, "is not a service name"),
            },
            "port" => extension.port = port_of(file, &path, value),
            _ => file.invalid(
                &path,
                "is not a key of x-cantila; it accepts `public` and `port`",
            ),
        }
    }
    extension
}

fn read_volumes(file: &mut RawFile, value: &Value) {
    let Some(map) = value.as_object() else {
        if !value.is_null() {
            file.invalid("volumes", "is not a mapping of volume names");
        }
        return;
    };
    for (name, spec) in map {
        file.volumes.push(name.clone());
        let Some(spec) = spec.as_object() else {
            continue;
        };
        for (key, value) in spec {
            let path = format!("volumes.{name}.{key}");
            match key.as_str() {
                "external" if is_true(value) || value.is_object() => file.refuse(
                    path,
                    "an external volume was made outside this project and could hold another project's data",
                ),
                "external" => {}
                "driver" | "driver_opts" => file.refuse(
                    path,
                    "volume drivers and their options can mount host paths or remote storage; Cantila's volumes use the local driver",
                ),
                "name" => file.ignore(path, "Cantila names the volume itself"),
                "labels" => file.ignore(path, "Cantila sets its own labels"),
                _ => file.ignore(path, "not a key of a compose volume"),
            }
        }
    }
}

fn read_networks(file: &mut RawFile, value: &Value) {
    let Some(map) = value.as_object() else {
        return;
    };
    for (name, spec) in map {
        let external = spec
            .as_object()
            .and_then(|spec| spec.get("external"))
            .is_some_and(|value| is_true(value) || value.is_object());
        if external {
            file.refuse(
                format!("networks.{name}.external"),
                "an external network would join this project's containers to containers outside it",
            );
        } else {
            file.ignore(
                format!("networks.{name}"),
                "all services of a project share the project's private network",
            );
        }
    }
}

fn is_true(value: &Value) -> bool {
    matches!(value, Value::Bool(true)) || value.as_str() == Some("true")
}

fn read_service(file: &mut RawFile, name: &str, value: &Value) -> RawService {
    let mut service = RawService {
        name: name.to_owned(),
        ..RawService::default()
    };
    let Some(map) = value.as_object() else {
        file.invalid(&format!("services.{name}"), "is not a mapping");
        return service;
    };
    for (key, value) in map {
        let path = format!("services.{name}.{key}");
        match key.as_str() {
            "image" => service.image = string_of(file, &path, value),
            "build" => service.build = read_build(file, &path, value),
            "command" => service.command = command_of(file, &path, value),
            "entrypoint" => service.entrypoint = command_of(file, &path, value),
            "environment" => service.environment = environment_of(file, &path, value),
            "env_file" => service.env_files = env_files_of(file, &path, value),
            "volumes" => service.volumes = mounts_of(file, &path, value),
            "depends_on" => service.depends_on = depends_on_of(file, &path, value),
            "healthcheck" => service.healthcheck = health_of(file, &path, value),
            "restart" => service.restart = restart_of(file, &path, value),
            "deploy" => read_deploy(file, &path, value, &mut service),
            "ports" => service.ports = ports_of(file, &path, value),
            "expose" => service.expose = expose_of(file, &path, value),
            "profiles" => {
                service.profiles = strings_of(file, &path, value);
            }
            "privileged" => {
                if is_true(value) {
                    file.refuse(path, "a privileged container has every capability and the host's devices: it could take over the host");
                }
            }
            "network_mode" => match value.as_str().unwrap_or_default() {
                "" | "bridge" | "default" => {}
                "none" => file.ignore(path, "services always join the project's private network"),
                "host" => file.refuse(
                    path,
                    "the host's network lets a container bind any port of the host and reach every local service, other projects' included",
                ),
                _ => file.refuse(
                    path,
                    "sharing another container's network could join this service to containers outside the project",
                ),
            },
            "pid" => {
                if !value.is_null() && value.as_str() != Some("") {
                    file.refuse(path, "sharing the host's (or another container's) process namespace lets the container see and signal its processes");
                }
            }
            "ipc" => match value.as_str().unwrap_or_default() {
                "" | "private" | "shareable" => {}
                _ => file.refuse(path, "sharing the host's (or another container's) IPC namespace exposes its shared memory"),
            },
            "uts" | "userns_mode" => {
                if value.as_str() == Some("host") {
                    file.refuse(path, "sharing the host's namespace takes away the container's isolation from the host");
                }
            }
            "devices" | "device_cgroup_rules" | "gpus" => {
                if !is_empty(value) {
                    file.refuse(path, "passes the host's devices into the container");
                }
            }
            "cap_add" => {
                if !is_empty(value) {
                    file.refuse(path, "adds kernel capabilities beyond the engine's default set, which weakens the container's isolation from the host");
                }
            }
            "security_opt" => {
                if !is_empty(value) {
                    file.refuse(path, "security options can switch off the seccomp and AppArmor confinement that isolates containers from the host");
                }
            }
            "cgroup_parent" | "cgroup" => file.refuse(path, "placing the container in a cgroup of the host's choosing escapes Cantila's limits"),
            "volumes_from" => file.refuse(path, "mounts the volumes of containers named by the file, which could be another project's"),
            "runtime" => file.refuse(path, "only the engine's default runtime is used"),
            "extends" => file.refuse(path, "services from other files are not read; write the service out in this file"),
            other => match IGNORED_SERVICE_KEYS.iter().find(|(key, _)| *key == other) {
                Some((_, reason)) => file.ignore(path, *reason),
                None if other.starts_with("x-") => {}
                None => file.ignore(path, "not a key of a compose service"),
            },
        }
    }
    service
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::String(text) => text.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// A scalar as text: compose accepts numbers and booleans where it means strings.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn string_of(file: &mut RawFile, path: &str, value: &Value) -> Option<String> {
    let text = scalar(value);
    if text.is_none() {
        file.invalid(path, "is not a string");
    }
    text
}

fn strings_of(file: &mut RawFile, path: &str, value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| string_of(file, &format!("{path}[{index}]"), item))
            .collect(),
        _ => {
            file.invalid(path, "is not a list of strings");
            Vec::new()
        }
    }
}

/// `command`/`entrypoint`: a list is the arguments; a string is split like a shell would
/// split words (quotes and backslashes), without running a shell, as compose does.
fn command_of(file: &mut RawFile, path: &str, value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Null => None,
        Value::String(text) => match split_words(text) {
            Ok(words) => Some(words),
            Err(why) => {
                file.invalid(path, why);
                None
            }
        },
        Value::Array(_) => Some(strings_of(file, path, value)),
        _ => {
            file.invalid(path, "is not a string or a list of arguments");
            None
        }
    }
}

/// Splits a command line into words as POSIX shells do for quoting (single quotes,
/// double quotes with backslash escapes, backslashes outside quotes). No expansion.
pub fn split_words(text: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("has a single quote that is never closed"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("ends inside a double quote"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("has a double quote that is never closed"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `environment` as a mapping (`KEY: value`) or a list (`KEY=value`, or `KEY` alone: the
/// value comes from the interpolation variables, `None` here).
fn environment_of(
    file: &mut RawFile,
    path: &str,
    value: &Value,
) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let text = match value {
                    Value::Null => None,
                    other => match scalar(other) {
                        Some(text) => Some(text),
                        None => {
                            file.invalid(&format!("{path}.{key}"), "is not a string");
                            continue;
                        }
                    },
                };
                env.insert(key.clone(), text);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let Some(entry) = string_of(file, &format!("{path}[{index}]"), item) else {
                    continue;
                };
                match entry.split_once('=') {
                    Some((key, value)) => env.insert(key.to_owned(), Some(value.to_owned())),
                    None => env.insert(entry, None),
                };
            }
        }
        Value::Null => {}
        _ => file.invalid(path, "is not a mapping or a list of KEY=value"),
    }
    env
}

fn env_files_of(file: &mut RawFile, path: &str, value: &Value) -> Vec<(String, bool)> {
    let entries: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut files = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let at = format!("{path}[{index}]");
        match entry {
            Value::String(text) => files.push((text.clone(), true)),
            Value::Object(map) => {
                let Some(file_path) = map.get("path").and_then(Value::as_str) else {
                    file.invalid(&at, "has no `path`");
                    continue;
                };
                let required = !matches!(map.get("required"), Some(Value::Bool(false)));
                files.push((file_path.to_owned(), required));
            }
            _ => file.invalid(&at, "is not a path"),
        }
    }
    files
}

/// `volumes` of a service: `name:/path[:ro]` or the long syntax. Host paths (bind mounts)
/// are refused; anonymous volumes (`/path` alone) are ignored.
fn mounts_of(file: &mut RawFile, path: &str, value: &Value) -> Vec<Mount> {
    let Some(items) = value.as_array() else {
        file.invalid(path, "is not a list of volumes");
        return Vec::new();
    };
    let mut mounts = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let at = format!("{path}[{index}]");
        let (kind, source, target, read_only) = match item {
            Value::String(text) => {
                let parts: Vec<&str> = text.split(':').collect();
                match parts.as_slice() {
                    [target] => ("volume", String::new(), (*target).to_owned(), false),
                    [source, target] => ("auto", (*source).to_owned(), (*target).to_owned(), false),
                    [source, target, mode] => (
                        "auto",
                        (*source).to_owned(),
                        (*target).to_owned(),
                        mode.split(',').any(|m| m == "ro"),
                    ),
                    _ => {
                        file.invalid(&at, format!("`{text}` is not `name:/path[:ro]`"));
                        continue;
                    }
                }
            }
            Value::Object(map) => {
                let kind = map.get("type").and_then(Value::as_str).unwrap_or("volume");
                let source = map
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let Some(target) = map.get("target").and_then(Value::as_str) else {
                    file.invalid(&at, "has no `target`");
                    continue;
                };
                let read_only = map.get("read_only").is_some_and(is_true);
                let kind = match kind {
                    "volume" => "volume",
                    "bind" => "bind",
                    "tmpfs" => "tmpfs",
                    _ => "other",
                };
                (kind, source, target.to_owned(), read_only)
            }
            _ => {
                file.invalid(&at, "is not a volume");
                continue;
            }
        };
        let bind = kind == "bind"
            || (kind == "auto"
                && (source.starts_with('/')
                    || source.starts_with('.')
                    || source.starts_with('~')
                    || source.contains('/')));
        if bind {
            file.refuse(
                at,
                format!("`{source}` is a path of the host: a bind mount lets the container read and change the host's files; use a named volume"),
            );
        } else if kind == "other" {
            file.refuse(at, "only named volumes are mounted");
        } else if kind == "tmpfs" {
            file.ignore(at, "tmpfs mounts are not supported");
        } else if source.is_empty() {
            file.ignore(
                at,
                format!("an anonymous volume at `{target}` is not kept; name it (`name:{target}`) to keep its data"),
            );
        } else {
            mounts.push(Mount {
                volume: source,
                path: target,
                read_only,
            });
        }
    }
    mounts
}

fn depends_on_of(file: &mut RawFile, path: &str, value: &Value) -> Vec<Dependency> {
    match value {
        Value::Array(_) => strings_of(file, path, value)
            .into_iter()
            .map(|service| Dependency {
                service,
                condition: Condition::Started,
            })
            .collect(),
        Value::Object(map) => {
            let mut out = Vec::new();
            for (service, spec) in map {
                let at = format!("{path}.{service}");
                let condition = match spec.get("condition").and_then(Value::as_str) {
                    None | Some("service_started") => Condition::Started,
                    Some("service_healthy") => Condition::Healthy,
                    Some("service_completed_successfully") => {
                        file.ignore(
                            format!("{at}.condition"),
                            "`service_completed_successfully` is waited for as `service_started`: services are long-running here",
                        );
                        Condition::Started
                    }
                    Some(other) => {
                        file.invalid(
                            &format!("{at}.condition"),
                            format!("`{other}` is not service_started, service_healthy or service_completed_successfully"),
                        );
                        Condition::Started
                    }
                };
                if let Some(spec) = spec.as_object() {
                    for key in spec
                        .keys()
                        .filter(|k| !matches!(k.as_str(), "condition" | "required"))
                    {
                        file.ignore(format!("{at}.{key}"), "not supported");
                    }
                    if matches!(spec.get("required"), Some(Value::Bool(false))) {
                        file.ignore(
                            format!("{at}.required"),
                            "every dependency is required here",
                        );
                    }
                }
                out.push(Dependency {
                    service: service.clone(),
                    condition,
                });
            }
            out
        }
        _ => {
            file.invalid(path, "is not a list or a mapping of services");
            Vec::new()
        }
    }
}

fn health_of(file: &mut RawFile, path: &str, value: &Value) -> Option<Health> {
    let Some(map) = value.as_object() else {
        file.invalid(path, "is not a mapping");
        return None;
    };
    if map.get("disable").is_some_and(is_true) {
        return Some(Health::Disabled);
    }
    let mut test: Option<Vec<String>> = None;
    let mut secs = BTreeMap::new();
    let mut retries = None;
    for (key, value) in map {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "test" => {
                test = match value {
                    Value::String(text) => {
                        Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), text.clone()])
                    }
                    Value::Array(_) => {
                        let words = strings_of(file, &at, value);
                        match words.first().map(String::as_str) {
                            Some("NONE") => return Some(Health::Disabled),
                            Some("CMD") if words.len() > 1 => Some(words[1..].to_vec()),
                            Some("CMD-SHELL") if words.len() == 2 => Some(vec![
                                "/bin/sh".to_owned(),
                                "-c".to_owned(),
                                words[1].clone(),
                            ]),
                            _ => {
                                file.invalid(&at, "is not [\"CMD\", args...], [\"CMD-SHELL\", command] or [\"NONE\"]");
                                None
                            }
                        }
                    }
                    _ => {
                        file.invalid(&at, "is not a command");
                        None
                    }
                }
            }
            "interval" | "timeout" | "start_period" => match value.as_str().map(duration_secs) {
                Some(Ok(value)) => {
                    secs.insert(key.clone(), value);
                }
                Some(Err(why)) => file.invalid(&at, why),
                None => file.invalid(&at, "is not a duration such as `10s` or `1m30s`"),
            },
            "retries" => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => retries = Some(n),
                None => file.invalid(&at, "is not a whole number"),
            },
            "disable" => {}
            "start_interval" => file.ignore(at, "`interval` applies during the start period too"),
            _ => file.ignore(at, "not a key of a compose healthcheck"),
        }
    }
    let Some(test) = test else {
        file.invalid(path, "has no `test`");
        return None;
    };
    Some(Health::Command {
        test,
        interval_secs: secs.get("interval").copied(),
        timeout_secs: secs.get("timeout").copied(),
        start_period_secs: secs.get("start_period").copied(),
        retries,
    })
}

/// A compose duration (`1m30s`, `500ms`, `2h`) in whole seconds, rounded up.
pub fn duration_secs(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a duration such as `10s`, `500ms` or `1m30s`");
    let mut total_ms: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "us" | "µs" | "ns" => 0.001,
            _ => return Err(bad()),
        };
        total_ms = total_ms.saturating_add((number * scale).ceil() as u64);
        rest = &rest[unit_len..];
    }
    u32::try_from(total_ms.div_ceil(1000)).map_err(|_| bad())
}

fn restart_of(file: &mut RawFile, path: &str, value: &Value) -> Option<Restart> {
    match value.as_str() {
        Some("always") | Some("unless-stopped") => Some(Restart::Always),
        Some("no") => Some(Restart::No),
        Some(policy) if policy == "on-failure" || policy.starts_with("on-failure:") => {
            if policy != "on-failure" {
                file.ignore(path, "the retry count of `on-failure:N` is not applied: the engine retries without a limit");
            }
            Some(Restart::OnFailure)
        }
        _ => {
            file.invalid(
                path,
                "is not `no`, `always`, `on-failure` or `unless-stopped`",
            );
            None
        }
    }
}

fn read_deploy(file: &mut RawFile, path: &str, value: &Value, service: &mut RawService) {
    let Some(map) = value.as_object() else {
        file.invalid(path, "is not a mapping");
        return;
    };
    for (key, value) in map {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "replicas" => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => service.replicas = Some(n),
                None => file.invalid(&at, "is not a whole number"),
            },
            "resources" => {
                let Some(resources) = value.as_object() else {
                    file.invalid(&at, "is not a mapping");
                    continue;
                };
                for (key, value) in resources {
                    let at = format!("{at}.{key}");
                    if key != "limits" {
                        file.ignore(at, "only limits are applied (as a size tier)");
                        continue;
                    }
                    service.limits = limits_of(file, &at, value);
                }
            }
            "restart_policy" => file.ignore(at, "use the service's `restart`"),
            _ => file.ignore(at, "not supported on a single server"),
        }
    }
}

fn limits_of(file: &mut RawFile, path: &str, value: &Value) -> Limits {
    let mut limits = Limits::default();
    let Some(map) = value.as_object() else {
        file.invalid(path, "is not a mapping");
        return limits;
    };
    for (key, value) in map {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "cpus" => match scalar(value).and_then(|text| text.parse::<f64>().ok()) {
                Some(cpus) if cpus > 0.0 && cpus.is_finite() => limits.cpus = Some(cpus),
                _ => file.invalid(&at, "is not a positive number of CPUs"),
            },
            "memory" => match scalar(value).as_deref().map(memory_bytes) {
                Some(Ok(bytes)) => limits.memory_bytes = Some(bytes),
                Some(Err(why)) => file.invalid(&at, why),
                None => file.invalid(&at, "is not a size such as `512m`"),
            },
            _ => file.ignore(at, "not applied"),
        }
    }
    limits
}

/// A compose size (`512m`, `1g`, `1048576`, `256mb`) in bytes.
pub fn memory_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a size such as `512m` or `1g`");
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let number: f64 = lower[..digits].parse().map_err(|_| bad())?;
    let scale: u64 = match lower[digits..].trim() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = number * scale as f64;
    if bytes < 1.0 || !bytes.is_finite() {
        return Err(bad());
    }
    Ok(bytes as u64)
}

fn port_of(file: &mut RawFile, path: &str, value: &Value) -> Option<u16> {
    match scalar(value).and_then(|text| text.parse::<u16>().ok()) {
        Some(port) if port > 0 => Some(port),
        _ => {
            file.invalid(path, "is not a port (1..=65535)");
            None
        }
    }
}

/// `ports`: a container port alone publishes it through the edge; a host port binding is
/// refused (only the edge listens on the host).
fn ports_of(file: &mut RawFile, path: &str, value: &Value) -> Vec<u16> {
    let Some(items) = value.as_array() else {
        file.invalid(path, "is not a list of ports");
        return Vec::new();
    };
    let mut ports = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let at = format!("{path}[{index}]");
        let (published, target, protocol) = match item {
            Value::Object(map) => (
                map.get("published").and_then(scalar),
                map.get("target").cloned().unwrap_or(Value::Null),
                map.get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("tcp")
                    .to_owned(),
            ),
            other => {
                let Some(text) = scalar(other) else {
                    file.invalid(&at, "is not a port");
                    continue;
                };
                let (spec, protocol) = match text.split_once('/') {
                    Some((spec, protocol)) => (spec.to_owned(), protocol.to_owned()),
                    None => (text.clone(), "tcp".to_owned()),
                };
                match spec.rsplit_once(':') {
                    Some((host, target)) => (
                        Some(host.to_owned()),
                        Value::String(target.to_owned()),
                        protocol,
                    ),
                    None => (None, Value::String(spec), protocol),
                }
            }
        };
        if let Some(host) = published.filter(|host| !host.is_empty()) {
            file.refuse(
                at,
                format!("binds `{host}` on the host: only Cantila's edge listens on the host; publish the container port alone (`\"{}\"`) and the edge serves it", scalar(&target).unwrap_or_default()),
            );
            continue;
        }
        if protocol != "tcp" {
            file.ignore(at, "only TCP is served by the edge");
            continue;
        }
        if let Some(port) = port_of(file, &at, &target) {
            ports.push(port);
        }
    }
    ports
}

fn expose_of(file: &mut RawFile, path: &str, value: &Value) -> Vec<u16> {
    let Some(items) = value.as_array() else {
        file.invalid(path, "is not a list of ports");
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            let at = format!("{path}[{index}]");
            let text = scalar(item).unwrap_or_default();
            let port = text.split('/').next().unwrap_or_default();
            port_of(file, &at, &Value::String(port.to_owned()))
        })
        .collect()
}

fn read_build(file: &mut RawFile, path: &str, value: &Value) -> Option<Build> {
    let mut build = Build {
        context: ".".to_owned(),
        ..Build::default()
    };
    let map: Map<String, Value> = match value {
        Value::String(context) => {
            build.context = context.clone();
            return check_context(file, path, build);
        }
        Value::Object(map) => map.clone(),
        _ => {
            file.invalid(path, "is not a context path or a mapping");
            return None;
        }
    };
    for (key, value) in &map {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "context" => build.context = string_of(file, &at, value).unwrap_or_default(),
            "dockerfile" => build.dockerfile = string_of(file, &at, value),
            "target" => build.target = string_of(file, &at, value),
            "args" => {
                for (name, value) in environment_of(file, &at, value) {
                    match value {
                        Some(value) => {
                            build.args.insert(name, value);
                        }
                        None => file.ignore(
                            format!("{at}.{name}"),
                            "a build arg without a value takes none here",
                        ),
                    }
                }
            }
            "network" => {
                if value.as_str() == Some("host") {
                    file.refuse(
                        at,
                        "a build on the host's network reaches every local service of the host",
                    );
                } else {
                    file.ignore(at, "builds run on the engine's build network");
                }
            }
            "ssh" => file.refuse(at, "forwards the server's SSH agent or keys into the build"),
            "privileged" => {
                if is_true(value) {
                    file.refuse(at, "a privileged build step has full access to the host");
                }
            }
            "entitlements" => file.refuse(
                at,
                "build entitlements lift the build's isolation from the host",
            ),
            "additional_contexts" => file.refuse(
                at,
                "extra contexts may name host paths; keep the build inside its context",
            ),
            "dockerfile_inline" => file.ignore(at, "not supported; commit the Dockerfile"),
            "secrets" => file.ignore(at, "use the project's build secrets"),
            _ => file.ignore(at, "not applied to Cantila's builds"),
        }
    }
    check_context(file, path, build)
}

/// A build context is a directory of the repository: no URL, no absolute path, and it may
/// not climb out of the repository (checked again against the tree by the planner).
fn check_context(file: &mut RawFile, path: &str, build: Build) -> Option<Build> {
    let context = build.context.as_str();
    if context.contains("://")
        || context.starts_with("git@")
        || context.starts_with('/')
        || context.starts_with('~')
    {
        file.refuse(
            format!("{path}.context"),
            format!("`{context}` is not a directory of the repository: a build's context must be inside it"),
        );
        return None;
    }
    Some(build)
}

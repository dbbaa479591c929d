//! The Docker engine, the runtime's implementation on one machine: builds, containers,
//! networks (`networks`), pulls (`pull`), logs, resource samples (`stats`), volumes and archives (`data`);
//! `DockerRuntime` (`lazy`) is the `ContainerRuntime` services hold, connected on first use.
//! Sole user of bollard.
//! Invariant: no bollard type appears outside this module; the API version is negotiated
//! with the engine (Debian's 20.10 speaks 1.41), never hard-wired.

use std::{collections::HashMap, time::Duration};

use bollard::{
    container::LogOutput,
    models::{
        ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, NetworkingConfig,
        RestartPolicy, RestartPolicyNameEnum,
    },
    query_parameters::{
        BuildImageOptions, CreateContainerOptions, ListContainersOptions, LogsOptions,
        RemoveContainerOptions, RemoveImageOptions, StopContainerOptions,
    },
    Docker,
};
use futures_util::StreamExt;

use crate::{
    config::BuilderKind,
    labels::Filter,
    runtime::{
        BuildRequest, ContainerLogLine, ContainerSpec, ContainerStatus, ContainerSummary,
        OutputStream, RegistryCredential, RuntimeError,
    },
};

mod attach;
mod buildkit;
mod cgroup;
mod data;
mod lazy;
mod networks;
mod protobuf;
mod pull;
mod session;
mod stats;

pub use lazy::DockerRuntime;

impl From<bollard::errors::Error> for RuntimeError {
    fn from(err: bollard::errors::Error) -> Self {
        match err {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message,
            } => RuntimeError::NotFound(message),
            bollard::errors::Error::DockerResponseServerError { message, .. } => {
                RuntimeError::Engine(message)
            }
            other => RuntimeError::Unreachable(other.to_string()),
        }
    }
}

/// A cheap-clone handle to the engine.
#[derive(Clone)]
pub struct Engine {
    client: Docker,
    /// Held while a network is created (see `ensure_network`).
    network_creation: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Where the engine listens, for the BuildKit requests bollard cannot make.
    endpoint: session::Endpoint,
    /// Samples containers from their cgroup files, remembering what inspect told.
    kernel: std::sync::Arc<stats::KernelSampler>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// The frames of `GET /containers/:id/logs?follow&timestamps`, owning the client so the
/// stream can outlive the caller's borrow.
fn async_stream_of_logs(
    client: Docker,
    id: String,
    since: i32,
) -> impl futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send + 'static {
    futures_util::stream::once(async move {
        client.logs(
            &id,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                timestamps: true,
                since,
                tail: "all".to_owned(),
                ..Default::default()
            }),
        )
    })
    .flatten()
}

/// Splits one log frame (`<RFC 3339 time> <text>` per line) into lines. A piece without a
/// readable timestamp (never expected) takes the previous line's time, so it is kept.
fn split_log_frame(message: &[u8], stream: OutputStream) -> Vec<ContainerLogLine> {
    let text = String::from_utf8_lossy(message);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let mut lines = Vec::new();
    let mut last_ns = 0;
    for piece in text.split('\n') {
        let (stamp, rest) = piece.split_once(' ').unwrap_or((piece, ""));
        let (at_ns, rest) = match crate::clock::parse_nanos(stamp) {
            Some(at_ns) => (at_ns, rest),
            None => (last_ns, piece),
        };
        last_ns = at_ns;
        lines.push(ContainerLogLine {
            stream,
            at_ns,
            text: rest.strip_suffix('\r').unwrap_or(rest).to_owned(),
        });
    }
    lines
}

const CPU_PERIOD_MICROS: i64 = 100_000;

/// How long one Engine API request may take, as bollard's local default does.
const REQUEST_TIMEOUT_SECS: u64 = 120;

impl Engine {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and negotiates the
    /// API version down to what the engine speaks.
    pub async fn connect() -> Result<Self, RuntimeError> {
        Self::connect_at(None).await
    }

    /// Connects to the engine on `socket`, or the local default when `None`.
    pub async fn connect_at(socket: Option<&std::path::Path>) -> Result<Self, RuntimeError> {
        let client = match socket {
            Some(path) => Docker::connect_with_socket(
                &path.to_string_lossy(),
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
            None => Docker::connect_with_local_defaults(),
        }
        .map_err(|err| RuntimeError::Unreachable(err.to_string()))?;
        let client = client
            .negotiate_version()
            .await
            .map_err(|err| RuntimeError::Unreachable(err.to_string()))?;
        client
            .ping()
            .await
            .map_err(|err| RuntimeError::Unreachable(err.to_string()))?;
        Ok(Self {
            client,
            network_creation: Default::default(),
            endpoint: session::Endpoint::of(socket),
            kernel: Default::default(),
        })
    }

    /// The engine's version and API version, for logs and diagnostics.
    pub async fn version(&self) -> Result<(String, String), RuntimeError> {
        let version = self.client.version().await?;
        Ok((
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default(),
        ))
    }

    /// Builds an image, handing every output line to `on_line` as it arrives (with every
    /// build secret's value masked). Returns the image id. BuildKit builds it unless the
    /// request asks for the classic builder or the engine cannot give BuildKit; the log
    /// then says why the classic builder runs.
    pub async fn build(
        &self,
        mut request: BuildRequest,
        mut on_line: impl FnMut(&str) + Send,
    ) -> Result<String, RuntimeError> {
        let mask = buildkit::Mask::new(&request);
        let mut on_line = move |line: &str| on_line(&mask.apply(line));
        let masked = buildkit::Mask::new(&request);
        let context = bytes::Bytes::from(std::mem::take(&mut request.context_tar));
        let reason = match request.builder {
            BuilderKind::Classic => "[build] builder = \"classic\" in the configuration".to_owned(),
            BuilderKind::Auto => {
                let api = self.client.client_version();
                let built = buildkit::build(
                    &self.endpoint,
                    (api.major_version, api.minor_version),
                    &request,
                    context.clone(),
                    &mut on_line,
                )
                .await;
                match built {
                    Ok(buildkit::Outcome::Built(id)) => return Ok(id),
                    Ok(buildkit::Outcome::Unavailable(reason)) => {
                        format!("BuildKit is not available from the Docker engine ({reason})")
                    }
                    Err(RuntimeError::BuildFailed(message)) => {
                        return Err(RuntimeError::BuildFailed(
                            masked.apply(&message).into_owned(),
                        ))
                    }
                    Err(err) => return Err(err),
                }
            }
        };
        on_line(&format!("building with the classic builder: {reason}"));
        if !request.secrets.is_empty() {
            on_line(
                "the classic builder cannot pass build secrets: RUN --mount=type=secret steps fail",
            );
        }
        self.build_classic(request, context, on_line)
            .await
            .map_err(|err| match err {
                RuntimeError::BuildFailed(message) => {
                    RuntimeError::BuildFailed(masked.apply(&message).into_owned())
                }
                other => other,
            })
    }

    /// The classic builder: RUN steps in containers, on the request's network.
    async fn build_classic(
        &self,
        request: BuildRequest,
        context: bytes::Bytes,
        mut on_line: impl FnMut(&str) + Send,
    ) -> Result<String, RuntimeError> {
        let options = BuildImageOptions {
            dockerfile: request.dockerfile,
            t: Some(request.tag.clone()),
            rm: true,
            forcerm: true,
            labels: Some(request.labels),
            memory: request
                .memory_bytes
                .map(|bytes| i32::try_from(bytes).unwrap_or(i32::MAX)),
            memswap: request
                .memory_bytes
                .map(|bytes| i32::try_from(bytes).unwrap_or(i32::MAX)),
            cpuperiod: request.cpus.map(|_| CPU_PERIOD_MICROS as i32),
            cpuquota: request
                .cpus
                .map(|cpus| (cpus * CPU_PERIOD_MICROS as f64) as i32),
            networkmode: request.network,
            target: request.target.unwrap_or_default(),
            buildargs: (!request.build_args.is_empty()).then_some(request.build_args),
            ..Default::default()
        };
        let body = bollard::body_full(context);
        // Registry logins go as the classic builder takes them (`X-Registry-Config`).
        let credentials = (!request.registry_credentials.is_empty()).then(|| {
            request
                .registry_credentials
                .iter()
                .map(|login| {
                    // The engine looks Docker Hub's login up by its old index address.
                    let key = match RegistryCredential::normalized_host(&login.server).as_str() {
                        "docker.io" => "https://index.docker.io/v1/".to_owned(),
                        host => host.to_owned(),
                    };
                    (
                        key,
                        bollard::auth::DockerCredentials {
                            username: Some(login.username.clone()),
                            password: Some(login.password.clone()),
                            serveraddress: Some(login.server.clone()),
                            ..Default::default()
                        },
                    )
                })
                .collect()
        });
        let mut stream = self.client.build_image(options, credentials, Some(body));
        let mut image_id = None;
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(RuntimeError::BuildFailed(error));
                }
                Err(err) => return Err(err.into()),
            };
            if let Some(error) = info.error.or(info.error_detail.and_then(|d| d.message)) {
                on_line(&error);
                return Err(RuntimeError::BuildFailed(error.trim().to_owned()));
            }
            if let Some(text) = info.stream {
                for line in text.lines() {
                    if !line.trim().is_empty() {
                        on_line(line);
                    }
                }
            }
            if let Some(status) = info.status {
                on_line(&status);
            }
            if let Some(id) = info.aux.and_then(|aux| aux.id) {
                image_id = Some(id);
            }
        }
        match image_id {
            Some(id) => Ok(id),
            None => Ok(self.image_id(&request.tag).await?.ok_or_else(|| {
                RuntimeError::BuildFailed("the build ended without producing an image".to_owned())
            })?),
        }
    }

    /// The id of an image by tag, or `None` when there is no such image.
    pub async fn image_id(&self, tag: &str) -> Result<Option<String>, RuntimeError> {
        match self.client.inspect_image(tag).await {
            Ok(image) => Ok(image.id),
            Err(err) => match RuntimeError::from(err) {
                RuntimeError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    pub async fn remove_image(&self, tag: &str) -> Result<(), RuntimeError> {
        match self
            .client
            .remove_image(
                tag,
                Some(RemoveImageOptions {
                    force: false,
                    noprune: false,
                }),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match RuntimeError::from(err) {
                RuntimeError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Creates and starts a container; returns its status (with its address).
    pub async fn start(&self, spec: &ContainerSpec) -> Result<ContainerStatus, RuntimeError> {
        let id = self.create(spec).await?;
        self.client
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await?;
        self.inspect(&id).await
    }

    /// Creates a container without starting it; returns its id.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let env = spec
            .env
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let mut endpoints = HashMap::new();
        endpoints.insert(
            spec.network.clone(),
            EndpointSettings {
                aliases: (!spec.aliases.is_empty()).then(|| spec.aliases.clone()),
                ..Default::default()
            },
        );
        let host_config = HostConfig {
            network_mode: Some(spec.network.clone()),
            memory: spec.memory_bytes,
            nano_cpus: spec.cpus.map(|cpus| (cpus * 1e9) as i64),
            restart_policy: Some(RestartPolicy {
                // `always` is `unless-stopped` here: a container Cantila stopped (a backup's
                // hold, a replacement) stays stopped when the engine restarts.
                name: Some(match spec.restart {
                    crate::runtime::RestartPolicy::Always => RestartPolicyNameEnum::UNLESS_STOPPED,
                    crate::runtime::RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
                    crate::runtime::RestartPolicy::No => RestartPolicyNameEnum::NO,
                }),
                maximum_retry_count: None,
            }),
            init: Some(true),
            mounts: data::to_mounts(&spec.mounts),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            entrypoint: spec.entrypoint.clone(),
            healthcheck: spec.health.as_ref().map(|check| {
                let nanos =
                    |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
                // `CMD` runs the arguments as they are: no shell sees them.
                let mut test = vec!["CMD".to_owned()];
                test.extend(check.command.iter().cloned());
                HealthConfig {
                    test: Some(test),
                    interval: Some(nanos(check.interval)),
                    timeout: Some(nanos(check.timeout)),
                    retries: Some(i64::from(check.retries)),
                    start_period: Some(nanos(check.start_period)),
                    ..Default::default()
                }
            }),
            env: Some(env),
            labels: Some(spec.labels.clone()),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(endpoints),
            }),
            tty: Some(spec.tty),
            // Stdin is open for the one client that attaches (`attach_and_start`), and
            // closes when it leaves, as `docker run -i` does.
            open_stdin: Some(spec.stdin),
            stdin_once: Some(spec.stdin),
            attach_stdin: Some(spec.stdin),
            ..Default::default()
        };
        let created = self
            .client
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    platform: String::new(),
                }),
                body,
            )
            .await?;
        Ok(created.id)
    }

    /// The state and addresses of one container.
    pub async fn inspect(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let details = self
            .client
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await?;
        let state = details.state.unwrap_or_default();
        let addresses = details
            .network_settings
            .and_then(|settings| settings.networks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(network, endpoint)| Some((network, endpoint.ip_address?.parse().ok()?)))
            .collect();
        Ok(ContainerStatus {
            id: details.id.unwrap_or_else(|| id.to_owned()),
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            restart_count: details.restart_count.unwrap_or(0),
            started_at: state.started_at,
            health: state
                .health
                .and_then(|health| health.status)
                .map(|status| status.to_string())
                .filter(|status| !status.is_empty() && status != "none"),
            restarting: state.restarting.unwrap_or(false),
            addresses,
        })
    }

    /// Stops a container (SIGTERM, then SIGKILL after `grace`) and removes it. A container
    /// that is already gone is not an error.
    pub async fn stop_and_remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let stopped = self
            .client
            .stop_container(
                id,
                Some(StopContainerOptions {
                    signal: None,
                    t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
                }),
            )
            .await;
        match stopped {
            Ok(()) => {}
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(err) => match RuntimeError::from(err) {
                RuntimeError::NotFound(_) => return Ok(()),
                other => return Err(other),
            },
        }
        match self
            .client
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    v: false,
                    force: true,
                    link: false,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(err) => match RuntimeError::from(err) {
                RuntimeError::NotFound(_) => Ok(()),
                // Removal already in progress (a concurrent stop): fine.
                RuntimeError::Engine(message) if message.contains("already in progress") => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Containers the label filter selects, running or not: listed by its pairs, then
    /// checked for the labels it wants absent.
    pub async fn containers_matching(
        &self,
        filter: &Filter<'_>,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut found = self.containers(&filter.pairs()).await?;
        found.retain(|container| filter.matches(&container.labels));
        Ok(found)
    }

    /// Containers whose labels match every `key=value` given, running or not.
    pub async fn containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_owned(),
            labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
        );
        let found = self
            .client
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        Ok(found
            .into_iter()
            .map(|container| ContainerSummary {
                id: container.id.unwrap_or_default(),
                name: container
                    .names
                    .and_then(|names| names.into_iter().next())
                    .map(|name| name.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                labels: container.labels.unwrap_or_default(),
                state: container
                    .state
                    .map(|state| state.to_string())
                    .unwrap_or_default(),
                addresses: container
                    .network_settings
                    .and_then(|settings| settings.networks)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(network, endpoint)| {
                        let ip = endpoint.ip_address?.parse().ok()?;
                        Some((network, ip))
                    })
                    .collect(),
            })
            .collect())
    }

    /// The last `lines` lines a container wrote (stdout and stderr).
    pub async fn tail_logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let mut stream = self.client.logs(
            id,
            Some(LogsOptions {
                follow: false,
                stdout: true,
                stderr: true,
                tail: lines.to_string(),
                ..Default::default()
            }),
        );
        let mut output = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            for line in chunk.to_string().lines() {
                output.push(line.to_owned());
            }
        }
        Ok(output)
    }

    /// Follows a container's stdout and stderr from `since_secs` (0: from its first line)
    /// until it stops: every line with the engine's timestamp. Reading from the log the
    /// engine keeps means nothing written before the call is missed, however late it comes.
    pub fn follow_logs(
        &self,
        id: &str,
        since_secs: i64,
    ) -> futures_util::stream::BoxStream<'static, Result<ContainerLogLine, RuntimeError>> {
        let client = self.client.clone();
        let id = id.to_owned();
        let since = i32::try_from(since_secs.max(0)).unwrap_or(i32::MAX);
        let frames = async_stream_of_logs(client, id, since);
        frames
            .flat_map(|frame| {
                let lines = match frame {
                    Ok(LogOutput::StdOut { message }) => {
                        Ok(split_log_frame(&message, OutputStream::Stdout))
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        Ok(split_log_frame(&message, OutputStream::Stderr))
                    }
                    // Instances have no TTY and no stdin; nothing else is expected.
                    Ok(LogOutput::Console { message }) => {
                        Ok(split_log_frame(&message, OutputStream::Stdout))
                    }
                    Ok(LogOutput::StdIn { .. }) => Ok(Vec::new()),
                    Err(err) => Err(RuntimeError::from(err)),
                };
                futures_util::stream::iter(match lines {
                    Ok(lines) => lines.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(err) => vec![Err(err)],
                })
            })
            .boxed()
    }

    /// Waits for a one-off container to exit; returns its exit code.
    pub async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        let mut stream = self
            .client
            .wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
        let mut code = 0;
        while let Some(item) = stream.next().await {
            match item {
                Ok(response) => code = response.status_code,
                // A non-zero exit surfaces as an error carrying the code.
                Err(bollard::errors::Error::DockerContainerWaitError { code: exit, .. }) => {
                    code = exit;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_frames_split_into_timestamped_lines() {
        let lines = split_log_frame(
            b"2026-01-02T03:04:05.000000001Z hello\n2026-01-02T03:04:05.5Z \n2026-01-02T03:04:06Z crlf\r\n",
            OutputStream::Stderr,
        );
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, vec!["hello", "", "crlf"]);
        assert_eq!(lines[0].at_ns % 1_000_000_000, 1);
        assert_eq!(lines[1].at_ns - lines[0].at_ns, 499_999_999);
        assert!(lines.iter().all(|l| l.stream == OutputStream::Stderr));
    }
}

//! A service's containers: the spec each is made from, bringing them to the service's
//! count and spec hash (`converge`), pulling a missing image, and reading their live state
//! (the engine's health check result for `command` checks, a probe from the host for
//! `tcp` and `http` ones).
//! Invariant: every container made here carries `cantila.kind=service`, the service's
//! name and its spec hash, joins only its project's production network with the service's
//! name as alias, and mounts only the service's own volumes.

use std::{net::IpAddr, time::Duration};

use time::OffsetDateTime;

use crate::{
    error::{Error, Result},
    labels::{self, Filter, Key, Kind, Labels},
    model::{deploy::ReleaseTarget, image::ImageReference},
    runtime::{ContainerSpec, ContainerSummary, HealthCheck, Runtime, VolumeMount},
    store,
};

use super::{Condition, Service, ServiceHealthType, ServiceState, Services};

/// One container of a service, as the API shows it.
#[derive(Debug, Clone)]
pub struct ServiceInstance {
    /// The container's short id.
    pub id: String,
    pub state: ServiceState,
    /// The engine's health check result (`command` checks) or the probe's (`tcp`,
    /// `http`): `healthy`, `unhealthy`, `starting`; `None` without a check.
    pub health: Option<String>,
    pub started_at: Option<String>,
}

/// How long a stopping service container gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Services {
    /// The containers of one service (any spec hash, any state).
    pub(super) async fn containers_of(
        &self,
        engine: &Runtime,
        project_id: &str,
        name: &str,
    ) -> Result<Vec<ContainerSummary>> {
        Ok(engine
            .containers_matching(
                &Filter::new()
                    .installation(&self.0.installation)
                    .kind(Kind::Service)
                    .project(project_id)
                    .service(name),
            )
            .await?)
    }

    /// Stops and removes every container of one service.
    pub(super) async fn remove_containers(
        &self,
        engine: &Runtime,
        project_id: &str,
        name: &str,
    ) -> Result<()> {
        for container in self.containers_of(engine, project_id, name).await? {
            engine.stop_and_remove(&container.id, STOP_GRACE).await?;
        }
        Ok(())
    }

    /// The container spec of one of the service's containers.
    async fn container_spec(&self, engine: &Runtime, service: &Service) -> Result<ContainerSpec> {
        let network = self
            .0
            .networks
            .ensure(engine, &service.project_id, &ReleaseTarget::Production)
            .await?;
        let spec = &service.spec;
        let tier = self.0.config.scale.tier(spec.size.as_deref());
        let mut mounts = Vec::new();
        for volume in &spec.volumes {
            let docker_name = crate::volumes::docker_name(&service.project_id, &volume.name);
            // Recreated (empty) if someone removed it behind Cantila's back, as app volumes are.
            engine
                .ensure_volume(
                    &docker_name,
                    self.0
                        .volumes
                        .labels(&service.project_id, volume.name.as_str()),
                )
                .await?;
            mounts.push(VolumeMount {
                volume: docker_name,
                target: volume.path.as_str().to_owned(),
            });
        }
        let health = match (&spec.health.kind, &spec.health.command) {
            (ServiceHealthType::Command, Some(command)) => Some(HealthCheck {
                command: command.clone(),
                interval: Duration::from_secs(spec.health.interval_secs().into()),
                timeout: Duration::from_secs(spec.health.timeout_secs().into()),
                retries: spec.health.retries(),
                start_period: Duration::from_secs(spec.health.start_period_secs().into()),
            }),
            _ => None,
        };
        let suffix = crate::ids::random_base62(6).to_ascii_lowercase();
        Ok(ContainerSpec {
            name: format!(
                "cantila-{}-svc-{}-{suffix}",
                service.project_id.to_ascii_lowercase(),
                spec.name
            ),
            image: spec.image.clone(),
            command: spec.command.clone(),
            entrypoint: spec.entrypoint.clone(),
            env: spec
                .env
                .0
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            labels: Labels::service(
                &self.0.installation,
                &service.project_id,
                spec.name.as_str(),
                &service.spec_hash,
            )
            .to_map(),
            network,
            aliases: vec![spec.name.to_string()],
            memory_bytes: Some(i64::from(tier.memory_mb) * 1024 * 1024),
            cpus: Some(tier.cpus),
            restart: spec.restart,
            health,
            mounts,
            tty: false,
            stdin: false,
        })
    }

    /// Makes sure the service's image is present, pulling it with the account's registry
    /// credentials (after the egress policy's check of the registry host) when it is not.
    async fn ensure_image(&self, engine: &Runtime, service: &Service) -> Result<()> {
        let image = &service.spec.image;
        if engine.image_id(image).await?.is_some() {
            return Ok(());
        }
        let reference = ImageReference::parse(image).map_err(|err| {
            Error::Invalid(format!(
                "image `{image}` is not present and cannot be pulled: {err}"
            ))
        })?;
        let egress = crate::source::EgressPolicy::from_config(&self.0.config.git);
        crate::registry_api::check_host(
            &reference.registry(),
            &egress,
            crate::registry_api::Unresolved::Refuse,
        )
        .await
        .map_err(|err| Error::Invalid(format!("image `{image}` cannot be pulled: {err}")))?;
        let auth = self
            .0
            .registries
            .auth_for(&service.account_id, &reference.registry())
            .await?;
        let pulled = match reference.digest() {
            Some(digest) => reference.pinned(digest),
            None => format!("{}:{}", reference.repository(), reference.tag_or_latest()),
        };
        self.set_condition(&service.id, Some(Condition::Pulling));
        tracing::info!(service = %service.name(), project = %service.project_id, image = %pulled, "pulling a service's image");
        engine
            .pull(&pulled, auth.as_ref(), &mut |_line| {})
            .await
            .map_err(|err| Error::Invalid(format!("pulling `{pulled}` failed: {err}")))?;
        if pulled != *image {
            engine.tag_image(&pulled, image).await?;
        }
        Ok(())
    }

    /// Brings one service's containers to its count, each made from its current spec:
    /// containers of an older spec hash are replaced (stopped first when the service has a
    /// volume, which two containers must never share; otherwise the new one starts first),
    /// extra ones stop. A failure is recorded as the service's condition (`failed`).
    pub(super) async fn converge(&self, service: &Service) -> Result<()> {
        let lock = self.0.locks.of(&service.project_id);
        let _guard = lock.lock().await;
        // The service may have been deleted while this pass waited for the lock.
        let (project_id, name) = (service.project_id.clone(), service.name().to_string());
        let still = self
            .0
            .store
            .call(move |c| store::services::by_name(c, &project_id, &name))
            .await?;
        match still {
            Some(stored) if stored.service.spec_hash == service.spec_hash => {}
            // Deleted, or changed since it was read: the next pass converges the new spec.
            _ => return Ok(()),
        }
        let result = self.converge_locked(service).await;
        match &result {
            Ok(()) => self.set_condition(&service.id, None),
            Err(err) => {
                tracing::warn!(service = %service.name(), project = %service.project_id, error = %err, "a service could not start");
                self.set_condition(&service.id, Some(Condition::Failed(err.to_string())));
            }
        }
        result
    }

    async fn converge_locked(&self, service: &Service) -> Result<()> {
        let engine = self.engine().await?;
        let containers = self
            .containers_of(&engine, &service.project_id, service.name().as_str())
            .await?;
        let (current, stale): (Vec<_>, Vec<_>) = containers.into_iter().partition(|c| {
            labels::get(&c.labels, Key::SpecHash) == Some(service.spec_hash.as_str())
        });
        let wanted = service.spec.count as usize;
        let stop_first = !service.spec.volumes.is_empty();
        if stop_first || wanted == 0 {
            for container in &stale {
                engine.stop_and_remove(&container.id, STOP_GRACE).await?;
            }
        }
        if current.len() < wanted {
            self.ensure_image(&engine, service).await?;
            for _ in current.len()..wanted {
                let spec = self.container_spec(&engine, service).await?;
                tracing::info!(service = %service.name(), project = %service.project_id, container = %spec.name, "starting a service container");
                let status = engine.start(&spec).await?;
                self.0.logs.follow_started(crate::logs::StartedContainer {
                    id: status.id.clone(),
                    project_id: service.project_id.clone(),
                    instance: crate::logs::instance_id(&status.id),
                    process: Kind::Service.as_str().to_owned(),
                    preview_id: None,
                    service: Some(service.name().to_string()),
                });
            }
        }
        for extra in current.iter().skip(wanted) {
            engine.stop_and_remove(&extra.id, STOP_GRACE).await?;
        }
        if !stop_first {
            for container in &stale {
                engine.stop_and_remove(&container.id, STOP_GRACE).await?;
            }
        }
        Ok(())
    }

    /// A service with its live state: its containers' states, combined.
    pub(super) async fn view(&self, service: Service) -> Result<super::ServiceView> {
        let env_keys = service.spec.env.0.keys().cloned().collect();
        let condition = self.condition(&service.id);
        let mut instances = Vec::new();
        // Without an engine there is nothing live to show: the service reads as its
        // condition, or starting.
        if let Ok(engine) = self.engine().await {
            let containers = self
                .containers_of(&engine, &service.project_id, service.name().as_str())
                .await
                .unwrap_or_default();
            for container in containers.iter().filter(|c| {
                labels::get(&c.labels, Key::SpecHash) == Some(service.spec_hash.as_str())
            }) {
                if let Some(instance) = self.instance(&engine, &service, container).await {
                    instances.push(instance);
                }
            }
        }
        let (state, error) = combine(&service, condition, &instances);
        Ok(super::ServiceView {
            service,
            state,
            error,
            instances,
            env_keys,
        })
    }

    async fn instance(
        &self,
        engine: &Runtime,
        service: &Service,
        container: &ContainerSummary,
    ) -> Option<ServiceInstance> {
        let status = engine.inspect(&container.id).await.ok()?;
        let short = container.id.chars().take(12).collect();
        if !status.running || status.restarting {
            let state = match (status.restarting, status.exit_code) {
                (false, Some(0)) => ServiceState::Stopped,
                _ => ServiceState::Crashed,
            };
            return Some(ServiceInstance {
                id: short,
                state,
                health: status.health,
                started_at: status.started_at,
            });
        }
        let health = &service.spec.health;
        let running_for = status
            .started_at
            .as_deref()
            .and_then(|at| {
                OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|at| (OffsetDateTime::now_utc() - at).whole_seconds().max(0) as u64)
            .unwrap_or(0);
        let (state, health_word) = match health.kind {
            ServiceHealthType::None => {
                if running_for >= u64::from(health.start_period_secs()) {
                    (ServiceState::Ready, None)
                } else {
                    (ServiceState::Starting, None)
                }
            }
            ServiceHealthType::Command => match status.health.as_deref() {
                Some("healthy") => (ServiceState::Ready, status.health.clone()),
                Some("unhealthy") => (ServiceState::Unhealthy, status.health.clone()),
                _ => (ServiceState::Starting, status.health.clone()),
            },
            ServiceHealthType::Tcp | ServiceHealthType::Http => {
                let address = crate::networks::address_of(
                    &self.0.config.deploy,
                    &container.labels,
                    &status.addresses,
                );
                let passed = match (address, service.spec.health_port()) {
                    (Some(ip), Some(port)) => probe(service, ip, port).await,
                    _ => false,
                };
                if passed {
                    (ServiceState::Ready, Some("healthy".to_owned()))
                } else if running_for < health.readiness_budget_secs() {
                    (ServiceState::Starting, Some("starting".to_owned()))
                } else {
                    (ServiceState::Unhealthy, Some("unhealthy".to_owned()))
                }
            }
        };
        Some(ServiceInstance {
            id: short,
            state,
            health: health_word,
            started_at: status.started_at,
        })
    }
}

/// One probe of a `tcp` or `http` check, from the host at the container's address.
async fn probe(service: &Service, ip: IpAddr, port: u16) -> bool {
    let health = &service.spec.health;
    let timeout = Duration::from_secs(health.timeout_secs().into());
    match health.kind {
        ServiceHealthType::Tcp => matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip, port))).await,
            Ok(Ok(_))
        ),
        ServiceHealthType::Http => {
            let Ok(client) = reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
            else {
                return false;
            };
            let host = match ip {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            };
            let path = health.path.as_deref().unwrap_or("/");
            client
                .get(format!("http://{host}:{port}{path}"))
                .send()
                .await
                .is_ok_and(|response| response.status().as_u16() < 500)
        }
        ServiceHealthType::None | ServiceHealthType::Command => true,
    }
}

/// The service's state from its condition and its containers' states.
fn combine(
    service: &Service,
    condition: Option<Condition>,
    instances: &[ServiceInstance],
) -> (ServiceState, Option<String>) {
    match condition {
        Some(Condition::Failed(error)) => return (ServiceState::Failed, Some(error)),
        Some(Condition::Pulling) => return (ServiceState::Pulling, None),
        None => {}
    }
    let wanted = service.spec.count as usize;
    if wanted == 0 {
        return (ServiceState::Stopped, None);
    }
    let has = |state| instances.iter().any(|i| i.state == state);
    let state = if has(ServiceState::Crashed) {
        ServiceState::Crashed
    } else if has(ServiceState::Unhealthy) {
        ServiceState::Unhealthy
    } else if instances.len() < wanted || has(ServiceState::Starting) {
        ServiceState::Starting
    } else if instances.iter().all(|i| i.state == ServiceState::Stopped) {
        // Exited cleanly with a restart policy that leaves it so.
        ServiceState::Stopped
    } else {
        ServiceState::Ready
    };
    (state, None)
}

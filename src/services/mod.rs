//! Services of a project: containers beside the app (a Redis, a second database, a queue
//! from an image, an add-on, a compose file's non-public services), each reached by its
//! name on the project's production network. `Services` is the handle: create, change,
//! delete, list for the API; `apply` for compose releases; `wire` for the containers
//! deploys, runs and terminals start; and the reconciler (`reconcile.rs`), a background
//! task that keeps each service's containers matching its stored spec.
//! Invariant: only this module starts, replaces or removes a `cantila.kind=service`
//! container, and it replaces a service's containers only when that service's own spec
//! hash changed: a release of the app, a scale, a preview or a run never touches them.
//! Services run on production's network only; previews never reach them.

pub mod addons;
mod containers;
mod reconcile;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;

use crate::{
    accounts::Actor,
    clock,
    config::Config,
    error::{Error, Result},
    ids,
    locks::ProjectLocks,
    logs::Logs,
    model::deploy::ReleaseTarget,
    names::ServiceName,
    networks::Networks,
    projects::{self, Project},
    registries::Registries,
    runtime::{ContainerSpec, Runtime},
    secrets::SecretBox,
    store::{self, services::StoredService, Store},
    volumes::Volumes,
};

pub use crate::model::service::{
    AddonRef, RestartPolicy, Service, ServiceEnv, ServiceHealth, ServiceHealthType, ServiceSource,
    ServiceSpec, ServiceState, ServiceVolume, MAX_SERVICES_PER_PROJECT,
};
pub use containers::ServiceInstance;

/// What the services handle is built from.
pub struct ServicesParts {
    pub store: Store,
    pub runtime: Runtime,
    pub secrets: SecretBox,
    pub networks: Networks,
    pub volumes: Volumes,
    pub registries: Registries,
    /// Follows each container's output from its start.
    pub logs: Logs,
    /// `[deploy]` (network, stop grace), `[scale]` (size tiers), `[git]` (the egress
    /// policy a pull's registry host passes).
    pub config: Arc<Config>,
    pub installation: Arc<str>,
}

/// The services handle: cheap to clone, one per daemon.
#[derive(Clone)]
pub struct Services(Arc<Inner>);

struct Inner {
    store: Store,
    /// The container runtime; it connects on first use, so the API runs without one.
    runtime: Runtime,
    /// Seals each service's env at rest.
    secrets: SecretBox,
    /// Services join their project's production network.
    networks: Networks,
    /// The labels of the Docker volumes services own.
    volumes: Volumes,
    /// The account's credentials for pulling an image that is not present.
    registries: Registries,
    /// Follows each container's output from its start (the collector's own pass picks up
    /// the ones already running at start-up).
    logs: Logs,
    config: Arc<Config>,
    installation: Arc<str>,
    /// Wakes the reconciler after each change, so a change takes effect at once rather than
    /// at the next tick.
    wake: Notify,
    /// One convergence of a project's services at a time (the reconciler's pass and a
    /// compose release's `apply`); services' own, never the deploys' locks, so a long
    /// build never holds a service back.
    locks: ProjectLocks,
    /// What the containers cannot tell: a service whose image is being pulled, or that
    /// cannot start, with why; by service id.
    conditions: Mutex<HashMap<String, Condition>>,
}

/// What removing a service does with the volumes it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// Refuses (409) while it owns any: the API's delete without `deleteData`.
    Refuse,
    /// Removes them with their data.
    Delete,
    /// Leaves them (a compose service dropped from the file): a service of the same name
    /// adopts them again; the volumes API deletes them.
    Keep,
}

/// A service's condition the reconciler knows and the engine does not show.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    Pulling,
    Failed(String),
}

/// A service with its live state, as the API shows it.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub service: Service,
    pub state: ServiceState,
    /// Why the service is `failed` (or the last reason it could not start).
    pub error: Option<String>,
    pub instances: Vec<ServiceInstance>,
    /// The keys of its env; values are never shown after creation.
    pub env_keys: Vec<String>,
}

/// A change to a service: each field present replaces the service's; `env` entries set to
/// `None` are removed, others set; `size` and `port` may be set to null.
#[derive(Debug, Clone, Default)]
pub struct ServicePatch {
    pub image: Option<String>,
    pub command: Option<Option<Vec<String>>>,
    pub entrypoint: Option<Option<Vec<String>>>,
    pub env: Option<BTreeMap<String, Option<String>>>,
    pub volumes: Option<Vec<ServiceVolume>>,
    pub health: Option<ServiceHealth>,
    pub restart: Option<RestartPolicy>,
    pub size: Option<Option<String>>,
    pub count: Option<u32>,
    pub port: Option<Option<u16>>,
    pub depends_on: Option<Vec<ServiceName>>,
}

fn not_found(project: &Project, name: &str) -> Error {
    Error::NotFound(format!(
        "project `{}` has no service named `{name}`",
        project.name
    ))
}

impl Services {
    pub fn new(parts: ServicesParts) -> Self {
        Self(Arc::new(Inner {
            store: parts.store,
            runtime: parts.runtime,
            secrets: parts.secrets,
            networks: parts.networks,
            volumes: parts.volumes,
            registries: parts.registries,
            logs: parts.logs,
            config: parts.config,
            installation: parts.installation,
            wake: Notify::new(),
            locks: ProjectLocks::default(),
            conditions: Mutex::new(HashMap::new()),
        }))
    }

    /// The container runtime, once it answers (the first call connects).
    async fn engine(&self) -> Result<Runtime> {
        self.0.runtime.ready().await?;
        Ok(self.0.runtime.clone())
    }

    fn condition(&self, service_id: &str) -> Option<Condition> {
        self.0
            .conditions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(service_id)
            .cloned()
    }

    fn set_condition(&self, service_id: &str, condition: Option<Condition>) {
        let mut conditions = self.0.conditions.lock().unwrap_or_else(|p| p.into_inner());
        match condition {
            Some(condition) => conditions.insert(service_id.to_owned(), condition),
            None => conditions.remove(service_id),
        };
    }

    /// Checks a size tier against `[scale.sizes]`.
    fn check_size(&self, size: Option<&str>) -> Result<()> {
        match size {
            Some(size) if !self.0.config.scale.sizes.contains_key(size) => {
                let known: Vec<&str> = self
                    .0
                    .config
                    .scale
                    .sizes
                    .keys()
                    .map(String::as_str)
                    .collect();
                Err(Error::Invalid(format!(
                    "`size` `{size}` is not a size tier; use one of {}",
                    known.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// Refuses names the app's own containers answer to on the project's network: `web`
    /// and the project's process types.
    async fn check_name_free(&self, project: &Project, name: &ServiceName) -> Result<()> {
        let id = project.id.clone();
        let running = self
            .0
            .store
            .call(move |c| {
                store::deploys::of_project_with_status(
                    c,
                    &id,
                    &[crate::model::deploy::DeployStatus::Running],
                )
            })
            .await?;
        // The running release's process types, from its stored plan.
        let processes: Vec<String> = running
            .iter()
            .filter_map(|deploy| deploy.plan.as_ref())
            .filter_map(|plan| {
                plan.get("source")
                    .unwrap_or(plan)
                    .get("processes")?
                    .as_object()
                    .map(|map| map.keys().cloned().collect::<Vec<_>>())
            })
            .flatten()
            .collect();
        let taken = name.as_str() == crate::names::ProcessType::WEB
            || project.process_instances.contains_key(name.as_str())
            || processes.iter().any(|p| p == name.as_str());
        if taken {
            return Err(Error::Invalid(format!(
                "service name `{name}` is the name of one of the app's process types, which the app's containers answer to; choose another name"
            )));
        }
        Ok(())
    }

    fn open(&self, stored: StoredService) -> Result<Service> {
        let mut service = stored.service;
        let env: BTreeMap<String, String> = if stored.sealed_env.is_empty() {
            BTreeMap::new()
        } else {
            let json = self.0.secrets.open_string(&stored.sealed_env)?;
            serde_json::from_str(&json).map_err(|err| {
                Error::Internal(format!(
                    "service {} has an unreadable env: {err}",
                    service.id
                ))
            })?
        };
        service.spec.env = ServiceEnv(env);
        Ok(service)
    }

    fn seal_env(&self, spec: &ServiceSpec) -> Result<Vec<u8>> {
        let json =
            serde_json::to_string(&spec.env.0).map_err(|err| Error::Internal(err.to_string()))?;
        Ok(self.0.secrets.seal_str(&json))
    }

    async fn find(&self, project: &Project, name: &str) -> Result<Service> {
        let id = project.id.clone();
        let lookup = name.to_owned();
        let stored = self
            .0
            .store
            .call(move |db| store::services::by_name(db, &id, &lookup))
            .await?
            .ok_or_else(|| not_found(project, name))?;
        self.open(stored)
    }

    async fn services_of(&self, project_id: &str) -> Result<Vec<Service>> {
        let id = project_id.to_owned();
        let stored = self
            .0
            .store
            .call(move |db| store::services::of_project(db, &id))
            .await?;
        stored.into_iter().map(|s| self.open(s)).collect()
    }

    /// Every service of the installation (the reconciler's desired state).
    async fn all(&self) -> Result<Vec<Service>> {
        let stored = self.0.store.call(|c| store::services::all(c)).await?;
        stored.into_iter().map(|s| self.open(s)).collect()
    }

    /// Creates the Docker volumes a spec mounts, then (in one transaction) the service's row
    /// and its volumes' rows. A volume name the project already uses for something else
    /// is a conflict; one this service's name already owns is adopted with its data.
    async fn store_new(&self, actor: Option<&Actor>, service: &Service) -> Result<()> {
        self.ensure_docker_volumes(service).await?;
        let sealed = self.seal_env(&service.spec)?;
        let saved = service.clone();
        let volumes = self.volume_rows(service);
        let work = move |tx: &store::Tx<'_>| {
            if store::services::count(tx, &saved.project_id)? >= MAX_SERVICES_PER_PROJECT {
                return Err(Error::Conflict(format!(
                    "the project has {MAX_SERVICES_PER_PROJECT} services, the most it may have; delete one first"
                )));
            }
            store::services::insert(tx, &saved, &sealed)?;
            insert_volume_rows(tx, saved.name().as_str(), &volumes)
        };
        match actor {
            Some(actor) => {
                let audit = store::Audit::by(
                    actor,
                    "service.create",
                    format!("{}:{}", service.project_id, service.name()),
                );
                self.0.store.write_audited(audit, work).await
            }
            None => self.0.store.write(work).await,
        }
    }

    fn volume_rows(&self, service: &Service) -> Vec<crate::volumes::Volume> {
        service
            .spec
            .volumes
            .iter()
            .map(|volume| crate::volumes::Volume {
                project_id: service.project_id.clone(),
                name: volume.name.as_str().to_owned(),
                mount_path: volume.path.as_str().to_owned(),
                docker_name: crate::volumes::docker_name(&service.project_id, &volume.name),
                created_at: clock::now(),
                service: Some(service.name().as_str().to_owned()),
            })
            .collect()
    }

    async fn ensure_docker_volumes(&self, service: &Service) -> Result<()> {
        if service.spec.volumes.is_empty() {
            return Ok(());
        }
        let engine = self.engine().await?;
        for volume in &service.spec.volumes {
            engine
                .ensure_volume(
                    &crate::volumes::docker_name(&service.project_id, &volume.name),
                    self.0
                        .volumes
                        .labels(&service.project_id, volume.name.as_str()),
                )
                .await?;
        }
        Ok(())
    }

    /// A project's services by name, each with its live state.
    pub async fn list(&self, actor: &Actor, project_id: &str) -> Result<Vec<ServiceView>> {
        let project = projects::get(&self.0.store, actor, project_id.to_owned()).await?;
        let services = self.services_of(&project.id).await?;
        let mut views = Vec::with_capacity(services.len());
        for service in services {
            views.push(self.view(service).await?);
        }
        Ok(views)
    }

    pub async fn get(
        &self,
        actor: &Actor,
        project_id: &str,
        name: &ServiceName,
    ) -> Result<ServiceView> {
        let project = projects::get(&self.0.store, actor, project_id.to_owned()).await?;
        let service = self.find(&project, name.as_str()).await?;
        self.view(service).await
    }

    /// Declares a service (source `api`, or `addon` when the spec names one) and wakes the
    /// reconciler, which starts it. The name must be free among the project's services
    /// and not one of the app's process types.
    pub async fn create(
        &self,
        actor: &Actor,
        project_id: &str,
        spec: ServiceSpec,
    ) -> Result<Service> {
        spec.check()?;
        self.check_size(spec.size.as_deref())?;
        let project = projects::get(&self.0.store, actor, project_id.to_owned()).await?;
        self.check_name_free(&project, &spec.name).await?;
        let now = clock::now();
        let service = Service {
            id: ids::new_id("svc"),
            account_id: project.account_id.clone(),
            project_id: project.id.clone(),
            source: if spec.addon.is_some() {
                ServiceSource::Addon
            } else {
                ServiceSource::Api
            },
            spec_hash: spec.hash(),
            spec,
            created_at: now.clone(),
            updated_at: now,
        };
        self.store_new(Some(actor), &service).await?;
        self.0.wake.notify_one();
        Ok(service)
    }

    /// Changes a service. A changed spec hash replaces its containers (and only its); a
    /// changed count starts or stops containers. A compose file's service is changed by
    /// changing the file (409 here).
    pub async fn update(
        &self,
        actor: &Actor,
        project_id: &str,
        name: &ServiceName,
        patch: ServicePatch,
    ) -> Result<Service> {
        let project = projects::get(&self.0.store, actor, project_id.to_owned()).await?;
        let mut service = self.find(&project, name.as_str()).await?;
        if service.source == ServiceSource::Compose {
            return Err(Error::Conflict(format!(
                "service `{name}` comes from the project's compose file; change the file and deploy"
            )));
        }
        let spec = &mut service.spec;
        if let Some(image) = patch.image {
            spec.image = image;
        }
        if let Some(command) = patch.command {
            spec.command = command;
        }
        if let Some(entrypoint) = patch.entrypoint {
            spec.entrypoint = entrypoint;
        }
        if let Some(env) = patch.env {
            for (key, value) in env {
                match value {
                    Some(value) => spec.env.0.insert(key, value),
                    None => spec.env.0.remove(&key),
                };
            }
        }
        let old_volumes = spec.volumes.clone();
        if let Some(volumes) = patch.volumes {
            spec.volumes = volumes;
        }
        if let Some(health) = patch.health {
            spec.health = health;
        }
        if let Some(restart) = patch.restart {
            spec.restart = restart;
        }
        if let Some(size) = patch.size {
            spec.size = size;
        }
        if let Some(count) = patch.count {
            spec.count = count;
        }
        if let Some(port) = patch.port {
            spec.port = port;
        }
        if let Some(depends_on) = patch.depends_on {
            spec.depends_on = depends_on;
        }
        spec.check()?;
        self.check_size(spec.size.as_deref())?;
        service.spec_hash = service.spec.hash();
        service.updated_at = clock::now();
        self.ensure_docker_volumes(&service).await?;
        let sealed = self.seal_env(&service.spec)?;
        let added: Vec<_> = self
            .volume_rows(&service)
            .into_iter()
            .filter(|row| !old_volumes.iter().any(|v| v.name.as_str() == row.name))
            .collect();
        let saved = service.clone();
        let audit = store::Audit::by(
            actor,
            "service.update",
            format!("{}:{}", service.project_id, service.name()),
        );
        self.0
            .store
            .write_audited(audit, move |tx| {
                store::services::update(tx, &saved, &sealed)?;
                insert_volume_rows(tx, saved.name().as_str(), &added)
            })
            .await?;
        self.0.wake.notify_one();
        Ok(service)
    }

    /// Deletes a service: its containers stop and go, and its volumes with their data
    /// when `delete_data`; a volume of it that holds data is otherwise a conflict (its
    /// data is never dropped as a side effect).
    pub async fn delete(
        &self,
        actor: &Actor,
        project_id: &str,
        name: &ServiceName,
        delete_data: bool,
    ) -> Result<()> {
        let project = projects::get(&self.0.store, actor, project_id.to_owned()).await?;
        let service = self.find(&project, name.as_str()).await?;
        if service.source == ServiceSource::Compose {
            return Err(Error::Conflict(format!(
                "service `{name}` comes from the project's compose file; remove it from the file and deploy"
            )));
        }
        let audit = store::Audit::by(
            actor,
            "service.delete",
            format!("{}:{}", service.project_id, service.name()),
        );
        let data = if delete_data {
            Data::Delete
        } else {
            Data::Refuse
        };
        self.remove(&service, data, Some(audit)).await
    }

    /// Removes a service's containers, then its row, and its volumes as `data` says.
    async fn remove(
        &self,
        service: &Service,
        data: Data,
        audit: Option<store::Audit>,
    ) -> Result<()> {
        let (project_id, name) = (service.project_id.clone(), service.name().to_string());
        let owned = {
            let (id, name) = (project_id.clone(), name.clone());
            self.0
                .store
                .call(move |c| store::volumes::volumes_of_service(c, &id, &name))
                .await?
        };
        if !owned.is_empty() && data == Data::Refuse {
            return Err(Error::Conflict(format!(
                "service `{name}` owns the volume(s) {} holding its data; delete with `deleteData=true` to remove them too",
                owned
                    .iter()
                    .map(|v| format!("`{}`", v.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let lock = self.0.locks.of(&project_id);
        let _guard = lock.lock().await;
        let engine = self.engine().await?;
        self.remove_containers(&engine, &project_id, &name).await?;
        let delete_data = data == Data::Delete;
        if delete_data {
            for volume in &owned {
                engine.remove_volume(&volume.docker_name).await?;
            }
        }
        let id = service.id.clone();
        let work = move |tx: &store::Tx<'_>| {
            if delete_data {
                store::services::delete_volumes_of(tx, &project_id, &name)?;
            }
            store::services::delete(tx, &id)?;
            Ok(())
        };
        match audit {
            Some(audit) => self.0.store.write_audited(audit, work).await?,
            None => self.0.store.write(work).await?,
        }
        self.set_condition(&service.id, None);
        Ok(())
    }

    /// Compose's entry: makes the project's services of `source` exactly `specs` (new ones
    /// created, changed ones updated, the source's others removed with their data kept
    /// refused as `delete` does), then brings each up in `depends_on` order, waiting for
    /// each to be ready before its dependents start. Progress lines go to `on_line`; a
    /// service that never becomes ready within its start period and retries fails the call,
    /// naming it.
    pub async fn apply(
        &self,
        project_id: &str,
        specs: Vec<ServiceSpec>,
        source: ServiceSource,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<()> {
        for spec in &specs {
            spec.check()?;
            self.check_size(spec.size.as_deref())?;
        }
        let order = start_order(&specs)?;
        let project = projects::get_unscoped(&self.0.store, project_id.to_owned()).await?;
        let existing = self.services_of(&project.id).await?;
        for service in existing
            .iter()
            .filter(|s| s.source == source && !specs.iter().any(|spec| spec.name == s.spec.name))
        {
            // Its volumes stay (listed, backed up): a service put back in the file adopts
            // them with their data; `DELETE /volumes/{name}` removes them for good.
            on_line(&format!(
                "removing service {} (its volumes are kept)",
                service.name()
            ));
            self.remove(service, Data::Keep, None).await?;
        }
        let mut services = Vec::new();
        for spec in specs {
            match existing.iter().find(|s| s.spec.name == spec.name) {
                Some(current) if current.source != source => {
                    return Err(Error::Conflict(format!(
                        "service `{}` already exists from {}; remove it first",
                        spec.name,
                        current.source.as_str()
                    )));
                }
                Some(current) => {
                    let mut service = current.clone();
                    if service.spec != spec {
                        service.spec_hash = spec.hash();
                        service.spec = spec;
                        service.updated_at = clock::now();
                        self.ensure_docker_volumes(&service).await?;
                        let sealed = self.seal_env(&service.spec)?;
                        let added: Vec<_> = self
                            .volume_rows(&service)
                            .into_iter()
                            .filter(|row| {
                                !current
                                    .spec
                                    .volumes
                                    .iter()
                                    .any(|v| v.name.as_str() == row.name)
                            })
                            .collect();
                        let saved = service.clone();
                        self.0
                            .store
                            .write(move |tx| {
                                store::services::update(tx, &saved, &sealed)?;
                                insert_volume_rows(tx, saved.name().as_str(), &added)
                            })
                            .await?;
                    }
                    services.push(service);
                }
                None => {
                    let now = clock::now();
                    let service = Service {
                        id: ids::new_id("svc"),
                        account_id: project.account_id.clone(),
                        project_id: project.id.clone(),
                        source,
                        spec_hash: spec.hash(),
                        spec,
                        created_at: now.clone(),
                        updated_at: now,
                    };
                    self.store_new(None, &service).await?;
                    services.push(service);
                }
            }
        }
        for index in order {
            let service = &services[index];
            on_line(&format!("starting service {}", service.name()));
            self.converge(service).await?;
            if service.spec.count == 0 {
                continue;
            }
            let budget = Duration::from_secs(service.spec.health.readiness_budget_secs().max(5));
            match self.wait_ready(&project.id, service.name(), budget).await {
                Ok(_) => on_line(&format!("service {} is ready", service.name())),
                Err(err) => {
                    return Err(Error::Invalid(format!(
                        "service `{}` did not become ready: {err}",
                        service.name()
                    )))
                }
            }
        }
        self.0.wake.notify_one();
        Ok(())
    }

    /// Adds what the project's services give the app's containers (the add-ons'
    /// connection env) to a container spec, for production only: a preview is on its own
    /// network and never reaches the services. Deploy (instances, workers, release
    /// command), runs and terminals call it beside `Databases::attach`.
    pub async fn wire(
        &self,
        project_id: &str,
        target: &ReleaseTarget,
        spec: &mut ContainerSpec,
    ) -> Result<()> {
        if *target != ReleaseTarget::Production {
            return Ok(());
        }
        // Plain services wire nothing (the app reaches them by name); add-ons wire their
        // connection env, which replaces any same-named variable of the project's env.
        let env = self.addon_env(project_id).await?;
        spec.env
            .retain(|(key, _)| !env.iter().any(|(wired, _)| wired == key));
        spec.env.extend(env);
        Ok(())
    }

    /// Waits until the service is ready (healthy when it has a check, running otherwise),
    /// failing when `timeout` runs out first or the service fails or crashes for good.
    pub async fn wait_ready(
        &self,
        project_id: &str,
        name: &ServiceName,
        timeout: Duration,
    ) -> Result<ServiceState> {
        let deadline = tokio::time::Instant::now() + timeout;
        let project = projects::get_unscoped(&self.0.store, project_id.to_owned()).await?;
        let mut last_error = None;
        loop {
            let service = self.find(&project, name.as_str()).await?;
            let view = self.view(service).await?;
            let last = view.state;
            last_error = view.error.clone().or(last_error);
            match view.state {
                ServiceState::Ready => return Ok(ServiceState::Ready),
                ServiceState::Failed => {
                    return Err(Error::Invalid(format!(
                        "service `{name}` failed: {}",
                        view.error.unwrap_or_default()
                    )))
                }
                ServiceState::Starting
                | ServiceState::Unhealthy
                | ServiceState::Crashed
                | ServiceState::Stopped
                | ServiceState::Pulling => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Invalid(format!(
                    "service `{name}` is {} after {}s{}",
                    last.as_str(),
                    timeout.as_secs(),
                    last_error.map(|e| format!(" ({e})")).unwrap_or_default()
                )));
            }
            // The state is polled: readiness of a TCP or HTTP check is a probe from here,
            // which no engine event announces.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn insert_volume_rows(
    tx: &store::Db,
    service: &str,
    rows: &[crate::volumes::Volume],
) -> Result<()> {
    for row in rows {
        match store::volumes::volume(tx, &row.project_id, &row.name)? {
            // A volume this service's name owns is adopted with its data.
            Some(existing) if existing.service.as_deref() == Some(service) => {}
            Some(existing) => {
                return Err(Error::Conflict(format!(
                    "the project already has a volume named `{}` ({})",
                    row.name,
                    match existing.service {
                        Some(owner) => format!("owned by service `{owner}`"),
                        None => "the app's".to_owned(),
                    }
                )))
            }
            None => store::volumes::insert_volume(tx, row)?,
        }
    }
    Ok(())
}

/// The order services start in: each after every service it depends on. A dependency that
/// is not among `specs`, or a cycle, is refused naming the services.
pub fn start_order(specs: &[ServiceSpec]) -> Result<Vec<usize>> {
    let index: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for spec in specs {
        if let Some(missing) = spec
            .depends_on
            .iter()
            .find(|d| !index.contains_key(d.as_str()))
        {
            return Err(Error::Invalid(format!(
                "service `{}` depends on `{missing}`, which is not a service of the project",
                spec.name
            )));
        }
    }
    // Depth-first, visiting dependencies first; `visiting` catches cycles.
    fn visit(
        i: usize,
        specs: &[ServiceSpec],
        index: &HashMap<&str, usize>,
        done: &mut Vec<bool>,
        visiting: &mut Vec<bool>,
        order: &mut Vec<usize>,
    ) -> Result<()> {
        if done[i] {
            return Ok(());
        }
        if visiting[i] {
            return Err(Error::Invalid(format!(
                "`dependsOn` of service `{}` makes a cycle",
                specs[i].name
            )));
        }
        visiting[i] = true;
        for dependency in &specs[i].depends_on {
            visit(
                index[dependency.as_str()],
                specs,
                index,
                done,
                visiting,
                order,
            )?;
        }
        visiting[i] = false;
        done[i] = true;
        order.push(i);
        Ok(())
    }
    let mut done = vec![false; specs.len()];
    let mut visiting = vec![false; specs.len()];
    let mut order = Vec::with_capacity(specs.len());
    for i in 0..specs.len() {
        visit(i, specs, &index, &mut done, &mut visiting, &mut order)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, depends_on: &[&str]) -> ServiceSpec {
        ServiceSpec {
            name: ServiceName::parse(name).unwrap(),
            image: "busybox".to_owned(),
            addon: None,
            command: None,
            entrypoint: None,
            env: ServiceEnv::default(),
            volumes: Vec::new(),
            health: ServiceHealth::default(),
            restart: RestartPolicy::Always,
            size: None,
            count: 1,
            port: None,
            depends_on: depends_on
                .iter()
                .map(|d| ServiceName::parse(d).unwrap())
                .collect(),
        }
    }

    #[test]
    fn services_start_after_their_dependencies() {
        let specs = [
            spec("worker", &["db", "cache"]),
            spec("cache", &[]),
            spec("db", &["cache"]),
        ];
        let order: Vec<&str> = start_order(&specs)
            .unwrap()
            .into_iter()
            .map(|i| specs[i].name.as_str())
            .collect();
        assert_eq!(order, ["cache", "db", "worker"]);
        let cycle = [spec("a", &["b"]), spec("b", &["a"])];
        assert!(start_order(&cycle)
            .unwrap_err()
            .to_string()
            .contains("cycle"));
        let missing = [spec("a", &["nope"])];
        assert!(start_order(&missing)
            .unwrap_err()
            .to_string()
            .contains("`nope`"));
    }
}

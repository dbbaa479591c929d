//! Instances of a release: starting them health-checked, scaling (count and size) and
//! listing. The reconciler that keeps them running is `reconcile`.
//! Invariant: an instance takes traffic only after its health check passes, and leaves the
//! route table (draining) before it is stopped; one change per project at a time.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    accounts::Actor,
    clock,
    error::{Error, Result},
    ids,
    labels::{self, Filter, Key, Kind, Labels},
    names::ProcessType,
    plan::{self, HealthCheck, SourcePlan},
    projects::{self, Project, ProjectStatus},
    runtime::{ContainerSpec, Runtime},
    store,
};

use super::{Deploy, DeployStatus, Deploys, ReleaseTarget};

/// What instances of a release are made of.
#[derive(Debug, Clone)]
pub struct Release {
    pub project: Project,
    pub deploy_id: String,
    pub image: String,
    pub plan: SourcePlan,
    pub env: BTreeMap<String, String>,
    /// The preview the release belongs to; `None` for production.
    pub preview_id: Option<String>,
}

impl Release {
    pub fn target(&self) -> ReleaseTarget {
        match &self.preview_id {
            Some(id) => ReleaseTarget::Preview(id.clone()),
            None => ReleaseTarget::Production,
        }
    }
}

/// The process types a release runs, `web` first: the plan's (from the Procfile), or one
/// `web` running the image's own `CMD` when the plan names none.
pub fn process_types(source_plan: &SourcePlan) -> Vec<ProcessType> {
    let mut types: Vec<ProcessType> = source_plan
        .processes
        .keys()
        .filter_map(|name| ProcessType::parse(name).ok())
        .collect();
    if types.is_empty() {
        types.push(ProcessType::parse(ProcessType::WEB).expect("`web` is a process type"));
    }
    types.sort_by_key(|process| !process.is_web());
    types
}

/// How many instances of `process` a release of `target` wants. Production runs the
/// project's counts: `instances` for `web`; for other types the count they were scaled to,
/// one by default, and none while the project is stopped (so `instances: 0` stops the
/// whole project and scaling web up again brings the workers back at their counts). A
/// preview runs one instance of every process type, whatever production is scaled to.
pub fn desired_instances(project: &Project, target: &ReleaseTarget, process: &ProcessType) -> u32 {
    if let ReleaseTarget::Preview(_) = target {
        1
    } else if process.is_web() {
        project.instances
    } else if project.status == ProjectStatus::Stopped {
        0
    } else {
        project
            .process_instances
            .get(process.as_str())
            .copied()
            .unwrap_or(1)
    }
}

impl Deploys {
    /// The size tier every instance of a release of `target` runs: the project's for
    /// production; the smallest configured tier for a preview.
    pub(crate) fn desired_size(&self, project: &Project, target: &ReleaseTarget) -> Option<String> {
        match target {
            ReleaseTarget::Production => project.size.clone(),
            ReleaseTarget::Preview(_) => Some(self.config.scale.smallest_size()),
        }
    }

    /// Starts one instance of a process type of the release and waits until it is healthy:
    /// `web` passes the plan's health check (the project's settings applied when the plan
    /// was made), other types stay up for a few seconds. On failure
    /// the container is removed and the reason returned (its last lines go to `say`).
    pub(crate) async fn start_healthy(
        &self,
        engine: &Runtime,
        release: &Release,
        process: &ProcessType,
        size: Option<&str>,
        say: &(dyn Fn(String) + Sync),
    ) -> std::result::Result<String, String> {
        let spec = self.instance_spec(engine, release, process, size).await?;
        let network = spec.network.clone();
        say(format!("starting {process} instance {}", spec.name));
        let status = engine.start(&spec).await.map_err(|err| err.to_string())?;
        // Followed from here on; the engine keeps what was written before the follower attaches.
        self.logs.follow_started(crate::logs::StartedContainer {
            id: status.id.clone(),
            project_id: release.project.id.clone(),
            instance: crate::logs::instance_id(&status.id),
            process: process.to_string(),
            preview_id: release.preview_id.clone(),
            service: None,
        });
        // Only web answers on the port; other types are healthy when they stay up.
        let health = if process.is_web() {
            release.plan.health_check.clone()
        } else {
            HealthCheck::none()
        };
        if health.kind == plan::HealthCheckKind::None {
            say(format!(
                "waiting for the {process} process to stay up for {} s",
                health.start_period().as_secs()
            ));
        } else {
            say(format!(
                "waiting for the app to pass its health check: {}, start period {} s, then up to {} s",
                health.describe(release.plan.port),
                health.start_period().as_secs(),
                health
                    .overall_timeout(self.config.deploy.health_timeout_secs)
                    .as_secs()
            ));
        }
        match wait_healthy(
            engine,
            &status.id,
            &network,
            release.plan.port,
            &health,
            self.config.deploy.health_timeout_secs,
            say,
        )
        .await
        {
            Ok(()) => Ok(status.id),
            Err(reason) => {
                let _ = engine
                    .stop_and_remove(&status.id, Duration::from_secs(1))
                    .await;
                Err(reason)
            }
        }
    }

    /// The container of one new instance: its name, labels, command, env, size tier and the
    /// release target's own network (made if missing); production's also get the project's
    /// volumes and database.
    async fn instance_spec(
        &self,
        engine: &Runtime,
        release: &Release,
        process: &ProcessType,
        size: Option<&str>,
    ) -> std::result::Result<ContainerSpec, String> {
        let size_name = size.unwrap_or(&self.config.scale.default_size).to_owned();
        let command = match release.plan.processes.get(process.as_str()) {
            Some(command) => Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), command.clone()]),
            // `web` without a Procfile line runs the image's CMD; any other type needs one.
            None if process.is_web() => None,
            None => {
                return Err(format!(
                    "this release has no `{process}` process; its Procfile defines: {}",
                    process_types(&release.plan)
                        .iter()
                        .map(ProcessType::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        };
        let suffix = ids::random_base62(6).to_ascii_lowercase();
        let process_part = if process.is_web() {
            String::new()
        } else {
            format!("-{process}")
        };
        let labels = Labels::instance(
            &self.installation,
            &release.project.id,
            &release.deploy_id,
            &suffix,
            process,
            &size_name,
        )
        .in_preview(release.preview_id.as_deref())
        .to_map();
        release_container(
            &self.networks,
            &self.databases,
            &self.services,
            &self.config.scale,
            engine,
            ReleaseContainer {
                project_id: &release.project.id,
                target: release.target(),
                image: &release.image,
                port: release.plan.port,
                env: &release.env,
                size,
                name: format!(
                    "cantila-{}-{}-{}{process_part}-{suffix}",
                    release.project.handle,
                    release.project.name,
                    release.deploy_id.to_ascii_lowercase()
                ),
                labels,
                command,
                restart: true,
            },
        )
        .await
        .map_err(|err| err.to_string())
    }
}

/// One container of a release, whatever it runs (an instance, the release command, a
/// one-off run): what is its own. `release_container` adds what they all share.
pub struct ReleaseContainer<'a> {
    pub project_id: &'a str,
    pub target: ReleaseTarget,
    pub image: &'a str,
    /// The plan's port, handed to the app as `PORT`.
    pub port: u16,
    /// The release's env (its snapshot, plus whatever the caller adds).
    pub env: &'a BTreeMap<String, String>,
    /// The size tier; `None` is the configured default.
    pub size: Option<&'a str>,
    pub name: String,
    pub labels: std::collections::HashMap<String, String>,
    /// Overrides the image's CMD when set.
    pub command: Option<Vec<String>>,
    /// Restarted on crash (instances) or never (one-off commands).
    pub restart: bool,
}

/// The spec of a release's container: the env with `PORT`, the size tier's limits, the
/// release target's own network (made if missing), and for production the project's
/// volumes, database and services' wiring. Every container that runs a release's image is made here, so an
/// instance, the release command and a one-off run never differ in their wiring.
pub async fn release_container(
    networks: &crate::networks::Networks,
    databases: &crate::database::Databases,
    services: &crate::services::Services,
    scale: &crate::config::ScaleConfig,
    engine: &Runtime,
    container: ReleaseContainer<'_>,
) -> Result<ContainerSpec> {
    let network = networks
        .ensure(engine, container.project_id, &container.target)
        .await?;
    let tier = scale.tier(container.size);
    let mut env: Vec<(String, String)> = container.env.clone().into_iter().collect();
    env.push(("PORT".to_owned(), container.port.to_string()));
    // A production instance is reached by its process type (`web`, `worker`) from the
    // project's services and other containers; a preview's network has nothing to reach
    // it, and a one-off container is no instance.
    let aliases = match (
        &container.target,
        Labels::parse(&container.labels).process_type(),
    ) {
        (ReleaseTarget::Production, Some(process)) => vec![process.to_string()],
        _ => Vec::new(),
    };
    let mut spec = ContainerSpec {
        name: container.name,
        image: container.image.to_owned(),
        command: container.command,
        entrypoint: None,
        env,
        labels: container.labels,
        network,
        aliases,
        memory_bytes: Some(i64::from(tier.memory_mb) * 1024 * 1024),
        cpus: Some(tier.cpus),
        restart: if container.restart {
            crate::runtime::RestartPolicy::Always
        } else {
            crate::runtime::RestartPolicy::No
        },
        health: None,
        mounts: Vec::new(),
        tty: false,
        stdin: false,
    };
    // Production's volumes and database are production's: a preview runs without them.
    if container.target == ReleaseTarget::Production {
        databases.attach(container.project_id, &mut spec).await?;
        services
            .wire(container.project_id, &container.target, &mut spec)
            .await?;
    }
    Ok(spec)
}

/// The release a deploy made: its image, plan and env snapshot (`sealed_env`, opened
/// here); `None` for a static site, which runs no container.
pub fn release_from(
    secrets: &crate::secrets::SecretBox,
    project: &Project,
    deploy: &Deploy,
    sealed_env: Option<Vec<u8>>,
) -> Result<Option<Release>> {
    let Some(image) = deploy.image.clone() else {
        return Ok(None); // a static site: nothing runs
    };
    let plan: SourcePlan = deploy
        .plan
        .clone()
        .and_then(|plan| serde_json::from_value(plan).ok())
        .ok_or_else(|| Error::Internal(format!("deploy {} has no readable plan", deploy.id)))?;
    let env = match sealed_env {
        Some(sealed) => serde_json::from_slice(&secrets.open(&sealed)?)
            .map_err(|err| Error::Internal(format!("env snapshot: {err}")))?,
        None => BTreeMap::new(),
    };
    Ok(Some(Release {
        project: project.clone(),
        deploy_id: deploy.id.clone(),
        image,
        plan,
        env,
        preview_id: deploy.preview_id.clone(),
    }))
}

/// Why the last probe of a starting instance failed.
enum Problem {
    /// Nothing answered yet (refused, timed out): the app may still be starting.
    NoAnswer(&'static str),
    /// The app answered, with a status outside the range.
    Status(u16),
}

/// One probe of a starting instance at `ip`: true when it passes `health` (a status in
/// its range, an open port, or for `none` having stayed up for the start period);
/// otherwise `last_problem` says why not.
async fn answers(
    client: &reqwest::Client,
    health: &HealthCheck,
    ip: std::net::IpAddr,
    port: u16,
    started: tokio::time::Instant,
    say: &(dyn Fn(String) + Sync),
    last_problem: &mut Problem,
) -> bool {
    match health.kind {
        plan::HealthCheckKind::Http => {
            // The path is a `HealthPath` (or `/`): visible ASCII, so the URL is as written.
            let url = format!(
                "http://{ip}:{}{}",
                port,
                health.path.as_deref().unwrap_or("/")
            );
            let (min, max) = health.status_range();
            match client.get(&url).send().await {
                Ok(response) if (min..=max).contains(&response.status().as_u16()) => {
                    say(format!(
                        "health check passed: HTTP {}",
                        response.status().as_u16()
                    ));
                    true
                }
                Ok(response) => {
                    *last_problem = Problem::Status(response.status().as_u16());
                    false
                }
                Err(err) => {
                    *last_problem = Problem::NoAnswer(if err.is_timeout() {
                        "timed out"
                    } else {
                        "connection refused"
                    });
                    false
                }
            }
        }
        // Workers listen on nothing: staying up for the start period is the check.
        plan::HealthCheckKind::None => {
            let up = started.elapsed() >= health.start_period();
            if up {
                say("the process stayed up: no health check to run".to_owned());
            }
            up
        }
        plan::HealthCheckKind::Tcp => {
            match tokio::time::timeout(
                health.probe_timeout(),
                tokio::net::TcpStream::connect((ip, port)),
            )
            .await
            {
                Ok(Ok(_)) => {
                    say("health check passed: port open".to_owned());
                    true
                }
                _ => {
                    *last_problem = Problem::NoAnswer("port closed");
                    false
                }
            }
        }
    }
}

/// Waits until the instance passes `health`: probes every interval, failures not counting
/// during the start period; fails when the container exits, or when the overall timeout
/// (`default_overall_secs` unless the check has its own) runs out after the start period.
pub(crate) async fn wait_healthy(
    engine: &Runtime,
    container_id: &str,
    network: &str,
    app_port: u16,
    health: &HealthCheck,
    default_overall_secs: u64,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), String> {
    let port = health.effective_port(app_port);
    let overall = health.overall_timeout(default_overall_secs);
    let started = tokio::time::Instant::now();
    let deadline = started + health.start_period() + overall;
    let client = reqwest::Client::builder()
        .timeout(health.probe_timeout())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|err| err.to_string())?;
    let mut last_problem = Problem::NoAnswer("no answer yet");
    loop {
        let status = engine
            .inspect(container_id)
            .await
            .map_err(|err| err.to_string())?;
        if !status.running && status.exit_code.is_some() {
            let tail = engine.tail_logs(container_id, 20).await.unwrap_or_default();
            for line in &tail {
                say(format!("app: {line}"));
            }
            return Err(format!(
                    "the app exited with code {} before answering; its last lines are in the deploy log",
                    status.exit_code.unwrap_or(-1)
                ));
        }
        // Without a probe, staying up is the whole check: the engine's restart policy can
        // bring an exited process back between two looks, so a restart counts as an exit.
        if health.kind == plan::HealthCheckKind::None && status.restart_count > 0 {
            let tail = engine.tail_logs(container_id, 20).await.unwrap_or_default();
            for line in &tail {
                say(format!("app: {line}"));
            }
            return Err(format!(
                "the process exited and was restarted {} time(s) within its start period of {} s; its last lines are in the deploy log",
                status.restart_count,
                health.start_period().as_secs()
            ));
        }
        if let Some(&ip) = status.addresses.get(network) {
            let answered =
                answers(&client, health, ip, port, started, say, &mut last_problem).await;
            if answered {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let tail = engine.tail_logs(container_id, 20).await.unwrap_or_default();
            for line in &tail {
                say(format!("app: {line}"));
            }
            let check = health.describe(app_port);
            let waited = format!(
                "within {} s after a start period of {} s",
                overall.as_secs(),
                health.start_period().as_secs()
            );
            return Err(match last_problem {
                Problem::NoAnswer(why) => format!(
                    "the app did not answer its health check ({check}) {waited} ({why}); the previous release keeps serving"
                ),
                Problem::Status(status) => format!(
                    "the app failed its health check ({check}) {waited}: the last answer was HTTP {status}; the previous release keeps serving"
                ),
            });
        }
        // The probe interval: the loop checks the container and probes again.
        tokio::time::sleep(health.interval()).await;
    }
}

impl Deploys {
    /// The release a running deploy was made of: its image, plan and env snapshot.
    async fn running_release(&self, project: &Project) -> Result<Option<Release>> {
        let project_id = project.id.clone();
        let running = self
            .store
            .call(move |c| {
                let deploys = store::deploys::of_project_with_status(
                    c,
                    &project_id,
                    &[DeployStatus::Running],
                )?;
                let env = store::deploys::running_env(c, &project_id)?;
                Ok((deploys.into_iter().last(), env))
            })
            .await?;
        let (Some(deploy), sealed_env) = running else {
            return Ok(None);
        };
        self.release_of(project, &deploy, sealed_env)
    }

    pub(super) fn release_of(
        &self,
        project: &Project,
        deploy: &Deploy,
        sealed_env: Option<Vec<u8>>,
    ) -> Result<Option<Release>> {
        release_from(&self.secrets, project, deploy, sealed_env)
    }

    /// Instances of one process type of a release that Docker reports running, oldest first,
    /// not draining. Only the release's own target counts: a preview's containers are never
    /// production's, nor the other way round.
    pub(super) async fn serving_instances(
        &self,
        engine: &Runtime,
        release: &Release,
        process: &ProcessType,
    ) -> Vec<crate::runtime::ContainerSummary> {
        let draining = self.routing.draining();
        let target = release.target();
        let filter = Filter::new()
            .deploy(&release.deploy_id)
            .kind(Kind::of_process(process))
            .target(target.preview_id());
        engine
            .containers_matching(&filter)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|c| process_of(c).as_ref() == Some(process))
            .filter(|c| c.state == "running" && !draining.contains(&c.id))
            .collect()
    }
}

/// The process type a container runs; `None` when it is not an instance.
pub(super) fn process_of(container: &crate::runtime::ContainerSummary) -> Option<ProcessType> {
    Labels::parse(&container.labels).process_type()
}

impl Deploys {
    /// Brings one process type of the running release to `instances` instances of `size`,
    /// each on its release target's own network: new instances start and become healthy
    /// first; the ones that go leave the route table, drain, then stop.
    pub(super) async fn converge(
        &self,
        release: &Release,
        process: &ProcessType,
        instances: u32,
        size: Option<&str>,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<()> {
        let engine = self.engine().await?;
        let current = self.serving_instances(&engine, release, process).await;
        let wanted_size = size.unwrap_or(&self.config.scale.default_size);
        // An instance of another size, or one not isolated on its own network (started before
        // networks were per project), is replaced.
        let (keep, replace): (Vec<_>, Vec<_>) = current.into_iter().partition(|c| {
            labels::get(&c.labels, Key::Size) == Some(wanted_size)
                && crate::networks::is_isolated(&self.config.deploy, &c.labels, &c.addresses)
        });
        let keep_count = keep.len().min(instances as usize);
        let mut leaving: Vec<_> = replace;
        leaving.extend(keep[keep_count..].iter().cloned());
        let mut started = Vec::new();
        for _ in keep_count..instances as usize {
            match self
                .start_healthy(&engine, release, process, size, say)
                .await
            {
                Ok(id) => started.push(id),
                Err(reason) => {
                    for id in &started {
                        let _ = engine.stop_and_remove(id, Duration::from_secs(1)).await;
                    }
                    return Err(Error::Invalid(format!(
                        "a new {process} instance did not become healthy: {reason}"
                    )));
                }
            }
        }
        if !started.is_empty() && process.is_web() {
            self.routing.refresh().await?;
        }
        if leaving.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = leaving.iter().map(|c| c.id.clone()).collect();
        self.routing.set_draining(&ids, true);
        // Only web instances carry requests that need time to finish.
        if process.is_web() {
            self.routing.refresh().await?;
            tokio::time::sleep(Duration::from_secs(self.config.deploy.drain_secs)).await;
        }
        let grace = Duration::from_secs(self.config.deploy.stop_grace_secs);
        for container in &leaving {
            say(format!("stopping {process} instance {}", container.name));
            if let Err(err) = engine.stop_and_remove(&container.id, grace).await {
                say(format!(
                    "warning: could not remove instance {}: {err}",
                    container.name
                ));
            }
        }
        self.routing.set_draining(&ids, false);
        if process.is_web() {
            self.routing.refresh().await?;
        }
        Ok(())
    }
}

/// Validated scale request.
#[derive(Debug, Default)]
pub struct ScaleRequest {
    /// Web instances (the reference's `instances`).
    pub instances: Option<u32>,
    pub size: Option<String>,
    /// Per-process counts (`{"worker": 2}`); `web` here is the same as `instances`.
    pub processes: BTreeMap<ProcessType, u32>,
}

impl Deploys {
    /// Checks a scale request against the config: counts within `scale.max_instances`,
    /// a known size, and `instances` agreeing with `processes.web`.
    fn check_scale(&self, request: &ScaleRequest) -> Result<()> {
        let max = self.config.scale.max_instances;
        let web = ProcessType::parse(ProcessType::WEB).expect("`web` is a process type");
        if let (Some(instances), Some(web_count)) = (request.instances, request.processes.get(&web))
        {
            if instances != *web_count {
                return Err(Error::Invalid(format!(
                "`instances` ({instances}) and `processes.web` ({web_count}) disagree; pass one"
            )));
            }
        }
        for (process, count) in request
            .instances
            .map(|count| (&web, count))
            .into_iter()
            .chain(request.processes.iter().map(|(p, c)| (p, *c)))
        {
            if count > max {
                return Err(Error::Invalid(format!(
                    "instances of `{process}` must be between 0 and {max}, got {count}"
                )));
            }
        }
        if let Some(size) = &request.size {
            if !self.config.scale.sizes.contains_key(size) {
                let known: Vec<&str> = self.config.scale.sizes.keys().map(String::as_str).collect();
                return Err(Error::Invalid(format!(
                    "size `{size}` is unknown; use one of: {}",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Applies new instance counts and/or size without a rebuild, then records them. A
    /// project with no running release records them for its next deploy.
    pub async fn scale(
        &self,
        actor: &Actor,
        project_id: String,
        request: ScaleRequest,
    ) -> Result<Project> {
        self.check_scale(&request)?;
        let project = projects::get(&self.store, actor, project_id).await?;
        let lock = self.project_lock(&project.id);
        let _guard = lock.lock().await;
        let release = self.running_release(&project).await?;
        if let Some(release) = &release {
            let known = process_types(&release.plan);
            if let Some(unknown) = request.processes.keys().find(|p| !known.contains(p)) {
                let names: Vec<&str> = known.iter().map(ProcessType::as_str).collect();
                return Err(Error::Invalid(format!(
                    "the running release has no `{unknown}` process; it runs: {}",
                    names.join(", ")
                )));
            }
        }
        // The project as it will be: counts, size and whether it is stopped.
        let wanted = scaled(&project, release.as_ref(), &request);
        if let Some(release) = &release {
            let say = |line: String| tracing::info!(project = %project.id, "{line}");
            for process in process_types(&release.plan) {
                let count = desired_instances(&wanted, &ReleaseTarget::Production, &process);
                self.converge(release, &process, count, wanted.size.as_deref(), &say)
                    .await?;
            }
        }
        let audit = store::Audit::by(actor, "project.scale", &project.id);
        let id = project.id.clone();
        let stored = wanted.clone();
        let changed: Vec<(String, u32)> = request
            .processes
            .iter()
            .filter(|(p, _)| !p.is_web())
            .map(|(p, c)| (p.to_string(), *c))
            .collect();
        self.store
            .write_audited(audit, move |tx| {
                let now = clock::now();
                store::projects::set_scale(
                    tx,
                    &id,
                    stored.instances,
                    stored.size.as_deref(),
                    &now,
                )?;
                for (process, count) in &changed {
                    store::projects::set_process_instances(tx, &id, process, *count)?;
                }
                store::projects::set_status(tx, &id, stored.status, &now)?;
                Ok(())
            })
            .await?;
        self.routing.refresh().await?;
        projects::get_unscoped(&self.store, project.id).await
    }
}

/// The project as a scale request leaves it: counts, size and whether it is stopped.
fn scaled(project: &Project, release: Option<&Release>, request: &ScaleRequest) -> Project {
    let web = ProcessType::parse(ProcessType::WEB).expect("`web` is a process type");
    let mut wanted = project.clone();
    if let Some(instances) = request.instances.or(request.processes.get(&web).copied()) {
        wanted.instances = instances;
    }
    for (process, count) in request.processes.iter().filter(|(p, _)| !p.is_web()) {
        wanted.process_instances.insert(process.to_string(), *count);
    }
    wanted.size = request.size.clone().or(project.size.clone());
    let workers_idle = match release {
        Some(release) => process_types(&release.plan)
            .iter()
            .filter(|p| !p.is_web())
            .all(|p| {
                wanted
                    .process_instances
                    .get(p.as_str())
                    .copied()
                    .unwrap_or(1)
                    == 0
            }),
        None => true,
    };
    // Plain `instances: 0` stops the whole project; counts per process stop only those.
    let stops_project = request.processes.is_empty() || workers_idle;
    wanted.status = match (wanted.instances, project.status) {
        (0, ProjectStatus::Running) if stops_project => ProjectStatus::Stopped,
        (_, ProjectStatus::Stopped) if wanted.instances > 0 || !workers_idle => {
            ProjectStatus::Running
        }
        (_, status) => status,
    };
    wanted
}

/// One instance as the API shows it.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    pub id: String,
    pub name: String,
    pub deploy_id: String,
    /// The process type it runs (`web`, `worker`, ...).
    pub process: String,
    /// `starting`, `healthy`, `unhealthy`, `draining` or `exited`.
    pub state: String,
    pub restart_count: i64,
    pub started_at: Option<String>,
    pub size: Option<String>,
    pub address: Option<String>,
}

impl Deploys {
    /// The project's web instances: production's, or with `preview` only that preview's
    /// (another project's preview answers 404).
    pub async fn instances(
        &self,
        actor: &Actor,
        project_id: String,
        preview: Option<String>,
    ) -> Result<Vec<InstanceInfo>> {
        let project = projects::get(&self.store, actor, project_id).await?;
        let target = match preview {
            Some(preview_id) => {
                // Read from the store: previews is a later service than deploy.
                let project_id = project.id.clone();
                let preview = self
                    .store
                    .call(move |c| {
                        store::previews::by_id(c, &project_id, &preview_id)?.ok_or_else(|| {
                            Error::NotFound(format!("preview `{preview_id}` not found"))
                        })
                    })
                    .await?;
                ReleaseTarget::Preview(preview.id)
            }
            None => ReleaseTarget::Production,
        };
        let engine = self.engine().await?;
        let draining = self.routing.draining();
        let routed = self.routing.routes().load();
        let mut found = Vec::new();
        let containers = engine
            .containers_matching(
                &Filter::new()
                    .project(&project.id)
                    .target(target.preview_id()),
            )
            .await
            .map_err(Error::from)?;
        for container in containers {
            let Some(process) = process_of(&container) else {
                continue; // one-off release containers are the deploy's, not instances
            };
            // A container removed since it was listed (a replacement finishing) is not an
            // instance any more.
            let status = match engine.inspect(&container.id).await {
                Ok(status) => status,
                Err(crate::runtime::RuntimeError::NotFound(_)) => continue,
                Err(err) => return Err(err.into()),
            };
            // Only web listens on the plan's port.
            let port = container_port(&routed, &project, &target).filter(|_| process.is_web());
            let ip = crate::networks::address_of(
                &self.config.deploy,
                &container.labels,
                &status.addresses,
            );
            let address = ip.map(|ip| match port {
                Some(port) => format!("{ip}:{port}"),
                None => ip.to_string(),
            });
            let in_table = ip.zip(port).is_some_and(|(ip, port)| {
                routed_addresses(&routed).contains(&std::net::SocketAddr::new(ip, port))
            });
            let state = if draining.contains(&container.id) {
                "draining"
            } else if !status.running {
                "exited"
            } else if in_table || !process.is_web() {
                "healthy"
            } else {
                "starting"
            };
            found.push(InstanceInfo {
                id: crate::logs::instance_id(&container.id),
                name: container.name,
                deploy_id: labels::get(&container.labels, Key::Deploy)
                    .unwrap_or_default()
                    .to_owned(),
                process: process.to_string(),
                state: state.to_owned(),
                restart_count: status.restart_count,
                started_at: status.started_at,
                size: labels::get(&container.labels, Key::Size).map(str::to_owned),
                address,
            });
        }
        Ok(found)
    }
}

fn routed_addresses(table: &crate::edge::RouteTable) -> Vec<std::net::SocketAddr> {
    table
        .by_host
        .values()
        .flat_map(|route| match &route.target {
            crate::edge::RouteTarget::Instances(addresses) => addresses.clone(),
            crate::edge::RouteTarget::Static { .. }
            | crate::edge::RouteTarget::Unavailable { .. } => Vec::new(),
        })
        .collect()
}

fn container_port(
    table: &crate::edge::RouteTable,
    project: &Project,
    target: &ReleaseTarget,
) -> Option<u16> {
    table
        .by_host
        .values()
        .find(|route| {
            route.project_id == project.id && route.preview_id.as_deref() == target.preview_id()
        })
        .and_then(|route| match &route.target {
            crate::edge::RouteTarget::Instances(addresses) => addresses.first().map(|a| a.port()),
            crate::edge::RouteTarget::Static { .. }
            | crate::edge::RouteTarget::Unavailable { .. } => None,
        })
}

//! The daemon's shared state: one cheap-clone handle passed to every request handler and
//! background task.

use std::{ops::Deref, sync::Arc};

use tokio::sync::Mutex as AsyncMutex;

use crate::{assets::Assets, domains::Domains, env::Env, networks::Networks, projects::Projects};
use crate::{
    backup::{Backups, BackupsParts},
    database::Databases,
    locks::ProjectLocks,
    volumes::Volumes,
};
use crate::{
    config::Config,
    deploy::{Deploys, DeploysParts},
    error::Error,
    git_connection::GitConnections,
    logs::Logs,
    metrics::Metrics,
    previews::Previews,
    routing::Routing,
    runtime::Runtime,
    secrets::SecretBox,
    store::Store,
    tls::Tls,
};

/// A cheap-clone handle (`Arc`) to everything the daemon shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    /// The configuration the daemon started with; read-only after start-up.
    pub config: Config,
    /// All desired state.
    pub store: Store,
    /// Seals secrets at rest with the key in the data dir.
    pub secrets: SecretBox,
    /// Deploys: the queue, the worker, releases, scaling and the reconciler.
    pub deploys: Deploys,
    /// Preview deployments of branches and pull requests.
    pub previews: Previews,
    /// Projects' git connections and their webhook deliveries.
    pub git_connections: GitConnections,
    /// The edge's route table and routing's own side tables (draining instances,
    /// deploys being switched to, certificate requests in flight).
    pub routing: Routing,
    /// The logs service: runtime log lines (on their own connection), their collection
    /// and the edge's access-log sink.
    pub logs: Logs,
    /// The metrics service: stored points, the latest instance samples and the edge's
    /// per-project request counters.
    pub metrics: Metrics,
    /// Certificates for the HTTPS listener.
    pub tls: Tls,
    /// This installation's id, labelled on everything it creates in Docker, so two
    /// installations sharing one engine never touch each other's containers.
    pub installation: String,
    /// One release change (deploy switch, scale, repair) per project at a time; shared
    /// with the volumes and backups handles.
    project_locks: ProjectLocks,
    /// Persistent volumes.
    pub volumes: Volumes,
    /// The databases wired to projects.
    pub databases: Databases,
    /// Backups, their schedules and their copies in S3-compatible storage.
    pub backups: Backups,
    /// The container runtime; it connects on first use, so the API runs without one.
    runtime: Runtime,
    /// Projects' env vars.
    pub env: Env,
    /// Projects' hostnames: aliases and their certificate and DNS state.
    pub domains: Domains,
    /// Projects: creation, renaming, deletion of their rows.
    pub projects: Projects,
    /// Release targets' networks.
    pub networks: Networks,
    /// The static assets of live releases: extraction and the index.
    pub assets: Assets,
}

impl AppState {
    // One argument per handle the daemon shares; the composition root is the one caller,
    // and the shared state is due to be split into service handles that each take a few.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        store: Store,
        log_store: Store,
        secrets: SecretBox,
        tls: Tls,
        installation: String,
        uploads: Option<crate::backup::remote::Uploader>,
        runtime: Runtime,
    ) -> Self {
        let logs = Logs::new(
            store.clone(),
            log_store,
            runtime.clone(),
            &installation,
            config.logs.clone(),
        );
        let metrics = Metrics::new(
            store.clone(),
            runtime.clone(),
            &installation,
            config.metrics.clone(),
        );
        let env = Env::new(store.clone(), secrets.clone());
        let domains = Domains::new(
            store.clone(),
            tls.clone(),
            config.base_domain.clone(),
            config.console_hostname(),
            config.domains.clone(),
        );
        let projects = Projects::new(store.clone());
        let networks = Networks::new(store.clone(), config.deploy.clone(), &installation);
        let assets = Assets::new(
            store.clone(),
            runtime.clone(),
            &installation,
            config.assets_dir(),
            config.sites_dir(),
        );
        let routing = Routing::new(
            store.clone(),
            runtime.clone(),
            tls.clone(),
            installation.clone(),
            crate::routing::Settings::from_config(&config),
        );
        let project_locks = ProjectLocks::default();
        let installation_id: Arc<str> = installation.as_str().into();
        let volumes = Volumes::new(
            store.clone(),
            runtime.clone(),
            installation_id.clone(),
            project_locks.clone(),
        );
        let databases = Databases::new(
            store.clone(),
            runtime.clone(),
            secrets.clone(),
            config.database.clone(),
            networks.clone(),
            volumes.clone(),
        );
        let backups = Backups::new(BackupsParts {
            store: store.clone(),
            runtime: runtime.clone(),
            installation: installation_id.clone(),
            config: config.backups.clone(),
            backups_dir: config.backups_dir(),
            stop_grace_secs: config.deploy.stop_grace_secs,
            databases: databases.clone(),
            locks: project_locks.clone(),
            routing: routing.clone(),
            uploads,
        });
        let deploys = Deploys::new(DeploysParts {
            store: store.clone(),
            runtime: runtime.clone(),
            secrets: secrets.clone(),
            tls: tls.clone(),
            installation: installation_id,
            config: Arc::new(config.clone()),
            locks: project_locks.clone(),
            projects: projects.clone(),
            env: env.clone(),
            networks: networks.clone(),
            databases: databases.clone(),
            routing: routing.clone(),
            logs: logs.clone(),
            assets: assets.clone(),
        });
        let previews = Previews::new(
            deploys.clone(),
            store.clone(),
            secrets.clone(),
            tls.clone(),
            routing.clone(),
            config.previews.clone(),
            config.base_domain.clone(),
        );
        let git_connections = GitConnections::new(
            deploys.clone(),
            previews.clone(),
            store.clone(),
            secrets.clone(),
            config.repos_dir(),
            std::time::Duration::from_secs(config.deploy.fetch_timeout_secs),
            crate::source::EgressPolicy::from_config(&config.git),
        );
        Self(Arc::new(Inner {
            config,
            store,
            secrets,
            deploys,
            previews,
            git_connections,
            routing,
            logs,
            metrics,
            tls,
            installation,
            project_locks,
            volumes,
            databases,
            backups,
            runtime,
            env,
            domains,
            projects,
            networks,
            assets,
        }))
    }

    /// The lock serialising release changes of one project.
    pub fn project_lock(&self, project_id: &str) -> Arc<AsyncMutex<()>> {
        self.0.project_locks.of(project_id)
    }

    /// The container runtime, once it answers (the first call connects): a runtime that
    /// cannot be reached is `Unavailable`, with what to check.
    pub async fn engine(&self) -> Result<Runtime, Error> {
        self.0.runtime.ready().await?;
        Ok(self.0.runtime.clone())
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

//! The composition root's wiring: builds every service handle from the configuration and
//! the adapters, lowest first, each holding only the handles and sections it uses. `run`
//! spawns each background task with the one handle it runs and hands the API its state.

use std::sync::Arc;

use crate::{
    api::{ApiState, Handles},
    assets::Assets,
    backup::{remote::Uploader, Backups, BackupsParts},
    config::Config,
    database::Databases,
    deploy::{Deploys, DeploysParts},
    domains::Domains,
    env::Env,
    git_connection::GitConnections,
    image_source::ImageSources,
    jobs::Jobs,
    locks::ProjectLocks,
    logs::Logs,
    metrics::Metrics,
    networks::Networks,
    previews::Previews,
    projects::Projects,
    registries::Registries,
    routing::Routing,
    runs::{Runs, RunsParts},
    runtime::Runtime,
    secrets::SecretBox,
    services::{Services, ServicesParts},
    state_backup::StateBackups,
    store::Store,
    terminal::Terminals,
    tls::Tls,
    volumes::Volumes,
};

/// What the services are built from: the configuration and the adapters `run` opened.
pub struct Adapters {
    pub config: Config,
    pub store: Store,
    /// `logs.db`: runtime log lines and metric points (`Store::open_logs`).
    pub log_store: Store,
    pub secrets: SecretBox,
    pub tls: Tls,
    pub installation: String,
    pub uploads: Option<Uploader>,
    /// Backups of Cantila's own state; built by `run`, which reports a bad S3 setting.
    pub state_backups: StateBackups,
    pub runtime: Runtime,
}

/// Builds every service handle in dependency order (a handle is built after every handle
/// it holds) and returns them as the API's state, which `run` also reads to spawn each
/// background task with the one handle it runs.
pub fn build(adapters: Adapters) -> ApiState {
    let Adapters {
        config,
        store,
        log_store,
        secrets,
        tls,
        installation,
        uploads,
        state_backups,
        runtime,
    } = adapters;
    let config = Arc::new(config);
    let logs = Logs::new(
        store.clone(),
        log_store.clone(),
        runtime.clone(),
        &installation,
        config.logs.clone(),
    );
    let metrics = Metrics::new(
        store.clone(),
        log_store.clone(),
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
    let projects = Projects::new(store.clone(), log_store.clone());
    let registries = Registries::new(store.clone(), secrets.clone());
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
    // Jobs sit above deploys; a release that applies a `cantila.toml`'s jobs wakes the
    // scheduler through this, as the jobs API does.
    let jobs_changed = Arc::new(tokio::sync::Notify::new());
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
    let services = Services::new(ServicesParts {
        store: store.clone(),
        runtime: runtime.clone(),
        secrets: secrets.clone(),
        networks: networks.clone(),
        volumes: volumes.clone(),
        registries: registries.clone(),
        logs: logs.clone(),
        config: config.clone(),
        installation: installation_id.clone(),
    });
    let backups = Backups::new(BackupsParts {
        store: store.clone(),
        runtime: runtime.clone(),
        installation: installation_id.clone(),
        config: config.backups.clone(),
        backups_dir: config.backups_dir(),
        stop_grace_secs: config.deploy.stop_grace_secs,
        databases: databases.clone(),
        services: services.clone(),
        locks: project_locks.clone(),
        routing: routing.clone(),
        uploads,
    });
    let deploys = Deploys::new(DeploysParts {
        store: store.clone(),
        runtime: runtime.clone(),
        secrets: secrets.clone(),
        tls: tls.clone(),
        installation: installation_id.clone(),
        config: config.clone(),
        locks: project_locks.clone(),
        projects: projects.clone(),
        env: env.clone(),
        networks: networks.clone(),
        databases: databases.clone(),
        services: services.clone(),
        routing: routing.clone(),
        logs: logs.clone(),
        assets: assets.clone(),
        registries: registries.clone(),
        jobs_changed: jobs_changed.clone(),
    });
    let previews = Previews::new(
        deploys.clone(),
        store.clone(),
        log_store.clone(),
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
    let image_sources = ImageSources::new(
        store.clone(),
        deploys.clone(),
        crate::source::EgressPolicy::from_config(&config.git),
    );
    let runs = Runs::new(RunsParts {
        store: store.clone(),
        runtime: runtime.clone(),
        secrets: secrets.clone(),
        networks: networks.clone(),
        databases: databases.clone(),
        services: services.clone(),
        config: config.clone(),
        installation: installation_id.clone(),
    });
    let terminals = Terminals::new(
        store.clone(),
        runtime.clone(),
        installation_id,
        runs.clone(),
    );
    let jobs = Jobs::new(
        store.clone(),
        Arc::new(runs.clone()),
        config.scale.clone(),
        jobs_changed,
    );
    ApiState::new(Handles {
        config,
        store,
        tokens: crate::accounts::Tokens::default(),
        tls,
        env,
        domains,
        projects,
        assets,
        routing,
        logs,
        metrics,
        volumes,
        databases,
        backups,
        deploys,
        previews,
        git_connections,
        registries,
        image_sources,
        runs,
        terminals,
        jobs,
        services,
        state_backups,
    })
}

//! The API's state: the service handles its handlers call, behind one `Arc` so each
//! request clones a pointer. A handler takes the whole state (`State<ApiState>`) or only
//! the handle it uses (`State<Volumes>`, through `FromRef`). Only the composition root
//! builds it; no service knows it.

use std::{ops::Deref, sync::Arc};

use axum::extract::FromRef;

use crate::{
    accounts::Tokens, assets::Assets, backup::Backups, config::Config, database::Databases,
    deploy::Deploys, domains::Domains, env::Env, git_connection::GitConnections,
    image_source::ImageSources, jobs::Jobs, logs::Logs, metrics::Metrics, previews::Previews,
    projects::Projects, registries::Registries, routing::Routing, runs::Runs, services::Services,
    state_backup::StateBackups, store::Store, terminal::Terminals, tls::Tls, volumes::Volumes,
};

#[derive(Clone)]
pub struct ApiState(Arc<Handles>);

/// The handles the API's handlers call.
pub struct Handles {
    /// The configuration the daemon started with; read-only after start-up.
    pub config: Arc<Config>,
    /// Accounts, tokens and the lookups handlers make before calling a service.
    pub store: Store,
    /// The token check's cache, and the revocations that must empty it.
    pub tokens: Tokens,
    /// Certificates, for the domains handlers' certificate state.
    pub tls: Tls,
    /// Projects' env vars.
    pub env: Env,
    /// Projects' hostnames: aliases and their certificate and DNS state.
    pub domains: Domains,
    /// Projects: creation, renaming, deletion of their rows.
    pub projects: Projects,
    /// The static assets of live releases.
    pub assets: Assets,
    /// The edge's route table, refreshed after a change of hostnames.
    pub routing: Routing,
    /// Runtime log lines and their live followers.
    pub logs: Logs,
    /// Stored metric points and the Prometheus exposition.
    pub metrics: Metrics,
    /// Persistent volumes.
    pub volumes: Volumes,
    /// The databases wired to projects.
    pub databases: Databases,
    /// Backups, their schedules and their off-site copies.
    pub backups: Backups,
    /// Deploys: the queue, releases, scaling, rollbacks and the instances.
    pub deploys: Deploys,
    /// Preview deployments of branches and pull requests.
    pub previews: Previews,
    /// Projects' git connections and their webhook deliveries.
    pub git_connections: GitConnections,
    /// Accounts' registry credentials.
    pub registries: Registries,
    /// Projects' image sources and their registry webhooks.
    pub image_sources: ImageSources,
    /// One-off runs: start, cancel, their output.
    pub runs: Runs,
    /// Commands run inside instances (exec) and their terminals.
    pub terminals: Terminals,
    /// Scheduled jobs: their declarations and run-now.
    pub jobs: Jobs,
    /// Projects' services: containers beside the app.
    pub services: Services,
    /// Backups of Cantila's own state (the operator's account only).
    pub state_backups: StateBackups,
}

impl ApiState {
    pub fn new(handles: Handles) -> Self {
        Self(Arc::new(handles))
    }
}

impl Deref for ApiState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// Lets a handler take one handle as its state (`State<Volumes>`).
macro_rules! handle_from_state {
    ($($field:ident: $handle:ty),* $(,)?) => {
        $(
            impl FromRef<ApiState> for $handle {
                fn from_ref(state: &ApiState) -> Self {
                    state.$field.clone()
                }
            }
        )*
    };
}

handle_from_state!(
    env: Env,
    domains: Domains,
    projects: Projects,
    assets: Assets,
    routing: Routing,
    logs: Logs,
    metrics: Metrics,
    volumes: Volumes,
    databases: Databases,
    backups: Backups,
    deploys: Deploys,
    previews: Previews,
    git_connections: GitConnections,
    registries: Registries,
    image_sources: ImageSources,
    runs: Runs,
    terminals: Terminals,
    jobs: Jobs,
    services: Services,
);

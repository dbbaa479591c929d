//! The daemon's shared state: one cheap-clone handle passed to every request handler and
//! background task.

use std::{ops::Deref, sync::Arc};

use tokio::sync::Mutex as AsyncMutex;

use crate::{
    api::auth::AuthThrottle,
    config::Config,
    deploy::DeployHub,
    edge::{EdgeMetrics, Routes},
    error::Error,
    logs::LogCollector,
    metrics::MetricsHub,
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
    /// A second connection to the same database for runtime log lines: a chatty app's
    /// batches, prunes and log queries queue on this one, so API requests on `store`
    /// never wait behind them.
    pub log_store: Store,
    /// Counts failed token checks per client address, to slow down token guessing.
    pub auth_throttle: AuthThrottle,
    /// Seals secrets at rest with the key in the data dir.
    pub secrets: SecretBox,
    /// Live deploy logs, cancel switches and the worker's wake-up.
    pub deploys: DeployHub,
    /// The edge's route table, rebuilt by `routing` and read by every edge request.
    pub routes: Arc<Routes>,
    /// Runtime log collection: followers of instance output, the edge's access-log sink,
    /// the batching writer's queue and live followers of stored lines.
    pub logs: LogCollector,
    /// Per-project request counters kept by the edge.
    pub edge_metrics: Arc<EdgeMetrics>,
    /// The metrics collector's latest instance samples, for reports and Prometheus
    /// scrapes that must not wait on Docker.
    pub metrics: MetricsHub,
    /// Certificates for the HTTPS listener.
    pub tls: Tls,
    /// This installation's id, labelled on everything it creates in Docker, so two
    /// installations sharing one engine never touch each other's containers.
    pub installation: String,
    /// Instances taken out of the route table before they stop, so no request is sent to
    /// an instance that is going away.
    draining: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Deploys being switched to, by release target: the route table serves them before the store
    /// records them `running`, so a deploy never reads `running` while the edge still
    /// serves the release before it.
    switching: std::sync::Mutex<
        std::collections::HashMap<(String, Option<String>), crate::deploy::Deploy>,
    >,
    /// Route table rebuilds run one at a time: each reads the store and Docker and then
    /// swaps the table, and an older read must never replace a newer table.
    pub route_refresh: AsyncMutex<()>,
    /// Hostnames with a certificate request in flight, so refreshes do not start another.
    pub certificate_requests: std::sync::Mutex<std::collections::HashSet<String>>,
    /// One release change (deploy switch, scale, repair) per project at a time.
    project_locks: std::sync::Mutex<std::collections::HashMap<String, Arc<AsyncMutex<()>>>>,
    /// Backups that may run at once (`backups.concurrent`), so dumps and archives do not
    /// starve the apps of disk and CPU.
    pub backup_slots: tokio::sync::Semaphore,
    /// Copies of completed backups in S3-compatible storage; `None` when `[backups.s3]` is
    /// off.
    pub uploads: Option<crate::backup::remote::Uploader>,
    /// The container runtime; it connects on first use, so the API runs without one.
    runtime: Runtime,
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
        let auth_throttle = AuthThrottle::new(config.api.auth_failures_per_minute);
        let backup_slots = tokio::sync::Semaphore::new(config.backups.concurrent);
        Self(Arc::new(Inner {
            config,
            store,
            log_store,
            auth_throttle,
            secrets,
            deploys: DeployHub::default(),
            routes: Arc::new(Routes::default()),
            logs: LogCollector::default(),
            edge_metrics: Arc::new(EdgeMetrics::new()),
            metrics: MetricsHub::default(),
            tls,
            installation,
            route_refresh: AsyncMutex::new(()),
            certificate_requests: Default::default(),
            draining: Default::default(),
            switching: Default::default(),
            project_locks: Default::default(),
            backup_slots,
            uploads,
            runtime,
        }))
    }

    /// Marks containers as draining (out of the route table) or clears the mark.
    pub fn set_draining(&self, ids: &[String], draining: bool) {
        let mut set = self.0.draining.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if draining {
                set.insert(id.clone());
            } else {
                set.remove(id);
            }
        }
    }

    /// Marks `deploy` as the one its project's routes lead to, or clears the mark.
    pub fn set_switching(&self, deploy: &crate::deploy::Deploy, switching: bool) {
        let mut map = self.0.switching.lock().unwrap_or_else(|p| p.into_inner());
        // Keyed by release target: production and each preview switch on their own.
        let key = (deploy.project_id.clone(), deploy.preview_id.clone());
        if switching {
            map.insert(key, deploy.clone());
        } else {
            map.remove(&key);
        }
    }

    pub fn switching_snapshot(&self) -> Vec<crate::deploy::Deploy> {
        self.0
            .switching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn draining_snapshot(&self) -> std::collections::HashSet<String> {
        self.0
            .draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The lock serialising release changes of one project.
    pub fn project_lock(&self, project_id: &str) -> Arc<AsyncMutex<()>> {
        self.0
            .project_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(project_id.to_owned())
            .or_default()
            .clone()
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

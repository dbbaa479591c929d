//! The daemon's shared state: one cheap-clone handle passed to every request handler and
//! background task.

use std::{ops::Deref, sync::Arc};

use tokio::sync::Mutex as AsyncMutex;

use crate::{
    api::auth::AuthThrottle,
    config::Config,
    deploy::DeployHub,
    docker::Engine,
    edge::{EdgeMetrics, Routes},
    error::Error,
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
    /// Counts failed token checks per client address, to slow down token guessing.
    pub auth_throttle: AuthThrottle,
    /// Seals secrets at rest with the key in the data dir.
    pub secrets: SecretBox,
    /// Live deploy logs, cancel switches and the worker's wake-up.
    pub deploys: DeployHub,
    /// The edge's route table, rebuilt by `routing` and read by every edge request.
    pub routes: Arc<Routes>,
    /// Per-project request counters kept by the edge.
    pub edge_metrics: Arc<EdgeMetrics>,
    /// Certificates for the HTTPS listener.
    pub tls: Tls,
    /// The Docker engine, connected on first use so the API runs without one.
    engine: AsyncMutex<Option<Engine>>,
}

impl AppState {
    pub fn new(config: Config, store: Store, secrets: SecretBox, tls: Tls) -> Self {
        let auth_throttle = AuthThrottle::new(config.api.auth_failures_per_minute);
        Self(Arc::new(Inner {
            config,
            store,
            auth_throttle,
            secrets,
            deploys: DeployHub::default(),
            routes: Arc::new(Routes::default()),
            edge_metrics: Arc::new(EdgeMetrics::new()),
            tls,
            engine: AsyncMutex::new(None),
        }))
    }

    /// The Docker engine, connecting (and negotiating the API version) on first use.
    pub async fn engine(&self) -> Result<Engine, Error> {
        let mut engine = self.0.engine.lock().await;
        if let Some(engine) = engine.as_ref() {
            return Ok(engine.clone());
        }
        let connected = Engine::connect().await.map_err(|err| {
            Error::Invalid(format!(
                "{err}; is Docker installed and running, and may Cantila use its socket?"
            ))
        })?;
        *engine = Some(connected.clone());
        Ok(connected)
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

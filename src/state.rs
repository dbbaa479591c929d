//! The daemon's shared state: one cheap-clone handle passed to every request handler and
//! background task.

use std::{ops::Deref, sync::Arc};

use crate::{api::auth::AuthThrottle, config::Config, store::Store};

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
}

impl AppState {
    pub fn new(config: Config, store: Store) -> Self {
        let auth_throttle = AuthThrottle::new(config.api.auth_failures_per_minute);
        Self(Arc::new(Inner {
            config,
            store,
            auth_throttle,
        }))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

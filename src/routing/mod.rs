//! Routing: keeps the edge's route table following desired state (projects, their running
//! deploys, their hostnames, their previews) and actual state (which instances the runtime
//! reports running, and their addresses). `Routing` is its handle: the live table and the
//! side tables only routing reads (instances draining, deploys being switched to, the
//! refresh lock, the certificate requests in flight), changed through its methods.
//!
//! A refresh is three steps: take a `Snapshot` (the store, the runtime's instances, the
//! side tables, which hostnames have certificates, config values), build the table from it
//! with the pure `table::build` and swap it in whole, then ask TLS for the certificates the
//! served hostnames lack (`certificates`).
//!
//! Invariant: a hostname only ever routes to instances of the deploy that is `running`
//! for its release target (the project's production, or the one preview the hostname
//! belongs to), or being switched to; everything else answers 503 with the state.
//! Refreshes run one at a time, so an older snapshot never replaces a newer table.

mod certificates;
pub mod table;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use tokio::sync::Mutex as AsyncMutex;

pub use table::{Alias, Built, Instance, Snapshot};

use crate::{
    deploy::{Deploy, DeployStatus},
    edge::Routes,
    error::Result,
    labels::{self, Filter, Key, Kind},
    state::AppState,
    store,
};

/// The routing handle: cheap to clone, one per daemon.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The edge's route table, rebuilt here and read by every edge request.
    routes: Arc<Routes>,
    /// Instances (container ids) taken out of the route table before they stop, so no
    /// request is sent to an instance that is going away.
    draining: Mutex<HashSet<String>>,
    /// Deploys being switched to, by release target: the route table serves them before
    /// the store records them `running`, so a deploy never reads `running` while the edge
    /// still serves the release before it.
    switching: Mutex<HashMap<(String, Option<String>), Deploy>>,
    /// Rebuilds run one at a time: each reads the store and the runtime and then swaps
    /// the table, and an older read must never replace a newer table.
    refresh_lock: AsyncMutex<()>,
    certificates: certificates::InFlight,
}

impl Routing {
    pub fn new() -> Self {
        Self::default()
    }

    /// The live route table, for the edge to read.
    pub fn routes(&self) -> &Arc<Routes> {
        &self.shared.routes
    }

    /// Marks containers as draining (out of the route table) or clears the mark.
    pub fn set_draining(&self, ids: &[String], draining: bool) {
        let mut set = lock(&self.shared.draining);
        for id in ids {
            if draining {
                set.insert(id.clone());
            } else {
                set.remove(id);
            }
        }
    }

    /// The containers draining now.
    pub fn draining(&self) -> HashSet<String> {
        lock(&self.shared.draining).clone()
    }

    /// Marks `deploy` as the one its release target's routes lead to, or clears the mark.
    pub fn set_switching(&self, deploy: &Deploy, switching: bool) {
        let mut map = lock(&self.shared.switching);
        // Keyed by release target: production and each preview switch on their own.
        let key = (deploy.project_id.clone(), deploy.preview_id.clone());
        if switching {
            map.insert(key, deploy.clone());
        } else {
            map.remove(&key);
        }
    }

    fn switching(&self) -> Vec<Deploy> {
        lock(&self.shared.switching).values().cloned().collect()
    }
}

/// The side tables hold plain sets: after a panic elsewhere they are still coherent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Rebuilds the route table and swaps it in, then asks for the certificates served
/// hostnames lack. Called after every release or deletion, at start-up, and on a timer so
/// the table follows the runtime's actual state.
pub async fn refresh(app: &AppState) -> Result<()> {
    let uncertified = rebuild(app).await?;
    certificates::request(app, uncertified);
    Ok(())
}

/// Takes a snapshot, builds the table from it and swaps it in; returns the served
/// hostnames (and the console's) that have no certificate.
async fn rebuild(app: &AppState) -> Result<Vec<String>> {
    let _one_at_a_time = app.routing.shared.refresh_lock.lock().await;
    let snapshot = snapshot(app).await?;
    let Built { table, uncertified } = table::build(&snapshot);
    app.routing.shared.routes.replace(table);
    Ok(uncertified)
}

/// Everything `table::build` reads, read now.
async fn snapshot(app: &AppState) -> Result<Snapshot> {
    let (projects, running, aliases, previews, preview_statuses) = app
        .store
        .call(|connection| {
            Ok((
                store::projects::all(connection)?,
                store::deploys::with_status(connection, &[DeployStatus::Running])?,
                store::aliases::all(connection)?,
                store::previews::all(connection)?,
                store::deploys::newest_status_of_previews(connection)?,
            ))
        })
        .await?;
    let switching = app.routing.switching();
    let draining = app.routing.draining();
    let instances = if table::needs_instances(&running, &switching) {
        running_instances(app).await
    } else {
        Vec::new()
    };
    let mut snapshot = Snapshot {
        projects,
        running,
        switching,
        aliases: aliases
            .into_iter()
            .map(|alias| Alias {
                project_id: alias.project_id,
                hostname: alias.hostname,
            })
            .collect(),
        previews,
        preview_statuses: preview_statuses.into_iter().collect(),
        instances,
        draining,
        certified: HashSet::new(),
        base_domain: app.config.base_domain.clone(),
        sites_dir: app.config.sites_dir(),
        assets_dir: app.config.assets_dir(),
        console_hostname: app.config.console_hostname(),
    };
    snapshot.certified = snapshot
        .hostnames()
        .filter(|host| app.tls.has_certificate(host))
        .collect();
    Ok(snapshot)
}

/// The web instances of this installation the container engine reports running, with
/// their address on their release target's network: the one place a refresh asks the
/// engine. An engine that cannot be reached reports none.
async fn running_instances(app: &AppState) -> Vec<Instance> {
    let Ok(engine) = app.engine().await else {
        return Vec::new();
    };
    let web = Filter::new()
        .kind(Kind::Web)
        .installation(&app.installation);
    let containers = engine.containers_matching(&web).await.unwrap_or_default();
    containers
        .into_iter()
        .filter(|container| container.state == "running")
        .filter_map(|container| {
            Some(Instance {
                deploy_id: labels::get(&container.labels, Key::Deploy)?.to_owned(),
                address: crate::networks::address_of(
                    &app.config.deploy,
                    &container.labels,
                    &container.addresses,
                )?,
                container_id: container.id,
            })
        })
        .collect()
}

/// Refreshes the table every few seconds, so instances that die or come back are followed
/// even without a deploy.
pub async fn run(app: AppState, stopped: impl std::future::Future<Output = ()>) {
    tokio::pin!(stopped);
    loop {
        if let Err(err) = refresh(&app).await {
            tracing::warn!(error = %err, "refreshing the route table");
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = &mut stopped => break,
        }
    }
}

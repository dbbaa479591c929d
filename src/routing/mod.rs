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
    path::PathBuf,
    sync::{Arc, Mutex},
};

use tokio::sync::Mutex as AsyncMutex;

pub use table::{Alias, Built, Instance, Snapshot};

use crate::{
    config::{Config, DeployConfig},
    edge::Routes,
    error::Result,
    labels::{self, Filter, Key, Kind},
    model::deploy::{Deploy, DeployStatus},
    runtime::Runtime,
    store::{self, Store},
    tls::Tls,
};

/// The routing handle: cheap to clone, one per daemon. It holds what a refresh reads (the
/// store, the runtime, TLS for which hostnames have certificates, the config values the
/// table is built with) and the side tables only routing keeps.
#[derive(Clone)]
pub struct Routing {
    shared: Arc<Shared>,
}

/// The config values a table is built with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub base_domain: String,
    /// Static sites, served by the edge from disk.
    pub sites_dir: PathBuf,
    /// Container apps' extracted assets, served by the edge from disk.
    pub assets_dir: PathBuf,
    pub console_hostname: Option<String>,
    /// The network prefix an instance's address is read on.
    pub deploy: DeployConfig,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            base_domain: config.base_domain.clone(),
            sites_dir: config.sites_dir(),
            assets_dir: config.assets_dir(),
            console_hostname: config.console_hostname(),
            deploy: config.deploy.clone(),
        }
    }
}

struct Shared {
    store: Store,
    /// Asked which instances run, and their addresses; it connects on first use.
    runtime: Runtime,
    /// Which hostnames have certificates, and where certificate requests go.
    tls: Tls,
    /// This installation's id: only its instances are routed to.
    installation: String,
    settings: Settings,
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
    pub fn new(
        store: Store,
        runtime: Runtime,
        tls: Tls,
        installation: String,
        settings: Settings,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                runtime,
                tls,
                installation,
                settings,
                routes: Arc::default(),
                draining: Mutex::default(),
                switching: Mutex::default(),
                refresh_lock: AsyncMutex::default(),
                certificates: certificates::InFlight::default(),
            }),
        }
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

impl Routing {
    /// Rebuilds the route table and swaps it in, then asks for the certificates served
    /// hostnames lack. Called after every release or deletion, at start-up, and on a timer
    /// so the table follows the runtime's actual state.
    pub async fn refresh(&self) -> Result<()> {
        let uncertified = self.rebuild().await?;
        self.request_certificates(uncertified);
        Ok(())
    }

    /// Refreshes, logging a failure rather than returning it: for callers whose change is
    /// already made and must not fail because the table lags (`after` says what changed).
    pub async fn refresh_or_warn(&self, after: &str) {
        if let Err(err) = self.refresh().await {
            tracing::warn!(error = %err, "refreshing routes after {after}");
        }
    }

    /// Takes a snapshot, builds the table from it and swaps it in; returns the served
    /// hostnames (and the console's) that have no certificate.
    async fn rebuild(&self) -> Result<Vec<String>> {
        let _one_at_a_time = self.shared.refresh_lock.lock().await;
        let snapshot = self.snapshot().await?;
        let Built { table, uncertified } = table::build(&snapshot);
        self.shared.routes.replace(table);
        Ok(uncertified)
    }

    /// Everything `table::build` reads, read now.
    async fn snapshot(&self) -> Result<Snapshot> {
        let (projects, running, aliases, previews, preview_statuses) = self
            .shared
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
        let switching = self.switching();
        let draining = self.draining();
        let instances = if table::needs_instances(&running, &switching) {
            self.running_instances().await
        } else {
            Vec::new()
        };
        let settings = &self.shared.settings;
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
            base_domain: settings.base_domain.clone(),
            sites_dir: settings.sites_dir.clone(),
            assets_dir: settings.assets_dir.clone(),
            console_hostname: settings.console_hostname.clone(),
        };
        snapshot.certified = snapshot
            .hostnames()
            .filter(|host| self.shared.tls.has_certificate(host))
            .collect();
        Ok(snapshot)
    }

    /// The web instances of this installation the container engine reports running, with
    /// their address on their release target's network: the one place a refresh asks the
    /// engine. An engine that cannot be reached reports none.
    async fn running_instances(&self) -> Vec<Instance> {
        let engine = &self.shared.runtime;
        if engine.ready().await.is_err() {
            return Vec::new();
        }
        let web = Filter::new()
            .kind(Kind::Web)
            .installation(&self.shared.installation);
        let containers = engine.containers_matching(&web).await.unwrap_or_default();
        let deploy = &self.shared.settings.deploy;
        containers
            .into_iter()
            .filter(|container| container.state == "running")
            .filter_map(|container| {
                Some(Instance {
                    deploy_id: labels::get(&container.labels, Key::Deploy)?.to_owned(),
                    address: crate::networks::address_of(
                        deploy,
                        &container.labels,
                        &container.addresses,
                    )?,
                    container_id: container.id,
                })
            })
            .collect()
    }

    /// Refreshes the table every few seconds, so instances that die or come back are
    /// followed even without a deploy.
    pub async fn run(self, stopped: impl std::future::Future<Output = ()>) {
        tokio::pin!(stopped);
        loop {
            if let Err(err) = self.refresh().await {
                tracing::warn!(error = %err, "refreshing the route table");
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                _ = &mut stopped => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc};

    use super::*;
    use crate::{
        config::TlsConfig,
        edge::RouteTarget,
        labels::Labels,
        model::account::{Account, Actor},
        names::{Handle, ProcessType, ProjectName},
        projects::{NewProject, Projects},
        runtime::{fake::FakeRuntime, ContainerSummary},
        tls::TlsMode,
    };

    /// A running web instance of `deploy` in `installation`, on production's network.
    fn instance(
        id: &str,
        installation: &str,
        project: &str,
        deploy: &str,
        ip: &str,
    ) -> ContainerSummary {
        let web = ProcessType::parse("web").unwrap();
        ContainerSummary {
            id: id.to_owned(),
            name: format!("cantila-{id}"),
            labels: Labels::instance(installation, project, deploy, "x1y2z3", &web, "small")
                .to_map(),
            state: "running".to_owned(),
            addresses: HashMap::from([(format!("cantila-{project}"), ip.parse().unwrap())]),
        }
    }

    fn running(id: &str, project_id: &str) -> Deploy {
        Deploy {
            id: id.to_owned(),
            project_id: project_id.to_owned(),
            status: DeployStatus::Running,
            trigger: "api".to_owned(),
            git_ref: None,
            commit_sha: None,
            commit_message: None,
            plan: None,
            image: Some(format!("cantila/{id}")),
            failed_step: None,
            error: None,
            created_at: crate::clock::now(),
            building_at: None,
            releasing_at: None,
            finished_at: None,
            rollback_of: None,
            preview_id: None,
            image_digest: None,
            outcome: None,
        }
    }

    /// The addresses `host` is proxied to in the live table, or `None` when it answers
    /// otherwise (a state, a site) or not at all.
    fn served(routing: &Routing, host: &str) -> Option<Vec<SocketAddr>> {
        let table = routing.routes().load();
        match &table.lookup(host)?.target {
            RouteTarget::Instances(addresses) => Some(addresses.clone()),
            _ => None,
        }
    }

    /// A refresh through the handle: it reads the store and the runtime, routes the
    /// project's hostname to this installation's instance of its running deploy only, and
    /// a draining instance leaves the table with the next refresh.
    #[tokio::test]
    async fn a_refresh_routes_this_installations_running_instances_of_the_store_s_deploys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let alice = Account {
            id: "acc_alice".to_owned(),
            handle: Handle::parse("alice").unwrap(),
            created_at: crate::clock::now(),
        };
        let inserted = alice.clone();
        store
            .write(move |tx| store::accounts::insert_account(tx, &inserted))
            .await
            .unwrap();
        let project = Projects::new(store.clone(), store.open_logs().unwrap())
            .create(
                &Actor::operator(&alice),
                NewProject {
                    name: ProjectName::parse("web").unwrap(),
                    runtime: None,
                },
            )
            .await
            .unwrap();
        let deploy = running("dep_live", &project.id);
        store
            .write(move |tx| {
                store::deploys::insert(tx, &deploy)?;
                // The plan is recorded once detected, after the insert.
                store::deploys::set_plan(tx, &deploy.id, r#"{"builder":"dockerfile","port":3000}"#)
            })
            .await
            .unwrap();
        let runtime: Runtime = Arc::new(FakeRuntime::with_containers(vec![
            instance("ours", "inst", &project.id, "dep_live", "172.16.0.2"),
            instance("theirs", "other", &project.id, "dep_live", "172.16.0.3"),
        ]));
        let tls = Tls::start(
            dir.path(),
            TlsConfig {
                mode: TlsMode::Off,
                ..TlsConfig::default()
            },
        )
        .unwrap();
        let routing = Routing::new(
            store,
            runtime,
            tls,
            "inst".to_owned(),
            Settings {
                base_domain: "apps.test".to_owned(),
                sites_dir: dir.path().join("sites"),
                assets_dir: dir.path().join("assets"),
                console_hostname: None,
                deploy: DeployConfig::default(),
            },
        );
        let host = "web.alice.apps.test";
        assert_eq!(
            served(&routing, host),
            None,
            "nothing before the first refresh"
        );
        routing.refresh().await.unwrap();
        assert_eq!(
            served(&routing, host),
            Some(vec!["172.16.0.2:3000".parse().unwrap()])
        );
        routing.set_draining(&["ours".to_owned()], true);
        routing.refresh().await.unwrap();
        assert!(routing.routes().load().lookup(host).is_some());
        assert_eq!(
            served(&routing, host),
            None,
            "a draining instance is not served"
        );
    }
}

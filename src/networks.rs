//! Release targets' Docker networks: production of each project, and each preview, has a
//! bridge network of its own, so containers of different projects (and accounts) never
//! reach each other, while the host (the edge, health checks) still reaches every one.
//! Invariant: `name_of` is the one place a target's network is named; every instance,
//! build and one-off command of a target joins that network and no other; networks carry
//! the installation, project, preview and kind labels, and one is removed only when no
//! project or preview of this installation wants it (the engine refuses while a container
//! is attached).

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use crate::{
    config::DeployConfig,
    error::{Error, Result},
    labels::{Filter, Key, Kind, Labels},
    model::deploy::ReleaseTarget,
    runtime::{NetworkRemoval, NetworkSpec, Runtime},
    store::{self, Store},
};

/// The networks service handle: the `[deploy]` section (the network prefix and address
/// pool), this installation's id for labels and listing, and the store `sweep` reads
/// what is wanted from. Each operation is handed the runtime its caller made ready.
#[derive(Clone)]
pub struct Networks {
    store: Store,
    deploy: Arc<DeployConfig>,
    installation: Arc<str>,
}

/// The network a release target's containers join: `<prefix>-<project id>` for
/// production, `<prefix>-<preview id>` for a preview (ids are random, so names never clash
/// between projects or installations).
pub fn name_of(deploy: &DeployConfig, project_id: &str, target: &ReleaseTarget) -> String {
    match target {
        ReleaseTarget::Production => format!("{}-{project_id}", deploy.network),
        ReleaseTarget::Preview(preview_id) => format!("{}-{preview_id}", deploy.network),
    }
}

/// The network a container Cantila made belongs on, from its labels.
pub fn name_of_container(
    deploy: &DeployConfig,
    labels: &HashMap<String, String>,
) -> Option<String> {
    let labels = Labels::parse(labels);
    let target = match labels.preview {
        Some(preview_id) => ReleaseTarget::Preview(preview_id),
        None => ReleaseTarget::Production,
    };
    Some(name_of(deploy, &labels.project?, &target))
}

/// The address the host reaches a container at: on its own network; for an instance
/// started before networks were per project, on the shared network of that time; and for
/// one on any other network (the prefix changed in the config, or a network attached by
/// hand), the first of its addresses by network name, since the host reaches every bridge.
/// Such an instance keeps serving until the reconciler has replaced it.
pub fn address_of(
    deploy: &DeployConfig,
    labels: &HashMap<String, String>,
    addresses: &HashMap<String, IpAddr>,
) -> Option<IpAddr> {
    name_of_container(deploy, labels)
        .and_then(|own| addresses.get(&own))
        .or_else(|| addresses.get(&deploy.network))
        .or_else(|| {
            addresses
                .iter()
                .min_by(|a, b| a.0.cmp(b.0))
                .map(|(_, address)| address)
        })
        .copied()
}

/// Whether a container is attached to its own network and to no other. Any other
/// attachment (the legacy shared network, or one added by hand) could let another
/// project's containers reach it, so such an instance is replaced.
pub fn is_isolated(
    deploy: &DeployConfig,
    labels: &HashMap<String, String>,
    addresses: &HashMap<String, IpAddr>,
) -> bool {
    name_of_container(deploy, labels)
        .is_some_and(|own| addresses.len() == 1 && addresses.contains_key(&own))
}

impl Networks {
    pub fn new(store: Store, deploy: DeployConfig, installation: &str) -> Self {
        Self {
            store,
            deploy: Arc::new(deploy),
            installation: installation.into(),
        }
    }

    /// Creates the target's network when it does not exist yet (labelled, with a subnet
    /// of its own from `[deploy] network_pool`) and returns its name.
    pub async fn ensure(
        &self,
        engine: &Runtime,
        project_id: &str,
        target: &ReleaseTarget,
    ) -> Result<String> {
        let name = name_of(&self.deploy, project_id, target);
        let labels = Labels::network(&self.installation, project_id)
            .in_preview(target.preview_id())
            .to_map();
        let pool = self.deploy.address_pool().map_err(Error::Internal)?;
        engine
            .ensure_network(
                &NetworkSpec {
                    name: name.clone(),
                    labels,
                },
                &pool,
            )
            .await?;
        Ok(name)
    }

    /// Removes the networks of a deleted project (production's and its previews'), once
    /// its containers are gone. One still in use (a build being canceled) is left to
    /// `sweep`.
    pub async fn remove_of_project(&self, engine: &Runtime, project_id: &str) {
        self.remove_labelled(engine, Filter::new().project(project_id))
            .await;
    }

    /// Removes a removed preview's network, once its containers are gone.
    pub async fn remove_of_preview(&self, engine: &Runtime, preview_id: &str) {
        self.remove_labelled(engine, Filter::new().preview(preview_id))
            .await;
    }

    async fn remove_labelled(&self, engine: &Runtime, owner: Filter<'_>) {
        let networks = match engine
            .networks_matching(&owner.installation(&self.installation).kind(Kind::Network))
            .await
        {
            Ok(networks) => networks,
            Err(err) => {
                tracing::warn!(error = %err, "listing networks to remove");
                return;
            }
        };
        for network in networks {
            remove(engine, &network.name).await;
        }
    }

    /// One reconciler pass over networks: removes this installation's networks that no
    /// project or preview wants and no container uses, and the legacy shared network once
    /// nothing is attached to it.
    pub async fn sweep(&self, engine: &Runtime) -> Result<()> {
        // Listed before the store is read: a network made after the read belongs to a
        // project or preview made before it, which the read then includes.
        let ours = engine
            .networks_matching(
                &Filter::new()
                    .installation(&self.installation)
                    .kind(Kind::Network),
            )
            .await?;
        let (projects, previews) = self
            .store
            .call(|c| Ok((store::projects::all(c)?, store::previews::all(c)?)))
            .await?;
        let wanted = |labels: &HashMap<String, String>| {
            let labels = Labels::parse(labels);
            let project_wanted = labels
                .project
                .is_some_and(|id| projects.iter().any(|p| p.id == id));
            let preview_wanted = match labels.preview {
                Some(id) => previews.iter().any(|p| p.id == id),
                None => true,
            };
            project_wanted && preview_wanted
        };
        for network in ours.iter().filter(|n| !wanted(&n.labels)) {
            remove(engine, &network.name).await;
        }
        // The shared network of 0.1 was labelled only with its kind.
        let legacy = engine
            .networks_matching(&Filter::new().kind(Kind::Network).without(Key::Installation))
            .await?
            .into_iter()
            .find(|n| n.name == self.deploy.network);
        if let Some(legacy) = legacy {
            if remove(engine, &legacy.name).await == NetworkRemoval::Removed {
                tracing::info!(network = %legacy.name, "the shared network of earlier versions is empty and was removed");
            }
        }
        Ok(())
    }
}

async fn remove(engine: &Runtime, name: &str) -> NetworkRemoval {
    match engine.remove_network(name).await {
        Ok(NetworkRemoval::Removed) => {
            tracing::info!(network = %name, "removed a network");
            NetworkRemoval::Removed
        }
        Ok(other) => other,
        Err(err) => {
            tracing::warn!(network = %name, error = %err, "removing a network");
            NetworkRemoval::InUse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels of an instance of `project`, in `preview` when given.
    fn labels(project: &str, preview: Option<&str>) -> HashMap<String, String> {
        let web = crate::names::ProcessType::parse("web").unwrap();
        Labels::instance("ins", project, "dep_c", "x1y2z3", &web, "small")
            .in_preview(preview)
            .to_map()
    }

    fn addresses(pairs: &[(&str, [u8; 4])]) -> HashMap<String, IpAddr> {
        pairs
            .iter()
            .map(|(k, ip)| ((*k).to_owned(), IpAddr::from(*ip)))
            .collect()
    }

    #[test]
    fn each_target_has_its_own_network() {
        let deploy = DeployConfig::default();
        assert_eq!(
            name_of(&deploy, "prj_a", &ReleaseTarget::Production),
            "cantila-prj_a"
        );
        assert_eq!(
            name_of(&deploy, "prj_a", &ReleaseTarget::Preview("prv_b".into())),
            "cantila-prv_b"
        );
        assert_eq!(
            name_of_container(&deploy, &labels("prj_a", None)).as_deref(),
            Some("cantila-prj_a")
        );
        assert_eq!(
            name_of_container(&deploy, &labels("prj_a", Some("prv_b"))).as_deref(),
            Some("cantila-prv_b")
        );
        assert_eq!(name_of_container(&deploy, &HashMap::new()), None);
    }

    #[test]
    fn a_misplaced_instance_is_reached_where_it_is_until_replaced() {
        let deploy = DeployConfig::default();
        let production = labels("prj_a", None);
        let own = addresses(&[("cantila-prj_a", [172, 16, 0, 2])]);
        let legacy = addresses(&[("cantila", [172, 18, 0, 3])]);
        let both = addresses(&[
            ("cantila-prj_a", [172, 16, 0, 2]),
            ("cantila", [172, 18, 0, 3]),
        ]);
        let elsewhere = addresses(&[("cantila-prj_b", [172, 16, 1, 2])]);
        assert_eq!(
            address_of(&deploy, &production, &own),
            Some(IpAddr::from([172, 16, 0, 2]))
        );
        assert_eq!(
            address_of(&deploy, &production, &legacy),
            Some(IpAddr::from([172, 18, 0, 3]))
        );
        assert_eq!(
            address_of(&deploy, &production, &both),
            Some(IpAddr::from([172, 16, 0, 2]))
        );
        // A prefix changed in the config since the instance started: still served.
        assert_eq!(
            address_of(&deploy, &production, &elsewhere),
            Some(IpAddr::from([172, 16, 1, 2]))
        );
        assert_eq!(address_of(&deploy, &production, &HashMap::new()), None);
        assert!(is_isolated(&deploy, &production, &own));
        assert!(!is_isolated(&deploy, &production, &legacy));
        assert!(!is_isolated(&deploy, &production, &both));
        assert!(!is_isolated(&deploy, &production, &elsewhere));
        assert!(!is_isolated(&deploy, &production, &HashMap::new()));
    }
}

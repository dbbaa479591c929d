//! The reconciler: every few seconds it keeps each running release at its desired
//! instance count (replacing instances that died or were removed, moving ones on a shared
//! network to their target's own) and removes instances no release owns.
//! Invariant: a target is repaired only under its project's lock and only while its deploy
//! is still `running`, so a repair never outlives a switch or a preview's removal.

use std::{collections::HashSet, time::Duration};

use crate::{
    error::{Error, Result},
    labels::{self, Filter, Key},
    names::ProcessType,
    projects::Project,
    runtime::Runtime,
    store,
};

use super::{
    instances::{desired_instances, process_of, process_types, Release},
    Deploy, DeployStatus, Deploys,
};

impl Deploys {
    /// Keeps every running release at its desired instance count (replacing instances that
    /// died or were removed) and removes containers no release owns, every few seconds.
    pub async fn run_reconciler(self, stopped: impl std::future::Future<Output = ()>) {
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = &mut stopped => break,
            }
            if let Err(err) = self.reconcile().await {
                tracing::warn!(error = %err, "reconciling instances");
            }
        }
    }
}

/// Removes this installation's instances whose deploy is not `live` (no release wants
/// it any more), except draining ones, which the switch that drains them stops. Other
/// containers (release commands, build and backup helpers) are their starters' to remove.
async fn remove_orphans(
    engine: &Runtime,
    installation: &str,
    live: &HashSet<&str>,
    draining: &HashSet<String>,
) -> Result<()> {
    for container in engine
        .containers_matching(&Filter::new().installation(installation))
        .await
        .map_err(Error::from)?
        .into_iter()
        .filter(|c| process_of(c).is_some())
    {
        let owned = labels::get(&container.labels, Key::Deploy).is_some_and(|d| live.contains(d));
        if !owned && !draining.contains(&container.id) {
            tracing::info!(container = %container.name, "removing an orphan instance");
            let _ = engine
                .stop_and_remove(&container.id, Duration::from_secs(2))
                .await;
        }
    }
    Ok(())
}

impl Deploys {
    /// One pass of the reconciler.
    pub async fn reconcile(&self) -> Result<()> {
        let Ok(engine) = self.engine().await else {
            return Ok(());
        };
        // A live release whose image or site is gone gets a rebuild queued first, so the
        // repair below sees its project busy and does not try to start a missing image.
        let missing = match self.rebuild_missing().await {
            Ok(rebuilds) => rebuilds.missing,
            Err(err) => {
                tracing::warn!(error = %err, "looking for live releases the engine lost");
                HashSet::new()
            }
        };
        let (projects, deploys, previews) = self
            .store
            .call(|c| {
                Ok((
                    store::projects::all(c)?,
                    store::deploys::with_status(
                        c,
                        &[
                            DeployStatus::Running,
                            DeployStatus::Building,
                            DeployStatus::Releasing,
                        ],
                    )?,
                    store::previews::all(c)?,
                ))
            })
            .await?;
        let preview_ids: HashSet<&str> = previews.iter().map(|p| p.id.as_str()).collect();
        // A preview's deploy is only wanted while the preview exists.
        let wanted = |d: &&Deploy| {
            d.preview_id
                .as_deref()
                .is_none_or(|id| preview_ids.contains(id))
        };
        // Orphans: containers of projects or deploys that no longer want them.
        let live: HashSet<&str> = deploys
            .iter()
            .filter(wanted)
            .map(|d| d.id.as_str())
            .collect();
        remove_orphans(&engine, &self.installation, &live, &self.routing.draining()).await?;
        // Each release target (production of each project, each preview) is repaired on its
        // own: a target's count never counts another target's instances.
        let mut changed = false;
        for deploy in deploys
            .iter()
            .filter(wanted)
            .filter(|d| d.status == DeployStatus::Running)
        {
            let Some(project) = projects.iter().find(|p| p.id == deploy.project_id) else {
                continue;
            };
            let target = deploy.target();
            let busy = deploys.iter().any(|d| {
                d.project_id == project.id
                    && d.target() == target
                    && d.status != DeployStatus::Running
            });
            // A release whose image is gone has nothing to start: it is rebuilt instead (or
            // its failed rebuild is shown), never retried here every pass.
            if busy || deploy.image.is_none() || missing.contains(&deploy.id) {
                continue;
            }
            changed |= self.repair_release(&engine, project, deploy).await?;
        }
        if changed {
            self.routing.refresh().await?;
        }
        if let Err(err) = self.networks.sweep(&engine).await {
            tracing::warn!(error = %err, "removing unused networks");
        }
        // Instances Docker restarted, or that ran on while the daemon was down, are followed
        // again from where their stored logs end.
        self.logs.follow_running().await?;
        Ok(())
    }

    /// Repairs one running release under its project's lock (skipped while another change
    /// holds it): exited instances go, missing ones are replaced, instances on a shared
    /// network are moved to the target's own. True when web instances were started.
    async fn repair_release(
        &self,
        engine: &Runtime,
        project: &Project,
        deploy: &Deploy,
    ) -> Result<bool> {
        let lock = self.project_lock(&project.id);
        let Ok(_guard) = lock.try_lock() else {
            return Ok(false);
        };
        // The view above may be stale: a deploy superseded since (a switch, or its preview
        // removed) gets no replacements. Whoever superseded it stops its containers under
        // this lock, so a pass that got here first finishes before they do.
        // The project is read again under the lock too: a scale that finished meanwhile
        // changed the counts and size this pass works toward.
        let (id, project_id) = (deploy.id.clone(), project.id.clone());
        let current = self
            .store
            .call(move |c| {
                let running = store::deploys::by_id(c, &id)?
                    .is_some_and(|current| current.status == DeployStatus::Running);
                Ok(running
                    .then(|| store::projects::by_id_unscoped(c, &project_id))
                    .transpose()?
                    .flatten())
            })
            .await?;
        let Some(project) = current else {
            return Ok(false);
        };
        let project = &project;
        // Exited instances of the release are removed; Docker restarts crashed ones itself.
        for container in engine
            .containers_matching(&Filter::new().deploy(&deploy.id))
            .await
            .map_err(Error::from)?
        {
            let instance = process_of(&container).is_some();
            if instance && (container.state == "exited" || container.state == "dead") {
                let _ = engine
                    .stop_and_remove(&container.id, Duration::from_secs(1))
                    .await;
            }
        }
        let deploy_id = deploy.id.clone();
        let sealed = self
            .store
            .call(move |c| store::deploys::env_of(c, &deploy_id))
            .await?;
        let Some(release) = self.release_of(project, deploy, sealed)? else {
            return Ok(false);
        };
        let mut changed = false;
        for process in process_types(&release.plan) {
            changed |= self.repair_process(engine, &release, &process).await;
        }
        Ok(changed)
    }

    /// Brings one process type of a release back to its wanted count. True when web
    /// instances were started.
    async fn repair_process(
        &self,
        engine: &Runtime,
        release: &Release,
        process: &ProcessType,
    ) -> bool {
        let project = &release.project;
        let target = release.target();
        let size = self.desired_size(project, &target);
        let say = |line: String| tracing::info!(project = %release.project.id, "{line}");
        let wanted = desired_instances(project, &target, process);
        let serving = self.serving_instances(engine, release, process).await;
        let exposed = serving
            .iter()
            .filter(|c| !crate::networks::is_isolated(&self.config.deploy, &c.labels, &c.addresses))
            .count();
        let serving = serving.len() as u32;
        if serving >= wanted && exposed == 0 {
            return false;
        }
        if serving >= wanted {
            // Instances an earlier version started on the shared network (or attached
            // to another by hand) are replaced the way a scale change replaces them:
            // new ones on the target's own network first, then switch, drain, stop.
            tracing::info!(project = %project.id, deploy = %release.deploy_id, %process, exposed, "moving instances to the release target's own network");
            if let Err(err) = self
                .converge(release, process, wanted, size.as_deref(), &say)
                .await
            {
                tracing::warn!(project = %project.id, %process, error = %err, "moving instances to their own network");
            }
            return false;
        }
        tracing::warn!(project = %project.id, deploy = %release.deploy_id, %process, serving, wanted, "replacing missing instances");
        let mut changed = false;
        for _ in serving..wanted {
            match self
                .start_healthy(engine, release, process, size.as_deref(), &say)
                .await
            {
                Ok(_) => changed |= process.is_web(),
                Err(reason) => {
                    tracing::warn!(project = %project.id, %process, %reason, "a replacement instance did not become healthy");
                    break;
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        labels::Labels,
        runtime::{fake::FakeRuntime, ContainerSummary},
    };

    fn container(id: &str, labels: Labels) -> ContainerSummary {
        ContainerSummary {
            id: id.to_owned(),
            name: format!("cantila-{id}"),
            labels: labels.to_map(),
            state: "running".to_owned(),
            addresses: Default::default(),
        }
    }

    /// The orphan sweep through the runtime seam: only this installation's instances of
    /// deploys nobody wants go, and never a draining one or a one-off container (a release
    /// command, a helper, a run, which outlives the release it was started from).
    #[tokio::test]
    async fn the_orphan_sweep_removes_only_unwanted_instances_of_this_installation() {
        let web = ProcessType::parse("web").unwrap();
        let worker = ProcessType::parse("worker").unwrap();
        let instance = |installation, deploy| {
            Labels::instance(installation, "prj_a", deploy, "x1y2z3", &web, "small")
        };
        let fake = Arc::new(FakeRuntime::with_containers(vec![
            container("live-web", instance("inst", "dep_live")),
            container(
                "live-worker",
                Labels::instance("inst", "prj_a", "dep_live", "a1b2c3", &worker, "small"),
            ),
            container("orphan-web", instance("inst", "dep_gone")),
            container(
                "orphan-worker",
                Labels::instance("inst", "prj_a", "dep_gone", "d4e5f6", &worker, "small"),
            ),
            container("draining-web", instance("inst", "dep_gone")),
            container("release", Labels::release("inst", "prj_a", "dep_gone")),
            container("helper", Labels::helper("inst", "prj_a")),
            container("run", Labels::run("inst", "prj_a", "dep_gone", "run_a")),
            container("other-installation", instance("other", "dep_gone")),
        ]));
        let engine: Runtime = fake.clone();
        let live = HashSet::from(["dep_live"]);
        let draining = HashSet::from(["draining-web".to_owned()]);
        remove_orphans(&engine, "inst", &live, &draining)
            .await
            .unwrap();
        assert_eq!(fake.removed(), ["orphan-web", "orphan-worker"]);
    }
}

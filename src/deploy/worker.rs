//! The deploy worker: takes queued deploys from the store, one at a time per project and
//! at most `deploy.concurrent_builds` at once, and runs their pipelines. On start it fails
//! the deploys a previous run left half-done and removes their containers.

use std::{
    collections::HashSet,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Semaphore;

use crate::{clock, store};

use super::{DeployStatus, Deploys};

impl Deploys {
    /// Runs until `stopped` completes. Pipelines in progress are abandoned at shutdown and
    /// recovered (failed, cleaned up) on the next start.
    pub async fn run_worker(self, stopped: impl Future<Output = ()>) {
        self.recover_interrupted().await;
        let permits = Arc::new(Semaphore::new(self.config.deploy.concurrent_builds));
        let active: Arc<Mutex<HashSet<String>>> = Arc::default();
        tokio::pin!(stopped);
        loop {
            let queued = self
                .store
                .call(|c| store::deploys::with_status(c, &[DeployStatus::Queued]))
                .await
                .unwrap_or_else(|err| {
                    tracing::error!(error = %err, "reading the deploy queue");
                    Vec::new()
                });
            for deploy in queued {
                {
                    let mut active = active.lock().unwrap_or_else(|p| p.into_inner());
                    if !active.insert(deploy.project_id.clone()) {
                        continue;
                    }
                }
                let deploys = self.clone();
                let permits = permits.clone();
                let active = active.clone();
                tokio::spawn(async move {
                    let project_id = deploy.project_id.clone();
                    if let Ok(_permit) = permits.acquire().await {
                        // The switch exists before the claim, so a cancel that loses the race
                        // to the claim still reaches the pipeline.
                        let cancel = deploys.cancel_switch(&deploy.id);
                        let id = deploy.id.clone();
                        let claimed = deploys
                            .store
                            .call(move |c| {
                                store::deploys::claim_queued(
                                    c,
                                    &id,
                                    DeployStatus::Building,
                                    &clock::now(),
                                )
                            })
                            .await;
                        match claimed {
                            Ok(true) => {
                                tracing::info!(deploy = %deploy.id, project = %project_id, "deploy started");
                                deploys.run_pipeline(deploy, cancel).await;
                            }
                            Ok(false) => deploys.release_switch(&deploy.id),
                            Err(err) => {
                                deploys.release_switch(&deploy.id);
                                tracing::error!(deploy = %deploy.id, error = %err, "claiming a queued deploy");
                            }
                        }
                    }
                    active
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&project_id);
                    deploys.hub.wake.notify_one();
                });
            }
            tokio::select! {
                _ = self.hub.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = &mut stopped => break,
            }
        }
    }

    /// Deploys left `building` or `releasing` by a crash or stop are failed with the reason,
    /// and whatever containers they started are removed; the previous release keeps serving.
    async fn recover_interrupted(&self) {
        let interrupted = self
            .store
            .call(|c| {
                store::deploys::with_status(c, &[DeployStatus::Building, DeployStatus::Releasing])
            })
            .await
            .unwrap_or_default();
        for deploy in interrupted {
            tracing::warn!(deploy = %deploy.id, status = deploy.status.as_str(), "failing a deploy interrupted by a restart");
            self.remove_deploy_containers(&deploy.id).await;
            let step = match deploy.status {
                DeployStatus::Releasing => "release",
                _ => "build",
            };
            let (log, writer) = self.start_log(&deploy.id);
            log.failed(
                step,
                "interrupted: the daemon stopped while this deploy was in progress",
            );
            drop(log);
            let _ = writer.await;
            self.restore_project_status(&deploy.project_id).await;
            let _ = tokio::fs::remove_dir_all(self.config.builds_dir().join(&deploy.id)).await;
        }
        // Queued deploys get their live channels back.
        let queued = self
            .store
            .call(|c| store::deploys::with_status(c, &[DeployStatus::Queued]))
            .await
            .unwrap_or_default();
        for deploy in queued {
            self.hub.open(&deploy.id);
        }
    }
}

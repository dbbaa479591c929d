//! The services reconciler: a background task holding only the `Services` handle. Every
//! few seconds, and at once when woken after a change, it converges every service
//! (missing containers started, ones of an older spec replaced, extra ones stopped) and
//! removes the containers of services that no longer exist. Restarting a crashed
//! container is the engine's job (its restart policy), not this loop's.

use std::{collections::HashSet, future::Future, time::Duration};

use crate::{
    error::Result,
    labels::{self, Filter, Key, Kind},
};

use super::Services;

/// How often a pass runs when nothing wakes it.
const EVERY: Duration = Duration::from_secs(5);

impl Services {
    /// Runs passes until `stopped`. Service containers keep running across a daemon
    /// restart (the engine restarts them per their policy); the first pass adopts them.
    pub async fn run_reconciler(self, stopped: impl Future<Output = ()>) {
        tokio::pin!(stopped);
        loop {
            if let Err(err) = self.reconcile().await {
                tracing::debug!(error = %err, "reconciling services");
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = self.0.wake.notified() => {}
                () = &mut stopped => break,
            }
        }
    }

    /// One pass over every service of the installation.
    pub async fn reconcile(&self) -> Result<()> {
        let Ok(engine) = self.engine().await else {
            return Ok(());
        };
        let services = self.all().await?;
        for service in &services {
            // One service failing (its image missing, say) never holds back the others;
            // its condition records why.
            let _ = self.converge(service).await;
        }
        // Containers of services deleted (or of a project deleted) behind this pass.
        let wanted: HashSet<(&str, &str)> = services
            .iter()
            .map(|s| (s.project_id.as_str(), s.name().as_str()))
            .collect();
        let containers = engine
            .containers_matching(
                &Filter::new()
                    .installation(&self.0.installation)
                    .kind(Kind::Service),
            )
            .await?;
        for container in containers {
            let project = labels::get(&container.labels, Key::Project).unwrap_or_default();
            let name = labels::get(&container.labels, Key::Service).unwrap_or_default();
            if !wanted.contains(&(project, name)) {
                // Checked again under the project's lock: a service created since the list
                // was read keeps its container.
                let lock = self.0.locks.of(project);
                let _guard = lock.lock().await;
                let (p, n) = (project.to_owned(), name.to_owned());
                let exists = self
                    .0
                    .store
                    .call(move |c| crate::store::services::by_name(c, &p, &n))
                    .await?
                    .is_some();
                if !exists {
                    tracing::info!(container = %container.name, "removing the container of a deleted service");
                    let _ = engine
                        .stop_and_remove(&container.id, Duration::from_secs(10))
                        .await;
                }
            }
        }
        Ok(())
    }
}

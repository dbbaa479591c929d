//! Deleting a project end to end: its rows go (`projects`), then what lived outside the
//! store is torn down here, the highest service involved: deploys in progress canceled,
//! routes refreshed, previews' certificates forgotten, and in the background its
//! containers, networks, published site, git mirror, backups and assets removed.

use std::time::Duration;

use crate::{accounts::Actor, error::Result, labels::Filter, model::preview::Preview};

use super::{Deploy, Deploys};

impl Deploys {
    /// Deletes the project and everything attached to it: deploys in progress are canceled,
    /// its rows go, and in the background its containers, published site and git mirror are
    /// removed.
    pub async fn delete_project(&self, actor: &Actor, id: String) -> Result<()> {
        let deleted = self.projects.delete(actor, id.clone()).await?;
        for deploy in deleted.active {
            self.request_cancel(&deploy.id);
        }
        // The hostname stops routing at once.
        if let Err(err) = self.routing.refresh().await {
            tracing::warn!(error = %err, "refreshing routes after a project deletion");
        }
        // Previews' certificate records go with their hostnames.
        for preview in deleted.previews {
            if let Err(err) = self.tls.forget(&preview.hostname).await {
                tracing::warn!(host = %preview.hostname, error = %err, "forgetting a deleted preview's certificate");
            }
        }
        let deploys = self.clone();
        tokio::spawn(async move { deploys.remove_project_files(&id).await });
        Ok(())
    }

    /// Removes a deleted project's containers (instances, release commands and one-off
    /// runs alike: all carry the project's label) and networks, then its directories on
    /// disk. A run's waiter then finds its container gone and its record deleted with the
    /// project, and ends.
    async fn remove_project_files(&self, project_id: &str) {
        self.remove_project_containers(project_id).await;
        let sites = self.config.sites_dir().join(project_id);
        let mirror = self.config.repos_dir().join(format!("{project_id}.git"));
        let backups = self.config.backups_dir().join(project_id);
        let assets = self.config.assets_dir().join(project_id);
        for dir in [sites, mirror, backups, assets] {
            if let Err(err) = tokio::fs::remove_dir_all(&dir).await {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %err, "removing a deleted project's files");
                }
            }
        }
    }

    /// Stops and removes the preview's containers, its network, its published sites, and the
    /// images no other deploy uses.
    pub(crate) async fn remove_preview_files(&self, preview: &Preview, deploys: &[Deploy]) {
        // Under the project lock: a repair pass that read the preview before its removal
        // finishes first (and one that reads after sees its deploy superseded), so no
        // replacement it starts outlives the removal.
        let lock = self.project_lock(&preview.project_id);
        let _guard = lock.lock().await;
        if let Ok(engine) = self.engine().await {
            let grace = Duration::from_secs(self.config.deploy.stop_grace_secs);
            for container in engine
                .containers_matching(&Filter::new().preview(&preview.id))
                .await
                .unwrap_or_default()
            {
                if let Err(err) = engine.stop_and_remove(&container.id, grace).await {
                    tracing::warn!(container = %container.name, error = %err, "removing a preview's container");
                }
            }
            self.networks.remove_of_preview(&engine, &preview.id).await;
            let images: Vec<String> = deploys.iter().filter_map(|d| d.image.clone()).collect();
            self.remove_preview_images(&engine, &preview.id, images)
                .await;
        }
        for deploy in deploys {
            let site = self
                .config
                .sites_dir()
                .join(&preview.project_id)
                .join(&deploy.id);
            let index = crate::edge::static_site::index::index_dir(&site);
            for dir in [site, index] {
                if let Err(err) = tokio::fs::remove_dir_all(&dir).await {
                    if err.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(dir = %dir.display(), error = %err, "removing a preview's site");
                    }
                }
            }
        }
    }
}

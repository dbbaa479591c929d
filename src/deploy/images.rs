//! Image pruning: a project keeps the images of its newest `deploy.keep_images` releases;
//! a preview keeps only the image that serves it, and its removal takes the images only it
//! used.
//! Invariant: an image another deploy still names (production reuses an image built for
//! the same commit and build inputs), or a container still uses, is never removed.

use crate::{runtime::Runtime, store};

use super::{DeployStatus, Deploys};

impl Deploys {
    /// Removes the images of releases older than the newest `deploy.keep_images` ones. An
    /// image still used by a container (or shared with a kept release) stays.
    pub(super) async fn prune_images(&self, project_id: &str) {
        let id = project_id.to_owned();
        let history = self
            .store
            .call(move |c| store::deploys::page(c, &id, None, 1000))
            .await
            .unwrap_or_default();
        let mut kept: Vec<String> = Vec::new();
        let mut prunable: Vec<String> = Vec::new();
        let mut deploys_of_image: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        for (_, deploy) in history {
            let Some(image) = deploy.image else { continue };
            deploys_of_image
                .entry(image.clone())
                .or_default()
                .push(deploy.id.clone());
            let released = matches!(
                deploy.status,
                DeployStatus::Running | DeployStatus::Superseded
            );
            if kept.contains(&image) || prunable.contains(&image) {
                continue;
            }
            if released && kept.len() < self.config.deploy.keep_images {
                kept.push(image);
            } else {
                prunable.push(image);
            }
        }
        let Ok(engine) = self.engine().await else {
            return;
        };
        for image in prunable {
            if engine.image_id(&image).await.ok().flatten().is_none() {
                continue;
            }
            match engine.remove_image(&image).await {
                Ok(()) => {
                    tracing::info!(project = %project_id, %image, "removed an old image");
                    let deploys = deploys_of_image.remove(&image).unwrap_or_default();
                    self.assets.forget(project_id, &deploys).await;
                }
                Err(err) => tracing::debug!(%image, error = %err, "keeping an image still in use"),
            }
        }
    }

    /// Removes those of `images` no deploy outside the preview names (production reuses an
    /// image built for the same commit and build inputs); Docker refuses to remove one a container
    /// still uses.
    pub(crate) async fn remove_preview_images(
        &self,
        engine: &Runtime,
        preview_id: &str,
        mut images: Vec<String>,
    ) {
        images.sort();
        images.dedup();
        for image in images {
            let (check_image, check_preview) = (image.clone(), preview_id.to_owned());
            let shared = self
                .store
                .call(move |c| {
                    store::deploys::image_used_outside_preview(c, &check_image, &check_preview)
                })
                .await
                .unwrap_or(true);
            if shared || engine.image_id(&image).await.ok().flatten().is_none() {
                continue;
            }
            match engine.remove_image(&image).await {
                Ok(()) => tracing::info!(preview = %preview_id, %image, "removed a preview image"),
                Err(err) => {
                    tracing::debug!(%image, error = %err, "keeping a preview image still in use")
                }
            }
        }
    }

    /// After a preview's release switched: removes the images of its earlier deploys that
    /// only it used. A preview keeps no history to roll back to, so only the serving image
    /// stays.
    pub(super) async fn prune_preview_images(&self, preview_id: &str) {
        let id = preview_id.to_owned();
        let Ok(deploys) = self
            .store
            .call(move |c| store::deploys::of_preview(c, &id, 1000))
            .await
        else {
            return;
        };
        let serving: Vec<&str> = deploys
            .iter()
            .filter(|d| !d.status.is_final() || d.status == DeployStatus::Running)
            .filter_map(|d| d.image.as_deref())
            .collect();
        let old: Vec<String> = deploys
            .iter()
            .filter_map(|d| d.image.clone())
            .filter(|image| !serving.contains(&image.as_str()))
            .collect();
        if old.is_empty() {
            return;
        }
        let Ok(engine) = self.engine().await else {
            return;
        };
        self.remove_preview_images(&engine, preview_id, old).await;
    }
}

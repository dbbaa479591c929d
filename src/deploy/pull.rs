//! Releases of a project whose source is an image: pull (with the account's registry
//! credentials, progress in the deploy's log), resolve and record the digest, pin it, tag
//! it as the release's image and plan from its config. A rollback re-pulls an earlier
//! digest the pruning removed.
//! Invariants: a release runs the exact digest recorded on its deploy (the release tag is
//! made from `repository@digest`, never from a tag that may have moved since); a pull that
//! resolves to the digest the target already serves releases nothing.

use crate::{
    error::Error,
    model::image::ImageReference,
    plan::{self, ImagePlan, SourcePlan},
    projects::Project,
    runtime::Runtime,
    store,
};

use super::{
    pipeline::{failed, Stop},
    Deploy, DeployLog, DeployStatus, Deploys,
};

impl Deploys {
    /// The image the project takes its releases from, or `None` for a git project.
    pub(super) async fn image_source_of(
        &self,
        project: &Project,
    ) -> Result<Option<ImageReference>, Stop> {
        let id = project.id.clone();
        let stored = self
            .store
            .call(move |c| store::images::get(c, &id))
            .await
            .map_err(failed("pull"))?;
        stored
            .map(|stored| ImageReference::parse(&stored.reference))
            .transpose()
            .map_err(failed("pull"))
    }

    /// Pulls the deploy's image, records its digest, tags it as the release's image and
    /// plans from its config. Returns the plan and the release's image tag.
    pub(super) async fn pull_release(
        &self,
        project: &Project,
        deploy: &Deploy,
        connected: &ImageReference,
        log: &DeployLog,
    ) -> Result<(SourcePlan, String), Stop> {
        let reference = match &deploy.git_ref {
            Some(selector) => connected.with_selector(selector).map_err(failed("pull"))?,
            None => connected.clone(),
        };
        let engine = self.engine().await.map_err(failed("pull"))?;
        let pulled = self.pull_logged(&engine, project, &reference, log).await?;
        let details = engine
            .image_details(&pulled)
            .await
            .map_err(|e| failed("pull")(e.into()))?
            .ok_or_else(|| {
                failed("pull")(Error::Internal(format!(
                    "{pulled} is absent after its pull"
                )))
            })?;
        let digest = reference
            .digest()
            .map(str::to_owned)
            .or_else(|| details.digest_in(&reference.repository()))
            .ok_or_else(|| Stop::Failed {
                step: "pull",
                message: format!(
                    "the registry gave {reference} no digest; Cantila deploys only images it can pin"
                ),
            })?;
        log.line(format!("resolved {reference} to {digest}"));
        let id = deploy.id.clone();
        let recorded = digest.clone();
        self.store
            .call(move |c| store::deploys::set_image_digest(c, &id, &recorded))
            .await
            .map_err(failed("pull"))?;
        // A rebuild pulls the very digest the live release names: that is the point.
        let rebuild = deploy.trigger == crate::model::deploy::RESTORE_TRIGGER;
        if let Some(serving) = self.serving_digest(deploy).await?.filter(|_| !rebuild) {
            if serving.1 == digest {
                // The pulled tag is not kept: the serving release's tag holds the image.
                if reference.digest().is_none() {
                    let _ = engine.remove_image(&pulled).await;
                }
                return Err(Stop::Unchanged {
                    serving: serving.0,
                    digest,
                });
            }
        }
        let pinned = reference.pinned(&digest);
        let tag = self.release_tag(project, deploy);
        engine
            .tag_image(&pinned, &tag)
            .await
            .map_err(|e| failed("pull")(e.into()))?;
        // Only release tags keep pulled images, so pruning them (`prune_images`) frees
        // the space.
        if reference.digest().is_none() {
            let _ = engine.remove_image(&pulled).await;
        }
        self.record_image(deploy, &tag).await?;
        let source_plan = plan::plan_image(ImagePlan {
            reference: pinned,
            digest: Some(digest),
            exposed_ports: details.exposed_ports,
            healthcheck: details.healthcheck,
            user: details.user,
            workdir: details.workdir,
        });
        log.line(format!(
            "plan: image {}, port {}",
            reference, source_plan.port
        ));
        for warning in &source_plan.warnings {
            log.line(format!("warning: {warning}"));
        }
        // The deploy plan's source plan is what is released: it carries the health check
        // with the project's settings applied over the image's, as the plan API shows it.
        let deploy_plan = self
            .deploy_plan(project, &source_plan, None)
            .await
            .map_err(failed("plan"))?;
        let source_plan = deploy_plan.source.clone();
        log.line(format!(
            "health check: {}",
            source_plan.health_check.describe(source_plan.port)
        ));
        let plan_json = serde_json::to_string(&deploy_plan)
            .map_err(|err| failed("plan")(Error::Internal(err.to_string())))?;
        let id = deploy.id.clone();
        self.store
            .call(move |c| store::deploys::set_plan(c, &id, &plan_json))
            .await
            .map_err(failed("plan"))?;
        Ok((source_plan, tag))
    }

    /// Pulls `reference` with the project's account's credentials for its registry, the
    /// engine's progress in the log. Returns what was pulled (`repository:tag` or
    /// `repository@digest`).
    async fn pull_logged(
        &self,
        engine: &Runtime,
        project: &Project,
        reference: &ImageReference,
        log: &DeployLog,
    ) -> Result<String, Stop> {
        // The registry's host must pass the egress policy before the engine is asked to
        // pull from it (the engine resolves the name again itself; README).
        let egress = crate::source::EgressPolicy::from_config(&self.config.git);
        crate::registry_api::check_host(
            &reference.registry(),
            &egress,
            crate::registry_api::Unresolved::Refuse,
        )
        .await
        .map_err(failed("pull"))?;
        let auth = self
            .registries
            .auth_for(&project.account_id, &reference.registry())
            .await
            .map_err(failed("pull"))?;
        let pulled = match reference.digest() {
            Some(digest) => reference.pinned(digest),
            None => format!("{}:{}", reference.repository(), reference.tag_or_latest()),
        };
        log.line(match &auth {
            Some(auth) => format!("pulling {pulled} as {}", auth.username),
            None => format!(
                "pulling {pulled} without credentials (none stored for {})",
                reference.registry()
            ),
        });
        let pull_log = log.clone();
        engine
            .pull(&pulled, auth.as_ref(), &mut move |line| pull_log.line(line))
            .await
            .map_err(|err| Stop::Failed {
                step: "pull",
                message: err.to_string(),
            })?;
        Ok(pulled)
    }

    /// The deploy serving the deploy's target now and the digest it pulled, if it was an
    /// image deploy.
    async fn serving_digest(&self, deploy: &Deploy) -> Result<Option<(String, String)>, Stop> {
        let project_id = deploy.project_id.clone();
        let target = deploy.target();
        let serving = self
            .store
            .call(move |c| {
                store::deploys::of_target_with_status(
                    c,
                    &project_id,
                    target.preview_id(),
                    &[DeployStatus::Running],
                )
            })
            .await
            .map_err(failed("pull"))?;
        Ok(serving
            .into_iter()
            .find_map(|d| d.image_digest.map(|digest| (d.id, digest))))
    }

    /// The tag a release's image carries: one per deploy, so pruning removes it alone.
    pub(super) fn release_tag(&self, project: &Project, deploy: &Deploy) -> String {
        format!("cantila/{}/{}:{}", project.handle, project.name, deploy.id)
    }

    /// For a rollback to an image deploy whose image was pruned: pulls its exact digest
    /// again and tags it as that deploy's image.
    pub(super) async fn repull_for_rollback(
        &self,
        project: &Project,
        target: &Deploy,
        image: &str,
        log: &DeployLog,
    ) -> Result<(), Stop> {
        let (Some(digest), Some(reference)) = (
            target.image_digest.as_deref(),
            target
                .plan
                .as_ref()
                .and_then(|plan| plan.get("image"))
                .and_then(|image| image.get("reference"))
                .and_then(|reference| reference.as_str()),
        ) else {
            return Err(Stop::Failed {
                step: "pull",
                message: format!(
                    "the image of {} ({image}) was pruned and the deploy names no digest to pull again",
                    target.id
                ),
            });
        };
        let reference = ImageReference::parse(reference).map_err(failed("pull"))?;
        let pinned_reference = reference.with_selector(digest).map_err(failed("pull"))?;
        log.line(format!(
            "the image of {} was pruned: pulling its digest {digest} again",
            target.id
        ));
        let engine = self.engine().await.map_err(failed("pull"))?;
        let pulled = self
            .pull_logged(&engine, project, &pinned_reference, log)
            .await?;
        engine
            .tag_image(&pulled, image)
            .await
            .map_err(|e| failed("pull")(e.into()))
    }
}

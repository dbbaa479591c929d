//! Rebuilding what should run on an engine that lost it: a production release that is
//! live in the store but whose image is gone from the engine (or whose static site's files
//! are gone from disk) gets a deploy with trigger `restore` that makes exactly that release
//! again: a git release rebuilt from its recorded commit (the mirror is cloned again from
//! the recorded remote when it is missing), an image release pulled again by its recorded
//! digest. This is what brings an installation back after its state was restored onto a
//! new server, or after the engine's images and the data directory's rebuildable parts
//! were lost.
//! Invariant: never a loop. A project gets at most one rebuild in progress, and a rebuild
//! that failed (or was canceled) stays visible in the deploy list and is not queued again
//! until the project's live release changes; only one a daemon stop interrupted is retried.

use std::{collections::HashSet, path::Path};

use crate::{
    error::{Error, Result},
    model::deploy::RESTORE_TRIGGER,
    runtime::Runtime,
    store,
};

use super::{new_deploy, Deploy, DeployStatus, Deploys, ReleaseTarget};

/// How many of a project's newest production deploys are read to find the live one and
/// the rebuilds queued since it.
const HISTORY: u32 = 50;

/// What the live release of a project is built from, as far as a rebuild needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Release {
    /// A container image, tagged `image` on the engine.
    Image(String),
    /// A static site, whose files live under `sites/<project>/<deploy>`.
    StaticSite,
    /// Nothing the engine or the disk holds (no image, no site): nothing to rebuild.
    Nothing,
}

fn release_of(deploy: &Deploy) -> Release {
    match &deploy.image {
        Some(image) => Release::Image(image.clone()),
        None if deploy
            .plan
            .as_ref()
            .and_then(|plan| plan.get("builder"))
            .and_then(|builder| builder.as_str())
            == Some("static") =>
        {
            Release::StaticSite
        }
        None => Release::Nothing,
    }
}

/// Whether a rebuild of `live` should be queued, given the project's production deploys
/// newer than it (newest first) and whether its image or site is missing. `Err` carries
/// why not, for the log.
fn decide(live: &Deploy, newer: &[Deploy], missing: bool) -> std::result::Result<(), &'static str> {
    if !missing {
        return Err("present");
    }
    if newer.iter().any(|d| !d.status.is_final()) {
        return Err("a deploy of the project is already in progress");
    }
    // A rebuild since the live release that did not end running: it failed or was
    // canceled, and stays so until someone deploys; one a daemon stop interrupted is
    // tried again (that is not the rebuild's fault).
    let given_up = newer.iter().any(|d| {
        d.trigger == RESTORE_TRIGGER
            && !d
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("interrupted"))
    });
    if given_up {
        return Err("an earlier rebuild of this release failed or was canceled");
    }
    if live.image_digest.is_none() && live.commit_sha.is_none() {
        return Err("the release names neither a commit nor an image digest");
    }
    Ok(())
}

/// What one pass of `rebuild_missing` found.
#[derive(Debug, Default)]
pub struct Rebuilds {
    /// The rebuilds it queued.
    pub queued: Vec<Deploy>,
    /// The live deploys whose image or site is missing (rebuilt now or not): the
    /// reconciler does not try to start instances of an image that is not there.
    pub missing: HashSet<String>,
}

impl Deploys {
    /// Queues a `restore` deploy for each project whose live production release is missing
    /// from the engine (its image) or the disk (its static site). Does nothing while the
    /// engine cannot be reached.
    pub async fn rebuild_missing(&self) -> Result<Rebuilds> {
        let mut found = Rebuilds::default();
        let Ok(engine) = self.engine().await else {
            return Ok(found);
        };
        let running = self
            .store
            .call(|c| store::deploys::with_status(c, &[DeployStatus::Running]))
            .await?;
        for live in running.into_iter().filter(|d| d.preview_id.is_none()) {
            let missing = match self.is_missing(&engine, &live).await {
                Ok(missing) => missing,
                Err(err) => {
                    tracing::warn!(project = %live.project_id, deploy = %live.id, error = %err, "checking whether a live release is on the engine");
                    continue;
                }
            };
            if !missing {
                continue;
            }
            found.missing.insert(live.id.clone());
            match self.rebuild(&live).await {
                Ok(Some(deploy)) => found.queued.push(deploy),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(project = %live.project_id, deploy = %live.id, error = %err, "queueing the rebuild of a live release")
                }
            }
        }
        Ok(found)
    }

    /// Whether the live release's image is gone from the engine, or its site from disk.
    async fn is_missing(&self, engine: &Runtime, live: &Deploy) -> Result<bool> {
        Ok(match release_of(live) {
            Release::Image(image) => engine.image_id(&image).await?.is_none(),
            Release::StaticSite => {
                let site = self
                    .config
                    .sites_dir()
                    .join(&live.project_id)
                    .join(&live.id);
                !exists(&site).await
            }
            Release::Nothing => false,
        })
    }

    /// Queues the rebuild of a live release found missing, unless `decide` says not to.
    async fn rebuild(&self, live: &Deploy) -> Result<Option<Deploy>> {
        let (project_id, live_id) = (live.project_id.clone(), live.id.clone());
        let (project, newer) = self
            .store
            .call(move |c| {
                let project = store::projects::by_id_unscoped(c, &project_id)?
                    .ok_or_else(|| Error::NotFound(format!("project `{project_id}` not found")))?;
                let newer: Vec<Deploy> = store::deploys::page(c, &project_id, None, HISTORY)?
                    .into_iter()
                    .map(|(_, d)| d)
                    .take_while(|d| d.id != live_id)
                    .collect();
                Ok((project, newer))
            })
            .await?;
        if let Err(why) = decide(live, &newer, true) {
            tracing::debug!(project = %live.project_id, deploy = %live.id, why, "not rebuilding a missing release");
            return Ok(None);
        }
        // An image release is pulled again by its digest; a git one (and a static site) is
        // built again from its commit.
        let git_ref = live.image_digest.clone().or(live.commit_sha.clone());
        let deploy = new_deploy(
            live.project_id.clone(),
            ReleaseTarget::Production,
            git_ref,
            RESTORE_TRIGGER,
        );
        let (project_id, live_id) = (live.project_id.clone(), live.id.clone());
        let queued = deploy.clone();
        let (account_id, deploy_id) = (project.account_id.clone(), deploy.id.clone());
        let audit = move |outcome: &Option<super::Superseded>| match outcome {
            Some(_) => vec![store::Audit::by_daemon(
                &account_id,
                "rebuild",
                "deploy.create",
                deploy_id,
            )],
            None => Vec::new(),
        };
        let superseded = self
            .store
            .write_audited(audit, move |tx| {
                // Checked again in the transaction: the live release may have changed, or a
                // deploy been queued, since the view above.
                let still_live = store::deploys::by_id(tx, &live_id)?
                    .is_some_and(|d| d.status == DeployStatus::Running);
                let busy = !store::deploys::of_project_with_status(
                    tx,
                    &project_id,
                    &[
                        DeployStatus::Queued,
                        DeployStatus::Building,
                        DeployStatus::Releasing,
                    ],
                )?
                .is_empty();
                if !still_live || busy {
                    return Ok(None);
                }
                store::deploys::queue(tx, &queued).map(Some)
            })
            .await?;
        let Some(superseded) = superseded else {
            return Ok(None);
        };
        tracing::info!(project = %live.project_id, live = %live.id, deploy = %deploy.id, "the live release is missing from the engine: rebuilding it");
        self.announce(&deploy.id, superseded);
        Ok(Some(deploy))
    }
}

async fn exists(path: &Path) -> bool {
    tokio::fs::try_exists(path).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(id: &str, status: DeployStatus, trigger: &str) -> Deploy {
        let mut deploy = new_deploy("prj_1".to_owned(), ReleaseTarget::Production, None, trigger);
        deploy.id = id.to_owned();
        deploy.status = status;
        deploy
    }

    fn live() -> Deploy {
        let mut live = deploy("dep_live", DeployStatus::Running, "api");
        live.commit_sha = Some("a".repeat(40));
        live.image = Some("cantila/admin/app:dep_live".to_owned());
        live
    }

    #[test]
    fn a_missing_release_is_rebuilt_once_and_a_failed_rebuild_is_not_retried() {
        let failed = |error: &str| {
            let mut d = deploy("dep_r", DeployStatus::Failed, RESTORE_TRIGGER);
            d.error = Some(error.to_owned());
            d
        };
        let cases: Vec<(&str, Vec<Deploy>, bool, bool)> = vec![
            ("missing, nothing since", vec![], true, true),
            ("present", vec![], false, false),
            (
                "a rebuild queued",
                vec![deploy("dep_r", DeployStatus::Queued, RESTORE_TRIGGER)],
                true,
                false,
            ),
            (
                "a user's deploy building",
                vec![deploy("dep_u", DeployStatus::Building, "api")],
                true,
                false,
            ),
            (
                "a failed rebuild",
                vec![failed("build failed: exit 1")],
                true,
                false,
            ),
            (
                "a canceled rebuild",
                vec![deploy("dep_r", DeployStatus::Canceled, RESTORE_TRIGGER)],
                true,
                false,
            ),
            (
                "a rebuild a stop interrupted",
                vec![failed(
                    "interrupted: the daemon stopped while this deploy was in progress",
                )],
                true,
                true,
            ),
            (
                "a user's failed deploy",
                vec![deploy("dep_u", DeployStatus::Failed, "api")],
                true,
                true,
            ),
        ];
        for (name, newer, missing, wanted) in cases {
            assert_eq!(decide(&live(), &newer, missing).is_ok(), wanted, "{name}");
        }
        let mut nameless = live();
        nameless.commit_sha = None;
        assert!(decide(&nameless, &[], true).is_err());
    }

    #[test]
    fn the_release_kind_comes_from_the_image_or_the_plan() {
        assert_eq!(
            release_of(&live()),
            Release::Image("cantila/admin/app:dep_live".to_owned())
        );
        let mut site = live();
        site.image = None;
        site.plan = Some(serde_json::json!({ "builder": "static" }));
        assert_eq!(release_of(&site), Release::StaticSite);
        site.plan = None;
        assert_eq!(release_of(&site), Release::Nothing);
    }
}

//! One deploy from start to end: fetch (git2) ► plan ► build (Docker) ► release (start,
//! health-check, switch, stop the old release). Every step logs what it does; a failure
//! records the step and why, and leaves the previous release serving.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    clock,
    config::BuilderKind,
    error::Error,
    labels::{self, Filter, Key, Labels},
    plan::{self, BuildPlan, Builder, PlanOptions, SourcePlan},
    projects::{Project, ProjectStatus},
    runtime::{BuildRequest, BuildSecret},
    source::{GitRef, Mirror, RepoLocation},
    store,
};

use super::{context, stack::StackImages, Deploy, DeployLog, DeployStatus, Deploys, ReleaseTarget};
use crate::stack::Stack;

/// What one image build is made of.
pub(super) struct BuildJob<'a> {
    /// The build context: a checked directory of the checkout.
    pub context_dir: &'a Path,
    /// A generated Dockerfile's text, added to the context.
    pub generated: Option<String>,
    /// The Dockerfile's path in the context.
    pub dockerfile: String,
    pub target: Option<String>,
    pub build_args: Vec<(String, String)>,
    pub tag: String,
    pub labels: std::collections::HashMap<String, String>,
}

/// Why a deploy stopped short of `running`.
pub(super) enum Stop {
    Failed {
        step: &'static str,
        message: String,
    },
    Canceled,
    /// An image deploy pulled the digest the target's release already serves: nothing
    /// to release (the deploy ends `canceled`, its outcome `unchanged`).
    Unchanged {
        serving: String,
        digest: String,
    },
}

pub(super) fn failed(step: &'static str) -> impl Fn(Error) -> Stop {
    move |err| Stop::Failed {
        step,
        message: match err {
            // Internal details (paths, SQL) stay in the server log.
            Error::Store(_) | Error::Internal(_) => {
                tracing::error!(step, error = %err, "deploy step failed");
                format!("internal error during {step}; the server log has the detail")
            }
            other => other.to_string(),
        },
    }
}

impl Deploys {
    /// Runs the deploy to its end. Never panics the worker: every outcome is recorded.
    /// The deploy was claimed (`queued → building`) by the worker; `cancel` flips when a
    /// cancel is requested.
    pub(crate) async fn run_pipeline(&self, deploy: Deploy, mut cancel: super::CancelSwitch) {
        let (log, writer) = self.start_log(&deploy.id);
        let scratch = self.config.builds_dir().join(&deploy.id);
        let mut started: Vec<String> = Vec::new();
        let outcome = tokio::select! {
            outcome = self.steps(&deploy, &log, &scratch, &mut started) => outcome,
            _ = cancel.wait_for(|canceled| *canceled) => Err(Stop::Canceled),
        };
        if let Err(stop) = &outcome {
            // The new release never took traffic: remove what it started.
            self.remove_deploy_containers(&deploy.id).await;
            match stop {
                Stop::Failed { step, message } => {
                    log.line(format!("deploy failed at {step}: {message}"));
                    log.failed(step, message);
                }
                Stop::Canceled => {
                    log.line("deploy canceled");
                    log.status(DeployStatus::Canceled);
                }
                Stop::Unchanged { serving, digest } => {
                    let id = deploy.id.clone();
                    if let Err(err) = self
                        .store
                        .call(move |c| store::deploys::set_outcome(c, &id, "unchanged"))
                        .await
                    {
                        tracing::error!(deploy = %deploy.id, error = %err, "recording the outcome");
                    }
                    log.line(format!(
                        "nothing to deploy: the image digest {digest} is what {serving} already serves"
                    ));
                    log.status(DeployStatus::Canceled);
                }
            }
            // A preview's failure never changes the project's status.
            if deploy.preview_id.is_none() {
                self.restore_project_status(&deploy.project_id).await;
            }
        }
        drop(started);
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        drop(log);
        let _ = writer.await;
    }

    async fn steps(
        &self,
        deploy: &Deploy,
        log: &DeployLog,
        scratch: &Path,
        started: &mut Vec<String>,
    ) -> Result<(), Stop> {
        let project_id = deploy.project_id.clone();
        let project = self
            .store
            .call(move |c| {
                store::projects::by_id_unscoped(c, &project_id)?
                    .ok_or_else(|| Error::NotFound("the project was deleted".to_owned()))
            })
            .await
            .map_err(failed("fetch"))?;
        // A running or stopped project keeps its status while a new release builds; a
        // preview's build never changes it.
        if deploy.preview_id.is_none() {
            self.set_project_status(&project, ProjectStatus::Building, true)
                .await;
        }
        log.status(DeployStatus::Building);

        // What to release: built from source now, or an earlier deploy's (a rollback).
        let (source_plan, image, earlier_env, stack) = match &deploy.rollback_of {
            Some(target) => {
                let (plan, image, env) =
                    self.prepare_rollback(&project, deploy, target, log).await?;
                (plan, image, Some(env), None)
            }
            None => match self.image_source_of(&project).await? {
                Some(reference) => {
                    let (plan, image) =
                        self.pull_release(&project, deploy, &reference, log).await?;
                    (plan, Some(image), None, None)
                }
                None => {
                    let (plan, image, stack) = self
                        .build_from_source(&project, deploy, log, scratch)
                        .await?;
                    (plan, image, None, stack)
                }
            },
        };

        // One release change per project at a time: a scale or a repair waits for this one.
        let lock = self.project_lock(&project.id);
        let _release_guard = lock.lock().await;
        log.status(DeployStatus::Releasing);
        // The database the release connects to must be there before anything of it starts
        // (a state restored onto a new PostgreSQL server has the records but no role or
        // database yet). An unreachable server does not stop the release: the app may not
        // need it to start, and the failure is in the log.
        match self.databases.ensure_present(&project.id).await {
            Ok(true) => log.line(
                "the project's PostgreSQL database was missing on the server: made again (empty) with its recorded credentials",
            ),
            Ok(false) => {}
            Err(err) => log.line(format!(
                "warning: could not check the project's PostgreSQL database: {err}"
            )),
        }
        let compose_env = stack.as_ref().map(|(stack, _)| &stack.public.env);
        let env_snapshot = match earlier_env {
            Some(env) => env,
            None => self.snapshot_env(deploy, &project, compose_env).await?,
        };
        // A compose project's other services are made to match the file before its public
        // service is released (and before its release command, which may need them).
        if let Some((stack, images)) = &stack {
            match deploy.target() {
                ReleaseTarget::Production => {
                    self.apply_stack(&project, stack, images, log).await?;
                }
                ReleaseTarget::Preview(_) => log.line(
                    "compose: a preview releases the public service only; the other services run for production",
                ),
            }
        }
        if let Some(image) = image {
            // A rollback re-releases what already ran: its release command ran back then.
            if let (Some(command), None) = (&source_plan.release_command, &deploy.rollback_of) {
                self.run_release_command(
                    &project,
                    deploy,
                    &source_plan,
                    &image,
                    &env_snapshot,
                    command,
                    log,
                )
                .await?;
            }
            self.release_containers(
                &project,
                deploy,
                &source_plan,
                &image,
                env_snapshot,
                log,
                started,
            )
            .await?;
        }
        self.switch_to(&project, deploy, log)
            .await
            .map_err(failed("release"))?;
        match deploy.target() {
            ReleaseTarget::Production => self.prune_images(&project.id).await,
            ReleaseTarget::Preview(preview_id) => self.prune_preview_images(&preview_id).await,
        }
        Ok(())
    }

    /// Fetch, plan and build (or publish a static site). Returns the plan and the image,
    /// `None` for a static site.
    async fn build_from_source(
        &self,
        project: &Project,
        deploy: &Deploy,
        log: &DeployLog,
        scratch: &Path,
    ) -> Result<(SourcePlan, Option<String>, Option<(Stack, StackImages)>), Stop> {
        let checkout = scratch.join("source");
        self.fetch(deploy, project, log, &checkout).await?;
        let (detected, build_plan) = self.plan_source(project, log, &checkout).await?;
        // The build's context is the root directory, checked by the planner to be a real
        // directory of the checkout.
        let source_dir = checkout.join(&build_plan.root_dir);
        let deploy_plan = self
            .deploy_plan(project, &detected, Some(&build_plan))
            .await
            .map_err(failed("plan"))?;
        // The deploy plan's own source plan is released: it carries the health check with
        // the project's settings applied, exactly as the plan API shows it.
        let source_plan = deploy_plan.source.clone();
        if source_plan.builder != Builder::Static {
            log.line(format!(
                "health check: {} ({})",
                source_plan.health_check.describe(source_plan.port),
                match source_plan.health_check.source {
                    Some(plan::HealthCheckSource::Api) => "the project's settings",
                    Some(plan::HealthCheckSource::File) => "the settings file's [health]",
                    Some(plan::HealthCheckSource::Detection) | None => "detected",
                }
            ));
        }
        // The plan's build inputs key image reuse (`planning::build_key`): a change of a
        // build setting rebuilds, a change of the health check alone does not.
        let plan_json = serde_json::to_string(&deploy_plan)
            .map_err(|err| failed("plan")(Error::Internal(err.to_string())))?;
        {
            let id = deploy.id.clone();
            let plan_json = plan_json.clone();
            self.store
                .call(move |c| store::deploys::set_plan(c, &id, &plan_json))
                .await
                .map_err(failed("plan"))?;
        }
        let image = match source_plan.builder {
            Builder::Static => {
                self.publish_static_site(project, deploy, &source_plan, &source_dir, log)
                    .await?;
                None
            }
            Builder::Image => {
                return Err(failed("plan")(Error::Internal(
                    "a source tree planned as a pulled image".to_owned(),
                )))
            }
            Builder::Dockerfile | Builder::Generated => {
                let image = self
                    .build_image(
                        project,
                        deploy,
                        &source_plan,
                        deploy_plan.build.as_ref().unwrap_or(&build_plan),
                        &plan_json,
                        &source_dir,
                        log,
                    )
                    .await?;
                self.assets
                    .prepare(project, deploy, &source_plan, &image)
                    .await;
                Some(image)
            }
        };
        // Every image of a compose stack is built before any of it starts.
        let stack = match build_plan.stack {
            Some(stack) => {
                let images = self
                    .build_stack_images(project, deploy, &stack, &checkout, log)
                    .await?;
                Some((stack, images))
            }
            None => None,
        };
        Ok((source_plan, image, stack))
    }

    /// The env this release runs with, sealed onto the deploy for rollbacks and repairs: the
    /// project's, or for a preview the project's without production-only keys plus the
    /// preview's own (`Deploys::preview_release_env`).
    async fn snapshot_env(
        &self,
        deploy: &Deploy,
        project: &Project,
        compose_env: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<std::collections::BTreeMap<String, String>, Stop> {
        let mut env_snapshot = match deploy.target() {
            ReleaseTarget::Production => self.env.snapshot(&project.id).await,
            ReleaseTarget::Preview(preview_id) => {
                self.preview_release_env(project, &preview_id).await
            }
        }
        .map_err(failed("release"))?;
        // A compose file's env for its public service; the project's own env wins.
        for (key, value) in compose_env.into_iter().flatten() {
            env_snapshot
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        let sealed = self
            .secrets
            .seal(&serde_json::to_vec(&env_snapshot).unwrap_or_default());
        let id = deploy.id.clone();
        self.store
            .call(move |c| store::deploys::set_env(c, &id, &sealed))
            .await
            .map_err(failed("release"))?;
        Ok(env_snapshot)
    }

    async fn fetch(
        &self,
        deploy: &Deploy,
        project: &Project,
        log: &DeployLog,
        source_dir: &Path,
    ) -> Result<(), Stop> {
        let project_id = project.id.clone();
        let stored = self
            .store
            .call(move |c| store::git::get(c, &project_id))
            .await
            .map_err(failed("fetch"))?
            .ok_or_else(|| {
                failed("fetch")(Error::Invalid(format!(
                    "the project has no git repository; connect one with POST /v1/projects/{}/git",
                    project.id
                )))
            })?;
        let location = RepoLocation::parse(&stored.repo).map_err(failed("fetch"))?;
        // Checked again at every deploy: a permission the operator revoked after the
        // repository was connected fails the deploy here, with the reason.
        self.permit_repo(&project.account_id, project.handle.as_str(), &location)
            .await
            .map_err(failed("fetch"))?;
        let token = match &stored.access_token {
            Some(sealed) => Some(self.secrets.open_string(sealed).map_err(failed("fetch"))?),
            None => None,
        };
        let wanted = deploy
            .git_ref
            .clone()
            .unwrap_or_else(|| stored.branch.clone());
        let git_ref = GitRef::parse(&wanted).map_err(failed("fetch"))?;
        log.line(format!("fetching {location} ({wanted})"));
        let mirror_path = self.config.repos_dir().join(format!("{}.git", project.id));
        let timeout = Duration::from_secs(self.config.deploy.fetch_timeout_secs);
        let egress = crate::source::EgressPolicy::from_config(&self.config.git);
        let export_to = source_dir.to_owned();
        let commit = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let mirror = Mirror::open_or_init(&mirror_path)?;
            mirror.fetch(&location, token.as_deref(), timeout, &egress)?;
            let commit = mirror.resolve(&git_ref)?;
            std::fs::create_dir_all(&export_to).map_err(|err| {
                Error::Internal(format!("creating {}: {err}", export_to.display()))
            })?;
            mirror.export(&commit.sha, &export_to)?;
            Ok(commit)
        })
        .await
        .map_err(|err| failed("fetch")(Error::Internal(err.to_string())))?
        .map_err(failed("fetch"))?;
        log.line(format!(
            "commit {} {}",
            &commit.sha[..12.min(commit.sha.len())],
            commit.message
        ));
        let id = deploy.id.clone();
        self.store
            .call(move |c| store::deploys::set_source(c, &id, &commit.sha, &commit.message))
            .await
            .map_err(failed("fetch"))?;
        Ok(())
    }

    async fn plan_source(
        &self,
        project: &Project,
        log: &DeployLog,
        checkout: &Path,
    ) -> Result<(SourcePlan, BuildPlan), Stop> {
        let tree = checkout.to_owned();
        let images = self.config.build.images.clone();
        let hint = project.runtime;
        let settings = project.build.clone();
        // A compose file's `${VAR}`s read the project's env.
        let env = self
            .env
            .snapshot(&project.id)
            .await
            .map_err(failed("plan"))?;
        let (source_plan, build_plan) = tokio::task::spawn_blocking(move || {
            plan::plan_repository(
                &tree,
                &settings,
                &PlanOptions {
                    runtime_hint: hint,
                    images: &images,
                },
                &env,
            )
        })
        .await
        .map_err(|err| failed("plan")(Error::Internal(err.to_string())))?
        .map_err(failed("plan"))?;
        log.line(format!(
            "plan: runtime {}, builder {}, port {}",
            source_plan.runtime.as_str(),
            builder_name(source_plan.builder),
            source_plan.port
        ));
        log.line(describe_build(&build_plan));
        for warning in &source_plan.warnings {
            log.line(format!("warning: {warning}"));
        }
        Ok((source_plan, build_plan))
    }

    /// Builds the image, or reuses the image of an earlier deploy of the same commit and
    /// build inputs.
    #[allow(clippy::too_many_arguments)]
    async fn build_image(
        &self,
        project: &Project,
        deploy: &Deploy,
        source_plan: &SourcePlan,
        build_plan: &BuildPlan,
        plan_json: &str,
        source_dir: &Path,
        log: &DeployLog,
    ) -> Result<String, Stop> {
        let engine = self.engine().await.map_err(failed("build"))?;
        let project_id = project.id.clone();
        let deploy_id = deploy.id.clone();
        let key = super::planning::build_key(plan_json);
        let reusable = self
            .store
            .call(move |c| {
                let sha = store::deploys::by_id(c, &deploy_id)?
                    .and_then(|d| d.commit_sha)
                    .unwrap_or_default();
                store::deploys::reusable_images(c, &project_id, &sha)
            })
            .await
            .map_err(failed("build"))?
            .into_iter()
            .find(|(_, plan)| {
                key.is_some() && plan.as_deref().and_then(super::planning::build_key) == key
            })
            .map(|(image, _)| image);
        if let Some(image) = reusable {
            if engine
                .image_id(&image)
                .await
                .map_err(|e| failed("build")(e.into()))?
                .is_some()
            {
                log.line(format!(
                    "reusing image {image}: same commit and build inputs as an earlier deploy"
                ));
                self.record_image(deploy, &image).await?;
                return Ok(image);
            }
        }
        let tag = self.release_tag(project, deploy);
        let generated = match source_plan.builder {
            Builder::Generated => source_plan.dockerfile.clone(),
            Builder::Dockerfile | Builder::Static | Builder::Image => None,
        };
        let dockerfile = if generated.is_some() {
            context::GENERATED_DOCKERFILE.to_owned()
        } else {
            build_plan
                .dockerfile
                .clone()
                .unwrap_or_else(|| "Dockerfile".to_owned())
        };
        self.run_build(
            project,
            deploy,
            BuildJob {
                context_dir: source_dir,
                generated,
                dockerfile,
                target: build_plan.target.clone(),
                build_args: build_plan
                    .build_args
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect(),
                tag: tag.clone(),
                labels: Labels::image(&self.installation, &project.id, &deploy.id).to_map(),
            },
            log,
        )
        .await?;
        self.record_image(deploy, &tag).await?;
        Ok(tag)
    }

    /// Runs one image build (the release's, or a compose service's) with the project's
    /// build secrets, the account's registry credentials and the release target's network.
    pub(super) async fn run_build(
        &self,
        project: &Project,
        deploy: &Deploy,
        job: BuildJob<'_>,
        log: &DeployLog,
    ) -> Result<(), Stop> {
        let engine = self.engine().await.map_err(failed("build"))?;
        // Build secrets reach a build only as BuildKit secrets (`RUN --mount=type=secret`),
        // never as build args or files in the context, so they stay out of the image and its
        // history. With the classic builder configured they cannot be passed at all, so the
        // deploy stops here and says why rather than build with an empty secret.
        let secrets: Vec<BuildSecret> = self
            .env
            .build_secrets_for_build(&project.id)
            .await
            .map_err(failed("build"))?
            .into_iter()
            .map(|(name, value)| BuildSecret {
                id: name,
                value: value.into_bytes(),
            })
            .collect();
        if !secrets.is_empty() && self.config.build.builder == BuilderKind::Classic {
            let names: Vec<&str> = secrets.iter().map(|secret| secret.id.as_str()).collect();
            return Err(Stop::Failed {
                step: "build",
                message: format!(
                    "the project has build secrets ({}), which a build receives only through BuildKit, and this server builds with the classic builder ([build] builder = \"classic\"); remove them (DELETE /v1/projects/{}/build-secrets/NAME) to build without",
                    names.join(", "),
                    project.id
                ),
            });
        }
        // Private base images: the builder may log in to any of the account's registries
        // (BuildKit asks through the build session for the ones a FROM names).
        let registry_credentials = self
            .registries
            .all_for(&project.account_id)
            .await
            .map_err(failed("build"))?;
        let root = job.context_dir.to_owned();
        let max_bytes = self.config.deploy.max_context_mb * 1024 * 1024;
        let kept = job.dockerfile.clone();
        let generated = job.generated.clone();
        let built_context = tokio::task::spawn_blocking(move || {
            context::build_context(&root, generated.as_deref(), &kept, max_bytes)
        })
        .await
        .map_err(|err| failed("build")(Error::Internal(err.to_string())))?
        .map_err(failed("build"))?;
        log.line(format!(
            "building {} ({} files, {} KiB context, {} excluded by .dockerignore)",
            job.tag,
            built_context.files,
            built_context.tar.len() / 1024,
            built_context.excluded
        ));
        // The classic builder's RUN steps join the release target's own network: they reach
        // the internet (NAT) and their own project's containers, never another project's,
        // nor whatever else sits on the engine's default bridge. BuildKit's cannot join a
        // network of ours: they run on the default bridge, which reaches the internet and
        // no project's containers (the engine isolates its networks from each other).
        let network = self
            .networks
            .ensure(&engine, &project.id, &deploy.target())
            .await
            .map_err(failed("build"))?;
        let request = BuildRequest {
            context_tar: built_context.tar,
            dockerfile: job.dockerfile,
            tag: job.tag,
            labels: job.labels,
            memory_bytes: Some(i64::from(self.config.deploy.build_memory_mb) * 1024 * 1024),
            cpus: Some(self.config.deploy.build_cpus),
            network: Some(network),
            target: job.target,
            build_args: job.build_args.into_iter().collect(),
            secrets,
            registry_credentials,
            builder: self.config.build.builder,
        };
        let build_log = log.clone();
        engine
            .build(request, &mut move |line| build_log.line(line))
            .await
            .map_err(|err| Stop::Failed {
                step: "build",
                message: err.to_string(),
            })?;
        Ok(())
    }

    pub(super) async fn record_image(&self, deploy: &Deploy, image: &str) -> Result<(), Stop> {
        let id = deploy.id.clone();
        let image = image.to_owned();
        self.store
            .call(move |c| store::deploys::set_image(c, &id, &image))
            .await
            .map_err(failed("build"))
    }

    /// Copies the site's root out of the scratch tree to where the edge serves it from.
    async fn publish_static_site(
        &self,
        project: &Project,
        deploy: &Deploy,
        source_plan: &SourcePlan,
        source_dir: &Path,
        log: &DeployLog,
    ) -> Result<(), Stop> {
        let root = source_dir.join(source_plan.static_root.as_deref().unwrap_or("."));
        let target = self.config.sites_dir().join(&project.id).join(&deploy.id);
        log.line(format!(
            "publishing the static site from {}",
            source_plan.static_root.as_deref().unwrap_or(".")
        ));
        let copied = tokio::task::spawn_blocking(move || copy_tree(&root, &target))
            .await
            .map_err(|err| failed("build")(Error::Internal(err.to_string())))?
            .map_err(|err| failed("build")(Error::Internal(format!("copying the site: {err}"))))?;
        log.line(format!("published {copied} files"));
        let site = self.config.sites_dir().join(&project.id).join(&deploy.id);
        index_static_site(site, log).await;
        Ok(())
    }
}

/// Writes the index the edge serves the site at `site` from (its files' compressed forms,
/// made once here rather than on requests). Without it the edge still serves the site,
/// making what it needs when the site is first asked for, so a failure is logged and the
/// release goes on.
async fn index_static_site(site: PathBuf, log: &DeployLog) {
    match tokio::task::spawn_blocking(move || crate::edge::static_site::index::publish(&site)).await
    {
        Ok(Ok(published)) => log.line(format!(
            "indexed the site: {} files, {} with gzip and brotli forms",
            published.files, published.compressed
        )),
        Ok(Err(err)) => log.line(format!(
            "indexing the site failed ({err}); the edge indexes it when first asked"
        )),
        Err(err) => log.line(format!(
            "indexing the site failed ({err}); the edge indexes it when first asked"
        )),
    }
}

/// Copies regular files and directories; symlinks are skipped so a site can never expose
/// anything outside its tree.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<usize> {
    let mut copied = 0;
    let mut pending: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        std::fs::create_dir_all(to.join(&relative))?;
        for entry in std::fs::read_dir(from.join(&relative))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let child = relative.join(entry.file_name());
            if kind.is_dir() {
                pending.push(child);
            } else if kind.is_file() {
                std::fs::copy(entry.path(), to.join(&child))?;
                copied += 1;
            }
        }
    }
    Ok(copied)
}

impl Deploys {
    /// Takes the image, plan and env snapshot of an earlier deploy for a rollback: nothing is
    /// fetched or built. Returns what the release needs.
    async fn prepare_rollback(
        &self,
        project: &Project,
        deploy: &Deploy,
        target_id: &str,
        log: &DeployLog,
    ) -> Result<
        (
            SourcePlan,
            Option<String>,
            std::collections::BTreeMap<String, String>,
        ),
        Stop,
    > {
        let id = target_id.to_owned();
        let (target, sealed_env) = self
            .store
            .call(move |c| {
                let target = store::deploys::by_id(c, &id)?
                    .ok_or_else(|| Error::Invalid(format!("deploy `{id}` no longer exists")))?;
                let env = store::deploys::env_of(c, &id)?;
                Ok((target, env))
            })
            .await
            .map_err(failed("build"))?;
        match &target.image_digest {
            Some(digest) => log.line(format!(
                "rolling back to {} (image digest {digest}): no pull unless it was pruned",
                target.id
            )),
            None => log.line(format!(
                "rolling back to {} (commit {}): no rebuild",
                target.id,
                target
                    .commit_sha
                    .as_deref()
                    .map(|s| &s[..12.min(s.len())])
                    .unwrap_or("-")
            )),
        }
        let plan_value = target.plan.clone().ok_or_else(|| {
            failed("build")(Error::Invalid(format!(
                "deploy `{}` has no plan to roll back to",
                target.id
            )))
        })?;
        let source_plan: SourcePlan =
            serde_json::from_value(plan_value.clone()).map_err(|err| {
                failed("build")(Error::Internal(format!(
                    "reading the plan of {}: {err}",
                    target.id
                )))
            })?;
        let env_snapshot: std::collections::BTreeMap<String, String> = match &sealed_env {
            Some(sealed) => {
                serde_json::from_slice(&self.secrets.open(sealed).map_err(failed("build"))?)
                    .map_err(|err| failed("build")(Error::Internal(err.to_string())))?
            }
            None => std::collections::BTreeMap::new(),
        };
        self.restore_release_files(project, deploy, &target, log)
            .await?;
        let id = deploy.id.clone();
        let plan_text = plan_value.to_string();
        let image = target.image.clone();
        let sha = target.commit_sha.clone().unwrap_or_default();
        let message = target.commit_message.clone().unwrap_or_default();
        let digest = target.image_digest.clone();
        self.store
            .write(move |tx| {
                // An image deploy has no commit; its digest is what it re-releases.
                if !sha.is_empty() {
                    store::deploys::set_source(tx, &id, &sha, &message)?;
                }
                if let Some(digest) = &digest {
                    store::deploys::set_image_digest(tx, &id, digest)?;
                }
                store::deploys::set_plan(tx, &id, &plan_text)?;
                if let Some(image) = &image {
                    store::deploys::set_image(tx, &id, image)?;
                }
                if let Some(sealed) = &sealed_env {
                    store::deploys::set_env(tx, &id, sealed)?;
                }
                Ok(())
            })
            .await
            .map_err(failed("build"))?;
        Ok((source_plan, target.image, env_snapshot))
    }

    /// What a rollback's release needs besides its image: the image must still exist, and
    /// the earlier release's asset copy (a container app) or site (a static one) is copied
    /// to the new deploy's place.
    async fn restore_release_files(
        &self,
        project: &Project,
        deploy: &Deploy,
        target: &Deploy,
        log: &DeployLog,
    ) -> Result<(), Stop> {
        if let Some(image) = &target.image {
            let engine = self.engine().await.map_err(failed("build"))?;
            if engine
                .image_id(image)
                .await
                .map_err(|e| failed("build")(e.into()))?
                .is_none()
            {
                if target.image_digest.is_some() {
                    self.repull_for_rollback(project, target, image, log)
                        .await?;
                } else {
                    return Err(Stop::Failed {
                        step: "build",
                        message: format!(
                            "the image of {} ({image}) was pruned; deploy its commit instead",
                            target.id
                        ),
                    });
                }
            }
            // The edge serves the release's assets from its own copy; without one the app
            // answers them, so a failed copy costs speed, never correctness.
            let from = self.assets.release_dir(&project.id, &target.id);
            let to = self.assets.release_dir(&project.id, &deploy.id);
            if tokio::fs::try_exists(&from).await.unwrap_or(false) {
                match tokio::task::spawn_blocking(move || copy_tree(&from, &to)).await {
                    Ok(Ok(copied)) => log.line(format!("restored {copied} asset files")),
                    Ok(Err(err)) => {
                        tracing::warn!(deploy = %deploy.id, error = %err, "restoring assets")
                    }
                    Err(err) => {
                        tracing::warn!(deploy = %deploy.id, error = %err, "restoring assets")
                    }
                }
            }
        } else {
            let from = self.config.sites_dir().join(&project.id).join(&target.id);
            let to = self.config.sites_dir().join(&project.id).join(&deploy.id);
            let to_site = to.clone();
            let copied = tokio::task::spawn_blocking(move || copy_tree(&from, &to))
                .await
                .map_err(|err| failed("build")(Error::Internal(err.to_string())))?
                .map_err(|err| {
                    failed("build")(Error::Invalid(format!(
                        "the site of {} is gone: {err}",
                        target.id
                    )))
                })?;
            log.line(format!("restored {copied} site files"));
            index_static_site(to_site, log).await;
        }
        Ok(())
    }

    /// Runs the release command (migrations and the like) once, in a one-off container of the
    /// new image with the new env, before any instance starts. A non-zero exit fails the
    /// deploy and nothing is switched.
    #[allow(clippy::too_many_arguments)]
    async fn run_release_command(
        &self,
        project: &Project,
        deploy: &Deploy,
        source_plan: &SourcePlan,
        image: &str,
        env_snapshot: &std::collections::BTreeMap<String, String>,
        command: &str,
        log: &DeployLog,
    ) -> Result<(), Stop> {
        let engine = self.engine().await.map_err(failed("release"))?;
        let size = self.desired_size(project, &deploy.target());
        let labels = Labels::release(&self.installation, &project.id, &deploy.id)
            .in_preview(deploy.preview_id.as_deref())
            .to_map();
        let spec = super::instances::release_container(
            &self.networks,
            &self.databases,
            &self.services,
            &self.config.scale,
            &engine,
            super::instances::ReleaseContainer {
                project_id: &project.id,
                target: deploy.target(),
                image,
                port: source_plan.port,
                env: env_snapshot,
                size: size.as_deref(),
                name: format!(
                    "cantila-{}-{}-{}-release",
                    project.handle,
                    project.name,
                    deploy.id.to_ascii_lowercase()
                ),
                labels,
                command: Some(vec![
                    "/bin/sh".to_owned(),
                    "-c".to_owned(),
                    command.to_owned(),
                ]),
                restart: false,
            },
        )
        .await
        .map_err(failed("release"))?;
        log.line(format!("running the release command: {command}"));
        let started = engine
            .start(&spec)
            .await
            .map_err(|e| failed("release")(e.into()))?;
        let code = engine
            .wait(&started.id)
            .await
            .map_err(|e| failed("release")(e.into()));
        // The command's output is shown, or why it cannot be; the exit code decides either way.
        match engine.tail_logs(&started.id, 200).await {
            Ok(output) => {
                for line in &output {
                    log.line(format!("release: {line}"));
                }
            }
            Err(error) => log.line(format!(
                "the release command's output is unavailable: {error}"
            )),
        }
        let _ = engine
            .stop_and_remove(&started.id, Duration::from_secs(1))
            .await;
        match code? {
            0 => {
                log.line("the release command succeeded");
                Ok(())
            }
            code => Err(Stop::Failed {
                step: "release",
                message: format!(
                    "the release command exited with code {code}; nothing was switched"
                ),
            }),
        }
    }

    /// Starts the project's instances of the new release beside the old ones, each passing
    /// its health check. Nothing is switched here.
    #[allow(clippy::too_many_arguments)]
    async fn release_containers(
        &self,
        project: &Project,
        deploy: &Deploy,
        source_plan: &SourcePlan,
        image: &str,
        env_snapshot: std::collections::BTreeMap<String, String>,
        log: &DeployLog,
        started: &mut Vec<String>,
    ) -> Result<(), Stop> {
        let release = super::instances::Release {
            project: project.clone(),
            deploy_id: deploy.id.clone(),
            image: image.to_owned(),
            plan: source_plan.clone(),
            env: env_snapshot,
            preview_id: deploy.preview_id.clone(),
        };
        let engine = self.engine().await.map_err(failed("release"))?;
        let say = |line: String| log.line(line);
        let target = deploy.target();
        let size = self.desired_size(project, &target);
        let mut total = 0;
        for process in super::instances::process_types(source_plan) {
            let count = super::instances::desired_instances(project, &target, &process);
            total += count;
            for _ in 0..count {
                let id = self
                    .start_healthy(&engine, &release, &process, size.as_deref(), &say)
                    .await
                    .map_err(|message| Stop::Failed {
                        step: "release",
                        message,
                    })?;
                started.push(id);
            }
        }
        if total == 0 {
            log.line(
                "the project is scaled to 0 instances: the release is recorded, nothing is started",
            );
        }
        Ok(())
    }

    /// Makes this deploy its target's release (the project's, or its preview's) without
    /// dropping a request: the store records it (older releases of the same target
    /// superseded) in one transaction, the edge's route table is swapped to the new
    /// instances, and only then are the old instances of that target drained and stopped.
    async fn switch_to(
        &self,
        project: &Project,
        deploy: &Deploy,
        log: &DeployLog,
    ) -> Result<(), Error> {
        let project_id = project.id.clone();
        let project_status = project.status;
        let new_id = deploy.id.clone();
        // The edge moves first, then the store records it: whoever reads the deploy as
        // `running` finds the edge already serving it.
        let lookup = deploy.id.clone();
        let recorded = self
            .store
            .call(move |connection| store::deploys::by_id(connection, &lookup))
            .await?
            .ok_or_else(|| Error::Internal(format!("deploy {} vanished", deploy.id)))?;
        self.routing.set_switching(&recorded, true);
        if let Err(err) = self.routing.refresh().await {
            self.routing.set_switching(&recorded, false);
            return Err(err);
        }
        let target = deploy.target();
        // A production release makes the project's `cantila.toml` jobs match its file (a
        // rollback's, the file of the release it re-releases); previews run no jobs.
        let file_jobs = (target == ReleaseTarget::Production)
            .then(|| released_jobs(recorded.plan.as_ref(), &deploy.id));
        let account_id = project.account_id.clone();
        let released = self
            .store
            .write(move |tx| {
                let now = clock::now();
                let jobs = match &file_jobs {
                    Some(declared) => {
                        let after = time::OffsetDateTime::now_utc();
                        Some(store::jobs::sync_file(
                            tx,
                            &account_id,
                            &project_id,
                            declared,
                            &now,
                            |spec| spec.scheduled_after(after).map(clock::format),
                        )?)
                    }
                    None => None,
                };
                let previous: Vec<Deploy> = store::deploys::of_target_with_status(
                    tx,
                    &project_id,
                    target.preview_id(),
                    &[DeployStatus::Running],
                )?
                .into_iter()
                .filter(|d| d.id != new_id)
                .collect();
                for old in &previous {
                    store::deploys::set_status(tx, &old.id, DeployStatus::Superseded, &now)?;
                    let seq = store::deploys::last_log_seq(tx, &old.id)? + 1;
                    store::deploys::append_logs(
                        tx,
                        &old.id,
                        &[super::LogLine {
                            seq,
                            at: now.clone(),
                            kind: "status".to_owned(),
                            text: DeployStatus::Superseded.as_str().to_owned(),
                        }],
                    )?;
                }
                store::deploys::set_status(tx, &new_id, DeployStatus::Running, &now)?;
                // A preview never changes the project's status, and a project stopped by
                // `scale` stays stopped: the release waits for a scale-up.
                if target == ReleaseTarget::Production && project_status != ProjectStatus::Stopped {
                    store::projects::set_status(tx, &project_id, ProjectStatus::Running, &now)?;
                }
                Ok((previous, jobs))
            })
            .await;
        self.routing.set_switching(&recorded, false);
        // On a failed commit this puts the routes back on the release the store still names.
        self.routing.refresh().await?;
        let (previous, jobs) = released?;
        log.line("traffic switched to the new release");
        if let Some(jobs) = jobs {
            log_file_jobs(log, &jobs);
            if jobs.changed() {
                self.jobs_changed.notify_one();
            }
        }
        log.status(DeployStatus::Running);
        if !previous.is_empty() {
            self.stop_previous(project, deploy, log).await;
        }
        Ok(())
    }

    /// After a switch: the target's instances (and release containers) of earlier
    /// releases leave the route table, drain for `deploy.drain_secs`, then stop; one-off
    /// runs of those releases run on.
    async fn stop_previous(&self, project: &Project, deploy: &Deploy, log: &DeployLog) {
        let Ok(engine) = self.engine().await else {
            return;
        };
        let target = deploy.target();
        let leaving: Vec<_> = engine
            .containers_matching(
                // A project's services outlive its releases: only their own changes
                // replace them.
                &Filter::new()
                    .project(&project.id)
                    .target(target.preview_id())
                    .without(Key::Service),
            )
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|container| labels::get(&container.labels, Key::Deploy) != Some(&deploy.id))
            // A one-off run of an earlier release finishes on its own (or at its timeout):
            // a deploy never kills a migration or a console someone is in.
            .filter(|container| {
                labels::get(&container.labels, Key::Kind) != Some(labels::Kind::Run.as_str())
            })
            .collect();
        // Nothing to drain (a first release, or one rebuilt after the engine lost the old
        // one's containers): the deploy ends now rather than after an empty wait.
        if leaving.is_empty() {
            return;
        }
        let ids: Vec<String> = leaving.iter().map(|c| c.id.clone()).collect();
        // Marked draining so no repair pass takes them for orphans while requests already on
        // their way finish.
        self.routing.set_draining(&ids, true);
        tokio::time::sleep(Duration::from_secs(self.config.deploy.drain_secs)).await;
        let grace = Duration::from_secs(self.config.deploy.stop_grace_secs);
        for container in &leaving {
            log.line(format!("stopping the previous instance {}", container.name));
            if let Err(err) = engine.stop_and_remove(&container.id, grace).await {
                log.line(format!(
                    "warning: could not remove old instance {}: {err}",
                    container.name
                ));
            }
        }
        self.routing.set_draining(&ids, false);
    }

    /// Removes every container labelled with this deploy.
    pub(crate) async fn remove_deploy_containers(&self, deploy_id: &str) {
        let Ok(engine) = self.engine().await else {
            return;
        };
        let containers = engine
            .containers_matching(&Filter::new().deploy(deploy_id))
            .await
            .unwrap_or_default();
        for container in containers {
            if let Err(err) = engine
                .stop_and_remove(&container.id, Duration::from_secs(2))
                .await
            {
                tracing::warn!(container = %container.name, error = %err, "removing a container of a stopped deploy");
            }
        }
    }

    /// Removes every container of a project, then its networks (on project deletion).
    pub(crate) async fn remove_project_containers(&self, project_id: &str) {
        let Ok(engine) = self.engine().await else {
            return;
        };
        let grace = Duration::from_secs(self.config.deploy.stop_grace_secs);
        let containers = engine
            .containers_matching(&Filter::new().project(project_id))
            .await
            .unwrap_or_default();
        for container in containers {
            if let Err(err) = engine.stop_and_remove(&container.id, grace).await {
                tracing::warn!(container = %container.name, error = %err, "removing a deleted project's container");
            }
        }
        self.networks.remove_of_project(&engine, project_id).await;
    }

    async fn set_project_status(
        &self,
        project: &Project,
        status: ProjectStatus,
        unless_settled: bool,
    ) {
        let id = project.id.clone();
        let result = self
            .store
            .call(move |connection| {
                if unless_settled {
                    if let Some(current) = store::projects::by_id_unscoped(connection, &id)? {
                        if matches!(
                            current.status,
                            ProjectStatus::Running | ProjectStatus::Stopped
                        ) {
                            return Ok(());
                        }
                    }
                }
                store::projects::set_status(connection, &id, status, &clock::now())
            })
            .await;
        if let Err(err) = result {
            tracing::error!(project = %project.id, error = %err, "updating the project status");
        }
    }

    /// After a failed or canceled deploy: `running` if an earlier release still serves,
    /// else `failed`; a project stopped by `scale` stays stopped.
    pub(crate) async fn restore_project_status(&self, project_id: &str) {
        let id = project_id.to_owned();
        let result = self
            .store
            .call(move |connection| {
                let stopped = store::projects::by_id_unscoped(connection, &id)?
                    .is_some_and(|project| project.status == ProjectStatus::Stopped);
                if stopped {
                    return Ok(());
                }
                let serving = !store::deploys::of_project_with_status(
                    connection,
                    &id,
                    &[DeployStatus::Running],
                )?
                .is_empty();
                let status = if serving {
                    ProjectStatus::Running
                } else {
                    ProjectStatus::Failed
                };
                store::projects::set_status(connection, &id, status, &clock::now())
            })
            .await;
        if let Err(err) = result {
            tracing::error!(project = %project_id, error = %err, "restoring the project status");
        }
    }
}

/// The deploy log's line about the build settings: each one's value (build args by name
/// only) and where it came from.
fn describe_build(build: &BuildPlan) -> String {
    let source = crate::model::build::SettingSource::as_str;
    let mut parts = vec![format!(
        "root directory {} ({})",
        build.root_dir,
        source(build.sources.root_dir)
    )];
    if let Some(dockerfile) = &build.dockerfile {
        parts.push(format!(
            "Dockerfile {dockerfile} ({})",
            source(build.sources.dockerfile)
        ));
    }
    if let Some(target) = &build.target {
        parts.push(format!(
            "target {target} ({})",
            source(build.sources.target)
        ));
    }
    if !build.build_args.is_empty() {
        let names: Vec<&str> = build.build_args.keys().map(String::as_str).collect();
        parts.push(format!(
            "build args {} ({})",
            names.join(", "),
            source(build.sources.build_args)
        ));
    }
    if let Some(file) = &build.config_file {
        parts.push(format!("settings file {file}"));
    }
    format!("build settings: {}", parts.join(", "))
}

fn builder_name(builder: Builder) -> &'static str {
    match builder {
        Builder::Dockerfile => "dockerfile",
        Builder::Generated => "generated",
        Builder::Static => "static",
        Builder::Image => "image",
    }
}

/// The `[[jobs]]` a release's stored plan declares (`DeployPlan::jobs`), checked again; a
/// plan without the key (an image, or a release planned before jobs existed) declares none.
fn released_jobs(
    plan: Option<&serde_json::Value>,
    deploy_id: &str,
) -> Vec<crate::model::job::JobSpec> {
    let declared: Vec<crate::model::job::JobFields> = plan
        .and_then(|plan| plan.get("jobs"))
        .and_then(|jobs| serde_json::from_value(jobs.clone()).ok())
        .unwrap_or_default();
    declared
        .into_iter()
        .enumerate()
        .filter_map(|(index, fields)| {
            crate::model::job::JobSpec::check(fields, &format!("jobs[{}].", index + 1))
                .map_err(|err| {
                    // Checked when planned; only a time zone gone from the system's
                    // database since then can fail here.
                    tracing::warn!(deploy = %deploy_id, error = %err, "a released job no longer checks");
                })
                .ok()
        })
        .collect()
}

/// Says in the deploy's log what the release changed of the project's jobs.
fn log_file_jobs(log: &DeployLog, jobs: &store::jobs::FileSync) {
    for (what, names) in [
        ("created", &jobs.created),
        ("updated", &jobs.updated),
        ("removed", &jobs.removed),
    ] {
        if !names.is_empty() {
            log.line(format!("cantila.toml jobs {what}: {}", names.join(", ")));
        }
    }
    if !jobs.taken.is_empty() {
        log.line(format!(
            "cantila.toml jobs not applied (a job made through the API has the name): {}",
            jobs.taken.join(", ")
        ));
    }
}

//! Starting a run: the request checked against the config, the release picked (the
//! serving one or a named deploy), the container made like the release's own (one
//! `deploy::instances::release_container` for both) and started, the waiter spawned.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    clock,
    deploy::instances::{release_container, release_from, Release, ReleaseContainer},
    error::{Error, Result},
    ids,
    labels::Labels,
    model::deploy::{Deploy, DeployStatus, ReleaseTarget},
    names::EnvKey,
    projects::Project,
    runtime::{ContainerSpec, Runtime},
    store::{self, runs::Ending},
};

use super::{Run, RunRequest, RunStatus, Runs, MAX_TIMEOUT_SECS};

impl Runs {
    /// Starts a run of `request.command` in `project_id` (of `account_id`) for `actor` (as
    /// the audit log names it). A plain run is `running` when this returns (or `failed`
    /// with its error when its container could not start); an interactive one is
    /// `pending` until a terminal attaches. The audit entry names the command, never the
    /// env. Refused: an unknown size or a timeout out of range (422), a project with no
    /// serving release or at its limit of concurrent runs (409).
    pub async fn start(
        &self,
        account_id: &str,
        actor: &str,
        project_id: &str,
        request: RunRequest,
    ) -> Result<Run> {
        self.check(&request)?;
        let project = {
            let (account_id, project_id) = (account_id.to_owned(), project_id.to_owned());
            self.0
                .store
                .call(move |c| {
                    store::projects::by_id(c, &account_id, &project_id)?
                        .ok_or_else(|| Error::NotFound(format!("project `{project_id}` not found")))
                })
                .await?
        };
        let engine = self.engine().await?;
        let (deploy, release) = self
            .release_for(&project, request.deploy_id.as_deref())
            .await?;
        if engine.image_id(&release.image).await?.is_none() {
            return Err(Error::Conflict(format!(
                "the image of deploy `{}` is no longer on this server (old images are pruned); run the serving release or deploy again",
                deploy.id
            )));
        }
        let size = request
            .size
            .clone()
            .or_else(|| project.size.clone())
            .unwrap_or_else(|| self.0.config.scale.default_size.clone());
        let mut run = Run {
            id: ids::new_id("run"),
            account_id: project.account_id.clone(),
            project_id: project.id.clone(),
            deploy_id: deploy.id.clone(),
            command: request.command.clone(),
            status: RunStatus::Pending,
            exit_code: None,
            error: None,
            trigger: request.trigger.clone(),
            started_by: actor.to_owned(),
            size,
            timeout_secs: request.timeout.as_secs(),
            interactive: request.interactive,
            container_id: None,
            created_at: clock::now(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
        };
        let spec = self
            .spec_for(&engine, &project, &release, &run, &request.env)
            .await?;
        let audit = store::Audit::by_daemon(
            account_id,
            actor,
            "run.start",
            format!("{}: {}", run.id, run.command.display()),
        );
        let max = self.0.config.runs.max_concurrent_per_project;
        let stored = run.clone();
        self.0
            .store
            .write_audited(audit, move |tx| {
                let active = store::runs::active_count(tx, &stored.project_id)?;
                if active >= max {
                    return Err(Error::Conflict(format!(
                        "the project already has {active} runs pending or running, the limit (runs.max_concurrent_per_project = {max}); wait for one to end or cancel one"
                    )));
                }
                store::runs::insert(tx, &stored)
            })
            .await?;
        let active = self.0.hub.register(&run.id);
        tracing::info!(run = %run.id, project = %run.project_id, deploy = %run.deploy_id, interactive = run.interactive, "starting a run");
        let container_id = match engine.create(&spec).await {
            Ok(id) => id,
            Err(err) => return self.fail_to_start(run, None, err.to_string()).await,
        };
        run.container_id = Some(container_id.clone());
        let (id, container) = (run.id.clone(), container_id.clone());
        // From here on a failure still ends the run, so no registered run is left waiting.
        if let Err(err) = self
            .0
            .store
            .call(move |c| store::runs::set_container(c, &id, &container))
            .await
        {
            return self
                .fail_to_start(run, Some(container_id), err.to_string())
                .await;
        }
        if !run.interactive {
            if let Err(err) = engine.start_again(&container_id).await {
                return self
                    .fail_to_start(run, Some(container_id), err.to_string())
                    .await;
            }
            let at = clock::now();
            let id = run.id.clone();
            let marked = at.clone();
            if let Err(err) = self
                .0
                .store
                .call(move |c| store::runs::set_running(c, &id, &marked))
                .await
            {
                return self
                    .fail_to_start(run, Some(container_id), err.to_string())
                    .await;
            }
            run.status = RunStatus::Running;
            run.started_at = Some(at);
        }
        tokio::spawn(self.clone().wait_for_end(run.clone(), container_id, active));
        Ok(run)
    }

    /// Checks what the request's boundary could not: the size tier against the config,
    /// the timeout's range and the env's keys (each error names its field).
    fn check(&self, request: &RunRequest) -> Result<()> {
        let timeout = request.timeout.as_secs();
        if request.timeout < Duration::from_secs(1) || timeout > MAX_TIMEOUT_SECS {
            return Err(Error::Invalid(format!(
                "`timeoutSecs` must be between 1 and {MAX_TIMEOUT_SECS}, got {timeout}"
            )));
        }
        if let Some(size) = &request.size {
            let sizes = &self.0.config.scale.sizes;
            if !sizes.contains_key(size) {
                let known: Vec<&str> = sizes.keys().map(String::as_str).collect();
                return Err(Error::Invalid(format!(
                    "`size` `{size}` is unknown; use one of: {}",
                    known.join(", ")
                )));
            }
        }
        for (key, value) in &request.env {
            EnvKey::parse(key).map_err(|err| Error::Invalid(format!("`env`: {err}")))?;
            if value.contains('\0') {
                return Err(Error::Invalid(format!(
                    "`env`: the value of `{key}` contains a NUL character, which no process can receive"
                )));
            }
        }
        Ok(())
    }

    /// The deploy a run uses and its release: the project's serving production deploy,
    /// or `deploy_id`, a production deploy of the project that released an image (running
    /// or superseded since).
    async fn release_for(
        &self,
        project: &Project,
        deploy_id: Option<&str>,
    ) -> Result<(Deploy, Release)> {
        let (project_id, wanted) = (project.id.clone(), deploy_id.map(str::to_owned));
        let (deploy, sealed_env) = self
            .0
            .store
            .call(move |c| {
                let deploy = match &wanted {
                    Some(wanted) => store::deploys::by_id(c, wanted)?
                        .filter(|d| d.project_id == project_id && d.preview_id.is_none())
                        .filter(|d| {
                            matches!(d.status, DeployStatus::Running | DeployStatus::Superseded)
                        })
                        .ok_or_else(|| {
                            Error::Invalid(format!(
                                "`deployId` `{wanted}` names no released deploy of project `{project_id}`; use a deploy that was running (see GET /v1/projects/{project_id}/deploys)"
                            ))
                        })?,
                    None => store::deploys::of_project_with_status(
                        c,
                        &project_id,
                        &[DeployStatus::Running],
                    )?
                    .pop()
                    .ok_or_else(|| {
                        Error::Conflict(format!(
                            "project `{project_id}` has no serving release to run in; deploy it first"
                        ))
                    })?,
                };
                let sealed = store::deploys::env_of(c, &deploy.id)?;
                Ok((deploy, sealed))
            })
            .await?;
        let release =
            release_from(&self.0.secrets, project, &deploy, sealed_env)?.ok_or_else(|| {
                let message = format!(
                    "deploy `{}` published a static site, which has no image to run a command in",
                    deploy.id
                );
                match deploy_id {
                    Some(_) => Error::Invalid(format!("`deployId`: {message}")),
                    None => Error::Conflict(message),
                }
            })?;
        Ok((deploy, release))
    }

    /// The container of `run`: the release's image, env snapshot plus `extra_env`, `PORT`,
    /// size tier, network and (production) volumes and database, as the release's own
    /// containers get them; the command instead of the image's CMD; labelled as the
    /// run's; never restarted. An interactive run's container is the same with a TTY and
    /// open stdin.
    pub async fn spec_for(
        &self,
        engine: &Runtime,
        project: &Project,
        release: &Release,
        run: &Run,
        extra_env: &BTreeMap<String, String>,
    ) -> Result<ContainerSpec> {
        let mut env = release.env.clone();
        env.extend(extra_env.clone());
        let labels = Labels::run(
            &self.0.installation,
            &project.id,
            &release.deploy_id,
            &run.id,
        )
        .to_map();
        let mut spec = release_container(
            &self.0.networks,
            &self.0.databases,
            &self.0.services,
            &self.0.config.scale,
            engine,
            ReleaseContainer {
                project_id: &project.id,
                // Runs use production's deploys only, so they get its volumes and database.
                target: ReleaseTarget::Production,
                image: &release.image,
                port: release.plan.port,
                env: &env,
                size: Some(&run.size),
                name: format!("cantila-{}-{}-{}", project.handle, project.name, run.id),
                labels,
                command: Some(run.command.args().to_vec()),
                restart: false,
            },
        )
        .await?;
        spec.tty = run.interactive;
        spec.stdin = run.interactive;
        Ok(spec)
    }

    /// A run whose container could not be made or started: recorded `failed` with why,
    /// its container (if any) removed, and returned as it now stands.
    async fn fail_to_start(
        &self,
        run: Run,
        container_id: Option<String>,
        error: String,
    ) -> Result<Run> {
        tracing::warn!(run = %run.id, %error, "a run could not start");
        if let Some(id) = &container_id {
            let _ = self
                .0
                .runtime
                .stop_and_remove(id, Duration::from_secs(1))
                .await;
        }
        self.record_end(
            &run,
            Ending {
                status: RunStatus::Failed,
                exit_code: None,
                error: Some(format!("the run could not start: {error}")),
                at: clock::now(),
            },
        )
        .await;
        self.0.hub.release(&run.id);
        self.get(&run.account_id, &run.id).await
    }
}

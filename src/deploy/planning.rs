//! The deploy plan: what a deploy of a source tree would build, how it would run, and
//! where it would be served. The same function answers `POST /v1/deploy/plan` and drives
//! the real deploy, so the plan shown can never disagree with what happens.

use serde::Serialize;

use std::path::PathBuf;

use crate::{
    accounts::Actor,
    error::{Error, Result},
    model::{build::BuildSettings, image::ImageReference, job::JobSource},
    plan::{BuildPlan, HealthCheckSource, ImagePlan, SourcePlan},
    projects::Project,
    source::{GitRef, Mirror, RepoLocation},
    store,
};

use super::Deploys;

/// A source plan plus how the project would run it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployPlan {
    /// Runtime, builder, Dockerfile, port, start command, processes, health check,
    /// static root and warnings, as detected from the source; the health check with the
    /// project's settings and the defaults applied (`healthCheck.source` says which).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub source: SourcePlan,
    pub instances: u32,
    pub size: InstanceSize,
    /// Env var names the instances get (values are never part of a plan).
    pub env_keys: Vec<String>,
    pub hostnames: Vec<String>,
    /// The database wired to the project, if any.
    #[schema(value_type = Option<Object>)]
    pub database: Option<serde_json::Value>,
    /// The build settings that apply (root directory, Dockerfile, target, build args,
    /// watch paths, build secrets' names) and where each came from; null for a project
    /// whose releases are pulled images (nothing is built).
    pub build: Option<BuildPlan>,
    /// The scheduled jobs the repository's `cantila.toml` declares (`[[jobs]]`), defaults
    /// filled in: a production release makes the project's `cantila.toml` jobs match this
    /// list (jobs made through the API are left alone). Empty without a file.
    #[serde(default)]
    pub jobs: Vec<crate::model::job::JobFields>,
    /// For a project deployed from a compose file: its services in the order they start
    /// (the public one, released as the web, last), what each runs or is built from, its
    /// volumes, and the keys ignored; null otherwise. A file with a refused key is
    /// answered 422 naming each key and why, before anything runs.
    pub compose: Option<crate::stack::ComposePlan>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSize {
    /// The tier's name from `[scale.sizes]`.
    pub name: String,
    pub memory_mb: u32,
    pub cpus: f64,
}

impl Deploys {
    pub async fn deploy_plan(
        &self,
        project: &Project,
        source: &SourcePlan,
        build: Option<&BuildPlan>,
    ) -> Result<DeployPlan> {
        let project_id = project.id.clone();
        let (vars, database, secrets) = self
            .store
            .call(move |c| {
                Ok((
                    store::env::all(c, &project_id)?,
                    store::volumes::database_of(c, &project_id)?,
                    store::build_secrets::names(c, &project_id)?,
                ))
            })
            .await?;
        let build = build.map(|build| BuildPlan {
            secrets: secrets.into_iter().map(|entry| entry.name).collect(),
            ..build.clone()
        });
        let mut env_keys: Vec<String> = vars.into_iter().map(|var| var.key).collect();
        env_keys.push("PORT".to_owned());
        // A compose file's public service brings its own env (the project's wins).
        if let Some(stack) = build.as_ref().and_then(|build| build.stack.as_ref()) {
            env_keys.extend(stack.public.env.keys().cloned());
        }
        // The wired database's env is added when each container starts (`volumes::attach`).
        if let Some(database) = &database {
            env_keys.extend(
                crate::database::env_keys(database.engine)
                    .iter()
                    .map(|k| (*k).to_owned()),
            );
            env_keys.dedup();
        }
        env_keys.sort();
        env_keys.dedup();
        let tier = self.config.scale.tier(project.size.as_deref());
        let (jobs, job_warnings) = self.file_jobs(project, build.as_ref()).await?;
        let mut source =
            self.with_health_check(source, project.health_check.as_ref(), build.as_ref());
        source.warnings.extend(job_warnings);
        Ok(DeployPlan {
        source,
        instances: project.instances,
        size: InstanceSize {
            name: project
                .size
                .clone()
                .unwrap_or_else(|| self.config.scale.default_size.clone()),
            memory_mb: tier.memory_mb,
            cpus: tier.cpus,
        },
        env_keys,
        hostnames: vec![project.default_hostname(&self.config.base_domain)],
        database: database.map(|database| {
            serde_json::json!({ "engine": database.engine.as_str(), "volume": database.volume })
        }),
        compose: build
            .as_ref()
            .and_then(|build| build.stack.as_ref())
            .map(|stack| stack.plan(&self.config.scale)),
        build,
        jobs,
    })
    }

    /// The file's `[[jobs]]` as the plan shows them, with a warning for each name a job
    /// made through the API already holds (that job stays; the file's is not applied). A
    /// size that is not a configured tier fails the plan, naming the job's table.
    async fn file_jobs(
        &self,
        project: &Project,
        build: Option<&BuildPlan>,
    ) -> Result<(Vec<crate::model::job::JobFields>, Vec<String>)> {
        let Some(build) = build else {
            return Ok((Vec::new(), Vec::new()));
        };
        let shown = build
            .config_file
            .as_deref()
            .unwrap_or(crate::plan::CONFIG_FILE);
        for (index, job) in build.file_jobs.iter().enumerate() {
            if let Some(size) = job.size.as_deref() {
                if !self.config.scale.sizes.contains_key(size) {
                    let known: Vec<&str> =
                        self.config.scale.sizes.keys().map(String::as_str).collect();
                    return Err(Error::Invalid(format!(
                        "{shown}: `jobs[{}].size` `{size}` is not a size tier; use one of {}",
                        index + 1,
                        known.join(", ")
                    )));
                }
            }
        }
        let project_id = project.id.clone();
        let existing = self
            .store
            .call(move |c| store::jobs::of_project(c, &project_id))
            .await?;
        let warnings = build
            .file_jobs
            .iter()
            .filter(|job| {
                existing
                    .iter()
                    .any(|other| other.spec.name == job.name && other.source == JobSource::Api)
            })
            .map(|job| {
                format!(
                    "job `{}` in {shown} is not applied: a job of that name was made through the API (delete it to let the file's apply)",
                    job.name
                )
            })
            .collect();
        Ok((
            build.file_jobs.iter().map(|job| job.to_fields()).collect(),
            warnings,
        ))
    }
}

impl Deploys {
    /// The source plan with the health check its release runs: the project's settings
    /// (the whole object), else the settings file's `[health]`, else the detected check,
    /// with the defaults filled in. A file's table the project's settings override is
    /// named in the warnings.
    fn with_health_check(
        &self,
        source: &SourcePlan,
        api: Option<&crate::model::health::HealthCheckSettings>,
        build: Option<&BuildPlan>,
    ) -> SourcePlan {
        let file = build.and_then(|build| build.file_health.as_ref());
        let mut warnings = source.warnings.clone();
        let (settings, from) = match (api, file) {
            (Some(api), file) => {
                if file.is_some() {
                    let shown = build
                        .and_then(|build| build.config_file.as_deref())
                        .unwrap_or(crate::plan::CONFIG_FILE);
                    warnings.push(format!(
                        "`[health]` in {shown} was ignored: the project's healthCheck is set"
                    ));
                }
                (Some(api), HealthCheckSource::Api)
            }
            (None, Some(file)) => (Some(file), HealthCheckSource::File),
            (None, None) => (None, HealthCheckSource::Detection),
        };
        let mut health_check = source.health_check.resolve(
            settings,
            source.port,
            self.config.deploy.health_timeout_secs,
        );
        if settings.is_some() {
            health_check.source = Some(from);
        }
        SourcePlan {
            health_check,
            warnings,
            ..source.clone()
        }
    }
}

/// The inputs of a build, out of a stored plan's JSON (`DeployPlan`): what a deploy of the
/// same commit must share with an earlier one to reuse its image. The runtime and builder,
/// the Dockerfile built (the generated one's whole text), the root directory, the
/// Dockerfile's path, the target, the build args and the build secrets' names decide the
/// image; the health check, instances, size, env names, hostnames, database, watch paths
/// and warnings do not, so changing them alone reuses the image. `None` for a plan that is
/// not JSON, which then matches nothing.
pub fn build_key(plan_json: &str) -> Option<serde_json::Value> {
    let plan: serde_json::Value = serde_json::from_str(plan_json).ok()?;
    let build = &plan["build"];
    Some(serde_json::json!({
        "runtime": plan["runtime"],
        "builder": plan["builder"],
        "dockerfile": plan["dockerfile"],
        "build": {
            "rootDir": build["rootDir"],
            "dockerfile": build["dockerfile"],
            "target": build["target"],
            "buildArgs": build["buildArgs"],
            "secrets": build["secrets"],
        },
    }))
}

/// What to plan: a project's connected repository, or any repository, at a ref.
#[derive(Debug)]
pub struct PlanTarget {
    pub project_id: Option<String>,
    pub repo: Option<crate::source::RepoLocation>,
    pub git_ref: Option<crate::source::GitRef>,
}

/// Where a plan's source comes from: the repository, the token to fetch it with, the
/// branch when no ref is named, and the mirror to fetch into.
struct PlanSource {
    location: RepoLocation,
    token: Option<String>,
    default_branch: String,
    mirror_path: PathBuf,
    /// A mirror made for this plan alone (any repository), removed afterwards.
    temporary: bool,
}

impl Deploys {
    /// Fetches and plans without building or running anything.
    pub async fn plan(&self, actor: &Actor, target: PlanTarget) -> Result<DeployPlan> {
        let project = match &target.project_id {
            Some(id) => Some(crate::projects::get(&self.store, actor, id.clone()).await?),
            None => None,
        };
        if let (Some(project), None) = (&project, &target.repo) {
            if let Some(plan) = self
                .plan_image_source(project, target.git_ref.as_ref())
                .await?
            {
                return self.deploy_plan(project, &plan, None).await;
            }
        }
        let source = self
            .plan_source_of(actor, project.as_ref(), target.repo.as_ref())
            .await?;
        let git_ref = match target.git_ref {
            Some(git_ref) => git_ref,
            None => GitRef::parse(&source.default_branch)?,
        };
        let hint = project.as_ref().and_then(|p| p.runtime);
        let settings = project
            .as_ref()
            .map(|p| p.build.clone())
            .unwrap_or_default();
        // A compose file's `${VAR}`s read the project's env.
        let env = match &project {
            Some(project) => self.env.snapshot(&project.id).await?,
            None => std::collections::BTreeMap::new(),
        };
        let (source, build) = self
            .fetch_and_plan(source, git_ref, hint, settings, env)
            .await?;
        match project {
            Some(project) => self.deploy_plan(&project, &source, Some(&build)).await,
            None => Ok(DeployPlan {
                source: self.with_health_check(&source, None, Some(&build)),
                instances: 1,
                size: {
                    let tier = self.config.scale.tier(None);
                    InstanceSize {
                        name: self.config.scale.default_size.clone(),
                        memory_mb: tier.memory_mb,
                        cpus: tier.cpus,
                    }
                },
                env_keys: vec!["PORT".to_owned()],
                hostnames: Vec::new(),
                database: None,
                jobs: build.file_jobs.iter().map(|job| job.to_fields()).collect(),
                compose: build
                    .stack
                    .as_ref()
                    .map(|stack| stack.plan(&self.config.scale)),
                build: Some(build),
            }),
        }
    }

    /// For a project whose source is an image: what a deploy would pull and run, read
    /// from the registry's API (manifest and config) with the account's credentials;
    /// nothing is pulled or started. `selector` is a tag or digest instead of the
    /// connected tag. `None` for a git project.
    async fn plan_image_source(
        &self,
        project: &Project,
        selector: Option<&GitRef>,
    ) -> Result<Option<SourcePlan>> {
        let id = project.id.clone();
        let Some(stored) = self.store.call(move |c| store::images::get(c, &id)).await? else {
            return Ok(None);
        };
        let connected = ImageReference::parse(&stored.reference)?;
        let reference = match selector {
            Some(selector) => connected.with_selector(selector.as_str())?,
            None => connected,
        };
        let credentials = self
            .registries
            .auth_for(&project.account_id, &reference.registry())
            .await?
            .map(|auth| (auth.username, auth.password));
        let egress = crate::source::EgressPolicy::from_config(&self.config.git);
        let remote = crate::registry_api::inspect(&reference, credentials, &egress).await?;
        Ok(Some(crate::plan::plan_image(ImagePlan {
            reference: reference.pinned(&remote.digest),
            digest: Some(remote.digest),
            exposed_ports: remote.exposed_ports,
            healthcheck: remote.healthcheck,
            user: remote.user,
            workdir: remote.workdir,
        })))
    }

    /// The repository to plan: the one named (the actor must be allowed to fetch it), or
    /// the project's connected one (its owner must still be allowed to).
    async fn plan_source_of(
        &self,
        actor: &Actor,
        project: Option<&Project>,
        repo: Option<&RepoLocation>,
    ) -> Result<PlanSource> {
        match (project, repo) {
            (_, Some(repo)) => {
                self.permit_repo(&actor.account_id, actor.handle.as_str(), repo)
                    .await?;
                let scratch = self
                    .config
                    .builds_dir()
                    .join(format!("plan-{}", crate::ids::random_base62(12)));
                Ok(PlanSource {
                    location: repo.clone(),
                    token: None,
                    default_branch: "main".to_owned(),
                    mirror_path: scratch.join("mirror.git"),
                    temporary: true,
                })
            }
            (Some(project), None) => {
                let id = project.id.clone();
                let stored = self.store.call(move |c| store::git::get(c, &id)).await?.ok_or_else(|| {
                    Error::Invalid(format!(
                        "project `{}` has no git repository; connect one, or pass `repo` to plan any repository",
                        project.id
                    ))
                })?;
                let token = stored
                    .access_token
                    .as_deref()
                    .map(|sealed| self.secrets.open_string(sealed))
                    .transpose()?;
                let location = RepoLocation::parse(&stored.repo)?;
                self.permit_repo(&project.account_id, project.handle.as_str(), &location)
                    .await?;
                Ok(PlanSource {
                    location,
                    token,
                    default_branch: stored.branch,
                    mirror_path: self.config.repos_dir().join(format!("{}.git", project.id)),
                    temporary: false,
                })
            }
            (None, None) => Err(Error::Invalid(
                "pass `projectId` or `repo` to plan".to_owned(),
            )),
        }
    }

    /// Fetches `git_ref` into the mirror, exports it to a scratch directory and plans the
    /// tree; the scratch directory (and a temporary mirror) are removed either way.
    async fn fetch_and_plan(
        &self,
        source: PlanSource,
        git_ref: GitRef,
        hint: Option<crate::names::Runtime>,
        settings: BuildSettings,
        env: std::collections::BTreeMap<String, String>,
    ) -> Result<(SourcePlan, BuildPlan)> {
        let export_dir = self
            .config
            .builds_dir()
            .join(format!("plan-{}", crate::ids::random_base62(12)));
        let timeout = std::time::Duration::from_secs(self.config.deploy.fetch_timeout_secs);
        let egress = crate::source::EgressPolicy::from_config(&self.config.git);
        let images = self.config.build.images.clone();
        let temporary_mirror = source.temporary.then(|| source.mirror_path.clone());
        let work_dir = export_dir.clone();
        let PlanSource {
            location,
            token,
            mirror_path,
            ..
        } = source;
        let planned = tokio::task::spawn_blocking(move || -> Result<(SourcePlan, BuildPlan)> {
            let mirror = Mirror::open_or_init(&mirror_path)?;
            mirror.fetch(&location, token.as_deref(), timeout, &egress)?;
            let commit = mirror.resolve(&git_ref)?;
            std::fs::create_dir_all(&work_dir).map_err(|err| Error::Internal(err.to_string()))?;
            mirror.export(&commit.sha, &work_dir)?;
            crate::plan::plan_repository(
                &work_dir,
                &settings,
                &crate::plan::PlanOptions {
                    runtime_hint: hint,
                    images: &images,
                },
                &env,
            )
        })
        .await
        .map_err(|err| Error::Internal(err.to_string()))?;
        let _ = tokio::fs::remove_dir_all(&export_dir).await;
        if let Some(mirror) =
            temporary_mirror.and_then(|m| m.parent().map(std::path::Path::to_owned))
        {
            let _ = tokio::fs::remove_dir_all(mirror).await;
        }
        planned
    }
}

#[cfg(test)]
mod tests {
    use super::build_key;
    use serde_json::json;

    #[test]
    fn the_build_key_ignores_the_health_check_and_keeps_every_build_input() {
        let plan = json!({
            "runtime": "node", "builder": "generated", "dockerfile": "FROM node:22-slim\n",
            "port": 3000, "healthCheck": {"kind": "http", "path": "/", "source": "detection"},
            "instances": 1, "envKeys": ["PORT"], "warnings": [],
            "build": {"rootDir": ".", "dockerfile": null, "target": null, "buildArgs": {"A": "1"},
                      "watchPaths": [], "secrets": ["NPM"], "configFile": null, "sources": {}}
        });
        let key = |plan: &serde_json::Value| build_key(&plan.to_string()).unwrap();
        let mut other = plan.clone();
        other["healthCheck"] = json!({"kind": "tcp", "port": 9, "source": "file"});
        other["instances"] = json!(3);
        other["warnings"] = json!(["`[health]` in cantila.toml was ignored"]);
        other["build"]["watchPaths"] = json!(["apps/**"]);
        assert_eq!(key(&plan), key(&other));
        for (field, value) in [
            ("/runtime", json!("python")),
            ("/dockerfile", json!("FROM node:20\n")),
            ("/build/rootDir", json!("apps/web")),
            ("/build/target", json!("prod")),
            ("/build/buildArgs", json!({"A": "2"})),
            ("/build/secrets", json!([])),
        ] {
            let mut changed = plan.clone();
            *changed.pointer_mut(field).unwrap() = value;
            assert_ne!(key(&plan), key(&changed), "{field}");
        }
        assert_eq!(build_key("not json"), None);
    }
}

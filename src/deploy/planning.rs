//! The deploy plan: what a deploy of a source tree would build, how it would run, and
//! where it would be served. The same function answers `POST /v1/deploy/plan` and drives
//! the real deploy, so the plan shown can never disagree with what happens.

use serde::Serialize;

use crate::{error::Result, plan::SourcePlan, projects::Project, state::AppState, store};

/// A source plan plus how the project would run it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployPlan {
    /// Runtime, builder, Dockerfile, port, start command, processes, health check,
    /// static root and warnings, as detected from the source.
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
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSize {
    /// The tier's name from `[scale.sizes]`.
    pub name: String,
    pub memory_mb: u32,
    pub cpus: f64,
}

pub async fn deploy_plan(
    app: &AppState,
    project: &Project,
    source: &SourcePlan,
) -> Result<DeployPlan> {
    let project_id = project.id.clone();
    let (vars, database) = app
        .store
        .call(move |c| {
            Ok((
                store::env::all(c, &project_id)?,
                store::volumes::database_of(c, &project_id)?,
            ))
        })
        .await?;
    let mut env_keys: Vec<String> = vars.into_iter().map(|var| var.key).collect();
    env_keys.push("PORT".to_owned());
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
    let tier = app.config.scale.tier(project.size.as_deref());
    Ok(DeployPlan {
        source: source.clone(),
        instances: project.instances,
        size: InstanceSize {
            name: project
                .size
                .clone()
                .unwrap_or_else(|| app.config.scale.default_size.clone()),
            memory_mb: tier.memory_mb,
            cpus: tier.cpus,
        },
        env_keys,
        hostnames: vec![project.default_hostname(&app.config.base_domain)],
        database: database.map(|database| {
            serde_json::json!({ "engine": database.engine.as_str(), "volume": database.volume })
        }),
    })
}

/// What to plan: a project's connected repository, or any repository, at a ref.
#[derive(Debug)]
pub struct PlanTarget {
    pub project_id: Option<String>,
    pub repo: Option<crate::source::RepoLocation>,
    pub git_ref: Option<crate::source::GitRef>,
}

/// Fetches and plans without building or running anything.
pub async fn preview(
    app: &AppState,
    actor: &crate::accounts::Actor,
    target: PlanTarget,
) -> Result<DeployPlan> {
    use crate::{
        error::Error,
        source::{GitRef, Mirror},
    };
    let project = match &target.project_id {
        Some(id) => Some(crate::projects::get(&app.store, actor, id.clone()).await?),
        None => None,
    };
    let (location, token, default_branch, mirror_path) = match (&project, &target.repo) {
        (_, Some(repo)) => {
            crate::git_connection::permit_repo(app, &actor.account_id, actor.handle.as_str(), repo)
                .await?;
            let scratch = app
                .config
                .builds_dir()
                .join(format!("plan-{}", crate::ids::random_base62(12)));
            (
                repo.clone(),
                None,
                "main".to_owned(),
                scratch.join("mirror.git"),
            )
        }
        (Some(project), None) => {
            let id = project.id.clone();
            let stored = app.store.call(move |c| store::git::get(c, &id)).await?.ok_or_else(|| {
                Error::Invalid(format!(
                    "project `{}` has no git repository; connect one, or pass `repo` to plan any repository",
                    project.id
                ))
            })?;
            let token = stored
                .access_token
                .as_deref()
                .map(|sealed| app.secrets.open_string(sealed))
                .transpose()?;
            let location = crate::source::RepoLocation::parse(&stored.repo)?;
            crate::git_connection::permit_repo(
                app,
                &project.account_id,
                project.handle.as_str(),
                &location,
            )
            .await?;
            (
                location,
                token,
                stored.branch,
                app.config.repos_dir().join(format!("{}.git", project.id)),
            )
        }
        (None, None) => {
            return Err(Error::Invalid(
                "pass `projectId` or `repo` to plan".to_owned(),
            ));
        }
    };
    let git_ref = match target.git_ref {
        Some(git_ref) => git_ref,
        None => GitRef::parse(&default_branch)?,
    };
    let export_dir = app
        .config
        .builds_dir()
        .join(format!("plan-{}", crate::ids::random_base62(12)));
    let timeout = std::time::Duration::from_secs(app.config.deploy.fetch_timeout_secs);
    let egress = crate::source::EgressPolicy::from_config(&app.config.git);
    let images = app.config.build.images.clone();
    let hint = project.as_ref().and_then(|p| p.runtime);
    let temporary_mirror = target.repo.is_some().then(|| mirror_path.clone());
    let work_dir = export_dir.clone();
    let planned = tokio::task::spawn_blocking(move || -> Result<crate::plan::SourcePlan> {
        let mirror = Mirror::open_or_init(&mirror_path)?;
        mirror.fetch(&location, token.as_deref(), timeout, &egress)?;
        let commit = mirror.resolve(&git_ref)?;
        std::fs::create_dir_all(&work_dir).map_err(|err| Error::Internal(err.to_string()))?;
        mirror.export(&commit.sha, &work_dir)?;
        crate::plan::plan_tree(
            &work_dir,
            &crate::plan::PlanOptions {
                runtime_hint: hint,
                images: &images,
            },
        )
    })
    .await
    .map_err(|err| Error::Internal(err.to_string()))?;
    let _ = tokio::fs::remove_dir_all(&export_dir).await;
    if let Some(mirror) = temporary_mirror.and_then(|m| m.parent().map(std::path::Path::to_owned)) {
        let _ = tokio::fs::remove_dir_all(mirror).await;
    }
    let source = planned?;
    match project {
        Some(project) => deploy_plan(app, &project, &source).await,
        None => Ok(DeployPlan {
            source,
            instances: 1,
            size: {
                let tier = app.config.scale.tier(None);
                InstanceSize {
                    name: app.config.scale.default_size.clone(),
                    memory_mb: tier.memory_mb,
                    cpus: tier.cpus,
                }
            },
            env_keys: vec!["PORT".to_owned()],
            hostnames: Vec::new(),
            database: None,
        }),
    }
}

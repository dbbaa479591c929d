//! Projects: the unit Cantila deploys and runs. Creation, lookup, renaming, deletion.
//! A project's hostnames follow its rows: the caller refreshes routing after a creation,
//! a rename or a deletion, and a deletion's teardown (deploys canceled, containers and
//! files removed) is `deploy::teardown`'s, since routing and deploys are later services.
//! Invariant: a project is only ever visible to tokens of its own account.

use std::collections::BTreeMap;

use crate::{
    accounts::Actor,
    clock,
    error::{Error, Result},
    ids,
    model::{
        build::{BuildName, BuildSettings, BuildTarget, DockerfilePath, RootDir, WatchPath},
        deploy::Deploy,
        health::HealthCheckSettings,
        preview::Preview,
    },
    names::{BranchPattern, ProjectName, Runtime},
    pagination::{Page, PageRequest},
    store::{self, Store},
};

pub use crate::model::project::{Project, ProjectStatus};

/// The projects service handle: the store projects live in.
#[derive(Clone)]
pub struct Projects {
    store: Store,
    /// `logs.db`: a deleted project's runtime log lines and metric points are deleted there.
    log_store: Store,
}

/// A validated request to create a project.
#[derive(Debug)]
pub struct NewProject {
    pub name: ProjectName,
    pub runtime: Option<Runtime>,
}

/// A validated partial update; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ProjectChanges {
    pub name: Option<ProjectName>,
    /// `Some(None)` clears the hint so the runtime is detected again.
    pub runtime: Option<Option<Runtime>>,
    /// New `previews.branches` patterns (validated); an empty list turns branch previews off.
    pub preview_branches: Option<Vec<BranchPattern>>,
    /// Changes to the build settings, field by field.
    pub build: Option<BuildChanges>,
    /// New health check settings; `Some(None)` returns to the defaults.
    pub health_check: Option<Option<HealthCheckSettings>>,
}

/// A validated change of the build settings: `None` leaves a field as it is, `Some(None)`
/// (or an empty map or list) clears it so the repository's `cantila.toml` or detection
/// decides again.
#[derive(Debug, Default)]
pub struct BuildChanges {
    pub root_dir: Option<Option<RootDir>>,
    pub dockerfile: Option<Option<DockerfilePath>>,
    pub target: Option<Option<BuildTarget>>,
    pub build_args: Option<BTreeMap<BuildName, String>>,
    pub watch_paths: Option<Vec<WatchPath>>,
}

impl BuildChanges {
    /// The settings after the changes, with their limits checked.
    pub fn apply_to(self, settings: &BuildSettings) -> Result<BuildSettings> {
        let mut changed = settings.clone();
        if let Some(root_dir) = self.root_dir {
            // The repository's root is the default, so setting it is clearing it.
            changed.root_dir = root_dir.filter(|root| !root.is_repository());
        }
        if let Some(dockerfile) = self.dockerfile {
            changed.dockerfile = dockerfile;
        }
        if let Some(target) = self.target {
            changed.target = target;
        }
        if let Some(build_args) = self.build_args {
            changed.build_args = build_args;
        }
        if let Some(watch_paths) = self.watch_paths {
            changed.watch_paths = watch_paths;
        }
        changed.check_limits()?;
        Ok(changed)
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("project `{id}` not found"))
}

/// What a deleted project left to tear down, read before its rows went.
#[derive(Debug)]
pub struct Deleted {
    /// Its deploys in progress, production's and its previews' alike.
    pub active: Vec<Deploy>,
    /// Its previews, whose hostnames' certificate records go with them.
    pub previews: Vec<Preview>,
}

impl Projects {
    pub fn new(store: Store, log_store: Store) -> Self {
        Self { store, log_store }
    }

    /// Creates the project; its hostname answers (503, "created") rather than 404 once the
    /// caller has refreshed routing.
    pub async fn create(&self, actor: &Actor, new: NewProject) -> Result<Project> {
        let now = clock::now();
        let project = Project {
            id: ids::new_id("prj"),
            account_id: actor.account_id.clone(),
            handle: actor.handle.clone(),
            name: new.name,
            runtime: new.runtime,
            status: ProjectStatus::Created,
            created_at: now.clone(),
            updated_at: now,
            instances: 1,
            size: None,
            preview_branches: Vec::new(),
            process_instances: BTreeMap::new(),
            build: Default::default(),
            health_check: None,
        };
        let audit = store::Audit::by(actor, "project.create", &project.id);
        self.store
            .write_audited(audit, move |tx| {
                store::projects::insert(tx, &project)?;
                Ok(project)
            })
            .await
    }

    /// Applies the changes; a new name is a new hostname once the caller has refreshed
    /// routing.
    pub async fn update(
        &self,
        actor: &Actor,
        id: String,
        changes: ProjectChanges,
    ) -> Result<Project> {
        let audit = store::Audit::by(actor, "project.update", &id);
        let account_id = actor.account_id.clone();
        self.store
            .write_audited(audit, move |tx| {
                let mut project =
                    store::projects::by_id(tx, &account_id, &id)?.ok_or_else(|| not_found(&id))?;
                if let Some(name) = changes.name {
                    project.name = name;
                }
                if let Some(runtime) = changes.runtime {
                    project.runtime = runtime;
                }
                if let Some(build) = changes.build {
                    project.build = build.apply_to(&project.build)?;
                    let stored = (!project.build.is_empty())
                        .then(|| serde_json::to_string(&project.build))
                        .transpose()
                        .map_err(|err| Error::Internal(err.to_string()))?;
                    store::projects::set_build_settings(tx, &project.id, stored.as_deref())?;
                }
                if let Some(patterns) = changes.preview_branches {
                    project.preview_branches =
                        patterns.iter().map(|p| p.as_str().to_owned()).collect();
                    let stored = (!project.preview_branches.is_empty())
                        .then(|| serde_json::to_string(&project.preview_branches))
                        .transpose()
                        .map_err(|err| Error::Internal(err.to_string()))?;
                    store::previews::set_branch_patterns(tx, &project.id, stored.as_deref())?;
                }
                if let Some(settings) = changes.health_check {
                    store::projects::set_health_check(tx, &project.id, settings.as_ref())?;
                    project.health_check = settings;
                }
                project.updated_at = clock::now();
                store::projects::update(tx, &project)?;
                Ok(project)
            })
            .await
    }

    /// Deletes the project's rows (and with them everything attached in the store), and
    /// returns what is left to tear down outside it. A project still holding data (a
    /// database, a volume) answers 409: data is never dropped as a side effect.
    pub async fn delete(&self, actor: &Actor, id: String) -> Result<Deleted> {
        let audit = store::Audit::by(actor, "project.delete", &id);
        let deleted_id = id.clone();
        let account_id = actor.account_id.clone();
        let project_id = id.clone();
        // Production's deploys and its previews' alike.
        let active = self
            .store
            .call(move |connection| store::deploys::in_progress_of_project(connection, &project_id))
            .await?;
        let project_id = id.clone();
        let previews = self
            .store
            .call(move |connection| store::previews::of_project(connection, &project_id))
            .await?;
        self.store
            .write_audited(audit, move |tx| {
                if store::projects::by_id(tx, &account_id, &id)?.is_none() {
                    return Err(not_found(&id));
                }
                // Data is never dropped as a side effect: it is deleted explicitly first.
                if let Some(what) = store::volumes::holds_data(tx, &id)? {
                    return Err(Error::Conflict(format!(
                        "project `{id}` holds {what}; delete its database and volumes first (DELETE /v1/projects/{id}/database, /volumes/:name)"
                    )));
                }
                if !store::projects::delete(tx, &account_id, &id)? {
                    return Err(not_found(&id));
                }
                Ok(())
            })
            .await?;
        // Its lines and points are in `logs.db`, another file: deleted after the commit,
        // chunk by chunk. Should this fail, the log writer's sweep of removed projects
        // finishes it within a minute.
        loop {
            let id = deleted_id.clone();
            match self
                .log_store
                .call(move |c| store::logs::sweep_project_step(c, &id))
                .await
            {
                Ok(0) => break,
                Ok(_) => tokio::task::yield_now().await,
                Err(err) => {
                    tracing::warn!(project = %deleted_id, error = %err, "deleting a deleted project's logs");
                    break;
                }
            }
        }
        Ok(Deleted { active, previews })
    }
}

pub async fn get(store: &Store, actor: &Actor, id: String) -> Result<Project> {
    let account_id = actor.account_id.clone();
    store
        .call(move |connection| {
            store::projects::by_id(connection, &account_id, &id)?.ok_or_else(|| not_found(&id))
        })
        .await
}

/// A project by id without the account check; for callers that did the check.
pub async fn get_unscoped(store: &Store, id: String) -> Result<Project> {
    store
        .call(move |connection| {
            store::projects::by_id_unscoped(connection, &id)?.ok_or_else(|| not_found(&id))
        })
        .await
}

/// Looks a project up by its human identifiers. Another account's handle answers 404
/// exactly like a missing project.
pub async fn get_by_handle(
    store: &Store,
    actor: &Actor,
    handle: &str,
    name: String,
) -> Result<Project> {
    let missing = || Error::NotFound(format!("project `{handle}/{name}` not found"));
    if handle != actor.handle.as_str() {
        return Err(missing());
    }
    let account_id = actor.account_id.clone();
    let lookup_name = name.clone();
    store
        .call(move |connection| store::projects::by_name(connection, &account_id, &lookup_name))
        .await?
        .ok_or_else(missing)
}

pub async fn list(store: &Store, actor: &Actor, page: PageRequest) -> Result<Page<Project>> {
    let account_id = actor.account_id.clone();
    let rows = store
        .call(move |connection| {
            store::projects::page(connection, &account_id, page.after, page.limit + 1)
        })
        .await?;
    Ok(page.finish(rows))
}

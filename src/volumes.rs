//! Persistent volumes: Docker named volumes a project declares, mounted into every
//! container of the project (instances, workers, release commands), and `attach`, which
//! adds those mounts and the database's env to a container spec.
//! Invariant: a volume outlives redeploys, rollbacks, scaling and daemon restarts; only
//! `delete` (admin scope, confirmed with the project's name) removes its data.

use std::collections::HashMap;

use crate::{
    accounts::Actor,
    clock,
    error::{Error, Result},
    labels::{Filter, Labels},
    names::{MountPath, VolumeName},
    projects::{self, Project},
    runtime::{ContainerSpec, Runtime, VolumeMount},
    state::AppState,
    store,
};

pub use crate::model::volume::Volume;

/// The Docker volume name of a project's volume.
pub fn docker_name(project_id: &str, name: &VolumeName) -> String {
    format!("cantila_{project_id}_{name}")
}

/// The labels every Cantila volume carries, so an operator (and Cantila after a crash)
/// can tell whose it is.
pub fn labels(app: &AppState, project_id: &str, name: &str) -> HashMap<String, String> {
    Labels::volume(&app.installation, project_id, name).to_map()
}

/// Checks that `confirm` names the project, for destructive operations.
pub fn check_confirmation(project: &Project, confirm: Option<&str>) -> Result<()> {
    if confirm == Some(project.name.as_str()) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "this deletes data for good; confirm by sending `confirm` equal to the project's name (`{}`)",
            project.name
        )))
    }
}

/// Declares a volume and creates it in Docker. Containers started from now on mount it;
/// running ones get it at their next deploy or restart.
pub async fn create(
    app: &AppState,
    actor: &Actor,
    project_id: String,
    name: VolumeName,
    mount_path: MountPath,
) -> Result<Volume> {
    let project = projects::get(&app.store, actor, project_id).await?;
    create_for(app, actor, &project, name, mount_path, "volume.create").await
}

/// Creates a volume of an already authorized project (also used by the SQLite database).
pub(crate) async fn create_for(
    app: &AppState,
    actor: &Actor,
    project: &Project,
    name: VolumeName,
    mount_path: MountPath,
    action: &'static str,
) -> Result<Volume> {
    let id = project.id.clone();
    let existing = app
        .store
        .call(move |c| store::volumes::volumes_of(c, &id))
        .await?;
    for other in &existing {
        let other_path = MountPath::parse(&other.mount_path)?;
        if other.name == name.as_str() {
            return Err(Error::Conflict(format!(
                "the project already has a volume named `{name}`"
            )));
        }
        if other_path.overlaps(&mount_path) {
            return Err(Error::Conflict(format!(
                "`{mount_path}` overlaps the mount path `{other_path}` of volume `{}`",
                other.name
            )));
        }
    }
    let volume = Volume {
        project_id: project.id.clone(),
        name: name.as_str().to_owned(),
        mount_path: mount_path.as_str().to_owned(),
        docker_name: docker_name(&project.id, &name),
        created_at: clock::now(),
    };
    // Docker first: a volume the store lists always exists (or is recreated empty by
    // `attach` if someone removed it behind Cantila's back).
    let engine = app.engine().await?;
    engine
        .ensure_volume(
            &volume.docker_name,
            labels(app, &project.id, volume.name.as_str()),
        )
        .await?;
    let saved = volume.clone();
    let audit = store::Audit::by(
        actor,
        action,
        format!("{}:{}", volume.project_id, volume.name),
    );
    app.store
        .write_audited(audit, move |tx| store::volumes::insert_volume(tx, &saved))
        .await?;
    Ok(volume)
}

pub async fn list(app: &AppState, actor: &Actor, project_id: String) -> Result<Vec<Volume>> {
    let project = projects::get(&app.store, actor, project_id).await?;
    app.store
        .call(move |c| store::volumes::volumes_of(c, &project.id))
        .await
}

/// Removes a volume and its data. Refused while a container of the project mounts it (a
/// running app would lose files under its feet) and for the SQLite database's volume.
pub async fn delete(
    app: &AppState,
    actor: &Actor,
    project_id: String,
    name: VolumeName,
    confirm: Option<String>,
) -> Result<()> {
    let project = projects::get(&app.store, actor, project_id).await?;
    check_confirmation(&project, confirm.as_deref())?;
    let (id, volume_name) = (project.id.clone(), name.as_str().to_owned());
    let (volume, database) = app
        .store
        .call(move |c| {
            Ok((
                store::volumes::volume(c, &id, &volume_name)?,
                store::volumes::database_of(c, &id)?,
            ))
        })
        .await?;
    let volume = volume.ok_or_else(|| {
        Error::NotFound(format!("project `{}` has no volume `{name}`", project.id))
    })?;
    if database.is_some_and(|db| db.volume.as_deref() == Some(volume.name.as_str())) {
        return Err(Error::Conflict(format!(
            "volume `{name}` holds the project's SQLite database; delete the database instead"
        )));
    }
    let lock = app.project_lock(&project.id);
    let _guard = lock.lock().await;
    let engine = app.engine().await?;
    let users = containers_of(&engine, &project.id).await?;
    if !users.is_empty() {
        return Err(Error::Conflict(format!(
            "volume `{name}` is mounted by {} container(s) of the project; scale the project to 0 first",
            users.len()
        )));
    }
    engine.remove_volume(&volume.docker_name).await?;
    let audit = store::Audit::by(
        actor,
        "volume.delete",
        format!("{}:{}", volume.project_id, volume.name),
    );
    app.store
        .write_audited(audit, move |tx| {
            store::volumes::delete_volume(tx, &volume.project_id, &volume.name)
        })
        .await?;
    Ok(())
}

/// Containers of the project (any kind, any state) that mount its volumes; backup helpers
/// carry `cantila.helper-for` instead, and a preview's containers mount none of them.
async fn containers_of(engine: &Runtime, project_id: &str) -> Result<Vec<String>> {
    Ok(engine
        .containers_matching(&Filter::production(project_id))
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect())
}

/// Adds the project's volumes (as mounts) and its database's connection env to a
/// container spec. Called wherever a project container is built (instances, workers,
/// release commands), so every release, including a rollback to a release older than the
/// database, runs with the current volumes and credentials.
pub async fn attach(app: &AppState, project_id: &str, spec: &mut ContainerSpec) -> Result<()> {
    let id = project_id.to_owned();
    let (volumes, database) = app
        .store
        .call(move |c| {
            Ok((
                store::volumes::volumes_of(c, &id)?,
                store::volumes::database_of(c, &id)?,
            ))
        })
        .await?;
    if !volumes.is_empty() {
        let engine = app.engine().await?;
        for volume in &volumes {
            engine
                .ensure_volume(&volume.docker_name, labels(app, project_id, &volume.name))
                .await?;
            spec.mounts.push(VolumeMount {
                volume: volume.docker_name.clone(),
                target: volume.mount_path.clone(),
            });
        }
    }
    if let Some(database) = database {
        let env = crate::database::connection_env(app, &database).await?;
        spec.env
            .retain(|(key, _)| !env.iter().any(|(wired, _)| wired == key));
        spec.env.extend(env);
    }
    Ok(())
}

//! Persistent volumes: Docker named volumes a project declares, mounted into every
//! container of the project (instances, workers, release commands). `Volumes` is the
//! handle: the store, the runtime, the installation id and the per-project locks.
//! `mount_into` adds the mounts to a container spec (the database's `attach` adds its env
//! on top).
//! Invariant: a volume outlives redeploys, rollbacks, scaling and daemon restarts; only
//! `delete` (admin scope, confirmed with the project's name) removes its data.

use std::{collections::HashMap, sync::Arc};

use crate::{
    accounts::Actor,
    clock,
    error::{Error, Result},
    labels::{Filter, Key, Labels},
    locks::ProjectLocks,
    names::{MountPath, VolumeName},
    projects::{self, Project},
    runtime::{ContainerSpec, Runtime, VolumeMount},
    store::{self, Store},
};

pub use crate::model::volume::Volume;

/// The Docker volume name of a project's volume.
pub fn docker_name(project_id: &str, name: &VolumeName) -> String {
    format!("cantila_{project_id}_{name}")
}

/// The volumes handle: cheap to clone, one per daemon.
#[derive(Clone)]
pub struct Volumes {
    store: Store,
    /// The container runtime; it connects on first use, so the API runs without one.
    runtime: Runtime,
    /// This installation's id, labelled on every volume it creates.
    installation: Arc<str>,
    /// Shared with deploys and backups: a volume is deleted only while no release change
    /// can start a container that mounts it.
    locks: ProjectLocks,
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

impl Volumes {
    pub fn new(
        store: Store,
        runtime: Runtime,
        installation: Arc<str>,
        locks: ProjectLocks,
    ) -> Self {
        Self {
            store,
            runtime,
            installation,
            locks,
        }
    }

    /// The container runtime, once it answers (the first call connects).
    async fn engine(&self) -> Result<Runtime> {
        self.runtime.ready().await?;
        Ok(self.runtime.clone())
    }

    /// The labels every Cantila volume carries, so an operator (and Cantila after a crash)
    /// can tell whose it is.
    pub fn labels(&self, project_id: &str, name: &str) -> HashMap<String, String> {
        Labels::volume(&self.installation, project_id, name).to_map()
    }

    /// Declares a volume and creates it in Docker. Containers started from now on mount it;
    /// running ones get it at their next deploy or restart.
    pub async fn create(
        &self,
        actor: &Actor,
        project_id: String,
        name: VolumeName,
        mount_path: MountPath,
    ) -> Result<Volume> {
        let project = projects::get(&self.store, actor, project_id).await?;
        self.create_for(actor, &project, name, mount_path, "volume.create")
            .await
    }

    /// Creates a volume of an already authorized project (also used by the SQLite database).
    pub(crate) async fn create_for(
        &self,
        actor: &Actor,
        project: &Project,
        name: VolumeName,
        mount_path: MountPath,
        action: &'static str,
    ) -> Result<Volume> {
        let id = project.id.clone();
        let existing = self
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
            // A service's volume is mounted in its containers only, so it never shadows
            // an app volume's path.
            if other.service.is_none() && other_path.overlaps(&mount_path) {
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
            service: None,
        };
        // Docker first: a volume the store lists always exists (or is recreated empty by
        // `attach` if someone removed it behind Cantila's back).
        let engine = self.engine().await?;
        engine
            .ensure_volume(
                &volume.docker_name,
                self.labels(&project.id, volume.name.as_str()),
            )
            .await?;
        let saved = volume.clone();
        let audit = store::Audit::by(
            actor,
            action,
            format!("{}:{}", volume.project_id, volume.name),
        );
        self.store
            .write_audited(audit, move |tx| store::volumes::insert_volume(tx, &saved))
            .await?;
        Ok(volume)
    }

    pub async fn list(&self, actor: &Actor, project_id: String) -> Result<Vec<Volume>> {
        let project = projects::get(&self.store, actor, project_id).await?;
        self.store
            .call(move |c| store::volumes::volumes_of(c, &project.id))
            .await
    }

    /// Removes a volume and its data. Refused while a container of the project mounts it (a
    /// running app would lose files under its feet) and for the SQLite database's volume.
    pub async fn delete(
        &self,
        actor: &Actor,
        project_id: String,
        name: VolumeName,
        confirm: Option<String>,
    ) -> Result<()> {
        let project = projects::get(&self.store, actor, project_id).await?;
        check_confirmation(&project, confirm.as_deref())?;
        let (id, volume_name) = (project.id.clone(), name.as_str().to_owned());
        let (volume, database) = self
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
        if let Some(service) = volume.service.clone() {
            let id = project.id.clone();
            let owner = service.clone();
            let exists = self
                .store
                .call(move |c| store::services::by_name(c, &id, &owner))
                .await?
                .is_some();
            // The volume of a service that is gone (dropped from a compose file) is the
            // project's to delete like any other.
            if exists {
                return Err(Error::Conflict(format!(
                    "volume `{name}` belongs to service `{service}`; delete the service with `deleteData=true` to remove it"
                )));
            }
        }
        if database.is_some_and(|db| db.volume.as_deref() == Some(volume.name.as_str())) {
            return Err(Error::Conflict(format!(
                "volume `{name}` holds the project's SQLite database; delete the database instead"
            )));
        }
        let lock = self.locks.of(&project.id);
        let _guard = lock.lock().await;
        let engine = self.engine().await?;
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
        self.store
            .write_audited(audit, move |tx| {
                store::volumes::delete_volume(tx, &volume.project_id, &volume.name)
            })
            .await?;
        Ok(())
    }

    /// Adds the project's app volumes (not those a service owns) to a container spec as
    /// mounts, recreating (empty) any Docker volume removed behind Cantila's back.
    /// `Databases::attach` calls it for every project container it builds.
    pub async fn mount_into(&self, project_id: &str, spec: &mut ContainerSpec) -> Result<()> {
        let id = project_id.to_owned();
        let volumes = self
            .store
            .call(move |c| store::volumes::app_volumes_of(c, &id))
            .await?;
        if volumes.is_empty() {
            return Ok(());
        }
        let engine = self.engine().await?;
        for volume in &volumes {
            engine
                .ensure_volume(&volume.docker_name, self.labels(project_id, &volume.name))
                .await?;
            spec.mounts.push(VolumeMount {
                volume: volume.docker_name.clone(),
                target: volume.mount_path.clone(),
            });
        }
        Ok(())
    }
}

/// Containers of the project (any kind, any state) that mount its app volumes; backup
/// helpers carry `cantila.helper-for` instead, a preview's containers mount none of them,
/// and a service's mount only its own.
async fn containers_of(engine: &Runtime, project_id: &str) -> Result<Vec<String>> {
    Ok(engine
        .containers_matching(&Filter::production(project_id).without(Key::Service))
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{
            account::{Account, Actor},
            project::ProjectStatus,
        },
        names::{Handle, ProcessType, ProjectName},
        runtime::{fake::FakeRuntime, ContainerSummary},
    };

    fn container(id: &str, labels: Labels) -> ContainerSummary {
        ContainerSummary {
            id: id.to_owned(),
            name: format!("cantila-{id}"),
            labels: labels.to_map(),
            state: "exited".to_owned(),
            addresses: Default::default(),
        }
    }

    /// The handle over a real store and a fake runtime: a volume is not deleted while a
    /// production container of its project exists (stopped ones count; a backup helper
    /// and a preview's instance do not), and the volume's row stays.
    #[tokio::test]
    async fn a_volume_is_kept_while_a_production_container_of_its_project_exists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let account = Account {
            id: "acc_ada".to_owned(),
            handle: Handle::parse("ada").unwrap(),
            created_at: clock::now(),
        };
        let actor = Actor::operator(&account);
        let project = Project {
            id: "prj_a".to_owned(),
            account_id: account.id.clone(),
            handle: account.handle.clone(),
            name: ProjectName::parse("shop").unwrap(),
            runtime: None,
            status: ProjectStatus::Running,
            created_at: clock::now(),
            updated_at: clock::now(),
            instances: 1,
            size: None,
            preview_branches: Vec::new(),
            process_instances: Default::default(),
            build: Default::default(),
            health_check: None,
        };
        let volume = Volume {
            project_id: project.id.clone(),
            name: "files".to_owned(),
            mount_path: "/files".to_owned(),
            docker_name: "cantila_prj_a_files".to_owned(),
            created_at: clock::now(),
            service: None,
        };
        let rows = (account.clone(), project.clone(), volume.clone());
        store
            .write_audited(None::<store::Audit>, move |tx| {
                store::accounts::insert_account(tx, &rows.0)?;
                store::projects::insert(tx, &rows.1)?;
                store::volumes::insert_volume(tx, &rows.2)
            })
            .await
            .unwrap();
        let web = ProcessType::parse("web").unwrap();
        let fake = Arc::new(FakeRuntime::with_containers(vec![
            container("helper", Labels::helper("inst", "prj_a")),
            container(
                "preview-web",
                Labels::instance("inst", "prj_a", "dep_p", "p1q2r3", &web, "small")
                    .in_preview(Some("pre_1")),
            ),
            container(
                "stopped-web",
                Labels::instance("inst", "prj_a", "dep_1", "x1y2z3", &web, "small"),
            ),
        ]));
        let volumes = Volumes::new(
            store.clone(),
            fake.clone(),
            "inst".into(),
            ProjectLocks::default(),
        );
        let name = VolumeName::parse("files").unwrap();
        let refused = volumes
            .delete(&actor, project.id.clone(), name, Some("shop".to_owned()))
            .await;
        match refused {
            Err(Error::Conflict(message)) => {
                assert!(message.contains("1 container(s)"), "{message}")
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let listed = volumes.list(&actor, project.id.clone()).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(fake.removed().is_empty());
    }
}

//! Restoring the newest backup of everything a project holds, for many projects at once:
//! what brings the data back after an installation was rebuilt on a new server (its state
//! restored, its releases rebuilt, its databases and volumes empty). Each restore goes
//! through the one restore path (`Backups::restore`: the file fetched from S3 when only the
//! copy is left, checked against its SHA-256, a safety backup first).
//! Invariant: a run is visible only to the account that started it, and a project of
//! another account named in the request answers 404 before anything starts.

use std::sync::{Arc, Mutex};

use crate::{
    accounts::Actor,
    error::{Error, Result},
    ids,
    projects::{self, Project},
    store,
};

use super::{Backup, BackupStatus, Backups, Target, Trigger};

/// How many finished runs are kept in memory for their progress to be read.
const KEPT_RUNS: usize = 32;

/// Where one target's restore stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatestStatus {
    Queued,
    Restoring,
    Restored,
    Failed,
    /// No completed backup of the target exists (or the project holds nothing).
    NothingToRestore,
}

impl LatestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Restoring => "restoring",
            Self::Restored => "restored",
            Self::Failed => "failed",
            Self::NothingToRestore => "nothing-to-restore",
        }
    }

    pub fn is_final(self) -> bool {
        match self {
            Self::Queued | Self::Restoring => false,
            Self::Restored | Self::Failed | Self::NothingToRestore => true,
        }
    }
}

/// One row of a run: a project's target and the backup restored onto it.
#[derive(Debug, Clone)]
pub struct LatestRestore {
    pub project_id: String,
    /// `None` for a project that holds nothing to back up.
    pub target: Option<Target>,
    pub backup_id: Option<String>,
    pub status: LatestStatus,
    pub error: Option<String>,
}

/// A run of `restore_latest`: its id and its rows as they stand.
#[derive(Debug, Clone)]
pub struct LatestRun {
    pub id: String,
    pub restores: Vec<LatestRestore>,
}

impl LatestRun {
    pub fn done(&self) -> bool {
        self.restores.iter().all(|r| r.status.is_final())
    }
}

/// The runs of this daemon, by id, with the account that started each. In memory: a run is
/// minutes long, its outcome is in each backup's `restoredAt` and the audit log for good,
/// and a daemon stopped mid-run leaves the restore to be asked for again.
#[derive(Clone, Default)]
pub struct LatestRuns(Arc<Mutex<Vec<(String, LatestRun)>>>);

impl LatestRuns {
    fn put(&self, account_id: &str, run: LatestRun) {
        let mut runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|(_, r)| r.id != run.id);
        runs.push((account_id.to_owned(), run));
        // The oldest finished runs go first; runs in progress are always kept.
        while runs.len() > KEPT_RUNS {
            match runs.iter().position(|(_, r)| r.done()) {
                Some(index) => {
                    runs.remove(index);
                }
                None => break,
            }
        }
    }

    fn update(&self, run_id: &str, index: usize, change: impl FnOnce(&mut LatestRestore)) {
        let mut runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(row) = runs
            .iter_mut()
            .find(|(_, r)| r.id == run_id)
            .and_then(|(_, r)| r.restores.get_mut(index))
        {
            change(row);
        }
    }

    fn get(&self, account_id: &str, run_id: &str) -> Option<LatestRun> {
        let runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter()
            .find(|(account, r)| account == account_id && r.id == run_id)
            .map(|(_, r)| r.clone())
    }
}

/// The newest completed backup of `target` among `backups`. Safety backups are left out:
/// one is taken of the data a restore overwrites (on a rebuilt server, the empty database),
/// so a second run would otherwise restore the emptiness.
fn newest_of<'a>(backups: &'a [Backup], target: &Target) -> Option<&'a Backup> {
    backups
        .iter()
        .filter(|b| b.status == BackupStatus::Completed && b.file.is_some())
        .filter(|b| b.trigger != Trigger::Safety.as_str())
        .filter(|b| &b.target() == target)
        .max_by(|a, b| a.started_at.cmp(&b.started_at))
}

impl Backups {
    /// Starts restoring, for each named project (every project of the account when `None`),
    /// the newest completed backup of its database, each volume and each add-on with data.
    /// Returns at once with one row per target; the restores run in the background, one
    /// project's targets one after another, projects side by side.
    pub async fn restore_latest(
        &self,
        actor: &Actor,
        project_ids: Option<Vec<String>>,
    ) -> Result<LatestRun> {
        let projects: Vec<Project> = match project_ids {
            Some(ids) if ids.is_empty() => {
                return Err(Error::Invalid(
                    "`projects` is empty; name at least one project id, or omit it to restore every project".to_owned(),
                ))
            }
            Some(ids) => {
                let mut found = Vec::new();
                for id in ids {
                    if found.iter().any(|p: &Project| p.id == id) {
                        continue;
                    }
                    found.push(projects::get(&self.store, actor, id).await?);
                }
                found
            }
            None => {
                let account_id = actor.account_id.clone();
                self.store
                    .call(move |c| {
                        Ok(store::projects::all(c)?
                            .into_iter()
                            .filter(|p| p.account_id == account_id)
                            .collect())
                    })
                    .await?
            }
        };
        let mut restores = Vec::new();
        let mut work: Vec<(Project, Vec<(usize, String)>)> = Vec::new();
        for project in projects {
            let id = project.id.clone();
            let backups = self
                .store
                .call(move |c| store::backups::of_project(c, &id))
                .await?;
            let targets = self.targets_of(&project).await?;
            if targets.is_empty() {
                restores.push(LatestRestore {
                    project_id: project.id.clone(),
                    target: None,
                    backup_id: None,
                    status: LatestStatus::NothingToRestore,
                    error: None,
                });
                continue;
            }
            let mut queued = Vec::new();
            for target in targets {
                let backup = newest_of(&backups, &target);
                if let Some(backup) = backup {
                    queued.push((restores.len(), backup.id.clone()));
                }
                restores.push(LatestRestore {
                    project_id: project.id.clone(),
                    target: Some(target),
                    backup_id: backup.map(|b| b.id.clone()),
                    status: match backup {
                        Some(_) => LatestStatus::Queued,
                        None => LatestStatus::NothingToRestore,
                    },
                    error: None,
                });
            }
            if !queued.is_empty() {
                work.push((project, queued));
            }
        }
        let run = LatestRun {
            id: ids::new_id("rst"),
            restores,
        };
        self.latest_runs.put(&actor.account_id, run.clone());
        for (project, queued) in work {
            let (backups, actor, run_id) = (self.clone(), actor.clone(), run.id.clone());
            tokio::spawn(async move {
                for (index, backup_id) in queued {
                    backups.latest_runs.update(&run_id, index, |row| {
                        row.status = LatestStatus::Restoring;
                    });
                    // The request named the projects (or all of them): that is the
                    // confirmation a single restore asks for by the project's name.
                    let outcome = match backups.prepare_target(&project, &backup_id).await {
                        Ok(()) => backups
                            .restore(&actor, backup_id.clone(), Some(project.name.to_string()))
                            .await
                            .map(|_| ()),
                        Err(err) => Err(err),
                    };
                    if let Err(err) = &outcome {
                        tracing::warn!(project = %project.id, backup = %backup_id, error = %err, "restoring the newest backup");
                    }
                    backups
                        .latest_runs
                        .update(&run_id, index, |row| match outcome {
                            Ok(_) => row.status = LatestStatus::Restored,
                            Err(err) => {
                                row.status = LatestStatus::Failed;
                                row.error = Some(err.to_string());
                            }
                        });
                }
            });
        }
        Ok(run)
    }

    /// On an engine that lost it (a new server), a volume no container has mounted yet
    /// does not exist: it is made with its labels before the restore's helper mounts it,
    /// or the engine would make it unlabelled, invisible to this installation.
    async fn prepare_target(&self, project: &Project, backup_id: &str) -> Result<()> {
        let id = backup_id.to_owned();
        let Some(backup) = self
            .store
            .call(move |c| store::backups::by_id(c, &id))
            .await?
        else {
            return Ok(());
        };
        if let Target::Volume(name) = backup.target() {
            let docker_name =
                crate::volumes::docker_name(&project.id, &crate::names::VolumeName::parse(&name)?);
            let labels = crate::labels::Labels::volume(&self.installation, &project.id, &name);
            self.engine()
                .await?
                .ensure_volume(&docker_name, labels.to_map())
                .await?;
        }
        Ok(())
    }

    /// A run of the actor's account, as it stands; another account's is not found.
    pub fn latest_run(&self, actor: &Actor, run_id: &str) -> Result<LatestRun> {
        self.latest_runs
            .get(&actor.account_id, run_id)
            .ok_or_else(|| Error::NotFound(format!("restore run `{run_id}` not found")))
    }
}

/// The runs' map, for `Backups::new`.
pub(super) fn new_runs() -> LatestRuns {
    LatestRuns(Arc::new(Mutex::new(Vec::new())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::backup::BackupKind;

    fn backup(id: &str, kind: BackupKind, subject: &str, trigger: &str, at: &str) -> Backup {
        Backup {
            id: id.to_owned(),
            project_id: "prj_1".to_owned(),
            kind,
            subject: subject.to_owned(),
            engine: None,
            trigger: trigger.to_owned(),
            status: BackupStatus::Completed,
            error: None,
            file: Some(format!("prj_1/{id}.tar")),
            size_bytes: Some(1),
            sha256: Some("00".to_owned()),
            started_at: at.to_owned(),
            finished_at: Some(at.to_owned()),
            restored_at: None,
            remote: None,
        }
    }

    #[test]
    fn the_newest_completed_backup_of_the_target_is_picked_never_a_safety_one() {
        let mut failed = backup("bak_f", BackupKind::Volume, "files", "manual", "2026-05-04");
        failed.status = BackupStatus::Failed;
        let backups = vec![
            backup(
                "bak_1",
                BackupKind::Volume,
                "files",
                "scheduled",
                "2026-05-01",
            ),
            backup("bak_2", BackupKind::Volume, "files", "manual", "2026-05-02"),
            backup("bak_3", BackupKind::Volume, "files", "safety", "2026-05-03"),
            failed,
            backup("bak_o", BackupKind::Volume, "other", "manual", "2026-05-05"),
            backup(
                "bak_d",
                BackupKind::Database,
                "cantila_x",
                "final",
                "2026-05-01",
            ),
        ];
        let pick = |target: Target| newest_of(&backups, &target).map(|b| b.id.as_str());
        assert_eq!(pick(Target::Volume("files".to_owned())), Some("bak_2"));
        assert_eq!(pick(Target::Volume("other".to_owned())), Some("bak_o"));
        assert_eq!(pick(Target::Database), Some("bak_d"));
        assert_eq!(pick(Target::Service("cache".to_owned())), None);
    }

    #[test]
    fn finished_runs_are_dropped_oldest_first_and_runs_are_per_account() {
        let runs = new_runs();
        let row = |status| LatestRestore {
            project_id: "prj_1".to_owned(),
            target: Some(Target::Database),
            backup_id: Some("bak_1".to_owned()),
            status,
            error: None,
        };
        runs.put(
            "acc_1",
            LatestRun {
                id: "rst_going".to_owned(),
                restores: vec![row(LatestStatus::Queued)],
            },
        );
        for n in 0..KEPT_RUNS + 3 {
            runs.put(
                "acc_1",
                LatestRun {
                    id: format!("rst_{n}"),
                    restores: vec![row(LatestStatus::Restored)],
                },
            );
        }
        assert!(
            runs.get("acc_1", "rst_going").is_some(),
            "in progress: kept"
        );
        assert!(
            runs.get("acc_1", "rst_0").is_none(),
            "oldest finished: dropped"
        );
        assert!(
            runs.get("acc_2", "rst_going").is_none(),
            "another account's"
        );
        runs.update("rst_going", 0, |r| r.status = LatestStatus::Failed);
        assert!(runs.get("acc_1", "rst_going").unwrap().done());
    }
}

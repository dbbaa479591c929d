//! The data directory a restore writes into, and the scratch directory beside it that
//! everything is staged in first. Invariant: the data directory is changed only by
//! `Target::install`, which renames staged files into place with `cantila.db` last and
//! undoes every rename it made when one fails, so a failed restore leaves the directory
//! exactly as it was.

use std::path::{Path, PathBuf};

use super::RestoreError;

/// The database file: its presence is what makes a data directory hold state, so it is
/// always the last thing a restore moves into place.
pub const DATABASE: &str = "cantila.db";
/// The logs store (`store::logs`), restored when the archive has one.
pub const LOGS_DATABASE: &str = crate::store::logs::FILE;
/// Files a restore writes that an existing data directory must not already have: each one
/// means a daemon (or an earlier restore) has been there, and overwriting it would lose
/// what it holds.
const STATE_FILES: [&str; 10] = [
    DATABASE,
    "cantila.db-wal",
    "cantila.db-shm",
    LOGS_DATABASE,
    "logs.db-wal",
    "logs.db-shm",
    "secret.key",
    super::RESTORED,
    super::RESTORED_DONE,
    super::RESTORED_CONFIG,
];
/// The certificates tree, which may exist only empty (a directory skeleton holds nothing).
pub const CERTS: &str = "certs";
/// The one state file an empty data directory may already hold: the installation id is
/// made by hand (or by a test) before first start; the archive's replaces it.
pub const INSTALLATION_ID: &str = "installation-id";

/// A data directory checked to hold no state.
#[derive(Debug)]
pub struct Target {
    data_dir: PathBuf,
}

impl Target {
    /// Refuses a data directory that holds state: a database, a secret key, an earlier
    /// restore's marker, or any file under `certs/`. A missing directory is fine (it is
    /// created when the restore installs).
    pub fn check(data_dir: &Path) -> Result<Self, RestoreError> {
        let mut found = Vec::new();
        for name in STATE_FILES {
            if data_dir.join(name).symlink_metadata().is_ok() {
                found.push(name.to_owned());
            }
        }
        let certs = data_dir.join(CERTS);
        if certs.symlink_metadata().is_ok()
            && holds_a_file(&certs).map_err(|source| {
                RestoreError::io(format!("reading {}", certs.display()), source)
            })?
        {
            found.push(format!("{CERTS}/ (with files in it)"));
        }
        if !found.is_empty() {
            return Err(RestoreError::NotEmpty {
                data_dir: data_dir.to_owned(),
                found,
            });
        }
        Ok(Self {
            data_dir: data_dir.to_owned(),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A fresh owner-only scratch directory beside the data directory (so every rename
    /// into place stays on one file system), removed when dropped.
    pub fn scratch(&self) -> Result<Scratch, RestoreError> {
        let parent = match self.data_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent)
            .map_err(|source| RestoreError::io(format!("creating {}", parent.display()), source))?;
        let name = self
            .data_dir
            .file_name()
            .map_or_else(|| "data".into(), |name| name.to_string_lossy());
        let path = parent.join(format!(
            ".{name}.restore-{}",
            crate::ids::random_base62(10).to_ascii_lowercase()
        ));
        create_private_dir(&path)
            .map_err(|source| RestoreError::io(format!("creating {}", path.display()), source))?;
        Ok(Scratch { path })
    }

    /// Renames each staged entry into the data directory, in order, then fsyncs the
    /// directory. `staged` must end with the database. An existing installation id or
    /// empty `certs/` is moved aside into `scratch` first; when any step fails, every
    /// step done is undone in reverse and the error returned.
    pub fn install(&self, scratch: &Scratch, staged: &[Staged]) -> Result<(), RestoreError> {
        debug_assert!(staged.last().is_some_and(|s| s.name == DATABASE));
        let created = !self.data_dir.exists();
        if created {
            create_private_dir(&self.data_dir).map_err(|source| {
                RestoreError::io(format!("creating {}", self.data_dir.display()), source)
            })?;
        }
        let aside = scratch.path.join("previous");
        let mut done: Vec<Step> = Vec::new();
        let result = (|| {
            for entry in staged {
                let dest = self.data_dir.join(entry.name);
                if dest.symlink_metadata().is_ok() {
                    std::fs::create_dir_all(&aside).map_err(|source| {
                        RestoreError::io(format!("creating {}", aside.display()), source)
                    })?;
                    let kept = aside.join(entry.name);
                    rename(&dest, &kept)?;
                    done.push(Step::MovedAside {
                        dest: dest.clone(),
                        kept,
                    });
                }
                rename(&entry.from, &dest)?;
                done.push(Step::Installed {
                    from: entry.from.clone(),
                    dest,
                });
            }
            sync_dir(&self.data_dir)
        })();
        if let Err(err) = result {
            for step in done.iter().rev() {
                let undone = match step {
                    Step::Installed { from, dest } => std::fs::rename(dest, from),
                    Step::MovedAside { dest, kept } => std::fs::rename(kept, dest),
                };
                if let Err(undo) = undone {
                    tracing::error!(error = %undo, ?step, "undoing a restore step");
                }
            }
            if created {
                let _ = std::fs::remove_dir(&self.data_dir);
            }
            return Err(err);
        }
        Ok(())
    }
}

/// One thing to move into the data directory: the staged path and its name there.
#[derive(Debug)]
pub struct Staged {
    pub from: PathBuf,
    pub name: &'static str,
}

#[derive(Debug)]
enum Step {
    Installed { from: PathBuf, dest: PathBuf },
    MovedAside { dest: PathBuf, kept: PathBuf },
}

/// The scratch directory a restore stages in; removed (with what is left in it) on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %err, "removing the restore's scratch directory");
            }
        }
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), RestoreError> {
    std::fs::rename(from, to).map_err(|source| {
        RestoreError::io(
            format!("moving {} to {}", from.display(), to.display()),
            source,
        )
    })
}

fn sync_dir(dir: &Path) -> Result<(), RestoreError> {
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| RestoreError::io(format!("syncing {}", dir.display()), source))
}

/// True when the tree under `dir` holds anything but directories.
fn holds_a_file(dir: &Path) -> std::io::Result<bool> {
    let metadata = dir.symlink_metadata()?;
    if !metadata.is_dir() {
        return Ok(true);
    }
    for entry in std::fs::read_dir(dir)? {
        if holds_a_file(&entry?.path())? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.strip_prefix(root).unwrap().display().to_string();
                if path.is_dir() {
                    out.push((format!("{name}/"), Vec::new()));
                    walk(root, &path, out);
                } else {
                    out.push((name, std::fs::read(&path).unwrap()));
                }
            }
        }
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[test]
    fn a_data_dir_with_state_is_refused_and_each_finding_named() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert!(Target::check(&data).is_ok(), "a missing directory is empty");
        std::fs::create_dir_all(data.join("certs/hosts")).unwrap();
        std::fs::write(data.join(INSTALLATION_ID), "abc").unwrap();
        std::fs::write(data.join("admin-token"), "x").unwrap();
        assert!(
            Target::check(&data).is_ok(),
            "an id and an empty certs tree are not state"
        );
        std::fs::write(data.join("certs/hosts/a.pem"), "pem").unwrap();
        std::fs::write(data.join(DATABASE), "").unwrap();
        std::fs::write(data.join("secret.key"), [0u8; 32]).unwrap();
        let err = Target::check(&data).unwrap_err();
        let RestoreError::NotEmpty { found, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            found,
            &["cantila.db", "secret.key", "certs/ (with files in it)"]
        );
        assert!(err.to_string().contains("cantila.db"), "{err}");
    }

    #[test]
    fn a_failing_install_puts_everything_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("certs")).unwrap();
        std::fs::write(data.join(INSTALLATION_ID), "old-id").unwrap();
        let before = tree(&data);
        let target = Target::check(&data).unwrap();
        let scratch = target.scratch().unwrap();
        let staged_dir = scratch.path().join("staged");
        std::fs::create_dir_all(staged_dir.join("certs/acme")).unwrap();
        std::fs::write(staged_dir.join("certs/acme/account.key"), "key").unwrap();
        std::fs::write(staged_dir.join(INSTALLATION_ID), "new-id").unwrap();
        std::fs::write(staged_dir.join("secret.key"), [1u8; 32]).unwrap();
        // The database is missing from the staging area, so its rename (the last) fails.
        let staged = [
            Staged {
                from: staged_dir.join("secret.key"),
                name: "secret.key",
            },
            Staged {
                from: staged_dir.join(INSTALLATION_ID),
                name: INSTALLATION_ID,
            },
            Staged {
                from: staged_dir.join(CERTS),
                name: CERTS,
            },
            Staged {
                from: staged_dir.join(DATABASE),
                name: DATABASE,
            },
        ];
        target.install(&scratch, &staged).unwrap_err();
        assert_eq!(tree(&data), before);

        std::fs::write(staged_dir.join(DATABASE), "db").unwrap();
        target.install(&scratch, &staged).unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join(INSTALLATION_ID)).unwrap(),
            "new-id"
        );
        assert_eq!(
            std::fs::read_to_string(data.join("certs/acme/account.key")).unwrap(),
            "key"
        );
        let scratch_path = scratch.path().to_owned();
        drop(scratch);
        assert!(!scratch_path.exists(), "the scratch directory is removed");
    }

    #[test]
    fn a_data_dir_that_did_not_exist_is_removed_again_when_the_install_fails() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("new");
        let target = Target::check(&data).unwrap();
        let scratch = target.scratch().unwrap();
        let staged = [Staged {
            from: scratch.path().join("absent"),
            name: DATABASE,
        }];
        target.install(&scratch, &staged).unwrap_err();
        assert!(!data.exists());
    }
}

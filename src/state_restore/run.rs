//! One restore, step by step: fetch the archive (a file, or an object of the `[backups.s3]`
//! bucket), open and verify it into a scratch directory beside the data directory, check
//! its database and its secret key, then move everything into place (`target`).

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    clock,
    config::Config,
    s3::ObjectStore,
    secrets::SecretBox,
    state_backup::{
        archive::{self, Manifest, Passphrase},
        remote,
    },
    store::{self, copy_summary},
};

use super::{
    target::{Staged, Target, CERTS, DATABASE, INSTALLATION_ID, LOGS_DATABASE},
    RestoreError, S3Object, Source, RESTORED, RESTORED_CONFIG,
};

/// What the operator asked for.
#[derive(Debug)]
pub struct RestoreRequest {
    pub source: Source,
    /// The data directory's old `secret.key`, which an unencrypted archive leaves out.
    pub secret_key: Option<PathBuf>,
}

/// What a restore did, for the CLI to print (and `--json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    pub data_dir: PathBuf,
    /// The source as given (a path or `s3://bucket/key`, with `latest` resolved).
    pub archive: String,
    pub sha256: String,
    pub installation_id: String,
    /// When the backup was taken (RFC 3339).
    pub backed_up_at: String,
    pub cantila_version: String,
    pub schema_version: i64,
    pub encrypted: bool,
    pub certificates: bool,
    pub accounts: Vec<String>,
    /// `handle/name`.
    pub projects: Vec<String>,
    /// `<data_dir>/restored-config.toml`, when the archive carried the config file.
    pub config_file: Option<PathBuf>,
}

/// `<data_dir>/restored.json`: what was restored, for the operator and the first start.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Marker<'a> {
    archive: &'a str,
    sha256: &'a str,
    restored_at: String,
    installation_id: &'a str,
    backed_up_at: &'a str,
}

/// Restores the archive `request` names into `config.data_dir`, which must hold no state.
/// The passphrase comes from `CANTILA_STATE_BACKUP_PASSPHRASE` or
/// `[state_backup] passphrase_file`, S3 settings from `[backups.s3]`. On any failure the
/// data directory is left as it was.
pub async fn restore(config: &Config, request: RestoreRequest) -> Result<Restored, RestoreError> {
    let target = Target::check(&config.data_dir)?;
    let passphrase = Passphrase::from_env_or_file(&config.state_backup)?;
    let given_key = match &request.secret_key {
        Some(path) => Some(read_key(path)?),
        None => None,
    };
    let scratch = target.scratch()?;
    let (archive_path, archive_name) = match &request.source {
        Source::File(path) => {
            if !path.is_file() {
                return Err(RestoreError::Source(format!(
                    "{} is not a file; give a .cstate archive, s3://BUCKET/KEY or s3://BUCKET/latest",
                    path.display()
                )));
            }
            (path.clone(), path.display().to_string())
        }
        Source::S3 { bucket, key } => {
            let dest = scratch.path().join("archive.cstate");
            let key = fetch(config, bucket, key, &dest).await?;
            (dest, format!("s3://{bucket}/{key}"))
        }
    };
    let extracted = scratch.path().join("staged");
    let opened = {
        let (archive_path, extracted) = (archive_path.clone(), extracted.clone());
        tokio::task::spawn_blocking(move || open_archive(&archive_path, passphrase, &extracted))
            .await
            .map_err(|join| {
                RestoreError::io(
                    "opening the archive".to_owned(),
                    std::io::Error::other(join.to_string()),
                )
            })??
    };
    let (sha256, manifest, summary) = opened;

    let key_file = extracted.join(archive::SECRET_KEY);
    match (manifest.encrypted, given_key) {
        (true, Some(given)) => {
            let carried = read_key(&key_file)?;
            if carried != given {
                return Err(RestoreError::SecretKey(
                    "the archive carries its own secret.key and --secret-key names a different one; leave --secret-key out"
                        .to_owned(),
                ));
            }
        }
        (true, None) => {}
        (false, Some(given)) => write_private(&key_file, &given)?,
        (false, None) => {
            return Err(RestoreError::SecretKey(
                "the archive is unencrypted, so it does not carry secret.key: pass the old server's key with --secret-key FILE (without it no sealed secret could be opened)"
                    .to_owned(),
            ))
        }
    }
    // The key must open what the database sealed with it; a wrong key file would otherwise
    // only show when the first deploy fails to open its env.
    if let Some(sample) = &summary.sealed_sample {
        let secrets = SecretBox::load_or_create(&extracted)
            .map_err(|source| RestoreError::io("reading the secret key".to_owned(), source))?;
        if secrets.open(sample).is_err() {
            return Err(RestoreError::SecretKey(
                "the secret key does not open the archive's sealed values: it is not the key of the server the backup was taken on"
                    .to_owned(),
            ));
        }
    }

    let config_from_archive = extracted.join(archive::CONFIG);
    let config_file = if config_from_archive.is_file() {
        let renamed = extracted.join(RESTORED_CONFIG);
        std::fs::rename(&config_from_archive, &renamed)
            .map_err(|source| RestoreError::io("staging the config file".to_owned(), source))?;
        // It may hold the S3 secret key: owner-only, whatever mode it came out with.
        #[cfg(unix)]
        std::fs::set_permissions(
            &renamed,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|source| RestoreError::io("staging the config file".to_owned(), source))?;
        Some(config.data_dir.join(RESTORED_CONFIG))
    } else {
        None
    };
    let marker = Marker {
        archive: &archive_name,
        sha256: &sha256,
        restored_at: clock::now(),
        installation_id: &manifest.installation_id,
        backed_up_at: &manifest.created_at,
    };
    let marker = serde_json::to_vec_pretty(&marker).unwrap_or_default();
    write_private(&extracted.join(RESTORED), &marker)?;

    let certificates = extracted.join(CERTS).is_dir();
    let mut staged = vec![
        Staged {
            from: key_file,
            name: archive::SECRET_KEY,
        },
        Staged {
            from: extracted.join(INSTALLATION_ID),
            name: INSTALLATION_ID,
        },
    ];
    if certificates {
        staged.push(Staged {
            from: extracted.join(CERTS),
            name: CERTS,
        });
    }
    if config_file.is_some() {
        staged.push(Staged {
            from: extracted.join(RESTORED_CONFIG),
            name: RESTORED_CONFIG,
        });
    }
    staged.push(Staged {
        from: extracted.join(RESTORED),
        name: RESTORED,
    });
    // The logs store goes in before the database (which must be last); an archive made
    // before it existed has none, and the first start copies the lines out of cantila.db.
    if extracted.join(LOGS_DATABASE).is_file() {
        staged.push(Staged {
            from: extracted.join(LOGS_DATABASE),
            name: LOGS_DATABASE,
        });
    }
    staged.push(Staged {
        from: extracted.join(DATABASE),
        name: DATABASE,
    });
    target.install(&scratch, &staged)?;
    Ok(Restored {
        data_dir: config.data_dir.clone(),
        archive: archive_name,
        sha256,
        installation_id: manifest.installation_id,
        backed_up_at: manifest.created_at,
        cantila_version: manifest.cantila_version,
        schema_version: manifest.schema_version,
        encrypted: manifest.encrypted,
        certificates,
        accounts: summary.accounts,
        projects: summary
            .projects
            .into_iter()
            .map(|(handle, name)| format!("{handle}/{name}"))
            .collect(),
        config_file,
    })
}

/// Hashes the archive, extracts it into `into` and checks its database: sound, and of a
/// schema this binary knows. Blocking.
fn open_archive(
    path: &Path,
    passphrase: Option<Passphrase>,
    into: &Path,
) -> Result<(String, Manifest, copy_summary::CopySummary), RestoreError> {
    let sha256 = archive::sha256_of(path)
        .map_err(|source| RestoreError::io(format!("reading {}", path.display()), source))?;
    std::fs::create_dir(into)
        .map_err(|source| RestoreError::io(format!("creating {}", into.display()), source))?;
    let manifest = archive::extract(path, passphrase.as_ref(), into)?;
    let database = into.join(DATABASE);
    let inspection = store::inspect(&database).map_err(|err| {
        RestoreError::Database(format!(
            "the database in the archive fails its check: {err}"
        ))
    })?;
    if inspection.schema_version > inspection.latest {
        return Err(RestoreError::Database(format!(
            "the database in the archive has schema version {}, newer than this binary knows ({}); restore it with the Cantila version that made it ({}) or a newer one",
            inspection.schema_version, inspection.latest, manifest.cantila_version
        )));
    }
    let logs = into.join(LOGS_DATABASE);
    if logs.is_file() {
        let inspection = store::logs::inspect(&logs).map_err(|err| {
            RestoreError::Database(format!(
                "the logs database in the archive fails its check: {err}"
            ))
        })?;
        if inspection.schema_version > inspection.latest {
            return Err(RestoreError::Database(format!(
                "the logs database in the archive has schema version {}, newer than this binary knows ({}); restore it with the Cantila version that made it ({}) or a newer one",
                inspection.schema_version, inspection.latest, manifest.cantila_version
            )));
        }
    }
    let summary = copy_summary::summarize(&database).map_err(|err| {
        RestoreError::Database(format!("reading the database in the archive: {err}"))
    })?;
    Ok((sha256, manifest, summary))
}

/// Downloads the object (the newest state backup for `latest`) to `dest`, checked against
/// the SHA-256 its upload recorded. Returns the object's key.
async fn fetch(
    config: &Config,
    bucket: &str,
    key: &S3Object,
    dest: &Path,
) -> Result<String, RestoreError> {
    let s3 = &config.backups.s3;
    if !s3.enabled {
        return Err(RestoreError::S3(
            "an s3:// source needs [backups.s3] in the config file (enabled, endpoint, bucket, credentials); pass it with --config".to_owned(),
        ));
    }
    if s3.bucket != bucket {
        return Err(RestoreError::S3(format!(
            "the source names bucket `{bucket}`, but [backups.s3] is set up for bucket `{}`",
            s3.bucket
        )));
    }
    let store = ObjectStore::new(s3).map_err(RestoreError::S3)?;
    let key = match key {
        S3Object::Key(key) => key.clone(),
        S3Object::Latest => remote::latest(&store, &s3.prefix)
            .await
            .map_err(|err| RestoreError::S3(format!("listing s3://{bucket}/{}: {err}", s3.prefix)))?
            .ok_or_else(|| {
                RestoreError::S3(format!(
                    "there is no state backup under s3://{bucket}/{}state/",
                    s3.prefix
                ))
            })?,
    };
    remote::download(&store, &key, dest)
        .await
        .map_err(|err| RestoreError::S3(format!("fetching s3://{bucket}/{key}: {err}")))?;
    Ok(key)
}

/// A 32-byte key file.
fn read_key(path: &Path) -> Result<Vec<u8>, RestoreError> {
    let key = std::fs::read(path)
        .map_err(|source| RestoreError::io(format!("reading {}", path.display()), source))?;
    if key.len() != 32 {
        return Err(RestoreError::SecretKey(format!(
            "{} is not a secret key (it has {} bytes; a key has 32)",
            path.display(),
            key.len()
        )));
    }
    Ok(key)
}

/// Writes a new owner-only file and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), RestoreError> {
    let writing = |source| RestoreError::io(format!("writing {}", path.display()), source);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(writing)?;
    file.write_all(bytes).map_err(writing)?;
    file.sync_all().map_err(writing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain archive of a data directory whose database claims its schema version plus
    /// `bump`.
    fn archive_with_schema(root: &Path, bump: i64) -> PathBuf {
        let data_dir = root.join("data");
        let store = store::Store::open(&data_dir).unwrap();
        let copy = root.join("copy.db");
        let version = store.snapshot_to(&copy).unwrap();
        let connection = rusqlite::Connection::open(&copy).unwrap();
        connection
            .pragma_update(None, "user_version", version + bump)
            .unwrap();
        drop(connection);
        std::fs::write(data_dir.join(INSTALLATION_ID), "old-server").unwrap();
        let out = root.join("state.cstate");
        archive::write(
            &out,
            &archive::ArchiveInputs {
                data_dir,
                database: copy,
                schema_version: version + bump,
                logs_database: None,
                config_text: None,
                created_at: time::OffsetDateTime::now_utc(),
            },
            None,
        )
        .unwrap();
        out
    }

    #[test]
    fn a_database_newer_than_this_binary_is_refused_and_a_known_one_summarised() {
        let dir = tempfile::tempdir().unwrap();
        let newer = archive_with_schema(dir.path(), 1);
        let err = open_archive(&newer, None, &dir.path().join("newer")).unwrap_err();
        assert!(
            matches!(&err, RestoreError::Database(message) if message.contains("newer than this binary knows")),
            "{err}"
        );

        let other = tempfile::tempdir().unwrap();
        let known = archive_with_schema(other.path(), 0);
        let (sha256, manifest, summary) =
            open_archive(&known, None, &other.path().join("known")).unwrap();
        assert_eq!(sha256, archive::sha256_of(&known).unwrap());
        assert_eq!(manifest.installation_id, "old-server");
        assert!(!manifest.encrypted);
        assert_eq!(summary.accounts, Vec::<String>::new());
    }
}

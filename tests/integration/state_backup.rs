//! Backups of Cantila's own state, against the real daemon, the real `cantila` binary and
//! a real S3-compatible server (moto, started by `scripts/ensure-s3.sh`): `cantila admin
//! backup` beside a daemon taking a stream of writes gives an encrypted archive whose
//! database is sound and whose copy in S3 is uploaded, verified and found as the latest;
//! scheduled state backups fire and retention prunes the old ones here and in S3; the API
//! is the operator's account's only, and without a passphrase the archive leaves the
//! secrets out.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use cantila::{
    names::Scope,
    s3::ObjectStore,
    state_backup::{
        archive::{self, Passphrase},
        remote,
    },
};
use serde_json::{json, Value};

use crate::{
    backup_s3::{s3_config, s3_endpoint, TestBucket},
    support::{wait_for, TestDaemon},
};

const PASSPHRASE: &str = "a passphrase for the tests";

/// The number of rows of `table` in the SQLite file at `path`.
fn count_rows(path: &Path, table: &str) -> i64 {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
}

async fn projects_count(daemon: &TestDaemon) -> usize {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/projects?limit=200&cursor={cursor}"),
            None => "/v1/projects?limit=200".to_owned(),
        };
        let page = daemon
            .get(&path, &daemon.admin_token)
            .await
            .expect(200)
            .body;
        count += page["projects"].as_array().unwrap().len();
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return count,
        }
    }
}

#[tokio::test]
async fn admin_backup_under_write_load_is_sound_encrypted_and_copied_to_s3() {
    let bucket = TestBucket::create().await;
    let daemon = TestDaemon::start_with(|config| {
        s3_config(config, s3_endpoint(), bucket.name());
    })
    .await;
    let daemon = Arc::new(daemon);

    // Writers hammer the API (projects and env vars) for as long as the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (daemon, stop, written) = (daemon.clone(), stop.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) || n < 3 {
                let project = daemon.create_project(&format!("load-{writer}-{n}")).await;
                let id = project["id"].as_str().unwrap();
                daemon
                    .post(
                        &format!("/v1/projects/{id}/env"),
                        &daemon.admin_token,
                        json!({ "vars": { "SECRET": { "value": "s3cr3t", "secret": true } } }),
                    )
                    .await
                    .expect(200);
                written.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
        }));
    }
    // The backup starts once the writers are going.
    wait_for(
        Duration::from_secs(60),
        "the writers' first projects",
        || {
            let written = written.clone();
            async move { (written.load(Ordering::SeqCst) >= 4).then_some(()) }
        },
    )
    .await;
    let before = projects_count(&daemon).await;

    // The binary, as the operator runs it on the server: its own config file with the
    // bucket, the secrets from the environment.
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("cantila.toml");
    let s3 = &daemon.config.backups.s3;
    std::fs::write(
        &config_file,
        format!(
            "data_dir = {:?}\n[backups.s3]\nenabled = true\nendpoint = {:?}\nbucket = {:?}\npath_style = true\naccess_key_id = {:?}\n",
            daemon.data_dir(),
            s3.endpoint,
            s3.bucket,
            s3.access_key_id,
        ),
    )
    .unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cantila"))
        .args(["admin", "backup", "--json", "--config"])
        .arg(&config_file)
        .env("CANTILA_STATE_BACKUP_PASSPHRASE", PASSPHRASE)
        .env(
            "CANTILA_BACKUP_S3_SECRET_ACCESS_KEY",
            s3.secret_access_key.as_deref().unwrap(),
        )
        .output()
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    let after = projects_count(&daemon).await;
    assert!(
        output.status.success(),
        "cantila admin backup: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(shown["trigger"], "manual");
    assert_eq!(shown["encrypted"], true);
    assert_eq!(shown["note"], Value::Null);
    assert_eq!(shown["remote"]["status"], "uploaded", "{shown}");
    let id = shown["id"].as_str().unwrap();
    let key = format!("cantila/state/{id}.cstate");
    assert_eq!(shown["remote"]["key"], key.as_str());
    let path = std::path::PathBuf::from(shown["path"].as_str().unwrap());
    assert_eq!(
        path,
        daemon
            .data_dir()
            .join("state-backups")
            .join(format!("{id}.cstate"))
    );

    // The file is what the record says, and the copy in the bucket is byte-equal.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(shown["sizeBytes"], bytes.len() as u64);
    assert_eq!(
        shown["sha256"].as_str().unwrap(),
        archive::sha256_of(&path).unwrap()
    );
    assert_eq!(bucket.get(&key).await.as_deref(), Some(bytes.as_slice()));
    assert!(!bytes.windows(6).any(|w| w == b"s3cr3t"));

    // The daemon lists what the CLI took.
    let listed = daemon
        .get("/v1/admin/state-backups", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(listed["stateBackups"][0]["id"], id);
    assert_eq!(listed["stateBackups"][0]["remote"]["status"], "uploaded");

    // The archive opens with the passphrase, and its database is a sound point in time
    // between the counts taken before and after the backup.
    let into = tempfile::tempdir().unwrap();
    let passphrase = Passphrase::new(PASSPHRASE).unwrap();
    let manifest = archive::extract(&path, Some(&passphrase), into.path()).unwrap();
    assert!(manifest.encrypted);
    for member in ["cantila.db", "installation-id", "secret.key", "config.toml"] {
        assert!(
            manifest.includes.iter().any(|m| m == member),
            "{member} in {:?}",
            manifest.includes
        );
    }
    assert_eq!(
        std::fs::read(into.path().join("secret.key")).unwrap(),
        std::fs::read(daemon.data_dir().join("secret.key")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(into.path().join("config.toml")).unwrap(),
        std::fs::read_to_string(&config_file).unwrap()
    );
    assert_eq!(
        manifest.installation_id,
        std::fs::read_to_string(daemon.data_dir().join("installation-id"))
            .unwrap()
            .trim()
    );
    let database = into.path().join("cantila.db");
    let inspection = cantila::store::inspect(&database).unwrap();
    assert_eq!(inspection.schema_version, inspection.latest);
    assert_eq!(manifest.schema_version, inspection.latest);
    let projects = count_rows(&database, "projects") as usize;
    assert!(
        (before..=after).contains(&projects),
        "{before} <= {projects} <= {after}"
    );
    // The env var written with each project is in the copy too, sealed.
    assert!(count_rows(&database, "env_vars") > 0);

    // The bucket's newest state backup is this one, and its download checks out.
    let store = ObjectStore::new(&daemon.config.backups.s3).unwrap();
    let prefix = &daemon.config.backups.s3.prefix;
    assert_eq!(
        remote::latest(&store, prefix).await.unwrap().as_deref(),
        Some(key.as_str())
    );
    let fetched = dir.path().join("fetched.cstate");
    let sha = remote::download(&store, &key, &fetched).await.unwrap();
    assert_eq!(sha, shown["sha256"].as_str().unwrap());
    let daemon = Arc::into_inner(daemon).expect("the writers are done");
    crate::data::remove_installation_volumes(&daemon).await;
}

/// The state backups the daemon lists.
async fn listed(daemon: &TestDaemon) -> Vec<Value> {
    daemon
        .get("/v1/admin/state-backups", &daemon.admin_token)
        .await
        .expect(200)
        .body["stateBackups"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn scheduled_state_backups_fire_and_keep_prunes_here_and_in_s3() {
    let bucket = TestBucket::create().await;
    let dir = tempfile::tempdir().unwrap();
    let passphrase_file = dir.path().join("passphrase");
    std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
    let daemon = TestDaemon::start_with(|config| {
        s3_config(config, s3_endpoint(), bucket.name());
        config.state_backup.schedule = "every 1m".to_owned();
        config.state_backup.keep = 1;
        config.state_backup.passphrase_file = Some(passphrase_file.clone());
    })
    .await;

    // A manual one first, which the next scheduled one prunes (keep = 1).
    let started = daemon
        .post("/v1/admin/state-backups", &daemon.admin_token, json!({}))
        .await
        .expect(202)
        .body;
    assert_eq!(started["status"], "running");
    assert_eq!(started["trigger"], "manual");
    assert_eq!(started["encrypted"], true);
    let manual = started["id"].as_str().unwrap().to_owned();
    let manual_key = wait_for(Duration::from_secs(60), "the manual state backup", || {
        let daemon = &daemon;
        let manual = manual.clone();
        async move {
            listed(daemon)
                .await
                .into_iter()
                .find(|b| b["id"] == manual.as_str() && b["remote"]["status"] == "uploaded")
                .map(|b| b["remote"]["key"].as_str().unwrap().to_owned())
        }
    })
    .await;
    let manual_file = daemon
        .data_dir()
        .join("state-backups")
        .join(format!("{manual}.cstate"));
    assert!(manual_file.exists());
    assert!(bucket.get(&manual_key).await.is_some());

    // `every 1m` fires at the next minute: within 60 s, plus the backup itself.
    let scheduled = wait_for(Duration::from_secs(150), "a scheduled state backup", || {
        let daemon = &daemon;
        async move {
            listed(daemon).await.into_iter().find(|b| {
                b["trigger"] == "scheduled"
                    && b["status"] == "completed"
                    && b["remote"]["status"] == "uploaded"
            })
        }
    })
    .await;
    assert_eq!(scheduled["encrypted"], true, "{scheduled}");
    // Retention ran after it: the manual one is gone from the list, the disk and S3.
    wait_for(
        Duration::from_secs(30),
        "the manual state backup pruned",
        || {
            let daemon = &daemon;
            let manual = manual.clone();
            async move {
                (!listed(daemon)
                    .await
                    .iter()
                    .any(|b| b["id"] == manual.as_str()))
                .then_some(())
            }
        },
    )
    .await;
    assert!(!manual_file.exists());
    assert_eq!(bucket.get(&manual_key).await, None);
    let key = scheduled["remote"]["key"].as_str().unwrap();
    assert!(bucket.get(key).await.is_some());
}

#[tokio::test]
async fn state_backups_are_the_operators_and_plain_ones_leave_secrets_out() {
    let daemon = TestDaemon::start().await;
    let other = daemon.other_account_token("mallory", Scope::Admin);
    let read = daemon.token("read").await;
    for (token, status) in [(other.as_str(), 404), (read.as_str(), 403)] {
        assert_eq!(
            daemon.get("/v1/admin/state-backups", token).await.status,
            status
        );
        assert_eq!(
            daemon
                .post("/v1/admin/state-backups", token, json!({}))
                .await
                .status,
            status
        );
    }
    assert!(listed(&daemon).await.is_empty());

    // No passphrase: a plain archive without secret.key or certificates, and says so.
    let started = daemon
        .post("/v1/admin/state-backups", &daemon.admin_token, json!({}))
        .await
        .expect(202)
        .body;
    assert_eq!(started["encrypted"], false);
    let id = started["id"].as_str().unwrap().to_owned();
    let audit = daemon
        .get("/v1/audit", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "state_backup.create" && e["target"] == id.as_str()),
        "{audit}"
    );
    let done = wait_for(Duration::from_secs(60), "the state backup", || {
        let daemon = &daemon;
        let id = id.clone();
        async move {
            listed(daemon)
                .await
                .into_iter()
                .find(|b| b["id"] == id.as_str() && b["status"] != "running")
        }
    })
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["remote"]["status"], "none");
    let note = done["note"].as_str().unwrap();
    assert!(
        note.starts_with("unencrypted: secret.key and certificates left out; keep ")
            && note.ends_with("secret.key yourself"),
        "{note}"
    );
    let path = daemon
        .data_dir()
        .join("state-backups")
        .join(format!("{id}.cstate"));
    let into = tempfile::tempdir().unwrap();
    let manifest = archive::extract(&path, None, into.path()).unwrap();
    assert!(!manifest.encrypted);
    // The logs store is carried too (its own schema version in the manifest).
    assert_eq!(
        manifest.includes,
        ["cantila.db", "logs.db", "installation-id"]
    );
    assert_eq!(manifest.logs_schema_version, Some(1));
    assert!(into.path().join("logs.db").is_file());
    assert!(!into.path().join("secret.key").exists());
    assert!(!into.path().join("certs").exists());
    // The other account's 404 is not for lack of state backups.
    assert_eq!(
        daemon.get("/v1/admin/state-backups", &other).await.status,
        404
    );
}

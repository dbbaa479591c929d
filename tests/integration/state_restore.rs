//! `cantila admin restore` and the first start after it: a restore into a new data
//! directory reproduces every table of the backed-up store row by row (taken under write
//! load), a wrong passphrase or a data directory with state changes nothing, the newest
//! state backup in S3 restores, and the takeover guard refuses to start beside the
//! original installation's containers unless told to take over.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
};

use cantila::{
    s3::ObjectStore,
    state_backup::{archive, remote},
    store::Store,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    backup_s3::{s3_config, s3_endpoint, TestBucket},
    cli::cantila,
    support::{docker, test_config, wait_until, BinaryDaemon, TestDaemon, TestDir},
};

/// A table's rows, each its values spelled out (see `tables`).
pub type Rows = BTreeSet<Vec<String>>;
/// Every table by name.
pub type Tables = BTreeMap<String, Rows>;
/// The rows of one table found on one side only: `(only in a, only in b)`.
pub type OneSided = (Vec<Vec<String>>, Vec<Vec<String>>);

/// Every table of the SQLite file at `path` (all of `sqlite_master`'s tables, SQLite's
/// own `sqlite_sequence` included), each as the set of its rows, each row its columns'
/// values spelled with their storage class so `1` and `'1'` differ.
pub fn tables(path: &Path) -> Tables {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
    let names: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|name| {
            let mut statement = connection
                .prepare(&format!("SELECT * FROM \"{name}\""))
                .unwrap();
            let width = statement.column_count();
            let rows: Rows = statement
                .query_map([], |row| {
                    (0..width)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => "null".to_owned(),
                                rusqlite::types::ValueRef::Integer(n) => format!("int:{n}"),
                                rusqlite::types::ValueRef::Real(x) => format!("real:{x}"),
                                rusqlite::types::ValueRef::Text(t) => {
                                    format!("text:{}", String::from_utf8_lossy(t))
                                }
                                rusqlite::types::ValueRef::Blob(b) => {
                                    format!("blob:{}", hex::encode(b))
                                }
                            })
                        })
                        .collect()
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (name, rows)
        })
        .collect()
}

/// The rows that differ between two table sets, per table: `(only in a, only in b)`.
/// Tables present on one side only count all their rows.
pub fn table_differences(a: &Tables, b: &Tables) -> BTreeMap<String, OneSided> {
    let empty = BTreeSet::new();
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (rows_a, rows_b) = (a.get(name).unwrap_or(&empty), b.get(name).unwrap_or(&empty));
            let only_a: Vec<_> = rows_a.difference(rows_b).cloned().collect();
            let only_b: Vec<_> = rows_b.difference(rows_a).cloned().collect();
            (!only_a.is_empty() || !only_b.is_empty()).then(|| (name.clone(), (only_a, only_b)))
        })
        .collect()
}

#[test]
fn the_table_comparison_sees_a_changed_a_missing_and_an_extra_row() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, rows: &[(i64, &str)]| {
        let path = dir.path().join(name);
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, v); CREATE TABLE u (x);")
            .unwrap();
        for (n, v) in rows {
            connection
                .execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![n, v])
                .unwrap();
        }
        path
    };
    let a = tables(&make("a.db", &[(1, "one"), (2, "two"), (3, "three")]));
    let b = tables(&make("b.db", &[(1, "one"), (2, "TWO"), (4, "four")]));
    assert!(table_differences(&a, &a).is_empty());
    let diff = table_differences(&a, &b);
    assert_eq!(diff.keys().collect::<Vec<_>>(), ["t"]);
    let (only_a, only_b) = &diff["t"];
    assert_eq!(only_a.len(), 2, "{only_a:?}");
    assert_eq!(only_b.len(), 2, "{only_b:?}");
    assert!(only_b.contains(&vec!["int:2".to_owned(), "text:TWO".to_owned()]));
}

/// A container labelled with `installation`, as the original server's daemon leaves its
/// instances running; `TestDir`'s drop removes it with the rest of the installation.
fn original_container(installation: &str) -> String {
    docker(
        None,
        &[
            "run",
            "-d",
            "--label",
            &format!("cantila.installation={installation}"),
            "busybox:latest",
            "sleep",
            "600",
        ],
    )
    .expect("start a container of the original installation")
    .trim()
    .to_owned()
}

#[tokio::test]
async fn a_restored_data_dir_refuses_to_start_beside_the_originals_containers_unless_taking_over() {
    let dir = TestDir::new();
    let installation = dir.installation().to_owned();
    let config = test_config(dir.path());
    std::fs::write(
        config.data_dir.join("restored.json"),
        r#"{"archive":"test"}"#,
    )
    .unwrap();
    let container = original_container(&installation);

    // The refusal comes before anything is served; the shutdown future is ready at once,
    // so a daemon that wrongly starts stops again and `run` returns Ok.
    let listeners = cantila::Listeners::ephemeral().await.unwrap();
    let refused = cantila::run(config.clone(), listeners, std::future::ready(()))
        .await
        .expect_err("a restored installation must not start beside its original's containers");
    let message = format!("{refused:#}");
    assert!(
        message.contains("1 container(s) (1 running)")
            && message.contains(&installation)
            && message.contains("--take-over")
            && message.contains("CANTILA_TAKE_OVER=1"),
        "{message}"
    );
    assert!(config.data_dir.join("restored.json").exists());
    assert!(!config.data_dir.join("restored-done.json").exists());

    // The real binary, told to take over through the environment, starts and marks the
    // restore as started; the original's container is still there to be adopted.
    let config_file = dir.path().join("serve.toml");
    std::fs::write(
        &config_file,
        format!(
            "data_dir = {:?}\napi_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n[deploy]\nnetwork = {:?}\n",
            config.data_dir.display().to_string(),
            config.deploy.network
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let daemon = BinaryDaemon::start_from_file_with_env(
        &config_file,
        &config.data_dir,
        &log,
        "info",
        &[("CANTILA_TAKE_OVER", "1")],
    )
    .await;
    let (status, _) = daemon
        .call(reqwest::Method::GET, "/v1/account", serde_json::Value::Null)
        .await;
    assert_eq!(status, 200);
    assert!(!config.data_dir.join("restored.json").exists());
    assert!(config.data_dir.join("restored-done.json").exists());
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("taking over the containers of the restored installation"));
    drop(daemon);
    assert!(docker(None, &["inspect", &container]).is_ok());

    // Once started, the marker is gone: later starts are ordinary, containers or not.
    let daemon = TestDaemon::start_in(dir, config).await;
    daemon
        .get("/v1/account", &daemon.admin_token)
        .await
        .expect(200);
}

const PASSPHRASE: &str = "correct horse battery staple";

/// A state backup of the daemon's data directory, taken as `cantila admin backup` takes it
/// (a second connection to the live store, SQLite's online backup, the archive beside it),
/// encrypted with `passphrase`. Returns the archive's path.
async fn state_backup(data_dir: &Path, out: &Path, passphrase: Option<&str>) -> PathBuf {
    let (data_dir, out) = (data_dir.to_owned(), out.to_owned());
    let passphrase = passphrase.map(|p| archive::Passphrase::new(p).unwrap());
    tokio::task::spawn_blocking(move || {
        let store = Store::open(&data_dir).unwrap();
        let copy = out.with_extension("db");
        let schema_version = store.snapshot_to(&copy).unwrap();
        let logs_copy = out.with_extension("logs.db");
        let logs_database = store
            .snapshot_logs_to(&logs_copy)
            .unwrap()
            .map(|version| (logs_copy.clone(), version));
        archive::write(
            &out,
            &archive::ArchiveInputs {
                data_dir: data_dir.clone(),
                database: copy.clone(),
                schema_version,
                logs_database,
                config_text: Some("base_domain = \"restored.example\"\n".to_owned()),
                created_at: time::OffsetDateTime::now_utc(),
            },
            passphrase.as_ref(),
        )
        .unwrap();
        std::fs::remove_file(&copy).unwrap();
        let _ = std::fs::remove_file(&logs_copy);
        out
    })
    .await
    .unwrap()
}

/// Runs `cantila admin restore` on `data_dir` with the passphrase in its environment.
async fn admin_restore(
    data_dir: &Path,
    args: &[&str],
    passphrase: Option<&str>,
) -> std::process::Output {
    let mut all = vec![
        "admin".to_owned(),
        "restore".to_owned(),
        "--data-dir".to_owned(),
        data_dir.display().to_string(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let envs = passphrase
        .map(|p| vec![("CANTILA_STATE_BACKUP_PASSPHRASE", p.to_owned())])
        .unwrap_or_default();
    cantila(all, envs).await
}

/// Everything under `dir`: each path with its bytes (directories with none), sorted.
fn snapshot_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
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
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// The writers' marker: every project the load creates is named `load-<writer>-<n>`.
const LOAD: &str = "load-";

/// True when a row was written by the load: one of its values names a load project (by
/// name or id).
fn is_load_row(row: &[String], load_ids: &BTreeSet<String>) -> bool {
    row.iter()
        .any(|value| value.contains(LOAD) || load_ids.iter().any(|id| value.contains(id)))
}

#[tokio::test]
async fn a_state_backup_taken_under_write_load_restores_every_table_row_by_row() {
    let daemon = TestDaemon::start().await;
    let admin = daemon.admin_token.clone();
    // What the operator set up: projects with env (secret and plain), an alias, a volume,
    // a backup schedule, tokens, a second account, and a certificate on disk.
    let project = daemon.create_project("keeper").await;
    let id = project["id"].as_str().unwrap().to_owned();
    daemon
        .post(
            &format!("/v1/projects/{id}/env"),
            &admin,
            json!({ "vars": { "GREETING": { "value": "hello from before", "secret": true }, "PLAIN": "kept" } }),
        )
        .await
        .expect(200);
    daemon
        .post(
            &format!("/v1/projects/{id}/aliases"),
            &admin,
            json!({ "hostname": "keeper.example.com" }),
        )
        .await
        .expect(201);
    daemon
        .post(
            &format!("/v1/projects/{id}/volumes"),
            &admin,
            json!({ "name": "uploads", "mountPath": "/srv/uploads" }),
        )
        .await
        .expect(201);
    daemon
        .request(Method::PUT, &format!("/v1/projects/{id}/backups/schedule"))
        .bearer_auth(&admin)
        .json(&json!({ "schedule": "daily at 03:00" }))
        .send()
        .await
        .unwrap();
    let deploy_token = daemon.token("deploy").await;
    let other = daemon.other_account_token("ada", cantila::names::Scope::Admin);
    daemon
        .post("/v1/projects", &other, json!({ "name": "adas" }))
        .await
        .expect(201);
    // An access line of the edge (the project's status page answers its hostname), kept in
    // `logs.db`: the restored server shows it.
    reqwest::Client::new()
        .get(format!("http://{}/before-the-backup", daemon.http))
        .header("host", "keeper.admin.test.local")
        .send()
        .await
        .unwrap();
    let logs_path = format!("/v1/projects/{id}/logs?q=before-the-backup");
    wait_until(
        std::time::Duration::from_secs(30),
        "the access line is stored",
        || async {
            daemon.get(&logs_path, &admin).await.expect(200).body["lines"]
                .as_array()
                .is_some_and(|lines| !lines.is_empty())
        },
    )
    .await;
    let manual = daemon.data_dir().join("certs/manual");
    std::fs::create_dir_all(&manual).unwrap();
    std::fs::write(
        manual.join("keeper.example.com.pem"),
        "-----BEGIN test-----\n",
    )
    .unwrap();

    // The load: writers create projects and set their env, each in order, until told to
    // stop; the backup starts once some of their writes are in.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let (first_writes_tx, mut first_writes) = tokio::sync::watch::channel(0usize);
    let first_writes_tx = Arc::new(first_writes_tx);
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (url, token) = (daemon.url(""), admin.clone());
        let (stop, written, notify) = (stop.clone(), written.clone(), first_writes_tx.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut ids = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let created: Value = client
                    .post(format!("{url}/v1/projects"))
                    .bearer_auth(&token)
                    .json(&json!({ "name": format!("{LOAD}{writer}-{n}") }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let project = created["id"]
                    .as_str()
                    .expect("load project created")
                    .to_owned();
                let status = client
                    .post(format!("{url}/v1/projects/{project}/env"))
                    .bearer_auth(&token)
                    .json(&json!({ "vars": { "N": n.to_string() } }))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200);
                ids.push(project);
                n += 1;
                let total = written.fetch_add(1, Ordering::SeqCst) + 1;
                notify.send_replace(total);
            }
            ids
        }));
    }
    first_writes.wait_for(|n| *n >= 8).await.unwrap();
    // `cantila admin backup`, the real command, beside the running daemon and its writers.
    let archives = tempfile::tempdir().unwrap();
    let archive_path = archives.path().join("state.cstate");
    let config_text = "# the original server's settings\nbase_domain = \"test.local\"\n";
    let config_file = archives.path().join("cantila.toml");
    std::fs::write(&config_file, config_text).unwrap();
    let backup = cantila(
        vec![
            "admin".into(),
            "backup".into(),
            "--config".into(),
            config_file.display().to_string(),
            "--data-dir".into(),
            daemon.data_dir().display().to_string(),
            "--out".into(),
            archive_path.display().to_string(),
            "--json".into(),
        ],
        vec![("CANTILA_STATE_BACKUP_PASSPHRASE", PASSPHRASE.to_owned())],
    )
    .await;
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let backup: Value = serde_json::from_slice(&backup.stdout).unwrap();
    let backup_id = format!("text:{}", backup["id"].as_str().unwrap());
    let during = written.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let mut load_ids = BTreeSet::new();
    for writer in writers {
        load_ids.extend(writer.await.unwrap());
    }
    eprintln!(
        "load: {during} writes in when the backup finished, {} in all",
        load_ids.len()
    );
    let original_key = std::fs::read(daemon.data_dir().join("secret.key")).unwrap();
    let original_token = std::fs::read(daemon.config.admin_token_path()).unwrap();
    let (original_dir, original_config) = daemon.stop().await;
    let original = tables(&original_config.database_path());

    // The new server: a fresh data directory (with only an installation id in it).
    let new_dir = TestDir::new();
    let mut config = test_config(new_dir.path());
    let restored = admin_restore(
        &config.data_dir,
        &[archive_path.to_str().unwrap(), "--json"],
        Some(PASSPHRASE),
    )
    .await;
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let report: Value = serde_json::from_slice(&restored.stdout).unwrap();
    assert_eq!(report["installationId"], original_dir.installation());
    assert!(report["accounts"]
        .as_array()
        .unwrap()
        .contains(&json!("ada")));
    assert!(report["projects"]
        .as_array()
        .unwrap()
        .contains(&json!("admin/keeper")));

    let copy = tables(&config.database_path());
    let differences = table_differences(&original, &copy);
    let mut load_rows_restored = 0;
    for (table, (only_original, only_copy)) in &differences {
        if table == "sqlite_sequence" {
            // AUTOINCREMENT counters: the copy's may only trail the original's.
            for row in only_copy {
                let newer = original["sqlite_sequence"]
                    .iter()
                    .find(|r| r[0] == row[0])
                    .unwrap_or_else(|| panic!("{row:?} has no counter in the original"));
                let number = |v: &str| v.trim_start_matches("int:").parse::<i64>().unwrap();
                assert!(number(&row[1]) <= number(&newer[1]), "{row:?} vs {newer:?}");
            }
            continue;
        }
        if table == "state_backups" {
            // The backup's own record: `running` in the copy it was taken into, completed
            // (with size and SHA-256) in the original. No other state backup differs.
            for row in only_original.iter().chain(only_copy) {
                assert!(row.contains(&backup_id), "state_backups: {row:?}");
            }
            assert_eq!((only_original.len(), only_copy.len()), (1, 1));
            continue;
        }
        if table.starts_with("sqlite_stat") {
            // The query planner's statistics, which `PRAGMA optimize` rewrites when the
            // daemon stops: SQLite's notes about the data, not data.
            continue;
        }
        for row in only_original.iter().chain(only_copy) {
            assert!(
                is_load_row(row, &load_ids),
                "table {table}: a row that is not the load's differs: {row:?}"
            );
        }
        assert!(
            only_copy.is_empty() || table == "projects",
            "table {table}: rows only in the copy: {only_copy:?}"
        );
    }
    // The copy is one point in time: each writer's projects and env writes that made it
    // are a prefix of what it wrote, and each env write's project is there.
    let names: BTreeSet<String> = copy["projects"]
        .iter()
        .filter_map(|row| row.iter().find(|v| v.starts_with(&format!("text:{LOAD}"))))
        .map(|v| v.trim_start_matches("text:").to_owned())
        .collect();
    for writer in 0..4 {
        let count = names
            .iter()
            .filter(|name| name.starts_with(&format!("{LOAD}{writer}-")))
            .count();
        load_rows_restored += count;
        for n in 0..count {
            assert!(
                names.contains(&format!("{LOAD}{writer}-{n}")),
                "writer {writer}: project {n} is missing below {count}: {names:?}"
            );
        }
    }
    assert!(
        load_rows_restored >= 8,
        "the writes before the backup are in the copy"
    );
    eprintln!(
        "restored {load_rows_restored} of {} load projects; {} tables compared",
        load_ids.len(),
        original.len()
    );

    // The files beside the database: the key, the certificate, the config, the markers.
    assert_eq!(
        std::fs::read(config.data_dir.join("secret.key")).unwrap(),
        original_key
    );
    assert_eq!(
        std::fs::read_to_string(config.data_dir.join("certs/manual/keeper.example.com.pem"))
            .unwrap(),
        "-----BEGIN test-----\n"
    );
    assert_eq!(
        std::fs::read_to_string(config.data_dir.join("restored-config.toml")).unwrap(),
        config_text
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&config.data_dir.join("restored-config.toml")), 0o600);
    assert_eq!(mode(&config.data_dir.join("secret.key")), 0o600);
    let marker: Value =
        serde_json::from_slice(&std::fs::read(config.data_dir.join("restored.json")).unwrap())
            .unwrap();
    assert_eq!(marker["sha256"], report["sha256"]);
    let leftovers: Vec<_> = std::fs::read_dir(new_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".restore-"))
        .collect();
    assert!(leftovers.is_empty(), "scratch left behind: {leftovers:?}");

    // The restored daemon starts (no container of the installation runs) and serves the
    // old tokens and the sealed env.
    std::fs::write(config.admin_token_path(), &original_token).unwrap();
    config.base_domain = original_config.base_domain.clone();
    let daemon = TestDaemon::start_in(new_dir, config).await;
    assert!(daemon.data_dir().join("restored-done.json").exists());
    let env = daemon
        .get(&format!("/v1/projects/{id}/env"), &deploy_token)
        .await
        .expect(200)
        .body;
    assert!(env.to_string().contains("kept"), "{env}");
    daemon
        .get("/v1/projects/by-handle/ada/adas", &other)
        .await
        .expect(200);
    // The logs came back with the state: the line from before the backup is read.
    let lines = daemon.get(&logs_path, &deploy_token).await.expect(200).body;
    let texts: Vec<&str> = lines["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|line| line["line"].as_str())
        .collect();
    assert!(
        texts.len() == 1 && texts[0].starts_with("GET /before-the-backup "),
        "{lines}"
    );
    assert!(daemon.data_dir().join("logs.db").is_file());
    drop(daemon);
    drop(original_dir);
}

/// No `.restore-` scratch directory is left beside `data_dir`.
fn assert_no_scratch_beside(data_dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(data_dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".restore-"))
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

#[tokio::test]
async fn a_failed_restore_writes_nothing_and_says_why() {
    let daemon = TestDaemon::start().await;
    let project = daemon.create_project("precious").await;
    let id = project["id"].as_str().unwrap();
    daemon
        .post(
            &format!("/v1/projects/{id}/env"),
            &daemon.admin_token,
            json!({ "vars": { "TOKEN": { "value": "s3cr3t", "secret": true } } }),
        )
        .await
        .expect(200);
    let archives = tempfile::tempdir().unwrap();
    let sealed = state_backup(
        daemon.data_dir(),
        &archives.path().join("sealed.cstate"),
        Some(PASSPHRASE),
    )
    .await;
    let plain = state_backup(
        daemon.data_dir(),
        &archives.path().join("plain.cstate"),
        None,
    )
    .await;
    let key = daemon.data_dir().join("secret.key");
    let (original_dir, original_config) = daemon.stop().await;

    let new_dir = TestDir::new();
    let data_dir = test_config(new_dir.path()).data_dir;
    let before = snapshot_of(&data_dir);
    let sealed_arg = sealed.to_str().unwrap();
    let refused = |out: &std::process::Output, expected: &str| {
        assert!(!out.status.success(), "the restore must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "expected `{expected}` in: {stderr}"
        );
        assert_eq!(snapshot_of(&data_dir), before, "the data directory changed");
        assert_no_scratch_beside(&data_dir);
    };

    let out = admin_restore(&data_dir, &[sealed_arg], Some("not the passphrase")).await;
    refused(&out, "wrong passphrase");
    let out = admin_restore(&data_dir, &[sealed_arg], None).await;
    refused(
        &out,
        "the archive is encrypted: set CANTILA_STATE_BACKUP_PASSPHRASE",
    );

    // One byte altered in the middle of the sealed file.
    let mut bytes = std::fs::read(&sealed).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let altered = archives.path().join("altered.cstate");
    std::fs::write(&altered, &bytes).unwrap();
    let out = admin_restore(&data_dir, &[altered.to_str().unwrap()], Some(PASSPHRASE)).await;
    refused(&out, "damaged");

    // An unencrypted archive needs the old key, and only the right one.
    let plain_arg = plain.to_str().unwrap();
    let out = admin_restore(&data_dir, &[plain_arg], None).await;
    refused(&out, "--secret-key FILE");
    let wrong_key = archives.path().join("wrong.key");
    std::fs::write(&wrong_key, [7u8; 32]).unwrap();
    let out = admin_restore(
        &data_dir,
        &[plain_arg, "--secret-key", wrong_key.to_str().unwrap()],
        None,
    )
    .await;
    refused(&out, "does not open the archive's sealed values");

    // A data directory with state is never written over.
    let original_before = snapshot_of(&original_config.data_dir);
    let out = admin_restore(&original_config.data_dir, &[sealed_arg], Some(PASSPHRASE)).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to restore into")
            && stderr.contains("cantila.db")
            && stderr.contains("secret.key"),
        "{stderr}"
    );
    assert_eq!(snapshot_of(&original_config.data_dir), original_before);

    // With the right key the unencrypted archive restores, without certificates.
    let out = admin_restore(
        &data_dir,
        &[plain_arg, "--secret-key", key.to_str().unwrap()],
        None,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("projects (1): admin/precious")
            && stdout.contains("certificates:  not in the archive")
            && stdout.contains("cantila backups restore-latest"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(data_dir.join("secret.key")).unwrap(),
        std::fs::read(&key).unwrap()
    );
    assert!(!data_dir.join("restored-config.toml").exists());
    drop(original_dir);
}

#[tokio::test]
async fn the_newest_state_backup_in_the_bucket_restores_from_s3_latest() {
    let bucket = TestBucket::create().await;
    let daemon = TestDaemon::start().await;
    daemon.create_project("first").await;
    let archives = tempfile::tempdir().unwrap();
    let older = state_backup(
        daemon.data_dir(),
        &archives.path().join("older.cstate"),
        Some(PASSPHRASE),
    )
    .await;
    daemon.create_project("second").await;
    let newer = state_backup(
        daemon.data_dir(),
        &archives.path().join("newer.cstate"),
        Some(PASSPHRASE),
    )
    .await;
    let (original_dir, _) = daemon.stop().await;

    // Uploaded as the state backup service uploads them, the older one last.
    let mut s3 = cantila::config::Config::default();
    s3_config(&mut s3, s3_endpoint(), bucket.name());
    let store = ObjectStore::new(&s3.backups.s3).unwrap();
    for (id, path) in [
        ("sb_20261207T030000Z_newer", &newer),
        ("sb_20261207T010000Z_older", &older),
    ] {
        let sha256 = archive::sha256_of(path).unwrap();
        remote::upload(
            &store,
            &remote::key_for(&s3.backups.s3.prefix, id),
            path,
            &sha256,
        )
        .await
        .unwrap();
    }

    let new_dir = TestDir::new();
    let data_dir = test_config(new_dir.path()).data_dir;
    // The new server's config file names the bucket; the secret comes from the
    // environment, as the daemon takes it.
    let config_file = new_dir.path().join("cantila.toml");
    std::fs::write(
        &config_file,
        format!(
            "data_dir = {:?}\n[backups.s3]\nenabled = true\nendpoint = {:?}\nbucket = {:?}\npath_style = true\naccess_key_id = {:?}\n",
            data_dir.display().to_string(),
            s3.backups.s3.endpoint,
            s3.backups.s3.bucket,
            s3.backups.s3.access_key_id,
        ),
    )
    .unwrap();
    let s3_secret = s3.backups.s3.secret_access_key.clone().unwrap();
    let restore = |source: String| {
        let config_file = config_file.display().to_string();
        let s3_secret = s3_secret.clone();
        async move {
            cantila(
                vec![
                    "admin".into(),
                    "restore".into(),
                    "--config".into(),
                    config_file,
                    source,
                    "--json".into(),
                ],
                vec![
                    ("CANTILA_STATE_BACKUP_PASSPHRASE", PASSPHRASE.to_owned()),
                    ("CANTILA_BACKUP_S3_SECRET_ACCESS_KEY", s3_secret),
                ],
            )
            .await
        }
    };

    let before = snapshot_of(&data_dir);
    let out = restore("s3://another-bucket/latest".to_owned()).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bucket `another-bucket`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot_of(&data_dir), before);

    let out = restore(format!("s3://{}/latest", bucket.name())).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["archive"],
        format!(
            "s3://{}/{}",
            bucket.name(),
            remote::key_for(&s3.backups.s3.prefix, "sb_20261207T030000Z_newer")
        )
    );
    assert_eq!(report["projects"], json!(["admin/first", "admin/second"]));
    assert_eq!(report["sha256"], archive::sha256_of(&newer).unwrap());
    assert_eq!(
        tables(&data_dir.join("cantila.db"))["projects"],
        tables(&newer_database(&newer, archives.path()))["projects"]
    );
    drop(original_dir);
}

/// The database inside an encrypted archive, extracted beside it.
fn newer_database(archive_path: &Path, dir: &Path) -> PathBuf {
    let into = dir.join("extracted");
    std::fs::create_dir_all(&into).unwrap();
    archive::extract(
        archive_path,
        Some(&archive::Passphrase::new(PASSPHRASE).unwrap()),
        &into,
    )
    .unwrap();
    into.join("cantila.db")
}

//! The disaster drill, end to end on the real engine, a real PostgreSQL and a real
//! S3-compatible server (moto): an installation with three projects (a git-built app with
//! a secret env var and a volume, a static site, and an app with a PostgreSQL database and
//! a volume holding data), their backups uploaded, and a state backup in the bucket made
//! by `cantila admin backup`; then the server dies: the daemon stops, its data directory is
//! deleted, the installation's containers, images and volumes are removed from the engine,
//! and the project's PostgreSQL database and role are dropped. On a NEW data directory,
//! `cantila admin restore s3://BUCKET/latest`, `cantila serve`, and `cantila backups
//! restore-latest --wait`, and every project answers through the edge with its data as it
//! was. The time from the restore's start to all projects serving is printed (`drill:`
//! lines, read by `scripts/bench/drill.sh`), never asserted.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    backup_s3::{project_with_volume, s3_config, s3_endpoint, wait_remote, TestBucket},
    data::{clean_up, connect_as, pg_admin_url, wait_backup},
    deploys::Repo,
    support::{remove_installation, test_config, TestDaemon, TestDir},
};

/// The secret of the moto server the tests use (see `backup_s3`).
const S3_SECRET: &str = "cantila-test-secret-value";
const PASSPHRASE: &str = "drill: correct horse battery staple";
/// Far above what a rebuild takes on a loaded 2-core machine (the data app's image
/// installs a package), so a slow machine never fails the drill and a hang always does.
const REBUILT: Duration = Duration::from_secs(900);
/// Once `restore-latest --wait` has returned, the data is back; the apps only need to
/// answer again (a volume restore restarts their containers).
const ANSWERS: Duration = Duration::from_secs(120);

/// The git-built app: busybox httpd serving `/srv`, where a volume is mounted at
/// `/srv/files` and the start writes the secret `$GREETING` to `/srv/env.txt`.
const APP_DOCKERFILE: &str = "FROM busybox:latest\nCOPY www /srv\nEXPOSE 8080\nCMD [\"sh\", \"-c\", \"echo \\\"$GREETING\\\" > /srv/env.txt && exec httpd -f -p 8080 -h /srv\"]\n";

fn host(project: &str) -> String {
    format!("{project}.admin.test.local")
}

/// The config file `cantila admin backup`/`restore` and the operator's daemon share: the
/// same S3 bucket, PostgreSQL server, passphrase file and networks as the test daemons
/// (the S3 secret comes from the environment, as on a server).
fn write_config_file(path: &Path, bucket: &str, passphrase_file: &Path) {
    let text = format!(
        "base_domain = \"test.local\"\n\
         [tls]\nmode = \"off\"\n\
         [deploy]\nnetwork = \"cantila-test\"\n\
         [database.postgres]\nadmin_url = {admin:?}\n\
         [backups.s3]\nenabled = true\nendpoint = {endpoint:?}\nbucket = {bucket:?}\n\
         path_style = true\naccess_key_id = \"testing\"\npart_size_mb = 5\n\
         [state_backup]\npassphrase_file = {passphrase:?}\n",
        admin = pg_admin_url(),
        endpoint = s3_endpoint(),
        passphrase = passphrase_file.display().to_string(),
    );
    std::fs::write(path, text).unwrap();
}

/// The config of an in-process daemon on `data_dir`, matching the file above.
fn daemon_config(dir: &Path, bucket: &str, passphrase_file: &Path) -> cantila::config::Config {
    let mut config = test_config(dir);
    s3_config(&mut config, s3_endpoint(), bucket.to_owned());
    config.database.postgres.admin_url = Some(pg_admin_url());
    config.state_backup.passphrase_file = Some(passphrase_file.to_owned());
    config
}

/// Runs the real `cantila` binary with `args` and extra environment; its whole output.
async fn cantila(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cantila"))
            .args(&args)
            .envs(env)
            .env_remove("CANTILA_STATE_BACKUP_PASSPHRASE")
            .output()
            .expect("run cantila")
    })
    .await
    .unwrap()
}

#[track_caller]
fn succeeded(what: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}): stdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Waits until GET `path` on `project`'s hostname answers 200 with exactly `body`.
async fn serves(daemon: &TestDaemon, project: &str, path: &str, body: &str) {
    serves_within(REBUILT, daemon, project, path, body).await
}

/// `serves`, failing after `within`.
async fn serves_within(
    within: Duration,
    daemon: &TestDaemon,
    project: &str,
    path: &str,
    body: &str,
) {
    let deadline = Instant::now() + within;
    loop {
        let (status, text) = daemon.edge_get(&host(project), path).await;
        if status == 200 && text == body {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{project}{path} never answered {body:?} through the edge within {within:?}; last: {status} {text:?}"
        );
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One GET through the edge that must answer 200; its body.
async fn edge_ok(daemon: &TestDaemon, project: &str, path: &str) -> String {
    let (status, body) = daemon.edge_get(&host(project), path).await;
    assert_eq!(status, 200, "{project}{path}: {body}");
    body
}

/// The deploys of a project, newest first.
async fn deploys_of(daemon: &TestDaemon, id: &str) -> Vec<Value> {
    let listed = daemon
        .get(&format!("/v1/projects/{id}/deploys"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    listed["deploys"].as_array().cloned().unwrap_or_default()
}

/// Every backup of `id` (its database and volumes) taken now, completed and uploaded.
async fn back_up_and_upload(daemon: &TestDaemon, id: &str) -> Vec<String> {
    let started = daemon
        .post(
            &format!("/v1/projects/{id}/backups"),
            &daemon.admin_token,
            json!({}),
        )
        .await
        .expect(202)
        .body;
    let mut ids = Vec::new();
    for backup in started["backups"].as_array().unwrap() {
        let backup_id = backup["id"].as_str().unwrap();
        let finished = wait_backup(daemon, backup_id).await;
        assert_eq!(finished["status"], "completed", "{finished}");
        wait_remote(daemon, backup_id, "uploaded").await;
        ids.push(backup_id.to_owned());
    }
    ids
}

#[tokio::test]
async fn drill_an_installation_destroyed_is_restored_from_s3_on_a_new_data_dir_and_serves_its_data()
{
    // Fail loudly, not skip, when PostgreSQL is missing (moto is checked by the bucket).
    if let Err(err) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await {
        panic!("PostgreSQL is not reachable ({err}); run scripts/ensure-postgres.sh");
    }
    let bucket = TestBucket::create().await;
    let outside = tempfile::tempdir().unwrap();
    let passphrase_file = outside.path().join("state-passphrase");
    std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
    let config_file = outside.path().join("cantila.toml");
    write_config_file(&config_file, &bucket.name(), &passphrase_file);

    // ---- The installation as it was. ----
    let old_dir = TestDir::new();
    let installation = old_dir.installation().to_owned();
    let old_config = daemon_config(old_dir.path(), &bucket.name(), &passphrase_file);
    let old_data_dir = old_config.data_dir.clone();
    let original = TestDaemon::start_in(old_dir, old_config).await;
    let token = original.admin_token.clone();

    // 1. A git-built app with a secret env var and a volume holding a file.
    let marker = format!("drill app {}", cantila::ids::random_base62(8));
    let (app_id, _) = project_with_volume(
        &original,
        "drill-app",
        "files",
        &[("note.txt", b"a note on the volume")],
    )
    .await;
    let app_repo = Repo::new(&[
        ("Dockerfile", APP_DOCKERFILE),
        ("www/index.html", marker.as_str()),
    ]);
    original
        .post(
            &format!("/v1/projects/{app_id}/git"),
            &token,
            json!({ "repo": app_repo.path().display().to_string(), "branch": "main" }),
        )
        .await
        .expect(200);
    let greeting = format!("sealed-{}", cantila::ids::random_base62(16));
    original
        .post(
            &format!("/v1/projects/{app_id}/env"),
            &token,
            json!({ "vars": { "GREETING": { "value": greeting, "secret": true } } }),
        )
        .await
        .expect(200);

    // 2. A static site.
    let site_repo = Repo::from_fixture("static-public");
    let site_index = std::fs::read_to_string(site_repo.path().join("public/index.html")).unwrap();
    let (site_id, _) = original.connected_project("drill-site", &site_repo).await;

    // 3. An app with a PostgreSQL database and a volume.
    let data_repo = Repo::from_fixture("data-app");
    let (data_id, _) = original.connected_project("drill-data", &data_repo).await;
    original
        .post(
            &format!("/v1/projects/{data_id}/database"),
            &token,
            json!({ "engine": "postgres" }),
        )
        .await
        .expect(201);
    original
        .post(
            &format!("/v1/projects/{data_id}/volumes"),
            &token,
            json!({ "name": "files", "mountPath": "/app/files" }),
        )
        .await
        .expect(201);

    // The floor the restore is compared with: the same three projects' first deploys, side
    // by side as the rebuilds run, timed until all three serve.
    let first_deploys = Instant::now();
    let deploys = futures_util::future::join_all(
        [&app_id, &site_id, &data_id].map(|id| original.deploy(id, None)),
    )
    .await;
    for deploy in deploys {
        assert_eq!(deploy["status"], "running", "{deploy}");
    }
    serves(&original, "drill-app", "/", &marker).await;
    serves(&original, "drill-app", "/env.txt", &format!("{greeting}\n")).await;
    serves(
        &original,
        "drill-app",
        "/files/note.txt",
        "a note on the volume",
    )
    .await;
    serves(&original, "drill-site", "/", &site_index).await;
    eprintln!(
        "drill: first deploys of the three projects {:.1} s (the floor)",
        first_deploys.elapsed().as_secs_f64()
    );
    for value in ["alpha", "beta", "gamma"] {
        serves(
            &original,
            "drill-data",
            &format!("/rows/add?value={value}"),
            "added",
        )
        .await;
    }
    serves(
        &original,
        "drill-data",
        "/files/put?name=ledger&body=kept-on-the-volume",
        "written",
    )
    .await;
    let rows_before = edge_ok(&original, "drill-data", "/rows").await;
    assert_eq!(rows_before, r#"[[1, "alpha"], [2, "beta"], [3, "gamma"]]"#);

    // The projects' backups, uploaded; then a state backup in the bucket.
    let mut backups = back_up_and_upload(&original, &app_id).await;
    backups.extend(back_up_and_upload(&original, &data_id).await);
    assert_eq!(
        backups.len(),
        3,
        "the app's volume, the database and the data volume"
    );
    // Written after the backups: the drill brings back what the backups hold.
    serves(&original, "drill-data", "/rows/add?value=lost", "added").await;
    let state = cantila(
        vec![
            "admin".into(),
            "backup".into(),
            "--json".into(),
            "--config".into(),
            config_file.display().to_string(),
            "--data-dir".into(),
            old_data_dir.display().to_string(),
        ],
        vec![("CANTILA_BACKUP_S3_SECRET_ACCESS_KEY", S3_SECRET.to_owned())],
    )
    .await;
    let state = succeeded("cantila admin backup", &state);
    eprintln!("drill: state backup: {}", state.trim());
    let listed = original
        .get("/v1/admin/state-backups", &token)
        .await
        .expect(200)
        .body;
    let newest = &listed["stateBackups"][0];
    assert_eq!(newest["status"], "completed", "{listed}");
    assert_eq!(newest["encrypted"], true, "{listed}");
    assert_eq!(newest["remote"]["status"], "uploaded", "{listed}");
    let state_key = newest["remote"]["key"].as_str().unwrap().to_owned();
    assert!(
        bucket.get(&state_key).await.is_some(),
        "{state_key} is in the bucket"
    );
    let database = original
        .get(&format!("/v1/projects/{data_id}/database"), &token)
        .await
        .expect(200)
        .body;
    let (pg_database, pg_user) = (
        database["database"].as_str().unwrap().to_owned(),
        database["user"].as_str().unwrap().to_owned(),
    );

    // ---- The server dies. ----
    let (old_dir, _) = original.stop().await;
    std::fs::remove_dir_all(&old_data_dir).unwrap();
    let left = remove_installation(&installation, None, None);
    assert!(left.is_empty(), "the engine still has {left:?}");
    let (admin, connection) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // One statement each: DROP DATABASE cannot run inside the transaction a batch makes.
    for statement in [
        format!("DROP DATABASE \"{pg_database}\" WITH (FORCE)"),
        format!("DROP ROLE \"{pg_user}\""),
    ] {
        admin.batch_execute(&statement).await.unwrap();
    }

    // ---- A new server: a new, empty data directory. ----
    let new_dir = TestDir::new();
    let new_config = daemon_config(new_dir.path(), &bucket.name(), &passphrase_file);
    let new_data_dir: PathBuf = new_config.data_dir.clone();
    // A fresh server has nothing, not even the test harness's installation id.
    std::fs::remove_file(new_data_dir.join("installation-id")).unwrap();

    let started = Instant::now();
    let restored = cantila(
        vec![
            "admin".into(),
            "restore".into(),
            format!("s3://{}/latest", bucket.name()),
            "--config".into(),
            config_file.display().to_string(),
            "--data-dir".into(),
            new_data_dir.display().to_string(),
        ],
        vec![("CANTILA_BACKUP_S3_SECRET_ACCESS_KEY", S3_SECRET.to_owned())],
    )
    .await;
    let restored = succeeded("cantila admin restore", &restored);
    let restore_took = started.elapsed();
    eprintln!("drill: cantila admin restore said:\n{}", restored.trim());
    assert_eq!(
        std::fs::read_to_string(new_data_dir.join("installation-id"))
            .unwrap()
            .trim(),
        installation,
        "the installation keeps its id"
    );
    // The operator's token lives on in the restored state; the first-start file of the old
    // server does not, so the harness (which reads it) gets the token the operator kept.
    std::fs::write(new_data_dir.join("admin-token"), &token).unwrap();

    let daemon = TestDaemon::start_in(new_dir, new_config).await;
    assert_eq!(daemon.admin_token, token);
    // Releases come back by themselves: one rebuild per project, trigger `restore`.
    serves(&daemon, "drill-app", "/", &marker).await;
    serves(&daemon, "drill-site", "/", &site_index).await;
    serves(&daemon, "drill-data", "/health", "ok").await;
    let rebuilt_after = started.elapsed();
    for id in [&app_id, &site_id, &data_id] {
        let deploys = deploys_of(&daemon, id).await;
        let rebuilds: Vec<&Value> = deploys
            .iter()
            .filter(|d| d["trigger"] == "restore")
            .collect();
        assert_eq!(rebuilds.len(), 1, "one rebuild of {id}: {deploys:?}");
        assert_eq!(rebuilds[0]["status"], "running", "{deploys:?}");
        // Where a rebuild's time goes, for the figures the drill reports.
        eprintln!(
            "drill: rebuild of {id}: queued {}, building {}, releasing {}, finished {}",
            rebuilds[0]["createdAt"],
            rebuilds[0]["buildingAt"],
            rebuilds[0]["releasingAt"],
            rebuilds[0]["finishedAt"]
        );
    }

    // The projects' data comes back from the bucket.
    let data_restored = cantila(
        vec!["backups".into(), "restore-latest".into(), "--wait".into()],
        vec![
            ("CANTILA_URL", format!("http://{}", daemon.api)),
            ("CANTILA_TOKEN", token.clone()),
        ],
    )
    .await;
    let data_restored = succeeded("cantila backups restore-latest --wait", &data_restored);
    eprintln!(
        "drill: cantila backups restore-latest said:\n{}",
        data_restored.trim()
    );

    // Every project answers through the edge with its data as it was.
    serves_within(
        ANSWERS,
        &daemon,
        "drill-app",
        "/env.txt",
        &format!("{greeting}\n"),
    )
    .await;
    serves_within(
        ANSWERS,
        &daemon,
        "drill-app",
        "/files/note.txt",
        "a note on the volume",
    )
    .await;
    serves_within(ANSWERS, &daemon, "drill-data", "/rows", &rows_before).await;
    serves_within(
        ANSWERS,
        &daemon,
        "drill-data",
        "/files/get?name=ledger",
        "kept-on-the-volume",
    )
    .await;
    let all_serving = started.elapsed();
    assert_eq!(edge_ok(&daemon, "drill-app", "/").await, marker);
    assert_eq!(edge_ok(&daemon, "drill-site", "/").await, site_index);
    eprintln!(
        "drill: restore {:.1} s; releases serving {:.1} s; all projects serving with their data {:.1} s (from the restore's start)",
        restore_took.as_secs_f64(),
        rebuilt_after.as_secs_f64(),
        all_serving.as_secs_f64()
    );

    // The database's credentials are the recorded ones: its role logs in with them.
    let credentials = daemon
        .get(
            &format!("/v1/projects/{data_id}/database/credentials"),
            &token,
        )
        .await
        .expect(200)
        .body;
    let password = credentials["env"]["PGPASSWORD"].as_str().unwrap();
    assert!(connect_as(&pg_user, password, &pg_database).await.is_ok());

    clean_up(&daemon, &[&app_id, &site_id, &data_id]).await;
    drop(daemon);
    // The restored installation is the old one: the old dir's drop removes what it left.
    drop(old_dir);
}

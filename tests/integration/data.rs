//! Data end to end on the real engine and a real PostgreSQL: databases wired to projects
//! (postgres and sqlite), volumes that outlive redeploys, rollbacks, scaling and restarts,
//! backups that restore row by row, failures with clear reasons, and crash recovery.
//! PostgreSQL must be running (`scripts/ensure-postgres.sh`); these tests fail without it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    deploys::{app_answer, Repo},
    support::{wait_for, wait_until, TestDaemon, TestDir},
};

/// The admin URL of the test cluster that `scripts/ensure-postgres.sh` set up.
pub fn pg_admin_url() -> String {
    std::env::var("CANTILA_TEST_PG_ADMIN_URL").unwrap_or_else(|_| {
        "postgres://cantila_admin:cantila-test@127.0.0.1:5432/postgres".to_owned()
    })
}

pub async fn data_daemon() -> TestDaemon {
    let url = pg_admin_url();
    // Fail loudly, not skip, when the server is missing.
    if let Err(err) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        panic!("PostgreSQL is not reachable at the test admin URL ({err}); run scripts/ensure-postgres.sh");
    }
    TestDaemon::start_with(|config| {
        config.database.postgres.admin_url = Some(url);
    })
    .await
}

/// Polls a backup until it leaves `running`.
pub async fn wait_backup(daemon: &TestDaemon, id: &str) -> Value {
    for _ in 0..600 {
        let backup = daemon
            .get(&format!("/v1/backups/{id}"), &daemon.admin_token)
            .await
            .expect(200)
            .body;
        if backup["status"] != "running" {
            return backup;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("backup {id} did not finish within 2 minutes");
}

/// Asks the deploy's app for `path` until it answers (it may be restarting).
async fn ask(deploy_id: &str, path: &str) -> String {
    let mut last = None;
    for _ in 0..120 {
        if let Some(answer) = app_answer(deploy_id, path).await {
            if !answer.starts_with("error") {
                return answer;
            }
            last = Some(answer);
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the app of {deploy_id} never answered {path}; last answer: {last:?}");
}

async fn rows(deploy_id: &str) -> Vec<(i64, String)> {
    serde_json::from_str(&ask(deploy_id, "/rows").await).expect("rows as JSON")
}

pub async fn connect_as(
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, String> {
    let address = cantila::database::postgres::server_address(&pg_admin_url()).unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .host(&address.host)
        .port(address.port)
        .user(user)
        .password(password)
        .dbname(database);
    match config.connect(tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Ok(client)
        }
        Err(err) => Err(err
            .as_db_error()
            .map(|db| db.message().to_owned())
            .unwrap_or_else(|| err.to_string())),
    }
}

/// Removes what a test left in Docker and on the server: its containers, then (through
/// the API, so nothing bypasses the rules) its databases and volumes.
pub async fn clean_up(daemon: &TestDaemon, project_ids: &[&str]) {
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    for id in project_ids {
        // Scaled to 0 first, so the reconciler does not replace what is removed next.
        daemon
            .post(
                &format!("/v1/projects/{id}/scale"),
                &daemon.admin_token,
                json!({ "instances": 0 }),
            )
            .await;
        for container in engine.containers(&[("cantila.project", id)]).await.unwrap() {
            let _ = engine
                .stop_and_remove(&container.id, Duration::from_secs(1))
                .await;
        }
        let name = daemon
            .get(&format!("/v1/projects/{id}"), &daemon.admin_token)
            .await
            .body["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let confirm = json!({ "confirm": name });
        daemon
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/projects/{id}/database"),
                Some(&daemon.admin_token),
                Some(confirm.clone()),
            )
            .await;
        let volumes = daemon
            .get(&format!("/v1/projects/{id}/volumes"), &daemon.admin_token)
            .await
            .body;
        for volume in volumes["volumes"].as_array().cloned().unwrap_or_default() {
            daemon
                .call(
                    reqwest::Method::DELETE,
                    &format!(
                        "/v1/projects/{id}/volumes/{}",
                        volume["name"].as_str().unwrap()
                    ),
                    Some(&daemon.admin_token),
                    Some(confirm.clone()),
                )
                .await;
        }
    }
}

/// Removes the Docker volumes a test daemon created (after its containers), so runs do not
/// pile volumes up on the shared engine.
pub async fn remove_installation_volumes(daemon: &TestDaemon) {
    let installation = std::fs::read_to_string(daemon.data_dir().join("installation-id")).unwrap();
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    let labels = [("cantila.installation", installation.trim())];
    for container in engine.containers(&labels).await.unwrap() {
        let _ = engine
            .stop_and_remove(&container.id, Duration::from_secs(1))
            .await;
    }
    for volume in engine.volumes(&labels).await.unwrap() {
        engine.remove_volume(&volume).await.unwrap();
    }
}

#[tokio::test]
async fn postgres_database_is_wired_backed_up_restored_and_isolated() {
    let daemon = data_daemon().await;
    let read = daemon.token("read").await;
    let deploy_token = daemon.token("deploy").await;
    let repo = Repo::from_fixture("data-app");
    let (id, _) = daemon.connected_project("pg-app", &repo).await;

    // A release from before the database existed: a rollback to it must still get one.
    let first = daemon.deploy(&id, None).await;
    assert_eq!(first["status"], "running", "{first}");

    let created = daemon
        .post(
            &format!("/v1/projects/{id}/database"),
            &deploy_token,
            json!({ "engine": "postgres" }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(created["engine"], "postgres");
    assert_eq!(created["status"], "available");
    daemon
        .post(
            &format!("/v1/projects/{id}/database"),
            &deploy_token,
            json!({ "engine": "sqlite" }),
        )
        .await
        .expect(409);
    let database = created["database"].as_str().unwrap().to_owned();
    let user = created["user"].as_str().unwrap().to_owned();

    // The password reaches deploy-scope tokens only, and never the metadata.
    daemon
        .get(&format!("/v1/projects/{id}/database/credentials"), &read)
        .await
        .expect(403);
    let credentials = daemon
        .get(
            &format!("/v1/projects/{id}/database/credentials"),
            &deploy_token,
        )
        .await
        .expect(200)
        .body;
    let password = credentials["env"]["PGPASSWORD"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(password.len() >= 32);
    let url = credentials["env"]["DATABASE_URL"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("postgres://{user}:{password}@")),
        "{url}"
    );
    let metadata = daemon
        .get(&format!("/v1/projects/{id}/database"), &read)
        .await
        .expect(200);
    assert!(!metadata.text.contains(&password));
    assert!(metadata.body["sizeBytes"].as_i64().unwrap() > 0);

    // The app writes and reads rows through DATABASE_URL.
    let second = daemon.deploy(&id, None).await;
    assert_eq!(second["status"], "running", "{second}");
    let deploy_id = second["id"].as_str().unwrap().to_owned();
    for value in ["alpha", "beta", "gamma"] {
        assert_eq!(
            ask(&deploy_id, &format!("/rows/add?value={value}")).await,
            "added"
        );
    }
    let before = rows(&deploy_id).await;
    assert_eq!(
        before.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
        ["alpha", "beta", "gamma"]
    );

    // Least privilege: another project's role cannot connect to this database.
    let (other_id, _) = daemon.connected_project("pg-other", &repo).await;
    daemon
        .post(
            &format!("/v1/projects/{other_id}/database"),
            &deploy_token,
            json!({ "engine": "postgres" }),
        )
        .await
        .expect(201);
    let other = daemon
        .get(
            &format!("/v1/projects/{other_id}/database/credentials"),
            &deploy_token,
        )
        .await
        .expect(200)
        .body;
    let (other_user, other_password) = (
        other["env"]["PGUSER"].as_str().unwrap(),
        other["env"]["PGPASSWORD"].as_str().unwrap(),
    );
    let refused = connect_as(other_user, other_password, &database)
        .await
        .unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");
    assert!(connect_as(&user, &password, &database).await.is_ok());

    // Backup, then change the data, then restore: the rows are exactly the backed-up ones.
    let started = daemon
        .post(
            &format!("/v1/projects/{id}/backups"),
            &deploy_token,
            json!({}),
        )
        .await
        .expect(202)
        .body;
    let backup = wait_backup(&daemon, started["id"].as_str().unwrap()).await;
    assert_eq!(backup["status"], "completed", "{backup}");
    assert_eq!(backup["kind"], "database");
    assert_eq!(backup["engine"], "postgres");
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let download = daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/backups/{backup_id}/download"),
        )
        .bearer_auth(&deploy_token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let bytes = download.bytes().await.unwrap();
    assert_eq!(bytes.len() as i64, backup["sizeBytes"].as_i64().unwrap());
    assert!(bytes.starts_with(b"PGDMP"), "pg_dump custom format");
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), backup["sha256"]);
    daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/backups/{backup_id}/download"),
        )
        .bearer_auth(&read)
        .send()
        .await
        .map(|r| assert_eq!(r.status(), 403))
        .unwrap();

    ask(&deploy_id, "/rows/add?value=delta").await;
    assert_eq!(rows(&deploy_id).await.len(), 4);
    let unconfirmed = daemon
        .post(
            &format!("/v1/backups/{backup_id}/restore"),
            &daemon.admin_token,
            json!({ "confirm": "wrong" }),
        )
        .await
        .expect(422);
    assert!(
        unconfirmed.error_message().contains("pg-app"),
        "{}",
        unconfirmed.text
    );
    daemon
        .post(
            &format!("/v1/backups/{backup_id}/restore"),
            &deploy_token,
            json!({ "confirm": "pg-app" }),
        )
        .await
        .expect(403);
    let restored = daemon
        .post(
            &format!("/v1/backups/{backup_id}/restore"),
            &daemon.admin_token,
            json!({ "confirm": "pg-app" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        restored["safetyBackup"]["status"], "completed",
        "{restored}"
    );
    assert_eq!(restored["safetyBackup"]["trigger"], "safety");
    assert!(restored["restored"]["restoredAt"].is_string());
    assert_eq!(rows(&deploy_id).await, before, "row by row as backed up");

    // A rollback to the release from before the database still gets a working URL.
    let rolled = daemon
        .post(
            &format!("/v1/projects/{id}/rollback"),
            &deploy_token,
            json!({ "deployId": first["id"] }),
        )
        .await
        .expect(202)
        .body;
    let rolled = daemon
        .wait_deploy(rolled["deployId"].as_str().unwrap())
        .await;
    assert_eq!(rolled["status"], "running", "{rolled}");
    assert_eq!(rows(rolled["id"].as_str().unwrap()).await, before);

    // The database dropped behind Cantila's back: a backup fails and says why.
    let (admin, connection) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"))
        .await
        .unwrap();
    let started = daemon
        .post(
            &format!("/v1/projects/{id}/backups"),
            &deploy_token,
            json!({ "kind": "database" }),
        )
        .await
        .expect(202)
        .body;
    let failed = wait_backup(&daemon, started["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{failed}"
    );
    daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/backups/{}/download", failed["id"].as_str().unwrap()),
        )
        .bearer_auth(&deploy_token)
        .send()
        .await
        .map(|r| assert_eq!(r.status(), 409))
        .unwrap();
    let metadata = daemon
        .get(&format!("/v1/projects/{id}/database"), &read)
        .await
        .expect(200);
    assert_eq!(metadata.body["status"], "missing");

    // A project holding data cannot be deleted until the data is.
    let refused = daemon
        .delete(&format!("/v1/projects/{id}"), &daemon.admin_token)
        .await
        .expect(409);
    assert!(
        refused.error_message().contains("database"),
        "{}",
        refused.text
    );
    let deleted = daemon
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/projects/{id}/database"),
            Some(&daemon.admin_token),
            Some(json!({ "confirm": "pg-app" })),
        )
        .await
        .expect(200);
    assert!(
        deleted.body["finalBackup"].is_null(),
        "nothing left to back up"
    );
    // The other project's database goes with a final backup.
    let deleted = daemon
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/projects/{other_id}/database"),
            Some(&daemon.admin_token),
            Some(json!({ "confirm": "pg-other" })),
        )
        .await
        .expect(200);
    assert_eq!(
        deleted.body["finalBackup"]["status"], "completed",
        "{}",
        deleted.text
    );
    assert_eq!(deleted.body["finalBackup"]["trigger"], "final");
    assert!(
        connect_as(other_user, other_password, "postgres")
            .await
            .is_err(),
        "the role is gone"
    );

    let audit = daemon
        .get("/v1/audit?limit=200", &daemon.admin_token)
        .await
        .expect(200);
    for action in [
        "database.create",
        "backup.create",
        "backup.restore",
        "database.delete",
    ] {
        assert!(audit.text.contains(action), "audit has {action}");
    }
    assert!(!audit.text.contains(&password));
    clean_up(&daemon, &[&id, &other_id]).await;
}

#[tokio::test]
async fn sqlite_database_and_volumes_survive_redeploys_scaling_restarts_and_restore() {
    let daemon = data_daemon().await;
    let repo = Repo::from_fixture("data-app");
    let (id, _) = daemon.connected_project("lite", &repo).await;
    let token = daemon.admin_token.clone();
    let created = daemon
        .post(
            &format!("/v1/projects/{id}/database"),
            &token,
            json!({ "engine": "sqlite" }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(created["database"], "/data/app.db");
    let volume = daemon
        .post(
            &format!("/v1/projects/{id}/volumes"),
            &token,
            json!({ "name": "files", "mountPath": "/app/files/" }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(volume["mountPath"], "/app/files");
    for (body, status) in [
        (json!({ "name": "x", "mountPath": "/" }), 422),
        (json!({ "name": "x", "mountPath": "/proc/x" }), 422),
        (json!({ "name": "x", "mountPath": "relative" }), 422),
        (json!({ "name": "x", "mountPath": "/app/../etc" }), 422),
        (json!({ "name": "Bad", "mountPath": "/x" }), 422),
        (json!({ "name": "files", "mountPath": "/other" }), 409),
        (
            json!({ "name": "nested", "mountPath": "/app/files/inner" }),
            409,
        ),
        (json!({ "name": "db2", "mountPath": "/data" }), 409),
    ] {
        let res = daemon
            .post(&format!("/v1/projects/{id}/volumes"), &token, body.clone())
            .await;
        assert_eq!(res.status, status, "{body}: {}", res.text);
    }
    let credentials = daemon
        .get(&format!("/v1/projects/{id}/database/credentials"), &token)
        .await
        .expect(200)
        .body;
    assert_eq!(credentials["env"]["DATABASE_URL"], "sqlite:///data/app.db");

    let deploy = daemon.deploy(&id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let deploy_id = deploy["id"].as_str().unwrap().to_owned();
    for value in ["one", "two"] {
        ask(&deploy_id, &format!("/rows/add?value={value}")).await;
    }
    ask(&deploy_id, "/files/put?name=note.txt&body=first").await;
    let before = rows(&deploy_id).await;
    assert_eq!(before.len(), 2);

    // A redeploy, scaling out and in, and a daemon restart keep the data.
    let redeploy = daemon.deploy(&id, None).await;
    let deploy_id = redeploy["id"].as_str().unwrap().to_owned();
    assert_eq!(rows(&deploy_id).await, before);
    daemon
        .post(
            &format!("/v1/projects/{id}/scale"),
            &token,
            json!({ "instances": 2 }),
        )
        .await
        .expect(200);
    daemon
        .post(
            &format!("/v1/projects/{id}/scale"),
            &token,
            json!({ "instances": 1 }),
        )
        .await
        .expect(200);
    let daemon = daemon.restart().await;
    let token = daemon.admin_token.clone();
    assert_eq!(rows(&deploy_id).await, before);
    assert_eq!(ask(&deploy_id, "/files/get?name=note.txt").await, "first");

    // Back up everything: the database (online backup API) and the volume (tar).
    let started = daemon
        .post(&format!("/v1/projects/{id}/backups"), &token, json!({}))
        .await
        .expect(202)
        .body;
    let ids: Vec<String> = started["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{started}");
    let mut finished = Vec::new();
    for backup_id in &ids {
        let backup = wait_backup(&daemon, backup_id).await;
        assert_eq!(backup["status"], "completed", "{backup}");
        finished.push(backup);
    }
    assert!(finished
        .iter()
        .any(|b| b["kind"] == "database" && b["engine"] == "sqlite"));
    assert!(finished
        .iter()
        .any(|b| b["kind"] == "volume" && b["subject"] == "files"));
    let listed = daemon
        .get(&format!("/v1/projects/{id}/backups"), &token)
        .await
        .expect(200);
    assert_eq!(listed.body["backups"].as_array().unwrap().len(), 2);

    // Change everything, then restore both.
    ask(&deploy_id, "/rows/add?value=three").await;
    ask(&deploy_id, "/files/put?name=note.txt&body=second").await;
    ask(&deploy_id, "/files/put?name=later.txt&body=new").await;
    for backup in &finished {
        let restored = daemon
            .post(
                &format!("/v1/backups/{}/restore", backup["id"].as_str().unwrap()),
                &token,
                json!({ "confirm": "lite" }),
            )
            .await
            .expect(200)
            .body;
        assert_eq!(
            restored["safetyBackup"]["status"], "completed",
            "{restored}"
        );
    }
    assert_eq!(rows(&deploy_id).await, before, "row by row as backed up");
    assert_eq!(ask(&deploy_id, "/files/get?name=note.txt").await, "first");
    assert_eq!(
        app_answer(&deploy_id, "/files/get?name=later.txt")
            .await
            .as_deref(),
        Some("missing"),
        "files made after the backup are gone"
    );

    // Deleting data needs confirmation and an idle volume.
    daemon
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/projects/{id}/volumes/files"),
            Some(&token),
            None,
        )
        .await
        .expect(422);
    let busy = daemon
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/projects/{id}/volumes/files"),
            Some(&token),
            Some(json!({ "confirm": "lite" })),
        )
        .await
        .expect(409);
    assert!(busy.error_message().contains("scale"), "{}", busy.text);
    daemon
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/projects/{id}/volumes/database"),
            Some(&token),
            Some(json!({ "confirm": "lite" })),
        )
        .await
        .expect(409);
    clean_up(&daemon, &[&id]).await;
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    assert!(!engine
        .volume_exists(volume["dockerVolume"].as_str().unwrap())
        .await
        .unwrap());
}

#[tokio::test]
async fn a_crash_during_a_backup_leaves_it_failed_its_files_removed_and_the_app_resumed() {
    let dir = TestDir::new();
    let config = crate::support::test_config(dir.path());
    // An app whose volume holds 256 MiB, so that archiving it keeps the app paused long
    // enough for the daemon to be killed in the middle of the copy.
    let repo = Repo::new(&[
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"sh\", \"-c\", \"[ -f /data/big ] || dd if=/dev/zero of=/data/big bs=1M count=256 2>/dev/null; exec httpd -f -p 8080 -h /www\"]\n",
        ),
        ("www/index.html", "still serving\n"),
    ]);
    // The real binary, so `kill -9` ends the daemon as a crash would.
    let binary = crate::support::BinaryDaemon::start(&config).await;
    let project_id = binary.connected_project("paused", repo.path()).await;
    let (status, volume) = binary
        .call(
            reqwest::Method::POST,
            &format!("/v1/projects/{project_id}/volumes"),
            json!({ "name": "bulk", "mountPath": "/data" }),
        )
        .await;
    assert_eq!(status, 201, "{volume}");
    let deploy_id = binary.deploy(&project_id).await;
    binary.wait_status(&deploy_id, "running").await;
    let engine = cantila::runtime::docker::Engine::connect().await.unwrap();
    let app_containers = || async {
        engine
            .containers(&[("cantila.project", project_id.as_str())])
            .await
            .unwrap()
    };
    let app = app_containers().await;
    assert_eq!(app.len(), 1, "{app:?}");

    let (status, started) = binary
        .call(
            reqwest::Method::POST,
            &format!("/v1/projects/{project_id}/backups"),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let backup_id = started["backups"][0]["id"].as_str().unwrap().to_owned();
    // Mid-copy: the app is paused. The daemon is frozen there first, so that it cannot
    // finish the copy and resume the app between the check and the kill.
    let partial = config
        .backups_dir()
        .join(&project_id)
        .join(format!(".{backup_id}.partial"));
    wait_for(
        Duration::from_secs(60),
        "the app is paused for the backup's copy",
        || async {
            let state = app_containers().await.first().map(|c| c.state.clone());
            (state.as_deref() == Some("paused")).then_some(())
        },
    )
    .await;
    binary.freeze();
    assert_eq!(app_containers().await[0].state, "paused");
    assert!(partial.exists(), "the copy is under way");
    binary.kill9();

    // What the crash left: a running backup, its partial file, its helper container and
    // the app paused.
    let store = cantila::store::Store::open(&config.data_dir).unwrap();
    let backup = store
        .call_blocking(|c| cantila::store::backups::by_id(c, &backup_id))
        .unwrap()
        .unwrap();
    assert_eq!(backup.status, cantila::backup::BackupStatus::Running);
    drop(store);
    let helper_labels = [
        ("cantila.kind", "helper"),
        ("cantila.helper-for", project_id.as_str()),
    ];
    assert_eq!(engine.containers(&helper_labels).await.unwrap().len(), 1);
    assert_eq!(app_containers().await[0].state, "paused");

    // What the next start repairs.
    let daemon = TestDaemon::start_in(dir, config).await;
    let backup = daemon
        .get(&format!("/v1/backups/{backup_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(backup["status"], "failed", "{backup}");
    assert!(
        backup["error"].as_str().unwrap().contains("interrupted"),
        "{backup}"
    );
    assert!(!partial.exists(), "the partial file is removed");
    assert_eq!(
        std::fs::read_dir(daemon.config.backups_dir().join(&project_id))
            .unwrap()
            .count(),
        0,
        "no file of the interrupted backup is left"
    );
    assert!(engine.containers(&helper_labels).await.unwrap().is_empty());
    let app = app_containers().await;
    assert_eq!(
        app.iter().map(|c| c.state.as_str()).collect::<Vec<_>>(),
        ["running"],
        "the app is resumed, not replaced"
    );
    wait_until(
        Duration::from_secs(30),
        "the app serves again through the edge",
        || async {
            daemon.edge_get("paused.admin.test.local", "/").await
                == (200, "still serving\n".to_owned())
        },
    )
    .await;
    daemon
        .get(
            &format!("/v1/backups/{backup_id}/download"),
            &daemon.admin_token,
        )
        .await
        .expect(409);
}

#[tokio::test]
async fn a_failed_scheduled_backup_shows_on_the_project_and_in_the_audit_log() {
    let daemon = data_daemon().await;
    let project = daemon.create_project("nightly").await;
    let id = project["id"].as_str().unwrap().to_owned();
    let token = daemon.admin_token.clone();
    let database = daemon
        .post(
            &format!("/v1/projects/{id}/database"),
            &token,
            json!({ "engine": "postgres" }),
        )
        .await
        .expect(201)
        .body;
    for (body, status) in [
        (json!({ "schedule": "hourly" }), 422),
        (json!({ "schedule": "daily at 25:00" }), 422),
        (
            json!({ "schedule": "* * * * *", "keepDaily": 0, "keepWeekly": 0 }),
            422,
        ),
        (
            json!({ "schedule": "* * * * *", "keepDaily": 3, "keepWeekly": 2 }),
            200,
        ),
    ] {
        let res = daemon
            .call(
                reqwest::Method::PUT,
                &format!("/v1/projects/{id}/backups/schedule"),
                Some(&token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(res.status, status, "{body}: {}", res.text);
    }
    let (admin, connection) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "DROP DATABASE \"{}\" WITH (FORCE)",
            database["database"].as_str().unwrap()
        ))
        .await
        .unwrap();
    // Every minute: within two the scheduler has run and recorded the failure.
    let mut schedule = Value::Null;
    for _ in 0..300 {
        schedule = daemon
            .get(&format!("/v1/projects/{id}/backups/schedule"), &token)
            .await
            .expect(200)
            .body;
        if schedule["lastStatus"].is_string() {
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(schedule["source"], "project");
    assert_eq!(schedule["lastStatus"], "failed", "{schedule}");
    assert!(
        schedule["lastError"]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{schedule}"
    );
    let backups = daemon
        .get(&format!("/v1/projects/{id}/backups"), &token)
        .await
        .expect(200);
    let scheduled = &backups.body["backups"][0];
    assert_eq!(scheduled["trigger"], "scheduled");
    assert_eq!(scheduled["status"], "failed", "never reported as done");
    let audit = daemon.get("/v1/audit", &token).await.expect(200);
    assert!(audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "backup.scheduled.failed" && e["target"] == id.as_str()));
    daemon
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/projects/{id}/backups/schedule"),
            Some(&token),
            None,
        )
        .await
        .expect(204);
    clean_up(&daemon, &[&id]).await;
}

#[tokio::test]
async fn bad_requests_get_clear_answers_and_other_accounts_see_nothing() {
    let daemon = TestDaemon::start().await; // no PostgreSQL configured
    let project = daemon.create_project("plain").await;
    let id = project["id"].as_str().unwrap().to_owned();
    let token = daemon.admin_token.clone();
    let res = daemon
        .post(
            &format!("/v1/projects/{id}/database"),
            &token,
            json!({ "engine": "postgres" }),
        )
        .await
        .expect(422);
    assert!(res.error_message().contains("admin_url"), "{}", res.text);
    daemon
        .post(
            &format!("/v1/projects/{id}/database"),
            &token,
            json!({ "engine": "mysql" }),
        )
        .await
        .expect(422);
    daemon
        .get(&format!("/v1/projects/{id}/database"), &token)
        .await
        .expect(404);
    let res = daemon
        .post(&format!("/v1/projects/{id}/backups"), &token, json!({}))
        .await
        .expect(422);
    assert!(
        res.error_message().contains("nothing to back up"),
        "{}",
        res.text
    );
    daemon
        .post(
            &format!("/v1/projects/{id}/backups"),
            &token,
            json!({ "kind": "volume" }),
        )
        .await
        .expect(422);
    daemon
        .post(
            &format!("/v1/projects/{id}/backups"),
            &token,
            json!({ "kind": "tape" }),
        )
        .await
        .expect(422);
    let missing = daemon.get("/v1/backups/bak_nope", &token).await.expect(404);
    let other = daemon.other_account_token("intruder", cantila::names::Scope::Admin);
    let theirs = daemon
        .get(&format!("/v1/projects/{id}/volumes"), &other)
        .await
        .expect(404);
    assert!(theirs.error_message().contains("not found"));
    assert_eq!(missing.error_code(), "not_found");
    let schedule = daemon
        .get(&format!("/v1/projects/{id}/backups/schedule"), &token)
        .await
        .expect(200);
    assert_eq!(schedule.body["source"], "none");
}

#[tokio::test]
async fn assets_of_the_live_release_are_listed_with_hashes_and_cache_policy() {
    use sha2::Digest;
    let daemon = TestDaemon::start().await;
    let token = daemon.admin_token.clone();

    // A static site: its published files.
    let site = Repo::new(&[
        ("index.html", "<h1>home</h1>"),
        ("css/site.css", "body{}"),
        ("css/print.css", "p{}"),
    ]);
    let (site_id, _) = daemon.connected_project("brochure", &site).await;
    let empty = daemon
        .get(&format!("/v1/projects/{site_id}/assets"), &token)
        .await
        .expect(200);
    assert!(empty.body["deployId"].is_null());
    let deploy = daemon.deploy(&site_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let listed = daemon
        .get(&format!("/v1/projects/{site_id}/assets"), &token)
        .await
        .expect(200);
    let paths: Vec<&str> = listed.body["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["css/print.css", "css/site.css", "index.html"]);
    let index = &listed.body["assets"][2];
    assert_eq!(index["contentType"], "text/html; charset=utf-8");
    assert_eq!(index["cacheControl"], "no-cache");
    assert_eq!(index["sizeBytes"], 13);
    let sha = hex::encode(sha2::Sha256::digest(b"<h1>home</h1>"));
    assert_eq!(index["sha256"], sha.as_str());
    assert_eq!(index["etag"], format!("\"{sha}\""));
    let css = daemon
        .get(
            &format!("/v1/projects/{site_id}/assets?prefix=/css/&limit=1"),
            &token,
        )
        .await
        .expect(200);
    assert_eq!(css.body["assets"][0]["path"], "css/print.css");
    assert_eq!(css.body["assets"][0]["cacheControl"], "public, max-age=300");
    let cursor = css.body["nextCursor"].as_str().unwrap().to_owned();
    let next = daemon
        .get(
            &format!("/v1/projects/{site_id}/assets?prefix=css/&limit=1&cursor={cursor}"),
            &token,
        )
        .await
        .expect(200);
    assert_eq!(next.body["assets"][0]["path"], "css/site.css");
    assert!(next.body["nextCursor"].is_null());
    daemon
        .get(&format!("/v1/projects/{site_id}/assets?limit=0"), &token)
        .await
        .expect(400);

    // A container app: the files under its assets directory, copied out of the image.
    let app = Repo::new(&[
        (
            "Dockerfile",
            "FROM busybox:latest\nWORKDIR /srv\nCOPY public /srv/public\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/srv/public\"]\n",
        ),
        ("public/index.html", "app"),
        ("public/js/app.js", "console.log(1)"),
    ]);
    let (app_id, _) = daemon.connected_project("with-assets", &app).await;
    let deploy = daemon.deploy(&app_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(deploy["plan"]["assetsDir"], "public", "{deploy}");
    let listed = daemon
        .get(&format!("/v1/projects/{app_id}/assets"), &token)
        .await
        .expect(200);
    let assets = listed.body["assets"].as_array().unwrap();
    assert_eq!(assets.len(), 2, "{}", listed.text);
    assert_eq!(assets[1]["path"], "js/app.js");
    assert_eq!(assets[1]["contentType"], "text/javascript; charset=utf-8");
    assert_eq!(
        assets[1]["sha256"],
        hex::encode(sha2::Sha256::digest(b"console.log(1)")).as_str()
    );
    assert_eq!(listed.body["deployId"], deploy["id"]);
    remove_installation_volumes(&daemon).await;
}

#[tokio::test]
async fn cli_manages_databases_volumes_and_backups() {
    let daemon = TestDaemon::start().await;
    daemon.create_project("shop").await;
    let url = format!("http://{}", daemon.api);
    let run = |list: &[&str]| {
        let args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        let env = vec![
            ("CANTILA_URL", url.clone()),
            ("CANTILA_TOKEN", daemon.admin_token.clone()),
        ];
        async move {
            let out = crate::cli::cantila(args.clone(), env).await;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{args:?}: {stderr}");
            stdout
        }
    };
    let out = run(&[
        "volumes",
        "create",
        "shop",
        "files",
        "--mount",
        "/srv/files",
    ])
    .await;
    assert!(out.contains("created files at /srv/files"), "{out}");
    assert!(run(&["volumes", "list", "shop"])
        .await
        .contains("/srv/files"));
    let out = run(&["db", "create", "shop", "--engine", "sqlite"]).await;
    assert!(out.contains("sqlite"), "{out}");
    let out = run(&["db", "credentials", "shop"]).await;
    assert_eq!(out.trim(), "DATABASE_URL=sqlite:///data/app.db");

    let out = run(&["backups", "create", "shop", "--volume", "files", "--json"]).await;
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created[0]["status"], "completed", "{out}");
    let id = created[0]["id"].as_str().unwrap().to_owned();
    assert!(run(&["backups", "list", "shop"]).await.contains(&id));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("files.tar");
    let out = run(&["backups", "download", &id, "-o", file.to_str().unwrap()]).await;
    assert!(
        out.contains(created[0]["sha256"].as_str().unwrap()),
        "{out}"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().len() as i64,
        created[0]["sizeBytes"].as_i64().unwrap()
    );
    let out = run(&["backups", "restore", &id, "--confirm", "shop"]).await;
    assert!(
        out.contains("safety") || out.contains("before the restore"),
        "{out}"
    );
    let out = run(&["backups", "schedule", "shop", "--set", "daily at 02:30"]).await;
    assert!(out.contains("daily at 02:30"), "{out}");

    let out = run(&["db", "delete", "shop", "--confirm", "shop"]).await;
    assert!(out.contains("deleted"), "{out}");
    run(&["volumes", "delete", "shop", "files", "--confirm", "shop"]).await;
    remove_installation_volumes(&daemon).await;
}

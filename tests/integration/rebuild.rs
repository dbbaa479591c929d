//! What should run comes back on an engine that lost it: a daemon is stopped, everything
//! its installation had on the engine (containers, images, volumes, networks) is removed,
//! with the data directory's rebuildable parts (`repos/`, `sites/`, `builds/`) and the
//! project's PostgreSQL role and database; started again on the same data directory, it
//! makes the database again with its recorded credentials, rebuilds each live release
//! (a git app from its commit, an image app by its digest, a static site), brings a service
//! back, and `POST /v1/backups/restore-latest` restores the data. A rebuild that cannot
//! work (its repository is gone) fails visibly, once.
//! Needs the engine, PostgreSQL (`scripts/ensure-postgres.sh`) and the test registry.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    data::{connect_as, pg_admin_url},
    deploys::Repo,
    registry_support::TestRegistry,
    support::{docker, remove_installation, wait_for, TestDaemon},
};

/// Polls a restore-latest run until it is done; returns it.
pub async fn wait_restore_run(daemon: &TestDaemon, token: &str, run_id: &str) -> Value {
    wait_for(
        Duration::from_secs(300),
        "the restore-latest run to finish",
        || async {
            let run = daemon
                .get(&format!("/v1/backups/restore-latest/{run_id}"), token)
                .await
                .expect(200)
                .body;
            (run["done"] == true).then_some(run)
        },
    )
    .await
}

/// The project's deploys with trigger `restore`, newest first.
async fn restore_deploys(daemon: &TestDaemon, project_id: &str) -> Vec<Value> {
    daemon
        .get(
            &format!("/v1/projects/{project_id}/deploys"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["trigger"] == "restore")
        .cloned()
        .collect()
}

/// Waits for the project's rebuild to end; returns it.
async fn rebuilt(daemon: &TestDaemon, project_id: &str) -> Value {
    wait_for(
        Duration::from_secs(300),
        &format!("a rebuild of {project_id} to finish"),
        || async {
            restore_deploys(daemon, project_id)
                .await
                .into_iter()
                .next()
                .filter(|d| {
                    ["running", "failed", "canceled"].contains(&d["status"].as_str().unwrap())
                })
        },
    )
    .await
}

/// Waits until the edge answers `host` `path` with `wanted`.
async fn serves(daemon: &TestDaemon, host: &str, path: &str, wanted: (u16, &str)) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let last = daemon.edge_get(host, path).await;
        if last.0 == wanted.0 && last.1.contains(wanted.1) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{host}{path}: wanted {wanted:?}, last {last:?}"
        );
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn deployed(daemon: &TestDaemon, project_id: &str) -> Value {
    let deploy = daemon.deploy(project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    deploy
}

/// The running containers of the project's service `name`.
fn service_containers(project_id: &str, name: &str) -> Vec<String> {
    docker(
        None,
        &[
            "ps",
            "-q",
            "--filter",
            &format!("label=cantila.project={project_id}"),
            "--filter",
            &format!("label=cantila.service={name}"),
        ],
    )
    .unwrap()
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// Writes `note` to `note.txt` in the Docker volume.
fn write_note(volume: &str, note: &str) {
    docker(
        None,
        &[
            "run",
            "--rm",
            "--volume",
            &format!("{volume}:/files"),
            "busybox:latest",
            "sh",
            "-c",
            &format!("echo {note} > /files/note.txt"),
        ],
    )
    .unwrap();
}

/// What `note.txt` in the Docker volume says.
fn read_note(volume: &str) -> String {
    docker(
        None,
        &[
            "run",
            "--rm",
            "--volume",
            &format!("{volume}:/files:ro"),
            "busybox:latest",
            "cat",
            "/files/note.txt",
        ],
    )
    .unwrap_or_else(|err| err)
}

async fn rows_of(user: &str, password: &str, database: &str) -> Result<Vec<String>, String> {
    let client = connect_as(user, password, database).await?;
    let rows = client
        .query("SELECT value FROM items ORDER BY value", &[])
        .await
        .map_err(|err| {
            err.as_db_error()
                .map(|db| db.message().to_owned())
                .unwrap_or_else(|| err.to_string())
        })?;
    Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect())
}

#[tokio::test]
async fn an_engine_that_lost_everything_gets_its_releases_databases_and_data_back() {
    let registry = TestRegistry::from_env();
    let pg = pg_admin_url();
    if let Err(err) = tokio_postgres::connect(&pg, tokio_postgres::NoTls).await {
        panic!("PostgreSQL is not reachable at the test admin URL ({err}); run scripts/ensure-postgres.sh");
    }
    let admin_url = pg.clone();
    let daemon = TestDaemon::start_with(move |config| {
        config.database.postgres.admin_url = Some(admin_url);
        // The test registry listens on loopback.
        config.git.allowed_networks = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let installation = daemon.dir.as_ref().unwrap().installation().to_owned();
    let token = daemon.admin_token.clone();

    // A git app with a service beside it.
    let git_repo = Repo::busybox("git app\n");
    let (git_id, _) = daemon.connected_project("gitapp", &git_repo).await;
    daemon
        .post(
            &format!("/v1/projects/{git_id}/services"),
            &token,
            json!({
                "name": "cache",
                "image": "busybox",
                "command": ["sh", "-c", "mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 6379 -h /www"],
                "health": { "type": "tcp" },
                "port": 6379
            }),
        )
        .await
        .expect(201);
    let git_deploy = deployed(&daemon, &git_id).await;

    // An app from an image in a registry.
    let repository = registry.unique_repository("app");
    let digest = registry.push_app(&repository, "1", "image app\n", &installation);
    daemon
        .post(
            "/v1/registries",
            &token,
            json!({ "server": registry.address, "username": registry.user, "password": registry.password }),
        )
        .await
        .expect(201);
    let image_id = daemon.create_project("imageapp").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    daemon
        .post(
            &format!("/v1/projects/{image_id}/image"),
            &token,
            json!({ "image": format!("{repository}:1") }),
        )
        .await
        .expect(200);
    let image_deploy = deployed(&daemon, &image_id).await;
    assert_eq!(image_deploy["imageDigest"], digest.as_str());

    // A static site.
    let site_repo = Repo::from_fixture("static-public");
    let (site_id, _) = daemon.connected_project("site", &site_repo).await;
    let site_deploy = deployed(&daemon, &site_id).await;

    // An app with a PostgreSQL database and a volume (busybox's httpd serves the volume's
    // files under /data), both holding data, backed up.
    let data_repo = Repo::busybox("data app\n");
    let (data_id, _) = daemon.connected_project("dataapp", &data_repo).await;
    daemon
        .post(
            &format!("/v1/projects/{data_id}/volumes"),
            &token,
            json!({ "name": "files", "mountPath": "/www/data" }),
        )
        .await
        .expect(201);
    let database = daemon
        .post(
            &format!("/v1/projects/{data_id}/database"),
            &token,
            json!({ "engine": "postgres" }),
        )
        .await
        .expect(201)
        .body;
    let database_name = database["database"].as_str().unwrap().to_owned();
    deployed(&daemon, &data_id).await;
    let credentials = daemon
        .get(
            &format!("/v1/projects/{data_id}/database/credentials"),
            &token,
        )
        .await
        .expect(200)
        .body;
    let (user, password) = (
        credentials["env"]["PGUSER"].as_str().unwrap().to_owned(),
        credentials["env"]["PGPASSWORD"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    {
        let client = connect_as(&user, &password, &database_name).await.unwrap();
        client
            .batch_execute(
                "CREATE TABLE items (value TEXT NOT NULL); INSERT INTO items VALUES ('kept'), ('also kept');",
            )
            .await
            .unwrap();
    }
    write_note(&format!("cantila_{data_id}_files"), "kept note");
    let backups = daemon
        .post(
            &format!("/v1/projects/{data_id}/backups"),
            &token,
            json!({}),
        )
        .await
        .expect(202)
        .body;
    for backup in backups["backups"].as_array().unwrap() {
        let done = crate::data::wait_backup(&daemon, backup["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "completed", "{done}");
    }

    // A git app whose repository will be gone: its rebuild cannot work.
    let gone_repo = Repo::busybox("gone\n");
    let (gone_id, _) = daemon.connected_project("gone", &gone_repo).await;
    deployed(&daemon, &gone_id).await;
    // Its volume is backed up; as no release of it will run again, nothing mounts the
    // volume before restore-latest puts its data back.
    daemon
        .post(
            &format!("/v1/projects/{gone_id}/volumes"),
            &token,
            json!({ "name": "files", "mountPath": "/www/data" }),
        )
        .await
        .expect(201);
    let gone_volume = format!("cantila_{gone_id}_files");
    write_note(&gone_volume, "gone note");
    let backup = daemon
        .post(
            &format!("/v1/projects/{gone_id}/backups"),
            &token,
            json!({}),
        )
        .await
        .expect(202)
        .body;
    let done = crate::data::wait_backup(&daemon, backup["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");

    let hosts = [
        ("gitapp.admin.test.local", "/", "git app"),
        ("imageapp.admin.test.local", "/", "image app"),
        ("site.admin.test.local", "/", "hello from public/"),
        ("dataapp.admin.test.local", "/", "data app"),
        ("dataapp.admin.test.local", "/data/note.txt", "kept note"),
    ];
    for (host, path, body) in hosts {
        serves(&daemon, host, path, (200, body)).await;
    }
    let service_before = service_containers(&git_id, "cache");
    assert_eq!(service_before.len(), 1, "{service_before:?}");

    // The engine loses everything of the installation, the data directory its rebuildable
    // parts, and the PostgreSQL server the project's role and database.
    let (dir, config) = daemon.stop().await;
    let left = remove_installation(&installation, None, None);
    assert!(left.is_empty(), "left on the engine: {left:?}");
    for release in [&git_deploy, &image_deploy] {
        let image = release["image"].as_str().unwrap();
        assert!(
            docker(None, &["image", "inspect", image]).is_err(),
            "{image} is gone"
        );
    }
    assert!(site_deploy["image"].is_null());
    for part in ["repos", "sites", "builds"] {
        let path = config.data_dir.join(part);
        if path.exists() {
            std::fs::remove_dir_all(&path).unwrap();
        }
    }
    cantila::database::postgres::drop(&pg, &database_name)
        .await
        .unwrap();
    assert!(connect_as(&user, &password, &database_name).await.is_err());
    drop(gone_repo);

    let daemon = TestDaemon::start_in(dir, config).await;
    // The database is back, with the recorded credentials (empty: its data comes back
    // with restore-latest).
    wait_for(
        Duration::from_secs(60),
        "the database to be made again, empty",
        || async {
            let empty = rows_of(&user, &password, &database_name).await;
            empty
                .as_ref()
                .is_err_and(|e| e.contains("\"items\" does not exist"))
                .then_some(())
        },
    )
    .await;

    for project_id in [&git_id, &image_id, &site_id, &data_id] {
        let rebuild = rebuilt(&daemon, project_id).await;
        assert_eq!(rebuild["status"], "running", "{rebuild}");
    }
    let image_rebuild = rebuilt(&daemon, &image_id).await;
    assert_eq!(
        image_rebuild["imageDigest"],
        digest.as_str(),
        "pulled again by the recorded digest"
    );
    assert_eq!(
        rebuilt(&daemon, &git_id).await["commitSha"],
        git_deploy["commitSha"],
        "built again from the recorded commit"
    );
    let gone_rebuild = rebuilt(&daemon, &gone_id).await;
    assert_eq!(gone_rebuild["status"], "failed", "{gone_rebuild}");
    assert_eq!(gone_rebuild["failedStep"], "fetch", "{gone_rebuild}");
    for (host, path, body) in &hosts[..4] {
        serves(&daemon, host, path, (200, body)).await;
    }
    // The volume came back empty.
    serves(
        &daemon,
        "dataapp.admin.test.local",
        "/data/note.txt",
        (404, ""),
    )
    .await;
    // The service came back through its own reconciler.
    let service_after = wait_for(
        Duration::from_secs(120),
        "the service to run again",
        || async {
            let running = service_containers(&git_id, "cache");
            (running.len() == 1).then_some(running)
        },
    )
    .await;
    assert_ne!(service_after, service_before);

    // Another account names the project: as if it did not exist.
    let intruder = daemon.other_account_token("mallory", cantila::names::Scope::Admin);
    let refused = daemon
        .post(
            "/v1/backups/restore-latest",
            &intruder,
            json!({ "projects": [data_id] }),
        )
        .await
        .expect(404);
    assert!(
        refused.error_message().contains(&data_id),
        "{}",
        refused.text
    );
    daemon
        .post(
            "/v1/backups/restore-latest",
            &token,
            json!({ "projects": [] }),
        )
        .await
        .expect(422);

    // The data comes back with one request.
    let run = daemon
        .post("/v1/backups/restore-latest", &token, json!({}))
        .await
        .expect(202)
        .body;
    let run_id = run["id"].as_str().unwrap().to_owned();
    daemon
        .get(&format!("/v1/backups/restore-latest/{run_id}"), &intruder)
        .await
        .expect(404);
    let row = |run: &Value, project: &str, target: Option<&str>| -> Value {
        run["restores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["projectId"] == project && r["target"].as_str() == target)
            .unwrap_or_else(|| panic!("no row for {project} {target:?}: {run}"))
            .clone()
    };
    for project in [&git_id, &image_id, &site_id] {
        assert_eq!(row(&run, project, None)["status"], "nothing-to-restore");
    }
    let run = wait_restore_run(&daemon, &token, &run_id).await;
    for (project, target) in [
        (&data_id, "database"),
        (&data_id, "volume:files"),
        (&gone_id, "volume:files"),
    ] {
        let restored = row(&run, project, Some(target));
        assert_eq!(restored["status"], "restored", "{run}");
        assert!(restored["backupId"].is_string());
    }
    // A volume nothing mounted yet was made with the installation's labels, then filled.
    assert_eq!(read_note(&gone_volume).trim(), "gone note");
    let labelled = docker(
        None,
        &[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=cantila.installation={installation}"),
            "--filter",
            &format!("label=cantila.project={gone_id}"),
        ],
    )
    .unwrap();
    assert_eq!(labelled.trim(), gone_volume);
    assert_eq!(
        rows_of(&user, &password, &database_name).await.unwrap(),
        ["also kept", "kept"]
    );
    serves(
        &daemon,
        "dataapp.admin.test.local",
        "/data/note.txt",
        (200, "kept note"),
    )
    .await;

    // The CLI does the same for one project, and waits with progress. A row written since
    // goes: the newest backup is still the one taken before the loss, never the safety
    // backups the first run took of the empty database.
    connect_as(&user, &password, &database_name)
        .await
        .unwrap()
        .batch_execute("INSERT INTO items VALUES ('written since')")
        .await
        .unwrap();
    let out = crate::cli::cantila(
        [
            "backups",
            "restore-latest",
            "--project",
            "dataapp",
            "--wait",
        ]
        .map(str::to_owned)
        .to_vec(),
        vec![
            ("CANTILA_URL", daemon.url("")),
            ("CANTILA_TOKEN", token.clone()),
        ],
    )
    .await;
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains(&format!("{data_id} volume:files"))
            && printed.contains("restored")
            && printed.trim_end().ends_with("done"),
        "{printed}"
    );
    assert_eq!(
        rows_of(&user, &password, &database_name).await.unwrap(),
        ["also kept", "kept"]
    );

    // Each lost release was rebuilt once; the one that could not be is not tried again.
    for project_id in [&git_id, &image_id, &site_id, &data_id, &gone_id] {
        assert_eq!(
            restore_deploys(&daemon, project_id).await.len(),
            1,
            "{project_id}"
        );
    }

    crate::data::clean_up(&daemon, &[&data_id, &gone_id]).await;
}

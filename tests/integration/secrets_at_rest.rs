//! Secrets at rest: values set through the API (secret env vars, a preview's env, the
//! webhook secret, a repository access token, a PostgreSQL database's password, a build
//! secret, registry credentials' password, an image source's webhook secret) reach
//! what uses them, yet their bytes are found nowhere in the SQLite file or its WAL, read
//! as bytes while the daemon runs and again after it checkpointed on stop. A plain value
//! written beside them (the project's name) is found, so the search reads what the store
//! holds.

use serde_json::json;

use crate::{
    data::{clean_up, data_daemon},
    deploys::{busybox_app, Repo},
    support::wait_until,
};

/// The database file and its WAL, as bytes (the WAL may be absent after a checkpoint).
fn store_bytes(data_dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(data_dir.join("cantila.db")).expect("the store's file");
    if let Ok(wal) = std::fs::read(data_dir.join("cantila.db-wal")) {
        bytes.extend_from_slice(&wal);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Each secret, by what it is, that the bytes contain.
fn found<'a>(bytes: &[u8], secrets: &'a [(&'a str, String)]) -> Vec<&'a str> {
    secrets
        .iter()
        .filter(|(_, value)| contains(bytes, value))
        .map(|(what, _)| *what)
        .collect()
}

#[tokio::test]
async fn secrets_set_through_the_api_are_sealed_in_the_sqlite_file_and_its_wal() {
    let daemon = data_daemon().await;
    let random = || cantila::ids::random_base62(24);
    let project_name = format!("vault-{}", random().to_ascii_lowercase());
    let files = busybox_app("vault\n");
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let repo = Repo::new(&files);
    repo.commit_on_branch("preview-me", &[("www/index.html", "preview\n")], "preview");

    let project = daemon.create_project(&project_name).await;
    let project_id = project["id"].as_str().unwrap().to_owned();
    let access_token = format!("glpat-{}", random());
    let connected = daemon
        .post(
            &format!("/v1/projects/{project_id}/git"),
            &daemon.admin_token,
            json!({
                "repo": repo.path().display().to_string(),
                "branch": "main",
                "accessToken": access_token,
            }),
        )
        .await
        .expect(200);
    assert_eq!(connected.body["accessTokenSet"], true, "{}", connected.text);
    assert!(!connected.text.contains(&access_token));
    let webhook_secret = connected.body["webhookSecret"].as_str().unwrap().to_owned();

    // Registry credentials, and the registry webhook secret of an image project (the
    // images tests pull with such credentials).
    let registry_password = format!("registry-{}", random());
    let added = daemon
        .post(
            "/v1/registries",
            &daemon.admin_token,
            json!({ "server": "registry.example.com", "username": "ci", "password": registry_password }),
        )
        .await
        .expect(201);
    assert!(!added.text.contains(&registry_password));
    let listed = daemon
        .get("/v1/registries", &daemon.admin_token)
        .await
        .expect(200);
    assert!(!listed.text.contains(&registry_password));
    let image_project = daemon
        .create_project(&format!("pulled-{}", random().to_ascii_lowercase()))
        .await;
    let image_webhook_secret = daemon
        .post(
            &format!(
                "/v1/projects/{}/image",
                image_project["id"].as_str().unwrap()
            ),
            &daemon.admin_token,
            json!({ "image": "registry.example.com/team/app:1" }),
        )
        .await
        .expect(200)
        .body["webhookSecret"]
        .as_str()
        .unwrap()
        .to_owned();

    let greeting = format!("greeting-{}", random());
    let api_key = format!("sk_live_{}", random());
    daemon
        .post(
            &format!("/v1/projects/{project_id}/env"),
            &daemon.admin_token,
            json!({ "vars": {
                "GREETING": { "value": greeting, "secret": true },
                "STRIPE_API_KEY": api_key,
            } }),
        )
        .await
        .expect(200);
    let database = daemon
        .post(
            &format!("/v1/projects/{project_id}/database"),
            &daemon.admin_token,
            json!({ "engine": "postgres" }),
        )
        .await
        .expect(201);
    let credentials = daemon
        .get(
            &format!("/v1/projects/{project_id}/database/credentials"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let password = credentials["env"]["PGPASSWORD"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(password.len() >= 32, "{credentials}");
    assert!(!database.text.contains(&password));

    // A release takes them all into its env snapshot; the app got the secret value.
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let host = format!("{project_name}.admin.test.local");
    assert_eq!(
        daemon.edge_get(&host, "/env.txt").await,
        (200, format!("{greeting}\n"))
    );
    let preview_secret = format!("preview-{}", random());
    let preview = daemon
        .post(
            &format!("/v1/projects/{project_id}/previews"),
            &daemon.admin_token,
            json!({ "branch": "preview-me", "env": { "GREETING": preview_secret } }),
        )
        .await
        .expect(201)
        .body;
    let preview_deploy = daemon
        .wait_deploy(preview["deployId"].as_str().unwrap())
        .await;
    assert_eq!(preview_deploy["status"], "running", "{preview_deploy}");
    let preview_host = preview["hostname"].as_str().unwrap().to_owned();
    assert_eq!(
        daemon.edge_get(&preview_host, "/env.txt").await,
        (200, format!("{preview_secret}\n"))
    );

    // Set after the deploys: a build with build secrets needs BuildKit.
    let build_secret = format!("build-{}", random());
    daemon
        .call(
            reqwest::Method::PUT,
            &format!("/v1/projects/{project_id}/build-secrets/NPM_TOKEN"),
            Some(&daemon.admin_token),
            Some(json!({ "value": build_secret })),
        )
        .await
        .expect(200);

    let secrets = [
        ("the build secret", build_secret),
        ("the secret env value", greeting),
        ("the secret-looking env value", api_key),
        ("the preview's env value", preview_secret),
        ("the webhook secret", webhook_secret),
        ("the access token", access_token),
        ("the database password", password),
        ("the registry password", registry_password),
        ("the image webhook secret", image_webhook_secret),
    ];
    let data_dir = daemon.data_dir().to_owned();
    let running = store_bytes(&data_dir);
    assert!(
        contains(&running, &project_name),
        "the project's name is in the store's bytes: the search reads what it holds"
    );
    assert_eq!(found(&running, &secrets), Vec::<&str>::new());

    // The same after the daemon stopped and checkpointed the WAL into the file.
    clean_up(&daemon, &[&project_id]).await;
    wait_until(
        std::time::Duration::from_secs(30),
        "the database is gone",
        || async {
            daemon
                .get(
                    &format!("/v1/projects/{project_id}/database"),
                    &daemon.admin_token,
                )
                .await
                .status
                == 404
        },
    )
    .await;
    let (dir, _) = daemon.stop().await;
    let stopped = store_bytes(&data_dir);
    assert!(contains(&stopped, &project_name));
    assert_eq!(found(&stopped, &secrets), Vec::<&str>::new());
    drop(dir);
}

//! Deploys end to end on the real engine: a local git repository, a signed push webhook,
//! the build streamed over SSE, the app answering HTTP from its container, failures that
//! leave the previous release serving, and recovery after a crash mid-build.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use cantila::runtime::docker::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{
    build_step_running, images_built_with, processes_running_command, wait_until, TestDaemon,
    TestDir,
};

/// A git repository in a temp dir, made with git2, on branch `main`.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_opts(
            dir.path(),
            git2::RepositoryInitOptions::new().initial_head("main"),
        )
        .unwrap();
        drop(repo);
        let me = Self { dir };
        me.commit(files, "initial commit");
        me
    }

    /// A repository holding `busybox_app(body)`.
    pub fn busybox(body: &str) -> Self {
        let files = busybox_app(body);
        Self::new(&owned(&files))
    }

    /// Copies a fixture app from tests/fixtures/apps into a new repository.
    pub fn from_fixture(name: &str) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/apps")
            .join(name);
        let mut files = Vec::new();
        collect(&root, &root, &mut files);
        let borrowed: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        Self::new(&borrowed)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the files and commits them; returns the commit sha.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        let repo = git2::Repository::open(self.path()).unwrap();
        for (path, content) in files {
            let full = self.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, content).unwrap();
        }
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = git2::Signature::now("Test", "test@example.com").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(
            Some("HEAD"),
            &signature,
            &signature,
            message,
            &tree,
            &parents,
        )
        .unwrap()
        .to_string()
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            files.push((relative, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// A busybox app: serves `www/` on 8080 and writes `$GREETING` to /www/env.txt at start.
pub fn busybox_app(body: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"sh\", \"-c\", \"echo \\\"$GREETING\\\" > /www/env.txt && exec httpd -f -p 8080 -h /www\"]\n".to_owned(),
        ),
        ("www/index.html", body.to_owned()),
    ]
}

fn owned<'a>(files: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    files.iter().map(|(p, c)| (*p, c.as_str())).collect()
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl TestDaemon {
    /// Creates a project connected to `repo`; returns (project id, webhook secret).
    pub async fn connected_project(&self, name: &str, repo: &Repo) -> (String, String) {
        let project = self.create_project(name).await;
        let id = project["id"].as_str().unwrap().to_owned();
        let connected = self
            .post(
                &format!("/v1/projects/{id}/git"),
                &self.admin_token,
                json!({ "repo": repo.path().display().to_string(), "branch": "main" }),
            )
            .await
            .expect(200)
            .body;
        (id, connected["webhookSecret"].as_str().unwrap().to_owned())
    }

    /// Polls the deploy until it is final; returns its view.
    pub async fn wait_deploy(&self, deploy_id: &str) -> Value {
        for _ in 0..1200 {
            let deploy = self
                .get(&format!("/v1/deploys/{deploy_id}"), &self.admin_token)
                .await
                .expect(200)
                .body;
            if ["running", "failed", "canceled", "superseded"]
                .contains(&deploy["status"].as_str().unwrap())
            {
                return deploy;
            }
            // The poll interval: the loop checks its condition again.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("deploy {deploy_id} did not finish within 5 minutes");
    }

    pub async fn deploy(&self, project_id: &str, git_ref: Option<&str>) -> Value {
        let body = match git_ref {
            Some(r) => json!({ "ref": r }),
            None => json!({}),
        };
        let created = self
            .post(
                &format!("/v1/projects/{project_id}/deploy"),
                &self.admin_token,
                body,
            )
            .await
            .expect(202)
            .body;
        assert_eq!(created["status"], "queued");
        self.wait_deploy(created["deployId"].as_str().unwrap())
            .await
    }
}

/// The body the deploy's web instance answers with at `path`.
pub async fn app_answer(deploy_id: &str, path: &str) -> Option<String> {
    let engine = Engine::connect().await.unwrap();
    let containers = engine
        .containers(&[("cantila.deploy", deploy_id)])
        .await
        .unwrap();
    let container = containers.first()?;
    // An instance is attached to one network: its project's.
    let status = engine.inspect(&container.id).await.ok()?;
    let ip = status.addresses.values().next()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let res = client
        .get(format!("http://{ip}:8080{path}"))
        .send()
        .await
        .ok()?;
    res.text().await.ok()
}

pub async fn send_webhook(
    daemon: &TestDaemon,
    project_id: &str,
    secret: &str,
    event: &str,
    delivery: &str,
    body: Value,
) -> crate::support::Res {
    let bytes = serde_json::to_vec(&body).unwrap();
    let res = daemon
        .request(
            reqwest::Method::POST,
            &format!("/v1/projects/{project_id}/git/webhook"),
        )
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", sign(secret, &bytes))
        .body(bytes)
        .send()
        .await
        .unwrap();
    crate::support::read(res).await
}

#[tokio::test]
async fn a_signed_push_deploys_the_app_and_it_answers_http() {
    let daemon = TestDaemon::start().await;
    let files = busybox_app("hello from cantila\n");
    let repo = Repo::new(&owned(&files));
    let (project_id, secret) = daemon.connected_project("hooked", &repo).await;
    assert!(secret.starts_with("whsec_"));

    let git = daemon
        .get(
            &format!("/v1/projects/{project_id}/git"),
            &daemon.admin_token,
        )
        .await
        .expect(200);
    assert_eq!(git.body["branch"], "main");
    assert_eq!(git.body["secretSet"], true);
    assert!(
        !git.text.contains(&secret),
        "the secret is never shown again"
    );

    // Unsigned or wrongly signed deliveries are refused.
    let body =
        json!({ "ref": "refs/heads/main", "after": "0000000000000000000000000000000000000000" });
    let res = daemon
        .request(
            reqwest::Method::POST,
            &format!("/v1/projects/{project_id}/git/webhook"),
        )
        .header("x-github-event", "push")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = send_webhook(
        &daemon,
        &project_id,
        "whsec_wrong",
        "push",
        "d0",
        body.clone(),
    )
    .await;
    assert_eq!(res.status, 401);

    let res = send_webhook(
        &daemon,
        &project_id,
        &secret,
        "ping",
        "d1",
        json!({ "zen": "hi" }),
    )
    .await
    .expect(200);
    assert_eq!(res.body["status"], "pong");
    let res = send_webhook(
        &daemon,
        &project_id,
        &secret,
        "push",
        "d2",
        json!({ "ref": "refs/heads/other", "after": "1111111111111111111111111111111111111111" }),
    )
    .await
    .expect(200);
    assert_eq!(res.body["status"], "ignored");

    let sha = git2::Repository::open(repo.path())
        .unwrap()
        .head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string();
    let push = json!({ "ref": "refs/heads/main", "after": sha, "deleted": false });
    let res = send_webhook(&daemon, &project_id, &secret, "push", "d3", push.clone())
        .await
        .expect(202);
    assert_eq!(res.body["status"], "queued");
    let deploy_id = res.body["deployId"].as_str().unwrap().to_owned();
    // A redelivery of the same id is recognised.
    let again = send_webhook(&daemon, &project_id, &secret, "push", "d3", push)
        .await
        .expect(200);
    assert_eq!(again.body["status"], "duplicate");

    let deploy = daemon.wait_deploy(&deploy_id).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(deploy["commitSha"], sha);
    assert_eq!(deploy["commitMessage"], "initial commit");
    assert_eq!(deploy["trigger"], "webhook");
    assert_eq!(deploy["plan"]["builder"], "dockerfile");
    assert_eq!(deploy["plan"]["port"], 8080);
    assert!(
        deploy["buildingAt"].is_string()
            && deploy["releasingAt"].is_string()
            && deploy["finishedAt"].is_string()
    );
    assert_eq!(
        app_answer(&deploy_id, "/").await.as_deref(),
        Some("hello from cantila\n")
    );

    let project = daemon
        .get(&format!("/v1/projects/{project_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(project["status"], "running");
    let git = daemon
        .get(
            &format!("/v1/projects/{project_id}/git"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(git["lastDelivery"]["event"], "push");

    // A rotated secret replaces the old one.
    let rotated = daemon
        .post(
            &format!("/v1/projects/{project_id}/git/rotate-secret"),
            &daemon.admin_token,
            json!({}),
        )
        .await
        .expect(200)
        .body;
    let new_secret = rotated["webhookSecret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(
        send_webhook(&daemon, &project_id, &secret, "ping", "d4", json!({}))
            .await
            .status,
        401
    );
    assert_eq!(
        send_webhook(&daemon, &project_id, new_secret, "ping", "d5", json!({}))
            .await
            .status,
        200
    );

    // A second deploy replaces the first: the old instance is gone, the new one answers.
    repo.commit(&[("www/index.html", "version two\n")], "second");
    let second = daemon.deploy(&project_id, None).await;
    assert_eq!(second["status"], "running", "{second}");
    let second_id = second["id"].as_str().unwrap();
    assert_eq!(
        app_answer(second_id, "/").await.as_deref(),
        Some("version two\n")
    );
    // The old instance drains briefly, then is removed.
    let removed = containers_gone("cantila.deploy", &deploy_id).await;
    assert!(removed, "the old instance was removed");
    let first = daemon
        .get(&format!("/v1/deploys/{deploy_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(first["status"], "superseded");
    cleanup(&project_id).await;
}

#[tokio::test]
async fn deploy_stream_sends_the_log_as_server_sent_events_and_replays() {
    let daemon = TestDaemon::start().await;
    let files = busybox_app("streamed\n");
    let repo = Repo::new(&owned(&files));
    let (project_id, _) = daemon.connected_project("streamed", &repo).await;
    let res = daemon
        .request(
            reqwest::Method::POST,
            &format!("/v1/projects/{project_id}/deploy/stream"),
        )
        .bearer_auth(&daemon.admin_token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // The events URL of the deploy just started, for resuming with Last-Event-ID.
    let events_url = res.headers()["content-location"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = res.text().await.unwrap();
    let events = parse_sse(&text);
    let kinds: Vec<&str> = events.iter().map(|(kind, _, _)| kind.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"done"), "{text}");
    let statuses: Vec<String> = events
        .iter()
        .filter(|(kind, _, _)| kind == "status")
        .map(|(_, _, data)| data["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses,
        ["queued", "building", "releasing", "running"],
        "{text}"
    );
    assert!(
        events.iter().any(
            |(kind, _, data)| kind == "log" && data["line"].as_str().unwrap().contains("FROM ")
        ),
        "{text}"
    );
    let ids: Vec<i64> = events
        .iter()
        .filter(|(kind, _, _)| kind != "done")
        .map(|(_, id, _)| id.unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids are consecutive: {ids:?}"
    );

    // The stored log replays the same events; Last-Event-ID resumes after one.
    let deploys = daemon
        .get(
            &format!("/v1/projects/{project_id}/deploys"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let deploy_id = deploys["deploys"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(events_url, format!("/v1/deploys/{deploy_id}/events"));
    let replay = daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/deploys/{deploy_id}/events"),
        )
        .bearer_auth(&daemon.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(parse_sse(&replay).len(), events.len());
    let resumed = daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/deploys/{deploy_id}/events"),
        )
        .bearer_auth(&daemon.admin_token)
        .header("last-event-id", ids[ids.len() - 3].to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        parse_sse(&resumed).len(),
        3,
        "two lines and done: {resumed}"
    );

    // A redeploy of the same commit with the same plan reuses the image.
    let first = daemon
        .get(&format!("/v1/deploys/{deploy_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    let again = daemon.deploy(&project_id, None).await;
    assert_eq!(again["status"], "running", "{again}");
    assert_eq!(again["image"], first["image"], "the same image is reused");
    let log = events_text(&daemon, again["id"].as_str().unwrap()).await;
    assert!(log.contains("reusing image"), "{log}");
    assert!(!log.contains("FROM "), "nothing was rebuilt: {log}");
    cleanup(&project_id).await;
}

/// (event, id, data) of each SSE event.
pub fn parse_sse(text: &str) -> Vec<(String, Option<i64>, Value)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut kind = String::from("message");
        let mut id = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(rest) = line.strip_prefix("event:") {
                kind = rest.trim().to_owned();
            } else if let Some(rest) = line.strip_prefix("id:") {
                id = rest.trim().parse().ok();
            } else if let Some(rest) = line.strip_prefix("data:") {
                data.push_str(rest.trim());
            }
        }
        if !data.is_empty() {
            events.push((kind, id, serde_json::from_str(&data).unwrap_or(Value::Null)));
        }
    }
    events
}

#[tokio::test]
async fn failures_keep_the_previous_release_serving() {
    let daemon = TestDaemon::start_with(|c| c.deploy.health_timeout_secs = 6).await;
    let files = busybox_app("stable release\n");
    let repo = Repo::new(&owned(&files));
    let (project_id, _) = daemon.connected_project("sturdy", &repo).await;
    let good = daemon.deploy(&project_id, None).await;
    assert_eq!(good["status"], "running", "{good}");
    let good_id = good["id"].as_str().unwrap().to_owned();

    // A broken Dockerfile fails at build with the builder's error in the log.
    repo.commit(
        &[(
            "Dockerfile",
            "FROM busybox:latest\nRUN echo about to fail && exit 7\n",
        )],
        "broken build",
    );
    let broken = daemon.deploy(&project_id, None).await;
    assert_eq!(
        (broken["status"].as_str(), broken["failedStep"].as_str()),
        (Some("failed"), Some("build")),
        "{broken}"
    );
    assert!(broken["error"].as_str().unwrap().contains("7"), "{broken}");
    let log = events_text(&daemon, broken["id"].as_str().unwrap()).await;
    assert!(log.contains("about to fail"), "{log}");
    assert_eq!(
        app_answer(&good_id, "/").await.as_deref(),
        Some("stable release\n")
    );

    // An app that never listens fails its health check; the old release keeps answering.
    repo.commit(&[("Dockerfile", "FROM busybox:latest\nEXPOSE 8080\nCMD [\"sh\", \"-c\", \"echo not listening; sleep 600\"]\n")], "never listens");
    let silent = daemon.deploy(&project_id, None).await;
    assert_eq!(
        (silent["status"].as_str(), silent["failedStep"].as_str()),
        (Some("failed"), Some("release")),
        "{silent}"
    );
    assert!(
        silent["error"].as_str().unwrap().contains("did not answer"),
        "{silent}"
    );
    let silent_id = silent["id"].as_str().unwrap();
    let engine = Engine::connect().await.unwrap();
    assert!(
        engine
            .containers(&[("cantila.deploy", silent_id)])
            .await
            .unwrap()
            .is_empty(),
        "the failed instance is removed"
    );
    assert_eq!(
        app_answer(&good_id, "/").await.as_deref(),
        Some("stable release\n")
    );
    let project = daemon
        .get(&format!("/v1/projects/{project_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(project["status"], "running");

    // A release command runs once before the switch; a failing one switches nothing.
    repo.commit(
        &files_with(&files, "Procfile", "release: echo migrating the database\n"),
        "release ok",
    );
    let migrated = daemon.deploy(&project_id, None).await;
    assert_eq!(migrated["status"], "running", "{migrated}");
    let log = events_text(&daemon, migrated["id"].as_str().unwrap()).await;
    assert!(log.contains("release: migrating the database"), "{log}");
    let migrated_id = migrated["id"].as_str().unwrap().to_owned();
    repo.commit(
        &[("Procfile", "release: echo migration broke; exit 4\n")],
        "release fails",
    );
    let broken_release = daemon.deploy(&project_id, None).await;
    assert_eq!(
        (
            broken_release["status"].as_str(),
            broken_release["failedStep"].as_str()
        ),
        (Some("failed"), Some("release")),
        "{broken_release}"
    );
    assert!(
        broken_release["error"].as_str().unwrap().contains("code 4"),
        "{broken_release}"
    );
    assert!(events_text(&daemon, broken_release["id"].as_str().unwrap())
        .await
        .contains("migration broke"));
    assert_eq!(
        app_answer(&migrated_id, "/").await.as_deref(),
        Some("stable release\n")
    );

    // A deploy of a branch that does not exist fails at fetch with a clear reason.
    let missing = daemon.deploy(&project_id, Some("no-such-branch")).await;
    assert_eq!(missing["failedStep"], "fetch", "{missing}");
    assert!(
        missing["error"]
            .as_str()
            .unwrap()
            .contains("no-such-branch"),
        "{missing}"
    );
    cleanup(&project_id).await;
}

#[tokio::test]
async fn env_vars_are_masked_pending_and_reach_the_app() {
    let daemon = TestDaemon::start().await;
    let files = busybox_app("env\n");
    let repo = Repo::new(&owned(&files));
    let (project_id, _) = daemon.connected_project("envy", &repo).await;
    let path = format!("/v1/projects/{project_id}/env");
    let set = daemon
        .post(&path, &daemon.admin_token, json!({ "vars": { "GREETING": "bonjour", "STRIPE_API_KEY": "sk_test_123", "PLAIN": { "value": "x", "secret": true } } }))
        .await
        .expect(200)
        .body;
    assert_eq!(set["vars"]["GREETING"], "bonjour");
    assert_eq!(
        set["vars"]["STRIPE_API_KEY"], "********",
        "secret-looking keys are masked"
    );
    assert_eq!(set["vars"]["PLAIN"], "********");
    assert_eq!(
        set["pending"],
        json!(["GREETING", "PLAIN", "STRIPE_API_KEY"])
    );
    let read = daemon.token("read").await;
    let as_read = daemon.get(&path, &read).await.expect(200);
    assert_eq!(
        as_read.body["vars"]["GREETING"], "********",
        "read tokens see no values"
    );
    assert!(!as_read.text.contains("sk_test_123"));
    daemon
        .post(&path, &read, json!({ "vars": { "A": "b" } }))
        .await
        .expect(403);
    daemon
        .post(
            &path,
            &daemon.admin_token,
            json!({ "vars": { "PORT": "1" } }),
        )
        .await
        .expect(422);
    daemon
        .post(
            &path,
            &daemon.admin_token,
            json!({ "vars": { "1BAD": "1" } }),
        )
        .await
        .expect(422);

    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert!(deploy["plan"]["envKeys"]
        .as_array()
        .unwrap()
        .contains(&json!("GREETING")));
    assert!(
        !deploy.to_string().contains("bonjour"),
        "plans never carry values"
    );
    let answer = app_answer(deploy["id"].as_str().unwrap(), "/env.txt").await;
    assert_eq!(answer.as_deref(), Some("bonjour\n"));
    let after = daemon
        .get(&path, &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(after["pending"], json!([]));
    let changed = daemon
        .post(
            &path,
            &daemon.admin_token,
            json!({ "vars": { "GREETING": null } }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(changed["pending"], json!(["GREETING"]));

    // Deleting the project removes its instances and its mirror.
    daemon
        .delete(&format!("/v1/projects/{project_id}"), &daemon.admin_token)
        .await
        .expect(204);
    let gone = containers_gone("cantila.project", &project_id).await;
    assert!(gone, "the deleted project's containers are removed");
    let mirror = daemon
        .data_dir()
        .join("repos")
        .join(format!("{project_id}.git"));
    for _ in 0..50 {
        if !mirror.exists() {
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!mirror.exists(), "the mirror is removed");
}

#[tokio::test]
async fn a_crash_mid_build_leaves_a_failed_deploy_and_no_orphans() {
    let dir = TestDir::new();
    let config = crate::support::test_config(dir.path());
    // Build steps carry no labels (the build's labels go on its final image), so the test
    // finds the build's work by a marker in its steps' commands: BuildKit runs a step as a
    // process on this machine, in no container the engine lists.
    let marker = format!("mid-build-{}", cantila::ids::random_base62(10));
    let first_step = format!("echo {marker} > /first-step");
    let sleeping_step = format!("sleep 30 && echo {marker}");
    let repo = Repo::new(&[(
        "Dockerfile",
        &format!(
            "FROM busybox:latest\nRUN {first_step}\nRUN {sleeping_step}\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\"]\n"
        ),
    )]);
    // The real binary, so `kill -9` ends everything it runs, as a crash would.
    let binary = crate::support::BinaryDaemon::start(&config).await;
    let project_id = binary.connected_project("crashy", repo.path()).await;
    let deploy_id = binary.deploy(&project_id).await;
    binary.wait_status(&deploy_id, "building").await;
    // Mid-build: the second step runs.
    wait_until(
        Duration::from_secs(120),
        "the build's sleeping step runs",
        || async { !processes_running_command(&sleeping_step).is_empty() },
    )
    .await;
    assert!(config.builds_dir().join(&deploy_id).exists());
    binary.kill9();

    let daemon = TestDaemon::start_in(dir, config).await;
    let deploy = daemon.wait_deploy(&deploy_id).await;
    assert_eq!(deploy["status"], "failed", "{deploy}");
    assert!(
        deploy["error"].as_str().unwrap().contains("interrupted"),
        "{deploy}"
    );
    // The project's status follows its failed deploy a moment later (recovery records the
    // deploy's failure, then the project's).
    wait_until(
        Duration::from_secs(30),
        "the project's status is failed",
        || async {
            daemon
                .get(&format!("/v1/projects/{project_id}"), &daemon.admin_token)
                .await
                .expect(200)
                .body["status"]
                == "failed"
        },
    )
    .await;
    // The engine ends the build whose client died: its step's process goes, and the build
    // never completes into an image of the failed deploy.
    wait_until(
        Duration::from_secs(60),
        "the crashed build's step ends",
        || async { !build_step_running(&sleeping_step) },
    )
    .await;
    let engine = Engine::connect().await.unwrap();
    assert!(engine
        .containers(&[("cantila.deploy", &deploy_id)])
        .await
        .unwrap()
        .is_empty());
    let tag = format!("cantila/admin/crashy:{deploy_id}");
    assert_eq!(engine.image_id(&tag).await.unwrap(), None, "{tag} exists");
    assert_eq!(
        crate::support::docker(
            None,
            &[
                "images",
                "-aq",
                "--filter",
                &format!("label=cantila.deploy={deploy_id}")
            ]
        )
        .unwrap()
        .trim(),
        "",
        "an image of the interrupted deploy exists"
    );
    assert!(
        images_built_with(&sleeping_step).is_empty(),
        "the interrupted step made an image"
    );
    // The next start removed the build's scratch copy of the source.
    assert!(!daemon.config.builds_dir().join(&deploy_id).exists());
    // The finished step stays in BuildKit's build cache, which is no image (the classic
    // builder's intermediate images are cleanup.rs's).
    assert!(images_built_with(&first_step).is_empty());
}

/// The files of `base` with one more file.
fn files_with<'a>(
    base: &'a [(&'static str, String)],
    path: &'static str,
    content: &'a str,
) -> Vec<(&'static str, &'a str)> {
    let mut files: Vec<(&'static str, &str)> = base.iter().map(|(p, c)| (*p, c.as_str())).collect();
    files.push((path, content));
    files
}

/// The whole stored event stream of a deploy, as text.
pub async fn events_text(daemon: &TestDaemon, deploy_id: &str) -> String {
    daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/deploys/{deploy_id}/events"),
        )
        .bearer_auth(&daemon.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits up to 15 s until no container carries `label=value`; false if some still do.
pub async fn containers_gone(label: &str, value: &str) -> bool {
    let engine = Engine::connect().await.unwrap();
    for _ in 0..150 {
        if engine
            .containers(&[(label, value)])
            .await
            .unwrap()
            .is_empty()
        {
            return true;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Removes the containers a test's project left running.
pub async fn cleanup(project_id: &str) {
    let engine = Engine::connect().await.unwrap();
    for container in engine
        .containers(&[("cantila.project", project_id)])
        .await
        .unwrap()
    {
        let _ = engine
            .stop_and_remove(&container.id, Duration::from_secs(1))
            .await;
    }
}

#[tokio::test]
async fn generated_dockerfiles_deploy_node_and_python_apps_and_static_sites_publish() {
    let daemon = TestDaemon::start().await;
    for (fixture, runtime, expected) in [
        ("node-basic", "node", "hello from node\n"),
        ("python-basic", "python", "hello from python\n"),
    ] {
        let repo = Repo::from_fixture(fixture);
        let (project_id, _) = daemon.connected_project(fixture, &repo).await;
        let planned = daemon
            .post(
                "/v1/deploy/plan",
                &daemon.admin_token,
                json!({ "projectId": project_id }),
            )
            .await
            .expect(200)
            .body;
        assert_eq!(
            (planned["runtime"].as_str(), planned["builder"].as_str()),
            (Some(runtime), Some("generated"))
        );
        assert!(
            planned["dockerfile"].as_str().unwrap().contains("FROM "),
            "{planned}"
        );
        let deploy = daemon.deploy(&project_id, None).await;
        assert_eq!(deploy["status"], "running", "{fixture}: {deploy}");
        // The plan shown beforehand is the plan that ran.
        assert_eq!(deploy["plan"], planned, "{fixture}");
        assert_eq!(
            app_answer(deploy["id"].as_str().unwrap(), "/")
                .await
                .as_deref(),
            Some(expected),
            "{fixture}"
        );
        cleanup(&project_id).await;
    }

    let repo = Repo::from_fixture("static-public");
    let (project_id, _) = daemon.connected_project("site", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(deploy["plan"]["builder"], "static");
    assert!(deploy["image"].is_null(), "static sites need no image");
    let published = daemon
        .data_dir()
        .join("sites")
        .join(&project_id)
        .join(deploy["id"].as_str().unwrap())
        .join("index.html");
    assert!(published.is_file(), "{} was published", published.display());

    // Plans of any repository, without a project, execute nothing.
    let planned = daemon
        .post(
            "/v1/deploy/plan",
            &daemon.admin_token,
            json!({ "repo": repo.path().display().to_string(), "ref": "main" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(planned["builder"], "static");
    let res = daemon
        .post(
            "/v1/deploy/plan",
            &daemon.admin_token,
            json!({ "repo": "ssh://git@example.com/x.git" }),
        )
        .await
        .expect(422);
    assert!(res.error_message().contains("https"), "{}", res.text);
}

#[tokio::test]
async fn a_running_build_can_be_canceled_and_the_queue_supersedes() {
    let daemon = TestDaemon::start().await;
    // The build's step carries no label: a marker finds its process (BuildKit runs a step
    // in no container the engine lists).
    let marker = format!("cancel-me-{}", cantila::ids::random_base62(10));
    let sleeping_step = format!("sleep 60 && echo {marker}");
    let repo = Repo::new(&[(
        "Dockerfile",
        &format!(
            "FROM busybox:latest\nRUN {sleeping_step}\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\"]\n"
        ),
    )]);
    let (project_id, _) = daemon.connected_project("slow", &repo).await;
    let deploy_path = format!("/v1/projects/{project_id}/deploy");
    let first = daemon
        .post(&deploy_path, &daemon.admin_token, json!({}))
        .await
        .expect(202)
        .body;
    let first_id = first["deployId"].as_str().unwrap();
    wait_until(
        Duration::from_secs(120),
        "the first build's step runs",
        || async { !processes_running_command(&sleeping_step).is_empty() },
    )
    .await;
    // Only one deploy per project runs; of two queued behind it, the newer supersedes the older.
    let second = daemon
        .post(&deploy_path, &daemon.admin_token, json!({}))
        .await
        .expect(202)
        .body;
    let third = daemon
        .post(&deploy_path, &daemon.admin_token, json!({}))
        .await
        .expect(202)
        .body;
    let second_id = second["deployId"].as_str().unwrap();
    let superseded = daemon.wait_deploy(second_id).await;
    assert_eq!(superseded["status"], "superseded", "{superseded}");
    let running = daemon
        .get(&format!("/v1/deploys/{first_id}"), &daemon.admin_token)
        .await
        .body;
    assert_eq!(running["status"], "building", "still building: {running}");

    let read = daemon.token("read").await;
    daemon
        .post(&format!("/v1/deploys/{first_id}/cancel"), &read, json!({}))
        .await
        .expect(403);
    let canceled = daemon
        .post(
            &format!("/v1/deploys/{first_id}/cancel"),
            &daemon.admin_token,
            json!({}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    let again = daemon
        .post(
            &format!("/v1/deploys/{first_id}/cancel"),
            &daemon.admin_token,
            json!({}),
        )
        .await
        .expect(409);
    assert!(again.error_message().contains("canceled"), "{}", again.text);

    // The queued third deploy runs next; cancel it too so the test ends quickly.
    let third_id = third["deployId"].as_str().unwrap();
    let canceled = daemon
        .post(
            &format!("/v1/deploys/{third_id}/cancel"),
            &daemon.admin_token,
            json!({}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    // Canceling ends the build in the engine too (the build's connection closes): its
    // step's process goes, and neither canceled deploy completes into an image.
    wait_until(
        Duration::from_secs(30),
        "the canceled build's step ends",
        || async { !build_step_running(&sleeping_step) },
    )
    .await;
    let engine = Engine::connect().await.unwrap();
    assert!(engine
        .containers(&[("cantila.project", &project_id)])
        .await
        .unwrap()
        .is_empty());
    for id in [first_id, third_id] {
        assert_eq!(
            crate::support::docker(
                None,
                &[
                    "images",
                    "-aq",
                    "--filter",
                    &format!("label=cantila.deploy={id}")
                ]
            )
            .unwrap()
            .trim(),
            "",
            "an image of canceled deploy {id} exists"
        );
        let tag = format!("cantila/admin/slow:{id}");
        assert_eq!(engine.image_id(&tag).await.unwrap(), None, "{tag} exists");
    }
    assert!(
        images_built_with(&sleeping_step).is_empty(),
        "the canceled step made an image"
    );
}

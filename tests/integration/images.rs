//! Images as a source, on the real engine and the real registry (`registry_support`):
//! a project connected to an image pulls it with the account's credentials, serves it over
//! the edge, records and pins the digest, deploys nothing when the digest did not move,
//! rolls back to an earlier digest (pulling it again once pruned), takes a tag or digest
//! per deploy, fails at pull with the registry's reason on a wrong password, and
//! redeploys on the registry's push notification. A registry on an internal address is
//! refused for connect, plan and deploy alike without being contacted; the test registry
//! (on loopback) is reached because these daemons allow loopback (`git.allowed_networks`).

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cantila::config::Config;

use serde_json::{json, Value};

use crate::{
    deploys::{containers_gone, events_text, Repo},
    registry_support::{NotifyingRegistry, TestRegistry},
    support::TestDaemon,
};

/// Opens loopback, where the test registry listens, to the daemon's egress policy.
fn loopback_registry(config: &mut Config) {
    config.git.allowed_networks = vec!["127.0.0.1/32".parse().unwrap()];
}

/// A loopback HTTP server that counts connections and answers each with an empty 404.
fn counting_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn internal_registry_hosts_are_refused_alike_for_connect_plan_and_deploy() {
    let (port, seen) = counting_server();
    let daemon = TestDaemon::start().await;
    let token = daemon.admin_token.clone();
    let project = daemon.create_project("inside").await;
    let id = project["id"].as_str().unwrap().to_owned();
    let local = format!("127.0.0.1:{port}/team/app:1");
    let private = "10.255.0.1:5000/team/app:1".to_owned();
    let own_api = format!("127.0.0.1:{}/team/app:1", daemon.api.port());
    let mut messages = Vec::new();
    for image in [&local, &private, &own_api] {
        let res = daemon
            .post(
                &format!("/v1/projects/{id}/image"),
                &token,
                json!({ "image": image }),
            )
            .await
            .expect(422);
        messages.push(res.error_message().to_owned());
    }
    assert!(messages[0].contains("git.allowed_networks"), "{messages:?}");
    assert!(messages.iter().all(|m| m == &messages[0]), "{messages:?}");
    let refusal = messages[0].clone();

    // Connected while the operator allowed these networks (connecting contacts nothing),
    // then planned and deployed after the operator closed them again.
    let (dir, mut config) = daemon.stop().await;
    config.git.allowed_networks = vec![
        "127.0.0.1/32".parse().unwrap(),
        "10.255.0.0/16".parse().unwrap(),
    ];
    let daemon = TestDaemon::start_in(dir, config).await;
    let (local_id, _) = image_project(&daemon, "inside-local", &local).await;
    let (private_id, _) = image_project(&daemon, "inside-private", &private).await;
    // A name, so the plan's HTTP client refuses it in its resolver, not as a literal.
    let (named_id, _) = image_project(
        &daemon,
        "inside-named",
        &format!("localhost:{port}/team/app:1"),
    )
    .await;
    let (dir, mut config) = daemon.stop().await;
    config.git.allowed_networks = Vec::new();
    let daemon = TestDaemon::start_in(dir, config).await;
    for project_id in [&local_id, &private_id, &named_id] {
        let planned = daemon
            .post(
                "/v1/deploy/plan",
                &daemon.admin_token,
                json!({ "projectId": project_id }),
            )
            .await
            .expect(422);
        assert_eq!(planned.error_message(), refusal, "plan of {project_id}");
        let overridden = daemon
            .post(
                &format!("/v1/projects/{project_id}/deploy"),
                &daemon.admin_token,
                json!({ "image": "2" }),
            )
            .await
            .expect(422);
        assert_eq!(
            overridden.error_message(),
            refusal,
            "deploy image of {project_id}"
        );
        let deployed = deploy_with(&daemon, project_id, json!({})).await;
        assert_eq!(deployed["status"], "failed", "{deployed}");
        assert_eq!(deployed["failedStep"], "pull", "{deployed}");
        assert_eq!(deployed["error"], refusal.as_str(), "{deployed}");
        let log = events_text(&daemon, deployed["id"].as_str().unwrap()).await;
        assert!(!log.contains("pulling"), "no pull was asked: {log}");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the local server was contacted"
    );
}

fn installation(daemon: &TestDaemon) -> String {
    daemon.dir.as_ref().unwrap().installation().to_owned()
}

/// Stores the test registry's credentials in the admin's account (with `password`).
async fn add_credentials(daemon: &TestDaemon, registry: &TestRegistry, password: &str) -> Value {
    daemon
        .post(
            "/v1/registries",
            &daemon.admin_token,
            json!({ "server": registry.address, "username": registry.user, "password": password }),
        )
        .await
        .expect(201)
        .body
}

/// Creates a project connected to `image`; returns (project id, webhook secret).
async fn image_project(daemon: &TestDaemon, name: &str, image: &str) -> (String, String) {
    let project = daemon.create_project(name).await;
    let id = project["id"].as_str().unwrap().to_owned();
    let connected = daemon
        .post(
            &format!("/v1/projects/{id}/image"),
            &daemon.admin_token,
            json!({ "image": image }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(connected["image"], image);
    (id, connected["webhookSecret"].as_str().unwrap().to_owned())
}

async fn deploy_with(daemon: &TestDaemon, project_id: &str, body: Value) -> Value {
    let created = daemon
        .post(
            &format!("/v1/projects/{project_id}/deploy"),
            &daemon.admin_token,
            body,
        )
        .await
        .expect(202)
        .body;
    daemon
        .wait_deploy(created["deployId"].as_str().unwrap())
        .await
}

#[tokio::test]
async fn a_pulled_image_serves_pins_its_digest_skips_an_unchanged_one_and_rolls_back() {
    let registry = TestRegistry::from_env();
    let daemon = TestDaemon::start_with(loopback_registry).await;
    let installation = installation(&daemon);
    let repository = registry.unique_repository("app");
    let first = registry.push_app(&repository, "1", "first\n", &installation);

    let added = add_credentials(&daemon, &registry, &registry.password).await;
    assert_eq!(added["server"], registry.address.as_str());
    assert!(!added.to_string().contains(&registry.password));
    let (project_id, _) = image_project(&daemon, "pulled", &format!("{repository}:1")).await;
    let host = "pulled.admin.test.local";

    // The plan reads the registry's manifest and config; nothing is pulled.
    let planned = daemon
        .post(
            "/v1/deploy/plan",
            &daemon.admin_token,
            json!({ "projectId": project_id }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(planned["builder"], "image", "{planned}");
    assert_eq!(planned["port"], 8080);
    assert_eq!(planned["image"]["digest"], first.as_str());
    assert_eq!(
        planned["image"]["reference"],
        format!("{repository}@{first}")
    );
    assert_eq!(planned["image"]["user"], "65534");
    assert_eq!(planned["image"]["workdir"], "/www");
    assert_eq!(planned["image"]["exposedPorts"], json!([8080]));
    assert!(
        crate::support::docker(None, &["image", "inspect", &format!("{repository}:1")]).is_err(),
        "planning pulled nothing"
    );

    let deployed = deploy_with(&daemon, &project_id, json!({})).await;
    assert_eq!(deployed["status"], "running", "{deployed}");
    assert_eq!(deployed["imageDigest"], first.as_str());
    assert_eq!(deployed["plan"]["builder"], "image");
    assert_eq!(deployed["plan"]["port"], 8080, "the port comes from EXPOSE");
    assert_eq!(deployed["plan"]["image"]["user"], "65534");
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "first\n".to_owned())
    );
    let log = events_text(&daemon, deployed["id"].as_str().unwrap()).await;
    assert!(
        log.contains(&format!("pulling {repository}:1 as {}", registry.user)),
        "{log}"
    );
    assert!(log.contains("layer "), "per-layer progress: {log}");
    assert!(
        log.contains(&format!("resolved {repository}:1 to {first}")),
        "{log}"
    );
    assert!(!log.contains(&registry.password));

    // The same digest again: nothing is deployed, and the deploy says so.
    let unchanged = deploy_with(&daemon, &project_id, json!({})).await;
    assert_eq!(unchanged["status"], "canceled", "{unchanged}");
    assert_eq!(unchanged["outcome"], "unchanged");
    let log = events_text(&daemon, unchanged["id"].as_str().unwrap()).await;
    assert!(log.contains("nothing to deploy"), "{log}");
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "first\n".to_owned())
    );

    // The tag moves: the next deploy pulls the new digest.
    let second = registry.push_app(&repository, "1", "second\n", &installation);
    assert_ne!(first, second);
    let moved = deploy_with(&daemon, &project_id, json!({})).await;
    assert_eq!(moved["status"], "running", "{moved}");
    assert_eq!(moved["imageDigest"], second.as_str());
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "second\n".to_owned())
    );

    // The first release's image is pruned; a rollback pulls its exact digest again.
    let first_image = deployed["image"].as_str().unwrap();
    assert!(
        containers_gone("cantila.deploy", deployed["id"].as_str().unwrap()).await,
        "the first release's instance stops after draining"
    );
    registry.cli(&["rmi", first_image]);
    let rollback = daemon
        .post(
            &format!("/v1/projects/{project_id}/rollback"),
            &daemon.admin_token,
            json!({ "deployId": deployed["id"] }),
        )
        .await
        .expect(202)
        .body;
    let rolled = daemon
        .wait_deploy(rollback["deployId"].as_str().unwrap())
        .await;
    assert_eq!(rolled["status"], "running", "{rolled}");
    assert_eq!(rolled["imageDigest"], first.as_str());
    let log = events_text(&daemon, rolled["id"].as_str().unwrap()).await;
    assert!(log.contains("pulling its digest"), "{log}");
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "first\n".to_owned())
    );

    // A deploy may name another tag of the connected repository.
    let third = registry.push_app(&repository, "3", "third\n", &installation);
    let overridden = deploy_with(&daemon, &project_id, json!({ "image": "3" })).await;
    assert_eq!(overridden["status"], "running", "{overridden}");
    assert_eq!(overridden["imageDigest"], third.as_str());
    assert_eq!(overridden["ref"], "3");
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "third\n".to_owned())
    );
    // ... or a digest of it.
    let by_digest = deploy_with(&daemon, &project_id, json!({ "image": second })).await;
    assert_eq!(by_digest["status"], "running", "{by_digest}");
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "second\n".to_owned())
    );
}

#[tokio::test]
async fn a_wrong_password_fails_the_deploy_at_pull_with_the_registrys_reason() {
    let registry = TestRegistry::from_env();
    let daemon = TestDaemon::start_with(loopback_registry).await;
    let repository = registry.unique_repository("private");
    registry.push_app(&repository, "1", "private\n", &installation(&daemon));
    let (project_id, _) = image_project(&daemon, "private", &format!("{repository}:1")).await;

    // No credentials stored: the registry asks for them.
    let anonymous = deploy_with(&daemon, &project_id, json!({})).await;
    assert_eq!(anonymous["status"], "failed");
    assert_eq!(anonymous["failedStep"], "pull");
    let error = anonymous["error"].as_str().unwrap();
    assert!(error.contains("no basic auth credentials"), "{error}");

    add_credentials(&daemon, &registry, "not-the-password").await;
    let wrong = deploy_with(&daemon, &project_id, json!({})).await;
    assert_eq!(wrong["status"], "failed", "{wrong}");
    assert_eq!(wrong["failedStep"], "pull");
    let error = wrong["error"].as_str().unwrap();
    assert!(
        error.contains("unauthorized"),
        "the registry's reason: {error}"
    );
    let log = events_text(&daemon, wrong["id"].as_str().unwrap()).await;
    assert!(log.contains("deploy failed at pull"), "{log}");
    assert!(!log.contains("not-the-password"));

    // A later POST replaces the server's credentials: the right password deploys.
    add_credentials(&daemon, &registry, &registry.password).await;
    let listed = daemon
        .get("/v1/registries", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(
        listed["registries"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    let right = deploy_with(&daemon, &project_id, json!({})).await;
    assert_eq!(right["status"], "running", "{right}");
}

#[tokio::test]
async fn bad_references_servers_and_a_second_source_get_clear_4xx() {
    let daemon = TestDaemon::start_with(loopback_registry).await;
    let token = daemon.admin_token.clone();
    let project = daemon.create_project("picky").await;
    let id = project["id"].as_str().unwrap().to_owned();

    for image in [
        "Upper/Case:1",
        "app:",
        "a//b",
        "app@sha256:abc",
        "https://ghcr.io/a/b",
    ] {
        let res = daemon
            .post(
                &format!("/v1/projects/{id}/image"),
                &token,
                json!({ "image": image }),
            )
            .await
            .expect(422);
        assert!(
            res.error_message().starts_with("image"),
            "{image}: {}",
            res.text
        );
    }
    for server in [
        "https://ghcr.io/team",
        "https://user:pw@ghcr.io",
        "ghcr.io?x=1",
        "ftp://ghcr.io",
        "",
    ] {
        let res = daemon
            .post(
                "/v1/registries",
                &token,
                json!({ "server": server, "username": "u", "password": "p" }),
            )
            .await
            .expect(422);
        assert!(
            res.error_message().starts_with("server"),
            "{server}: {}",
            res.text
        );
    }
    let res = daemon
        .post(
            "/v1/registries",
            &token,
            json!({ "server": "ghcr.io", "username": "u", "password": "" }),
        )
        .await
        .expect(422);
    assert!(res.error_message().starts_with("password"), "{}", res.text);

    // A deploy's image must be of the connected repository, on an image project.
    let res = daemon
        .post(
            &format!("/v1/projects/{id}/deploy"),
            &token,
            json!({ "image": "1" }),
        )
        .await
        .expect(422);
    assert!(res.error_message().starts_with("image"), "{}", res.text);
    daemon
        .post(
            &format!("/v1/projects/{id}/image"),
            &token,
            json!({ "image": "127.0.0.1:5932/team/app:1" }),
        )
        .await
        .expect(200);
    let res = daemon
        .post(
            &format!("/v1/projects/{id}/deploy"),
            &token,
            json!({ "image": "127.0.0.1:5932/team/other:1" }),
        )
        .await
        .expect(422);
    assert!(
        res.error_message()
            .contains("not of the connected repository"),
        "{}",
        res.text
    );

    // One source at a time: git cannot join an image, and an image replaces git only
    // when asked to.
    let repo = Repo::busybox("git\n");
    let res = daemon
        .post(
            &format!("/v1/projects/{id}/git"),
            &token,
            json!({ "repo": repo.path().display().to_string() }),
        )
        .await
        .expect(409);
    assert!(
        res.error_message().contains("DELETE /v1/projects/"),
        "{}",
        res.text
    );
    let (git_project, _) = daemon.connected_project("gitty", &repo).await;
    let res = daemon
        .post(
            &format!("/v1/projects/{git_project}/image"),
            &token,
            json!({ "image": "busybox:latest" }),
        )
        .await
        .expect(409);
    assert!(
        res.error_message().contains("\"replace\": true"),
        "{}",
        res.text
    );
    daemon
        .post(
            &format!("/v1/projects/{git_project}/image"),
            &token,
            json!({ "image": "busybox:latest", "replace": true }),
        )
        .await
        .expect(200);
    daemon
        .get(&format!("/v1/projects/{git_project}/git"), &token)
        .await
        .expect(404);
    let removed = daemon
        .delete(&format!("/v1/projects/{git_project}/image"), &token)
        .await
        .expect(200)
        .body;
    assert_eq!(removed["image"], "busybox:latest");
    daemon
        .get(&format!("/v1/projects/{git_project}/image"), &token)
        .await
        .expect(404);
}

/// The project's deploys made by the registry webhook whose status is final.
async fn webhook_deploys(daemon: &TestDaemon, project_id: &str) -> Vec<Value> {
    let listed = daemon
        .get(
            &format!("/v1/projects/{project_id}/deploys"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    listed["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["trigger"] == "webhook")
        .filter(|d| {
            ["running", "failed", "canceled", "superseded"].contains(&d["status"].as_str().unwrap())
        })
        .cloned()
        .collect()
}

/// Waits for the running webhook deploy of `digest`; when none comes, the failure shows
/// the image source's last delivery, every deploy and the registry's log.
async fn webhook_deploy_of(
    daemon: &TestDaemon,
    project_id: &str,
    digest: &str,
    notifying: &NotifyingRegistry,
    what: &str,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(found) = webhook_deploys(daemon, project_id)
            .await
            .into_iter()
            .find(|d| d["imageDigest"] == digest && d["status"] == "running")
        {
            return found;
        }
        if std::time::Instant::now() > deadline {
            let image = daemon
                .get(
                    &format!("/v1/projects/{project_id}/image"),
                    &daemon.admin_token,
                )
                .await
                .text;
            let deploys = daemon
                .get(
                    &format!("/v1/projects/{project_id}/deploys"),
                    &daemon.admin_token,
                )
                .await
                .text;
            panic!(
                "{what}: not within 120 s\nimage source: {image}\ndeploys: {deploys}\nregistry log:\n{}",
                notifying.log_tail()
            );
        }
        // The poll interval: the deploys are listed again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_registry_push_of_the_connected_tag_redeploys_through_the_webhook() {
    let registry = TestRegistry::from_env();
    let daemon = TestDaemon::start_with(loopback_registry).await;
    let installation = installation(&daemon);
    // A registry of this test's own notifies the daemon of every push (distribution's
    // `notifications`), with the secret in the header its `headers` setting sends.
    let notifying = NotifyingRegistry::reserve();
    let path = format!(
        "t{}/hooked",
        cantila::ids::random_base62(10).to_ascii_lowercase()
    );
    let repository = format!("{}/{path}", notifying.address);
    let (project_id, secret) =
        image_project(&daemon, "hooked", &format!("{repository}:live")).await;
    let hook = format!("/v1/projects/{project_id}/image/webhook");
    let notifying = notifying.start(&daemon.url(&hook), &secret);

    let before = notifying.push_app(&registry, &repository, "live", "before\n", &installation);
    let first = webhook_deploy_of(
        &daemon,
        &project_id,
        &before,
        &notifying,
        "a deploy queued by the first push's notification",
    )
    .await;
    assert_eq!(
        daemon.edge_get("hooked.admin.test.local", "/").await,
        (200, "before\n".to_owned())
    );

    let after = notifying.push_app(&registry, &repository, "live", "after\n", &installation);
    let second = webhook_deploy_of(
        &daemon,
        &project_id,
        &after,
        &notifying,
        "a deploy queued by the second push's notification",
    )
    .await;
    assert_ne!(first["id"], second["id"]);
    assert_eq!(
        daemon.edge_get("hooked.admin.test.local", "/").await,
        (200, "after\n".to_owned())
    );
    let image = daemon
        .get(
            &format!("/v1/projects/{project_id}/image"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert!(image["lastDeliveryAt"].is_string(), "{image}");

    // Docker Hub's format with the secret in the query; another tag is ignored, saying why.
    let hub = json!({ "push_data": { "tag": "other" }, "repository": { "repo_name": path } });
    let res = daemon
        .request(reqwest::Method::POST, &format!("{hook}?token={secret}"))
        .json(&hub)
        .send()
        .await
        .unwrap();
    let answer = crate::support::read(res).await.expect(200);
    assert_eq!(answer.body["status"], "ignored");
    assert!(
        answer.body["reason"].as_str().unwrap().contains(":live"),
        "{}",
        answer.text
    );
    let image = daemon
        .get(
            &format!("/v1/projects/{project_id}/image"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert!(
        image["lastDeliveryResult"]
            .as_str()
            .unwrap()
            .starts_with("ignored: "),
        "{image}"
    );
    // The same delivery for the connected tag queues a deploy (which finds the digest
    // unchanged and deploys nothing).
    let hub = json!({ "push_data": { "tag": "live" }, "repository": { "repo_name": path } });
    let res = daemon
        .request(reqwest::Method::POST, &format!("{hook}?token={secret}"))
        .json(&hub)
        .send()
        .await
        .unwrap();
    let answer = crate::support::read(res).await.expect(202);
    let unchanged = daemon
        .wait_deploy(answer.body["deployId"].as_str().unwrap())
        .await;
    assert_eq!(unchanged["outcome"], "unchanged", "{unchanged}");
    // A wrong or missing secret is refused.
    for auth in [Some("whsec_wrong"), None] {
        let mut request = daemon.request(reqwest::Method::POST, &hook).json(&hub);
        if let Some(token) = auth {
            request = request.bearer_auth(token);
        }
        let res = crate::support::read(request.send().await.unwrap()).await;
        assert_eq!(res.status, 401, "{}", res.text);
    }
}

#[tokio::test]
async fn the_cli_adds_credentials_connects_an_image_and_deploys_it() {
    use crate::cli::cantila;
    let registry = TestRegistry::from_env();
    let daemon = TestDaemon::start_with(loopback_registry).await;
    let repository = registry.unique_repository("cli");
    let digest = registry.push_app(&repository, "1", "from the cli\n", &installation(&daemon));
    let env = |extra: Option<(&'static str, String)>| {
        let mut env = vec![
            ("CANTILA_URL", format!("http://{}", daemon.api)),
            ("CANTILA_TOKEN", daemon.admin_token.clone()),
        ];
        env.extend(extra);
        env
    };
    let run = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

    let out = cantila(
        run(&[
            "registries",
            "add",
            &registry.address,
            "--username",
            &registry.user,
        ]),
        env(Some((
            "CANTILA_REGISTRY_PASSWORD",
            registry.password.clone(),
        ))),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cantila(run(&["registries", "list"]), env(None)).await;
    let listed = text(&out.stdout);
    assert!(
        listed.contains(&registry.address) && !listed.contains(&registry.password),
        "{listed}"
    );
    let registry_id = listed.split_whitespace().next().unwrap().to_owned();

    let out = cantila(run(&["projects", "create", "cliimage"]), env(None)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let image = format!("{repository}:1");
    let out = cantila(run(&["image", "connect", "cliimage", &image]), env(None)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("whsec_"),
        "{}",
        text(&out.stdout)
    );

    let out = cantila(run(&["deploy", "cliimage", "--follow"]), env(None)).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!("resolved {image} to {digest}")),
        "{}",
        text(&out.stdout)
    );
    // Again: the digest did not move; the command succeeds and says so.
    let out = cantila(run(&["deploy", "cliimage", "--follow"]), env(None)).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("unchanged"),
        "{}",
        text(&out.stderr)
    );

    let out = cantila(run(&["image", "show", "cliimage"]), env(None)).await;
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["image"], image.as_str());
    let out = cantila(run(&["image", "disconnect", "cliimage"]), env(None)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cantila(run(&["registries", "remove", &registry_id]), env(None)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cantila(run(&["registries", "list"]), env(None)).await;
    assert!(!text(&out.stdout).contains(&registry.address));
}

/// A git project whose Dockerfile builds `FROM` a private image of the test registry: the
/// build fails with the registry's refusal while the account has no login for it, and
/// builds and serves once the account's credentials are added (the builder asks for them
/// through the build session).
#[tokio::test]
async fn a_build_from_a_private_base_image_uses_the_accounts_registry_login() {
    let registry = TestRegistry::from_env();
    let daemon = TestDaemon::start().await;
    let installation = installation(&daemon);
    let repository = format!(
        "{}/t{}/base",
        registry.address,
        cantila::ids::random_base62(10).to_ascii_lowercase()
    );
    registry.push_app(&repository, "1", "from a private base\n", &installation);
    let repo = Repo::new(&[(
        "Dockerfile",
        format!("FROM {repository}:1\nRUN echo built on the base > /tmp/marker\nEXPOSE 8080\n")
            .as_str(),
    )]);
    let (project, _) = daemon.connected_project("private-base", &repo).await;

    let refused = daemon.deploy(&project, None).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    assert_eq!(refused["failedStep"], "build", "{refused}");

    add_credentials(&daemon, &registry, &registry.password).await;
    let built = daemon.deploy(&project, None).await;
    assert_eq!(built["status"], "running", "{built}");
    assert_eq!(
        daemon.edge_get("private-base.admin.test.local", "/").await,
        (200, "from a private base\n".to_owned())
    );
    let events = events_text(&daemon, built["id"].as_str().unwrap()).await;
    assert!(
        !events.contains(&registry.password),
        "the password is never logged"
    );
}

//! Hostile input: every string in `tests/fixtures/hostile/strings.txt` is sent into every
//! field that reaches git, Docker, the filesystem or a hostname (previews' branch, ref,
//! TTL, env overrides and branch patterns included). Each must get a 4xx or be
//! stored inertly (never a 5xx), no command in them may run (a canary file never appears),
//! nothing may be written outside the data directory, and no child process is left behind.
//! Also the webhook's own guards: body limit before HMAC, JSON only, replays ignored; and
//! a tenant's containers reach no other tenant's, nor the daemon's API.

use std::{path::PathBuf, time::Duration};

use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    deploys::{sign, Repo},
    support::TestDaemon,
};

fn corpus(canary: &str) -> Vec<String> {
    let text = include_str!("../fixtures/hostile/strings.txt");
    let mut values: Vec<String> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            line.replace("\\n", "\n")
                .replace("\\r", "\r")
                .replace("\\t", "\t")
                .replace("\\0", "\0")
                .replace("\\\\", "\\")
                .replace("CANARY", canary)
        })
        .collect();
    values.push("a".repeat(300));
    values.push("ä".repeat(70_000));
    values.push(String::new());
    values
}

/// Child processes of this test process (the daemon runs in it).
fn children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let parent = rest.split_whitespace().nth(1);
        if parent == Some(me.as_str()) {
            found.push(head.to_owned());
        }
    }
    found
}

/// Tests share this process, so its children include the long-lived helpers other tests
/// start meanwhile: a browser's chromedriver and the `sleep` holding its network namespace,
/// a private `dockerd`, a `cantila` binary. None of them is anything a hostile value could
/// start (the corpus names none of them, and the canary file catches any shell).
fn is_another_tests_helper(child: &str) -> bool {
    let command = child.rsplit_once('(').map_or("", |(_, command)| command);
    ["chromedriver", "sleep", "dockerd", "containerd", "cantila"].contains(&command)
}

#[tokio::test]
async fn hostile_strings_in_every_field_are_refused_or_inert() {
    let daemon = TestDaemon::start_with(|c| c.deploy.fetch_timeout_secs = 3).await;
    let scratch = tempfile::tempdir().unwrap();
    let canary = scratch.path().join("pwned");
    let canary_text = canary.display().to_string();
    let escape = PathBuf::from("/tmp/cantila-escape");
    let _ = std::fs::remove_file(&escape);
    let children_before = children();

    let repo = Repo::busybox("hostile\n");
    let (project_id, _) = daemon.connected_project("target", &repo).await;
    let admin = daemon.admin_token.clone();
    let mut sent = 0;
    let mut refused = 0;
    for value in corpus(&canary_text) {
        // A URL has its own length limit in the client; paths get the first 1,000 chars.
        let in_path: String = value.chars().take(1000).collect();
        let encoded: String =
            percent_encoding::utf8_percent_encode(&in_path, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let shown: String = value.chars().take(60).collect();
        let requests: Vec<(Method, String, Option<Value>)> = vec![
            (
                Method::POST,
                "/v1/projects".into(),
                Some(json!({ "name": value })),
            ),
            (
                Method::PATCH,
                format!("/v1/projects/{project_id}"),
                Some(json!({ "name": value })),
            ),
            (
                Method::POST,
                "/v1/projects".into(),
                Some(json!({ "name": "runtime-probe", "runtime": value })),
            ),
            (
                Method::GET,
                format!("/v1/projects/by-handle/{encoded}/{encoded}"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/git"),
                Some(json!({ "repo": value })),
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/git"),
                Some(json!({ "repo": repo.path().display().to_string(), "branch": value })),
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/deploy"),
                Some(json!({ "ref": value })),
            ),
            (
                Method::POST,
                "/v1/deploy/plan".into(),
                Some(json!({ "repo": value })),
            ),
            (
                Method::POST,
                "/v1/deploy/plan".into(),
                Some(json!({ "projectId": project_id, "ref": value })),
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/env"),
                Some(json!({ "vars": { value.clone(): "x" } })),
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/env"),
                Some(json!({ "vars": { "HOSTILE": value } })),
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/aliases"),
                Some(json!({ "hostname": value })),
            ),
            (
                Method::DELETE,
                format!("/v1/projects/{project_id}/aliases/{encoded}"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/scale"),
                Some(json!({ "processes": { value.clone(): 1 } })),
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/scale"),
                Some(json!({ "size": value })),
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/rollback"),
                Some(json!({ "deployId": value })),
            ),
            (
                Method::POST,
                "/v1/tokens".into(),
                Some(json!({ "scope": "read", "name": value })),
            ),
            (
                Method::POST,
                "/v1/tokens".into(),
                Some(json!({ "scope": value })),
            ),
            (Method::GET, format!("/v1/deploys/{encoded}"), None),
            (Method::DELETE, format!("/v1/tokens/{encoded}"), None),
            // Previews: the branch or ref reaches git and names a hostname; the TTL, env
            // overrides and branch patterns are parsed. Accepted values name a branch that
            // does not exist, so their deploys stop at the fetch.
            (
                Method::POST,
                format!("/v1/projects/{project_id}/previews"),
                Some(json!({ "branch": value })),
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/previews"),
                Some(json!({ "ref": value })),
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/previews"),
                Some(json!({ "branch": "no-such-branch", "ttl": value })),
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/previews"),
                Some(json!({ "branch": "no-such-branch", "env": { value.clone(): "x" } })),
            ),
            (
                Method::POST,
                format!("/v1/projects/{project_id}/previews"),
                Some(json!({ "branch": "no-such-branch", "env": { "HOSTILE": value } })),
            ),
            (
                Method::PATCH,
                format!("/v1/projects/{project_id}"),
                Some(json!({ "previews": { "branches": [value] } })),
            ),
            (
                Method::GET,
                format!("/v1/projects/{project_id}/previews/{encoded}"),
                None,
            ),
            (
                Method::DELETE,
                format!("/v1/projects/{project_id}/previews/{encoded}"),
                None,
            ),
            (
                Method::GET,
                format!("/v1/projects/{project_id}/instances?preview={encoded}"),
                None,
            ),
            (
                Method::GET,
                format!("/v1/projects/{project_id}/logs?preview={encoded}"),
                None,
            ),
            (
                Method::GET,
                format!("/v1/projects/{project_id}/metrics?preview={encoded}"),
                None,
            ),
        ];
        for (method, path, body) in requests {
            let res = daemon.call(method.clone(), &path, Some(&admin), body).await;
            sent += 1;
            assert!(
                res.status < 500,
                "{method} {} with {shown:?}: {} {}",
                path.chars().take(120).collect::<String>(),
                res.status,
                res.text.chars().take(300).collect::<String>()
            );
            if res.status >= 400 {
                refused += 1;
                assert!(
                    !res.error_message().is_empty(),
                    "{method} {} with {shown:?}: a 4xx says why: {}",
                    path.chars().take(120).collect::<String>(),
                    res.text.chars().take(300).collect::<String>()
                );
            }
        }
    }
    // Deploys queued with inert refs finish (failing to resolve) before the checks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!canary.exists(), "a hostile value was executed");
    assert!(
        !escape.exists(),
        "a file was written outside the data directory"
    );
    let project = daemon
        .get(&format!("/v1/projects/{project_id}"), &admin)
        .await
        .expect(200)
        .body;
    assert_eq!(project["name"], "target", "the project was not renamed");
    let children_after = children();
    let new: Vec<&String> = children_after
        .iter()
        .filter(|c| !children_before.contains(c))
        .filter(|c| !is_another_tests_helper(c))
        .collect();
    assert!(new.is_empty(), "processes left behind: {new:?}");
    println!("{sent} hostile requests, {refused} refused with a 4xx, the rest stored inertly");
    assert!(refused * 2 > sent, "most hostile values are refused");
}

async fn deliver(
    daemon: &TestDaemon,
    project_id: &str,
    content_type: &str,
    delivery: &str,
    body: Vec<u8>,
    signature: String,
) -> crate::support::Res {
    let res = daemon
        .request(
            Method::POST,
            &format!("/v1/projects/{project_id}/git/webhook"),
        )
        .header("content-type", content_type)
        .header("x-github-event", "ping")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    crate::support::read(res).await
}

#[tokio::test]
async fn webhooks_refuse_oversized_bodies_other_content_types_and_replays() {
    let daemon = TestDaemon::start_with(|c| c.api.max_body_bytes = 64 * 1024).await;
    let repo = Repo::busybox("hooks\n");
    let (project_id, secret) = daemon.connected_project("hooks", &repo).await;
    let ping = serde_json::to_vec(&json!({ "zen": "hi" })).unwrap();

    let res = deliver(
        &daemon,
        &project_id,
        "application/json",
        "h1",
        ping.clone(),
        sign(&secret, &ping),
    )
    .await
    .expect(200);
    assert_eq!(res.body["status"], "pong");
    let replay = deliver(
        &daemon,
        &project_id,
        "application/json",
        "h1",
        ping.clone(),
        sign(&secret, &ping),
    )
    .await
    .expect(200);
    assert_eq!(replay.body["status"], "duplicate");

    let form = b"payload=%7B%22zen%22%3A%22hi%22%7D".to_vec();
    let res = deliver(
        &daemon,
        &project_id,
        "application/x-www-form-urlencoded",
        "h2",
        form.clone(),
        sign(&secret, &form),
    )
    .await
    .expect(415);
    assert!(
        res.error_message().contains("application/json"),
        "{}",
        res.text
    );

    // Over the limit: refused with 413 whatever the signature says.
    let huge = vec![b' '; 200 * 1024];
    let res = deliver(
        &daemon,
        &project_id,
        "application/json",
        "h3",
        huge,
        "sha256=00".to_owned(),
    )
    .await
    .expect(413);
    assert!(
        res.error_message().contains("max_body_bytes"),
        "{}",
        res.text
    );

    // A wrong signature is 401, and the id it used is not burnt for the real delivery.
    let res = deliver(
        &daemon,
        &project_id,
        "application/json",
        "h4",
        ping.clone(),
        sign("wrong secret", &ping),
    )
    .await
    .expect(401);
    assert!(!res.error_message().is_empty());
    let res = deliver(
        &daemon,
        &project_id,
        "application/json",
        "h4",
        ping.clone(),
        sign(&secret, &ping),
    )
    .await
    .expect(200);
    assert_eq!(res.body["status"], "pong");
}

#[tokio::test]
async fn the_data_directory_is_never_a_repository() {
    let daemon = TestDaemon::start().await;
    let project = daemon.create_project("thief").await;
    let id = project["id"].as_str().unwrap();
    for repo in [
        daemon.data_dir().display().to_string(),
        daemon.data_dir().join("repos").display().to_string(),
        format!("file://{}", daemon.data_dir().display()),
    ] {
        let res = daemon
            .post(
                &format!("/v1/projects/{id}/git"),
                &daemon.admin_token,
                json!({ "repo": repo }),
            )
            .await
            .expect(422);
        assert!(
            res.error_message().contains("data directory"),
            "{}",
            res.text
        );
        let res = daemon
            .post(
                "/v1/deploy/plan",
                &daemon.admin_token,
                json!({ "repo": repo }),
            )
            .await
            .expect(422);
        assert!(
            res.error_message().contains("data directory"),
            "{}",
            res.text
        );
    }
}

#[tokio::test]
async fn a_malicious_repository_cannot_reach_outside_its_tree() {
    let daemon = TestDaemon::start_with(|c| c.deploy.max_context_mb = 1).await;
    let outside = tempfile::tempdir().unwrap();
    let secret_file = outside.path().join("host-secret.txt");
    let secret = format!("host secret {}", std::process::id());
    std::fs::write(&secret_file, &secret).unwrap();
    let repo = Repo::new(&[
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        ),
        ("www/index.html", "inside\n"),
        // Patterns that try to reach out of the context match nothing outside it.
        (".dockerignore", "../../*\n/etc\n!../host-secret.txt\n"),
        (
            ".gitmodules",
            "[submodule \"evil\"]\n\tpath = evil\n\turl = /etc\n",
        ),
    ]);
    std::os::unix::fs::symlink(&secret_file, repo.path().join("www/leak")).unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.path().join("www/up")).unwrap();
    repo.commit(&[], "links out of the tree");
    let (project_id, _) = daemon.connected_project("sneaky", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let client = reqwest::Client::new();
    for path in ["/leak", "/up/host-secret.txt", "/"] {
        let body = client
            .get(format!("http://{}{path}", daemon.http))
            .header("host", "sneaky.admin.test.local")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains(&secret), "{path} leaked the host's file");
    }
    let log = crate::deploys::events_text(&daemon, deploy["id"].as_str().unwrap()).await;
    assert!(!log.contains(&secret));

    // A context over the limit fails the deploy with the reason; the release keeps serving.
    let big = "x".repeat(3 * 1024 * 1024);
    repo.commit(&[("www/big.bin", big.as_str())], "a huge file");
    let failed = daemon.deploy(&project_id, None).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let log = crate::deploys::events_text(&daemon, failed["id"].as_str().unwrap()).await;
    assert!(log.contains("larger than 1 MiB"), "{log}");
    crate::deploys::cleanup(&project_id).await;
}

#[tokio::test]
async fn a_tenants_containers_reach_no_other_tenant_nor_the_api() {
    use crate::networks::{deployed, id_of, reaches, reaches_port, web_instances, Leftovers};

    let daemon = TestDaemon::start().await;
    let _leftovers = Leftovers::of(&daemon);
    let mallory = daemon.other_account_token("mallory", cantila::names::Scope::Deploy);
    let repos = [Repo::busybox("victim\n"), Repo::busybox("mallory\n")];
    let victim = deployed(&daemon, &daemon.admin_token, "victim", &repos[0]).await;
    let hostile = deployed(&daemon, &mallory, "hostile", &repos[1]).await;
    let victim_instance = web_instances(id_of(&victim), None).await.remove(0);
    let hostile_instance = web_instances(id_of(&hostile), None).await.remove(0);
    let hostile_address = hostile_instance
        .addresses
        .values()
        .next()
        .unwrap()
        .to_string();
    let gateway = cantila::docker::Engine::connect()
        .await
        .unwrap()
        .network_gateway(hostile_instance.addresses.keys().next().unwrap())
        .await
        .unwrap()
        .expect("a gateway")
        .to_string();

    // Every address the victim has, and its container name (Docker's DNS answers names
    // only within a network); the API from the host's side of the hostile network.
    let mut targets: Vec<(String, u16)> = victim_instance
        .addresses
        .values()
        .map(|ip| (ip.to_string(), 8080))
        .collect();
    targets.push((victim_instance.name.clone(), 8080));
    targets.push((gateway, daemon.api.port()));
    for (target, port) in targets {
        assert!(
            !reaches_port(&hostile_instance, target.clone(), port).await,
            "the hostile tenant reached {target}:{port}"
        );
    }
    // The probe itself works: the hostile instance reaches itself.
    assert!(reaches(&hostile_instance, hostile_address).await);
    assert_eq!(
        daemon
            .edge_get(victim["hostname"].as_str().unwrap(), "/")
            .await,
        (200, "victim\n".to_owned())
    );
    for (project, token) in [(&victim, &daemon.admin_token), (&hostile, &mallory)] {
        daemon
            .delete(&format!("/v1/projects/{}", id_of(project)), token)
            .await
            .expect(204);
    }
}

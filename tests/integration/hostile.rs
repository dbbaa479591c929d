//! Hostile input: every string in `tests/fixtures/hostile/strings.txt` is sent into every
//! field that reaches git, Docker, the filesystem or a hostname (previews' branch, ref,
//! TTL, env overrides and branch patterns included). Each must get a 4xx or be
//! stored inertly (never a 5xx), no command in them may run (a canary file never appears),
//! nothing may be written outside the data directory, and no child process is left behind.
//! Also the webhook's own guards: body limit before HMAC, JSON only, replays ignored
//! (by delivery id and by body, whatever id a replay carries), and only the branch's
//! head as fetched at delivery time is ever deployed; and a tenant's containers reach no
//! other tenant's, nor the daemon's API.

use std::{path::PathBuf, time::Duration};

use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    deploys::{sign, Repo},
    support::{wait_until, TestDaemon},
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
/// a private `dockerd`, a `cantila` binary, and the `docker` CLI removing a finished
/// test's installation. None of them is anything a hostile value could start (the corpus
/// names none of them, and the canary file catches any shell).
fn is_another_tests_helper(child: &str) -> bool {
    let command = child.rsplit_once('(').map_or("", |(_, command)| command);
    [
        "chromedriver",
        "sleep",
        "dockerd",
        "containerd",
        "cantila",
        "docker",
    ]
    .contains(&command)
}

/// Ids of the daemon's deploys (every project's, previews' included) not yet final, read
/// from its store.
fn unfinished_deploys(daemon: &TestDaemon) -> Vec<String> {
    use cantila::deploy::DeployStatus;
    let store =
        cantila::store::Store::open(daemon.data_dir()).expect("open store beside the daemon");
    store
        .call_blocking(|c| {
            cantila::store::deploys::with_status(
                c,
                &[
                    DeployStatus::Queued,
                    DeployStatus::Building,
                    DeployStatus::Releasing,
                ],
            )
        })
        .expect("read the deploys")
        .into_iter()
        .map(|deploy| deploy.id)
        .collect()
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
    // Deploys queued with inert refs (previews' included) finish, failing to resolve,
    // before the checks: whatever they ran has run by then.
    let queued = unfinished_deploys(&daemon);
    println!("waiting for {} deploys to finish", queued.len());
    wait_until(
        Duration::from_secs(120),
        "every deploy the hostile values queued reaches a final state",
        || {
            let unfinished = unfinished_deploys(&daemon);
            async move { unfinished.is_empty() }
        },
    )
    .await;
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

/// Sends a webhook delivery of `length` bytes announced by Content-Length, ignoring a
/// failed write (the server may answer and close first), and reads the answer.
async fn over_the_limit_delivery(
    api: std::net::SocketAddr,
    project_id: &str,
    length: usize,
    delivery: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(api).await.unwrap();
    let head = format!(
        "POST /v1/projects/{project_id}/git/webhook HTTP/1.1\r\nhost: {api}\r\ncontent-type: application/json\r\nx-github-event: ping\r\nx-github-delivery: {delivery}\r\nx-hub-signature-256: sha256=00\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(&vec![b' '; length]).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
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

    // Over the limit: refused with 413 whatever the signature says. The API answers as
    // soon as it reads the announced length and closes without reading the body, so the
    // body goes over a raw socket whose write errors do not hide the answer.
    let (status, answer) =
        over_the_limit_delivery(daemon.api, &project_id, 64 * 1024 + 1, "h3").await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("max_body_bytes"), "{answer}");

    // A wrong signature is 401, and neither the id nor the body it used is burnt for the
    // real delivery.
    let second_ping = serde_json::to_vec(&json!({ "zen": "again" })).unwrap();
    let res = deliver(
        &daemon,
        &project_id,
        "application/json",
        "h4",
        second_ping.clone(),
        sign("wrong secret", &second_ping),
    )
    .await
    .expect(401);
    assert!(!res.error_message().is_empty());
    let res = deliver(
        &daemon,
        &project_id,
        "application/json",
        "h4",
        second_ping.clone(),
        sign(&secret, &second_ping),
    )
    .await
    .expect(200);
    assert_eq!(res.body["status"], "pong");
    // The same signed body under another delivery id is a replay.
    let res = deliver(
        &daemon,
        &project_id,
        "application/json",
        "h5",
        second_ping.clone(),
        sign(&secret, &second_ping),
    )
    .await
    .expect(200);
    assert_eq!(res.body["status"], "duplicate", "{}", res.text);

    // A signed delivery that cannot be acted on says why where deliveries are shown.
    let no_ref = serde_json::to_vec(&json!({ "after": "1".repeat(40) })).unwrap();
    github_delivery(&daemon, &project_id, &secret, "push", Some("h6"), &no_ref)
        .await
        .expect(422);
    let recorded = last_delivery(&daemon, &project_id).await;
    assert!(
        recorded.starts_with("failed: ") && recorded.contains("`ref`"),
        "{recorded}"
    );
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
    for path in ["/leak", "/up/host-secret.txt", "/"] {
        let (status, body) = daemon.edge_get("sneaky.admin.test.local", path).await;
        assert!(!body.contains(&secret), "{path} leaked the host's file");
        // The links were left out of the image, so only `/` is there, with its own page.
        if path == "/" {
            assert_eq!((status, body.as_str()), (200, "inside\n"), "{path}");
        } else {
            assert_eq!(status, 404, "{path}: {body}");
        }
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

/// Sends a signed GitHub push (or any event) with the delivery id given, if any.
async fn github_delivery(
    daemon: &TestDaemon,
    project_id: &str,
    secret: &str,
    event: &str,
    delivery: Option<&str>,
    body: &[u8],
) -> crate::support::Res {
    let mut request = daemon
        .request(
            Method::POST,
            &format!("/v1/projects/{project_id}/git/webhook"),
        )
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-hub-signature-256", sign(secret, body));
    if let Some(delivery) = delivery {
        request = request.header("x-github-delivery", delivery);
    }
    crate::support::read(request.body(body.to_vec()).send().await.unwrap()).await
}

/// Sends a GitLab push: the token header carries the secret and covers nothing else.
async fn gitlab_delivery(
    daemon: &TestDaemon,
    project_id: &str,
    secret: &str,
    uuid: &str,
    body: &[u8],
) -> crate::support::Res {
    let res = daemon
        .request(
            Method::POST,
            &format!("/v1/projects/{project_id}/git/webhook"),
        )
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-event-uuid", uuid)
        .header("x-gitlab-token", secret)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    crate::support::read(res).await
}

fn push_body(before: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "ref": "refs/heads/main", "before": before, "after": after }))
        .unwrap()
}

/// The commit production serves, and how many deploys the project has had.
async fn serving(daemon: &TestDaemon, project_id: &str) -> (String, usize) {
    let deploys = daemon
        .get(
            &format!("/v1/projects/{project_id}/deploys"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let items = deploys["deploys"].as_array().unwrap();
    let running = items
        .iter()
        .find(|d| d["status"] == "running")
        .map(|d| d["commitSha"].as_str().unwrap().to_owned())
        .unwrap_or_default();
    (running, items.len())
}

async fn last_delivery(daemon: &TestDaemon, project_id: &str) -> String {
    daemon
        .get(
            &format!("/v1/projects/{project_id}/git"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body["lastDelivery"]["result"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A captured, signed delivery replayed with a fresh delivery id (or none) never rolls
/// production back nor queues a second deploy; only the branch's head as fetched when a
/// delivery arrives is deployed, a force-push back included. GitLab's token, which covers
/// no body, gets the same treatment, and so do pull request events.
#[tokio::test]
async fn replayed_webhooks_never_roll_production_back() {
    let daemon = TestDaemon::start_with(|c| {
        c.deploy.drain_secs = 0;
        c.deploy.stop_grace_secs = 1;
    })
    .await;
    let repo = Repo::busybox("one\n");
    let (project_id, secret) = daemon.connected_project("replayed", &repo).await;
    let git = git2::Repository::open(repo.path()).unwrap();
    let head = |git: &git2::Repository| {
        git.head()
            .unwrap()
            .peel_to_commit()
            .unwrap()
            .id()
            .to_string()
    };
    let first = head(&git);
    let zero = "0".repeat(40);

    let push_one = push_body(&zero, &first);
    let res = github_delivery(
        &daemon,
        &project_id,
        &secret,
        "push",
        Some("d-1"),
        &push_one,
    )
    .await
    .expect(202);
    let deploy = daemon
        .wait_deploy(res.body["deployId"].as_str().unwrap())
        .await;
    assert_eq!(deploy["status"], "running", "{deploy}");

    let second = repo.commit(&[("www/index.html", "two\n")], "two");
    let push_two = push_body(&first, &second);
    let res = github_delivery(
        &daemon,
        &project_id,
        &secret,
        "push",
        Some("d-2"),
        &push_two,
    )
    .await
    .expect(202);
    let deploy = daemon
        .wait_deploy(res.body["deployId"].as_str().unwrap())
        .await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let before = serving(&daemon, &project_id).await;
    assert_eq!(before.0, second);

    // The old push, replayed with a new delivery id: stale, nothing queued.
    let res = github_delivery(
        &daemon,
        &project_id,
        &secret,
        "push",
        Some("d-evil"),
        &push_one,
    )
    .await
    .expect(200);
    assert_eq!(res.body["status"], "stale", "{}", res.text);
    assert!(
        res.body["reason"].as_str().unwrap().contains(&second[..12]),
        "{}",
        res.text
    );
    let recorded = last_delivery(&daemon, &project_id).await;
    assert!(recorded.starts_with("stale: "), "{recorded}");
    // Again without any delivery id: the body is known now.
    let res = github_delivery(&daemon, &project_id, &secret, "push", None, &push_one)
        .await
        .expect(200);
    assert_eq!(res.body["status"], "duplicate", "{}", res.text);
    // The latest push replayed with a new id queues no second deploy.
    let res = github_delivery(
        &daemon,
        &project_id,
        &secret,
        "push",
        Some("d-again"),
        &push_two,
    )
    .await
    .expect(200);
    assert_eq!(res.body["status"], "duplicate", "{}", res.text);
    assert!(
        res.body["reason"].as_str().unwrap().contains("replay"),
        "{}",
        res.text
    );
    let recorded = last_delivery(&daemon, &project_id).await;
    assert!(recorded.starts_with("duplicate: "), "{recorded}");
    assert_eq!(serving(&daemon, &project_id).await, before);

    // A force-push back to the first commit is the branch's head: it deploys.
    git.reference(
        "refs/heads/main",
        git2::Oid::from_str(&first).unwrap(),
        true,
        "force back",
    )
    .unwrap();
    let push_back = serde_json::to_vec(&json!({
        "ref": "refs/heads/main", "before": second, "after": first, "forced": true
    }))
    .unwrap();
    let res = github_delivery(
        &daemon,
        &project_id,
        &secret,
        "push",
        Some("d-3"),
        &push_back,
    )
    .await
    .expect(202);
    let deploy = daemon
        .wait_deploy(res.body["deployId"].as_str().unwrap())
        .await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(deploy["commitSha"], first);

    // GitLab: the token header covers no body, so a captured token replays anything; an
    // old commit is stale and a replay of the real push is a duplicate.
    let third = repo.commit(&[("www/index.html", "three\n")], "three");
    let gitlab_push = serde_json::to_vec(&json!({
        "object_kind": "push", "ref": "refs/heads/main", "before": first,
        "after": third, "checkout_sha": third
    }))
    .unwrap();
    let res = gitlab_delivery(&daemon, &project_id, &secret, "g-1", &gitlab_push)
        .await
        .expect(202);
    let deploy = daemon
        .wait_deploy(res.body["deployId"].as_str().unwrap())
        .await;
    assert_eq!(deploy["commitSha"], third, "{deploy}");
    let after_gitlab = serving(&daemon, &project_id).await;
    let res = gitlab_delivery(&daemon, &project_id, &secret, "g-2", &gitlab_push)
        .await
        .expect(200);
    assert_eq!(res.body["status"], "duplicate", "{}", res.text);
    let forged_old = serde_json::to_vec(&json!({
        "object_kind": "push", "ref": "refs/heads/main", "before": first,
        "after": second, "checkout_sha": second
    }))
    .unwrap();
    let res = gitlab_delivery(&daemon, &project_id, &secret, "g-3", &forged_old)
        .await
        .expect(200);
    assert_eq!(res.body["status"], "stale", "{}", res.text);
    assert_eq!(serving(&daemon, &project_id).await, after_gitlab);

    // Pull request events are checked the same way: a synchronize naming a commit the
    // branch has moved past builds nothing.
    let feature_old = repo.commit_on_branch("feature", &[("www/index.html", "old\n")], "old");
    let feature_new = repo.commit_on_branch("feature", &[("www/index.html", "new\n")], "new");
    assert_ne!(feature_old, feature_new);
    let pull = serde_json::to_vec(&json!({
        "action": "synchronize", "number": 3,
        "pull_request": { "number": 3, "head": { "ref": "feature", "sha": feature_old } }
    }))
    .unwrap();
    let res = github_delivery(
        &daemon,
        &project_id,
        &secret,
        "pull_request",
        Some("p-1"),
        &pull,
    )
    .await
    .expect(200);
    assert_eq!(res.body["status"], "stale", "{}", res.text);
    let previews = daemon
        .get(
            &format!("/v1/projects/{project_id}/previews"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(previews["previews"], json!([]), "{previews}");
    crate::deploys::cleanup(&project_id).await;
}

#[tokio::test]
async fn a_tenants_containers_reach_no_other_tenant_nor_the_api() {
    use crate::networks::{deployed, id_of, reaches, reaches_port, web_instances};

    // Both accounts build from repositories on this disk, which the operator allows.
    let daemon = TestDaemon::start_with(|c| {
        c.git.local_repo_accounts = Some(vec!["admin".into(), "mallory".into()]);
    })
    .await;
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
    let gateway = cantila::runtime::docker::Engine::connect()
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

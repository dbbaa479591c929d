//! What a tenant can make the server fetch: local repositories only for accounts the
//! operator allows and never one another account uses (symlinks, `.git` and `file://`
//! forms included), checked again at deploy time; remote URLs never on loopback, private
//! or link-local addresses, refused with one message whatever listens there, without a
//! connection being made.

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use cantila::names::Scope;
use serde_json::{json, Value};

use crate::{deploys::Repo, support::TestDaemon};

/// Connects `repo` to a new project of the account holding `token`: the response.
async fn connect(daemon: &TestDaemon, token: &str, name: &str, repo: &str) -> crate::support::Res {
    connect_project(daemon, token, name, repo).await.1
}

/// Like `connect`, also returning the project's id.
async fn connect_project(
    daemon: &TestDaemon,
    token: &str,
    name: &str,
    repo: &str,
) -> (String, crate::support::Res) {
    let project = daemon
        .post("/v1/projects", token, json!({ "name": name }))
        .await
        .expect(201)
        .body;
    let id = project["id"].as_str().unwrap().to_owned();
    let res = daemon
        .post(
            &format!("/v1/projects/{id}/git"),
            token,
            json!({ "repo": repo, "branch": "main" }),
        )
        .await;
    (id, res)
}

async fn plan(daemon: &TestDaemon, token: &str, repo: &str) -> crate::support::Res {
    daemon
        .post("/v1/deploy/plan", token, json!({ "repo": repo }))
        .await
}

fn path_of(repo: &Repo) -> String {
    repo.path().display().to_string()
}

#[tokio::test]
async fn local_paths_are_refused_to_accounts_the_operator_has_not_allowed() {
    let daemon = TestDaemon::start().await;
    let repo = Repo::new(&[("index.html", "admin's\n")]);
    // The default account may, as the README's tour does.
    connect(&daemon, &daemon.admin_token, "mine", &path_of(&repo))
        .await
        .expect(200);
    plan(&daemon, &daemon.admin_token, &path_of(&repo))
        .await
        .expect(200);

    let bob = daemon.other_account_token("bob", Scope::Admin);
    let own = Repo::new(&[("index.html", "bob's\n")]);
    for path in [
        path_of(&own),
        format!("file://{}", path_of(&own)),
        path_of(&repo),
    ] {
        for res in [
            connect(&daemon, &bob, &format!("p{}", rand::random::<u32>()), &path).await,
            plan(&daemon, &bob, &path).await,
        ] {
            let res = res.expect(403);
            assert!(
                res.error_message().contains("git.local_repo_accounts"),
                "{}",
                res.text
            );
            assert!(!res.text.contains("admin's"), "{}", res.text);
        }
    }
}

#[tokio::test]
async fn a_local_repository_belongs_to_one_account() {
    let daemon = TestDaemon::start_with(|c| {
        c.git.local_repo_accounts = Some(vec!["admin".into(), "bob".into()]);
    })
    .await;
    let repo = Repo::new(&[("index.html", "admin's\n")]);
    connect(&daemon, &daemon.admin_token, "mine", &path_of(&repo))
        .await
        .expect(200);
    // The same account may connect it again, to another of its projects.
    connect(&daemon, &daemon.admin_token, "mine-too", &path_of(&repo))
        .await
        .expect(200);

    let bob = daemon.other_account_token("bob", Scope::Deploy);
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("innocent");
    std::os::unix::fs::symlink(repo.path(), &link).unwrap();
    let worktree = links.path().join("worktree");
    git2::Repository::open(repo.path())
        .unwrap()
        .worktree("side", &worktree, None)
        .unwrap();
    for path in [
        path_of(&repo),
        format!("file://{}", path_of(&repo)),
        format!("{}/.git", path_of(&repo)),
        link.display().to_string(),
        worktree.display().to_string(),
    ] {
        for res in [
            connect(&daemon, &bob, &format!("p{}", rand::random::<u32>()), &path).await,
            plan(&daemon, &bob, &path).await,
        ] {
            let res = res.expect(409);
            assert!(
                res.error_message().contains("another account"),
                "{path}: {}",
                res.text
            );
            assert!(!res.text.contains("admin's"), "{}", res.text);
        }
    }
    // Bob's own repository is fine.
    let own = Repo::new(&[("index.html", "bob's\n")]);
    connect(&daemon, &bob, "bobs", &path_of(&own))
        .await
        .expect(200);
    let planned = plan(&daemon, &bob, &path_of(&own)).await.expect(200);
    assert_eq!(planned.body["builder"], "static", "{}", planned.text);
}

/// A permission the operator withdraws after the repository was connected stops the
/// account's deploys, with the reason on the deploy.
#[tokio::test]
async fn a_revoked_allowance_fails_the_next_deploy_with_the_reason() {
    let daemon = TestDaemon::start_with(|c| {
        c.git.local_repo_accounts = Some(vec!["admin".into(), "bob".into()]);
    })
    .await;
    let bob = daemon.other_account_token("bob", Scope::Deploy);
    let own = Repo::new(&[("index.html", "bob's\n")]);
    let (project_id, connected) = connect_project(&daemon, &bob, "bobs", &path_of(&own)).await;
    connected.expect(200);
    let (dir, mut config) = daemon.stop().await;
    config.git.local_repo_accounts = Some(vec!["admin".into()]);
    let daemon = TestDaemon::start_in(dir, config).await;
    let queued = daemon
        .post(
            &format!("/v1/projects/{project_id}/deploy"),
            &bob,
            json!({}),
        )
        .await
        .expect(202);
    let deploy = wait_final(&daemon, &bob, queued.body["deployId"].as_str().unwrap()).await;
    assert_eq!(deploy["status"], "failed", "{deploy}");
    assert_eq!(deploy["failedStep"], "fetch", "{deploy}");
    assert!(
        deploy["error"]
            .as_str()
            .unwrap()
            .contains("git.local_repo_accounts"),
        "{deploy}"
    );
}

async fn wait_final(daemon: &TestDaemon, token: &str, deploy_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let deploy = daemon
            .get(&format!("/v1/deploys/{deploy_id}"), token)
            .await
            .expect(200)
            .body;
        if ["running", "failed", "canceled", "superseded"]
            .contains(&deploy["status"].as_str().unwrap())
        {
            return deploy;
        }
        assert!(Instant::now() < deadline, "deploy still {deploy}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback listener that counts connections and answers each the way `reply` says:
/// what a port scanner would tell apart.
fn listener(reply: &'static [u8]) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut hello = [0u8; 512];
            let _ = stream.read(&mut hello);
            let _ = stream.write_all(reply);
        }
    });
    (port, accepted)
}

/// A plain-HTTP server's answer to a TLS ClientHello.
const PLAIN_HTTP: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// A TLS server's fatal `access_denied` alert.
const TLS_ALERT: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];

#[tokio::test]
async fn internal_git_hosts_are_refused_alike_without_being_contacted() {
    // Short, so today's code (which connects) fails this test in seconds, not minutes.
    let daemon = TestDaemon::start_with(|c| c.deploy.fetch_timeout_secs = 5).await;
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (http, http_seen) = listener(PLAIN_HTTP);
    let (tls, tls_seen) = listener(TLS_ALERT);
    let bob = daemon.other_account_token("bob", Scope::Deploy);
    let project = daemon
        .post("/v1/projects", &bob, json!({ "name": "scanner" }))
        .await
        .expect(201)
        .body;
    let git_path = format!("/v1/projects/{}/git", project["id"].as_str().unwrap());
    let mut bodies = Vec::new();
    for url in [
        format!("https://127.0.0.1:{closed}/x.git"),
        format!("https://127.0.0.1:{http}/x.git"),
        format!("https://127.0.0.1:{tls}/x.git"),
        format!("https://localhost:{tls}/x.git"),
        format!("https://[::1]:{http}/x.git"),
        "https://10.11.12.13/x.git".to_owned(),
        "https://169.254.169.254/latest.git".to_owned(),
        "https://192.168.1.1/x.git".to_owned(),
    ] {
        for token in [&bob, &daemon.admin_token] {
            let started = Instant::now();
            let planned = plan(&daemon, token, &url).await.expect(422);
            let connected = daemon
                .post(&git_path, &bob, json!({ "repo": url }))
                .await
                .expect(422);
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{url} took {:?}",
                started.elapsed()
            );
            bodies.push((url.clone(), planned.text));
            bodies.push((url.clone(), connected.text));
        }
    }
    let (first_url, first) = &bodies[0];
    for (url, body) in &bodies {
        assert_eq!(body, first, "{url} answers unlike {first_url}");
    }
    assert!(first.contains("git.allowed_networks"), "{first}");
    assert_eq!(
        http_seen.load(Ordering::SeqCst),
        0,
        "the HTTP listener was contacted"
    );
    assert_eq!(
        tls_seen.load(Ordering::SeqCst),
        0,
        "the TLS listener was contacted"
    );
}

/// The operator's allowance opens exactly the networks it names: a loopback git server is
/// then reached (here it answers with a TLS alert, so the fetch fails after contact).
#[tokio::test]
async fn an_allowed_network_is_reached() {
    let daemon = TestDaemon::start_with(|c| {
        c.deploy.fetch_timeout_secs = 5;
        c.git.allowed_networks = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let (tls, tls_seen) = listener(TLS_ALERT);
    let res = plan(
        &daemon,
        &daemon.admin_token,
        &format!("https://127.0.0.1:{tls}/x.git"),
    )
    .await
    .expect(422);
    assert!(res.error_message().contains("TLS"), "{}", res.text);
    assert_eq!(tls_seen.load(Ordering::SeqCst), 1);
    // Outside the allowed network, still refused.
    let res = plan(
        &daemon,
        &daemon.admin_token,
        &format!("https://[::1]:{tls}/x.git"),
    )
    .await
    .expect(422);
    assert!(
        res.error_message().contains("git.allowed_networks"),
        "{}",
        res.text
    );
    assert_eq!(tls_seen.load(Ordering::SeqCst), 1);
}

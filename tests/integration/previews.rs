//! Preview deployments end to end on the real engine and edge: a pull request opened by a
//! signed webhook gets its own containers at its own hostname (with a certificate) while
//! production keeps serving main; `synchronize` updates it in place; `closed` removes its
//! containers, route and certificate record. Also: the per-project cap, TTL expiry by the
//! sweep, branch opt-in by pattern, bad input, and another account's 404.

use std::time::Duration;

use cantila::{docker::Engine, names::Scope};
use serde_json::{json, Value};

use crate::{
    deploys::{cleanup, containers_gone, send_webhook, Repo},
    support::TestDaemon,
};

impl Repo {
    /// Commits `files` on `branch` (made from main's head when new) and leaves HEAD and
    /// the work tree on main again; returns the commit sha.
    pub fn commit_on_branch(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        let repo = git2::Repository::open(self.path()).unwrap();
        let full = format!("refs/heads/{branch}");
        if repo.find_reference(&full).is_err() {
            let head = repo.head().unwrap().peel_to_commit().unwrap();
            repo.branch(branch, &head, false).unwrap();
        }
        let mut force = git2::build::CheckoutBuilder::new();
        force.force();
        repo.set_head(&full).unwrap();
        repo.checkout_head(Some(&mut force)).unwrap();
        let sha = self.commit(files, message);
        let mut force = git2::build::CheckoutBuilder::new();
        force.force().remove_untracked(true);
        repo.set_head("refs/heads/main").unwrap();
        repo.checkout_head(Some(&mut force)).unwrap();
        sha
    }
}

/// A busybox app that serves `www/` and writes what it sees of the preview env to
/// `/www/env.txt`.
fn app(body: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"sh\", \"-c\", \"echo \\\"preview=$CANTILA_PREVIEW url=$CANTILA_PREVIEW_URL db=$DATABASE_URL greeting=$GREETING extra=$EXTRA\\\" > /www/env.txt && exec httpd -f -p 8080 -h /www\"]\n".to_owned(),
        ),
        ("www/index.html", body.to_owned()),
    ]
}

fn borrowed<'a>(files: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    files.iter().map(|(p, c)| (*p, c.as_str())).collect()
}

/// A GitHub `pull_request` payload.
fn pull_request(action: &str, number: u32, branch: &str, sha: &str) -> Value {
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "head": { "ref": branch, "sha": sha },
            "base": { "ref": "main" }
        }
    })
}

/// HTTPS through the edge, trusting the daemon's local CA, with every name resolving to
/// the edge.
async fn edge_https(daemon: &TestDaemon, host: &str, path: &str) -> (u16, String) {
    let ca = std::fs::read(daemon.data_dir().join("certs/local-ca/ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve(host, daemon.https)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = client
        .get(format!("https://{host}:{}{path}", daemon.https.port()))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

async fn edge_http(daemon: &TestDaemon, host: &str) -> u16 {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{}/", daemon.http))
        .header("host", host)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn previews(daemon: &TestDaemon, project_id: &str) -> Vec<Value> {
    daemon
        .get(
            &format!("/v1/projects/{project_id}/previews"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body["previews"]
        .as_array()
        .unwrap()
        .clone()
}

async fn instances(daemon: &TestDaemon, project_id: &str, preview: Option<&str>) -> Vec<Value> {
    let query = preview.map(|p| format!("?preview={p}")).unwrap_or_default();
    daemon
        .get(
            &format!("/v1/projects/{project_id}/instances{query}"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body["instances"]
        .as_array()
        .unwrap()
        .clone()
}

/// Polls until `check` holds (up to 30 s).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 30 s");
}

#[tokio::test]
async fn a_pull_request_preview_serves_its_branch_follows_pushes_and_goes_when_closed() {
    let daemon = TestDaemon::start_with(|c| {
        c.tls.mode = cantila::tls::TlsMode::SelfSigned;
        c.deploy.drain_secs = 0;
        c.deploy.stop_grace_secs = 1;
    })
    .await;
    let repo = Repo::new(&borrowed(&app("main v1\n")));
    let (project_id, secret) = daemon.connected_project("shop", &repo).await;
    daemon
        .post(
            &format!("/v1/projects/{project_id}/env"),
            &daemon.admin_token,
            json!({ "vars": {
                "GREETING": "hello",
                "DATABASE_URL": { "value": "postgres://prod-db/shop", "secret": true }
            } }),
        )
        .await
        .expect(200);
    let production = daemon.deploy(&project_id, None).await;
    assert_eq!(production["status"], "running", "{production}");
    let main_host = "shop.admin.test.local";
    assert_eq!(
        edge_https(&daemon, main_host, "/").await,
        (200, "main v1\n".to_owned())
    );

    // A pull request from a branch: the webhook queues the preview's deploy.
    let v1 = repo.commit_on_branch("feature/Login", &borrowed(&app("branch v1\n")), "v1");
    let opened = send_webhook(
        &daemon,
        &project_id,
        &secret,
        "pull_request",
        "delivery-pr-1",
        pull_request("opened", 7, "feature/Login", &v1),
    )
    .await
    .expect(202);
    assert_eq!(opened.body["status"], "queued", "{}", opened.text);
    let preview_id = opened.body["previewId"].as_str().unwrap().to_owned();
    assert!(preview_id.starts_with("prv_"), "{preview_id}");
    let first_deploy = opened.body["deployId"].as_str().unwrap().to_owned();
    let deploy = daemon.wait_deploy(&first_deploy).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(deploy["commitSha"], v1);

    let listed = previews(&daemon, &project_id).await;
    assert_eq!(listed.len(), 1);
    let preview = &listed[0];
    let host = "feature-login--shop-admin.test.local";
    assert_eq!(preview["id"], preview_id.as_str());
    assert_eq!(preview["hostname"], host);
    assert_eq!(preview["url"], format!("https://{host}"));
    assert_eq!(preview["status"], "running", "{preview}");
    assert_eq!(preview["branch"], "feature/Login");
    assert_eq!(preview["pullRequest"], 7);
    assert_eq!(preview["commitSha"], v1);
    assert_eq!(preview["trigger"], "webhook");
    assert!(preview["expiresAt"].as_str().unwrap() > preview["createdAt"].as_str().unwrap());

    // The preview answers with the branch's content, production still with main's.
    assert_eq!(
        edge_https(&daemon, host, "/").await,
        (200, "branch v1\n".to_owned())
    );
    assert_eq!(
        edge_https(&daemon, main_host, "/").await,
        (200, "main v1\n".to_owned())
    );
    // Its env: the preview marker and URL, production's plain vars, never the database.
    let (_, env) = edge_https(&daemon, host, "/env.txt").await;
    assert_eq!(
        env.trim(),
        format!("preview=1 url=https://{host} db= greeting=hello extra="),
        "a preview never inherits DATABASE_URL"
    );
    let (_, production_env) = edge_https(&daemon, main_host, "/env.txt").await;
    assert!(
        production_env.contains("preview= ")
            && production_env.contains("db=postgres://prod-db/shop"),
        "{production_env}"
    );

    // One instance of the smallest size, listed under the preview only.
    let preview_instances = instances(&daemon, &project_id, Some(&preview_id)).await;
    assert_eq!(preview_instances.len(), 1, "{preview_instances:?}");
    assert_eq!(preview_instances[0]["size"], "nano");
    assert_eq!(preview_instances[0]["deployId"], first_deploy.as_str());
    let production_instances = instances(&daemon, &project_id, None).await;
    assert_eq!(production_instances.len(), 1, "{production_instances:?}");
    assert_eq!(production_instances[0]["deployId"], production["id"]);
    // Its certificate record exists once the certificate is made.
    let cert_dir = daemon.data_dir().join("certs/hosts").join(host);
    eventually("the preview's certificate", || {
        let cert_dir = cert_dir.clone();
        async move { cert_dir.join("fullchain.pem").exists() }
    })
    .await;

    // A production release leaves the preview's containers alone.
    repo.commit(&borrowed(&app("main v2\n")), "main v2");
    let production_v2 = daemon.deploy(&project_id, None).await;
    assert_eq!(production_v2["status"], "running", "{production_v2}");
    assert_eq!(
        edge_https(&daemon, main_host, "/").await,
        (200, "main v2\n".to_owned())
    );
    assert_eq!(
        edge_https(&daemon, host, "/").await,
        (200, "branch v1\n".to_owned())
    );
    assert_eq!(
        instances(&daemon, &project_id, Some(&preview_id))
            .await
            .len(),
        1
    );

    // New commits on the pull request update the same preview in place.
    let v2 = repo.commit_on_branch("feature/Login", &borrowed(&app("branch v2\n")), "v2");
    let synchronized = send_webhook(
        &daemon,
        &project_id,
        &secret,
        "pull_request",
        "delivery-pr-2",
        pull_request("synchronize", 7, "feature/Login", &v2),
    )
    .await
    .expect(202);
    assert_eq!(synchronized.body["previewId"], preview_id.as_str());
    let second_deploy = synchronized.body["deployId"].as_str().unwrap().to_owned();
    assert_eq!(
        daemon.wait_deploy(&second_deploy).await["status"],
        "running"
    );
    assert_eq!(
        edge_https(&daemon, host, "/").await,
        (200, "branch v2\n".to_owned())
    );
    let listed = previews(&daemon, &project_id).await;
    assert_eq!(listed.len(), 1, "updated in place, not a second preview");
    assert_eq!(listed[0]["hostname"], host);
    assert_eq!(listed[0]["commitSha"], v2);
    assert_eq!(
        daemon
            .get(&format!("/v1/deploys/{first_deploy}"), &daemon.admin_token)
            .await
            .body["status"],
        "superseded"
    );
    assert!(containers_gone("cantila.deploy", &first_deploy).await);
    // Production's deploy history holds no preview deploys.
    let history = daemon
        .get(
            &format!("/v1/projects/{project_id}/deploys"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let ids: Vec<&str> = history["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            production_v2["id"].as_str().unwrap(),
            production["id"].as_str().unwrap()
        ]
    );

    // Closing the pull request removes containers, route and certificate record.
    let closed = send_webhook(
        &daemon,
        &project_id,
        &secret,
        "pull_request",
        "delivery-pr-3",
        pull_request("closed", 7, "feature/Login", &v2),
    )
    .await
    .expect(200);
    assert_eq!(closed.body["status"], "removed", "{}", closed.text);
    assert_eq!(closed.body["previewId"], preview_id.as_str());
    assert!(previews(&daemon, &project_id).await.is_empty());
    assert_eq!(edge_http(&daemon, host).await, 404);
    assert!(containers_gone("cantila.preview", &preview_id).await);
    assert!(!cert_dir.exists(), "the certificate record is removed");
    assert_eq!(
        daemon
            .get(&format!("/v1/deploys/{second_deploy}"), &daemon.admin_token)
            .await
            .body["status"],
        "superseded"
    );
    // Production serves on, untouched.
    assert_eq!(
        edge_https(&daemon, main_host, "/").await,
        (200, "main v2\n".to_owned())
    );
    assert_eq!(instances(&daemon, &project_id, None).await.len(), 1);
    let audit = daemon.get("/v1/audit", &daemon.admin_token).await.body;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["preview.create", "preview.update", "preview.delete"] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
    cleanup(&project_id).await;
}

#[tokio::test]
async fn previews_are_capped_expire_follow_opted_in_branches_and_stay_in_their_account() {
    let daemon = TestDaemon::start_with(|c| {
        c.previews.max_per_project = 2;
        c.previews.sweep_interval_secs = 1;
    })
    .await;
    // Static sites: published to disk, no container needed.
    let repo = Repo::new(&[("index.html", "main\n")]);
    repo.commit_on_branch("alpha", &[("index.html", "alpha\n")], "alpha");
    repo.commit_on_branch("beta", &[("index.html", "beta\n")], "beta");
    let gamma = repo.commit_on_branch("gamma", &[("index.html", "gamma\n")], "gamma");
    let (project_id, secret) = daemon.connected_project("site", &repo).await;
    let path = format!("/v1/projects/{project_id}/previews");

    // Bad input is refused with what is accepted, and creates nothing.
    for (body, expected) in [
        (json!({}), "exactly one of `branch`"),
        (
            json!({ "branch": "alpha", "ref": "beta" }),
            "exactly one of `branch`",
        ),
        (json!({ "branch": "a..b" }), "`..`"),
        (json!({ "branch": "alpha", "ttl": "7w" }), "ttl"),
        (
            json!({ "branch": "alpha", "ttl": 0 }),
            "ttl must be between",
        ),
        (json!({ "branch": "alpha", "env": { "PORT": "1" } }), "PORT"),
        (
            json!({ "branch": "alpha", "env": { "CANTILA_PREVIEW": "0" } }),
            "CANTILA_PREVIEW",
        ),
        (
            json!({ "branch": "alpha", "pullRequest": 0 }),
            "pullRequest",
        ),
    ] {
        let res = daemon.post(&path, &daemon.admin_token, body.clone()).await;
        assert_eq!(res.status, 422, "{body}: {}", res.text);
        assert!(
            res.error_message().contains(expected),
            "{body}: {}",
            res.text
        );
    }
    daemon
        .post(
            &path,
            &daemon.admin_token,
            json!({ "branch": "alpha", "extra": 1 }),
        )
        .await
        .expect(422);
    let unconnected = daemon.create_project("bare").await;
    let res = daemon
        .post(
            &format!(
                "/v1/projects/{}/previews",
                unconnected["id"].as_str().unwrap()
            ),
            &daemon.admin_token,
            json!({ "branch": "alpha" }),
        )
        .await
        .expect(422);
    assert!(res.error_message().contains("git"), "{}", res.text);
    assert!(previews(&daemon, &project_id).await.is_empty());

    // Two previews fit; a third answers 409 naming the limit; the same branch updates.
    let alpha = daemon
        .post(
            &path,
            &daemon.admin_token,
            json!({ "branch": "alpha", "env": { "EXTRA": "x" } }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(alpha["envKeys"], json!(["EXTRA"]));
    assert!(
        !alpha.to_string().contains("\"x\""),
        "override values are never shown"
    );
    let beta = daemon
        .post(
            &path,
            &daemon.admin_token,
            json!({ "ref": "refs/heads/beta" }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(beta["branch"], "beta");
    let full = daemon
        .post(&path, &daemon.admin_token, json!({ "branch": "gamma" }))
        .await
        .expect(409);
    assert!(
        full.error_message()
            .contains("previews.max_per_project = 2"),
        "{}",
        full.text
    );
    // From a webhook the cap is the delivery's recorded outcome.
    let capped = send_webhook(
        &daemon,
        &project_id,
        &secret,
        "pull_request",
        "delivery-capped",
        pull_request("opened", 9, "gamma", &gamma),
    )
    .await
    .expect(200);
    assert_eq!(capped.body["status"], "ignored", "{}", capped.text);
    assert!(capped.body["reason"]
        .as_str()
        .unwrap()
        .contains("previews.max_per_project"));
    let git = daemon
        .get(
            &format!("/v1/projects/{project_id}/git"),
            &daemon.admin_token,
        )
        .await
        .body;
    assert!(
        git["lastDelivery"]["result"]
            .as_str()
            .unwrap()
            .contains("max_per_project"),
        "{git}"
    );
    let again = daemon
        .post(&path, &daemon.admin_token, json!({ "branch": "alpha" }))
        .await
        .expect(200)
        .body;
    assert_eq!(again["id"], alpha["id"]);
    assert_eq!(again["hostname"], alpha["hostname"]);
    assert_ne!(again["deployId"], alpha["deployId"]);
    let deploy = daemon
        .wait_deploy(again["deployId"].as_str().unwrap())
        .await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let alpha_host = alpha["hostname"].as_str().unwrap();
    assert_eq!(alpha_host, "alpha--site-admin.test.local");
    let client = reqwest::Client::new();
    let body = client
        .get(format!("http://{}/", daemon.http))
        .header("host", alpha_host)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "alpha\n");

    // Another account sees none of it: the same 404 as a project that does not exist.
    let other = daemon.other_account_token("mallory", Scope::Admin);
    let alpha_path = format!("{path}/{}", alpha["id"].as_str().unwrap());
    let missing = daemon
        .delete(
            &format!(
                "/v1/projects/prj_doesnotexist000000000/previews/{}",
                alpha["id"].as_str().unwrap()
            ),
            &other,
        )
        .await
        .expect(404);
    for res in [
        daemon.get(&path, &other).await,
        daemon
            .post(&path, &other, json!({ "branch": "gamma" }))
            .await,
        daemon.get(&alpha_path, &other).await,
        daemon.delete(&alpha_path, &other).await,
        daemon
            .get(
                &format!(
                    "/v1/projects/{project_id}/instances?preview={}",
                    alpha["id"].as_str().unwrap()
                ),
                &other,
            )
            .await,
    ] {
        assert_eq!(res.status, 404, "{}", res.text);
        assert_eq!(
            res.error_message().replace(&project_id, "ID"),
            missing
                .error_message()
                .replace("prj_doesnotexist000000000", "ID")
        );
    }
    daemon
        .get(&format!("{path}/prv_nope"), &daemon.admin_token)
        .await
        .expect(404);
    daemon
        .get(
            &format!("/v1/projects/{project_id}/instances?preview=prv_nope"),
            &daemon.admin_token,
        )
        .await
        .expect(404);
    assert_eq!(previews(&daemon, &project_id).await.len(), 2);

    // Deleting frees a slot; a preview with a short TTL is removed by the sweep.
    daemon
        .delete(
            &format!("{path}/{}", beta["id"].as_str().unwrap()),
            &daemon.admin_token,
        )
        .await
        .expect(204);
    let short = daemon
        .post(
            &path,
            &daemon.admin_token,
            json!({ "branch": "gamma", "ttl": "2s" }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(short["ttlSecs"], 2);
    let short_id = short["id"].as_str().unwrap().to_owned();
    eventually("the expiry sweep", || {
        let daemon = &daemon;
        let project_id = project_id.clone();
        let short_id = short_id.clone();
        async move {
            !previews(daemon, &project_id)
                .await
                .iter()
                .any(|p| p["id"] == short_id.as_str())
        }
    })
    .await;
    assert_eq!(
        edge_http(&daemon, "gamma--site-admin.test.local").await,
        404
    );
    let audit = daemon.get("/v1/audit", &daemon.admin_token).await.body;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "preview.delete"
                && e["target"] == short_id.as_str()
                && e["actor"] == "preview-expiry"),
        "{audit}"
    );

    // Pushes to other branches create previews only once the project opts in.
    let ignored = send_webhook(
        &daemon,
        &project_id,
        &secret,
        "push",
        "delivery-push-1",
        json!({ "ref": "refs/heads/feature/one", "after": repo.commit_on_branch("feature/one", &[("index.html", "one\n")], "one") }),
    )
    .await
    .expect(200);
    assert_eq!(ignored.body["status"], "ignored", "{}", ignored.text);
    assert!(ignored.body["reason"]
        .as_str()
        .unwrap()
        .contains("previews.branches"));
    daemon
        .delete(&alpha_path, &daemon.admin_token)
        .await
        .expect(204);
    let bad = daemon
        .patch(
            &format!("/v1/projects/{project_id}"),
            &daemon.admin_token,
            json!({ "previews": { "branches": ["feature/*", "a b"] } }),
        )
        .await
        .expect(422);
    assert!(bad.error_message().contains("a b"), "{}", bad.text);
    let patched = daemon
        .patch(
            &format!("/v1/projects/{project_id}"),
            &daemon.admin_token,
            json!({ "previews": { "branches": ["feature/*"] } }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(patched["previews"]["branches"], json!(["feature/*"]));
    let two = repo.commit_on_branch("feature/two", &[("index.html", "two\n")], "two");
    let queued = send_webhook(
        &daemon,
        &project_id,
        &secret,
        "push",
        "delivery-push-2",
        json!({ "ref": "refs/heads/feature/two", "after": two }),
    )
    .await
    .expect(202);
    let pushed_preview = queued.body["previewId"].as_str().unwrap().to_owned();
    assert_eq!(
        daemon
            .wait_deploy(queued.body["deployId"].as_str().unwrap())
            .await["commitSha"],
        two
    );
    let other_branch = send_webhook(
        &daemon,
        &project_id,
        &secret,
        "push",
        "delivery-push-3",
        json!({ "ref": "refs/heads/hotfix", "after": repo.commit_on_branch("hotfix", &[("index.html", "hot\n")], "hot") }),
    )
    .await
    .expect(200);
    assert_eq!(other_branch.body["status"], "ignored");
    // Deleting the branch removes its preview.
    let deleted = send_webhook(
        &daemon,
        &project_id,
        &secret,
        "push",
        "delivery-push-4",
        json!({ "ref": "refs/heads/feature/two", "after": "0000000000000000000000000000000000000000", "deleted": true }),
    )
    .await
    .expect(200);
    assert_eq!(deleted.body["status"], "removed", "{}", deleted.text);
    assert_eq!(deleted.body["previewId"], pushed_preview.as_str());
    assert!(previews(&daemon, &project_id).await.is_empty());
    // Their published sites are gone from disk.
    let sites = daemon.data_dir().join("sites").join(&project_id);
    eventually("preview sites removed", || {
        let sites = sites.clone();
        async move {
            std::fs::read_dir(&sites)
                .map(|entries| entries.count() == 0)
                .unwrap_or(true)
        }
    })
    .await;
}

#[tokio::test]
async fn a_lost_preview_instance_is_replaced_without_touching_production() {
    let daemon = TestDaemon::start_with(|c| c.deploy.drain_secs = 0).await;
    let repo = Repo::new(&borrowed(&app("main\n")));
    repo.commit_on_branch("topic", &borrowed(&app("topic\n")), "topic");
    let (project_id, _) = daemon.connected_project("repair", &repo).await;
    assert_eq!(daemon.deploy(&project_id, None).await["status"], "running");
    let preview = daemon
        .post(
            &format!("/v1/projects/{project_id}/previews"),
            &daemon.admin_token,
            json!({ "branch": "topic" }),
        )
        .await
        .expect(201)
        .body;
    let preview_id = preview["id"].as_str().unwrap().to_owned();
    assert_eq!(
        daemon
            .wait_deploy(preview["deployId"].as_str().unwrap())
            .await["status"],
        "running"
    );
    let production_before = instances(&daemon, &project_id, None).await;
    let lost = instances(&daemon, &project_id, Some(&preview_id)).await;
    assert_eq!(lost.len(), 1);
    let engine = Engine::connect().await.unwrap();
    let container = engine
        .containers(&[("cantila.preview", &preview_id)])
        .await
        .unwrap()
        .remove(0);
    engine
        .stop_and_remove(&container.id, Duration::from_secs(1))
        .await
        .unwrap();
    eventually("a replacement preview instance", || {
        let daemon = &daemon;
        let project_id = project_id.clone();
        let preview_id = preview_id.clone();
        let lost_id = lost[0]["id"].clone();
        async move {
            let now = instances(daemon, &project_id, Some(&preview_id)).await;
            now.len() == 1 && now[0]["id"] != lost_id && now[0]["state"] == "healthy"
        }
    })
    .await;
    let production_after = instances(&daemon, &project_id, None).await;
    assert_eq!(
        production_before
            .iter()
            .map(|i| &i["id"])
            .collect::<Vec<_>>(),
        production_after
            .iter()
            .map(|i| &i["id"])
            .collect::<Vec<_>>(),
        "production's instances are untouched"
    );
    let host = preview["hostname"].as_str().unwrap();
    let body = reqwest::Client::new()
        .get(format!("http://{}/", daemon.http))
        .header("host", host)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "topic\n");
    cleanup(&project_id).await;
}

#[tokio::test]
async fn the_cli_creates_lists_and_deletes_previews() {
    let daemon = TestDaemon::start().await;
    let repo = Repo::new(&[("index.html", "main\n")]);
    repo.commit_on_branch("docs/new", &[("index.html", "docs\n")], "docs");
    let (project_id, _) = daemon.connected_project("handbook", &repo).await;
    let env = vec![
        ("CANTILA_URL", format!("http://{}", daemon.api)),
        ("CANTILA_TOKEN", daemon.admin_token.clone()),
    ];
    let run = |list: &[&str]| {
        let args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        crate::cli::cantila(args, env.clone())
    };
    let out = run(&[
        "previews",
        "create",
        "handbook",
        "--branch",
        "docs/new",
        "--ttl",
        "1d",
        "--env",
        "MODE=review",
        "--follow",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("docs-new--handbook-admin.test.local"),
        "{stderr}"
    );
    let out = run(&["previews", "list", "handbook", "--json"]).await;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let preview = &list["previews"][0];
    assert_eq!(preview["status"], "running", "{list}");
    assert_eq!(preview["ttlSecs"], 86_400);
    assert_eq!(preview["envKeys"], json!(["MODE"]));
    let id = preview["id"].as_str().unwrap().to_owned();
    let out = run(&["previews", "list", "handbook"]).await;
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.starts_with("ID") && table.contains(&id) && table.contains("docs/new"),
        "{table}"
    );
    let out = run(&[
        "previews", "create", "handbook", "--branch", "docs/new", "--ref", "main",
    ])
    .await;
    assert!(!out.status.success(), "--branch and --ref conflict");
    let out = run(&["previews", "delete", "handbook", &id]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(previews(&daemon, &project_id).await.is_empty());
    let out = run(&["previews", "delete", "handbook", &id]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Preview deployments end to end on the real engine and edge: a pull request opened by a
//! signed webhook gets its own containers at its own hostname (with a certificate) while
//! production keeps serving main; `synchronize` updates it in place; `closed` removes its
//! containers, route and certificate record. Also: the per-project cap, TTL expiry by the
//! sweep, branch opt-in by pattern, bad input, and another account's 404.

use std::time::Duration;

use cantila::{names::Scope, runtime::docker::Engine};
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
        // The poll interval: the loop checks its condition again.
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
    // A pull request from a fork is never built: its code would run with the project's
    // env. The delivery says so, and nothing is created.
    let mut from_fork = pull_request("opened", 11, "main", &gamma);
    from_fork["pull_request"]["head"]["repo"] = json!({ "full_name": "mallory/site" });
    from_fork["pull_request"]["base"]["repo"] = json!({ "full_name": "acme/site" });
    let refused = send_webhook(
        &daemon,
        &project_id,
        &secret,
        "pull_request",
        "delivery-fork",
        from_fork,
    )
    .await
    .expect(200);
    assert_eq!(refused.body["status"], "ignored", "{}", refused.text);
    assert!(
        refused.body["reason"].as_str().unwrap().contains("fork"),
        "{}",
        refused.text
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
    // Deleting the branch removes its preview (once the repository has it deleted: a
    // deletion delivery while the branch exists is stale).
    git2::Repository::open(repo.path())
        .unwrap()
        .find_branch("feature/two", git2::BranchType::Local)
        .unwrap()
        .delete()
        .unwrap();
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

/// A busybox app with a Procfile: `web` serves `www/` and says what it was asked at
/// `/cgi-bin/say?WORD` on its stdout; `worker` prints whether it runs in a preview, then
/// idles.
fn process_app(body: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n".to_owned(),
        ),
        ("www/index.html", body.to_owned()),
        (
            "www/cgi-bin/say",
            "#!/bin/sh\necho \"said: $QUERY_STRING\" > /proc/1/fd/1\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n".to_owned(),
        ),
        (
            "Procfile",
            "web: chmod +x /www/cgi-bin/say; exec httpd -f -p 8080 -h /www\nworker: echo \"worker boot preview=[$CANTILA_PREVIEW]\"; while true; do sleep 1; done\n".to_owned(),
        ),
    ]
}

/// The texts of a logs read.
async fn log_texts(daemon: &TestDaemon, project_id: &str, query: &str) -> Vec<String> {
    daemon
        .get(
            &format!("/v1/projects/{project_id}/logs?{query}"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["line"].as_str().unwrap().to_owned())
        .collect()
}

async fn metrics_of(daemon: &TestDaemon, project_id: &str, query: &str) -> Value {
    daemon
        .get(
            &format!("/v1/projects/{project_id}/metrics?since=5m&step=1m{query}"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body
}

fn ids_of(instances: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = instances
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn of_process<'a>(instances: &'a [Value], process: &str) -> Vec<&'a Value> {
    instances
        .iter()
        .filter(|i| i["process"] == process)
        .collect()
}

#[tokio::test]
async fn a_preview_runs_every_process_type_and_keeps_its_logs_and_metrics_to_itself() {
    let daemon = TestDaemon::start_with(|c| {
        c.deploy.drain_secs = 0;
        c.deploy.stop_grace_secs = 1;
        c.metrics.interval_secs = 1;
    })
    .await;
    let repo = Repo::new(&borrowed(&process_app("main\n")));
    repo.commit_on_branch("topic", &borrowed(&process_app("topic\n")), "topic");
    let (project_id, _) = daemon.connected_project("chores", &repo).await;
    let production = daemon.deploy(&project_id, None).await;
    assert_eq!(production["status"], "running", "{production}");
    // Production runs two workers; a preview never takes production's counts.
    let scale = format!("/v1/projects/{project_id}/scale");
    daemon
        .post(
            &scale,
            &daemon.admin_token,
            json!({ "processes": { "worker": 2 } }),
        )
        .await
        .expect(200);
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
    let preview_deploy = daemon
        .wait_deploy(preview["deployId"].as_str().unwrap())
        .await;
    assert_eq!(preview_deploy["status"], "running", "{preview_deploy}");
    let preview_host = preview["hostname"].as_str().unwrap().to_owned();
    let main_host = "chores.admin.test.local";

    // Every process type of the preview: one instance each, the smallest size, its own
    // deploy; production keeps its one web and two workers.
    let preview_instances = instances(&daemon, &project_id, Some(&preview_id)).await;
    assert_eq!(preview_instances.len(), 2, "{preview_instances:?}");
    for process in ["web", "worker"] {
        let of_type = of_process(&preview_instances, process);
        assert_eq!(of_type.len(), 1, "{process}: {preview_instances:?}");
        assert_eq!(of_type[0]["size"], "nano");
        assert_eq!(of_type[0]["deployId"], preview_deploy["id"]);
        assert_eq!(of_type[0]["state"], "healthy");
    }
    let production_instances = instances(&daemon, &project_id, None).await;
    assert_eq!(of_process(&production_instances, "web").len(), 1);
    assert_eq!(of_process(&production_instances, "worker").len(), 2);
    assert!(production_instances
        .iter()
        .all(|i| i["deployId"] == production["id"]));
    let engine = Engine::connect().await.unwrap();
    let labelled = engine
        .containers(&[
            ("cantila.preview", preview_id.as_str()),
            ("cantila.process", "worker"),
        ])
        .await
        .unwrap();
    assert_eq!(
        labelled.len(),
        1,
        "the preview's worker carries cantila.preview"
    );

    // Scaling production's workers converges production only.
    let preview_worker = of_process(&preview_instances, "worker")[0]["id"].clone();
    daemon
        .post(
            &scale,
            &daemon.admin_token,
            json!({ "processes": { "worker": 0 } }),
        )
        .await
        .expect(200);
    assert!(of_process(&instances(&daemon, &project_id, None).await, "worker").is_empty());
    let still = instances(&daemon, &project_id, Some(&preview_id)).await;
    assert_eq!(of_process(&still, "worker").len(), 1);
    assert_eq!(of_process(&still, "worker")[0]["id"], preview_worker);

    // A lost preview worker is replaced for the preview; production gets no worker.
    engine
        .stop_and_remove(&labelled[0].id, Duration::from_secs(0))
        .await
        .unwrap();
    eventually("a replacement preview worker", || {
        let daemon = &daemon;
        let project_id = project_id.clone();
        let preview_id = preview_id.clone();
        let lost = preview_worker.clone();
        async move {
            let now = instances(daemon, &project_id, Some(&preview_id)).await;
            let workers = of_process(&now, "worker");
            workers.len() == 1 && workers[0]["id"] != lost && workers[0]["state"] == "healthy"
        }
    })
    .await;
    let production_instances = instances(&daemon, &project_id, None).await;
    assert_eq!(production_instances.len(), 1, "{production_instances:?}");
    assert_eq!(production_instances[0]["process"], "web");

    // Logs: the preview's container output and edge lines are its own, and production's
    // view shows none of them.
    for _ in 0..3 {
        assert_eq!(
            daemon
                .edge_get(&preview_host, "/cgi-bin/say?from-preview")
                .await,
            (200, "ok\n".to_owned())
        );
    }
    for _ in 0..2 {
        assert_eq!(
            daemon
                .edge_get(main_host, "/cgi-bin/say?from-production")
                .await,
            (200, "ok\n".to_owned())
        );
    }
    assert_eq!(
        daemon.edge_get(&preview_host, "/").await,
        (200, "topic\n".to_owned())
    );
    let preview_query = format!("preview={preview_id}");
    eventually("the preview's lines", || {
        let daemon = &daemon;
        let project_id = project_id.clone();
        let query = preview_query.clone();
        async move {
            let texts = log_texts(daemon, &project_id, &query).await;
            texts.iter().filter(|t| *t == "said: from-preview").count() == 3
                && texts.iter().any(|t| t == "worker boot preview=[1]")
                && texts
                    .iter()
                    .filter(|t| t.starts_with("GET /cgi-bin/say "))
                    .count()
                    == 3
                && texts.iter().any(|t| t.starts_with("GET / 200 "))
        }
    })
    .await;
    eventually("production's lines", || {
        let daemon = &daemon;
        let project_id = project_id.clone();
        async move {
            let texts = log_texts(daemon, &project_id, "").await;
            texts
                .iter()
                .filter(|t| *t == "said: from-production")
                .count()
                == 2
        }
    })
    .await;
    let preview_lines = log_texts(&daemon, &project_id, &preview_query).await;
    assert!(
        !preview_lines.iter().any(|t| t.contains("from-production")
            || t == "worker boot preview=[]"
            || t.contains(&format!("host={main_host}"))),
        "{preview_lines:?}"
    );
    assert!(
        preview_lines
            .iter()
            .filter(|t| t.starts_with("GET "))
            .all(|t| t.contains(&format!("host={preview_host}"))),
        "{preview_lines:?}"
    );
    let production_lines = log_texts(&daemon, &project_id, "").await;
    assert!(
        production_lines
            .iter()
            .any(|t| t == "worker boot preview=[]"),
        "{production_lines:?}"
    );
    assert!(
        !production_lines.iter().any(|t| t.contains("from-preview")
            || t.contains("preview=[1]")
            || t.contains(&preview_host)),
        "{production_lines:?}"
    );
    // Filters combine with the preview: its edge lines only.
    let edge_only = log_texts(
        &daemon,
        &project_id,
        &format!("{preview_query}&stream=edge"),
    )
    .await;
    assert_eq!(edge_only.len(), 4, "{edge_only:?}");
    // A live stream of the preview starts with its window.
    let mut stream = daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/projects/{project_id}/logs?{preview_query}&q=from-&follow=true"),
        )
        .bearer_auth(&daemon.admin_token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    while seen.matches("said: from-preview").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.chunk())
            .await
            .expect("the window arrives")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("from-production"), "{seen}");
    drop(stream);

    // Metrics: the preview's edge figures (4 requests) and its two instances' samples;
    // production's (2 requests) leave them out.
    let preview_ids = ids_of(&instances(&daemon, &project_id, Some(&preview_id)).await);
    let production_ids = ids_of(&instances(&daemon, &project_id, None).await);
    let metrics_query = format!("&preview={preview_id}");
    eventually("the preview's metrics", || {
        let daemon = &daemon;
        let project_id = project_id.clone();
        let query = metrics_query.clone();
        let wanted = preview_ids.clone();
        async move {
            let report = metrics_of(daemon, &project_id, &query).await;
            let sampled: Vec<String> = {
                let mut ids: Vec<String> = report["summary"]["instances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["id"].as_str().unwrap().to_owned())
                    .collect();
                ids.sort();
                ids
            };
            report["summary"]["requests"] == 4 && sampled == wanted
        }
    })
    .await;
    eventually("production's metrics", || {
        let daemon = &daemon;
        let project_id = project_id.clone();
        let wanted = production_ids.clone();
        async move {
            let report = metrics_of(daemon, &project_id, "").await;
            let sampled: Vec<String> = report["summary"]["instances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect();
            report["summary"]["requests"] == 2 && sampled == wanted
        }
    })
    .await;
    let preview_report = metrics_of(&daemon, &project_id, &metrics_query).await;
    assert_eq!(preview_report["previewId"], preview_id.as_str());
    assert_eq!(preview_report["summary"]["status2xx"], 4);
    let series_instances: Vec<&str> = preview_report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(
        series_instances
            .iter()
            .all(|id| !production_ids.iter().any(|p| p == id)),
        "{series_instances:?}"
    );
    let production_report = metrics_of(&daemon, &project_id, "").await;
    assert!(production_report.get("previewId").is_none());
    assert!(production_report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| !preview_ids.iter().any(|p| p == i["id"].as_str().unwrap())));
    // Prometheus text is production's only.
    let refused = daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/projects/{project_id}/metrics?preview={preview_id}"),
        )
        .bearer_auth(&daemon.admin_token)
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    // Another account's project, or an unknown preview: 404 like a missing one.
    let other = daemon.other_account_token("mallory", Scope::Admin);
    let theirs = daemon
        .post("/v1/projects", &other, json!({ "name": "theirs" }))
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Their own project with our preview's id, and our project: both 404.
    for path in [
        format!("/v1/projects/{theirs}/logs?preview={preview_id}"),
        format!("/v1/projects/{theirs}/metrics?preview={preview_id}"),
        format!("/v1/projects/{theirs}/instances?preview={preview_id}"),
        format!("/v1/projects/{project_id}/logs?preview={preview_id}"),
        format!("/v1/projects/{project_id}/metrics?preview={preview_id}"),
    ] {
        let res = daemon.get(&path, &other).await.expect(404);
        assert_eq!(res.error_code(), "not_found", "{path}: {}", res.text);
    }
    for path in [
        format!("/v1/projects/{project_id}/logs?preview=prv_missing"),
        format!("/v1/projects/{project_id}/metrics?preview=prv_missing"),
    ] {
        daemon.get(&path, &daemon.admin_token).await.expect(404);
    }

    // Removing the preview takes its lines and points with it; production's stay.
    daemon
        .delete(
            &format!("/v1/projects/{project_id}/previews/{preview_id}"),
            &daemon.admin_token,
        )
        .await
        .expect(204);
    assert!(containers_gone("cantila.preview", &preview_id).await);
    let production_lines = log_texts(&daemon, &project_id, "").await;
    assert!(production_lines
        .iter()
        .any(|t| t == "said: from-production"));
    // Read beside the running daemon (WAL allows it), as the lifecycle tests do; lines and
    // points are in `logs.db`.
    let connection = rusqlite::Connection::open(daemon.data_dir().join("logs.db")).unwrap();
    let (lines, points, edge_points): (i64, i64, i64) = connection
        .query_row(
            "SELECT (SELECT COUNT(*) FROM runtime_logs WHERE preview_id = ?1),
                    (SELECT COUNT(*) FROM metric_instance_points WHERE preview_id = ?1),
                    (SELECT COUNT(*) FROM metric_preview_edge_points WHERE preview_id = ?1)",
            [&preview_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!((lines, points, edge_points), (0, 0, 0));
    cleanup(&project_id).await;
}

/// A busybox app that writes what it can see of the project's data to `/www/data.txt`:
/// its `DATABASE_URL`, and whether `/srv/files` and `/data` are mounted volumes.
fn data_app(body: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"sh\", \"-c\", \"echo \\\"db=$DATABASE_URL files=$(grep -c ' /srv/files ' /proc/mounts) data=$(grep -c ' /data ' /proc/mounts)\\\" > /www/data.txt && exec httpd -f -p 8080 -h /www\"]\n".to_owned(),
        ),
        ("www/index.html", body.to_owned()),
    ]
}

#[tokio::test]
async fn a_preview_gets_none_of_the_projects_volumes_or_database() {
    let daemon = TestDaemon::start_with(|c| {
        c.deploy.drain_secs = 0;
        c.deploy.stop_grace_secs = 1;
    })
    .await;
    let repo = Repo::new(&borrowed(&data_app("main\n")));
    repo.commit_on_branch("topic", &borrowed(&data_app("topic\n")), "topic");
    let (project_id, _) = daemon.connected_project("keeper", &repo).await;
    daemon
        .post(
            &format!("/v1/projects/{project_id}/volumes"),
            &daemon.admin_token,
            json!({ "name": "files", "mountPath": "/srv/files" }),
        )
        .await
        .expect(201);
    daemon
        .post(
            &format!("/v1/projects/{project_id}/database"),
            &daemon.admin_token,
            json!({ "engine": "sqlite" }),
        )
        .await
        .expect(201);
    let production = daemon.deploy(&project_id, None).await;
    assert_eq!(production["status"], "running", "{production}");
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
    let deploy = daemon
        .wait_deploy(preview["deployId"].as_str().unwrap())
        .await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let preview_host = preview["hostname"].as_str().unwrap().to_owned();

    // Production sees its database and both volumes; the preview sees none of them.
    assert_eq!(
        daemon
            .edge_get("keeper.admin.test.local", "/data.txt")
            .await,
        (200, "db=sqlite:///data/app.db files=1 data=1\n".to_owned())
    );
    assert_eq!(
        daemon.edge_get(&preview_host, "/data.txt").await,
        (200, "db= files=0 data=0\n".to_owned())
    );

    // A backup pauses production's containers only: the preview serves throughout.
    let backup = daemon
        .post(
            &format!("/v1/projects/{project_id}/backups"),
            &daemon.admin_token,
            json!({ "kind": "volume", "volume": "files" }),
        )
        .await
        .expect(202)
        .body;
    let backup = crate::data::wait_backup(&daemon, backup["id"].as_str().unwrap()).await;
    assert_eq!(backup["status"], "completed", "{backup}");
    assert_eq!(
        daemon.edge_get(&preview_host, "/").await,
        (200, "topic\n".to_owned())
    );

    // Only production's containers hold the volume: with production scaled to 0 it can be
    // deleted while the preview runs on.
    daemon
        .post(
            &format!("/v1/projects/{project_id}/scale"),
            &daemon.admin_token,
            json!({ "instances": 0 }),
        )
        .await
        .expect(200);
    let res = daemon
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/projects/{project_id}/volumes/files"),
            Some(&daemon.admin_token),
            Some(json!({ "confirm": "keeper" })),
        )
        .await;
    assert_eq!(res.status, 204, "{}", res.text);
    assert_eq!(
        instances(&daemon, &project_id, Some(&preview_id))
            .await
            .len(),
        1
    );
    crate::data::remove_installation_volumes(&daemon).await;
}

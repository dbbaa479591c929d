//! Gitea/Forgejo and GitLab webhooks end to end, as GitHub's are in `deploys.rs` and
//! `previews.rs`: each provider's signature scheme refuses a wrong or missing signature
//! and a right one deploys; pull (merge) request events open, update and close a preview
//! served by the edge; a pull or merge request from a fork gets no preview and the
//! delivery is recorded as ignored with the reason. The apps are static sites, published
//! to disk, so no image is built.

use serde_json::{json, Value};

use crate::{
    deploys::{sign, Repo},
    support::{Res, TestDaemon},
};

/// One webhook delivery with the provider's own headers.
async fn deliver(
    daemon: &TestDaemon,
    project_id: &str,
    headers: &[(&str, String)],
    body: &Value,
) -> Res {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut request = daemon
        .request(
            reqwest::Method::POST,
            &format!("/v1/projects/{project_id}/git/webhook"),
        )
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    crate::support::read(request.body(bytes).send().await.unwrap()).await
}

/// Gitea's (and Forgejo's) signature: the bare hex HMAC-SHA256 of the body.
fn gitea_signature(secret: &str, body: &Value) -> String {
    let signed = sign(secret, &serde_json::to_vec(body).unwrap());
    signed.trim_start_matches("sha256=").to_owned()
}

/// Headers of a Gitea delivery signed with `secret`.
fn gitea(event: &str, delivery: &str, secret: &str, body: &Value) -> Vec<(&'static str, String)> {
    vec![
        ("x-gitea-event", event.to_owned()),
        ("x-gitea-delivery", delivery.to_owned()),
        ("x-gitea-signature", gitea_signature(secret, body)),
    ]
}

/// Headers of a Forgejo delivery signed with `secret`.
fn forgejo(event: &str, delivery: &str, secret: &str, body: &Value) -> Vec<(&'static str, String)> {
    vec![
        ("x-forgejo-event", event.to_owned()),
        ("x-forgejo-delivery", delivery.to_owned()),
        ("x-forgejo-signature", gitea_signature(secret, body)),
    ]
}

/// Headers of a GitLab delivery carrying `token`.
fn gitlab(event: &str, uuid: &str, token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-gitlab-event", event.to_owned()),
        ("x-gitlab-event-uuid", uuid.to_owned()),
        ("x-gitlab-token", token.to_owned()),
    ]
}

fn push(after: &str) -> Value {
    json!({ "ref": "refs/heads/main", "before": "0".repeat(40), "after": after })
}

/// A Gitea pull request event; `head_repo` is the repository the branch lives in.
fn gitea_pull_request(
    action: &str,
    number: u32,
    branch: &str,
    sha: &str,
    head_repo: &str,
) -> Value {
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "head": { "ref": branch, "sha": sha, "repo": { "full_name": head_repo } },
            "base": { "ref": "main", "repo": { "full_name": "team/site" } }
        }
    })
}

/// A GitLab merge request event; `source_project` is the project the branch lives in
/// (the target project is 7).
fn merge_request(action: &str, iid: u32, branch: &str, sha: &str, source_project: u64) -> Value {
    json!({
        "object_kind": "merge_request",
        "project": { "id": 7, "path_with_namespace": "team/site" },
        "object_attributes": {
            "iid": iid,
            "action": action,
            "state": "opened",
            "source_branch": branch,
            "target_branch": "main",
            "source_project_id": source_project,
            "target_project_id": 7,
            "last_commit": { "id": sha }
        }
    })
}

async fn deploys_of(daemon: &TestDaemon, project_id: &str) -> Vec<Value> {
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
        .clone()
}

async fn previews_of(daemon: &TestDaemon, project_id: &str) -> Vec<Value> {
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

/// The result recorded for the project's last delivery.
async fn last_delivery(daemon: &TestDaemon, project_id: &str) -> Value {
    daemon
        .get(
            &format!("/v1/projects/{project_id}/git"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body["lastDelivery"]
        .clone()
}

/// Waits for the deploy a delivery queued and checks it is running.
async fn deployed(daemon: &TestDaemon, queued: &Res) -> Value {
    assert_eq!(queued.body["status"], "queued", "{}", queued.text);
    let deploy = daemon
        .wait_deploy(queued.body["deployId"].as_str().unwrap())
        .await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    deploy
}

/// Checks that a refused delivery queued nothing and says so.
#[track_caller]
fn refused(res: Res, what: &str) {
    assert_eq!(res.status, 401, "{what}: {}", res.text);
    assert_eq!(res.error_code(), "unauthenticated", "{what}: {}", res.text);
}

#[tokio::test]
async fn gitea_and_forgejo_signatures_deploy_and_their_pull_requests_drive_previews() {
    let daemon = TestDaemon::start().await;
    let repo = Repo::new(&[("index.html", "main v1\n")]);
    let (project_id, secret) = daemon.connected_project("tea", &repo).await;
    let head = repo.commit(&[("index.html", "main v2\n")], "v2");
    let body = push(&head);

    // A wrong secret, a body other than the one signed, a GitHub-style prefix and a
    // missing signature are all refused, and nothing is queued.
    let tampered = push(&"a".repeat(40));
    let mut other_body = gitea("push", "t-1", &secret, &tampered);
    other_body[2].1 = gitea_signature(&secret, &body);
    for (what, headers, sent) in [
        (
            "wrong secret",
            gitea("push", "t-1", "whsec_wrong", &body),
            &body,
        ),
        ("another body", other_body, &tampered),
        (
            "sha256= prefix",
            vec![
                ("x-gitea-event", "push".to_owned()),
                (
                    "x-gitea-signature",
                    sign(&secret, &serde_json::to_vec(&body).unwrap()),
                ),
            ],
            &body,
        ),
        (
            "no signature",
            vec![("x-gitea-event", "push".to_owned())],
            &body,
        ),
        (
            "forgejo, wrong secret",
            forgejo("push", "t-1", "whsec_wrong", &body),
            &body,
        ),
    ] {
        refused(deliver(&daemon, &project_id, &headers, sent).await, what);
    }
    assert!(deploys_of(&daemon, &project_id).await.is_empty());

    // Signed right, the push deploys the branch's head.
    let queued = deliver(
        &daemon,
        &project_id,
        &gitea("push", "t-2", &secret, &body),
        &body,
    )
    .await
    .expect(202);
    let deploy = deployed(&daemon, &queued).await;
    assert_eq!(deploy["commitSha"], head.as_str());
    assert_eq!(deploy["trigger"], "webhook");
    let host = "tea.admin.test.local";
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "main v2\n".to_owned())
    );
    // Forgejo's own headers deploy the same way.
    let head = repo.commit(&[("index.html", "main v3\n")], "v3");
    let body = push(&head);
    let queued = deliver(
        &daemon,
        &project_id,
        &forgejo("push", "f-1", &secret, &body),
        &body,
    )
    .await
    .expect(202);
    deployed(&daemon, &queued).await;
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "main v3\n".to_owned())
    );

    // A pull request opens a preview at its branch's head, `synchronized` updates it in
    // place, `closed` removes it.
    let v1 = repo.commit_on_branch("feature/tea", &[("index.html", "branch v1\n")], "b1");
    let opened = gitea_pull_request("opened", 3, "feature/tea", &v1, "team/site");
    let queued = deliver(
        &daemon,
        &project_id,
        &gitea("pull_request", "t-3", &secret, &opened),
        &opened,
    )
    .await
    .expect(202);
    let preview_id = queued.body["previewId"].as_str().unwrap().to_owned();
    deployed(&daemon, &queued).await;
    let preview_host = "feature-tea--tea-admin.test.local";
    assert_eq!(
        daemon.edge_get(preview_host, "/").await,
        (200, "branch v1\n".to_owned())
    );
    let v2 = repo.commit_on_branch("feature/tea", &[("index.html", "branch v2\n")], "b2");
    let synchronized = gitea_pull_request("synchronized", 3, "feature/tea", &v2, "team/site");
    let queued = deliver(
        &daemon,
        &project_id,
        &forgejo("pull_request", "f-2", &secret, &synchronized),
        &synchronized,
    )
    .await
    .expect(202);
    assert_eq!(queued.body["previewId"], preview_id.as_str());
    deployed(&daemon, &queued).await;
    assert_eq!(
        daemon.edge_get(preview_host, "/").await,
        (200, "branch v2\n".to_owned())
    );
    assert_eq!(previews_of(&daemon, &project_id).await.len(), 1);

    // A pull request from a fork gets no preview: ignored, with the reason recorded.
    let fork_head = repo.commit_on_branch("fork-work", &[("index.html", "fork\n")], "fork");
    let from_fork = gitea_pull_request("opened", 4, "fork-work", &fork_head, "mallory/site");
    let ignored = deliver(
        &daemon,
        &project_id,
        &gitea("pull_request", "t-4", &secret, &from_fork),
        &from_fork,
    )
    .await
    .expect(200);
    assert_eq!(ignored.body["status"], "ignored", "{}", ignored.text);
    assert!(
        ignored.body["reason"].as_str().unwrap().contains("fork"),
        "{}",
        ignored.text
    );
    assert!(ignored.body["deployId"].is_null(), "{}", ignored.text);
    let recorded = last_delivery(&daemon, &project_id).await;
    assert!(
        recorded["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("ignored: ") && r.contains("fork")),
        "{recorded}"
    );
    assert_eq!(previews_of(&daemon, &project_id).await.len(), 1);
    assert_eq!(
        daemon
            .edge_get("fork-work--tea-admin.test.local", "/")
            .await
            .0,
        404
    );

    let closed = gitea_pull_request("closed", 3, "feature/tea", &v2, "team/site");
    let removed = deliver(
        &daemon,
        &project_id,
        &gitea("pull_request", "t-5", &secret, &closed),
        &closed,
    )
    .await
    .expect(200);
    assert_eq!(removed.body["status"], "removed", "{}", removed.text);
    assert_eq!(removed.body["previewId"], preview_id.as_str());
    assert!(previews_of(&daemon, &project_id).await.is_empty());
    assert_eq!(daemon.edge_get(preview_host, "/").await.0, 404);
    // Production serves on.
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "main v3\n".to_owned())
    );
}

#[tokio::test]
async fn gitlab_tokens_deploy_and_merge_requests_open_update_and_close_previews_but_not_for_forks()
{
    let daemon = TestDaemon::start().await;
    let repo = Repo::new(&[("index.html", "main v1\n")]);
    let (project_id, secret) = daemon.connected_project("lab", &repo).await;
    let head = git2::Repository::open(repo.path())
        .unwrap()
        .head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string();
    let body = push(&head);

    // GitLab's token is the secret itself: a wrong one, an empty one, a prefix of the
    // right one, or none, are refused and queue nothing.
    for (what, headers) in [
        ("wrong token", gitlab("Push Hook", "g-1", "whsec_wrong")),
        ("empty token", gitlab("Push Hook", "g-1", "")),
        (
            "a prefix",
            gitlab("Push Hook", "g-1", &secret[..secret.len() - 1]),
        ),
        ("no token", vec![("x-gitlab-event", "Push Hook".to_owned())]),
    ] {
        refused(deliver(&daemon, &project_id, &headers, &body).await, what);
    }
    assert!(deploys_of(&daemon, &project_id).await.is_empty());

    let queued = deliver(
        &daemon,
        &project_id,
        &gitlab("Push Hook", "g-2", &secret),
        &body,
    )
    .await
    .expect(202);
    let deploy = deployed(&daemon, &queued).await;
    assert_eq!(deploy["commitSha"], head.as_str());
    let host = "lab.admin.test.local";
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "main v1\n".to_owned())
    );

    // `open` creates the merge request's preview, `update` (new commits) updates it in
    // place, `close` removes it.
    let v1 = repo.commit_on_branch("feature/lab", &[("index.html", "mr v1\n")], "m1");
    let open = merge_request("open", 5, "feature/lab", &v1, 7);
    let queued = deliver(
        &daemon,
        &project_id,
        &gitlab("Merge Request Hook", "g-3", &secret),
        &open,
    )
    .await
    .expect(202);
    let preview_id = queued.body["previewId"].as_str().unwrap().to_owned();
    deployed(&daemon, &queued).await;
    let preview_host = "feature-lab--lab-admin.test.local";
    assert_eq!(
        daemon.edge_get(preview_host, "/").await,
        (200, "mr v1\n".to_owned())
    );
    let listed = previews_of(&daemon, &project_id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["pullRequest"], 5, "{listed:?}");
    assert_eq!(listed[0]["commitSha"], v1.as_str(), "{listed:?}");

    let v2 = repo.commit_on_branch("feature/lab", &[("index.html", "mr v2\n")], "m2");
    let update = merge_request("update", 5, "feature/lab", &v2, 7);
    let queued = deliver(
        &daemon,
        &project_id,
        &gitlab("Merge Request Hook", "g-4", &secret),
        &update,
    )
    .await
    .expect(202);
    assert_eq!(queued.body["previewId"], preview_id.as_str());
    deployed(&daemon, &queued).await;
    assert_eq!(
        daemon.edge_get(preview_host, "/").await,
        (200, "mr v2\n".to_owned())
    );
    let listed = previews_of(&daemon, &project_id).await;
    assert_eq!(listed.len(), 1, "updated in place: {listed:?}");
    assert_eq!(listed[0]["commitSha"], v2.as_str(), "{listed:?}");

    // A merge request from a fork (another source project) gets no preview, even for a
    // branch name the repository has: ignored, with the reason recorded.
    let fork_head = repo.commit_on_branch("fork-lab", &[("index.html", "fork\n")], "fork");
    let from_fork = merge_request("open", 6, "fork-lab", &fork_head, 99);
    let ignored = deliver(
        &daemon,
        &project_id,
        &gitlab("Merge Request Hook", "g-5", &secret),
        &from_fork,
    )
    .await
    .expect(200);
    assert_eq!(ignored.body["status"], "ignored", "{}", ignored.text);
    let reason = ignored.body["reason"].as_str().unwrap();
    assert!(reason.contains("#6") && reason.contains("fork"), "{reason}");
    let recorded = last_delivery(&daemon, &project_id).await;
    assert_eq!(recorded["event"], "Merge Request Hook", "{recorded}");
    assert_eq!(
        recorded["result"].as_str().unwrap_or_default(),
        format!("ignored: {reason}"),
        "{recorded}"
    );
    assert_eq!(previews_of(&daemon, &project_id).await.len(), 1);
    assert_eq!(
        daemon
            .edge_get("fork-lab--lab-admin.test.local", "/")
            .await
            .0,
        404
    );

    let close = merge_request("close", 5, "feature/lab", &v2, 7);
    let removed = deliver(
        &daemon,
        &project_id,
        &gitlab("Merge Request Hook", "g-6", &secret),
        &close,
    )
    .await
    .expect(200);
    assert_eq!(removed.body["status"], "removed", "{}", removed.text);
    assert_eq!(removed.body["previewId"], preview_id.as_str());
    assert!(previews_of(&daemon, &project_id).await.is_empty());
    assert_eq!(daemon.edge_get(preview_host, "/").await.0, 404);
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "main v1\n".to_owned())
    );
}

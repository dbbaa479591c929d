//! The authorization matrix: every endpoint against no token, a malformed token, an unknown
//! token, a revoked token, each scope, and another account's admin token.

use cantila::names::Scope;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::TestDaemon;

/// What an endpoint needs set up before it is called.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// Nothing: the path is used as is.
    None,
    /// The path as is, for the installation's operator account only (another account's
    /// admin gets 404).
    Operator,
    /// A fresh project of the bootstrap account: `{id}`, `{handle}`, `{name}` substituted.
    Project,
    /// A fresh token of the bootstrap account: `{token}` substituted.
    Token,
    /// A fresh project connected to a local repository: `{id}` substituted.
    ConnectedProject,
    /// A deploy of a fresh project (it fails at once: no repository): `{deploy}`.
    Deploy,
    /// A fresh project with one alias: `{id}` and `{alias}` substituted.
    Alias,
    /// A fresh connected project with one preview: `{id}` and `{preview}` substituted.
    Preview,
    /// A fresh project with a volume `files`: `{id}` substituted.
    Volume,
    /// A fresh project with a SQLite database: `{id}` substituted.
    Database,
    /// A fresh project with its own backup schedule: `{id}` substituted.
    Schedule,
    /// A completed backup of a fresh project's volume: `{backup}` substituted.
    Backup,
}

/// What a request body may refer to.
struct BodyInput<'a> {
    n: usize,
    repo: &'a str,
    project_id: &'a str,
}

struct Endpoint {
    method: Method,
    path: &'static str,
    scope: Scope,
    target: Target,
    body: Option<fn(&BodyInput) -> Value>,
    /// Status for a caller with enough scope.
    ok: u16,
}

fn endpoints() -> Vec<Endpoint> {
    let e = |method, path, scope, target, body: Option<fn(&BodyInput) -> Value>, ok| Endpoint {
        method,
        path,
        scope,
        target,
        body,
        ok,
    };
    vec![
        e(
            Method::GET,
            "/v1/account",
            Scope::Read,
            Target::None,
            None,
            200,
        ),
        e(
            Method::GET,
            "/v1/projects",
            Scope::Read,
            Target::None,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/projects",
            Scope::Deploy,
            Target::None,
            Some(|b| json!({ "name": format!("created-{}", b.n) })),
            201,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::PATCH,
            "/v1/projects/{id}",
            Scope::Deploy,
            Target::Project,
            Some(|_| json!({ "runtime": "node" })),
            200,
        ),
        e(
            Method::DELETE,
            "/v1/projects/{id}",
            Scope::Deploy,
            Target::Project,
            None,
            204,
        ),
        e(
            Method::GET,
            "/v1/projects/by-handle/{handle}/{name}",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::GET,
            "/v1/tokens",
            Scope::Admin,
            Target::None,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/tokens",
            Scope::Admin,
            Target::None,
            Some(|_| json!({ "scope": "read" })),
            201,
        ),
        e(
            Method::DELETE,
            "/v1/tokens/{token}",
            Scope::Admin,
            Target::Token,
            None,
            200,
        ),
        e(
            Method::GET,
            "/v1/audit",
            Scope::Admin,
            Target::None,
            None,
            200,
        ),
        e(
            Method::GET,
            "/v1/admin/state-backups",
            Scope::Admin,
            Target::Operator,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/admin/state-backups",
            Scope::Admin,
            Target::Operator,
            None,
            202,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/git",
            Scope::Read,
            Target::ConnectedProject,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/projects/{id}/git",
            Scope::Deploy,
            Target::Project,
            Some(|b| json!({ "repo": b.repo, "branch": "main" })),
            200,
        ),
        e(
            Method::POST,
            "/v1/projects/{id}/git/rotate-secret",
            Scope::Deploy,
            Target::ConnectedProject,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/projects/{id}/deploy",
            Scope::Deploy,
            Target::Project,
            None,
            202,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/deploys",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::GET,
            "/v1/deploys/{deploy}",
            Scope::Read,
            Target::Deploy,
            None,
            200,
        ),
        e(
            Method::GET,
            "/v1/deploys/{deploy}/events",
            Scope::Read,
            Target::Deploy,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/deploy/plan",
            Scope::Deploy,
            Target::ConnectedProject,
            Some(|b| json!({ "projectId": b.project_id, "ref": "main" })),
            200,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/env",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/projects/{id}/env",
            Scope::Deploy,
            Target::Project,
            Some(|_| json!({ "vars": { "API_BASE": "https://api.example.com" } })),
            200,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/aliases",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/projects/{id}/aliases",
            Scope::Deploy,
            Target::Project,
            Some(|b| json!({ "hostname": format!("new{}.example.com", b.n) })),
            201,
        ),
        e(
            Method::DELETE,
            "/v1/projects/{id}/aliases/{alias}",
            Scope::Deploy,
            Target::Alias,
            None,
            204,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/domains",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/projects/{id}/scale",
            Scope::Deploy,
            Target::Project,
            Some(|_| json!({ "instances": 2, "size": "nano" })),
            200,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/instances",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/previews",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/projects/{id}/previews",
            Scope::Deploy,
            Target::ConnectedProject,
            Some(|_| json!({ "branch": "main" })),
            201,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/previews/{preview}",
            Scope::Read,
            Target::Preview,
            None,
            200,
        ),
        e(
            Method::DELETE,
            "/v1/projects/{id}/previews/{preview}",
            Scope::Deploy,
            Target::Preview,
            None,
            204,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/metrics",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/logs",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::GET,
            "/metrics",
            Scope::Admin,
            Target::None,
            None,
            200,
        ),
        // Nothing to roll back to in a fresh project: past authorization, a clear 422.
        e(
            Method::POST,
            "/v1/projects/{id}/rollback",
            Scope::Deploy,
            Target::Project,
            None,
            422,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/volumes",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/projects/{id}/volumes",
            Scope::Deploy,
            Target::Project,
            Some(|b| json!({ "name": format!("v{}", b.n), "mountPath": "/srv/uploads" })),
            201,
        ),
        e(
            Method::DELETE,
            "/v1/projects/{id}/volumes/files",
            Scope::Admin,
            Target::Volume,
            Some(|b| json!({ "confirm": format!("p{}", b.n) })),
            204,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/database",
            Scope::Read,
            Target::Database,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/projects/{id}/database",
            Scope::Deploy,
            Target::Project,
            Some(|_| json!({ "engine": "sqlite" })),
            201,
        ),
        e(
            Method::DELETE,
            "/v1/projects/{id}/database",
            Scope::Admin,
            Target::Database,
            Some(|b| json!({ "confirm": format!("p{}", b.n) })),
            200,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/database/credentials",
            Scope::Deploy,
            Target::Database,
            None,
            200,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/backups",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        // A fresh project holds no data: past authorization, a clear 422.
        e(
            Method::POST,
            "/v1/projects/{id}/backups",
            Scope::Deploy,
            Target::Project,
            None,
            422,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/backups/schedule",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
        e(
            Method::PUT,
            "/v1/projects/{id}/backups/schedule",
            Scope::Deploy,
            Target::Project,
            Some(|_| json!({ "schedule": "daily at 03:00" })),
            200,
        ),
        e(
            Method::DELETE,
            "/v1/projects/{id}/backups/schedule",
            Scope::Deploy,
            Target::Schedule,
            None,
            204,
        ),
        e(
            Method::GET,
            "/v1/backups/{backup}",
            Scope::Read,
            Target::Backup,
            None,
            200,
        ),
        e(
            Method::GET,
            "/v1/backups/{backup}/download",
            Scope::Deploy,
            Target::Backup,
            None,
            200,
        ),
        e(
            Method::POST,
            "/v1/backups/{backup}/restore",
            Scope::Admin,
            Target::Backup,
            Some(|b| json!({ "confirm": format!("p{}", b.n) })),
            200,
        ),
        e(
            Method::GET,
            "/v1/projects/{id}/assets",
            Scope::Read,
            Target::Project,
            None,
            200,
        ),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Caller {
    NoToken,
    Malformed,
    Unknown,
    Revoked,
    Scoped(Scope),
    OtherAccountAdmin,
}

#[tokio::test]
async fn every_endpoint_enforces_authentication_scope_and_account() {
    let daemon = TestDaemon::start().await;
    let read = daemon.token("read").await;
    let deploy = daemon.token("deploy").await;
    let admin = daemon.token("admin").await;
    let revoked = daemon.token("admin").await;
    let revoked_id = daemon.get("/v1/tokens", &daemon.admin_token).await.body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| revoked.starts_with(t["prefix"].as_str().unwrap()) && t["scope"] == "admin")
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .unwrap();
    // Prefixes can collide in theory; revoke through the API and verify it is this token.
    daemon
        .delete(&format!("/v1/tokens/{revoked_id}"), &daemon.admin_token)
        .await
        .expect(200);
    assert_eq!(daemon.get("/v1/account", &revoked).await.status, 401);
    let other = daemon.other_account_token("mallory", Scope::Admin);
    let repo = crate::deploys::Repo::new(&[("index.html", "hi")]);
    let repo_path = repo.path().display().to_string();

    let callers = [
        Caller::NoToken,
        Caller::Malformed,
        Caller::Unknown,
        Caller::Revoked,
        Caller::Scoped(Scope::Read),
        Caller::Scoped(Scope::Deploy),
        Caller::Scoped(Scope::Admin),
        Caller::OtherAccountAdmin,
    ];
    let mut counter = 0;
    for endpoint in endpoints() {
        for caller in callers {
            counter += 1;
            let mut path = endpoint.path.to_owned();
            let mut project_id = String::new();
            match endpoint.target {
                Target::None | Target::Operator => {}
                Target::Project => {
                    let project = daemon.create_project(&format!("p{counter}")).await;
                    project_id = project["id"].as_str().unwrap().to_owned();
                    path = path
                        .replace("{id}", project["id"].as_str().unwrap())
                        .replace("{handle}", project["handle"].as_str().unwrap())
                        .replace("{name}", project["name"].as_str().unwrap());
                }
                Target::ConnectedProject => {
                    let project = daemon.create_project(&format!("p{counter}")).await;
                    let id = project["id"].as_str().unwrap();
                    daemon
                        .post(
                            &format!("/v1/projects/{id}/git"),
                            &daemon.admin_token,
                            json!({ "repo": repo_path }),
                        )
                        .await
                        .expect(200);
                    project_id = id.to_owned();
                    path = path.replace("{id}", id);
                }
                Target::Deploy => {
                    let project = daemon.create_project(&format!("p{counter}")).await;
                    let id = project["id"].as_str().unwrap();
                    let deploy = daemon.deploy(id, None).await;
                    path = path.replace("{deploy}", deploy["id"].as_str().unwrap());
                }
                Target::Alias => {
                    let project = daemon.create_project(&format!("p{counter}")).await;
                    let id = project["id"].as_str().unwrap();
                    let alias = format!("alias{counter}.example.com");
                    daemon
                        .post(
                            &format!("/v1/projects/{id}/aliases"),
                            &daemon.admin_token,
                            json!({ "hostname": alias }),
                        )
                        .await
                        .expect(201);
                    project_id = id.to_owned();
                    path = path.replace("{id}", id).replace("{alias}", &alias);
                }
                Target::Preview => {
                    let project = daemon.create_project(&format!("p{counter}")).await;
                    let id = project["id"].as_str().unwrap();
                    daemon
                        .post(
                            &format!("/v1/projects/{id}/git"),
                            &daemon.admin_token,
                            json!({ "repo": repo_path }),
                        )
                        .await
                        .expect(200);
                    let preview = daemon
                        .post(
                            &format!("/v1/projects/{id}/previews"),
                            &daemon.admin_token,
                            json!({ "branch": "main" }),
                        )
                        .await
                        .expect(201);
                    project_id = id.to_owned();
                    path = path
                        .replace("{id}", id)
                        .replace("{preview}", preview.body["id"].as_str().unwrap());
                }
                Target::Volume | Target::Database | Target::Schedule | Target::Backup => {
                    let project = daemon.create_project(&format!("p{counter}")).await;
                    let id = project["id"].as_str().unwrap().to_owned();
                    let (setup, body) = match endpoint.target {
                        Target::Database => ("database", json!({ "engine": "sqlite" })),
                        Target::Schedule => {
                            ("backups/schedule", json!({ "schedule": "daily at 04:00" }))
                        }
                        Target::Volume | Target::Backup => (
                            "volumes",
                            json!({ "name": "files", "mountPath": "/srv/files" }),
                        ),
                        _ => unreachable!("only data targets here"),
                    };
                    let method = if setup == "backups/schedule" {
                        Method::PUT
                    } else {
                        Method::POST
                    };
                    let res = daemon
                        .call(
                            method,
                            &format!("/v1/projects/{id}/{setup}"),
                            Some(&daemon.admin_token),
                            Some(body),
                        )
                        .await;
                    assert!(res.status < 300, "setting up {setup}: {}", res.text);
                    if endpoint.target == Target::Backup {
                        let started = daemon
                            .post(
                                &format!("/v1/projects/{id}/backups"),
                                &daemon.admin_token,
                                json!({}),
                            )
                            .await
                            .expect(202);
                        let backup_id = started.body["id"].as_str().unwrap();
                        let backup = crate::data::wait_backup(&daemon, backup_id).await;
                        assert_eq!(backup["status"], "completed", "{backup}");
                        path = path.replace("{backup}", backup_id);
                    }
                    project_id = id.clone();
                    path = path.replace("{id}", &id);
                }
                Target::Token => {
                    let created = daemon
                        .post(
                            "/v1/tokens",
                            &daemon.admin_token,
                            json!({ "scope": "read" }),
                        )
                        .await
                        .expect(201);
                    path = path.replace("{token}", created.body["id"].as_str().unwrap());
                }
            }
            let token: Option<&str> = match caller {
                Caller::NoToken => None,
                Caller::Malformed => Some("not-a-token"),
                Caller::Unknown => Some("sk_live_0000000000000000000000000000000000000000"),
                Caller::Revoked => Some(&revoked),
                Caller::Scoped(Scope::Read) => Some(&read),
                Caller::Scoped(Scope::Deploy) => Some(&deploy),
                Caller::Scoped(Scope::Admin) => Some(&admin),
                Caller::OtherAccountAdmin => Some(&other),
            };
            let expected = match caller {
                Caller::NoToken | Caller::Malformed | Caller::Unknown | Caller::Revoked => 401,
                Caller::Scoped(scope) if scope < endpoint.scope => 403,
                Caller::Scoped(_) => endpoint.ok,
                Caller::OtherAccountAdmin if endpoint.target != Target::None => 404,
                Caller::OtherAccountAdmin => endpoint.ok,
            };
            let res = daemon
                .call(
                    endpoint.method.clone(),
                    &path,
                    token,
                    endpoint.body.map(|b| {
                        b(&BodyInput {
                            n: counter,
                            repo: &repo_path,
                            project_id: &project_id,
                        })
                    }),
                )
                .await;
            assert_eq!(
                res.status, expected,
                "{} {} as {caller:?}: {}",
                endpoint.method, endpoint.path, res.text
            );
            assert!(
                res.header("x-request-id").is_some(),
                "every response has X-Request-Id"
            );
            if expected >= 400 {
                assert!(
                    !res.error_code().is_empty(),
                    "error body shape: {}",
                    res.text
                );
                assert!(
                    !res.error_message().is_empty(),
                    "error body shape: {}",
                    res.text
                );
            }
            if expected == 403 {
                let needed = endpoint.scope.to_string();
                assert!(
                    res.error_message().contains(&needed),
                    "403 names the scope: {}",
                    res.text
                );
            }
        }
    }
    crate::data::remove_installation_volumes(&daemon).await;
}

#[tokio::test]
async fn other_accounts_see_none_of_our_projects() {
    let daemon = TestDaemon::start().await;
    daemon.create_project("mine").await;
    let other = daemon.other_account_token("eve", Scope::Admin);
    let list = daemon.get("/v1/projects", &other).await.expect(200);
    assert_eq!(list.body["projects"], json!([]));
    // The same name is free in another account.
    daemon
        .post("/v1/projects", &other, json!({ "name": "mine" }))
        .await
        .expect(201);
    let audit = daemon.get("/v1/audit", &other).await.expect(200);
    assert!(audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"] != "token.create" || e["actor"] == "admin-cli"));
}

#[tokio::test]
async fn repeated_bad_tokens_are_throttled_per_address() {
    let daemon = TestDaemon::start_with(|c| c.api.auth_failures_per_minute = 3).await;
    for _ in 0..3 {
        daemon.get("/v1/projects", "sk_live_bad").await.expect(401);
    }
    let res = daemon.get("/v1/projects", "sk_live_bad").await.expect(429);
    assert_eq!(res.error_code(), "rate_limited");
    let retry: u64 = res
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    // While throttled, even a valid token from this address waits.
    daemon
        .get("/v1/projects", &daemon.admin_token.clone())
        .await
        .expect(429);
}

#[tokio::test]
async fn request_ids_are_generated_or_kept_and_errors_have_one_shape() {
    let daemon = TestDaemon::start().await;
    let res = daemon
        .request(Method::GET, "/v1/projects")
        .header("x-request-id", "trace-abc_123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-abc_123");
    let res = daemon
        .get("/v1/nope", &daemon.admin_token)
        .await
        .expect(404);
    assert_eq!(res.error_code(), "not_found");
    assert!(res.header("x-request-id").unwrap().starts_with("req_"));
    let res = daemon
        .call(Method::PUT, "/v1/projects", Some(&daemon.admin_token), None)
        .await
        .expect(405);
    assert_eq!(res.error_code(), "method_not_allowed");
    let res = daemon
        .request(Method::GET, "/v1/projects")
        .header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
}

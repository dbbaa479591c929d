//! Tenancy, generated from the API's own route list: for every documented operation that
//! names a resource, another account's admin token gets exactly the answer a nonexistent
//! resource gets (same status, same body), never a success, and the resource is unchanged.
//! Operations come from `/v1/openapi.json`, which is built from the router itself, so an
//! endpoint added later is covered without touching this file, or fails it loudly if it
//! names a kind of resource this test does not know how to create.

use std::collections::BTreeMap;

use cantila::names::Scope;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::{deploys::Repo, support::TestDaemon};

/// Operations that are not account-scoped by design.
const PUBLIC: &[&str] = &[
    "/v1/openapi.json",
    "/v1/projects/{id}/git/webhook",
    "/v1/projects/{id}/image/webhook",
];

/// Real resources of the first account, and lookalikes that do not exist.
struct Fixtures {
    real: BTreeMap<&'static str, String>,
    fake: BTreeMap<&'static str, String>,
}

impl Fixtures {
    /// The kind of resource a path parameter names, from the segment before it.
    fn kind_of(path: &str, parameter: &str) -> &'static str {
        let segments: Vec<&str> = path.split('/').collect();
        let at = segments
            .iter()
            .position(|s| *s == format!("{{{parameter}}}"))
            .unwrap();
        match (segments[at - 1], parameter) {
            ("projects", "id") => "project",
            ("deploys", "id") => "deploy",
            ("runs", "id") => "run",
            ("instances", "instance") => "instance",
            ("execs", "id") => "exec",
            ("jobs", "name") => "job",
            ("services", "name") => "service",
            ("previews", "previewId") => "preview",
            ("tokens", "id") => "token",
            ("registries", "id") => "registry",
            ("aliases", "hostname") => "alias",
            ("backups", "id") => "backup",
            ("restore-latest", "id") => "restore_run",
            ("volumes", "name") => "volume",
            ("build-secrets", "name") => "build_secret",
            ("by-handle", "handle") => "handle",
            (_, "name") if path.contains("/by-handle/") => "name",
            (before, _) => panic!(
                "{path}: the tenancy test does not know how to make a `{before}/{{{parameter}}}` \
                 resource; add it to tenancy.rs so the endpoint is covered"
            ),
        }
    }

    fn fill(&self, path: &str, real: bool) -> String {
        let mut filled = path.to_owned();
        let parameters: Vec<String> = path
            .split('/')
            .filter(|s| s.starts_with('{') && s.ends_with('}'))
            .map(|s| s[1..s.len() - 1].to_owned())
            .collect();
        for parameter in parameters {
            let kind = Self::kind_of(path, &parameter);
            let table = if real { &self.real } else { &self.fake };
            filled = filled.replace(&format!("{{{parameter}}}"), &table[kind]);
        }
        filled
    }
}

/// The smallest body the schema accepts the shape of: required properties only, from the
/// schema's example when it has one.
pub(crate) fn body_for(document: &Value, schema: &Value) -> Value {
    let schema = resolve(document, schema);
    if let Some(example) = schema.get("example") {
        return example.clone();
    }
    if let Some(options) = schema.get("oneOf").or(schema.get("anyOf")) {
        return body_for(document, &options[0]);
    }
    let kind = match &schema["type"] {
        Value::Array(types) => types
            .iter()
            .find(|t| *t != "null")
            .cloned()
            .unwrap_or(Value::Null),
        other => other.clone(),
    };
    match kind.as_str() {
        Some("object") | None if schema.get("properties").is_some() => {
            let mut object = Map::new();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for name in required {
                object.insert(
                    name.to_owned(),
                    body_for(document, &schema["properties"][name]),
                );
            }
            Value::Object(object)
        }
        Some("string") => json!("probe"),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        Some("array") => json!([]),
        _ => json!({}),
    }
}

pub(crate) fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            &document["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// An error body with the request id and the resource's own id taken out, so a real and a
/// lookalike answer can be compared.
fn normalized(text: &str, names: &BTreeMap<&'static str, String>) -> String {
    let mut body: Value = serde_json::from_str(text).unwrap_or(json!(text));
    if let Some(error) = body.get_mut("error").and_then(Value::as_object_mut) {
        error.remove("requestId");
    }
    let mut text = body.to_string();
    for (kind, name) in names {
        text = text.replace(name.as_str(), &format!("<{kind}>"));
    }
    text
}

/// What the first account sees of its own resources.
async fn snapshot(daemon: &TestDaemon, project_id: &str, deploy_id: &str) -> Value {
    let previews = daemon
        .get(
            &format!("/v1/projects/{project_id}/previews"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let project = daemon
        .get(&format!("/v1/projects/{project_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    let env = daemon
        .get(
            &format!("/v1/projects/{project_id}/env"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let aliases = daemon
        .get(
            &format!("/v1/projects/{project_id}/aliases"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let deploy = daemon
        .get(&format!("/v1/deploys/{deploy_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    let tokens = daemon.get("/v1/tokens", &daemon.admin_token).await.body;
    let registries = daemon
        .get("/v1/registries", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    let volumes = daemon
        .get(
            &format!("/v1/projects/{project_id}/volumes"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let build_secrets = daemon
        .get(
            &format!("/v1/projects/{project_id}/build-secrets"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let backups = daemon
        .get(
            &format!("/v1/projects/{project_id}/backups"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let runs = daemon
        .get(
            &format!("/v1/projects/{project_id}/runs"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let jobs = daemon
        .get(
            &format!("/v1/projects/{project_id}/jobs"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let services = daemon
        .get(
            &format!("/v1/projects/{project_id}/services"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    json!([
        runs,
        jobs,
        services,
        build_secrets,
        project,
        env,
        aliases,
        deploy["status"],
        tokens["tokens"].as_array().map(Vec::len),
        volumes,
        backups,
        previews,
        registries
    ])
}

#[tokio::test]
async fn another_account_learns_nothing_from_any_endpoint() {
    let daemon = TestDaemon::start().await;
    let repo = Repo::busybox("tenancy\n");
    let (project_id, _) = daemon.connected_project("secret-plans", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    let deploy_id = deploy["id"].as_str().unwrap().to_owned();
    daemon
        .post(
            &format!("/v1/projects/{project_id}/aliases"),
            &daemon.admin_token,
            json!({ "hostname": "plans.example.com" }),
        )
        .await
        .expect(201);
    daemon
        .post(
            &format!("/v1/projects/{project_id}/env"),
            &daemon.admin_token,
            json!({ "vars": { "PASSWORD": { "value": "hunter2", "secret": true } } }),
        )
        .await
        .expect(200);
    // A running preview of the project, so preview endpoints are probed with a real one.
    let preview = daemon
        .post(
            &format!("/v1/projects/{project_id}/previews"),
            &daemon.admin_token,
            json!({ "branch": "main" }),
        )
        .await
        .expect(201)
        .body;
    let preview_deploy = daemon
        .wait_deploy(preview["deployId"].as_str().unwrap())
        .await;
    assert_eq!(preview_deploy["status"], "running", "{preview_deploy}");
    // Set after the deploys: a build with build secrets needs BuildKit.
    daemon
        .call(
            Method::PUT,
            &format!("/v1/projects/{project_id}/build-secrets/NPM_TOKEN"),
            Some(&daemon.admin_token),
            Some(json!({ "value": "npm-secret" })),
        )
        .await
        .expect(200);
    daemon
        .post(
            &format!("/v1/projects/{project_id}/volumes"),
            &daemon.admin_token,
            json!({ "name": "files", "mountPath": "/srv/files" }),
        )
        .await
        .expect(201);
    let backup = daemon
        .post(
            &format!("/v1/projects/{project_id}/backups"),
            &daemon.admin_token,
            json!({}),
        )
        .await
        .expect(202)
        .body;
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    assert_eq!(
        crate::data::wait_backup(&daemon, &backup_id).await["status"],
        "completed"
    );
    // A finished restore-latest run of the project (its progress is probed); the project
    // named in a body by another account answers as a missing one does.
    let restore_run = daemon
        .post(
            "/v1/backups/restore-latest",
            &daemon.admin_token,
            json!({ "projects": [project_id] }),
        )
        .await
        .expect(202)
        .body;
    let restore_run_id = restore_run["id"].as_str().unwrap().to_owned();
    crate::rebuild::wait_restore_run(&daemon, &daemon.admin_token, &restore_run_id).await;
    let token = daemon
        .post(
            "/v1/tokens",
            &daemon.admin_token,
            json!({ "scope": "read" }),
        )
        .await
        .expect(201)
        .body;
    // A finished run of the project: its output, record and cancel are probed.
    let run = daemon
        .post(
            &format!("/v1/projects/{project_id}/runs"),
            &daemon.admin_token,
            json!({ "command": ["echo", "run output"] }),
        )
        .await
        .expect(201)
        .body;
    let run_id = run["runId"].as_str().unwrap().to_owned();
    assert_eq!(
        crate::runs::wait_run(&daemon, &run_id).await["status"],
        "succeeded"
    );
    // An instance of the project, and an exec in it waiting for its attach.
    let instances = daemon
        .get(
            &format!("/v1/projects/{project_id}/instances"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let instance = instances["instances"][0]["id"].as_str().unwrap().to_owned();
    let exec = daemon
        .post(
            &format!("/v1/projects/{project_id}/instances/{instance}/exec"),
            &daemon.admin_token,
            json!({ "command": ["true"] }),
        )
        .await
        .expect(201)
        .body;
    // A job of the project, disabled so the snapshot does not move while the test probes.
    daemon
        .post(
            &format!("/v1/projects/{project_id}/jobs"),
            &daemon.admin_token,
            json!({ "name": "nightly", "schedule": "daily at 03:00", "command": ["true"], "enabled": false }),
        )
        .await
        .expect(201);
    // A service of the project, stopped (count 0) so the snapshot does not move.
    daemon
        .post(
            &format!("/v1/projects/{project_id}/services"),
            &daemon.admin_token,
            json!({ "name": "cache", "image": "busybox", "count": 0, "env": { "PASSWORD": "service-secret" } }),
        )
        .await
        .expect(201);
    let registry = daemon
        .post(
            "/v1/registries",
            &daemon.admin_token,
            json!({ "server": "registry.example.com", "username": "ci", "password": "registry-secret" }),
        )
        .await
        .expect(201)
        .body;
    let fixtures = Fixtures {
        real: BTreeMap::from([
            ("project", project_id.clone()),
            ("deploy", deploy_id.clone()),
            ("preview", preview["id"].as_str().unwrap().to_owned()),
            ("token", token["id"].as_str().unwrap().to_owned()),
            ("alias", "plans.example.com".to_owned()),
            ("handle", "admin".to_owned()),
            ("name", "secret-plans".to_owned()),
            ("backup", backup_id.clone()),
            ("volume", "files".to_owned()),
            ("registry", registry["id"].as_str().unwrap().to_owned()),
            ("build_secret", "NPM_TOKEN".to_owned()),
            ("run", run_id.clone()),
            ("instance", instance),
            ("exec", exec["execId"].as_str().unwrap().to_owned()),
            ("job", "nightly".to_owned()),
            ("service", "cache".to_owned()),
            ("restore_run", restore_run_id.clone()),
        ]),
        fake: BTreeMap::from([
            ("project", "prj_00000000000000000000".to_owned()),
            ("deploy", "dep_00000000000000000000".to_owned()),
            ("preview", "prv_00000000000000000000".to_owned()),
            ("token", "tok_00000000000000000000".to_owned()),
            ("alias", "nothing.example.com".to_owned()),
            ("handle", "nobody".to_owned()),
            ("name", "nothing".to_owned()),
            ("backup", "bak_00000000000000000000".to_owned()),
            ("volume", "nothing".to_owned()),
            ("registry", "reg_00000000000000000000".to_owned()),
            ("build_secret", "NOTHING".to_owned()),
            ("run", "run_00000000000000000000".to_owned()),
            ("instance", "abcdefabcdef".to_owned()),
            ("exec", "exe_00000000000000000000".to_owned()),
            ("job", "no-such-job".to_owned()),
            ("service", "no-such-service".to_owned()),
            ("restore_run", "rst_00000000000000000000".to_owned()),
        ]),
    };
    let before = snapshot(&daemon, &project_id, &deploy_id).await;

    let intruder = daemon.other_account_token("mallory", Scope::Admin);
    let document = daemon
        .get("/v1/openapi.json", &intruder)
        .await
        .expect(200)
        .body;
    let mut covered = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        if PUBLIC.contains(&path.as_str()) || !path.contains('{') {
            continue;
        }
        for (method, operation) in operations.as_object().unwrap() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let body = operation
                .pointer("/requestBody/content/application~1json/schema")
                .map(|schema| body_for(&document, schema));
            let mut answers = Vec::new();
            for real in [true, false] {
                let filled = fixtures.fill(path, real);
                let res = daemon
                    .call(method.clone(), &filled, Some(&intruder), body.clone())
                    .await;
                answers.push((res.status, res.text));
            }
            let (real_status, real_text) = &answers[0];
            let (fake_status, fake_text) = &answers[1];
            assert!(
                (400..500).contains(real_status),
                "{method} {path} as another account: {real_status} {real_text}"
            );
            assert_eq!(
                (real_status, normalized(real_text, &fixtures.real)),
                (fake_status, normalized(fake_text, &fixtures.fake)),
                "{method} {path}: another account's resource must look exactly like a missing one"
            );
            println!("{method} {path}: {real_status}");
            covered += 1;
        }
    }
    assert!(covered >= 20, "only {covered} operations were checked");
    // An operation that names projects in its body: another account's look missing.
    let mut answers = Vec::new();
    for id in [project_id.as_str(), "prj_00000000000000000000"] {
        let res = daemon
            .post(
                "/v1/backups/restore-latest",
                &intruder,
                json!({ "projects": [id] }),
            )
            .await;
        answers.push((res.status, res.text.replace(id, "<id>")));
    }
    assert_eq!(answers[0].0, 404, "{answers:?}");
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        snapshot(&daemon, &project_id, &deploy_id).await,
        before,
        "nothing of the first account changed"
    );
    crate::deploys::cleanup(&project_id).await;
    crate::data::remove_installation_volumes(&daemon).await;
}

//! The OpenAPI document covers every route the router serves, and every documented route is
//! served. Routes are registered through `utoipa_axum::routes!` only, so the router cannot
//! serve a path the document lacks; these tests check the other direction and the contract.

use reqwest::Method;
use serde_json::{json, Value};

use crate::{support::TestDaemon, tenancy::resolve};

/// The contract: every endpoint of the foundation, with the method.
const EXPECTED: &[(&str, &str)] = &[
    ("get", "/v1/openapi.json"),
    ("get", "/v1/account"),
    ("get", "/v1/projects"),
    ("post", "/v1/projects"),
    ("get", "/v1/projects/{id}"),
    ("patch", "/v1/projects/{id}"),
    ("delete", "/v1/projects/{id}"),
    ("get", "/v1/projects/by-handle/{handle}/{name}"),
    ("get", "/v1/tokens"),
    ("post", "/v1/tokens"),
    ("delete", "/v1/tokens/{id}"),
    ("get", "/v1/audit"),
    ("get", "/v1/admin/state-backups"),
    ("post", "/v1/admin/state-backups"),
    ("get", "/v1/projects/{id}/git"),
    ("post", "/v1/projects/{id}/git"),
    ("post", "/v1/projects/{id}/git/rotate-secret"),
    ("post", "/v1/projects/{id}/git/webhook"),
    ("post", "/v1/projects/{id}/deploy"),
    ("post", "/v1/projects/{id}/deploy/stream"),
    ("get", "/v1/projects/{id}/deploys"),
    ("get", "/v1/deploys/{id}"),
    ("post", "/v1/deploys/{id}/cancel"),
    ("get", "/v1/deploys/{id}/events"),
    ("post", "/v1/deploy/plan"),
    ("post", "/v1/projects/{id}/runs"),
    ("get", "/v1/projects/{id}/runs"),
    ("get", "/v1/runs/{id}"),
    ("post", "/v1/runs/{id}/cancel"),
    ("get", "/v1/runs/{id}/events"),
    ("post", "/v1/projects/{id}/jobs"),
    ("get", "/v1/projects/{id}/jobs"),
    ("get", "/v1/projects/{id}/jobs/{name}"),
    ("patch", "/v1/projects/{id}/jobs/{name}"),
    ("delete", "/v1/projects/{id}/jobs/{name}"),
    ("post", "/v1/projects/{id}/jobs/{name}/run"),
    ("get", "/v1/projects/{id}/env"),
    ("post", "/v1/projects/{id}/env"),
    ("get", "/v1/projects/{id}/build-secrets"),
    ("put", "/v1/projects/{id}/build-secrets/{name}"),
    ("delete", "/v1/projects/{id}/build-secrets/{name}"),
    ("get", "/v1/projects/{id}/aliases"),
    ("post", "/v1/projects/{id}/aliases"),
    ("delete", "/v1/projects/{id}/aliases/{hostname}"),
    ("get", "/v1/projects/{id}/domains"),
    ("post", "/v1/projects/{id}/scale"),
    ("get", "/v1/projects/{id}/instances"),
    ("post", "/v1/projects/{id}/rollback"),
    ("get", "/v1/projects/{id}/previews"),
    ("post", "/v1/projects/{id}/previews"),
    ("get", "/v1/projects/{id}/previews/{previewId}"),
    ("delete", "/v1/projects/{id}/previews/{previewId}"),
    ("get", "/v1/projects/{id}/metrics"),
    ("get", "/metrics"),
    ("get", "/v1/projects/{id}/logs"),
    ("get", "/v1/projects/{id}/volumes"),
    ("post", "/v1/projects/{id}/volumes"),
    ("delete", "/v1/projects/{id}/volumes/{name}"),
    ("get", "/v1/projects/{id}/database"),
    ("post", "/v1/projects/{id}/database"),
    ("delete", "/v1/projects/{id}/database"),
    ("get", "/v1/projects/{id}/database/credentials"),
    ("get", "/v1/projects/{id}/backups"),
    ("post", "/v1/projects/{id}/backups"),
    ("get", "/v1/projects/{id}/backups/schedule"),
    ("put", "/v1/projects/{id}/backups/schedule"),
    ("delete", "/v1/projects/{id}/backups/schedule"),
    ("get", "/v1/backups/{id}"),
    ("get", "/v1/backups/{id}/download"),
    ("post", "/v1/backups/{id}/restore"),
    ("get", "/v1/projects/{id}/assets"),
    ("get", "/v1/projects/{id}/image"),
    ("post", "/v1/projects/{id}/image"),
    ("delete", "/v1/projects/{id}/image"),
    ("post", "/v1/projects/{id}/image/webhook"),
    ("get", "/v1/registries"),
    ("post", "/v1/registries"),
    ("delete", "/v1/registries/{id}"),
    ("post", "/v1/projects/{id}/instances/{instance}/exec"),
    ("get", "/v1/execs/{id}/attach"),
    ("get", "/v1/runs/{id}/attach"),
    ("get", "/v1/projects/{id}/services"),
    ("post", "/v1/projects/{id}/services"),
    ("get", "/v1/projects/{id}/services/{name}"),
    ("patch", "/v1/projects/{id}/services/{name}"),
    ("delete", "/v1/projects/{id}/services/{name}"),
];

/// Operations that take no API token: the document itself, and the webhooks (verified by
/// their signature or secret instead).
const PUBLIC: &[&str] = &[
    "/v1/openapi.json",
    "/v1/projects/{id}/git/webhook",
    "/v1/projects/{id}/image/webhook",
];

async fn document(daemon: &TestDaemon) -> Value {
    let res = daemon
        .request(Method::GET, "/v1/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "served without a token");
    res.json().await.unwrap()
}

fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            found.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    found
}

#[tokio::test]
async fn the_document_lists_the_contract_and_every_route_it_lists_is_served() {
    let daemon = TestDaemon::start().await;
    let document = document(&daemon).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let operations = operations(&document);
    for (method, path) in EXPECTED {
        assert!(
            operations.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} is missing from the OpenAPI document"
        );
    }
    for (method, path, operation) in &operations {
        let concrete = path
            .replace("{id}", "prj_x")
            .replace("{handle}", "h")
            .replace("{hostname}", "www.example.com")
            .replace("{name}", "n");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let res = daemon
            .request(method.clone(), &concrete)
            .send()
            .await
            .unwrap();
        assert!(
            res.headers().get("x-cantila-route").is_none() && res.status() != 405,
            "{method} {path} is documented but not served ({})",
            res.status()
        );
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.contains_key("500"),
            "{method} {path} documents 500"
        );
        if operation.get("security").is_some() {
            for status in ["401", "403", "429"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} documents {status}"
                );
            }
            // Unauthenticated, every secured route answers 401, not its data.
            assert_eq!(res.status(), 401, "{method} {path} without a token");
        }
    }
    // Nothing is served that the contract does not name.
    assert_eq!(
        operations.len(),
        EXPECTED.len(),
        "undocumented additions to EXPECTED?"
    );
}

#[tokio::test]
async fn every_operation_names_its_scope() {
    let daemon = TestDaemon::start().await;
    let document = document(&daemon).await;
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    for (method, path, operation) in operations(&document) {
        if PUBLIC.contains(&path.as_str()) {
            assert!(
                operation.get("security").is_none(),
                "{method} {path} is public"
            );
            continue;
        }
        let scopes = &operation["security"][0]["bearer"];
        let scope = scopes[0]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no scope"));
        assert!(
            ["read", "deploy", "admin"].contains(&scope),
            "{method} {path}: {scope}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Integer bounds: the document and the server agree on every request integer's range.
// ---------------------------------------------------------------------------------------

/// Integers the bounds test does not send, each with the reason. Any other integer in a
/// place the test does not exercise (a path, a header, a shape it cannot build) fails it.
const NOT_EXERCISED: &[(&str, &str, &str)] = &[
    (
        "get /v1/projects/{id}/logs",
        "Last-Event-ID",
        "a header read leniently by design: an id a stream cannot resume from replays it whole",
    ),
    (
        "post /v1/projects/{id}/instances/{instance}/exec",
        "cols",
        "a value in bounds needs a running instance: terminal.rs checks both bounds on one",
    ),
    (
        "post /v1/projects/{id}/instances/{instance}/exec",
        "rows",
        "a value in bounds needs a running instance: terminal.rs checks both bounds on one",
    ),
];

/// Request bodies the schema cannot give a working example of, by operation.
const BASE_BODIES: &[(&str, &str)] = &[
    // The schema's example names a branch the fixture repository does not have.
    ("post /v1/projects/{id}/previews", r#"{"branch": "main"}"#),
    // A service needs an image; a tcp check takes every `health` integer.
    (
        "post /v1/projects/{id}/services",
        r#"{"name": "bounds-new", "image": "busybox", "command": ["sleep", "600"], "count": 0, "health": {"type": "tcp", "port": 6379}}"#,
    ),
    (
        "patch /v1/projects/{id}/services/{name}",
        r#"{"health": {"type": "tcp", "port": 6379}}"#,
    ),
];

/// Operations whose in-range values the bounds project cannot take to a 2xx, with the
/// one refusal they get instead: a refusal that comes after every field was checked (the
/// message must not name the field under test).
const REFUSED_AFTER_CHECKS: &[(&str, u16, &str)] = &[
    (
        "post /v1/projects/{id}/runs",
        409,
        // The bounds project never deploys: a run needs a serving release.
        "has no serving release",
    ),
    (
        "post /v1/projects/{id}/jobs",
        409,
        // The schema's example names one job: the first bound creates it.
        "already has a job named",
    ),
    (
        "post /v1/projects/{id}/services",
        409,
        // The base body names one service: the first bound creates it.
        "already has a service named",
    ),
];

/// Path parameters other than a project's `{id}`, by path: the resource the bounds test
/// makes for them before it starts.
const PATH_RESOURCES: &[(&str, &str, &str)] = &[
    ("/v1/projects/{id}/jobs/{name}", "{name}", "bounds-job"),
    ("/v1/projects/{id}/services/{name}", "{name}", "bounds-svc"),
];

/// Where a bounded integer goes in a request.
#[derive(Debug, Clone)]
enum Place {
    Query(String),
    /// Keys from the body's root; the last is the integer's own.
    Body(Vec<String>),
}

/// One documented integer with its range (the format's, narrowed by minimum/maximum).
#[derive(Debug, Clone)]
struct BoundedInteger {
    method: String,
    path: String,
    place: Place,
    /// What an error about it must name: the property, or the map key it was sent under.
    field: String,
    minimum: i128,
    maximum: i128,
}

fn is_integer(schema: &Value) -> bool {
    match &schema["type"] {
        Value::String(kind) => kind == "integer",
        Value::Array(kinds) => kinds.iter().any(|kind| kind == "integer"),
        _ => false,
    }
}

/// The range a schema documents: its format's, narrowed by `minimum`/`maximum` (and the
/// exclusive forms). `None` when it documents no bound at all.
fn documented_range(schema: &Value) -> Option<(i128, i128)> {
    let (mut low, mut high, mut bounded) = (i128::from(i64::MIN), i128::from(i64::MAX), false);
    let format_range = match schema["format"].as_str() {
        Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
        Some("int64") => Some((i64::MIN.into(), i64::MAX.into())),
        Some("uint32") => Some((0, u32::MAX.into())),
        Some("uint64") => Some((0, u64::MAX.into())),
        Some(other) => panic!("integer format `{other}` is not known to the bounds test"),
        None => None,
    };
    if let Some((format_low, format_high)) = format_range {
        (low, high, bounded) = (format_low, format_high, true);
    }
    let number = |key: &str| {
        schema[key]
            .as_i64()
            .map(i128::from)
            .or(schema[key].as_u64().map(i128::from))
    };
    if let Some(minimum) = number("minimum") {
        low = low.max(minimum);
        bounded = true;
    }
    if let Some(minimum) = number("exclusiveMinimum") {
        low = low.max(minimum + 1);
        bounded = true;
    }
    if let Some(maximum) = number("maximum") {
        high = high.min(maximum);
        bounded = true;
    }
    if let Some(maximum) = number("exclusiveMaximum") {
        high = high.min(maximum - 1);
        bounded = true;
    }
    bounded.then_some((low, high))
}

/// Every integer of a request body schema, with the keys that reach it.
fn body_integers(
    document: &Value,
    schema: &Value,
    keys: &mut Vec<String>,
    found: &mut Vec<(Vec<String>, Value)>,
) {
    let schema = resolve(document, schema);
    if is_integer(schema) {
        found.push((keys.clone(), schema.clone()));
        return;
    }
    // A nullable object (`Option<T>` of a schema: `null` or `T`) is walked as `T`.
    for combinator in ["oneOf", "anyOf"] {
        if let Some(options) = schema[combinator].as_array() {
            let not_null: Vec<&Value> = options
                .iter()
                .filter(|option| option["type"] != "null")
                .collect();
            if let [only] = not_null[..] {
                body_integers(document, only, keys, found);
                return;
            }
        }
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if schema.get(combinator).is_some() && schema.to_string().contains("integer") {
            panic!(
                "{keys:?}: the bounds test cannot build a body through `{combinator}` yet; teach it"
            );
        }
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            keys.push(name.clone());
            body_integers(document, property, keys, found);
            keys.pop();
        }
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        if is_integer(resolve(document, values)) || values.to_string().contains("integer") {
            // A map: the integer goes under a key the schema's example offers.
            let key = schema["example"]
                .as_object()
                .and_then(|example| example.keys().next().cloned())
                .unwrap_or_else(|| {
                    panic!("{keys:?}: a map of integers needs an example key for the bounds test")
                });
            keys.push(key);
            body_integers(document, values, keys, found);
            keys.pop();
        }
    }
    if let Some(items) = schema.get("items") {
        if items.to_string().contains("integer") {
            panic!("{keys:?}: the bounds test cannot build arrays of integers yet; teach it");
        }
    }
}

/// Every integer of every operation's query and JSON body, with its documented range.
fn bounded_integers(document: &Value) -> Vec<BoundedInteger> {
    let mut found = Vec::new();
    for (method, path, operation) in operations(document) {
        let operation_name = format!("{method} {path}");
        let mut integers: Vec<(Place, String, Value)> = Vec::new();
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let name = parameter["name"].as_str().unwrap().to_owned();
            let schema = resolve(document, &parameter["schema"]);
            if !is_integer(schema) {
                continue;
            }
            match parameter["in"].as_str() {
                Some("query") => integers.push((Place::Query(name.clone()), name, schema.clone())),
                _ if NOT_EXERCISED.iter().any(|(op, field, _)| *op == operation_name && *field == name) => {}
                other => panic!(
                    "{operation_name}: the integer {other:?} parameter `{name}` is not exercised by the bounds test; \
                     teach it, or list it in NOT_EXERCISED with the reason"
                ),
            }
        }
        if let Some(schema) = operation.pointer("/requestBody/content/application~1json/schema") {
            let mut body = Vec::new();
            body_integers(document, schema, &mut Vec::new(), &mut body);
            for (keys, schema) in body {
                let field = keys.last().unwrap().clone();
                if NOT_EXERCISED
                    .iter()
                    .any(|(op, name, _)| *op == operation_name && *name == field)
                {
                    continue;
                }
                integers.push((Place::Body(keys), field, schema));
            }
        }
        for (place, field, schema) in integers {
            let (minimum, maximum) = documented_range(&schema).unwrap_or_else(|| {
                panic!("{operation_name}: `{field}` is an integer with no documented range")
            });
            found.push(BoundedInteger {
                method: method.clone(),
                path: path.clone(),
                place,
                field,
                minimum,
                maximum,
            });
        }
    }
    found
}

/// The body an operation is sent with before the integer under test is set in it.
fn base_body(document: &Value, method: &str, path: &str) -> Value {
    let name = format!("{method} {path}");
    if let Some((_, body)) = BASE_BODIES.iter().find(|(operation, _)| *operation == name) {
        return serde_json::from_str(body).unwrap();
    }
    let schema =
        &document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
    crate::tenancy::body_for(document, schema)
}

/// Sends the operation with `value` at the integer's place: the status and the error
/// message, if any.
async fn send_with(
    daemon: &TestDaemon,
    document: &Value,
    integer: &BoundedInteger,
    project_id: &str,
    value: i128,
) -> (u16, String) {
    let named = PATH_RESOURCES
        .iter()
        .find(|(path, _, _)| *path == integer.path);
    assert!(
        integer
            .path
            .split('/')
            .filter(|s| s.starts_with('{'))
            .all(|s| s == "{id}" || named.is_some_and(|(_, parameter, _)| *parameter == s))
            && (!integer.path.contains("{id}") || integer.path.starts_with("/v1/projects/{id}")),
        "{} {}: the bounds test has no resource for this path's parameters; teach it",
        integer.method,
        integer.path
    );
    let mut url = integer.path.replace("{id}", project_id);
    if let Some((_, parameter, value)) = named {
        url = url.replace(parameter, value);
    }
    let mut body = None;
    match &integer.place {
        Place::Query(name) => {
            url.push_str(&format!("?{name}={value}"));
            if document["paths"][&integer.path][&integer.method]
                .get("requestBody")
                .is_some()
            {
                body = Some(base_body(document, &integer.method, &integer.path).to_string());
            }
        }
        Place::Body(keys) => {
            // Written as text: the value may be past what serde_json holds as a number.
            const MARK: &str = "__bound_under_test__";
            let mut json_body = base_body(document, &integer.method, &integer.path);
            let mut at = &mut json_body;
            for key in &keys[..keys.len() - 1] {
                if !at[key.as_str()].is_object() {
                    at[key.as_str()] = json!({});
                }
                at = &mut at[key.as_str()];
            }
            at[keys.last().unwrap().as_str()] = json!(MARK);
            body = Some(
                json_body
                    .to_string()
                    .replace(&format!("\"{MARK}\""), &value.to_string()),
            );
        }
    }
    let method = Method::from_bytes(integer.method.to_uppercase().as_bytes()).unwrap();
    let mut request = daemon
        .request(method, &url)
        .bearer_auth(&daemon.admin_token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let res = crate::support::read(request.send().await.unwrap()).await;
    (res.status, res.error_message().to_owned())
}

#[tokio::test]
async fn every_documented_integer_bound_holds_on_the_server() {
    // Limits off their defaults: the document served must state this server's own.
    let daemon = TestDaemon::start_with(|config| {
        config.api.max_page_size = 37;
        config.logs.max_limit = 777;
        config.scale.max_instances = 3;
    })
    .await;
    let document = document(&daemon).await;
    // A project with a repository, so previews can be created; its source has nothing to
    // build, so their deploys fail at planning without starting a container.
    let repo = crate::deploys::Repo::from_fixture("empty");
    let (project_id, _) = daemon.connected_project("bounds", &repo).await;
    // The job `PATH_RESOURCES` names, for the integers of `/jobs/{name}`.
    daemon
        .post(
            &format!("/v1/projects/{project_id}/jobs"),
            &daemon.admin_token,
            json!({ "name": "bounds-job", "schedule": "hourly", "command": ["true"] }),
        )
        .await
        .expect(201);

    // The service `PATH_RESOURCES` names, for the integers of `/services/{name}`.
    daemon
        .post(
            &format!("/v1/projects/{project_id}/services"),
            &daemon.admin_token,
            json!({ "name": "bounds-svc", "image": "busybox", "command": ["sleep", "600"], "count": 0 }),
        )
        .await
        .expect(201);

    let integers = bounded_integers(&document);
    for expected in [
        "limit",
        "pullRequest",
        "instances",
        "keepDaily",
        "keepWeekly",
        "worker",
        "statusMin",
        "startPeriodSecs",
        "timeoutSecs",
    ] {
        assert!(
            integers.iter().any(|integer| integer.field == expected),
            "the walk found no `{expected}`: {integers:#?}"
        );
    }
    let mut problems = Vec::new();
    for integer in &integers {
        let what = format!(
            "{} {} {:?} (documented {}..={})",
            integer.method, integer.path, integer.place, integer.minimum, integer.maximum
        );
        for bound in [integer.minimum, integer.maximum] {
            let (status, message) =
                send_with(&daemon, &document, integer, &project_id, bound).await;
            let operation = format!("{} {}", integer.method, integer.path);
            let refused_after_checks = REFUSED_AFTER_CHECKS.iter().any(|(op, code, why)| {
                *op == operation
                    && status == *code
                    && message.contains(why)
                    && !message.contains(&integer.field)
            });
            if !(200..300).contains(&status) && !refused_after_checks {
                problems.push(format!("{what}: the bound {bound} got {status}: {message}"));
            }
        }
        for past in [integer.minimum - 1, integer.maximum + 1] {
            let (status, message) = send_with(&daemon, &document, integer, &project_id, past).await;
            if !(400..500).contains(&status) || !message.contains(&integer.field) {
                problems.push(format!(
                    "{what}: {past}, past the bound, got {status} ({message}); wanted a 4xx naming `{}`",
                    integer.field
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    crate::deploys::cleanup(&project_id).await;
}

//! The OpenAPI document covers every route the router serves, and every documented route is
//! served. Routes are registered through `utoipa_axum::routes!` only, so the router cannot
//! serve a path the document lacks; these tests check the other direction and the contract.

use reqwest::Method;
use serde_json::Value;

use crate::support::TestDaemon;

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
    ("get", "/v1/projects/{id}/env"),
    ("post", "/v1/projects/{id}/env"),
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
];

/// Operations that take no API token: the document itself, and the webhook (verified by
/// its signature instead).
const PUBLIC: &[&str] = &["/v1/openapi.json", "/v1/projects/{id}/git/webhook"];

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

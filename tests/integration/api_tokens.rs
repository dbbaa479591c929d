//! Tokens over the API: shown once, stored hashed, listed without secrets, revoked at once,
//! never minted above the minter's scope.

use serde_json::json;

use crate::support::TestDaemon;

#[tokio::test]
async fn tokens_are_shown_once_and_revocable() {
    let daemon = TestDaemon::start().await;
    let admin = daemon.admin_token.clone();
    assert!(
        admin.starts_with("sk_live_") && admin.len() >= 8 + 32,
        "{admin}"
    );

    let created = daemon
        .post(
            "/v1/tokens",
            &admin,
            json!({ "scope": "deploy", "name": "ci" }),
        )
        .await
        .expect(201)
        .body;
    let secret = created["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk_live_"));
    assert!(secret[8..].chars().all(|c| c.is_ascii_alphanumeric()) && secret.len() >= 40);
    assert_eq!(created["scope"], "deploy");
    assert_eq!(created["name"], "ci");
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));

    let list = daemon.get("/v1/tokens", &admin).await.expect(200);
    assert!(
        !list.text.contains(&secret),
        "the list never shows a secret"
    );
    assert!(!list.text.contains(&admin), "the list never shows a secret");
    let tokens = list.body["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    let listed = tokens.iter().find(|t| t["id"] == created["id"]).unwrap();
    assert_eq!(listed["lastUsedAt"], json!(null));

    // Using it records last use.
    daemon.get("/v1/projects", &secret).await.expect(200);
    let list = daemon.get("/v1/tokens", &admin).await.expect(200).body;
    let listed = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == created["id"])
        .unwrap()
        .clone();
    assert!(listed["lastUsedAt"].is_string(), "{listed}");

    let id = created["id"].as_str().unwrap();
    let revoked = daemon
        .delete(&format!("/v1/tokens/{id}"), &admin)
        .await
        .expect(200)
        .body;
    assert!(revoked["revokedAt"].is_string());
    let res = daemon.get("/v1/projects", &secret).await.expect(401);
    assert!(res.error_message().contains("revoked"), "{}", res.text);
    // Revoking twice is harmless; an unknown id is 404.
    daemon
        .delete(&format!("/v1/tokens/{id}"), &admin)
        .await
        .expect(200);
    daemon
        .delete("/v1/tokens/tok_doesnotexist", &admin)
        .await
        .expect(404);
}

#[tokio::test]
async fn bad_token_requests_are_rejected() {
    let daemon = TestDaemon::start().await;
    let admin = daemon.admin_token.clone();
    let res = daemon
        .post("/v1/tokens", &admin, json!({ "scope": "root" }))
        .await
        .expect(422);
    assert!(
        res.error_message().contains("read, deploy, admin"),
        "{}",
        res.text
    );
    daemon
        .post("/v1/tokens", &admin, json!({ "scope": "read", "name": "" }))
        .await
        .expect(422);
    daemon
        .post("/v1/tokens", &admin, json!({}))
        .await
        .expect(422);
}

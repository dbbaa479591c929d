//! Regressions found by schema fuzzing (`scripts/schemathesis.sh`): each request here once
//! got an answer its OpenAPI document did not promise.

use serde_json::json;

use crate::support::TestDaemon;

/// serde reads a struct from an array of its fields in order, so `[null, null]` once
/// passed for `{"name": null, "runtime": null}` and answered 200.
#[tokio::test]
async fn a_body_that_is_not_an_object_is_refused() {
    let daemon = TestDaemon::start().await;
    let token = daemon.admin_token.clone();
    let project = daemon.create_project("shaped").await;
    let id = project["id"].as_str().unwrap();
    for body in [
        json!([null, null]),
        json!(["renamed"]),
        json!("renamed"),
        json!(7),
    ] {
        let res = daemon
            .patch(&format!("/v1/projects/{id}"), &token, body.clone())
            .await
            .expect(422);
        assert_eq!(res.error_code(), "invalid", "{body}");
        assert!(res.error_message().contains("JSON object"), "{}", res.text);
    }
    let res = daemon
        .post("/v1/projects", &token, json!(["from-an-array", null]))
        .await
        .expect(422);
    assert!(res.error_message().contains("JSON object"), "{}", res.text);
    // Nothing changed, nothing was created.
    let listed = daemon.get("/v1/projects", &token).await.expect(200).body;
    let names: Vec<&str> = listed["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shaped"]);
    // A body of the wrong shape inside an object is still a 422 with the field named.
    let res = daemon
        .patch(&format!("/v1/projects/{id}"), &token, json!({"name": 7}))
        .await
        .expect(422);
    assert!(res.error_message().contains("expected"), "{}", res.text);
}

/// Rotating the secret of a project without a git connection is a state conflict (the
/// project exists), and rolling back to a deploy id the project does not have is a bad
/// field: neither is the 404 that means "no such project".
#[tokio::test]
async fn sub_resource_answers_do_not_pretend_the_project_is_missing() {
    let daemon = TestDaemon::start().await;
    let token = daemon.admin_token.clone();
    let project = daemon.create_project("unconnected").await;
    let id = project["id"].as_str().unwrap();
    let res = daemon
        .post(
            &format!("/v1/projects/{id}/git/rotate-secret"),
            &token,
            json!({}),
        )
        .await
        .expect(409);
    assert!(
        res.error_message().contains("no git connection"),
        "{}",
        res.text
    );
    let res = daemon
        .post(
            &format!("/v1/projects/{id}/rollback"),
            &token,
            json!({"deployId": id}),
        )
        .await
        .expect(422);
    assert!(
        res.error_message().contains("names no deploy"),
        "{}",
        res.text
    );
    // A missing project is still 404 on both.
    for path in [
        "/v1/projects/prj_nope/git/rotate-secret",
        "/v1/projects/prj_nope/rollback",
    ] {
        daemon.post(path, &token, json!({})).await.expect(404);
    }
}

/// The document states the limits the server enforces, so clients (and the fuzzer) can
/// tell valid input from invalid without trying it.
#[tokio::test]
async fn the_document_states_formats_and_optional_bodies() {
    let daemon = TestDaemon::start().await;
    let document: serde_json::Value = reqwest::get(daemon.url("/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let create = &document["components"]["schemas"]["CreateProject"]["properties"];
    assert_eq!(
        create["name"]["pattern"],
        json!("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    );
    let limit = document["paths"]["/v1/projects"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(limit["schema"]["minimum"], json!(1));
    let deploy = &document["paths"]["/v1/projects/{id}/deploy"]["post"]["requestBody"];
    assert_ne!(deploy["required"], json!(true), "{deploy}");
    let scope = &document["components"]["schemas"]["CreateToken"]["properties"]["scope"];
    assert!(scope.to_string().contains("Scope"), "{scope}");
}

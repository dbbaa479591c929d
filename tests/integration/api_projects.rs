//! The projects endpoints: create, validation, conflicts, lookup, update, delete, paging.

use serde_json::json;

use crate::support::TestDaemon;

#[tokio::test]
async fn create_get_update_delete() {
    let daemon = TestDaemon::start().await;
    let token = daemon.token("deploy").await;
    let created = daemon
        .post(
            "/v1/projects",
            &token,
            json!({ "name": "marketing-site", "runtime": "static" }),
        )
        .await
        .expect(201)
        .body;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("prj_") && id.len() >= 20, "{id}");
    assert_eq!(created["name"], "marketing-site");
    assert_eq!(created["handle"], "admin");
    assert_eq!(created["status"], "created");
    assert_eq!(created["runtime"], "static");
    assert_eq!(created["hostname"], "marketing-site.admin.test.local");
    let created_at = created["createdAt"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.len() == 24,
        "{created_at}"
    );

    let fetched = daemon
        .get(&format!("/v1/projects/{id}"), &token)
        .await
        .expect(200)
        .body;
    assert_eq!(fetched, created);
    let by_handle = daemon
        .get("/v1/projects/by-handle/admin/marketing-site", &token)
        .await
        .expect(200)
        .body;
    assert_eq!(by_handle, created);
    daemon
        .get("/v1/projects/by-handle/someone-else/marketing-site", &token)
        .await
        .expect(404);
    daemon
        .get("/v1/projects/by-handle/admin/nothing", &token)
        .await
        .expect(404);

    let renamed = daemon
        .patch(
            &format!("/v1/projects/{id}"),
            &token,
            json!({ "name": "site", "runtime": null }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(renamed["name"], "site");
    assert_eq!(renamed["runtime"], json!(null));
    assert_eq!(renamed["id"], created["id"]);
    // An absent field is left alone.
    let kept = daemon
        .patch(
            &format!("/v1/projects/{id}"),
            &token,
            json!({ "runtime": "node" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (kept["name"].as_str(), kept["runtime"].as_str()),
        (Some("site"), Some("node"))
    );

    daemon
        .delete(&format!("/v1/projects/{id}"), &token)
        .await
        .expect(204);
    daemon
        .get(&format!("/v1/projects/{id}"), &token)
        .await
        .expect(404);
    daemon
        .delete(&format!("/v1/projects/{id}"), &token)
        .await
        .expect(404);
}

#[tokio::test]
async fn names_are_validated_and_unique() {
    let daemon = TestDaemon::start().await;
    let token = daemon.admin_token.clone();
    daemon.create_project("blog").await;
    let res = daemon
        .post("/v1/projects", &token, json!({ "name": "blog" }))
        .await
        .expect(409);
    assert_eq!(res.error_code(), "conflict");
    assert!(res.error_message().contains("blog"), "{}", res.text);

    for bad in [
        "Blog",
        "-blog",
        "blog-",
        "my_blog",
        "",
        "a.b",
        &"x".repeat(64),
    ] {
        let res = daemon
            .post("/v1/projects", &token, json!({ "name": bad }))
            .await;
        assert_eq!(res.status, 422, "name {bad:?}: {}", res.text);
        assert_eq!(res.error_code(), "invalid");
    }
    let res = daemon
        .post(
            "/v1/projects",
            &token,
            json!({ "name": "ok", "runtime": "cobol" }),
        )
        .await
        .expect(422);
    assert!(
        res.error_message().contains("node"),
        "lists the known runtimes: {}",
        res.text
    );
    daemon
        .post("/v1/projects", &token, json!({}))
        .await
        .expect(422);
    daemon
        .post(
            "/v1/projects",
            &token,
            json!({ "name": "ok", "nmae": "typo" }),
        )
        .await
        .expect(422);
    daemon
        .post("/v1/projects", &token, json!({ "name": 5 }))
        .await
        .expect(422);

    // Renaming onto a taken name conflicts too.
    let other = daemon.create_project("other").await;
    daemon
        .patch(
            &format!("/v1/projects/{}", other["id"].as_str().unwrap()),
            &token,
            json!({ "name": "blog" }),
        )
        .await
        .expect(409);
}

#[tokio::test]
async fn malformed_bodies_get_clear_errors() {
    let daemon = TestDaemon::start_with(|c| c.api.max_body_bytes = 1024).await;
    let token = daemon.admin_token.clone();
    let send = |content_type: &'static str, body: String| {
        daemon
            .request(reqwest::Method::POST, "/v1/projects")
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let res =
        crate::support::read(send("text/plain", "{\"name\":\"x\"}".into()).await.unwrap()).await;
    assert_eq!(
        (res.status, res.error_code()),
        (415, "unsupported_media_type")
    );
    let res =
        crate::support::read(send("application/json", "{\"name\":".into()).await.unwrap()).await;
    assert_eq!((res.status, res.error_code()), (400, "bad_request"));
    let huge = format!("{{\"name\":\"{}\"}}", "a".repeat(4096));
    let res = crate::support::read(send("application/json", huge).await.unwrap()).await;
    assert_eq!((res.status, res.error_code()), (413, "payload_too_large"));
    // Nothing was created by any of them.
    let list = daemon.get("/v1/projects", &token).await.expect(200);
    assert_eq!(list.body["projects"], json!([]));
}

#[tokio::test]
async fn listing_pages_with_cursors() {
    let daemon = TestDaemon::start().await;
    let token = daemon.admin_token.clone();
    for n in 0..7 {
        daemon.create_project(&format!("app-{n}")).await;
    }
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/projects?limit=3&cursor={c}"),
            None => "/v1/projects?limit=3".to_owned(),
        };
        let page = daemon.get(&path, &token).await.expect(200).body;
        pages += 1;
        for project in page["projects"].as_array().unwrap() {
            names.push(project["name"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..7).map(|n| format!("app-{n}")).collect();
    assert_eq!(names, expected);

    // Default page holds everything here.
    let all = daemon.get("/v1/projects", &token).await.expect(200).body;
    assert_eq!(all["projects"].as_array().unwrap().len(), 7);
    assert_eq!(all["nextCursor"], json!(null));

    for bad in [
        "limit=0",
        "limit=201",
        "limit=abc",
        "cursor=bogus",
        "cursor=",
    ] {
        let res = daemon.get(&format!("/v1/projects?{bad}"), &token).await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text);
    }
}

#[tokio::test]
async fn mutations_are_audited() {
    let daemon = TestDaemon::start().await;
    let token = daemon.admin_token.clone();
    let project = daemon.create_project("audited").await;
    let id = project["id"].as_str().unwrap();
    daemon
        .delete(&format!("/v1/projects/{id}"), &token)
        .await
        .expect(204);
    let audit = daemon
        .get("/v1/audit?limit=2", &token)
        .await
        .expect(200)
        .body;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries[0]["action"], "project.delete");
    assert_eq!(entries[1]["action"], "project.create");
    for entry in entries {
        assert_eq!(entry["target"], project["id"]);
        assert_eq!(entry["clientAddr"], "127.0.0.1");
        assert!(entry["actor"].as_str().unwrap().starts_with("tok_"));
    }
    // Older entries (the bootstrap) are on the next page.
    let cursor = audit["nextCursor"].as_str().expect("more entries");
    let older = daemon
        .get(&format!("/v1/audit?cursor={cursor}"), &token)
        .await
        .expect(200)
        .body;
    let actions: Vec<&str> = older["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["token.create", "account.create"]);
}

#[tokio::test]
async fn build_settings_are_validated_at_the_boundary_and_shown() {
    let daemon = TestDaemon::start().await;
    let token = daemon.token("deploy").await;
    let project = daemon.create_project("mono").await;
    let id = project["id"].as_str().unwrap();
    assert_eq!(
        project["build"],
        json!({ "rootDir": null, "dockerfile": null, "target": null, "buildArgs": {}, "watchPaths": [] })
    );
    let settings = json!({
        "rootDir": "./apps//web/",
        "dockerfile": "docker/Dockerfile",
        "target": "prod",
        "buildArgs": { "NODE_ENV": "production" },
        "watchPaths": ["apps/web/**", "packages/**"]
    });
    let updated = daemon
        .patch(
            &format!("/v1/projects/{id}"),
            &token,
            json!({ "build": settings }),
        )
        .await
        .expect(200)
        .body;
    let expected = json!({
        "rootDir": "apps/web",
        "dockerfile": "docker/Dockerfile",
        "target": "prod",
        "buildArgs": { "NODE_ENV": "production" },
        "watchPaths": ["apps/web/**", "packages/**"]
    });
    assert_eq!(updated["build"], expected);
    let fetched = daemon
        .get(&format!("/v1/projects/{id}"), &token)
        .await
        .expect(200)
        .body;
    assert_eq!(fetched["build"], expected);

    // Each bad value is a 4xx naming its field, and changes nothing.
    for (build, field) in [
        (json!({ "rootDir": "../other" }), "build.rootDir"),
        (json!({ "rootDir": "/etc" }), "build.rootDir"),
        (json!({ "rootDir": "apps/../../x" }), "build.rootDir"),
        (json!({ "dockerfile": "../Dockerfile" }), "build.dockerfile"),
        (json!({ "dockerfile": "/Dockerfile" }), "build.dockerfile"),
        (json!({ "dockerfile": "docker/" }), "build.dockerfile"),
        (json!({ "target": "1prod" }), "build.target"),
        (json!({ "target": "prod; rm" }), "build.target"),
        (json!({ "buildArgs": { "A-B": "x" } }), "build.buildArgs"),
        (json!({ "buildArgs": { "1A": "x" } }), "build.buildArgs"),
        (
            json!({ "buildArgs": { "A": "x\u{0}y" } }),
            "build.buildArgs",
        ),
        (json!({ "watchPaths": ["/abs/**"] }), "build.watchPaths"),
        (json!({ "watchPaths": ["apps/[web"] }), "build.watchPaths"),
        (json!({ "watchPaths": ["../x/**"] }), "build.watchPaths"),
        (json!({ "context": "apps/web" }), "context"),
        // Serde reads a struct from an array of its fields too; the API takes objects only.
        (json!([null, null, null, null, null]), "build"),
    ] {
        let res = daemon
            .patch(
                &format!("/v1/projects/{id}"),
                &token,
                json!({ "build": build }),
            )
            .await;
        assert!(
            (400..500).contains(&res.status) && res.error_message().contains(field),
            "{build}: {} {}",
            res.status,
            res.text
        );
    }
    let too_many: Vec<String> = (0..51).map(|i| format!("p{i}/**")).collect();
    let res = daemon
        .patch(
            &format!("/v1/projects/{id}"),
            &token,
            json!({ "build": { "watchPaths": too_many } }),
        )
        .await
        .expect(422);
    assert!(
        res.error_message().contains("build.watchPaths"),
        "{}",
        res.text
    );
    let unchanged = daemon
        .get(&format!("/v1/projects/{id}"), &token)
        .await
        .expect(200)
        .body;
    assert_eq!(unchanged["build"], expected);

    // Fields change one by one; null and empty clear them.
    let cleared = daemon
        .patch(
            &format!("/v1/projects/{id}"),
            &token,
            json!({ "build": { "target": null, "buildArgs": {}, "rootDir": "." } }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        cleared["build"],
        json!({
            "rootDir": null,
            "dockerfile": "docker/Dockerfile",
            "target": null,
            "buildArgs": {},
            "watchPaths": ["apps/web/**", "packages/**"]
        })
    );
    // A read token cannot change settings; another account cannot see the project.
    let reader = daemon.token("read").await;
    daemon
        .patch(
            &format!("/v1/projects/{id}"),
            &reader,
            json!({ "build": { "target": "x" } }),
        )
        .await
        .expect(403);
}

#[tokio::test]
async fn build_secrets_are_set_listed_by_name_and_removed_never_shown() {
    let daemon = TestDaemon::start().await;
    let token = daemon.token("deploy").await;
    let project = daemon.create_project("secretive").await;
    let id = project["id"].as_str().unwrap();
    let value = "npm_s3cr3t_value_4711";
    let set = daemon
        .call(
            reqwest::Method::PUT,
            &format!("/v1/projects/{id}/build-secrets/NPM_TOKEN"),
            Some(&token),
            Some(json!({ "value": value })),
        )
        .await
        .expect(200);
    assert_eq!(set.body["name"], "NPM_TOKEN");
    assert!(!set.text.contains(value), "{}", set.text);
    let listed = daemon
        .get(&format!("/v1/projects/{id}/build-secrets"), &token)
        .await
        .expect(200);
    assert_eq!(listed.body["secrets"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["secrets"][0]["name"], "NPM_TOKEN");
    assert!(!listed.text.contains(value), "{}", listed.text);

    for (path, body, field) in [
        ("1BAD", json!({ "value": "x" }), "name"),
        ("A-B", json!({ "value": "x" }), "name"),
        ("GOOD", json!({ "value": "" }), "value"),
    ] {
        let res = daemon
            .call(
                reqwest::Method::PUT,
                &format!("/v1/projects/{id}/build-secrets/{path}"),
                Some(&token),
                Some(body),
            )
            .await
            .expect(422);
        assert!(
            res.error_message().starts_with(field),
            "{path}: {}",
            res.text
        );
    }
    let reader = daemon.token("read").await;
    daemon
        .call(
            reqwest::Method::PUT,
            &format!("/v1/projects/{id}/build-secrets/OTHER"),
            Some(&reader),
            Some(json!({ "value": "x" })),
        )
        .await
        .expect(403);
    let stranger = daemon.other_account_token("stranger", cantila::names::Scope::Deploy);
    daemon
        .get(&format!("/v1/projects/{id}/build-secrets"), &stranger)
        .await
        .expect(404);
    daemon
        .delete(
            &format!("/v1/projects/{id}/build-secrets/NPM_TOKEN"),
            &stranger,
        )
        .await
        .expect(404);

    daemon
        .delete(
            &format!("/v1/projects/{id}/build-secrets/NPM_TOKEN"),
            &token,
        )
        .await
        .expect(204);
    daemon
        .delete(
            &format!("/v1/projects/{id}/build-secrets/NPM_TOKEN"),
            &token,
        )
        .await
        .expect(404);
    let listed = daemon
        .get(&format!("/v1/projects/{id}/build-secrets"), &token)
        .await
        .expect(200);
    assert_eq!(listed.body["secrets"], json!([]));
}

//! Health check settings end to end on the real engine: a project's `healthCheck` (path and
//! status range, TCP, none, start period) gates its releases; a failing check keeps the
//! previous release serving with the reason in the deploy's log; bad settings are a 4xx
//! naming the field; the plan shows the check a release will run.

use std::time::Duration;

use cantila::runtime::docker::Engine;
use serde_json::{json, Value};

use crate::{
    deploys::{cleanup, events_text, Repo},
    support::TestDaemon,
};

/// An HTTP server in busybox `nc` that answers `/healthz` with 204, `/` with 500 and every
/// other path with 404: the default check (`/`, below 500) fails, a check of `/healthz`
/// passes, and a check of a wrong path passes only if 404 is in its range.
fn healthz_app() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY handler.sh /handler.sh\nRUN chmod +x /handler.sh\nEXPOSE 8080\nCMD [\"nc\", \"-ll\", \"-p\", \"8080\", \"-e\", \"/handler.sh\"]\n",
        ),
        (
            "handler.sh",
            "#!/bin/sh\nread -r method path version\nwhile read -r line; do [ \"${#line}\" -le 1 ] && break; done\ncase \"$path\" in\n  /healthz) printf 'HTTP/1.0 204 No Content\\r\\nConnection: close\\r\\n\\r\\n' ;;\n  /) printf 'HTTP/1.0 500 Internal Server Error\\r\\nContent-Length: 4\\r\\nConnection: close\\r\\n\\r\\nbad\\n' ;;\n  *) printf 'HTTP/1.0 404 Not Found\\r\\nContent-Length: 4\\r\\nConnection: close\\r\\n\\r\\nnah\\n' ;;\nesac\n",
        ),
    ]
}

/// Sets the project's health check settings through the API; returns the project's view.
async fn set_health_check(daemon: &TestDaemon, project_id: &str, settings: Value) -> Value {
    daemon
        .patch(
            &format!("/v1/projects/{project_id}"),
            &daemon.admin_token,
            json!({ "healthCheck": settings }),
        )
        .await
        .expect(200)
        .body
}

/// The status the deploy's web instance answers `path` with, straight from its container.
async fn instance_status(deploy_id: &str, path: &str) -> Option<u16> {
    let engine = Engine::connect().await.unwrap();
    let containers = engine
        .containers(&[("cantila.deploy", deploy_id)])
        .await
        .unwrap();
    let status = engine.inspect(&containers.first()?.id).await.ok()?;
    let ip = status.addresses.values().next()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{ip}:8080{path}"))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// The deploy's status and failed step.
fn outcome(deploy: &Value) -> (Option<&str>, Option<&str>) {
    (deploy["status"].as_str(), deploy["failedStep"].as_str())
}

#[tokio::test]
async fn a_custom_path_and_status_range_gate_the_release() {
    let daemon = TestDaemon::start().await;
    let repo = Repo::new(&healthz_app());
    let (project_id, _) = daemon.connected_project("healthz", &repo).await;

    // The plan shows the default check: GET / passing below 500.
    let planned = daemon
        .post(
            "/v1/deploy/plan",
            &daemon.admin_token,
            json!({ "projectId": project_id }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        planned["healthCheck"],
        json!({"kind": "http", "path": "/", "port": 8080, "statusMin": 200, "statusMax": 499,
               "startPeriodSecs": 0, "overallTimeoutSecs": 60, "timeoutSecs": 2, "intervalMs": 500,
               "intervalSecs": 1, "retries": 30, "source": "detection"}),
        "{planned}"
    );

    // The default check's path answers 500: the deploy fails, saying so.
    set_health_check(&daemon, &project_id, json!({"overallTimeoutSecs": 2})).await;
    let default = daemon.deploy(&project_id, None).await;
    assert_eq!(
        outcome(&default),
        (Some("failed"), Some("release")),
        "{default}"
    );
    assert!(
        default["error"]
            .as_str()
            .unwrap()
            .contains("the last answer was HTTP 500"),
        "{default}"
    );

    let view = set_health_check(
        &daemon,
        &project_id,
        json!({"type": "http", "path": "/healthz", "statusMin": 200, "statusMax": 299}),
    )
    .await;
    assert_eq!(
        view["healthCheck"],
        json!({"type": "http", "path": "/healthz", "statusMin": 200, "statusMax": 299})
    );
    let planned = daemon
        .post(
            "/v1/deploy/plan",
            &daemon.admin_token,
            json!({ "projectId": project_id }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (
            &planned["healthCheck"]["path"],
            &planned["healthCheck"]["statusMax"],
            &planned["healthCheck"]["source"]
        ),
        (&json!("/healthz"), &json!(299), &json!("api")),
        "{planned}"
    );
    let good = daemon.deploy(&project_id, None).await;
    assert_eq!(outcome(&good), (Some("running"), None), "{good}");
    let good_id = good["id"].as_str().unwrap();
    let log = events_text(&daemon, good_id).await;
    assert!(log.contains("health check passed: HTTP 204"), "{log}");

    // A wrong path answers 404, outside the range: the deploy fails at release, says why in
    // its log, and the release that passed keeps serving.
    set_health_check(
        &daemon,
        &project_id,
        json!({"path": "/wrong", "statusMax": 299, "overallTimeoutSecs": 3}),
    )
    .await;
    let wrong = daemon.deploy(&project_id, None).await;
    assert_eq!(
        outcome(&wrong),
        (Some("failed"), Some("release")),
        "{wrong}"
    );
    let log = events_text(&daemon, wrong["id"].as_str().unwrap()).await;
    assert!(
        log.contains("failed its health check (HTTP GET /wrong on port 8080, passing 200-299)")
            && log.contains("the last answer was HTTP 404"),
        "{log}"
    );
    let project = daemon
        .get(&format!("/v1/projects/{project_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(project["status"], "running");
    assert_eq!(instance_status(good_id, "/healthz").await, Some(204));
    cleanup(&project_id).await;
}

/// The plan of the project's connected repository.
async fn plan_of(daemon: &TestDaemon, project_id: &str) -> crate::support::Res {
    daemon
        .post(
            "/v1/deploy/plan",
            &daemon.admin_token,
            json!({ "projectId": project_id }),
        )
        .await
}

/// `[health]` in the repository's `cantila.toml` gates the release (the app's `/` answers
/// 500, so only the file's `/healthz` lets it pass); the project's `healthCheck` wins over
/// the file as a whole, with a warning, and reuses the image (a health check is not an
/// input of the build; a build arg is, and rebuilds); an unknown key is named with its line.
#[tokio::test]
async fn a_cantila_toml_health_table_applies_under_the_api_and_unknown_keys_are_named() {
    let daemon = TestDaemon::start().await;
    let mut files = healthz_app();
    files.push(("cantila.toml", "# checks\n[health]\npath = \"/healthz\"\n"));
    let repo = Repo::new(&files);
    let (project_id, _) = daemon.connected_project("tomlhealth", &repo).await;

    let planned = plan_of(&daemon, &project_id).await.expect(200).body;
    assert_eq!(
        (
            &planned["healthCheck"]["path"],
            &planned["healthCheck"]["source"]
        ),
        (&json!("/healthz"), &json!("file")),
        "{planned}"
    );
    let good = daemon.deploy(&project_id, None).await;
    assert_eq!(outcome(&good), (Some("running"), None), "{good}");
    let log = events_text(&daemon, good["id"].as_str().unwrap()).await;
    assert!(
        log.contains(
            "HTTP GET /healthz on port 8080, passing 200-499 (the settings file's [health])"
        ) && log.contains("health check passed: HTTP 204"),
        "{log}"
    );

    // The project's settings replace the file's table whole: `/` answers 500 and fails.
    set_health_check(&daemon, &project_id, json!({"overallTimeoutSecs": 2})).await;
    let planned = plan_of(&daemon, &project_id).await.expect(200).body;
    assert_eq!(
        (
            &planned["healthCheck"]["path"],
            &planned["healthCheck"]["source"]
        ),
        (&json!("/"), &json!("api")),
        "{planned}"
    );
    assert!(
        planned["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("`[health]` in cantila.toml was ignored")),
        "{planned}"
    );
    let overridden = daemon.deploy(&project_id, None).await;
    assert_eq!(
        outcome(&overridden),
        (Some("failed"), Some("release")),
        "{overridden}"
    );
    assert!(
        overridden["error"]
            .as_str()
            .unwrap()
            .contains("the last answer was HTTP 500"),
        "{overridden}"
    );
    // The health check is not an input of the build: the same commit's image is reused.
    assert_eq!(overridden["image"], good["image"], "{overridden}");
    let log = events_text(&daemon, overridden["id"].as_str().unwrap()).await;
    assert!(log.contains("reusing image"), "{log}");

    // A build arg is one: the next deploy builds again.
    daemon
        .patch(
            &format!("/v1/projects/{project_id}"),
            &daemon.admin_token,
            json!({ "healthCheck": null, "build": { "buildArgs": { "FLAVOUR": "plain" } } }),
        )
        .await
        .expect(200);
    let rebuilt = daemon.deploy(&project_id, None).await;
    assert_eq!(outcome(&rebuilt), (Some("running"), None), "{rebuilt}");
    assert_ne!(rebuilt["image"], good["image"], "{rebuilt}");
    let log = events_text(&daemon, rebuilt["id"].as_str().unwrap()).await;
    assert!(
        !log.contains("reusing image") && log.contains("building "),
        "{log}"
    );

    // An unknown key fails the plan and the deploy, named with the file and its line.
    repo.commit(
        &[(
            "cantila.toml",
            "[health]\npath = \"/healthz\"\n\nintervall_ms = 100\n",
        )],
        "typo",
    );
    let res = plan_of(&daemon, &project_id).await.expect(422);
    let message = res.error_message();
    assert!(
        message.contains("cantila.toml line 4") && message.contains("`intervall_ms`"),
        "{message}"
    );
    let failed = daemon.deploy(&project_id, None).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("cantila.toml line 4") && error.contains("`intervall_ms`"),
        "{failed}"
    );
    cleanup(&project_id).await;
}

#[tokio::test]
async fn a_tcp_check_releases_an_app_that_does_not_speak_http() {
    let daemon = TestDaemon::start().await;
    // An echo server: it accepts connections but never answers HTTP.
    let repo = Repo::new(&[(
        "Dockerfile",
        "FROM busybox:latest\nEXPOSE 8080\nCMD [\"nc\", \"-ll\", \"-p\", \"8080\", \"-e\", \"/bin/cat\"]\n",
    )]);
    let (project_id, _) = daemon.connected_project("echo", &repo).await;

    // On a port where nothing listens, the TCP check fails and says so.
    set_health_check(
        &daemon,
        &project_id,
        json!({"type": "tcp", "port": 9, "overallTimeoutSecs": 2}),
    )
    .await;
    let closed = daemon.deploy(&project_id, None).await;
    assert_eq!(
        outcome(&closed),
        (Some("failed"), Some("release")),
        "{closed}"
    );
    assert!(
        closed["error"]
            .as_str()
            .unwrap()
            .contains("TCP connect to port 9"),
        "{closed}"
    );

    // On the app's port it passes, where an HTTP check never could.
    set_health_check(&daemon, &project_id, json!({"type": "tcp"})).await;
    let deployed = daemon.deploy(&project_id, None).await;
    assert_eq!(outcome(&deployed), (Some("running"), None), "{deployed}");
    let log = events_text(&daemon, deployed["id"].as_str().unwrap()).await;
    assert!(
        log.contains("TCP connect to port 8080") && log.contains("health check passed: port open"),
        "{log}"
    );

    // A preview of the project releases with the project's settings too.
    let preview = daemon
        .post(
            &format!("/v1/projects/{project_id}/previews"),
            &daemon.admin_token,
            json!({"branch": "main"}),
        )
        .await
        .expect(201)
        .body;
    let previewed = daemon
        .wait_deploy(preview["deployId"].as_str().unwrap())
        .await;
    assert_eq!(outcome(&previewed), (Some("running"), None), "{previewed}");
    assert_eq!(
        previewed["plan"]["healthCheck"]["kind"], "tcp",
        "{previewed}"
    );
    cleanup(&project_id).await;
}

#[tokio::test]
async fn a_none_check_releases_a_worker_that_stays_up_and_fails_one_that_exits() {
    let daemon = TestDaemon::start().await;
    // A worker that serves nothing: its image's CMD is the project's only process.
    let repo = Repo::new(&[(
        "Dockerfile",
        "FROM busybox:latest\nCMD [\"sh\", \"-c\", \"echo working; exec sleep 600\"]\n",
    )]);
    let (project_id, _) = daemon.connected_project("worker", &repo).await;
    set_health_check(
        &daemon,
        &project_id,
        json!({"type": "none", "startPeriodSecs": 1}),
    )
    .await;
    let deployed = daemon.deploy(&project_id, None).await;
    assert_eq!(outcome(&deployed), (Some("running"), None), "{deployed}");
    let log = events_text(&daemon, deployed["id"].as_str().unwrap()).await;
    assert!(
        log.contains("stay up for 1 s") && log.contains("the process stayed up"),
        "{log}"
    );

    // A worker that exits within its start period (after being seen running) is not healthy.
    repo.commit(
        &[(
            "Dockerfile",
            "FROM busybox:latest\nCMD [\"sh\", \"-c\", \"echo giving up; sleep 2; exit 4\"]\n",
        )],
        "exits soon",
    );
    set_health_check(
        &daemon,
        &project_id,
        json!({"type": "none", "startPeriodSecs": 30}),
    )
    .await;
    let exited = daemon.deploy(&project_id, None).await;
    assert_eq!(
        outcome(&exited),
        (Some("failed"), Some("release")),
        "{exited}"
    );
    // Seen stopped, or already brought back by the restart policy: an exit either way.
    let error = exited["error"].as_str().unwrap();
    assert!(
        error.contains("exited with code 4") || error.contains("exited and was restarted"),
        "{exited}"
    );
    let log = events_text(&daemon, exited["id"].as_str().unwrap()).await;
    assert!(log.contains("app: giving up"), "{log}");
    cleanup(&project_id).await;
}

#[tokio::test]
async fn a_start_period_lets_a_slow_starter_pass() {
    let daemon = TestDaemon::start().await;
    // Listens only after 8 s.
    let repo = Repo::new(&[
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"sh\", \"-c\", \"sleep 8; exec httpd -f -p 8080 -h /www\"]\n",
        ),
        ("www/index.html", "slow but sure\n"),
    ]);
    let (project_id, _) = daemon.connected_project("slow", &repo).await;

    // Without a start period, 2 s are not enough.
    set_health_check(&daemon, &project_id, json!({"overallTimeoutSecs": 2})).await;
    let hurried = daemon.deploy(&project_id, None).await;
    assert_eq!(
        outcome(&hurried),
        (Some("failed"), Some("release")),
        "{hurried}"
    );
    assert!(
        hurried["error"]
            .as_str()
            .unwrap()
            .contains("did not answer its health check (HTTP GET / on port 8080, passing 200-499) within 2 s after a start period of 0 s"),
        "{hurried}"
    );

    // The same 2 s after a start period of 60 s: the app answers during the start period.
    set_health_check(
        &daemon,
        &project_id,
        json!({"overallTimeoutSecs": 2, "startPeriodSecs": 60}),
    )
    .await;
    let patient = daemon.deploy(&project_id, None).await;
    assert_eq!(outcome(&patient), (Some("running"), None), "{patient}");
    cleanup(&project_id).await;
}

#[tokio::test]
async fn bad_health_check_settings_are_refused_naming_the_field_and_null_resets() {
    let daemon = TestDaemon::start().await;
    let project = daemon.create_project("settings").await;
    let id = project["id"].as_str().unwrap();
    assert_eq!(project["healthCheck"], Value::Null);
    let path = format!("/v1/projects/{id}");

    for (settings, field) in [
        (json!({"type": "grpc"}), "grpc"),
        (json!({"path": "healthz"}), "path"),
        (json!({"path": "/a\r\nX-Injected: 1"}), "path"),
        (json!({"path": "/a b"}), "path"),
        (json!({"statusMin": 99}), "statusMin"),
        (json!({"statusMax": 600}), "statusMax"),
        (json!({"statusMin": 400, "statusMax": 300}), "statusMin"),
        (json!({"port": 0}), "port"),
        (json!({"port": 65536}), "port"),
        (json!({"startPeriodSecs": -1}), "startPeriodSecs"),
        (json!({"timeoutSecs": 0}), "timeoutSecs"),
        (json!({"overallTimeoutSecs": 3601}), "overallTimeoutSecs"),
        (json!({"intervalMs": 50}), "intervalMs"),
        (json!({"type": "tcp", "path": "/"}), "path"),
        (json!({"type": "none", "port": 8080}), "port"),
        (json!({"retries": 3}), "retries"),
        (json!("http"), "healthCheck"),
        // Serde reads a struct from an array of its fields too; the API takes objects only.
        (json!([null, null]), "healthCheck"),
    ] {
        let res = daemon
            .patch(
                &path,
                &daemon.admin_token,
                json!({ "healthCheck": settings }),
            )
            .await;
        assert!(
            (400..500).contains(&res.status) && res.error_message().contains(field),
            "{settings}: {} {}",
            res.status,
            res.error_message()
        );
    }
    // Nothing of the refused settings was kept.
    let unchanged = daemon
        .get(&path, &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(unchanged["healthCheck"], Value::Null);

    // Set, shown, then reset with null; other fields of the body are left alone.
    let view = set_health_check(&daemon, id, json!({"type": "tcp", "port": 5432})).await;
    assert_eq!(view["healthCheck"], json!({"type": "tcp", "port": 5432}));
    let renamed = daemon
        .patch(&path, &daemon.admin_token, json!({"name": "settings2"}))
        .await
        .expect(200)
        .body;
    assert_eq!(renamed["healthCheck"], json!({"type": "tcp", "port": 5432}));
    let reset = set_health_check(&daemon, id, Value::Null).await;
    assert_eq!(reset["healthCheck"], Value::Null);
    let fetched = daemon
        .get(&path, &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(fetched["healthCheck"], Value::Null);

    // A read token cannot change them.
    let reader = daemon.token("read").await;
    let res = daemon
        .patch(&path, &reader, json!({"healthCheck": {"type": "none"}}))
        .await;
    assert_eq!(res.status, 403, "{}", res.error_message());
}

#[tokio::test]
async fn the_cli_shows_sets_and_resets_the_settings() {
    let daemon = TestDaemon::start().await;
    daemon.create_project("clihealth").await;
    let env = || {
        vec![
            ("CANTILA_URL", format!("http://{}", daemon.api)),
            ("CANTILA_TOKEN", daemon.admin_token.clone()),
        ]
    };
    let run =
        |list: &[&str]| crate::cli::cantila(list.iter().map(|s| s.to_string()).collect(), env());
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

    let out = run(&["health", "show", "clihealth"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("the default health check"),
        "{}",
        text(&out.stdout)
    );

    let out = run(&[
        "health",
        "set",
        "clihealth",
        "--path",
        "/healthz",
        "--status",
        "200-399",
        "--start-period",
        "5",
        "--overall-timeout",
        "90",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("path: /healthz"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["health", "show", "clihealth", "--json"]).await;
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown,
        json!({"type": "http", "path": "/healthz", "statusMin": 200, "statusMax": 399,
               "startPeriodSecs": 5, "overallTimeoutSecs": 90})
    );

    // The server's refusal, naming the field, is the command's error.
    let out = run(&[
        "health",
        "set",
        "clihealth",
        "--type",
        "tcp",
        "--path",
        "/x",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("`path`"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["health", "reset", "clihealth"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("the default health check"),
        "{}",
        text(&out.stdout)
    );
}

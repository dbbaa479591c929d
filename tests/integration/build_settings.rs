//! Per-project build settings on the real engine: a monorepo whose two apps deploy each
//! from its own root directory and answer over the edge; a Dockerfile path, a target and
//! build args that reach the build; watch paths that make a push outside them deploy
//! nothing (the delivery says why) while a push inside, or a manual deploy, deploys;
//! `cantila.toml` settings applied under the API's, an unknown key named with its line;
//! build secrets mounted by a BuildKit step and found in neither the log nor the image's
//! history, and refused with the reason when the classic builder is configured.

use serde_json::{json, Value};

use crate::{
    deploys::{send_webhook, Repo},
    support::TestDaemon,
};

/// A busybox app serving `www/` on 8080.
const WEB_DOCKERFILE: &str = "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";

/// Three stages: only `prod` serves; it writes the `GREETING_ARG` build arg into
/// `/www/arg.txt`. The last stage exits, so building without the target fails the release.
const API_DOCKERFILE: &str = "FROM busybox:latest AS dev\nRUN echo dev > /marker\n\
FROM busybox:latest AS prod\nARG GREETING_ARG=unset\nCOPY www /www\n\
RUN echo \"$GREETING_ARG\" > /www/arg.txt\nEXPOSE 8080\n\
CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n\
FROM busybox:latest\nCMD [\"sh\", \"-c\", \"echo built the wrong stage; exit 1\"]\n";

fn monorepo() -> Repo {
    Repo::new(&[
        ("apps/web/Dockerfile", WEB_DOCKERFILE),
        ("apps/web/www/index.html", "web app\n"),
        ("apps/api/docker/Dockerfile", API_DOCKERFILE),
        ("apps/api/www/index.html", "api app\n"),
        ("packages/shared/lib.txt", "shared v1\n"),
        ("README.md", "a monorepo\n"),
    ])
}

fn hostname(project: &str) -> String {
    format!("{project}.admin.test.local")
}

impl TestDaemon {
    async fn set_build(&self, project_id: &str, build: Value) -> Value {
        self.patch(
            &format!("/v1/projects/{project_id}"),
            &self.admin_token,
            json!({ "build": build }),
        )
        .await
        .expect(200)
        .body
    }

    async fn plan_of(&self, project_id: &str) -> crate::support::Res {
        self.post(
            "/v1/deploy/plan",
            &self.admin_token,
            json!({ "projectId": project_id }),
        )
        .await
    }

    async fn last_delivery(&self, project_id: &str) -> String {
        self.get(&format!("/v1/projects/{project_id}/git"), &self.admin_token)
            .await
            .expect(200)
            .body["lastDelivery"]["result"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn push(sha: &str) -> Value {
    json!({ "ref": "refs/heads/main", "after": sha, "deleted": false })
}

#[tokio::test]
async fn a_monorepo_deploys_each_app_from_its_root_with_its_dockerfile_target_and_args() {
    let daemon = TestDaemon::start().await;
    let repo = monorepo();
    let (web, _) = daemon.connected_project("web", &repo).await;
    let (api, _) = daemon.connected_project("api", &repo).await;
    daemon
        .set_build(&web, json!({ "rootDir": "apps/web" }))
        .await;
    daemon
        .set_build(
            &api,
            json!({
                "rootDir": "apps/api",
                "dockerfile": "docker/Dockerfile",
                "target": "prod",
                "buildArgs": { "GREETING_ARG": "hello from a build arg" }
            }),
        )
        .await;

    // The plan shows the settings and where each came from, executing nothing.
    let planned = daemon.plan_of(&api).await.expect(200).body;
    assert_eq!(planned["build"]["rootDir"], "apps/api", "{planned}");
    assert_eq!(planned["build"]["dockerfile"], "docker/Dockerfile");
    assert_eq!(planned["build"]["target"], "prod");
    assert_eq!(
        planned["build"]["buildArgs"],
        json!({ "GREETING_ARG": "hello from a build arg" })
    );
    assert_eq!(
        planned["build"]["sources"],
        json!({ "rootDir": "api", "dockerfile": "api", "target": "api", "buildArgs": "api", "watchPaths": "detection" })
    );
    assert_eq!(planned["port"], 8080, "the target stage's EXPOSE");

    for (project, name) in [(&web, "web"), (&api, "api")] {
        let deploy = daemon.deploy(project, None).await;
        assert_eq!(deploy["status"], "running", "{name}: {deploy}");
        assert_eq!(deploy["plan"]["build"]["rootDir"], format!("apps/{name}"));
    }
    assert_eq!(
        daemon.edge_get(&hostname("web"), "/").await,
        (200, "web app\n".to_owned())
    );
    assert_eq!(
        daemon.edge_get(&hostname("api"), "/").await,
        (200, "api app\n".to_owned())
    );
    assert_eq!(
        daemon.edge_get(&hostname("api"), "/arg.txt").await,
        (200, "hello from a build arg\n".to_owned())
    );

    // A settings change rebuilds the same commit: the new arg is in the new image.
    daemon
        .set_build(&api, json!({ "buildArgs": { "GREETING_ARG": "changed" } }))
        .await;
    let deploy = daemon.deploy(&api, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(
        daemon.edge_get(&hostname("api"), "/arg.txt").await,
        (200, "changed\n".to_owned())
    );

    // Settings that do not fit the tree fail the plan with the setting named.
    daemon.set_build(&api, json!({ "target": "missing" })).await;
    let res = daemon.plan_of(&api).await.expect(422);
    assert!(
        res.error_message().contains("`missing` is not a stage")
            && res.error_message().contains("build.target"),
        "{}",
        res.text
    );
    daemon
        .set_build(&api, json!({ "target": "prod", "rootDir": "apps/nothing" }))
        .await;
    let res = daemon.plan_of(&api).await.expect(422);
    assert!(
        res.error_message().contains("build.rootDir"),
        "{}",
        res.text
    );
}

#[tokio::test]
async fn a_push_outside_the_watch_paths_deploys_nothing_and_says_why() {
    let daemon = TestDaemon::start().await;
    let repo = monorepo();
    let (web, secret) = daemon.connected_project("watched", &repo).await;
    daemon
        .set_build(
            &web,
            json!({ "rootDir": "apps/web", "watchPaths": ["apps/web/**", "packages/**"] }),
        )
        .await;
    let first = daemon.deploy(&web, None).await;
    assert_eq!(first["status"], "running", "{first}");

    // Outside: the other app and the README.
    let outside = repo.commit(
        &[
            ("apps/api/www/index.html", "api v2\n"),
            ("README.md", "changed\n"),
        ],
        "api only",
    );
    let res = send_webhook(&daemon, &web, &secret, "push", "w1", push(&outside))
        .await
        .expect(200);
    assert_eq!(res.body["status"], "ignored", "{}", res.text);
    let reason = res.body["reason"].as_str().unwrap();
    assert!(
        reason.contains("apps/web/**")
            && reason.contains("apps/api/www/index.html")
            && reason.contains("README.md"),
        "{reason}"
    );
    let recorded = daemon.last_delivery(&web).await;
    assert!(
        recorded.starts_with("ignored: no changed file matches"),
        "{recorded}"
    );
    let deploys = daemon
        .get(&format!("/v1/projects/{web}/deploys"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(deploys["deploys"].as_array().unwrap().len(), 1, "{deploys}");

    // Inside: a shared package the app watches.
    let inside = repo.commit(&[("packages/shared/lib.txt", "shared v2\n")], "shared");
    let res = send_webhook(&daemon, &web, &secret, "push", "w2", push(&inside))
        .await
        .expect(202);
    assert_eq!(res.body["status"], "queued", "{}", res.text);
    let deploy = daemon
        .wait_deploy(res.body["deployId"].as_str().unwrap())
        .await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(deploy["commitSha"], inside);

    // A change of the app itself deploys and is served.
    let app = repo.commit(&[("apps/web/www/index.html", "web v2\n")], "web");
    let res = send_webhook(&daemon, &web, &secret, "push", "w3", push(&app))
        .await
        .expect(202);
    let deploy = daemon
        .wait_deploy(res.body["deployId"].as_str().unwrap())
        .await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(
        daemon.edge_get(&hostname("watched"), "/").await,
        (200, "web v2\n".to_owned())
    );

    // A manual deploy always deploys, watched paths or not.
    repo.commit(&[("docs/notes.md", "notes\n")], "docs");
    let manual = daemon.deploy(&web, None).await;
    assert_eq!(manual["status"], "running", "{manual}");

    // Watch paths may come from the root directory's cantila.toml; a change of the file
    // itself deploys.
    daemon.set_build(&web, json!({ "watchPaths": [] })).await;
    let settings = repo.commit(
        &[(
            "apps/web/cantila.toml",
            "[build]\nwatch_paths = [\"apps/web/www/**\"]\n",
        )],
        "watch from the file",
    );
    let res = send_webhook(&daemon, &web, &secret, "push", "w4", push(&settings))
        .await
        .expect(202);
    let deploy = daemon
        .wait_deploy(res.body["deployId"].as_str().unwrap())
        .await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(deploy["plan"]["build"]["sources"]["watchPaths"], "file");
    let outside = repo.commit(
        &[("packages/shared/lib.txt", "shared v3\n")],
        "shared again",
    );
    let res = send_webhook(&daemon, &web, &secret, "push", "w5", push(&outside))
        .await
        .expect(200);
    assert_eq!(res.body["status"], "ignored", "{}", res.text);
    let reason = res.body["reason"].as_str().unwrap();
    assert!(
        reason.contains("settings file") && reason.contains("apps/web/www/**"),
        "{reason}"
    );
}

#[tokio::test]
async fn cantila_toml_settings_apply_under_the_api_and_unknown_keys_are_named() {
    let daemon = TestDaemon::start().await;
    let repo = monorepo();
    repo.commit(
        &[(
            "cantila.toml",
            "# build settings\n[build]\nroot_dir = \"apps/api\"\ndockerfile = \"docker/Dockerfile\"\ntarget = \"prod\"\nbuild_args = { GREETING_ARG = \"from the file\" }\n\n[health]\npath = \"/\"\n",
        )],
        "settings file",
    );
    let (project, _) = daemon.connected_project("filed", &repo).await;
    let planned = daemon.plan_of(&project).await.expect(200).body;
    assert_eq!(planned["build"]["configFile"], "cantila.toml", "{planned}");
    assert_eq!(
        planned["build"]["sources"],
        json!({ "rootDir": "file", "dockerfile": "file", "target": "file", "buildArgs": "file", "watchPaths": "detection" })
    );
    let deploy = daemon.deploy(&project, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(
        daemon.edge_get(&hostname("filed"), "/arg.txt").await,
        (200, "from the file\n".to_owned())
    );

    // The API wins over the file, setting by setting.
    daemon
        .set_build(
            &project,
            json!({ "buildArgs": { "GREETING_ARG": "from the api" } }),
        )
        .await;
    let planned = daemon.plan_of(&project).await.expect(200).body;
    assert_eq!(planned["build"]["sources"]["buildArgs"], "api");
    assert_eq!(planned["build"]["sources"]["target"], "file");
    let deploy = daemon.deploy(&project, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    assert_eq!(
        daemon.edge_get(&hostname("filed"), "/arg.txt").await,
        (200, "from the api\n".to_owned())
    );

    // An unknown key is named with its line, in the plan and in the deploy.
    repo.commit(
        &[(
            "cantila.toml",
            "[build]\nroot_dir = \"apps/api\"\ntarget = \"prod\"\ncontext = \"apps\"\n",
        )],
        "typo",
    );
    let res = daemon.plan_of(&project).await.expect(422);
    let message = res.error_message();
    assert!(
        message.contains("cantila.toml line 4") && message.contains("`context`"),
        "{message}"
    );
    let failed = daemon.deploy(&project, None).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("`context`"),
        "{failed}"
    );
    // The release that was serving still serves.
    assert_eq!(
        daemon.edge_get(&hostname("filed"), "/arg.txt").await,
        (200, "from the api\n".to_owned())
    );
}

/// A build secret through the whole API path: set on the project, mounted by a
/// `RUN --mount=type=secret` step of a BuildKit build (which serves its digest, proving it
/// read it), and found neither in the deploy's log nor in the image's history.
#[tokio::test]
async fn build_secrets_reach_a_buildkit_step_and_never_the_log_or_the_image() {
    let daemon = TestDaemon::start().await;
    let value = format!("build-secret-{}", cantila::ids::random_base62(12));
    let dockerfile = "FROM busybox:latest\nCOPY www /www\n\
        RUN --mount=type=secret,id=NPM_TOKEN sha256sum /run/secrets/NPM_TOKEN | cut -d' ' -f1 > /www/secret.sha256 \
        && echo \"the token is $(cat /run/secrets/NPM_TOKEN)\"\n\
        EXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";
    let repo = Repo::new(&[
        ("apps/web/Dockerfile", dockerfile),
        ("apps/web/www/index.html", "web app\n"),
    ]);
    let (project, _) = daemon.connected_project("sealed", &repo).await;
    daemon
        .set_build(&project, json!({ "rootDir": "apps/web" }))
        .await;
    daemon
        .call(
            reqwest::Method::PUT,
            &format!("/v1/projects/{project}/build-secrets/NPM_TOKEN"),
            Some(&daemon.admin_token),
            Some(json!({ "value": value })),
        )
        .await
        .expect(200);
    let planned = daemon.plan_of(&project).await.expect(200);
    assert_eq!(planned.body["build"]["secrets"], json!(["NPM_TOKEN"]));
    assert!(!planned.text.contains(&value));

    let deploy = daemon.deploy(&project, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(value.as_bytes()))
    };
    assert_eq!(
        daemon.edge_get(&hostname("sealed"), "/secret.sha256").await,
        (200, format!("{digest}\n")),
        "the step read the secret"
    );
    let events = crate::deploys::events_text(&daemon, deploy["id"].as_str().unwrap()).await;
    assert!(
        events.contains("the token is"),
        "the step's output is logged: {events}"
    );
    assert!(
        !events.contains(&value),
        "the secret's value is never logged: {events}"
    );
    let image = deploy["image"].as_str().expect("the deploy's image");
    let history = std::process::Command::new("docker")
        .args(["history", "--no-trunc", "--format", "{{.CreatedBy}}", image])
        .output()
        .expect("docker history");
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains("/run/secrets/NPM_TOKEN"), "{history}");
    assert!(
        !history.contains(&value),
        "the secret is in the image's history: {history}"
    );
}

/// With the classic builder configured, a project with build secrets fails its build with
/// the reason, before building with an empty secret, and never logs the value.
#[tokio::test]
async fn build_secrets_fail_a_classic_build_with_the_reason_and_never_reach_the_log() {
    let daemon = TestDaemon::start_with(|config| {
        config.build.builder = cantila::config::BuilderKind::Classic;
    })
    .await;
    let repo = monorepo();
    let (project, _) = daemon.connected_project("sealed", &repo).await;
    daemon
        .set_build(&project, json!({ "rootDir": "apps/web" }))
        .await;
    let value = "build-secret-value-8812";
    daemon
        .call(
            reqwest::Method::PUT,
            &format!("/v1/projects/{project}/build-secrets/NPM_TOKEN"),
            Some(&daemon.admin_token),
            Some(json!({ "value": value })),
        )
        .await
        .expect(200);
    let deploy = daemon.deploy(&project, None).await;
    assert_eq!(deploy["status"], "failed", "{deploy}");
    let error = deploy["error"].as_str().unwrap();
    assert!(
        error.contains("NPM_TOKEN") && error.contains("BuildKit") && error.contains("classic"),
        "{error}"
    );
    let events = crate::deploys::events_text(&daemon, deploy["id"].as_str().unwrap()).await;
    assert!(
        !events.contains(value),
        "the secret's value is never logged"
    );
}

/// Runs the real binary against the daemon with `stdin` as its input.
async fn cantila_with_stdin(
    daemon: &TestDaemon,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    use std::io::Write;
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let url = format!("http://{}", daemon.api);
    let token = daemon.admin_token.clone();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cantila"))
            .args(&args)
            .env_remove("CANTILA_CONFIG")
            .env_remove("CANTILA_DATA_DIR")
            .env("CANTILA_URL", url)
            .env("CANTILA_TOKEN", token)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run cantila");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().expect("cantila ends")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_cli_shows_and_sets_build_settings_and_secrets() {
    let daemon = TestDaemon::start().await;
    daemon.create_project("clibuild").await;
    let out = cantila_with_stdin(
        &daemon,
        &[
            "build",
            "set",
            "clibuild",
            "--root-dir",
            "apps/web",
            "--dockerfile",
            "docker/Dockerfile",
            "--target",
            "prod",
            "--build-arg",
            "NODE_ENV=production",
            "--watch",
            "apps/web/**",
            "--watch",
            "packages/**",
            "--json",
        ],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown,
        json!({
            "rootDir": "apps/web",
            "dockerfile": "docker/Dockerfile",
            "target": "prod",
            "buildArgs": { "NODE_ENV": "production" },
            "watchPaths": ["apps/web/**", "packages/**"]
        })
    );
    let out = cantila_with_stdin(
        &daemon,
        &["build", "set", "clibuild", "--target", "", "--clear-watch"],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cantila_with_stdin(&daemon, &["build", "show", "clibuild"], "").await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = |field: &str| {
        text.lines()
            .find(|line| line.starts_with(field))
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(
        line("rootDir").as_deref(),
        Some("rootDir apps/web"),
        "{text}"
    );
    assert_eq!(line("target").as_deref(), Some("target -"), "{text}");
    assert_eq!(
        line("watchPaths").as_deref(),
        Some("watchPaths []"),
        "{text}"
    );
    let out = cantila_with_stdin(
        &daemon,
        &["build", "set", "clibuild", "--root-dir", "../up"],
        "",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let error = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        error.contains("build.rootDir") && error.contains("422"),
        "{error}"
    );

    let value = "cli-secret-value-5150";
    let out = cantila_with_stdin(
        &daemon,
        &["build-secrets", "set", "clibuild", "NPM_TOKEN"],
        &format!("{value}\n"),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(value));
    let out = cantila_with_stdin(&daemon, &["build-secrets", "list", "clibuild"], "").await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("NPM_TOKEN") && !text.contains(value),
        "{text}"
    );
    let out = cantila_with_stdin(
        &daemon,
        &["build-secrets", "remove", "clibuild", "NPM_TOKEN"],
        "",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cantila_with_stdin(
        &daemon,
        &["build-secrets", "list", "clibuild", "--json"],
        "",
    )
    .await;
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["secrets"], json!([]));
}

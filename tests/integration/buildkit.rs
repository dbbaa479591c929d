//! BuildKit builds on the real engine: a cache mount whose files one deploy leaves for the
//! next, a secret mount readable in its step and nowhere else (not the log, not the
//! image's history nor its files), a stage of a multi-stage Dockerfile as the target,
//! labels as build options, and the classic builder when the configuration asks for it.

use std::collections::HashMap;

use cantila::{
    config::BuilderKind,
    runtime::{docker::Engine, BuildRequest, BuildSecret, RuntimeError},
};
use sha2::{Digest, Sha256};

use crate::{
    deploys::{events_text, Repo},
    docker::context,
    support::{docker, TestDaemon, TestDir},
};

/// A build request for `files`, labelled as the test installation's (so its drop removes
/// the image).
fn request(installation: &TestDir, name: &str, files: &[(&str, &str, u32)]) -> BuildRequest {
    BuildRequest {
        context_tar: context(files),
        dockerfile: "Dockerfile".to_owned(),
        tag: format!("cantila-test/{name}:{}", installation.installation()),
        labels: HashMap::from([
            ("cantila.kind".to_owned(), "test".to_owned()),
            (
                "cantila.installation".to_owned(),
                installation.installation().to_owned(),
            ),
        ]),
        memory_bytes: None,
        cpus: None,
        network: None,
        target: None,
        build_args: HashMap::new(),
        secrets: Vec::new(),
        builder: BuilderKind::Auto,
    }
}

/// What `command` prints in a throwaway container of `image`.
fn run_in(image: &str, command: &str) -> String {
    docker(None, &["run", "--rm", image, "sh", "-c", command])
        .expect("docker run")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_secret_mount_is_readable_in_its_step_and_absent_from_log_history_and_files() {
    let engine = Engine::connect().await.expect("a Docker engine");
    let installation = TestDir::new();
    let secret = format!("s3cret-{}", cantila::ids::random_base62(16));
    // The step proves it read the secret by its digest; it also prints the secret, which
    // the log must show masked. A secret the request does not hold (`absent`) is simply
    // not mounted, as BuildKit does for an optional one.
    // (BuildKit's cache key of a step holds no secret, so the step is made this run's own.)
    let dockerfile = format!(
        "FROM busybox:latest\n\
        RUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -d' ' -f1 > /token.sha256 \
        && echo \"the token is $(cat /run/secrets/token)\" && echo {}\n\
        RUN --mount=type=secret,id=absent cat /run/secrets/absent 2>/dev/null || echo no absent secret\n\
        CMD [\"cat\", \"/token.sha256\"]\n",
        installation.installation()
    );
    let mut build = request(
        &installation,
        "secret",
        &[("Dockerfile", &dockerfile, 0o644)],
    );
    build.secrets = vec![BuildSecret {
        id: "token".to_owned(),
        value: secret.clone().into_bytes(),
    }];
    let tag = build.tag.clone();
    let mut lines = Vec::new();
    let image = engine
        .build(build, |line| lines.push(line.to_owned()))
        .await
        .unwrap_or_else(|err| panic!("build: {err}; {lines:#?}"));
    let log = lines.join("\n");

    assert!(log.contains("the token is ****"), "{log}");
    assert!(log.contains("no absent secret"), "{log}");
    assert!(
        !log.contains(&secret),
        "the secret is in the build's output: {log}"
    );
    assert!(
        !log.contains("building with the classic builder"),
        "BuildKit built it: {log}"
    );
    let digest = hex::encode(Sha256::digest(secret.as_bytes()));
    assert_eq!(run_in(&tag, "cat /token.sha256"), digest);
    assert_eq!(run_in(&tag, "ls /run/secrets 2>/dev/null | wc -l"), "0");

    let history = docker(None, &["history", "--no-trunc", &tag]).unwrap();
    assert!(
        history.contains("sha256sum /run/secrets/token"),
        "{history}"
    );
    assert!(!history.contains(&secret), "{history}");
    // Cantila's labels are build options, not a LABEL step of the Dockerfile's.
    assert!(!history.contains("cantila.installation"), "{history}");
    let labels = docker(
        None,
        &[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Labels}}",
            &tag,
        ],
    )
    .unwrap();
    assert!(labels.contains(installation.installation()), "{labels}");
    // Every byte of the image (its layers, its configuration and history) as `docker save`
    // writes them: the secret is in none.
    let saved = std::process::Command::new("docker")
        .args(["save", &image])
        .output()
        .expect("docker save");
    assert!(saved.status.success());
    assert!(
        saved.stdout.len() > 100_000,
        "the saved image holds the busybox layer"
    );
    assert!(
        !saved
            .stdout
            .windows(secret.len())
            .any(|window| window == secret.as_bytes()),
        "the secret is in the image's files"
    );
    // The digest is: the image holds what the step made of the secret.
    let digest_found = saved
        .stdout
        .windows(digest.len())
        .any(|window| window == digest.as_bytes());
    assert!(digest_found, "the step's file is in the image");
}

#[tokio::test]
async fn a_target_stage_builds_and_runs_and_a_failed_step_fails_the_build() {
    let engine = Engine::connect().await.expect("a Docker engine");
    let installation = TestDir::new();
    // The last stage fails: building the target `app` never runs it.
    let dockerfile = "FROM busybox:latest AS build\n\
        RUN echo built in the build stage > /artifact\n\
        FROM busybox:latest AS app\n\
        COPY --from=build /artifact /artifact\n\
        CMD [\"cat\", \"/artifact\"]\n\
        FROM busybox:latest AS broken\n\
        RUN echo the broken stage ran && exit 9\n";
    let mut build = request(
        &installation,
        "target",
        &[("Dockerfile", dockerfile, 0o644)],
    );
    build.target = Some("app".to_owned());
    let tag = build.tag.clone();
    let mut lines = Vec::new();
    engine
        .build(build, |line| lines.push(line.to_owned()))
        .await
        .unwrap_or_else(|err| panic!("build: {err}; {lines:#?}"));
    assert_eq!(
        docker(None, &["run", "--rm", &tag]).unwrap().trim(),
        "built in the build stage"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("[app 2/2] COPY --from=build")),
        "{lines:#?}"
    );

    // Without a target the last stage is built, and its failing step fails the build with
    // the step's output and the builder's error in the log.
    let mut lines = Vec::new();
    let failed = engine
        .build(
            request(
                &installation,
                "broken",
                &[("Dockerfile", dockerfile, 0o644)],
            ),
            |line| lines.push(line.to_owned()),
        )
        .await;
    match failed {
        Err(RuntimeError::BuildFailed(message)) => {
            assert!(message.contains("exit code: 9"), "{message}")
        }
        other => panic!("expected BuildFailed, got {other:?}; {lines:#?}"),
    }
    assert!(
        lines
            .iter()
            .any(|line| line.ends_with(" the broken stage ran")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn a_cache_mount_keeps_its_files_from_one_deploy_to_the_next() {
    let daemon = TestDaemon::start().await;
    // A cache id of this run's own, so no other build shares the cache.
    let cache = format!("cantila-test-{}", cantila::ids::random_base62(12));
    let dockerfile = format!(
        "FROM busybox:latest\n\
         COPY www /www\n\
         RUN --mount=type=cache,id={cache},target=/cache \
         (cat /cache/seen 2>/dev/null || echo nothing cached) > /www/cache.txt \
         && echo \"built $(cat /www/index.html)\" >> /cache/seen\n\
         EXPOSE 8080\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let repo = Repo::new(&[("Dockerfile", &dockerfile), ("www/index.html", "v1\n")]);
    let (project_id, _) = daemon.connected_project("cached", &repo).await;
    let project = daemon
        .get(&format!("/v1/projects/{project_id}"), &daemon.admin_token)
        .await
        .expect(200)
        .body;
    let host = project["hostname"].as_str().unwrap().to_owned();
    let first = daemon.deploy(&project_id, None).await;
    assert_eq!(first["status"], "running", "{first}");
    assert_eq!(
        daemon.edge_get(&host, "/cache.txt").await,
        (200, "nothing cached\n".to_owned())
    );

    // A one-line change: the RUN step runs again, and finds what the first one left.
    repo.commit(&[("www/index.html", "v2\n")], "one line");
    let second = daemon.deploy(&project_id, None).await;
    assert_eq!(second["status"], "running", "{second}");
    assert_eq!(
        daemon.edge_get(&host, "/cache.txt").await,
        (200, "built v1\n".to_owned())
    );
    let log = events_text(&daemon, second["id"].as_str().unwrap()).await;
    assert!(
        log.contains("CACHED"),
        "the base image came from the build cache: {log}"
    );
    assert!(log.contains("RUN --mount=type=cache"), "{log}");
    super::deploys::cleanup(&project_id).await;
}

#[tokio::test]
async fn the_classic_builder_when_configured_says_so_in_the_log() {
    let daemon = TestDaemon::start_with(|c| c.build.builder = BuilderKind::Classic).await;
    let repo = Repo::busybox("classic\n");
    let (project_id, _) = daemon.connected_project("classic", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let log = events_text(&daemon, deploy["id"].as_str().unwrap()).await;
    assert!(
        log.contains(
            "building with the classic builder: [build] builder = \\\"classic\\\" in the configuration"
        ) || log.contains(
            "building with the classic builder: [build] builder = \"classic\" in the configuration"
        ),
        "{log}"
    );
    // The classic builder's own output.
    assert!(log.contains("Step 1/"), "{log}");

    // A Dockerfile that needs BuildKit fails there, with the classic builder's reason.
    repo.commit(
        &[(
            "Dockerfile",
            "FROM busybox:latest\nRUN --mount=type=cache,target=/cache true\n",
        )],
        "needs BuildKit",
    );
    let failed = daemon.deploy(&project_id, None).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("BuildKit"),
        "{failed}"
    );
    super::deploys::cleanup(&project_id).await;
}

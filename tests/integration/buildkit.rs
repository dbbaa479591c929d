//! BuildKit builds on the real engine: a cache mount whose files one deploy leaves for the
//! next, a secret mount readable in its step and nowhere else (not the log, not the
//! image's history nor its files), a stage of a multi-stage Dockerfile as the target,
//! labels as build options, and the classic builder when the configuration asks for it.

use std::collections::HashMap;

use cantila::{
    config::BuilderKind,
    runtime::{docker::Engine, BuildRequest, BuildSecret, RegistryCredential, RuntimeError},
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
        registry_credentials: Vec::new(),
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

/// A registry of this test's own (Debian's `docker-registry`, the CNCF distribution
/// registry) on a free loopback port, with one htpasswd login; stopped on drop.
struct PrivateRegistry {
    process: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl PrivateRegistry {
    async fn start(username: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = std::process::Command::new("htpasswd")
            .args(["-Bbn", username, password])
            .output()
            .expect("htpasswd (apache2-utils)");
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\nhttp:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: cantila-test\n    path: {root}/htpasswd\n",
            root = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let process = std::process::Command::new("docker-registry")
            .args([
                "serve",
                &dir.path().join("config.yml").display().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's docker-registry package)");
        let registry = Self {
            process,
            address,
            _dir: dir,
        };
        let url = format!("http://{}/v2/", registry.address);
        crate::support::wait_until(
            std::time::Duration::from_secs(20),
            "the registry answers",
            || {
                let url = url.clone();
                async move { reqwest::get(&url).await.is_ok_and(|r| r.status() == 401) }
            },
        )
        .await;
        registry
    }
}

#[tokio::test]
async fn a_private_base_image_builds_with_the_registrys_login_and_not_without() {
    let engine = Engine::connect().await.expect("a Docker engine");
    let installation = TestDir::new();
    let password = format!("pw-{}", cantila::ids::random_base62(12));
    let registry = PrivateRegistry::start("builder", &password).await;
    // Push busybox there as a private image (with a docker CLI config of the test's own),
    // then drop the local tag, so a build must pull it from the registry.
    let cli_config = tempfile::tempdir().unwrap();
    let config = cli_config.path().display().to_string();
    let base = format!("{}/private/base:latest", registry.address);
    docker(None, &["tag", "busybox:latest", &base]).unwrap();
    let login = std::process::Command::new("docker")
        .args([
            "--config",
            &config,
            "login",
            "--username",
            "builder",
            "--password-stdin",
        ])
        .arg(&registry.address)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(password.as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(login.success(), "docker login to the test registry");
    docker(None, &["--config", &config, "push", &base]).unwrap();
    docker(None, &["rmi", &base]).unwrap();

    let dockerfile = format!(
        "FROM {base}\nRUN echo built on the private base {}\n",
        installation.installation()
    );
    let files = [("Dockerfile", dockerfile.as_str(), 0o644)];
    let mut lines = Vec::new();
    let anonymous = engine
        .build(request(&installation, "private-anon", &files), |line| {
            lines.push(line.to_owned())
        })
        .await;
    assert!(
        matches!(anonymous, Err(RuntimeError::BuildFailed(_))),
        "an anonymous pull of a private image must fail: {anonymous:?}; {lines:#?}"
    );

    let mut build = request(&installation, "private", &files);
    build.registry_credentials = vec![RegistryCredential {
        server: registry.address.clone(),
        username: "builder".to_owned(),
        password: password.clone(),
    }];
    let mut lines = Vec::new();
    engine
        .build(build, |line| lines.push(line.to_owned()))
        .await
        .unwrap_or_else(|err| panic!("build with the login: {err}; {lines:#?}"));
    assert!(
        lines
            .iter()
            .any(|line| line.contains("built on the private base")),
        "{lines:#?}"
    );
    assert!(!lines.join("\n").contains(&password));
    let _ = docker(None, &["rmi", &base]);
}

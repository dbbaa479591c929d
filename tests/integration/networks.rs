//! Tenant isolation on the network, on the real engine: each project (and each preview)
//! has a Docker network of its own. From inside one project's containers (instances, a
//! build's RUN step, the release command) no other project's instance answers, whichever
//! account owns it, while the project's own containers reach each other and the edge
//! serves every project. (A BuildKit build's RUN step runs on the engine's default bridge,
//! which reaches no project at all; the classic builder's joins its project's network.) Also: networks go with their project or preview, and an instance
//! left on the shared network of earlier versions moves to its own network under load
//! without a failed request.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use cantila::{
    config::BuilderKind,
    deploy::ReleaseTarget,
    names::Scope,
    networks,
    runtime::{docker::Engine, ContainerSummary},
};
use serde_json::{json, Value};

use crate::{
    deploys::{events_text, Repo},
    support::TestDaemon,
};

/// How long a probe waits for an answer: a connection another network's rules drop
/// never completes, so the probe ends by this timeout.
const PROBE_SECS: &str = "3";

/// A shell function that prints `yes` when `$1` answers HTTP on port `$2` (8080 when not
/// given) within the timeout and `no` otherwise; every probe in these tests runs it,
/// inside a container. It tries twice, so one answer slowed past the timeout on a busy
/// machine does not read as a refusal; a dropped connection fails both tries.
fn probe_function() -> String {
    format!(
        "probe() {{ for attempt in 1 2; do if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout {PROBE_SECS} nc \"$1\" \"${{2:-8080}}\" 2>/dev/null | grep -q HTTP/; then echo yes; return; fi; done; echo no; }}"
    )
}

/// Creates a project of the token's account connected to `repo`, deploys it and waits
/// until it serves; returns the project's view.
pub async fn deployed(daemon: &TestDaemon, token: &str, name: &str, repo: &Repo) -> Value {
    let project = daemon
        .post("/v1/projects", token, json!({ "name": name }))
        .await
        .expect(201)
        .body;
    let id = project["id"].as_str().unwrap();
    daemon
        .post(
            &format!("/v1/projects/{id}/git"),
            token,
            json!({ "repo": repo.path().display().to_string(), "branch": "main" }),
        )
        .await
        .expect(200);
    let deploy = deploy_as(daemon, token, id).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    project
}

/// Deploys the project's branch head with the token and waits until the deploy is final.
pub async fn deploy_as(daemon: &TestDaemon, token: &str, project_id: &str) -> Value {
    let created = daemon
        .post(
            &format!("/v1/projects/{project_id}/deploy"),
            token,
            json!({}),
        )
        .await
        .expect(202)
        .body;
    wait_deploy_as(daemon, token, created["deployId"].as_str().unwrap()).await
}

async fn wait_deploy_as(daemon: &TestDaemon, token: &str, deploy_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let deploy = daemon
            .get(&format!("/v1/deploys/{deploy_id}"), token)
            .await
            .expect(200)
            .body;
        if ["running", "failed", "canceled", "superseded"]
            .contains(&deploy["status"].as_str().unwrap())
        {
            return deploy;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deploy {deploy_id} did not finish within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The running web instances of a project's production, or of one preview.
pub async fn web_instances(project_id: &str, preview: Option<&str>) -> Vec<ContainerSummary> {
    let engine = Engine::connect().await.unwrap();
    engine
        .containers(&[("cantila.project", project_id), ("cantila.kind", "web")])
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.state == "running")
        .filter(|c| c.labels.get("cantila.preview").map(String::as_str) == preview)
        .collect()
}

/// The one address of an instance, after checking it is attached to exactly the network
/// of its release target.
pub fn only_address(daemon: &TestDaemon, container: &ContainerSummary) -> IpAddr {
    let project_id = &container.labels["cantila.project"];
    let target = match container.labels.get("cantila.preview") {
        Some(preview) => ReleaseTarget::Preview(preview.clone()),
        None => ReleaseTarget::Production,
    };
    let own = networks::name_of(&daemon.config.deploy, project_id, &target);
    let attached: Vec<&String> = container.addresses.keys().collect();
    assert_eq!(
        attached,
        vec![&own],
        "{} is on its network only",
        container.name
    );
    container.addresses[&own]
}

/// Whether `target` answers HTTP on 8080 to a connection opened from inside `from`.
pub async fn reaches(from: &ContainerSummary, target: String) -> bool {
    reaches_port(from, target, 8080).await
}

/// Whether `target` answers HTTP on `port` to a connection opened from inside `from`.
pub async fn reaches_port(from: &ContainerSummary, target: String, port: u16) -> bool {
    let script = format!("{}; probe \"$1\" \"$2\"", probe_function());
    let port = port.to_string();
    let output = tokio::process::Command::new("docker")
        .args([
            "exec", &from.id, "sh", "-c", &script, "probe", &target, &port,
        ])
        .output()
        .await
        .expect("docker exec");
    assert!(
        output.status.success(),
        "docker exec in {}: {}",
        from.name,
        String::from_utf8_lossy(&output.stderr)
    );
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("unexpected probe output {other:?}"),
    }
}

/// Waits until no network carries `label=value`; false when one still does after 30 s.
async fn networks_gone(label: &str, value: &str) -> bool {
    let engine = Engine::connect().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if engine.networks(&[(label, value)]).await.unwrap().is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Removes networks a test made by name (an old-style shared network carries no
/// installation label, so the data dir's own cleanup does not know it) when the test ends,
/// passed or failed. Everything labelled with the installation goes with its `TestDir`.
pub struct NamedNetworks(Vec<String>);

impl Drop for NamedNetworks {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm"])
                .args(&self.0)
                .output();
        }
    }
}

pub fn id_of(project: &Value) -> &str {
    project["id"].as_str().unwrap()
}

#[tokio::test]
async fn containers_reach_their_own_project_and_no_other_whatever_the_account() {
    // Both accounts build from repositories on this disk, which the operator allows.
    let daemon = TestDaemon::start_with(|c| {
        c.git.local_repo_accounts = Some(vec!["admin".into(), "rival".into()]);
    })
    .await;
    let admin = daemon.admin_token.clone();
    let rival = daemon.other_account_token("rival", Scope::Deploy);
    let repos = ["first\n", "second\n", "theirs\n"].map(Repo::busybox);
    let first = deployed(&daemon, &admin, "first", &repos[0]).await;
    let second = deployed(&daemon, &admin, "second", &repos[1]).await;
    let theirs = deployed(&daemon, &rival, "theirs", &repos[2]).await;
    // Two instances of the first project, to see that a project's containers reach each
    // other; and a preview of it, a release target (and network) of its own.
    daemon
        .post(
            &format!("/v1/projects/{}/scale", id_of(&first)),
            &admin,
            json!({ "instances": 2 }),
        )
        .await
        .expect(200);
    let preview = daemon
        .post(
            &format!("/v1/projects/{}/previews", id_of(&first)),
            &admin,
            json!({ "branch": "main" }),
        )
        .await
        .expect(201)
        .body;
    let preview_id = preview["id"].as_str().unwrap();
    let preview_deploy =
        wait_deploy_as(&daemon, &admin, preview["deployId"].as_str().unwrap()).await;
    assert_eq!(preview_deploy["status"], "running", "{preview_deploy}");

    let first_instances = web_instances(id_of(&first), None).await;
    assert_eq!(first_instances.len(), 2);
    let second_instance = &web_instances(id_of(&second), None).await[0];
    let their_instance = &web_instances(id_of(&theirs), None).await[0];
    let preview_instance = &web_instances(id_of(&first), Some(preview_id)).await[0];
    let address = |c: &ContainerSummary| only_address(&daemon, c).to_string();
    let all = [
        &first_instances[0],
        &first_instances[1],
        second_instance,
        their_instance,
        preview_instance,
    ];

    let from_first = &first_instances[0];
    let (own, same_account, other_account, own_preview, back_from_theirs, back_from_preview) = tokio::join!(
        reaches(from_first, address(&first_instances[1])),
        reaches(from_first, address(second_instance)),
        reaches(from_first, address(their_instance)),
        reaches(from_first, address(preview_instance)),
        reaches(their_instance, address(from_first)),
        reaches(preview_instance, address(from_first)),
    );
    assert!(own, "an instance reaches its own project's other instance");
    assert!(
        !same_account,
        "the same account's other project is unreachable"
    );
    assert!(!other_account, "another account's project is unreachable");
    assert!(
        !own_preview,
        "the project's preview is unreachable from production"
    );
    assert!(!back_from_theirs, "another account cannot reach in");
    assert!(!back_from_preview, "a preview cannot reach production");
    let subnets: HashSet<String> = all
        .iter()
        .map(|c| address(c).rsplit_once('.').unwrap().0.to_owned())
        .collect();
    assert_eq!(
        subnets.len(),
        4,
        "one subnet per release target: {subnets:?}"
    );

    // The edge, on the host, still reaches every one of them.
    for (host, body) in [
        (&first["hostname"], "first\n"),
        (&second["hostname"], "second\n"),
        (&theirs["hostname"], "theirs\n"),
        (&preview["hostname"], "first\n"),
    ] {
        let host = host.as_str().unwrap();
        assert_eq!(
            daemon.edge_get(host, "/").await,
            (200, body.to_owned()),
            "{host}"
        );
    }

    // A removed preview's network goes with it, and a deleted project's networks.
    daemon
        .delete(
            &format!("/v1/projects/{}/previews/{preview_id}", id_of(&first)),
            &admin,
        )
        .await
        .expect(204);
    assert!(networks_gone("cantila.preview", preview_id).await);
    for (project, token) in [(&first, &admin), (&second, &admin), (&theirs, &rival)] {
        daemon
            .delete(&format!("/v1/projects/{}", id_of(project)), token)
            .await
            .expect(204);
        assert!(
            networks_gone("cantila.project", id_of(project)).await,
            "{project}"
        );
    }
}

#[tokio::test]
async fn builds_and_release_commands_reach_their_own_project_and_no_other() {
    // BuildKit runs RUN steps on the engine's default bridge (it cannot join a network of
    // ours): they reach that bridge and no project, their own included.
    probe_from_a_build_and_a_release(BuilderKind::Auto, "own=no victim=no bridge=yes").await;
}

#[tokio::test]
async fn the_classic_builders_steps_join_their_own_projects_network() {
    probe_from_a_build_and_a_release(BuilderKind::Classic, "own=yes victim=no bridge=no").await;
}

/// Deploys a victim (another account's project) and a prober, then a release of the
/// prober that probes the victim, itself and a server on the engine's default bridge from
/// a RUN step (into a file it serves; `from_build` is what it must say) and from its
/// release command (which runs on the project's network).
async fn probe_from_a_build_and_a_release(builder: BuilderKind, from_build: &str) {
    // Both accounts build from repositories on this disk, which the operator allows.
    let daemon = TestDaemon::start_with(|c| {
        c.git.local_repo_accounts = Some(vec!["admin".into(), "victim".into()]);
        c.build.builder = builder;
    })
    .await;
    let admin = daemon.admin_token.clone();
    let rival = daemon.other_account_token("victim", Scope::Deploy);
    let victim_repo = Repo::busybox("victim\n");
    let victim = deployed(&daemon, &rival, "victim", &victim_repo).await;
    let repo = Repo::busybox("prober\n");
    let prober = deployed(&daemon, &admin, "prober", &repo).await;
    let victim_address = only_address(&daemon, &web_instances(id_of(&victim), None).await[0]);
    let own_address = only_address(&daemon, &web_instances(id_of(&prober), None).await[0]);
    // A server on the default bridge, labelled as the test installation's (its drop
    // removes it): a probe that reaches it shows the step's network works, so its "no"
    // for a project is isolation, not a broken probe.
    let installation = daemon.dir.as_ref().unwrap().installation().to_owned();
    let bridge_server = docker(&[
        "run",
        "-d",
        "--label",
        &format!("cantila.installation={installation}"),
        "busybox:latest",
        "sh",
        "-c",
        "mkdir /www && echo bridge > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    let bridge_address = docker(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        &bridge_server,
    ]);

    // The next release probes all three addresses from a RUN step (into a file it serves)
    // and from its release command (into the deploy log); its current instance is its own.
    let probes = format!(
        "{}; echo own=$(probe {own_address}) victim=$(probe {victim_address}) bridge=$(probe {bridge_address})",
        probe_function()
    );
    let dockerfile = format!(
        "FROM busybox:latest\nCOPY www /www\nRUN ({probes}) > /www/build.txt\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let procfile = format!("web: httpd -f -p 8080 -h /www\nrelease: {probes}\n");
    repo.commit(
        &[("Dockerfile", &dockerfile), ("Procfile", &procfile)],
        "probe the neighbours",
    );
    let deploy = deploy_as(&daemon, &admin, id_of(&prober)).await;
    assert_eq!(deploy["status"], "running", "{deploy}");

    let host = prober["hostname"].as_str().unwrap();
    let log = events_text(&daemon, deploy["id"].as_str().unwrap()).await;
    // Which builder ran, and every address involved, so a failure here says whether the
    // answer is an isolation fault or a builder other than the one expected.
    let builder_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("builder") || line.contains("BuildKit"))
        .collect();
    assert_eq!(
        daemon.edge_get(host, "/build.txt").await,
        (200, format!("{from_build}\n")),
        "the build's RUN step (own {own_address}, victim {victim_address}, bridge {bridge_address}); builder lines: {builder_lines:#?}"
    );
    let release_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("release"))
        .collect();
    assert!(
        log.contains("release: own=yes victim=no bridge=no"),
        "the release command's lines (own {own_address}, victim {victim_address}, bridge {bridge_address}): {release_lines:#?}"
    );

    for (project, token) in [(&victim, &rival), (&prober, &admin)] {
        daemon
            .delete(&format!("/v1/projects/{}", id_of(project)), token)
            .await
            .expect(204);
        assert!(networks_gone("cantila.project", id_of(project)).await);
    }
    docker(&["rm", "--force", &bridge_server]);
}

/// The docker CLI, for what an earlier version of Cantila left on the engine.
fn docker(args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Requests through the edge, one after another, until told to stop: counts answers and
/// failures (anything but a 200 with the app's body).
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(edge: std::net::SocketAddr, host: &str, body: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (host, body) = (host.to_owned(), body.to_owned());
        let task = tokio::spawn({
            let (stop, answered, failures) = (stop.clone(), answered.clone(), failures.clone());
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let result = client
                        .get(format!("http://{edge}/"))
                        .header("host", &host)
                        .send()
                        .await;
                    let outcome = match result {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let text = response.text().await.unwrap_or_default();
                            (status == 200 && text == body).then_some(()).ok_or(format!(
                                "{status}: {}",
                                text.chars().take(60).collect::<String>()
                            ))
                        }
                        Err(err) => Err(err.to_string()),
                    };
                    match outcome {
                        Ok(()) => answered.fetch_add(1, Ordering::SeqCst),
                        Err(failure) => {
                            failures.lock().unwrap().push(failure);
                            0
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Self {
            stop,
            answered,
            failures,
            task,
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (self.answered.load(Ordering::SeqCst), failures)
    }
}

#[tokio::test]
async fn an_instance_on_the_shared_network_of_earlier_versions_moves_without_a_failed_request() {
    // A prefix of this test's own, so the shared network it plays is nobody else's.
    let shared = format!("cantila-up{}", std::process::id());
    let daemon = TestDaemon::start_with(|c| c.deploy.network = shared.clone()).await;
    let _shared_network = NamedNetworks(vec![shared.clone()]);
    let admin = daemon.admin_token.clone();
    let repo = Repo::busybox("upgraded\n");
    let project = deployed(&daemon, &admin, "upgraded", &repo).await;
    let project_id = id_of(&project).to_owned();
    let host = project["hostname"].as_str().unwrap().to_owned();
    let old = web_instances(&project_id, None).await.remove(0);
    let own = networks::name_of(
        &daemon.config.deploy,
        &project_id,
        &ReleaseTarget::Production,
    );

    // What 0.1 left: the daemon stopped (its instances keep running), every instance on
    // one shared network labelled only with its kind, no network per project.
    let (dir, config) = daemon.stop().await;
    docker(&[
        "network",
        "create",
        "--label",
        "cantila.kind=network",
        &shared,
    ]);
    docker(&["network", "connect", &shared, &old.id]);
    docker(&["network", "disconnect", &own, &old.id]);
    docker(&["network", "rm", &own]);

    // The upgraded daemon serves the old instance on the shared network from its first
    // request on (every request counts), then its reconciler replaces it.
    let daemon = TestDaemon::start_in(dir, config).await;
    let load = Load::start(daemon.http, &host, "upgraded\n");
    while load.answered.load(Ordering::SeqCst) == 0 && load.failures.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let engine = Engine::connect().await.unwrap();
    assert!(
        engine
            .inspect(&old.id)
            .await
            .unwrap()
            .addresses
            .contains_key(&shared),
        "the load began before the old instance was moved"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let instances = web_instances(&project_id, None).await;
        let moved = instances.len() == 1
            && instances[0].id != old.id
            && instances[0].addresses.keys().eq([&own]);
        let shared_left = engine
            .networks(&[("cantila.kind", "network")])
            .await
            .unwrap()
            .iter()
            .any(|n| n.name == shared);
        if moved && !shared_left {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "moved: {moved}, shared network left: {shared_left}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A little more traffic on the new instance alone.
    let settled = load.answered.load(Ordering::SeqCst) + 20;
    while load.answered.load(Ordering::SeqCst) < settled && load.failures.lock().unwrap().is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (answered, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed requests during the move, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(answered > 50, "{answered} requests answered");
    assert!(
        engine.inspect(&old.id).await.is_err(),
        "the old instance is gone"
    );

    daemon
        .delete(&format!("/v1/projects/{project_id}"), &admin)
        .await
        .expect(204);
    assert!(networks_gone("cantila.project", &project_id).await);
}

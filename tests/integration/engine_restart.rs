//! The app keeps or regains service when its instance is killed and when the Docker engine
//! itself restarts. The engine restart runs on a second `dockerd` of this test's own (own
//! socket, data root, address pool and containerd namespace), so the shared engine every
//! other test uses is never disturbed.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{
    deploys::{busybox_app, Repo},
    support::{wait_until, TestDaemon},
};

/// A private Docker engine, stopped (with its containers) and deleted on drop.
struct PrivateEngine {
    dir: PathBuf,
    /// Its own default bridge. `--bridge=none` would make dockerd delete the host's
    /// `docker0`, which the shared engine's builds need, so it gets one of its own. For the
    /// same reason it has no `--default-address-pool`: dockerd 20.10, restarting with a
    /// stale default network and address pools configured, removes `docker0` by name.
    /// Without them its networks come from the default pools, skipping every subnet the
    /// host already routes, so they cannot collide with the shared engine's.
    bridge: String,
    daemon: Option<Child>,
}

impl PrivateEngine {
    async fn start() -> Self {
        // Short path: a Unix socket path must stay under 108 bytes.
        let dir = PathBuf::from(format!("/tmp/cantila-engine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bridge = format!("cbr{}", std::process::id() % 100_000);
        let _ = ip(&["link", "del", &bridge]);
        assert!(
            ip(&["link", "add", "name", &bridge, "type", "bridge"]),
            "ip link add {bridge}"
        );
        assert!(ip(&["addr", "add", "10.214.0.1/24", "dev", &bridge]));
        assert!(ip(&["link", "set", &bridge, "up"]));
        let mut engine = Self {
            dir,
            bridge,
            daemon: None,
        };
        engine.launch().await;
        engine
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    async fn launch(&mut self) {
        let dir = &self.dir;
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--bridge")
            .arg(&self.bridge)
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--containerd-namespace",
                "cantila-test-engine",
                "--containerd-plugins-namespace",
                "cantila-test-engine-plugins",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd is installed (scripts/test.sh installs docker.io)");
        self.daemon = Some(child);
        for _ in 0..300 {
            if cantila::runtime::docker::Engine::connect_at(Some(&self.socket()))
                .await
                .is_ok()
            {
                return;
            }
            // The poll interval: the loop checks its condition again.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the private dockerd did not start; see {}",
            dir.join("dockerd.log").display()
        );
    }

    /// Stops dockerd the way a package upgrade or `systemctl restart docker` does.
    fn shut_down(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .arg("--host")
            .arg(self.host())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.shut_down();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Runs `ip` (iproute2) with `args`; whether it succeeded.
fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Copies an image from the shared engine into `engine` (no registry is reachable).
fn copy_image(engine: &PrivateEngine, image: &str) {
    let saved = engine.dir.join("image.tar");
    let status = Command::new("docker")
        .args(["save", "-o"])
        .arg(&saved)
        .arg(image)
        .status()
        .unwrap();
    assert!(status.success(), "docker save {image}");
    let loaded = engine.docker(&["load", "-i", &saved.display().to_string()]);
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    std::fs::remove_file(saved).unwrap();
}

async fn edge_answer(daemon: &TestDaemon, host: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .get(format!("http://{}/", daemon.http))
        .header("host", host)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    response.text().await.ok()
}

async fn serves_again(daemon: &TestDaemon, host: &str, body: &str, seconds: u64) -> bool {
    for _ in 0..seconds * 4 {
        if edge_answer(daemon, host).await.as_deref() == Some(body) {
            return true;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn running_instances(engine: &PrivateEngine, project_id: &str) -> Vec<String> {
    let listed = engine.docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=cantila.project={project_id}"),
        "--filter",
        "label=cantila.kind=web",
    ]);
    String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Waits until the reconciler has completed `passes` whole passes from now, watching its
/// own work rather than a clock: each probe is a container the reconciler must remove as
/// an orphan (a web instance of this installation, of a deploy that does not exist). A
/// pass lists the containers once, at its start, so a probe planted after the previous
/// one vanished is removed by a later pass, and the pass before that one has finished.
async fn reconciler_passes(engine: &PrivateEngine, installation: &str, passes: usize) {
    for probe in 0..=passes {
        let name = format!(
            "cantila-probe-{}-{probe}",
            cantila::ids::random_base62(8).to_ascii_lowercase()
        );
        let started = engine.docker(&[
            "run",
            "--detach",
            "--name",
            &name,
            "--label",
            &format!("cantila.installation={installation}"),
            "--label",
            "cantila.kind=web",
            "--label",
            &format!("cantila.deploy=dep_probe{probe}"),
            "busybox:latest",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 1; done",
        ]);
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
        wait_until(
            Duration::from_secs(60),
            &format!("the reconciler removes probe {probe}"),
            || {
                let listed = engine.docker(&["ps", "-aq", "--filter", &format!("name=^{name}$")]);
                async move { listed.status.success() && listed.stdout.trim_ascii().is_empty() }
            },
        )
        .await;
    }
}

/// A 503 `unavailable` with a `Retry-After` in seconds, as the README promises while the
/// engine is down.
fn assert_engine_down_answer(res: &crate::support::Res) {
    assert_eq!(res.status, 503, "{}", res.text);
    assert_eq!(res.error_code(), "unavailable", "{}", res.text);
    assert!(!res.error_message().is_empty(), "{}", res.text);
    let retry_after = res.header("retry-after").unwrap_or_default();
    assert!(
        retry_after.parse::<u32>().is_ok_and(|secs| secs > 0),
        "Retry-After: {retry_after:?}"
    );
}

#[tokio::test]
async fn service_returns_after_an_instance_is_killed_and_after_dockerd_restarts() {
    let shared_bridge_up = ip(&["link", "show", "docker0"]);
    let mut engine = PrivateEngine::start().await;
    copy_image(&engine, "busybox:latest");
    let socket: &Path = &engine.socket();
    let daemon = TestDaemon::start_with(|c| {
        c.deploy.docker_socket = Some(socket.to_path_buf());
        c.deploy.drain_secs = 0;
        // Its networks' subnets come from a range of their own: the shared engine's daemons
        // see this engine's bridges only as host routes, which a network created at the
        // same moment could not yet show.
        c.deploy.network_pool = "10.215.0.0/16".to_owned();
    })
    .await;
    let installation = daemon.dir.as_ref().unwrap().installation().to_owned();
    let files = busybox_app("survives\n");
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let repo = Repo::new(&borrowed);
    let (project_id, _) = daemon.connected_project("survivor", &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let host = "survivor.admin.test.local";
    assert!(serves_again(&daemon, host, "survives\n", 10).await);

    // `docker kill`: the instance comes back (Docker's restart policy or the reconciler),
    // and there is still exactly one.
    let before = running_instances(&engine, &project_id);
    assert_eq!(before.len(), 1, "{before:?}");
    let killed = engine.docker(&["kill", &before[0]]);
    assert!(killed.status.success());
    assert!(
        serves_again(&daemon, host, "survives\n", 60).await,
        "service returned after docker kill"
    );
    // Two whole reconciler passes later there is still exactly one: neither the restart
    // policy and the reconciler together, nor a later pass, started a second.
    reconciler_passes(&engine, &installation, 2).await;
    assert_eq!(running_instances(&engine, &project_id).len(), 1);

    // dockerd restarts: its containers stop with it and come back with new addresses;
    // Cantila reconnects, the route table follows, nothing is started twice.
    engine.shut_down();
    assert!(
        edge_answer(&daemon, host).await.is_none(),
        "down with the engine"
    );
    let listed = daemon
        .get(
            &format!("/v1/projects/{project_id}/instances"),
            &daemon.admin_token,
        )
        .await;
    assert_engine_down_answer(&listed);
    engine.launch().await;
    assert!(
        serves_again(&daemon, host, "survives\n", 90).await,
        "service returned after dockerd restarted"
    );
    reconciler_passes(&engine, &installation, 2).await;
    assert_eq!(running_instances(&engine, &project_id).len(), 1);
    let listed = daemon
        .get(
            &format!("/v1/projects/{project_id}/instances"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(listed["instances"][0]["state"], "healthy", "{listed}");
    drop(daemon);
    drop(engine);
    // The shared engine's builds need its bridge; restarting the private one must leave
    // it alone.
    assert!(
        !shared_bridge_up || ip(&["link", "show", "docker0"]),
        "the private engine's restart removed the shared engine's docker0"
    );
}

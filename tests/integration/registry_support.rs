//! The real container registry the image-source tests pull from: `TestRegistry` reads the
//! loopback registry `scripts/ensure-registry.sh` started (`CANTILA_TEST_REGISTRY`, with
//! `CANTILA_TEST_REGISTRY_USER` and `CANTILA_TEST_REGISTRY_PASSWORD`), and pushes images
//! built locally from the busybox base to a repository unique to the test. The Docker CLI
//! logs in with a config dir of its own (`docker --config <tempdir>`), so nothing global
//! changes. A missing variable fails the test: it never skips.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use tempfile::TempDir;

pub struct TestRegistry {
    /// `host:port` of the registry.
    pub address: String,
    pub user: String,
    pub password: String,
    /// The Docker CLI's config dir for this test (its login lives here only).
    cli_config: TempDir,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run scripts/ensure-registry.sh and export what scripts/test.sh exports"
        )
    })
}

impl TestRegistry {
    /// The test registry, logged in to with the test user.
    pub fn from_env() -> Self {
        let registry = Self {
            address: required("CANTILA_TEST_REGISTRY"),
            user: required("CANTILA_TEST_REGISTRY_USER"),
            password: required("CANTILA_TEST_REGISTRY_PASSWORD"),
            cli_config: tempfile::tempdir().expect("docker config dir"),
        };
        let mut login = Command::new("docker")
            .arg("--config")
            .arg(registry.cli_config.path())
            .args([
                "login",
                "--username",
                &registry.user,
                "--password-stdin",
                &registry.address,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker login");
        {
            use std::io::Write;
            let mut stdin = login.stdin.take().unwrap();
            stdin.write_all(registry.password.as_bytes()).unwrap();
        }
        let out = login.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "docker login {}: {}",
            registry.address,
            String::from_utf8_lossy(&out.stderr)
        );
        registry
    }

    /// A repository name no other test uses: `<address>/t<random>/<name>`.
    pub fn unique_repository(&self, name: &str) -> String {
        format!(
            "{}/t{}/{name}",
            self.address,
            cantila::ids::random_base62(10).to_ascii_lowercase()
        )
    }

    /// Builds a busybox httpd image answering `body` on port 8080 (`EXPOSE 8080`),
    /// labelled for `installation` (so the test's data dir removes it, and what the daemon
    /// pulls of it, from the engine), pushes it as `repository:tag`, removes the local tag
    /// (the daemon must pull it) and returns the digest the registry gave it.
    pub fn push_app(&self, repository: &str, tag: &str, body: &str, installation: &str) -> String {
        self.push_app_with(repository, tag, body, installation, RemoveLocal::Yes)
    }

    /// As `push_app`, choosing whether the local tag is removed after the push.
    pub fn push_app_with(
        &self,
        repository: &str,
        tag: &str,
        body: &str,
        installation: &str,
        remove_local: RemoveLocal,
    ) -> String {
        let context = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(context.path().join("www")).unwrap();
        std::fs::write(context.path().join("www/index.html"), body).unwrap();
        std::fs::write(
            context.path().join("Dockerfile"),
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nUSER 65534\nWORKDIR /www\n\
             CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        )
        .unwrap();
        self.push_context(repository, tag, context.path(), installation, remove_local)
    }

    /// Builds `context`, pushes it as `repository:tag`, removes the local tag unless told
    /// not to; the digest.
    pub fn push_context(
        &self,
        repository: &str,
        tag: &str,
        context: &Path,
        installation: &str,
        remove_local: RemoveLocal,
    ) -> String {
        let reference = format!("{repository}:{tag}");
        self.cli(&[
            "build",
            "--quiet",
            "--label",
            &format!("cantila.installation={installation}"),
            "--tag",
            &reference,
            &context.display().to_string(),
        ]);
        let pushed = self.cli(&["push", &reference]);
        if remove_local == RemoveLocal::Yes {
            self.cli(&["rmi", &reference]);
        }
        pushed
            .split_whitespace()
            .find_map(|word| {
                word.strip_prefix("sha256:")
                    .map(|hex| format!("sha256:{hex}"))
            })
            .unwrap_or_else(|| panic!("no digest in the push output: {pushed}"))
    }

    /// Runs the Docker CLI with this test's config dir; stdout, or a panic with stderr.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .arg("--config")
            .arg(self.cli_config.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Whether a push removes the local tag afterwards (so a deploy must really pull). A push
/// that a registry notification turns into a deploy keeps it: removing it would race the
/// deploy's own pull of that tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveLocal {
    Yes,
    No,
}

/// A registry of one test's own (no auth, storage in a temp dir) whose notifications go
/// to a daemon's image webhook: `reserve` picks its loopback port (so the image reference
/// can name it before the webhook secret exists), `start` runs it. Stopped on drop.
pub struct NotifyingRegistry {
    pub address: String,
    dir: TempDir,
    child: Option<std::process::Child>,
}

impl NotifyingRegistry {
    pub fn reserve() -> Self {
        // The port is free now; the registry binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            address: format!("127.0.0.1:{port}"),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    /// Starts the registry, notifying `url` with `Authorization: Bearer <secret>`, and
    /// waits until it answers.
    pub fn start(mut self, url: &str, secret: &str) -> Self {
        let config = self.dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {}\nnotifications:\n  endpoints:\n    - name: cantila\n      url: {url}\n\
                 \x20     headers:\n        Authorization: [\"Bearer {secret}\"]\n      timeout: 5s\n\
                 \x20     threshold: 3\n      backoff: 1s\n",
                self.dir.path().join("storage").display(),
                self.address
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        self.child = Some(
            Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start docker-registry (scripts/ensure-registry.sh installs it)"),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.address).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the notifying registry did not listen within 20 s: {}",
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            // The poll interval while the registry starts.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self
    }

    /// Pushes a busybox httpd app answering `body` (with `registry`'s Docker CLI config)
    /// as `repository:tag`; returns its digest.
    pub fn push_app(
        &self,
        registry: &TestRegistry,
        repository: &str,
        tag: &str,
        body: &str,
        installation: &str,
    ) -> String {
        // The notification may start the deploy's pull before the push command returns;
        // the local tag stays (the test installation's cleanup removes it).
        registry.push_app_with(repository, tag, body, installation, RemoveLocal::No)
    }
}

impl NotifyingRegistry {
    /// The last lines the registry wrote (its notification attempts among them), for a
    /// failure's message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for NotifyingRegistry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

//! Test support: `TestDaemon` runs the whole daemon on a thread of its own, on port 0, in a
//! `TestDir`; dropping it (on success and on panic alike) stops the daemon, waits for it,
//! and removes everything its installation left on the Docker engine. Helpers send
//! requests, mint tokens for other accounts and wait on conditions with deadlines.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use cantila::{
    accounts::{self, Actor},
    config::Config,
    names::{Handle, Scope},
    store::Store,
    Listeners,
};
use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

pub struct TestDaemon {
    pub dir: Option<TestDir>,
    pub config: Config,
    pub api: SocketAddr,
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The bootstrap admin token the daemon wrote to `<data_dir>/admin-token`.
    pub admin_token: String,
    client: reqwest::Client,
    running: Option<DaemonThread>,
}

/// A response, read whole: status, headers and the body as JSON (or `Value::Null`).
#[derive(Debug)]
pub struct Res {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Res {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and returns self, printing the body on mismatch.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// The error code of an error body.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn error_message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

/// The config every test daemon starts from: a temp data dir, generous auth-failure limit
/// (the auth matrix sends many bad tokens from one address), tests override the rest.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config {
        data_dir: dir.join("data"),
        base_domain: "test.local".to_owned(),
        ..Config::default()
    };
    config.api.auth_failures_per_minute = 10_000;
    // Tests never contact a public CA; the TLS tests point ACME at pebble themselves.
    config.tls.mode = cantila::tls::TlsMode::Off;
    // Networks named `cantila-test-<id>`: a daemon removes the shared network of earlier
    // versions (the bare prefix, `cantila` by default) once it is empty, and daemons of an
    // older build on the same engine may still be using that one.
    config.deploy.network = "cantila-test".to_owned();
    config
}

impl TestDaemon {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = TestDir::new();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    /// Starts a daemon on an existing data dir (used to restart).
    pub async fn start_in(dir: TestDir, config: Config) -> Self {
        let listeners = Listeners::ephemeral()
            .await
            .expect("bind ephemeral listeners");
        Self::start_on(dir, config, listeners).await
    }

    /// Starts a daemon on listeners the test bound (when a port must be known first).
    pub async fn start_on(mut dir: TestDir, config: Config, listeners: Listeners) -> Self {
        dir.docker_socket = config.deploy.docker_socket.clone();
        let api = listeners.api.local_addr().unwrap();
        let http = listeners.http.local_addr().unwrap();
        let https = listeners.https.local_addr().unwrap();
        let running = DaemonThread::spawn(config.clone(), listeners);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut daemon = Self {
            dir: Some(dir),
            config,
            api,
            http,
            https,
            admin_token: String::new(),
            client,
            running: Some(running),
        };
        daemon.wait_until_ready().await;
        daemon.admin_token = std::fs::read_to_string(daemon.config.admin_token_path())
            .expect("admin-token written on first start")
            .trim()
            .to_owned();
        daemon
    }

    /// Waits for the API to answer; the listeners are bound already, so this only waits
    /// for the store to open and the router to start.
    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(result) = self.running.as_mut().and_then(DaemonThread::exited) {
                panic!("daemon exited during start-up: {result:?}");
            }
            if self
                .client
                .get(self.url("/v1/openapi.json"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            // Polling interval while the daemon starts.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("daemon did not become ready within 20 s");
    }

    /// Stops the daemon gracefully, waits until it has stopped, and hands back its data dir
    /// (whose drop removes what the installation left on the engine).
    pub async fn stop(mut self) -> (TestDir, Config) {
        if let Some(running) = self.running.take() {
            tokio::task::spawn_blocking(move || running.stop_and_wait(STOP_DEADLINE))
                .await
                .expect("waiting for the daemon thread")
                .expect("daemon stopped within the deadline")
                .expect("daemon stopped cleanly");
        }
        (self.dir.take().unwrap(), self.config.clone())
    }

    /// Stops and starts again on the same data dir.
    pub async fn restart(self) -> Self {
        let (dir, config) = self.stop().await;
        Self::start_in(dir, config).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Res {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// One GET through the edge's plain-HTTP listener with `host` as the Host header,
    /// redirects not followed: the status and the body.
    pub async fn edge_get(&self, host: &str, path: &str) -> (u16, String) {
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .get(format!("http://{}{path}", self.http))
            .header("host", host)
            .send()
            .await
            .expect("edge request sent");
        let status = response.status().as_u16();
        (status, response.text().await.expect("edge body"))
    }

    pub async fn get(&self, path: &str, token: &str) -> Res {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Res {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Res {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Res {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// A raw request builder for cases the helpers do not cover.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Creates a project with the admin token and returns its JSON.
    pub async fn create_project(&self, name: &str) -> Value {
        self.post(
            "/v1/projects",
            &self.admin_token,
            serde_json::json!({ "name": name }),
        )
        .await
        .expect(201)
        .body
    }

    /// Mints a token of the bootstrap account with the given scope through the API.
    pub async fn token(&self, scope: &str) -> String {
        let res = self
            .post(
                "/v1/tokens",
                &self.admin_token,
                serde_json::json!({ "scope": scope }),
            )
            .await
            .expect(201);
        res.body["token"].as_str().unwrap().to_owned()
    }

    /// Creates another account directly in the store (as `cantila admin` does, while the
    /// daemon runs) and returns a token of it with the given scope.
    pub fn other_account_token(&self, handle: &str, scope: Scope) -> String {
        let store = Store::open(self.data_dir()).expect("open store beside the daemon");
        let account = match accounts::account_by_handle(&store, &Handle::parse(handle).unwrap()) {
            Ok(account) => account,
            Err(_) => accounts::create_account(&store, Handle::parse(handle).unwrap()).unwrap(),
        };
        accounts::create_token_blocking(&store, &Actor::operator(&account), scope, None)
            .unwrap()
            .secret
    }
}

impl Drop for TestDaemon {
    /// Stops the daemon and waits for it, then the data dir's own drop removes what the
    /// installation left on the engine and the files. A daemon that does not stop in time
    /// keeps its files (a running daemon never has its data dir deleted under it).
    fn drop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        match running.stop_and_wait(STOP_DEADLINE) {
            Some(Ok(())) => {}
            Some(Err(err)) => {
                eprintln!("test daemon on {} stopped with an error: {err:#}", self.api)
            }
            None => {
                if let Some(dir) = &mut self.dir {
                    dir.keep_files();
                }
            }
        }
    }
}

/// How long a stopping daemon may take before its test gives up on it: in-flight requests
/// finish and background tasks end first.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The daemon's own thread and runtime. The daemon never shares the test's runtime, so
/// dropping a `TestDaemon` can wait for it to stop from any context: inside a
/// `#[tokio::test]` (whose single thread is then blocked in `drop`), during a panic's
/// unwinding, or with no runtime at all.
struct DaemonThread {
    stop: Option<oneshot::Sender<()>>,
    /// The result of `cantila::run`, sent once the daemon's runtime has shut down (in a
    /// mutex only so that a `&TestDaemon` can cross threads).
    done: std::sync::Mutex<mpsc::Receiver<anyhow::Result<()>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DaemonThread {
    fn spawn(config: Config, listeners: Listeners) -> Self {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("test-daemon".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("the daemon's runtime");
                let result = runtime.block_on(async move {
                    cantila::run(config, listeners, async move {
                        let _ = stop_rx.await;
                    })
                    .await
                });
                // Blocking work still running (a fetch, a copy) gets a moment to end.
                runtime.shutdown_timeout(Duration::from_secs(5));
                let _ = done_tx.send(result);
            })
            .expect("spawn the daemon's thread");
        Self {
            stop: Some(stop_tx),
            done: std::sync::Mutex::new(done),
            thread: Some(thread),
        }
    }

    /// The daemon's result, when it has already exited by itself.
    fn exited(&mut self) -> Option<anyhow::Result<()>> {
        let done = self.done.get_mut().unwrap_or_else(|p| p.into_inner());
        done.try_recv().ok()
    }

    /// Signals the daemon to stop and waits up to `deadline` for its thread to end; `None`
    /// when it did not.
    fn stop_and_wait(mut self, deadline: Duration) -> Option<anyhow::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = self.done.get_mut().unwrap_or_else(|p| p.into_inner());
        let result = match done.recv_timeout(deadline) {
            Ok(result) => result,
            // The thread ended without a result: it panicked.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(anyhow::anyhow!("the daemon's thread panicked"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("the test daemon did not stop within {deadline:?}; leaving it running");
                return None;
            }
        };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        Some(result)
    }
}

pub async fn read(response: reqwest::Response) -> Res {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Res {
        status,
        headers,
        body,
        text,
    }
}

/// The real `cantila` binary serving a data dir, for tests that crash it with `kill -9`
/// (an in-process daemon cannot die with everything it runs).
pub struct BinaryDaemon {
    child: crate::lifecycle::KillOnDrop,
    pub api: String,
    pub token: String,
    client: reqwest::Client,
}

impl BinaryDaemon {
    /// Starts `cantila serve` on the config's data dir and base domain, on port 0.
    pub async fn start(config: &Config) -> Self {
        // What `test_config` sets beyond the flags, so a TestDaemon started later on the
        // same data dir finds the binary's containers on the networks it expects.
        let config_file = config.data_dir.with_file_name("binary-daemon.toml");
        std::fs::write(
            &config_file,
            format!(
                "[tls]\nmode = \"off\"\n[api]\nauth_failures_per_minute = {}\n[deploy]\nnetwork = {:?}\n",
                config.api.auth_failures_per_minute, config.deploy.network
            ),
        )
        .expect("write the binary daemon's config file");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cantila"))
            .args(["serve", "--config", &config_file.display().to_string()])
            .args(["--data-dir", &config.data_dir.display().to_string()])
            .args(["--base-domain", &config.base_domain])
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--https-listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start cantila serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let child = crate::lifecycle::KillOnDrop(child);
        let api = crate::lifecycle::wait_for_api_address(stderr).await;
        let token = std::fs::read_to_string(config.admin_token_path())
            .expect("admin token")
            .trim()
            .to_owned();
        Self {
            child,
            api,
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// Starts `cantila serve --config <config_file>` with its log (`RUST_LOG=log_filter`)
    /// written to `log`, for tests that read what the daemon logged. The file must set
    /// `data_dir` and port-0 listeners.
    pub async fn start_from_file(
        config_file: &Path,
        data_dir: &Path,
        log: &Path,
        log_filter: &str,
    ) -> Self {
        Self::start_from_file_with_env(config_file, data_dir, log, log_filter, &[]).await
    }

    /// `start_from_file` with extra environment variables for the daemon's process only
    /// (e.g. `SSL_CERT_FILE`, which would reach every test of this binary if set here).
    pub async fn start_from_file_with_env(
        config_file: &Path,
        data_dir: &Path,
        log: &Path,
        log_filter: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cantila"))
            .args(["serve", "--config", &config_file.display().to_string()])
            .env("RUST_LOG", log_filter)
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(log).expect("create the daemon's log file"))
            .spawn()
            .expect("start cantila serve");
        let mut child = crate::lifecycle::KillOnDrop(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let api = loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(rest) = text.split("api=").nth(1) {
                break rest.chars().take_while(|c| !c.is_whitespace()).collect();
            }
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("cantila serve exited during start-up ({status}): {text}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no listening line within 20 s: {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let token = std::fs::read_to_string(data_dir.join("admin-token"))
            .expect("admin token")
            .trim()
            .to_owned();
        Self {
            child,
            api,
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// Sends a request with the admin token; returns the status and the JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .client
            .request(method, format!("http://{}{path}", self.api))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Creates a project connected to the repository at `repo`; returns its id.
    pub async fn connected_project(&self, name: &str, repo: &Path) -> String {
        let (status, project) = self
            .call(
                Method::POST,
                "/v1/projects",
                serde_json::json!({ "name": name }),
            )
            .await;
        assert_eq!(status, 201, "{project}");
        let id = project["id"].as_str().unwrap().to_owned();
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/projects/{id}/git"),
                serde_json::json!({ "repo": repo.display().to_string() }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        id
    }

    /// Queues a deploy and returns its id.
    pub async fn deploy(&self, project_id: &str) -> String {
        let (status, created) = self
            .call(
                Method::POST,
                &format!("/v1/projects/{project_id}/deploy"),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, 202, "{created}");
        created["deployId"].as_str().unwrap().to_owned()
    }

    /// Waits until the deploy reaches `wanted` (and, for `building`, has its commit).
    pub async fn wait_status(&self, deploy_id: &str, wanted: &str) {
        for _ in 0..600 {
            let (_, deploy) = self
                .call(
                    Method::GET,
                    &format!("/v1/deploys/{deploy_id}"),
                    Value::Null,
                )
                .await;
            if deploy["status"] == wanted
                && (wanted != "building" || deploy["commitSha"].is_string())
            {
                return;
            }
            // The poll interval: the loop checks its condition again.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("deploy {deploy_id} never reached {wanted}");
    }

    /// Stops the daemon's every thread where it is (SIGSTOP), so that the state it left
    /// holds still until `kill9`.
    pub fn freeze(&self) {
        let status = std::process::Command::new("kill")
            .args(["-STOP", &self.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Ends the daemon with SIGKILL, as a crash would.
    pub fn kill9(mut self) {
        let status = std::process::Command::new("kill")
            .args(["-9", &self.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.0.wait();
    }
}

/// A nonblocking listening socket, as `cantila::Listeners` holds them.
pub fn listener(addr: impl std::net::ToSocketAddrs) -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind(addr).expect("bind a test listener");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    listener
}

/// The start of every test installation's id: `test-<run>-<random>`, where `<run>` is
/// `CANTILA_TEST_RUN` (set by `scripts/test.sh`, so its leftover check finds exactly this
/// run's installations) or `local`.
pub const TEST_INSTALLATION_PREFIX: &str = "test-";

/// A temp dir for one test installation. Its `data/installation-id` is written up front
/// with a recognisable id (see `TEST_INSTALLATION_PREFIX`), which the daemon then labels
/// everything with; dropping it, on success or panic, removes every container, image,
/// volume and network of that installation from the engine, then the files. A daemon
/// using it must have stopped first: `TestDaemon` and `BinaryDaemon` are declared after
/// their dir, so they drop (and stop) before it.
pub struct TestDir {
    dir: Option<TempDir>,
    installation: String,
    /// The engine the installation used, when not the shared one (`deploy.docker_socket`).
    docker_socket: Option<PathBuf>,
}

impl TestDir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let run: String = std::env::var("CANTILA_TEST_RUN")
            .unwrap_or_else(|_| "local".to_owned())
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .take(16)
            .collect();
        let installation = format!(
            "{TEST_INSTALLATION_PREFIX}{run}-{}",
            cantila::ids::random_base62(12).to_ascii_lowercase()
        );
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::write(data.join("installation-id"), &installation).expect("installation id");
        Self {
            dir: Some(dir),
            installation,
            docker_socket: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("files kept").path()
    }

    /// The id the daemon labels everything it creates with (`cantila.installation`).
    pub fn installation(&self) -> &str {
        &self.installation
    }

    /// Leaves the files in place: their daemon may still be running.
    fn keep_files(&mut self) {
        if let Some(dir) = self.dir.take() {
            eprintln!(
                "keeping {} (its daemon may still run)",
                dir.keep().display()
            );
        }
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let build_log = self
            .dir
            .as_ref()
            .map(|dir| dir.path().join("data").join("cantila.db"));
        let left = std::panic::catch_unwind(|| {
            remove_installation(
                &self.installation,
                self.docker_socket.as_deref(),
                build_log.as_deref(),
            )
        });
        match left {
            Ok(left) if left.is_empty() => {}
            Ok(left) => eprintln!(
                "could not remove everything of test installation {}: {left:?}",
                self.installation
            ),
            Err(_) => eprintln!("removing test installation {} panicked", self.installation),
        }
    }
}

/// Removes everything labelled `cantila.installation=<installation>` from the engine at
/// `socket` (the shared engine when `None`): containers with their anonymous volumes,
/// images, volumes and networks, through the Docker CLI (a blocking call, so it works from
/// `Drop` inside or outside a runtime). Build labels go on the final image only, so the
/// intermediate images of builds that never finished (failed, canceled, crashed) carry
/// none: those that the installation's build logs (`build_log`, its SQLite file) name and
/// that are dangling (untagged, no children) are removed too. Returns what could not be
/// removed; never panics.
pub fn remove_installation(
    installation: &str,
    socket: Option<&Path>,
    build_log: Option<&Path>,
) -> Vec<String> {
    let filter = format!("label=cantila.installation={installation}");
    let listed = |args: &[&str]| -> Vec<String> {
        docker(socket, args)
            .map(|out| out.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let remove = |what: &[&str], ids: &[String]| {
        if !ids.is_empty() {
            let mut args: Vec<&str> = what.to_vec();
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(socket, &args);
        }
    };
    let containers = || listed(&["ps", "-aq", "--no-trunc", "--filter", &filter]);
    remove(&["rm", "--force", "--volumes"], &containers());
    // Removing a final image also removes its untagged parents, so a listed intermediate
    // may be gone already; a second pass catches an image a removal order kept alive.
    let images = || {
        let mut ids = listed(&["images", "-aq", "--no-trunc", "--filter", &filter]);
        ids.sort();
        ids.dedup();
        ids
    };
    for _ in 0..2 {
        remove(&["rmi", "--force"], &images());
    }
    if let Some(path) = build_log {
        let named = build_log_images(path);
        if !named.is_empty() {
            let dangling = listed(&["images", "-aq", "--filter", "dangling=true"]);
            let removable: Vec<String> = named
                .into_iter()
                .filter(|id| dangling.iter().any(|d| d.starts_with(id.as_str())))
                .collect();
            remove(&["rmi"], &removable);
        }
    }
    let volumes = || listed(&["volume", "ls", "-q", "--filter", &filter]);
    remove(&["volume", "rm"], &volumes());
    let networks = || listed(&["network", "ls", "-q", "--no-trunc", "--filter", &filter]);
    remove(&["network", "rm"], &networks());

    let mut left = Vec::new();
    left.extend(containers().into_iter().map(|id| format!("container {id}")));
    left.extend(images().into_iter().map(|id| format!("image {id}")));
    left.extend(volumes().into_iter().map(|id| format!("volume {id}")));
    left.extend(networks().into_iter().map(|id| format!("network {id}")));
    left
}

/// The image ids the classic builder printed (` ---> 5cc572959e83`) in the deploy logs
/// stored at `database`: the images its builds made, step by step.
pub fn build_log_images(database: &Path) -> Vec<String> {
    let Ok(connection) =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut statement) =
        connection.prepare("SELECT line FROM deploy_logs WHERE line LIKE '%--->%'")
    else {
        return Vec::new();
    };
    let Ok(lines) = statement.query_map([], |row| row.get::<_, String>(0)) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = lines
        .flatten()
        .filter_map(|line| {
            let id = line.trim().strip_prefix("--->")?.trim().to_owned();
            (id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Runs the Docker CLI against `socket` (the shared engine when `None`); stdout on success.
pub fn docker(socket: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("docker");
    if let Some(socket) = socket {
        command
            .arg("--host")
            .arg(format!("unix://{}", socket.display()));
    }
    match command
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        Err(err) => Err(format!("running docker: {err}")),
    }
}

/// Polls `check` until it returns `Some`, and returns that; panics naming `what` when
/// `within` passes first. The 100 ms pause between polls is the poll interval, not a wait
/// for anything.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `condition` until it holds; panics naming `what` when `within` passes first.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(within, what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// Images on the shared engine (intermediate ones included) made by a build step whose
/// command contains `marker`: how a test finds what an unfinished build left, since only
/// the final image of a build carries its labels.
pub fn images_built_with(marker: &str) -> Vec<String> {
    let ids = docker(None, &["images", "-aq", "--no-trunc"]).unwrap_or_default();
    let mut ids: Vec<&str> = ids.split_whitespace().collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec![
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{json .ContainerConfig.Cmd}}",
    ];
    args.extend(ids);
    // An image removed between the listing and the inspection makes the command fail; the
    // images it did describe are still printed.
    let described = match docker(None, &args) {
        Ok(out) => out,
        Err(_) => return images_built_with_one_by_one(marker),
    };
    described
        .lines()
        .filter(|line| line.contains(marker))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn images_built_with_one_by_one(marker: &str) -> Vec<String> {
    let ids = docker(None, &["images", "-aq", "--no-trunc"]).unwrap_or_default();
    ids.split_whitespace()
        .filter(|id| {
            docker(
                None,
                &[
                    "image",
                    "inspect",
                    "--format",
                    "{{json .ContainerConfig.Cmd}}",
                    id,
                ],
            )
            .is_ok_and(|cmd| cmd.contains(marker))
        })
        .map(str::to_owned)
        .collect()
}

/// Whether a build step whose command contains `marker` runs on this machine: a classic
/// build's step runs in a container (`containers_running_command`), a BuildKit step in no
/// container the engine lists, as a process of its own (`processes_running_command`).
pub fn build_step_running(marker: &str) -> bool {
    !processes_running_command(marker).is_empty() || !containers_running_command(marker).is_empty()
}

/// The processes on this machine whose command line contains `marker` (the engine runs
/// here, so its build steps' processes are visible in `/proc`).
pub fn processes_running_command(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .contains(marker)
            })
        })
        .collect()
}

/// Containers on the shared engine, in any state, whose command contains `marker` (a
/// build's intermediate containers carry no labels).
pub fn containers_running_command(marker: &str) -> Vec<String> {
    docker(
        None,
        &["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}"],
    )
    .unwrap_or_default()
    .lines()
    .filter(|line| line.contains(marker))
    .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
    .collect()
}

/// What is left on the shared engine of an installation: containers, images, volumes and
/// networks carrying its label, one line each.
pub fn installation_leftovers(installation: &str) -> Vec<String> {
    let filter = format!("label=cantila.installation={installation}");
    let mut left = Vec::new();
    for (kind, args) in [
        ("container", vec!["ps", "-aq", "--filter", filter.as_str()]),
        ("image", vec!["images", "-aq", "--filter", filter.as_str()]),
        (
            "volume",
            vec!["volume", "ls", "-q", "--filter", filter.as_str()],
        ),
        (
            "network",
            vec!["network", "ls", "-q", "--filter", filter.as_str()],
        ),
    ] {
        let listed = docker(None, &args).unwrap_or_else(|err| panic!("docker {args:?}: {err}"));
        left.extend(listed.split_whitespace().map(|id| format!("{kind} {id}")));
    }
    left
}

/// Awaits `future`, panicking naming `what` when it takes longer than `deadline`: for
/// "answers, never hangs" checks, with a deadline far above the time expected, so a busy
/// machine never fails them and a hang always does.
pub async fn within<T>(deadline: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(deadline, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {deadline:?}"))
}

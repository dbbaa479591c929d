//! Test support: `TestDaemon` runs the whole daemon in-process on port 0 in a temp dir and
//! stops it on drop; helpers send requests and mint tokens for other accounts.

use std::{net::SocketAddr, path::Path, time::Duration};

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
use tokio::{sync::oneshot, task::JoinHandle};

pub struct TestDaemon {
    pub dir: Option<TempDir>,
    pub config: Config,
    pub api: SocketAddr,
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The bootstrap admin token the daemon wrote to `<data_dir>/admin-token`.
    pub admin_token: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
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
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    /// Starts a daemon on an existing data dir (used to restart).
    pub async fn start_in(dir: TempDir, config: Config) -> Self {
        let listeners = Listeners::ephemeral()
            .await
            .expect("bind ephemeral listeners");
        Self::start_on(dir, config, listeners).await
    }

    /// Starts a daemon on listeners the test bound (when a port must be known first).
    pub async fn start_on(dir: TempDir, config: Config, listeners: Listeners) -> Self {
        let api = listeners.api.local_addr().unwrap();
        let http = listeners.http.local_addr().unwrap();
        let https = listeners.https.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(cantila::run(config.clone(), listeners, async move {
            let _ = stopped.await;
        }));
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
            stop: Some(stop),
            task: Some(task),
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
        for _ in 0..200 {
            if let Some(task) = &self.task {
                if task.is_finished() {
                    let result = self.task.take().unwrap().await.unwrap();
                    panic!("daemon exited during start-up: {result:?}");
                }
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
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("daemon did not become ready within 5 s");
    }

    /// Stops the daemon gracefully and hands back its data dir.
    pub async fn stop(mut self) -> (TempDir, Config) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("daemon task")
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
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cantila"))
            .args([
                "serve",
                "--data-dir",
                &config.data_dir.display().to_string(),
            ])
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
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("deploy {deploy_id} never reached {wanted}");
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

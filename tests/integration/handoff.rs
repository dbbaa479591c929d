//! The edge never goes dark: steady traffic through the real binary's edge to a real app
//! across a SIGHUP hand-off to the binary now on disk, and across a restart under socket
//! activation (the test holds the listening sockets and passes them as systemd does);
//! and a new process that cannot start leaves the old one serving.
//!
//! A request on a keep-alive connection the old process closed is retried once, as a
//! client would; it counts as failed only when the retry fails too.

use std::{
    net::SocketAddr,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    deploys::Repo,
    support::{listener, wait_for, wait_until, within, TestDir},
};

/// The config of every daemon here: port 0 (or passed sockets), TLS off, the test
/// network, a short drain.
fn write_config(dir: &TestDir, extra: &str) -> PathBuf {
    let path = dir.path().join("cantila.toml");
    let data_dir = dir.path().join("data");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\nbase_domain = \"test.local\"\napi_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n[deploy]\nnetwork = \"cantila-test\"\ndrain_secs = 1\n{extra}",
            data_dir.display().to_string()
        ),
    )
    .unwrap();
    path
}

/// One "cantila is listening" line of the shared log: which process serves where.
#[derive(Debug, Clone, PartialEq)]
struct Listening {
    api: SocketAddr,
    http: SocketAddr,
    pid: u32,
}

fn listening_lines(log: &Path) -> Vec<Listening> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let field = |line: &str, name: &str| -> Option<String> {
        let rest = line.split(&format!(" {name}=")).nth(1)?;
        Some(rest.chars().take_while(|c| !c.is_whitespace()).collect())
    };
    text.lines()
        .filter(|line| line.contains("cantila is listening"))
        .filter_map(|line| {
            Some(Listening {
                api: field(line, "api")?.parse().ok()?,
                http: field(line, "http")?.parse().ok()?,
                pid: field(line, "pid")?.parse().ok()?,
            })
        })
        .collect()
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Daemon processes the test started (or that a hand-off started): each still running is
/// killed when the test ends, on success or panic, before its `TestDir` cleans up.
#[derive(Default)]
struct Processes {
    children: Vec<Child>,
    pids: Vec<u32>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in &self.pids {
            if alive(*pid) {
                signal(*pid, "KILL");
            }
        }
        for pid in &self.pids {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while alive(*pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Running, and not a zombie left for an init that does not reap (a hand-off's new
/// process outlives its parent, the test's child).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// The API of whichever process serves it, with the admin token.
struct Api {
    addr: SocketAddr,
    token: String,
    client: reqwest::Client,
}

impl Api {
    fn new(addr: SocketAddr, data_dir: &Path) -> Self {
        Self {
            addr,
            token: std::fs::read_to_string(data_dir.join("admin-token"))
                .expect("admin token")
                .trim()
                .to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(&self.token);
        if !body.is_null() {
            request = request.json(&body);
        }
        let res = request.send().await.expect("API request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Creates a project on `repo`, deploys it and waits until it runs.
    async fn deployed(&self, name: &str, repo: &Repo) -> String {
        let (status, project) = self
            .call(Method::POST, "/v1/projects", json!({ "name": name }))
            .await;
        assert_eq!(status, 201, "{project}");
        let id = project["id"].as_str().unwrap().to_owned();
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/projects/{id}/git"),
                json!({ "repo": repo.path().display().to_string() }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        self.deploy(&id).await;
        id
    }

    async fn deploy(&self, project_id: &str) {
        let (status, created) = self
            .call(
                Method::POST,
                &format!("/v1/projects/{project_id}/deploy"),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{created}");
        let deploy_id = created["deployId"].as_str().unwrap().to_owned();
        wait_until(Duration::from_secs(180), "the deploy runs", || async {
            let (_, deploy) = self
                .call(
                    Method::GET,
                    &format!("/v1/deploys/{deploy_id}"),
                    Value::Null,
                )
                .await;
            assert!(
                !["failed", "canceled", "superseded"]
                    .contains(&deploy["status"].as_str().unwrap_or("")),
                "{deploy}"
            );
            deploy["status"] == "running"
        })
        .await;
    }
}

/// Steady keep-alive traffic through the edge: a few client tasks, each on its own
/// connection, paced.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    retried: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(edge: SocketAddr, host: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let retried = Arc::new(AtomicU64::new(0));
        let tasks = (0..4)
            .map(|_| {
                let (stop, sent, failed, retried) =
                    (stop.clone(), sent.clone(), failed.clone(), retried.clone());
                let host = host.to_owned();
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .pool_max_idle_per_host(1)
                        .build()
                        .unwrap();
                    let get = || {
                        client
                            .get(format!("http://{edge}/"))
                            .header("host", &host)
                            .send()
                    };
                    let mut failures = Vec::new();
                    // Bounded: at most 100,000 requests per task.
                    for _ in 0..100_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let answer = match get().await {
                            Ok(res) => Ok(res),
                            Err(_) => {
                                retried.fetch_add(1, Ordering::Relaxed);
                                get().await
                            }
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        match answer {
                            Ok(res) if res.status().is_success() => {}
                            Ok(res) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                failures.push(format!("status {}", res.status()));
                            }
                            Err(err) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                failures.push(format!("{err:?}"));
                            }
                        }
                        // Paces the load (about 100 requests a second per task).
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    failures
                })
            })
            .collect();
        Self {
            stop,
            sent,
            failed,
            retried,
            tasks,
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until `more` requests went through after now.
    async fn flows(&self, more: u64, what: &str) {
        let from = self.sent();
        wait_until(Duration::from_secs(60), what, || async {
            self.sent() >= from + more
        })
        .await;
    }

    /// Stops the clients; returns (sent, failed, retried) and the failures seen.
    async fn finish(self) -> (u64, u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(task.await.unwrap());
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.retried.load(Ordering::Relaxed),
            failures,
        )
    }
}

/// Waits for the listening line of a process other than `not` (none: any).
async fn next_listening(log: &Path, not: Option<u32>) -> Listening {
    wait_for(Duration::from_secs(60), "a listening line", || async {
        let lines = listening_lines(log);
        assert!(
            !log_text(log).contains("upgrade failed"),
            "{}",
            log_text(log)
        );
        lines.into_iter().find(|line| Some(line.pid) != not)
    })
    .await
}

/// `cantila serve --config` from `binary`, its log (both processes of a hand-off share
/// it, as journald would) in `log`.
fn serve(binary: &Path, config: &Path, log: &Path) -> Child {
    Command::new(binary)
        .args(["serve", "--config", &config.display().to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .expect("start cantila serve")
}

/// Replaces `path` as an upgrade does: a new file renamed over it, so the running process's
/// /proc/self/exe reads "<path> (deleted)".
fn replace_binary(path: &Path) {
    let next = path.with_extension("new");
    std::fs::copy(env!("CARGO_BIN_EXE_cantila"), &next).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test]
async fn a_sighup_hands_over_to_the_binary_on_disk_without_failing_a_request() {
    let dir = TestDir::new();
    let mut processes = Processes::default();
    let config = write_config(&dir, "");
    let log = dir.path().join("cantila.log");
    let binary = dir.path().join("cantila");
    replace_binary(&binary);
    let old = serve(&binary, &config, &log);
    let old_pid = old.id();
    processes.children.push(old);
    let first = next_listening(&log, None).await;
    assert_eq!(first.pid, old_pid);
    let api = Api::new(first.api, &dir.path().join("data"));
    let repo = Repo::busybox("before the hand-off\n");
    let project = api.deployed("steady", &repo).await;
    let host = "steady.admin.test.local";

    let load = Load::start(first.http, host);
    load.flows(50, "traffic through the old process").await;
    replace_binary(&binary);
    signal(old_pid, "HUP");
    let second = next_listening(&log, Some(old_pid)).await;
    processes.pids.push(second.pid);
    assert_eq!(
        (second.api, second.http),
        (first.api, first.http),
        "the new process serves the same sockets"
    );
    let mut old = processes.children.remove(0);
    let status = within(
        Duration::from_secs(60),
        "the old process exits",
        tokio::task::spawn_blocking(move || old.wait().unwrap()),
    )
    .await
    .unwrap();
    assert!(status.success(), "the old process exits cleanly: {status}");
    assert!(alive(second.pid), "the new process serves on");
    load.flows(100, "traffic through the new process alone")
        .await;

    // The new process's API and background work: a redeploy goes through its worker.
    repo.commit(&[("www/index.html", "after the hand-off\n")], "bump");
    api.deploy(&project).await;
    load.flows(50, "traffic after a redeploy by the new process")
        .await;
    let (sent, failed, retried, failures) = load.finish().await;
    assert!(sent > 200, "traffic flowed: {sent}");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed across the hand-off ({retried} retried): {failures:?}"
    );
    // Background work moved, never ran twice: the new process started its own only after
    // the old one had closed its store (both log to one file, in order).
    let text = log_text(&log);
    let old_done = text
        .find("hand-off done")
        .expect("the old process logged its end");
    let new_started = text
        .find("the old process exited; starting background work")
        .expect("the new process logged its start of background work");
    assert!(old_done < new_started, "{text}");
    let answer = reqwest::Client::new()
        .get(format!("http://{}/", second.http))
        .header("host", host)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(answer, "after the hand-off\n");

    signal(second.pid, "TERM");
    wait_until(Duration::from_secs(60), "the new process stops", || async {
        !alive(second.pid)
    })
    .await;
}

#[tokio::test]
async fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let dir = TestDir::new();
    let mut processes = Processes::default();
    let config = write_config(&dir, "[edge]\ndrain_timeout_secs = 1\n");
    let log = dir.path().join("cantila.log");
    let old = serve(Path::new(env!("CARGO_BIN_EXE_cantila")), &config, &log);
    let old_pid = old.id();
    processes.children.push(old);
    let first = next_listening(&log, None).await;
    let api = Api::new(first.api, &dir.path().join("data"));

    // The new process reads the config again, and this one has a typo.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\n[api]\nmax_body_bites = 10\n")).unwrap();
    signal(old_pid, "HUP");
    wait_until(
        Duration::from_secs(60),
        "the failed upgrade is logged",
        || async { log_text(&log).contains("upgrade failed") },
    )
    .await;
    let text = log_text(&log);
    assert!(
        text.contains("exited before it was ready") && text.contains("this process keeps serving"),
        "{text}"
    );
    assert!(alive(old_pid));
    assert_eq!(listening_lines(&log).len(), 1, "{text}");
    let (status, _) = api.call(Method::GET, "/v1/projects", Value::Null).await;
    assert_eq!(status, 200, "the old process still serves its API");
    let edge = reqwest::Client::new()
        .get(format!("http://{}/", first.http))
        .header("host", "nothing.test.local")
        .send()
        .await
        .unwrap();
    assert_eq!(edge.status(), 404, "and its edge");

    // Fixed, the next SIGHUP hands over, even with a followed log stream open on the old
    // process's API (a connection that never ends by itself): it is closed after the drain.
    let (status, project) = api
        .call(Method::POST, "/v1/projects", json!({ "name": "quiet" }))
        .await;
    assert_eq!(status, 201, "{project}");
    let follow = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/projects/{}/logs?follow=true",
            first.api,
            project["id"].as_str().unwrap()
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    std::fs::write(&config, good).unwrap();
    signal(old_pid, "HUP");
    let second = wait_for(Duration::from_secs(60), "the second hand-off", || async {
        listening_lines(&log)
            .into_iter()
            .find(|line| line.pid != old_pid)
    })
    .await;
    processes.pids.push(second.pid);
    let mut old = processes.children.remove(0);
    let status = within(
        Duration::from_secs(60),
        "the old process exits despite the open stream",
        tokio::task::spawn_blocking(move || old.wait().unwrap()),
    )
    .await
    .unwrap();
    assert!(status.success(), "{status}");
    let text = log_text(&log);
    assert!(
        text.contains("hand-off: connections still open after the drain; closing them"),
        "{text}"
    );
    within(
        Duration::from_secs(10),
        "the stream ends with the old process",
        follow.bytes(),
    )
    .await
    .ok();
    let (status, _) = api.call(Method::GET, "/v1/projects", Value::Null).await;
    assert_eq!(status, 200);
    signal(second.pid, "TERM");
    wait_until(Duration::from_secs(60), "the new process stops", || async {
        !alive(second.pid)
    })
    .await;
}

/// Starts `cantila serve` as systemd would with socket activation: the sockets at
/// descriptors 3, 4 and 5 (api, http, https, unnamed), LISTEN_FDS=3 and LISTEN_PID set
/// to the process itself (by the shell that then becomes the daemon).
fn serve_activated(config: &Path, log: &Path, sockets: &[&std::net::TcpListener; 3]) -> Child {
    // Copies at 10 and above (so the shell's redirections cannot clobber one another),
    // inheritable: the exec below keeps them.
    let copies: Vec<OwnedFd> = sockets
        .iter()
        .map(|socket| {
            let copy = rustix::io::fcntl_dupfd_cloexec(socket, 10).unwrap();
            rustix::io::fcntl_setfd(&copy, rustix::io::FdFlags::empty()).unwrap();
            copy
        })
        .collect();
    let [a, b, c] = [0, 1, 2].map(|i| copies[i].as_raw_fd());
    let script = format!(
        "export LISTEN_PID=$$ LISTEN_FDS=3; exec \"$0\" \"$@\" 3<&{a} 4<&{b} 5<&{c} {a}<&- {b}<&- {c}<&-"
    );
    let child = Command::new("bash")
        .args(["-c", &script, env!("CARGO_BIN_EXE_cantila")])
        .args(["serve", "--config", &config.display().to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .expect("start cantila serve under socket activation");
    drop(copies);
    child
}

#[tokio::test]
async fn a_restart_under_socket_activation_fails_no_request() {
    let dir = TestDir::new();
    let mut processes = Processes::default();
    let config = write_config(&dir, "");
    let log = dir.path().join("cantila.log");
    // What systemd's socket unit holds across the daemon's restarts.
    let sockets = [
        listener("127.0.0.1:0"),
        listener("127.0.0.1:0"),
        listener("127.0.0.1:0"),
    ];
    let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let passed = [&sockets[0], &sockets[1], &sockets[2]];
    let first = serve_activated(&config, &log, &passed);
    let first_pid = first.id();
    processes.children.push(first);
    let listening = next_listening(&log, None).await;
    assert_eq!(listening.pid, first_pid, "bash exec'd into the daemon");
    assert_eq!(
        (listening.api, listening.http),
        (addrs[0], addrs[1]),
        "the daemon serves the passed sockets, not port 0"
    );
    let api = Api::new(addrs[0], &dir.path().join("data"));
    let repo = Repo::busybox("socket activated\n");
    api.deployed("steady", &repo).await;
    let load = Load::start(addrs[1], "steady.admin.test.local");
    load.flows(50, "traffic through the first process").await;

    // A restart as systemd does it: stop, wait, start again on the same sockets.
    signal(first_pid, "TERM");
    let mut first = processes.children.remove(0);
    let status = within(
        Duration::from_secs(60),
        "the first process stops",
        tokio::task::spawn_blocking(move || first.wait().unwrap()),
    )
    .await
    .unwrap();
    assert!(status.success(), "{status}");
    let second = serve_activated(&config, &log, &passed);
    let second_pid = second.id();
    processes.children.push(second);
    let listening = next_listening(&log, Some(first_pid)).await;
    assert_eq!(
        (listening.pid, listening.api, listening.http),
        (second_pid, addrs[0], addrs[1])
    );
    load.flows(100, "traffic through the second process").await;
    let (sent, failed, retried, failures) = load.finish().await;
    assert!(sent > 150, "traffic flowed: {sent}");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed across the restart ({retried} retried): {failures:?}"
    );
    let (status, _) = api.call(Method::GET, "/v1/projects", Value::Null).await;
    assert_eq!(status, 200);
}

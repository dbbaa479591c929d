//! The daemon's life: first start, restart with state kept, refusing a newer database,
//! bind failures, config typos, and a graceful SIGTERM of the real binary.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::json;

use crate::{
    cli::cantila,
    support::{test_config, wait_until, TestDaemon, TestDir},
};

#[tokio::test]
async fn first_start_writes_a_private_admin_token() {
    let daemon = TestDaemon::start().await;
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&daemon.config.admin_token_path()), 0o600);
    assert_eq!(mode(daemon.data_dir()), 0o700);
    assert_eq!(mode(&daemon.config.database_path()), 0o600);
    let me = daemon
        .get("/v1/account", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    assert_eq!(
        (me["handle"].as_str(), me["scope"].as_str()),
        (Some("admin"), Some("admin"))
    );
}

#[tokio::test]
async fn a_restart_keeps_all_state() {
    let daemon = TestDaemon::start().await;
    let project = daemon.create_project("keeper").await;
    let deploy = daemon.token("deploy").await;
    let admin = daemon.admin_token.clone();
    let daemon = daemon.restart().await;
    assert_eq!(
        daemon.admin_token, admin,
        "the token file is not rewritten on restart"
    );
    let fetched = daemon
        .get(
            &format!("/v1/projects/{}", project["id"].as_str().unwrap()),
            &deploy,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(fetched, project);
    let audit = daemon.get("/v1/audit", &admin).await.expect(200).body;
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "project.create"));
    // The clean stop checkpointed the WAL.
    let (dir, config) = daemon.stop().await;
    let wal = config.database_path().with_extension("db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
    drop(dir);
}

#[tokio::test]
async fn a_database_from_a_newer_binary_is_refused() {
    let daemon = TestDaemon::start().await;
    let (dir, config) = daemon.stop().await;
    let connection = rusqlite::Connection::open(config.database_path()).unwrap();
    connection.pragma_update(None, "user_version", 999).unwrap();
    drop(connection);
    let listeners = cantila::Listeners::ephemeral().await.unwrap();
    let err = cantila::run(config.clone(), listeners, std::future::pending())
        .await
        .expect_err("a newer schema must be refused");
    let message = format!("{err:#}");
    assert!(
        message.contains("999") && message.contains("newer"),
        "{message}"
    );
    // Nothing was changed.
    let connection = rusqlite::Connection::open(config.database_path()).unwrap();
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 999);
    drop(dir);
}

#[tokio::test]
async fn a_taken_port_stops_start_up_naming_the_address_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data_dir = dir.path().join("data").display().to_string();
    let out = cantila(
        vec![
            "serve".into(),
            "--data-dir".into(),
            data_dir,
            "--api-listen".into(),
            "127.0.0.1:0".into(),
            "--http-listen".into(),
            addr.clone(),
            "--https-listen".into(),
            "127.0.0.1:0".into(),
        ],
        vec![],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("--http-listen"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_config_typo_is_reported_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cantila.toml");
    std::fs::write(
        &path,
        "base_domain = \"example.com\"\n[api]\nmax_body_bites = 10\n",
    )
    .unwrap();
    let out = cantila(
        vec![
            "serve".into(),
            "--config".into(),
            path.display().to_string(),
        ],
        vec![],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max_body_bites") && stderr.contains("line 3"),
        "{stderr}"
    );
}

#[tokio::test]
async fn flags_and_environment_override_the_config_file() {
    let dir = TestDir::new();
    let config = test_config(dir.path());
    let path = dir.path().join("cantila.toml");
    std::fs::write(
        &path,
        "base_domain = \"from-file.example\"\napi_listen = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cantila"))
        .args([
            "serve",
            "--config",
            &path.display().to_string(),
            "--api-listen",
            "127.0.0.1:0",
        ])
        .env("CANTILA_DATA_DIR", &config.data_dir)
        .env("CANTILA_HTTP_LISTEN", "127.0.0.1:0")
        .env("CANTILA_HTTPS_LISTEN", "127.0.0.1:0")
        .env("CANTILA_BASE_DOMAIN", "from-env.example")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _child = KillOnDrop(child);
    let api = wait_for_api_address(stderr).await;
    let token = std::fs::read_to_string(config.admin_token_path()).unwrap();
    let client = reqwest::Client::new();
    let project: serde_json::Value = client
        .post(format!("http://{api}/v1/projects"))
        .bearer_auth(token.trim())
        .json(&json!({ "name": "where" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(project["hostname"], "where.admin.from-env.example");
}

/// Kills the child process on drop, so a failed assertion leaves no daemon behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the daemon's log until the "listening" line and returns the API address; the
/// rest of the log is drained on a thread so the daemon never blocks on a full pipe.
pub async fn wait_for_api_address(stderr: std::process::ChildStderr) -> String {
    let (address_tx, address_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut address_tx = Some(address_tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("api=").nth(1) {
                if let Some(tx) = address_tx.take() {
                    let address: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = tx.send(address);
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), address_rx)
        .await
        .expect("daemon logged its addresses")
        .expect("log ended before the listening line")
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_logs_never_hold_tokens() {
    let dir = TestDir::new();
    let config = test_config(dir.path());
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cantila"))
        .args([
            "serve",
            "--data-dir",
            &config.data_dir.display().to_string(),
        ])
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--https-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "debug")
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut child = KillOnDrop(child);
    let mut api = None;
    for _ in 0..200 {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(rest) = text.split("api=").nth(1) {
            api = Some(
                rest.chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect::<String>(),
            );
            break;
        }
        // The poll interval: the loop checks its condition again.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api = api.expect("daemon logged its API address");
    let token = std::fs::read_to_string(config.admin_token_path())
        .unwrap()
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let res = client
            .get(format!("http://{api}/v1/projects"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let res = client
        .get(format!("http://{api}/v1/projects"))
        .bearer_auth("sk_live_guessed123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "SIGTERM is a clean exit: {exit:?}");
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("stopped cleanly"), "{text}");
    assert!(
        text.contains("cantila::access"),
        "access log lines present: {text}"
    );
    assert!(
        !text.contains(&token),
        "the admin token leaked into the log"
    );
    assert!(
        !text.contains("sk_live_guessed123"),
        "a presented token leaked into the log"
    );
    assert!(
        text.contains(&config.admin_token_path().display().to_string()),
        "the token path is logged"
    );
}

#[tokio::test]
async fn the_edge_answers_unknown_hosts_with_a_plain_404() {
    let daemon = TestDaemon::start().await;
    let res = reqwest::Client::new()
        .get(format!("http://{}/", daemon.http))
        .header("host", "nothing.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body = res.text().await.unwrap();
    assert!(body.contains("nothing.example.com"), "{body}");
}

/// Whether a thread of process `pid` is blocked sending a datagram to a Unix socket whose
/// queue is full (the kernel's `unix_wait_for_peer`).
fn blocked_on_a_full_socket(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("wchan"))
            .is_ok_and(|wchan| wchan.trim() == "unix_wait_for_peer")
    })
}

#[tokio::test]
async fn systemd_is_told_ready_only_after_the_admin_token_is_written() {
    use std::os::unix::net::UnixDatagram;
    let dir = TestDir::new();
    let config = test_config(dir.path());
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The notification socket's queue is filled first, so the daemon's READY blocks in
    // its send until the test reads. While it is blocked the daemon cannot move on, so
    // the token file is checked in the state the daemon was in when it sent READY: a
    // READY sent before the token is written finds no token.
    let filler = UnixDatagram::unbound().unwrap();
    filler.connect(&socket_path).unwrap();
    filler.set_nonblocking(true).unwrap();
    let mut queued = 0;
    while filler.send(b"FILLER=1\n").is_ok() {
        queued += 1;
    }
    assert!(queued > 0, "the notification socket took no datagram");
    let child = Command::new(env!("CARGO_BIN_EXE_cantila"))
        .args([
            "serve",
            "--data-dir",
            &config.data_dir.display().to_string(),
        ])
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--https-listen",
            "127.0.0.1:0",
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _child = KillOnDrop(child);
    wait_until(
        Duration::from_secs(20),
        "the daemon sends its notification (and waits on the full queue)",
        || async move { blocked_on_a_full_socket(pid) },
    )
    .await;
    let token_written = config.admin_token_path().exists();
    let notification = tokio::task::spawn_blocking(move || {
        let mut buffer = [0u8; 256];
        let mut read = || {
            let size = socket
                .recv(&mut buffer)
                .expect("a notification within 20 s");
            String::from_utf8_lossy(&buffer[..size]).into_owned()
        };
        for _ in 0..queued {
            assert_eq!(read(), "FILLER=1\n");
        }
        read()
    })
    .await
    .unwrap();
    assert!(notification.contains("READY=1"), "{notification}");
    assert!(
        token_written,
        "READY was sent before the admin token was written"
    );
}

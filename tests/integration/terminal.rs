//! Exec into instances on the real engine, over the WebSocket protocol `cantila.v1`: a
//! command in a named instance of a deployed project (output by channel, exit code, stdin),
//! the browser's subprotocol authentication and a bad token refused, another account's
//! project and exec not found, a client that leaves hanging the terminal up (or closing
//! stdin), and the CLI's `exec -it` driven inside a pseudo-terminal: typed input echoed,
//! a resize reaching the process, the exit code returned, the local terminal restored.
//! Interactive runs the same way (`run -it`, `GET /v1/runs/{id}/attach`).

use std::time::Duration;

use cantila::names::Scope;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, http::HeaderValue, Message},
    MaybeTlsStream, WebSocketStream,
};

use crate::{
    deploys::{cleanup, Repo},
    runs::wait_run,
    support::{wait_until, within, TestDaemon},
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A deployed busybox app; returns the project id and its web instance's id.
async fn deployed(daemon: &TestDaemon, name: &str) -> (String, String) {
    let repo = Repo::busybox("terminal\n");
    let (project_id, _) = daemon.connected_project(name, &repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    let instances = daemon
        .get(
            &format!("/v1/projects/{project_id}/instances"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let instance = instances["instances"][0]["id"].as_str().unwrap().to_owned();
    (project_id, instance)
}

/// Creates an exec; returns its attach path.
async fn create_exec(daemon: &TestDaemon, project_id: &str, instance: &str, body: Value) -> String {
    let created = daemon
        .post(
            &format!("/v1/projects/{project_id}/instances/{instance}/exec"),
            &daemon.admin_token,
            body,
        )
        .await
        .expect(201)
        .body;
    assert!(created["execId"].as_str().unwrap().starts_with("exe_"));
    created["attachUrl"].as_str().unwrap().to_owned()
}

/// How an attach authenticates.
enum Credential<'a> {
    Bearer(&'a str),
    Subprotocol(&'a str),
}

/// Opens an attach WebSocket; the handshake's HTTP status when it is refused.
async fn attach(
    daemon: &TestDaemon,
    path: &str,
    credential: Credential<'_>,
) -> Result<(Socket, Option<String>), u16> {
    let mut request = format!("ws://{}{path}", daemon.api)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    match credential {
        Credential::Bearer(token) => {
            headers.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        Credential::Subprotocol(token) => {
            headers.insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&format!("cantila.v1, cantila.token.{token}")).unwrap(),
            );
        }
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|value| value.to_str().unwrap().to_owned());
            Ok((socket, protocol))
        }
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("the handshake failed: {err}"),
    }
}

/// What a session sent until its close.
#[derive(Debug, Default)]
struct Received {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: Option<i64>,
    errors: Vec<String>,
}

/// Reads the session to its close.
async fn read_all(socket: &mut Socket) -> Received {
    let mut received = Received::default();
    within(Duration::from_secs(60), "the session's end", async {
        while let Some(message) = socket.next().await {
            match message.unwrap() {
                Message::Binary(frame) => match frame.split_first() {
                    Some((1, bytes)) => received.stdout.extend_from_slice(bytes),
                    Some((2, bytes)) => received.stderr.extend_from_slice(bytes),
                    other => panic!("a frame on no channel: {other:?}"),
                },
                Message::Text(text) => {
                    assert!(
                        received.exit_code.is_none(),
                        "nothing after the exit: {text}"
                    );
                    let control: Value = serde_json::from_str(&text).unwrap();
                    match control["type"].as_str().unwrap() {
                        "exit" => received.exit_code = control["exitCode"].as_i64(),
                        "error" => received
                            .errors
                            .push(control["message"].as_str().unwrap().to_owned()),
                        other => panic!("unknown control message {other}"),
                    }
                }
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    })
    .await;
    received
}

fn stdin(bytes: &[u8]) -> Message {
    let mut frame = vec![0];
    frame.extend_from_slice(bytes);
    Message::Binary(frame.into())
}

/// The processes of the instance whose command line holds `marker`, as its own `ps`
/// lists them (through another exec).
async fn processes_with(
    daemon: &TestDaemon,
    project_id: &str,
    instance: &str,
    marker: &str,
) -> Vec<String> {
    let path = create_exec(
        daemon,
        project_id,
        instance,
        json!({"command": ["ps", "-o", "pid,args"]}),
    )
    .await;
    let (mut socket, _) = attach(daemon, &path, Credential::Bearer(&daemon.admin_token))
        .await
        .unwrap();
    let received = read_all(&mut socket).await;
    assert_eq!(received.exit_code, Some(0), "{received:?}");
    String::from_utf8_lossy(&received.stdout)
        .lines()
        .filter(|line| line.contains(marker) && !line.contains("ps -o"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn exec_runs_in_a_named_instance_with_output_by_channel_stdin_and_its_exit_code() {
    let daemon = TestDaemon::start().await;
    let (project_id, instance) = deployed(&daemon, "exec-named").await;

    // Output by channel and the exit code. The container's hostname is its short id,
    // which is the instance's id: the command ran in the instance named.
    let path = create_exec(
        &daemon,
        &project_id,
        &instance,
        json!({"command": ["sh", "-c", "cat /etc/hostname; echo oops >&2; exit 4"]}),
    )
    .await;
    let (mut socket, _) = attach(&daemon, &path, Credential::Bearer(&daemon.admin_token))
        .await
        .unwrap();
    let received = read_all(&mut socket).await;
    assert_eq!(
        String::from_utf8_lossy(&received.stdout),
        format!("{instance}\n")
    );
    assert_eq!(String::from_utf8_lossy(&received.stderr), "oops\n");
    assert_eq!(received.exit_code, Some(4), "{received:?}");
    assert!(received.errors.is_empty(), "{received:?}");

    // An exec is attached once.
    assert_eq!(
        attach(&daemon, &path, Credential::Bearer(&daemon.admin_token))
            .await
            .err(),
        Some(404)
    );

    // Stdin reaches the command; `stdinClose` ends it.
    let path = create_exec(&daemon, &project_id, &instance, json!({"command": ["cat"]})).await;
    let (mut socket, _) = attach(&daemon, &path, Credential::Bearer(&daemon.admin_token))
        .await
        .unwrap();
    socket.send(stdin(b"piped through\n")).await.unwrap();
    socket
        .send(Message::Text(r#"{"type":"stdinClose"}"#.into()))
        .await
        .unwrap();
    let received = read_all(&mut socket).await;
    assert_eq!(String::from_utf8_lossy(&received.stdout), "piped through\n");
    assert_eq!(received.exit_code, Some(0), "{received:?}");

    // `any` picks a running web instance; a bad control message is answered, the
    // session goes on.
    let path = create_exec(
        &daemon,
        &project_id,
        "any",
        json!({"command": ["cat", "/etc/hostname"], "process": "web"}),
    )
    .await;
    let (mut socket, _) = attach(&daemon, &path, Credential::Bearer(&daemon.admin_token))
        .await
        .unwrap();
    socket
        .send(Message::Text(r#"{"type":"dance"}"#.into()))
        .await
        .unwrap();
    let received = read_all(&mut socket).await;
    assert_eq!(
        String::from_utf8_lossy(&received.stdout),
        format!("{instance}\n")
    );
    assert_eq!(received.exit_code, Some(0));

    // Every exec is in the audit log with its command.
    let audit = daemon
        .get("/v1/audit", &daemon.admin_token)
        .await
        .expect(200)
        .body;
    let targets: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] == "instance.exec")
        .map(|entry| entry["target"].as_str().unwrap())
        .collect();
    assert!(
        targets.iter().any(|t| t.contains(&instance)
            && t.ends_with(r#"sh -c "cat /etc/hostname; echo oops >&2; exit 4""#)),
        "{targets:?}"
    );

    // Bad requests name their field; the terminal's bounds hold on both sides.
    let exec_path = format!("/v1/projects/{project_id}/instances/{instance}/exec");
    for (body, field) in [
        (json!({"command": []}), "command"),
        (json!({"command": ["sh"], "cols": 0}), "cols"),
        (json!({"command": ["sh"], "rows": 1001}), "rows"),
        (json!({"command": ["sh"], "cols": 70000}), "cols"),
        (json!({"command": ["sh"], "process": "no such!"}), "process"),
    ] {
        let res = daemon
            .post(&exec_path, &daemon.admin_token, body.clone())
            .await;
        assert_eq!(res.status, 422, "{body}: {:?}", res.body);
        assert!(
            res.error_message().contains(field),
            "{body}: {}",
            res.error_message()
        );
    }
    for (cols, rows) in [(1, 1), (1000, 1000)] {
        daemon
            .post(
                &exec_path,
                &daemon.admin_token,
                json!({"command": ["true"], "tty": true, "cols": cols, "rows": rows}),
            )
            .await
            .expect(201);
    }
    let res = daemon
        .post(
            &format!("/v1/projects/{project_id}/instances/nosuchinstance/exec"),
            &daemon.admin_token,
            json!({"command": ["true"]}),
        )
        .await;
    assert_eq!(res.status, 404);
    let res = daemon
        .post(
            &format!("/v1/projects/{project_id}/instances/any/exec"),
            &daemon.admin_token,
            json!({"command": ["true"], "process": "worker"}),
        )
        .await;
    assert_eq!(res.status, 404, "no worker runs");
    cleanup(&project_id).await;
}

#[tokio::test]
async fn browsers_authenticate_with_the_subprotocol_and_other_accounts_find_nothing() {
    let daemon = TestDaemon::start().await;
    let (project_id, instance) = deployed(&daemon, "exec-auth").await;
    let exec_path = format!("/v1/projects/{project_id}/instances/{instance}/exec");

    // The browser's form: the token in a subprotocol, answered with `cantila.v1`.
    let path = create_exec(
        &daemon,
        &project_id,
        &instance,
        json!({"command": ["echo", "hi"]}),
    )
    .await;
    let (mut socket, protocol) =
        attach(&daemon, &path, Credential::Subprotocol(&daemon.admin_token))
            .await
            .unwrap();
    assert_eq!(protocol.as_deref(), Some("cantila.v1"));
    let received = read_all(&mut socket).await;
    assert_eq!(String::from_utf8_lossy(&received.stdout), "hi\n");
    assert_eq!(received.exit_code, Some(0));

    // A bad token is refused before anything starts, in either form, and the exec still
    // waits for its rightful client.
    let path = create_exec(
        &daemon,
        &project_id,
        &instance,
        json!({"command": ["echo", "mine"]}),
    )
    .await;
    assert_eq!(
        attach(&daemon, &path, Credential::Subprotocol("sk_live_wrong"))
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        attach(&daemon, &path, Credential::Bearer("sk_live_wrong"))
            .await
            .err(),
        Some(401)
    );
    // A read token cannot exec.
    let read = daemon.token("read").await;
    assert_eq!(
        attach(&daemon, &path, Credential::Subprotocol(&read))
            .await
            .err(),
        Some(403)
    );
    let res = daemon
        .post(&exec_path, &read, json!({"command": ["true"]}))
        .await;
    assert_eq!(res.status, 403);

    // Another account: the project, its instance and its exec are not found.
    let other = daemon.other_account_token("mallory", Scope::Deploy);
    let res = daemon
        .post(&exec_path, &other, json!({"command": ["true"]}))
        .await;
    assert_eq!(res.status, 404, "{:?}", res.body);
    assert_eq!(
        attach(&daemon, &path, Credential::Bearer(&other))
            .await
            .err(),
        Some(404)
    );
    let (mut socket, _) = attach(&daemon, &path, Credential::Bearer(&daemon.admin_token))
        .await
        .unwrap();
    let received = read_all(&mut socket).await;
    assert_eq!(String::from_utf8_lossy(&received.stdout), "mine\n");
    cleanup(&project_id).await;
}

#[tokio::test]
async fn a_client_that_leaves_hangs_the_terminal_up_or_closes_stdin() {
    let daemon = TestDaemon::start().await;
    let (project_id, instance) = deployed(&daemon, "exec-hangup").await;

    // With a terminal: the shell gets SIGHUP (the engine alone would leave it running).
    let path = create_exec(
        &daemon,
        &project_id,
        &instance,
        json!({"command": ["sh", "-c", "sleep 1001; echo never"], "tty": true}),
    )
    .await;
    let (mut socket, _) = attach(&daemon, &path, Credential::Bearer(&daemon.admin_token))
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "the sleep to run", || async {
        !processes_with(&daemon, &project_id, &instance, "sleep 1001")
            .await
            .is_empty()
    })
    .await;
    socket.close(None).await.unwrap();
    drop(socket);
    wait_until(
        Duration::from_secs(30),
        "the hung-up sleep to end",
        || async {
            processes_with(&daemon, &project_id, &instance, "sleep 1001")
                .await
                .is_empty()
        },
    )
    .await;

    // Without a terminal: its stdin closes, so `cat` reads its end and exits.
    let path = create_exec(
        &daemon,
        &project_id,
        &instance,
        json!({"command": ["cat", "-"]}),
    )
    .await;
    let (mut socket, _) = attach(&daemon, &path, Credential::Bearer(&daemon.admin_token))
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "cat to run", || async {
        !processes_with(&daemon, &project_id, &instance, "cat -")
            .await
            .is_empty()
    })
    .await;
    socket.close(None).await.unwrap();
    drop(socket);
    wait_until(Duration::from_secs(30), "cat to end", || async {
        processes_with(&daemon, &project_id, &instance, "cat -")
            .await
            .is_empty()
    })
    .await;
    cleanup(&project_id).await;
}

/// A pseudo-terminal: the test holds the master side (what a terminal emulator holds) and
/// hands the slave side to the CLI as its stdin, stdout and stderr.
struct Pty {
    master: std::fs::File,
    slave: std::fs::File,
    /// What the CLI wrote to its terminal, as it comes.
    output: tokio::sync::mpsc::Receiver<Vec<u8>>,
    /// Everything read so far.
    seen: Vec<u8>,
}

impl Pty {
    fn open(cols: u16, rows: u16) -> Self {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        use std::os::unix::fs::OpenOptionsExt;
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(name.to_str().unwrap())
            .unwrap();
        let master = std::fs::File::from(master);
        let pty = |cols, rows| rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, pty(cols, rows)).unwrap();
        let (sender, output) = tokio::sync::mpsc::channel(64);
        let mut reader = master.try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buffer = [0u8; 4096];
            // Ends when the slave side is closed everywhere (EIO) or the test is done.
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                if sender.blocking_send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            master,
            slave,
            output,
            seen: Vec::new(),
        }
    }

    fn resize(&self, cols: u16, rows: u16) {
        rustix::termios::tcsetwinsize(
            &self.master,
            rustix::termios::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .unwrap();
    }

    /// Types `keys` as a user would.
    fn type_keys(&mut self, keys: &[u8]) {
        use std::io::Write;
        self.master.write_all(keys).unwrap();
    }

    /// Reads until the output since `from` holds `needle`; returns where it ends.
    async fn expect(&mut self, from: usize, needle: &str) -> usize {
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let text =
                    String::from_utf8_lossy(&self.seen[from.min(self.seen.len())..]).into_owned();
                if let Some(at) = text.find(needle) {
                    return Some(from + at + needle.len());
                }
                match self.output.recv().await {
                    Some(bytes) => self.seen.extend_from_slice(&bytes),
                    None => return None,
                }
            }
        })
        .await;
        match found {
            Ok(Some(at)) => at,
            Ok(None) | Err(_) => panic!(
                "`{needle}` did not show on the terminal; it showed: {:?}",
                String::from_utf8_lossy(&self.seen)
            ),
        }
    }

    fn mode(&self) -> rustix::termios::Termios {
        rustix::termios::tcgetattr(&self.slave).unwrap()
    }
}

/// The CLI binary's command with the daemon's URL and token.
fn cli(daemon: &TestDaemon, program: &str, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env_remove("CANTILA_DATA_DIR")
        .env_remove("CANTILA_CONFIG")
        .env("CANTILA_URL", format!("http://{}", daemon.api))
        .env("CANTILA_TOKEN", &daemon.admin_token);
    command
}

#[tokio::test]
async fn cli_exec_pipes_stdio_and_exits_with_the_command_code() {
    let daemon = TestDaemon::start().await;
    let (project_id, instance) = deployed(&daemon, "exec-cli").await;
    let run = |args: Vec<String>, input: &'static [u8]| {
        let mut command = cli(&daemon, env!("CARGO_BIN_EXE_cantila"), &[]);
        command
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = command.spawn().unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            child.wait_with_output().unwrap()
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let out = run(
        args(&[
            "exec",
            "exec-cli",
            "--",
            "sh",
            "-c",
            "cat /etc/hostname; echo err >&2; exit 3",
        ]),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{instance}\n")
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(3));

    // -i sends stdin, to its end.
    let out = run(
        args(&[
            "exec",
            "-i",
            "exec-cli",
            "--instance",
            &instance,
            "--",
            "wc",
            "-c",
        ]),
        b"twelve bytes",
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The API's refusal is the CLI's error.
    let out = run(
        args(&["exec", "exec-cli", "--instance", "nosuch", "--", "true"]),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("instance `nosuch` not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cleanup(&project_id).await;
}

#[tokio::test]
async fn cli_exec_it_in_a_pseudo_terminal_echoes_resizes_interrupts_and_restores_the_terminal() {
    let daemon = TestDaemon::start().await;
    let (project_id, instance) = deployed(&daemon, "exec-tty").await;
    let mut pty = Pty::open(80, 24);
    let before = pty.mode();
    assert!(
        before
            .local_modes
            .contains(rustix::termios::LocalModes::ICANON),
        "a fresh terminal is cooked"
    );
    // `setsid -c` makes the terminal the CLI's controlling terminal, as a login shell's
    // child has it, so the kernel sends it SIGWINCH on a resize.
    let mut command = cli(
        &daemon,
        "setsid",
        &[
            "-w",
            "-c",
            env!("CARGO_BIN_EXE_cantila"),
            "exec",
            "-it",
            "exec-tty",
            "--instance",
            &instance,
            "--",
            "sh",
        ],
    );
    command
        .stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    let mut child = command.spawn().unwrap();

    // The remote shell's prompt, then typed input echoed by the remote terminal and run.
    let at = pty.expect(0, "# ").await;
    assert!(
        !pty.mode()
            .local_modes
            .contains(rustix::termios::LocalModes::ICANON),
        "raw mode while the session runs"
    );
    pty.type_keys(b"echo typed-$((6*7))\r");
    let at = pty.expect(at, "echo typed-$((6*7))").await;
    let at = pty.expect(at, "typed-42").await;

    // The terminal's size at the start, then a resize reaching the process.
    pty.type_keys(b"stty size\r");
    let at = pty.expect(at, "24 80").await;
    pty.resize(132, 50);
    let mut at = at;
    within(
        Duration::from_secs(60),
        "the resize to reach the shell",
        async {
            loop {
                pty.type_keys(b"stty size\r");
                let shown = pty.expect(at, "# ").await;
                let text = String::from_utf8_lossy(&pty.seen[at..shown]).into_owned();
                at = shown;
                if text.contains("50 132") {
                    break;
                }
            }
        },
    )
    .await;

    // Ctrl-C is a byte for the remote terminal: it interrupts the remote command, and the
    // session goes on.
    // (`sleep-2` shows once the command runs in the terminal's foreground.)
    pty.type_keys(b"sh -c 'echo sleep-$((1+1)); exec sleep 1000'\r");
    let at = pty.expect(at, "sleep-2").await;
    pty.type_keys(&[0x03]);
    let at = pty.expect(at, "# ").await;
    pty.type_keys(b"echo still-here\r");
    let at = pty.expect(at, "still-here").await;

    // The shell's exit code is the CLI's, and the terminal is as it was.
    pty.type_keys(b"exit 7\r");
    let _ = pty.expect(at, "exit 7").await;
    let status = within(
        Duration::from_secs(60),
        "the CLI's exit",
        tokio::task::spawn_blocking(move || child.wait().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(status.code(), Some(7));
    let after = pty.mode();
    assert_eq!(after.local_modes, before.local_modes);
    assert_eq!(after.input_modes, before.input_modes);
    assert_eq!(after.output_modes, before.output_modes);
    cleanup(&project_id).await;
}

/// Starts an interactive run; returns its attach path.
async fn interactive_run(
    daemon: &TestDaemon,
    project_id: &str,
    command: &[&str],
) -> (String, String) {
    let run = daemon
        .post(
            &format!("/v1/projects/{project_id}/runs"),
            &daemon.admin_token,
            json!({"command": command, "interactive": true}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(run["status"], "pending", "{run}");
    let run_id = run["runId"].as_str().unwrap().to_owned();
    (format!("/v1/runs/{run_id}/attach"), run_id)
}

#[tokio::test]
async fn cli_run_it_in_a_pseudo_terminal_starts_the_run_and_returns_its_exit_code() {
    let daemon = TestDaemon::start().await;
    let (project_id, _) = deployed(&daemon, "run-tty").await;
    let mut pty = Pty::open(100, 30);
    let before = pty.mode();
    let mut command = cli(
        &daemon,
        "setsid",
        &[
            "-w",
            "-c",
            env!("CARGO_BIN_EXE_cantila"),
            "run",
            "-it",
            "run-tty",
            "--",
            "sh",
        ],
    );
    command
        .stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    let mut child = command.spawn().unwrap();

    // The run's shell in the release's image, with the project's env, sized like this
    // terminal (the first resize goes before any key).
    let at = pty.expect(0, "# ").await;
    pty.type_keys(b"echo typed-$((6*7)) $PORT\r");
    let at = pty.expect(at, "echo typed-$((6*7)) $PORT").await;
    let at = pty.expect(at, "typed-42 8080").await;
    pty.type_keys(b"stty size\r");
    let at = pty.expect(at, "30 100").await;
    pty.type_keys(b"exit 5\r");
    let _ = pty.expect(at, "exit 5").await;
    let status = within(
        Duration::from_secs(60),
        "the CLI's exit",
        tokio::task::spawn_blocking(move || child.wait().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(status.code(), Some(5));
    assert_eq!(pty.mode().local_modes, before.local_modes);

    // The run is recorded like any other, interactive.
    let runs = daemon
        .get(
            &format!("/v1/projects/{project_id}/runs"),
            &daemon.admin_token,
        )
        .await
        .expect(200)
        .body;
    let run = &runs["runs"][0];
    assert_eq!(run["interactive"], true, "{run}");
    let ended = wait_run(&daemon, run["id"].as_str().unwrap()).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert_eq!(ended["exitCode"], 5, "{ended}");
    cleanup(&project_id).await;
}

#[tokio::test]
async fn a_run_attach_is_for_its_account_once_and_a_leaving_client_hangs_the_run_up() {
    let daemon = TestDaemon::start().await;
    let (project_id, _) = deployed(&daemon, "run-attach").await;

    // Another account finds nothing; a plain run has no terminal.
    let (path, _) = interactive_run(&daemon, &project_id, &["sh", "-c", "sleep 1001"]).await;
    let other = daemon.other_account_token("mallory", Scope::Deploy);
    assert_eq!(
        attach(&daemon, &path, Credential::Bearer(&other))
            .await
            .err(),
        Some(404)
    );
    let plain = daemon
        .post(
            &format!("/v1/projects/{project_id}/runs"),
            &daemon.admin_token,
            json!({"command": ["true"]}),
        )
        .await
        .expect(201)
        .body;
    let plain_path = format!("/v1/runs/{}/attach", plain["runId"].as_str().unwrap());
    assert_eq!(
        attach(
            &daemon,
            &plain_path,
            Credential::Bearer(&daemon.admin_token)
        )
        .await
        .err(),
        Some(409)
    );

    // The browser's form attaches once; a second terminal is refused.
    let (mut socket, protocol) =
        attach(&daemon, &path, Credential::Subprotocol(&daemon.admin_token))
            .await
            .unwrap();
    assert_eq!(protocol.as_deref(), Some("cantila.v1"));
    assert_eq!(
        attach(&daemon, &path, Credential::Bearer(&daemon.admin_token))
            .await
            .err(),
        Some(409)
    );

    // The client leaves: the run's terminal is hung up, so the sleep ends long before
    // its 1001 s, and the run with it.
    socket.close(None).await.unwrap();
    drop(socket);
    let run_id = path
        .trim_start_matches("/v1/runs/")
        .trim_end_matches("/attach");
    let ended = within(
        Duration::from_secs(120),
        "the hung-up run's end",
        wait_run(&daemon, run_id),
    )
    .await;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert_eq!(ended["exitCode"], 128 + 1, "SIGHUP: {ended}");
    cleanup(&project_id).await;
}

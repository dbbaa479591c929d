//! Exec into instances on the real engine, over the WebSocket protocol `cantila.v1`: a
//! command in a named instance of a deployed project (output by channel, exit code, stdin),
//! the browser's subprotocol authentication and a bad token refused, another account's
//! project and exec not found, a client that leaves hanging the terminal up (or closing
//! stdin), and the CLI's `exec -it` driven inside a pseudo-terminal: typed input echoed,
//! a resize reaching the process, the exit code returned, the local terminal restored.

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
            && t.ends_with("sh -c 'cat /etc/hostname; echo oops >&2; exit 4'")),
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

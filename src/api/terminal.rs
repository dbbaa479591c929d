//! `POST /v1/projects/:id/instances/:instance/exec` and `GET /v1/execs/:id/attach`: a
//! command run inside a running instance, with or without a terminal, over a WebSocket;
//! `GET /v1/runs/:id/attach`: the terminal of an interactive run, which it starts; and the
//! bridge between a WebSocket and a process's session that every attach endpoint speaks.
//!
//! The protocol (`cantila.v1`). Server to client: binary frames whose first byte is the
//! channel (1 stdout, 2 stderr; a terminal's output is all 1) and the rest the bytes; text
//! frames are JSON control messages, `{"type":"exit","exitCode":N}` (the last before the
//! close) and `{"type":"error","message":"..."}`. Client to server: binary frames whose
//! first byte is 0, the rest stdin; text frames `{"type":"resize","cols":N,"rows":N}` and
//! `{"type":"stdinClose"}`.
//! Invariants: the process's output is read only as fast as the client takes it, and
//! messages are bounded (`MAX_MESSAGE_BYTES` in, `OUTPUT_FRAME_BYTES` out), so a slow or
//! hostile client never grows the daemon's memory; a client that leaves early closes the
//! process's stdin, or hangs up its terminal.

use axum::{
    extract::{
        ws::{
            rejection::WebSocketUpgradeRejection, CloseFrame, Message, WebSocket, WebSocketUpgrade,
        },
        State,
    },
    response::Response,
};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::{io::AsyncWriteExt, sync::mpsc};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    api::ApiState,
    error::Error,
    model::run::RunCommand,
    names::ProcessType,
    runtime::{TerminalOutput, TerminalSession, TerminalSize},
    terminal::{self, ExecRequest, Terminals},
};

use super::{
    auth::{Auth, DeployScope, WsAuth, WS_PROTOCOL},
    error::{ApiError, ApiResult, Json, Path},
};

/// The largest message a client may send (a paste into a terminal is one message).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The most output bytes in one frame to the client; larger pieces are split.
pub const OUTPUT_FRAME_BYTES: usize = 32 * 1024;

/// The first byte of a frame: which stream its bytes belong to.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;

/// The byte a terminal reads as end of input (Ctrl-D): how `stdinClose` reaches a process
/// with a terminal, whose stdin the engine cannot close.
const END_OF_TRANSMISSION: u8 = 0x04;

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(create_exec))
        .routes(routes!(attach_exec))
        .routes(routes!(attach_run))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExec {
    /// The program and its arguments, run as given (no shell reads them): 1 to 1024
    /// arguments, each at most 64 KiB, 256 KiB in all (as a run's).
    #[schema(example = json!(["sh", "-c", "cat /etc/hostname"]), min_items = 1, max_items = 1024)]
    pub command: Vec<String>,
    /// Give the command a terminal (its output is then one stream); default false.
    pub tty: Option<bool>,
    /// The process type the instance must run; with the instance `any`, which process
    /// type to pick a running instance of (default `web`).
    #[schema(example = "web")]
    pub process: Option<String>,
    /// The terminal's width in cells (with `tty`; default 80).
    #[schema(minimum = 1, maximum = 1000)]
    pub cols: Option<u16>,
    /// The terminal's height in cells (with `tty`; default 24).
    #[schema(minimum = 1, maximum = 1000)]
    pub rows: Option<u16>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecCreated {
    #[schema(example = "exe_3kTq9...")]
    pub exec_id: String,
    /// Open this WebSocket within 60 s to start the command.
    #[schema(example = "/v1/execs/exe_3kTq9.../attach")]
    pub attach_url: String,
    /// The instance it runs in (its id in the instance list).
    pub instance_id: String,
    pub tty: bool,
}

/// Run a command inside a running instance. The command starts when its client opens
/// `attachUrl` (within 60 s, or it is dropped); it is in the audit log with its command.
/// `instance` is an instance id or name from `GET /v1/projects/{id}/instances`, or `any`
/// for a running instance of `process` (default `web`).
#[utoipa::path(post, path = "/v1/projects/{id}/instances/{instance}/exec", tag = "terminal",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "project id"),
        ("instance" = String, Path, description = "an instance id or name, or `any`")),
    request_body = CreateExec,
    responses((status = 201, body = ExecCreated),
        (status = 404, description = "no such project or instance in this account"),
        (status = 409, description = "the instance is not running, or too many execs wait to be attached"),
        (status = 422, description = "a field is invalid; the message names it")))]
async fn create_exec(
    auth: Auth<DeployScope>,
    State(terminals): State<Terminals>,
    Path((project_id, instance)): Path<(String, String)>,
    Json(request): Json<CreateExec>,
) -> ApiResult<(axum::http::StatusCode, Json<ExecCreated>)> {
    let command = RunCommand::parse("command", request.command)?;
    let process = request
        .process
        .as_deref()
        .map(ProcessType::parse)
        .transpose()?;
    let tty = request.tty.unwrap_or(false);
    let size = match (request.cols, request.rows) {
        (None, None) => None,
        (cols, rows) => Some(terminal::terminal_size(
            cols.unwrap_or(80),
            rows.unwrap_or(24),
        )?),
    };
    let exec = terminals
        .create_exec(
            &auth.actor,
            project_id,
            &instance,
            ExecRequest {
                command,
                tty,
                process,
                size,
            },
        )
        .await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(ExecCreated {
            attach_url: format!("/v1/execs/{}/attach", exec.id),
            exec_id: exec.id.clone(),
            instance_id: exec.instance_id.clone(),
            tty: exec.tty(),
        }),
    ))
}

/// Start a created exec and bridge it over a WebSocket (protocol `cantila.v1`): binary
/// frames carry output (first byte 1 stdout, 2 stderr) and stdin (first byte 0); text
/// frames carry JSON control messages (`exit`, `error`; `resize`, `stdinClose`). Browsers
/// authenticate with the subprotocols `cantila.v1` and `cantila.token.<token>`.
#[utoipa::path(get, path = "/v1/execs/{id}/attach", tag = "terminal",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "exec id (exe_...)")),
    responses((status = 101, description = "switching to the WebSocket protocol `cantila.v1`"),
        (status = 404, description = "no such exec waiting in this account (attached already, expired, or unknown)"),
        (status = 426, description = "the request is not a WebSocket upgrade")))]
async fn attach_exec(
    auth: WsAuth<DeployScope>,
    State(terminals): State<Terminals>,
    Path(exec_id): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = websocket(upgrade)?;
    let exec = terminals.take_exec(&auth.actor, &exec_id)?;
    Ok(upgrade.on_upgrade(move |mut socket| async move {
        match terminals.start_exec(exec, None).await {
            Ok(session) => match bridge(socket, session, &terminals).await {
                Ended::Exited(exit_code) => {
                    tracing::info!(exec = %exec_id, exit_code, "exec ended");
                }
                // Nobody is left to tell the exit code to.
                Ended::Detached => tracing::info!(exec = %exec_id, "exec's client left"),
            },
            Err(err) => refuse(&mut socket, &err).await,
        }
    }))
}

/// Attach a terminal to a pending interactive run (`"interactive": true` at its start) and
/// start it, over a WebSocket speaking the same protocol as an exec's attach. The run's
/// exit code is the last message; a client that leaves hangs the run's terminal up.
#[utoipa::path(get, path = "/v1/runs/{id}/attach", tag = "terminal",
    security(("bearer" = ["deploy"])),
    params(("id" = String, Path, description = "run id (run_...)")),
    responses((status = 101, description = "switching to the WebSocket protocol `cantila.v1`"),
        (status = 404, description = "no such run in this account"),
        (status = 409, description = "the run is not interactive, or not pending (attached already, started or over)"),
        (status = 426, description = "the request is not a WebSocket upgrade")))]
async fn attach_run(
    auth: WsAuth<DeployScope>,
    State(terminals): State<Terminals>,
    Path(run_id): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = websocket(upgrade)?;
    let target = terminals.take_run(&auth.actor, &run_id).await?;
    Ok(upgrade.on_upgrade(move |mut socket| async move {
        match terminals.start_run(target, None).await {
            Ok(session) => match bridge(socket, session, &terminals).await {
                Ended::Exited(exit_code) => {
                    tracing::info!(run = %run_id, exit_code, "a run's terminal saw it end");
                }
                // The run's waiter records how it ends.
                Ended::Detached => tracing::info!(run = %run_id, "a run's terminal left"),
            },
            Err(err) => refuse(&mut socket, &err).await,
        }
    }))
}

/// The upgrade with this API's limits and subprotocol, or the API's error for a request
/// that is not a WebSocket upgrade.
pub(super) fn websocket(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<WebSocketUpgrade> {
    let upgrade = upgrade.map_err(|rejection| ApiError::Http {
        status: axum::http::StatusCode::UPGRADE_REQUIRED,
        message: format!(
            "this endpoint is a WebSocket (subprotocol `{WS_PROTOCOL}`): {}",
            rejection.body_text()
        ),
    })?;
    Ok(upgrade
        .protocols([WS_PROTOCOL])
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES))
}

/// How a bridged session ended.
pub(super) enum Ended {
    /// The process exited and the client was told its code.
    Exited(i64),
    /// The client left (or the session failed) before the process exited.
    Detached,
}

/// A message from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
enum ClientControl {
    Resize { cols: u16, rows: u16 },
    StdinClose,
}

/// A control message to the client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum ServerControl {
    #[serde(rename_all = "camelCase")]
    Exit {
        exit_code: i64,
    },
    Error {
        message: String,
    },
}

impl ServerControl {
    fn message(&self) -> Message {
        Message::Text(serde_json::to_string(self).unwrap_or_default().into())
    }
}

/// The client's view of a failure: what it can act on, never internal detail (logged).
fn client_message(err: &Error) -> String {
    match err {
        Error::Store(_) | Error::Internal(_) => {
            tracing::error!(error = %err, "a terminal session failed");
            "internal error; the server log has the detail".to_owned()
        }
        other => other.to_string(),
    }
}

/// Tells the client why its session could not start, and closes.
pub(super) async fn refuse(socket: &mut WebSocket, err: &Error) {
    let message = client_message(err);
    let _ = socket
        .send(ServerControl::Error { message }.message())
        .await;
    let _ = socket.send(Message::Close(Some(normal_close()))).await;
}

fn normal_close() -> CloseFrame {
    CloseFrame {
        code: 1000,
        reason: "".into(),
    }
}

/// What ended the output side.
enum OutputEnd {
    Exited(i64),
    ClientGone,
    Failed,
}

/// Bridges `session` and the client until the process exits (the client gets its exit
/// code, then the close) or the client leaves (the process's stdin is closed, or its
/// terminal hung up).
pub(super) async fn bridge(
    socket: WebSocket,
    session: TerminalSession,
    terminals: &Terminals,
) -> Ended {
    let TerminalSession {
        target,
        tty,
        input,
        mut output,
        exit,
    } = session;
    let (mut sink, mut stream) = socket.split();
    // Answers to the client's bad messages, sent by the output side (which owns the
    // sink); bounded, so a client flooding bad messages waits for its answers.
    let (notices, mut notices_in) = mpsc::channel::<String>(4);

    let input_side = async {
        let mut input = input;
        // Once the process's stdin is gone, later stdin is dropped, not an error.
        let mut stdin_open = true;
        while let Some(message) = stream.next().await {
            let notice = match message {
                Ok(Message::Binary(frame)) => match frame.split_first() {
                    Some((&STDIN, bytes)) if stdin_open => {
                        let written = async {
                            input.write_all(bytes).await?;
                            input.flush().await
                        };
                        if written.await.is_err() {
                            stdin_open = false;
                        }
                        None
                    }
                    Some((&STDIN, _)) => None,
                    _ => Some("a binary frame from the client starts with 0 (stdin)".to_owned()),
                },
                Ok(Message::Text(text)) => match serde_json::from_str::<ClientControl>(&text) {
                    Ok(ClientControl::Resize { cols, rows }) => {
                        match terminal::terminal_size(cols, rows) {
                            Ok(size) => resize(terminals, &target, size).await,
                            Err(err) => Some(err.to_string()),
                        }
                    }
                    Ok(ClientControl::StdinClose) => {
                        if stdin_open {
                            close_stdin(&mut input, tty).await;
                            stdin_open = false;
                        }
                        None
                    }
                    Err(err) => Some(format!(
                        "unknown control message ({err}); send {{\"type\":\"resize\",\"cols\":N,\"rows\":N}} or {{\"type\":\"stdinClose\"}}"
                    )),
                },
                Ok(Message::Ping(_) | Message::Pong(_)) => None,
                Ok(Message::Close(_)) | Err(_) => break,
            };
            if let Some(notice) = notice {
                if notices.send(notice).await.is_err() {
                    break;
                }
            }
        }
        (input, stdin_open)
    };

    let output_side = async {
        loop {
            tokio::select! {
                piece = output.next() => match piece {
                    Some(Ok(piece)) => {
                        let (channel, bytes) = match piece {
                            TerminalOutput::Stdout(bytes) => (STDOUT, bytes),
                            TerminalOutput::Stderr(bytes) => (STDERR, bytes),
                        };
                        for chunk in bytes.chunks(OUTPUT_FRAME_BYTES) {
                            if sink.send(Message::Binary(frame(channel, chunk))).await.is_err() {
                                return OutputEnd::ClientGone;
                            }
                        }
                    }
                    Some(Err(err)) => {
                        let message = client_message(&Error::from(err));
                        let _ = sink.send(ServerControl::Error { message }.message()).await;
                        let _ = sink.send(Message::Close(Some(normal_close()))).await;
                        return OutputEnd::Failed;
                    }
                    None => break,
                },
                Some(notice) = notices_in.recv() => {
                    if sink.send(ServerControl::Error { message: notice }.message()).await.is_err() {
                        return OutputEnd::ClientGone;
                    }
                }
            }
        }
        let control = match exit.await {
            Ok(exit_code) => ServerControl::Exit { exit_code },
            Err(err) => ServerControl::Error {
                message: client_message(&Error::from(err)),
            },
        };
        let code = match control {
            ServerControl::Exit { exit_code } => Some(exit_code),
            ServerControl::Error { .. } => None,
        };
        let _ = sink.send(control.message()).await;
        let _ = sink.send(Message::Close(Some(normal_close()))).await;
        code.map_or(OutputEnd::Failed, OutputEnd::Exited)
    };

    let left = tokio::select! {
        end = output_side => match end {
            OutputEnd::Exited(code) => return Ended::Exited(code),
            OutputEnd::ClientGone | OutputEnd::Failed => None,
        },
        input = input_side => Some(input),
    };
    // The client is gone (or the session failed) before the process exited: it gets
    // what a closed terminal, or a closed pipe, gives it.
    if tty {
        if let Err(err) = terminals.hang_up(&target).await {
            tracing::warn!(error = %err, "hanging up a terminal whose client left");
        }
    } else if let Some((mut input, true)) = left {
        let _ = input.shutdown().await;
    }
    drop(output);
    Ended::Detached
}

/// A frame of output: the channel byte, then the bytes.
fn frame(channel: u8, bytes: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(bytes.len() + 1);
    frame.put_u8(channel);
    frame.extend_from_slice(bytes);
    frame.freeze()
}

/// Resizes the session's terminal; a failure is told to the client, the session goes on.
async fn resize(
    terminals: &Terminals,
    target: &crate::runtime::TerminalTarget,
    size: TerminalSize,
) -> Option<String> {
    match terminals.resize(target, size).await {
        Ok(()) => None,
        Err(err) => Some(format!("resize failed: {}", client_message(&err))),
    }
}

/// Ends the process's input: a pipe is closed; a terminal reads end-of-input (Ctrl-D),
/// as typing it would give, since the engine keeps a terminal's stdin open.
async fn close_stdin(input: &mut std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>, tty: bool) {
    let closed = if tty {
        async {
            input.write_all(&[END_OF_TRANSMISSION]).await?;
            input.flush().await
        }
        .await
    } else {
        input.shutdown().await
    };
    if let Err(err) = closed {
        tracing::debug!(error = %err, "closing a session's stdin");
    }
}

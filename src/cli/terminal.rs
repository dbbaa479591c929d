//! The CLI's terminal client: joins a session's WebSocket (protocol `cantila.v1`, see
//! `api::terminal`) to this process's stdin, stdout and stderr, for `exec` and `run -it`.
//! With a remote terminal and a local one, the local terminal is in raw mode for the
//! session (every key, Ctrl-C included, goes to the remote process) and its size follows
//! SIGWINCH. Invariant: the local terminal's mode is restored on every way out: the
//! session's end, an error, a panic (a drop guard), SIGTERM or SIGHUP.

use std::{future::Future, io::IsTerminal};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use rustix::termios::{self, OptionalActions, Termios};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    signal::unix::{signal, SignalKind},
};
use tokio_tungstenite::tungstenite::{
    self, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig, Message,
};

use super::client::Client;

/// The subprotocol the API speaks.
const PROTOCOL: &str = "cantila.v1";

/// The largest message the server sends is an output frame of 32 KiB; anything far past
/// that is not the API.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The most stdin bytes sent in one frame.
const STDIN_CHUNK: usize = 16 * 1024;

/// How the local side joins the session.
#[derive(Debug, Clone, Copy)]
pub(super) struct Options {
    /// Send this process's stdin to the remote process (`-i`).
    pub interactive: bool,
    /// The remote process has a terminal (`-t`).
    pub tty: bool,
}

/// The remote command's exit code, as an error `main` turns into this process's exit
/// code without printing anything.
#[derive(Debug)]
pub struct CommandExit(pub u8);

impl std::fmt::Display for CommandExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the command exited with code {}", self.0)
    }
}

impl std::error::Error for CommandExit {}

/// `Ok` for a remote exit code of 0, otherwise the `CommandExit` error carrying it (a code
/// outside 0..=255, which no process has, is 255).
pub(super) fn exit_with(code: i64) -> anyhow::Result<()> {
    match u8::try_from(code) {
        Ok(0) => Ok(()),
        Ok(code) => Err(CommandExit(code).into()),
        Err(_) => Err(CommandExit(255).into()),
    }
}

/// Runs a session's future on a runtime of its own. A read of stdin blocks a thread and
/// cannot be canceled, so the runtime is left behind rather than waited for (the process
/// exits right after).
pub(super) fn run_blocking<T>(
    future: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(future);
    runtime.shutdown_background();
    result
}

/// The local terminal's size (cols, rows), when stdin or stdout is a terminal.
pub(super) fn local_size() -> Option<(u16, u16)> {
    let size = termios::tcgetwinsize(std::io::stdin())
        .or_else(|_| termios::tcgetwinsize(std::io::stdout()))
        .ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// Raw mode on the local terminal while held; the mode it found is put back on drop.
struct RawMode {
    original: Termios,
}

impl RawMode {
    /// Raw mode on stdin's terminal; `None` when stdin is not a terminal.
    fn enable() -> anyhow::Result<Option<Self>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let original = termios::tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = original.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)
            .context("putting the terminal in raw mode")?;
        Ok(Some(Self { original }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Drained first, so output still queued is written in the mode it was meant for.
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Drain, &self.original);
    }
}

/// A WebSocket over plain TCP or TLS.
type Socket = tokio_tungstenite::WebSocketStream<Box<dyn crate::tls::ClientStream>>;

/// Opens the WebSocket at `path` of the API, with the client's token.
async fn connect(client: &Client, path: &str) -> anyhow::Result<Socket> {
    let base = url::Url::parse(&client.base).context("the API URL")?;
    let scheme = match base.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => bail!("the API URL's scheme is `{other}`; use http:// or https://"),
    };
    let host = base
        .host_str()
        .ok_or_else(|| anyhow!("the API URL names no host"))?
        .to_owned();
    let port = base
        .port_or_known_default()
        .ok_or_else(|| anyhow!("the API URL names no port"))?;
    let mut url = base.clone();
    url.set_scheme(scheme)
        .map_err(|()| anyhow!("cannot make a WebSocket URL of {}", client.base))?;
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    let mut request = url.as_str().into_client_request()?;
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", client.token))
            .context("the token holds characters a header cannot")?,
    );
    headers.insert("sec-websocket-protocol", HeaderValue::from_static(PROTOCOL));
    let unreachable = || {
        format!(
            "cannot reach the Cantila API at {}; is `cantila serve` running?",
            client.base
        )
    };
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(unreachable)?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn crate::tls::ClientStream> = if scheme == "wss" {
        crate::tls::OriginVerifier::system()
            .connect(tcp, &host)
            .await
            .with_context(unreachable)?
    } else {
        Box::new(tcp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            Err(super::client::refusal(
                status,
                &String::from_utf8_lossy(body),
            ))
        }
        Err(err) => Err(err).with_context(unreachable),
    }
}

/// A frame of stdin: 0, then the bytes.
fn stdin_frame(bytes: &[u8]) -> Message {
    let mut frame = Vec::with_capacity(bytes.len() + 1);
    frame.push(0);
    frame.extend_from_slice(bytes);
    Message::Binary(frame.into())
}

fn resize_message((cols, rows): (u16, u16)) -> Message {
    Message::Text(
        json!({"type": "resize", "cols": cols, "rows": rows})
            .to_string()
            .into(),
    )
}

/// A signal stream, or one that never yields when the signal cannot be caught.
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Joins the session at `path` to this process's stdio until it ends; returns the
/// remote command's exit code.
pub(super) async fn attach(client: &Client, path: &str, options: Options) -> anyhow::Result<i64> {
    let socket = connect(client, path).await?;
    let (mut sink, mut stream) = socket.split();
    // Raw mode only when our keys go to a remote terminal.
    let raw = if options.tty && options.interactive {
        RawMode::enable()?
    } else {
        None
    };
    let mut window = match options.tty {
        true => signal(SignalKind::window_change()).ok(),
        false => None,
    };
    // In raw mode the terminal sends no SIGINT, but these can still come from outside:
    // caught, so the terminal is restored before this process goes.
    let (mut terminate, mut hangup) = match raw {
        Some(_) => (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::hangup()).ok(),
        ),
        None => (None, None),
    };
    if options.tty {
        if let Some(size) = local_size() {
            sink.send(resize_message(size)).await?;
        }
    }
    let mut stdin_open = options.interactive;
    if !options.interactive && !options.tty {
        // Nothing will be sent: the command reads the end of its input at once.
        sink.send(Message::Text(r#"{"type":"stdinClose"}"#.into()))
            .await?;
    }
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut buffer = vec![0u8; STDIN_CHUNK];
    let mut exit_code = None;
    let mut errors = Vec::new();
    let mut interrupted = None;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Binary(frame))) => match frame.split_first() {
                    Some((1, bytes)) => {
                        stdout.write_all(bytes).await?;
                        stdout.flush().await?;
                    }
                    Some((2, bytes)) => {
                        stderr.write_all(bytes).await?;
                        stderr.flush().await?;
                    }
                    _ => {}
                },
                Some(Ok(Message::Text(text))) => {
                    let control: Value = serde_json::from_str(&text).unwrap_or_default();
                    match control["type"].as_str() {
                        Some("exit") => exit_code = control["exitCode"].as_i64(),
                        Some("error") => errors.push(
                            control["message"].as_str().unwrap_or_default().to_owned(),
                        ),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    errors.push(format!("the connection to the API broke: {err}"));
                    break;
                }
            },
            read = stdin.read(&mut buffer), if stdin_open => match read {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    sink.send(Message::Text(r#"{"type":"stdinClose"}"#.into())).await?;
                }
                Ok(n) => sink.send(stdin_frame(&buffer[..n])).await?,
            },
            () = next_signal(&mut window) => {
                if let Some(size) = local_size() {
                    sink.send(resize_message(size)).await?;
                }
            }
            () = next_signal(&mut terminate) => {
                interrupted = Some(SignalKind::terminate().as_raw_value());
                break;
            }
            () = next_signal(&mut hangup) => {
                interrupted = Some(SignalKind::hangup().as_raw_value());
                break;
            }
        }
    }
    let _ = sink.close().await;
    drop(raw);
    for error in &errors {
        eprintln!("error: {error}");
    }
    if let Some(signal) = interrupted {
        // The shell's convention for a process ended by a signal.
        return Ok(128 + i64::from(signal));
    }
    exit_code.ok_or_else(|| match errors.is_empty() {
        true => anyhow!("the session ended without the command's exit code"),
        false => anyhow!("the session ended without the command's exit code (see above)"),
    })
}

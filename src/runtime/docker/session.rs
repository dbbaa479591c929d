//! A BuildKit build session: the engine's `/session` endpoint upgraded to HTTP/2 (h2c),
//! on which the engine is the gRPC client and Cantila the server. It serves only what a
//! build from an uploaded context needs: the health check the engine polls to keep the
//! session, the build's secrets (`RUN --mount=type=secret`) and registry logins (base
//! images from private registries; a registry without one is pulled from anonymously).
//! Everything else answers Unimplemented, which BuildKit treats as "this client does not
//! offer it" (token-based registry auth, for one: it then uses the login).
//! Also the raw connection to the engine (`Endpoint`), which the BuildKit build request
//! shares, since bollard offers neither a session nor a `session` build parameter without
//! its `buildkit` feature (about thirty more crates).
//! Invariant: a secret's value (or a registry password) leaves only in an answer to the
//! engine, for the id (or host) it was asked by; it is never logged nor put in an error.

use std::{path::PathBuf, sync::Arc};

use bytes::Bytes;
use futures_util::{stream::FuturesUnordered, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::{
    header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE},
    http::{HeaderMap, HeaderValue, Request, Response, StatusCode},
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::protobuf;
use crate::runtime::{BuildSecret, RegistryCredential};

/// What a session hands the engine when asked.
#[derive(Debug, Default)]
pub struct Served {
    pub secrets: Vec<BuildSecret>,
    pub credentials: Vec<RegistryCredential>,
}

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const GET_SECRET: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";
const CREDENTIALS: &str = "/moby.filesync.v1.Auth/Credentials";

/// gRPC status codes this server answers with.
const INVALID_ARGUMENT: u32 = 3;
const NOT_FOUND: u32 = 5;
const UNIMPLEMENTED: u32 = 12;

/// The largest request message read: the engine's requests here are a few bytes.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A byte stream to the engine.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where the engine's API listens, for the requests bollard cannot make.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
    /// An address these requests cannot reach (TLS, SSH); the reason says which.
    Unsupported(String),
}

impl Endpoint {
    /// The engine `socket` names, or the one `DOCKER_HOST` names, or the default socket,
    /// as bollard's own choice of engine goes.
    pub fn of(socket: Option<&std::path::Path>) -> Self {
        if let Some(path) = socket {
            return Self::Unix(path.to_owned());
        }
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => {
                Self::parse(&host, std::env::var_os("DOCKER_TLS_VERIFY").is_some())
            }
            _ => Self::Unix(PathBuf::from("/var/run/docker.sock")),
        }
    }

    fn parse(host: &str, tls: bool) -> Self {
        if let Some(path) = host.strip_prefix("unix://") {
            Self::Unix(PathBuf::from(path))
        } else if let Some(address) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
            .filter(|_| !tls)
        {
            Self::Tcp(address.trim_end_matches('/').to_owned())
        } else {
            Self::Unsupported(format!(
                "DOCKER_HOST={host} is not a Unix socket nor plain TCP"
            ))
        }
    }

    /// A new connection to the engine.
    pub async fn connect(&self) -> Result<Box<dyn Io>, String> {
        match self {
            Self::Unix(path) => tokio::net::UnixStream::connect(path)
                .await
                .map(|stream| Box::new(stream) as Box<dyn Io>)
                .map_err(|err| format!("{}: {err}", path.display())),
            Self::Tcp(address) => tokio::net::TcpStream::connect(address)
                .await
                .map(|stream| Box::new(stream) as Box<dyn Io>)
                .map_err(|err| format!("{address}: {err}")),
            Self::Unsupported(reason) => Err(reason.clone()),
        }
    }
}

/// Why a session could not be had.
#[derive(Debug)]
pub enum SessionError {
    /// The engine answered `status` and would not open one; `message` is its reason.
    /// Whether that means "no BuildKit here" is the caller's call (`buildkit::refusal`).
    Refused { status: StatusCode, message: String },
    /// The engine could not be reached.
    Unreachable(String),
}

/// An open session: its id (the build's `session` parameter) and the connection it is
/// served on.
pub struct Session {
    pub id: String,
    connection: hyper::upgrade::Upgraded,
}

impl Session {
    /// Asks the engine (API `api_version`, e.g. "1.41") for a session.
    pub async fn open(endpoint: &Endpoint, api_version: &str) -> Result<Self, SessionError> {
        let io = endpoint
            .connect()
            .await
            .map_err(SessionError::Unreachable)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|err| SessionError::Unreachable(err.to_string()))?;
        // The connection's task ends once it hands the upgraded stream over (or the
        // engine refuses and the sender is dropped).
        tokio::spawn(connection.with_upgrades());
        let id = crate::ids::random_base62(25);
        let mut request = Request::post(format!("/v{api_version}/session"))
            .header(HOST, "docker")
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "h2c")
            .header("X-Docker-Expose-Session-Uuid", &id)
            .header("X-Docker-Expose-Session-Name", "cantila")
            .header("X-Docker-Expose-Session-Sharedkey", &id);
        for method in [HEALTH_CHECK, GET_SECRET, CREDENTIALS] {
            request = request.header("X-Docker-Expose-Session-Grpc-Method", method);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|err| SessionError::Unreachable(err.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| SessionError::Unreachable(err.to_string()))?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|body| body.to_bytes())
                .unwrap_or_default();
            return Err(SessionError::Refused {
                status,
                message: engine_message(&body),
            });
        }
        let connection = hyper::upgrade::on(response)
            .await
            .map_err(|err| SessionError::Unreachable(err.to_string()))?;
        Ok(Self { id, connection })
    }

    /// Serves the session until the engine closes it (or the caller drops this future,
    /// which closes it).
    pub async fn serve(self, served: Arc<Served>) {
        let Ok(mut connection) = h2::server::handshake(TokioIo::new(self.connection)).await else {
            return;
        };
        let mut calls = FuturesUnordered::new();
        loop {
            tokio::select! {
                accepted = connection.accept() => match accepted {
                    Some(Ok((request, respond))) => {
                        calls.push(answer(request, respond, served.clone()));
                    }
                    Some(Err(_)) | None => return,
                },
                Some(()) = calls.next(), if !calls.is_empty() => {}
            }
        }
    }
}

/// The message of an engine's JSON error body (`{"message": ...}`), or the body itself.
pub fn engine_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct EngineError {
        message: String,
    }
    match serde_json::from_slice::<EngineError>(body) {
        Ok(error) => error.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    }
}

/// Answers one gRPC call.
async fn answer(
    request: Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    served: Arc<Served>,
) {
    let path = request.uri().path().to_owned();
    let outcome = match read_message(request.into_body()).await {
        None => Err((INVALID_ARGUMENT, "a malformed gRPC request".to_owned())),
        Some(message) => match path.as_str() {
            HEALTH_CHECK => Ok(protobuf::health_serving()),
            GET_SECRET => match protobuf::secret_request_id(&message) {
                Some(id) => served
                    .secrets
                    .iter()
                    .find(|secret| secret.id == id)
                    .map(|secret| protobuf::secret_response(&secret.value))
                    .ok_or_else(|| (NOT_FOUND, format!("no build secret has the id {id}"))),
                None => Err((INVALID_ARGUMENT, "a malformed secret request".to_owned())),
            },
            CREDENTIALS => match protobuf::credentials_request_host(&message) {
                Some(host) => Ok(served
                    .credentials
                    .iter()
                    .find(|login| login.is_for(&host))
                    .map_or_else(
                        || protobuf::credentials_response("", ""),
                        |login| protobuf::credentials_response(&login.username, &login.password),
                    )),
                None => Err((
                    INVALID_ARGUMENT,
                    "a malformed credentials request".to_owned(),
                )),
            },
            _ => Err((UNIMPLEMENTED, format!("{path} is not offered"))),
        },
    };
    // A failure to answer means the engine went away; the session ends with it.
    let _ = reply(respond, outcome);
}

/// The one message of a unary call's request: a gRPC frame (a compression flag, a
/// 4-byte length, the message). `None` when malformed, compressed, or too large.
async fn read_message(mut body: h2::RecvStream) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_REQUEST_BYTES {
            return None;
        }
    }
    let (&compressed, rest) = bytes.split_first()?;
    let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let message = rest.get(4..)?;
    (compressed == 0 && message.len() == length).then(|| message.to_vec())
}

fn reply(
    mut respond: h2::server::SendResponse<Bytes>,
    outcome: Result<Vec<u8>, (u32, String)>,
) -> Result<(), h2::Error> {
    let mut response = Response::new(());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    match outcome {
        Ok(message) => {
            let mut stream = respond.send_response(response, false)?;
            let mut frame = Vec::with_capacity(5 + message.len());
            frame.push(0);
            frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
            frame.extend_from_slice(&message);
            stream.send_data(Bytes::from(frame), false)?;
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            stream.send_trailers(trailers)
        }
        Err((code, message)) => {
            // A trailers-only answer: the status in the response's own headers.
            let headers = response.headers_mut();
            headers.insert("grpc-status", HeaderValue::from(code));
            if let Ok(message) = HeaderValue::from_str(&grpc_message(&message)) {
                headers.insert("grpc-message", message);
            }
            respond.send_response(response, true).map(drop)
        }
    }
}

/// gRPC's percent-encoding of a status message (everything outside printable ASCII, and
/// `%` itself).
fn grpc_message(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_picks_the_endpoint() {
        let check = |host: &str, tls: bool, expected: &str| {
            assert_eq!(
                format!("{:?}", Endpoint::parse(host, tls)),
                expected,
                "{host}"
            );
        };
        check(
            "unix:///run/user/1000/docker.sock",
            false,
            "Unix(\"/run/user/1000/docker.sock\")",
        );
        check("tcp://10.0.0.5:2375", false, "Tcp(\"10.0.0.5:2375\")");
        check(
            "tcp://10.0.0.5:2376",
            true,
            "Unsupported(\"DOCKER_HOST=tcp://10.0.0.5:2376 is not a Unix socket nor plain TCP\")",
        );
        check(
            "ssh://me@host",
            false,
            "Unsupported(\"DOCKER_HOST=ssh://me@host is not a Unix socket nor plain TCP\")",
        );
    }

    #[test]
    fn engine_errors_read_their_message() {
        assert_eq!(
            engine_message(br#"{"message":"page not found"}"#),
            "page not found"
        );
        assert_eq!(engine_message(b"plain text\n"), "plain text");
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("no secret 50%\n"), "no secret 50%25%0A");
        assert_eq!(grpc_message("é"), "%C3%A9");
    }
}

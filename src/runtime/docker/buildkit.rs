//! BuildKit builds through the engine's API (`POST /build?version=2&session=<id>`): the
//! context goes up as the request's body, the build session (`session`) serves its
//! secrets, and the engine's progress (`moby.buildkit.trace`: base64 protobuf
//! `StatusResponse`s, read by `protobuf`) becomes readable lines as `docker build
//! --progress=plain` prints them ("#3 [build 2/4] RUN make", the step's output,
//! "#3 CACHED"). The image's id comes from `moby.image.id`.
//! Invariant: the build lives exactly as long as the returned future: dropping it (a
//! canceled deploy) closes the connection, and the engine then cancels the build and
//! kills its running step.

use std::{collections::HashMap, sync::Arc};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    header::{CONTENT_TYPE, HOST},
    http::{Request, StatusCode},
};
use hyper_util::rt::TokioIo;

use super::{
    protobuf::StatusResponse,
    session::{engine_message, Endpoint, Served, Session, SessionError},
};
use crate::runtime::{BuildRequest, RuntimeError};

/// The oldest API version whose build endpoint takes `version=2` (Docker 18.09).
const MIN_API: (usize, usize) = (1, 39);

/// How a BuildKit build ended, short of an error.
#[derive(Debug)]
pub enum Outcome {
    /// The image's id.
    Built(String),
    /// BuildKit could not be had from this engine, and nothing ran; the reason says why.
    Unavailable(String),
}

/// Builds `request` (its context in `context`) with BuildKit on the engine at `endpoint`,
/// which speaks API `api` (major, minor); every output line goes to `on_line`.
pub async fn build(
    endpoint: &Endpoint,
    api: (usize, usize),
    request: &BuildRequest,
    context: Bytes,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Outcome, RuntimeError> {
    if api < MIN_API {
        return Ok(Outcome::Unavailable(format!(
            "the engine speaks API {}.{}, BuildKit needs {}.{}",
            api.0, api.1, MIN_API.0, MIN_API.1
        )));
    }
    let api_version = format!("{}.{}", api.0, api.1);
    let opening = tokio::time::timeout(
        std::time::Duration::from_secs(super::REQUEST_TIMEOUT_SECS),
        Session::open(endpoint, &api_version),
    );
    let opened = opening.await.unwrap_or_else(|_| {
        Err(SessionError::Unreachable(
            "the engine did not open a build session in time".to_owned(),
        ))
    });
    let session = match opened {
        Ok(session) => session,
        Err(SessionError::Refused { status, message }) => {
            return refusal(Asked::Session, status, &message)
        }
        Err(SessionError::Unreachable(reason)) => {
            return match endpoint {
                Endpoint::Unsupported(_) => Ok(Outcome::Unavailable(reason)),
                Endpoint::Unix(_) | Endpoint::Tcp(_) => Err(RuntimeError::Unreachable(reason)),
            }
        }
    };
    on_line(&format!(
        "building with BuildKit (the Docker engine's API {api_version})"
    ));
    let path = format!("/v{api_version}/build?{}", query(request, &session.id));
    let serving = session.serve(Arc::new(Served {
        secrets: request.secrets.clone(),
        credentials: request.registry_credentials.clone(),
    }));
    let building = post_build(endpoint, path, context, on_line);
    tokio::pin!(serving, building);
    // The session is served for as long as the build runs; should the engine close it
    // early, the build goes on (only a secret mount would then fail).
    tokio::select! {
        outcome = &mut building => outcome,
        () = &mut serving => building.await,
    }
}

/// Which of BuildKit's requests the engine refused.
#[derive(Debug, Clone, Copy)]
enum Asked {
    /// `POST /session`, which opens the build session.
    Session,
    /// `POST /build?version=2`.
    Build,
}

/// What an engine's refusal of a BuildKit request says about the engine.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The engine has no BuildKit to give: the classic builder may stand in.
    NoBuildKit,
    /// The engine has BuildKit and refused this build (a request it found wrong, a failure
    /// on its side). The classic builder must not stand in: its RUN steps would join the
    /// project's network, which BuildKit's never do, so a passing failure would quietly
    /// change what a build can reach.
    Failed,
}

/// Reads an engine's refusal (`status`, and its `message`) of the request `asked`. Only an
/// answer that says the engine lacks BuildKit counts as such: a missing `/session`
/// endpoint (engines before 18.09 outside experimental mode, other engines speaking
/// Docker's API), a build endpoint that does not know `version=2`, or an engine that says
/// its BuildKit is not supported, disabled or not implemented. Anything else fails.
fn classify(asked: Asked, status: StatusCode, message: &str) -> Refusal {
    let message = message.to_ascii_lowercase();
    let absent_endpoint = match asked {
        Asked::Session => status == StatusCode::NOT_FOUND,
        Asked::Build => status == StatusCode::NOT_FOUND && message.contains("page not found"),
    };
    let says_unsupported = message.contains("buildkit")
        && [
            "not supported",
            "not enabled",
            "disabled",
            "not implemented",
        ]
        .iter()
        .any(|words| message.contains(words));
    let unknown_version = matches!(asked, Asked::Build) && message.contains("invalid version");
    if absent_endpoint
        || status == StatusCode::NOT_IMPLEMENTED
        || says_unsupported
        || unknown_version
    {
        Refusal::NoBuildKit
    } else {
        Refusal::Failed
    }
}

/// The outcome of a refusal: the classic builder where the engine has no BuildKit, a
/// failed build otherwise, saying why it does not fall back.
fn refusal(asked: Asked, status: StatusCode, message: &str) -> Result<Outcome, RuntimeError> {
    let what = match asked {
        Asked::Session => "a BuildKit build session",
        Asked::Build => "a BuildKit build",
    };
    match classify(asked, status, message) {
        Refusal::NoBuildKit => Ok(Outcome::Unavailable(format!(
            "the engine answered {status} to {what}: {message}"
        ))),
        Refusal::Failed => Err(RuntimeError::BuildFailed(format!(
            "the Docker engine refused {what} ({status}: {message}); the classic builder does \
             not stand in for BuildKit here, since its RUN steps would join the project's \
             network (set [build] builder = \"classic\" to build with it)"
        ))),
    }
}

/// The build's query string.
fn query(request: &BuildRequest, session: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("version", "2")
        .append_pair("session", session)
        .append_pair("dockerfile", &request.dockerfile)
        .append_pair("t", &request.tag)
        .append_pair("rm", "1")
        .append_pair("forcerm", "1")
        .append_pair(
            "labels",
            &serde_json::to_string(&request.labels).unwrap_or_default(),
        );
    if !request.build_args.is_empty() {
        query.append_pair(
            "buildargs",
            &serde_json::to_string(&request.build_args).unwrap_or_default(),
        );
    }
    if let Some(target) = &request.target {
        query.append_pair("target", target);
    }
    query.finish()
}

/// Sends the build request and reads its progress to the end. The connection is driven
/// here, not on a task of its own, so dropping this future closes it.
async fn post_build(
    endpoint: &Endpoint,
    path: String,
    context: Bytes,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Outcome, RuntimeError> {
    let unreachable = |err: &dyn std::fmt::Display| RuntimeError::Unreachable(err.to_string());
    let io = endpoint
        .connect()
        .await
        .map_err(RuntimeError::Unreachable)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| unreachable(&err))?;
    let request = Request::post(path)
        .header(HOST, "docker")
        .header(CONTENT_TYPE, "application/x-tar")
        .body(Full::new(context))
        .map_err(|err| unreachable(&err))?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| unreachable(&err))?;
        let status = response.status();
        let mut body = response.into_body();
        if status != StatusCode::OK {
            let text = body
                .collect()
                .await
                .map(|body| body.to_bytes())
                .unwrap_or_default();
            return refusal(Asked::Build, status, &engine_message(&text));
        }
        let mut progress = Progress::default();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| unreachable(&err))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                progress.message(&line, on_line)?;
            }
        }
        progress.message(&pending, on_line)?;
        progress.finish(on_line);
        progress.image_id.map(Outcome::Built).ok_or_else(|| {
            RuntimeError::BuildFailed("the build ended without producing an image".to_owned())
        })
    };
    tokio::pin!(connection, exchange);
    tokio::select! {
        outcome = &mut exchange => outcome,
        ended = &mut connection => match ended {
            Ok(()) => exchange.await,
            Err(err) => Err(unreachable(&err)),
        },
    }
}

/// One JSON message of the build's output stream.
#[derive(Debug, serde::Deserialize)]
struct Message {
    id: Option<String>,
    aux: Option<serde_json::Value>,
    stream: Option<String>,
    error: Option<String>,
    #[serde(rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
}

#[derive(Debug, serde::Deserialize)]
struct ErrorDetail {
    message: Option<String>,
}

/// What the lines printed so far said about each vertex.
#[derive(Debug, Default)]
struct Shown {
    /// The vertex's number in the log ("#3"), in order of first appearance.
    number: usize,
    name: String,
    announced: bool,
    cached: bool,
    done: bool,
    /// Output of the vertex not yet ended by a newline.
    partial: Vec<u8>,
}

/// The build's progress, turned into lines as it arrives.
#[derive(Debug, Default)]
struct Progress {
    vertexes: HashMap<String, Shown>,
    /// Vertex digests in order of first appearance.
    order: Vec<String>,
    /// Sub-tasks (downloads, export steps) already reported done.
    statuses_done: std::collections::HashSet<String>,
    image_id: Option<String>,
}

impl Progress {
    /// Handles one JSON message; an error message ends the build.
    fn message(
        &mut self,
        line: &[u8],
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), RuntimeError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let Ok(message) = serde_json::from_slice::<Message>(line) else {
            on_line(String::from_utf8_lossy(line).trim());
            return Ok(());
        };
        if let Some(error) = message
            .error_detail
            .and_then(|detail| detail.message)
            .or(message.error)
        {
            self.finish(on_line);
            on_line(&format!("ERROR: {}", error.trim()));
            return Err(RuntimeError::BuildFailed(error.trim().to_owned()));
        }
        match (message.id.as_deref(), message.aux) {
            (Some("moby.buildkit.trace"), Some(serde_json::Value::String(encoded))) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .ok()
                    .and_then(|bytes| StatusResponse::decode(&bytes));
                match decoded {
                    Some(status) => self.status(status, on_line),
                    None => on_line("(an unreadable progress message from the engine)"),
                }
            }
            (Some("moby.image.id"), Some(aux)) => {
                if let Some(id) = aux.get("ID").and_then(serde_json::Value::as_str) {
                    self.image_id = Some(id.to_owned());
                }
            }
            _ => {}
        }
        if let Some(text) = message.stream {
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                on_line(line);
            }
        }
        Ok(())
    }

    fn vertex(&mut self, digest: &str) -> &mut Shown {
        if !self.vertexes.contains_key(digest) {
            self.order.push(digest.to_owned());
            let number = self.order.len();
            self.vertexes.insert(
                digest.to_owned(),
                Shown {
                    number,
                    ..Default::default()
                },
            );
        }
        self.vertexes.get_mut(digest).expect("inserted above")
    }

    fn status(&mut self, status: StatusResponse, on_line: &mut (dyn FnMut(&str) + Send)) {
        for vertex in status.vertexes {
            let shown = self.vertex(&vertex.digest);
            let number = shown.number;
            if !vertex.name.is_empty() {
                shown.name = vertex.name.clone();
            }
            if !shown.announced && (vertex.started || vertex.cached || vertex.completed) {
                shown.announced = true;
                on_line(&format!("#{number} {}", shown.name));
            }
            // A vertex reported done and then cached (BuildKit does so for the context's
            // load) has said all there is.
            if vertex.cached && !shown.cached && !shown.done {
                shown.cached = true;
                on_line(&format!("#{number} CACHED"));
            }
            if vertex.completed && !shown.done {
                shown.done = true;
                flush(number, &mut shown.partial, on_line);
                if !vertex.error.is_empty() {
                    on_line(&format!("#{number} ERROR: {}", vertex.error));
                } else if !vertex.cached {
                    on_line(&format!("#{number} DONE"));
                }
            }
        }
        for status in status.statuses {
            if !status.completed || !self.statuses_done.insert(status.id.clone()) {
                continue;
            }
            let number = self.vertex(&status.vertex).number;
            let size = if status.total > 0 {
                format!(" {}", human_bytes(status.total))
            } else {
                String::new()
            };
            on_line(&format!("#{number} {}{size} done", status.id));
        }
        for log in status.logs {
            let shown = self.vertex(&log.vertex);
            let number = shown.number;
            shown.partial.extend_from_slice(&log.msg);
            while let Some(end) = shown.partial.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = shown.partial.drain(..=end).collect();
                print_output(number, &line, on_line);
            }
        }
    }

    /// Prints what vertexes wrote without a final newline.
    fn finish(&mut self, on_line: &mut (dyn FnMut(&str) + Send)) {
        for digest in &self.order {
            if let Some(shown) = self.vertexes.get_mut(digest) {
                flush(shown.number, &mut shown.partial, on_line);
            }
        }
    }
}

fn flush(number: usize, partial: &mut Vec<u8>, on_line: &mut (dyn FnMut(&str) + Send)) {
    if !partial.is_empty() {
        print_output(number, partial, on_line);
        partial.clear();
    }
}

fn print_output(number: usize, line: &[u8], on_line: &mut (dyn FnMut(&str) + Send)) {
    let text = String::from_utf8_lossy(line);
    // A progress bar redraws its line with carriage returns: its last state is the line.
    let text = text.trim_end_matches(['\n', '\r']);
    let text = text.rsplit('\r').next().unwrap_or(text);
    on_line(&format!("#{number} {text}"));
}

fn human_bytes(bytes: i64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1}MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1}kB", b as f64 / f64::from(1 << 10)),
        b => format!("{b}B"),
    }
}

/// Replaces every build secret's value in output lines with `****`, so a step that prints
/// one (by mistake or not) cannot put it in the build log.
#[derive(Debug, Default)]
pub struct Mask {
    /// The texts masked: each secret's value and each of its lines (output arrives line
    /// by line), longest first so a value is masked whole before its parts.
    texts: Vec<String>,
}

impl Mask {
    pub fn new(request: &BuildRequest) -> Self {
        let values = request
            .secrets
            .iter()
            .map(|secret| String::from_utf8_lossy(&secret.value))
            .chain(
                request
                    .registry_credentials
                    .iter()
                    .map(|login| std::borrow::Cow::Borrowed(login.password.as_str())),
            );
        let mut texts = Vec::new();
        for value in values {
            texts.push(value.trim().to_owned());
            texts.extend(value.lines().map(|line| line.trim().to_owned()));
        }
        texts.retain(|text| !text.is_empty());
        texts.sort_by_key(|text| std::cmp::Reverse(text.len()));
        texts.dedup();
        Self { texts }
    }

    pub fn apply<'a>(&self, line: &'a str) -> std::borrow::Cow<'a, str> {
        let mut line = std::borrow::Cow::Borrowed(line);
        for text in &self.texts {
            if line.contains(text.as_str()) {
                line = std::borrow::Cow::Owned(line.replace(text.as_str(), "****"));
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{docker::protobuf::Writer, BuildSecret, RegistryCredential};

    fn trace(response: Vec<u8>) -> String {
        serde_json::json!({
            "id": "moby.buildkit.trace",
            "aux": base64::engine::general_purpose::STANDARD.encode(response),
        })
        .to_string()
    }

    fn vertex(digest: &str, name: &str, flags: &[(u32, &[u8])]) -> Vec<u8> {
        let mut writer = Writer::default()
            .bytes(1, digest.as_bytes())
            .bytes(3, name.as_bytes());
        for (number, value) in flags {
            writer = match number {
                4 => writer.varint(4, 1),
                n => writer.bytes(*n, value),
            };
        }
        Writer::default().bytes(1, &writer.finish()).finish()
    }

    fn log(digest: &str, text: &str) -> Vec<u8> {
        let log = Writer::default()
            .bytes(1, digest.as_bytes())
            .varint(3, 1)
            .bytes(4, text.as_bytes())
            .finish();
        Writer::default().bytes(3, &log).finish()
    }

    /// The lines a stream of JSON messages prints, and how it ends.
    fn run(messages: &[String]) -> (Vec<String>, Result<Option<String>, String>) {
        let mut progress = Progress::default();
        let mut lines = Vec::new();
        let mut on_line = |line: &str| lines.push(line.to_owned());
        let mut ended = Ok(());
        for message in messages {
            ended = progress.message(message.as_bytes(), &mut on_line);
            if ended.is_err() {
                break;
            }
        }
        if ended.is_ok() {
            progress.finish(&mut on_line);
        }
        let outcome = ended
            .map(|()| progress.image_id.clone())
            .map_err(|err| err.to_string());
        (lines, outcome)
    }

    const STAMP: &[u8] = &[0x08, 0x01];

    #[test]
    fn progress_reads_as_plain_docker_build_output() {
        let (lines, outcome) = run(&[
            trace(vertex(
                "sha256:a",
                "[internal] load build definition from Dockerfile",
                &[(5, STAMP)],
            )),
            trace(vertex(
                "sha256:a",
                "[internal] load build definition from Dockerfile",
                &[(5, STAMP), (6, STAMP)],
            )),
            // Reported cached after it was done: nothing more to say.
            trace(vertex(
                "sha256:a",
                "[internal] load build definition from Dockerfile",
                &[(4, b""), (6, STAMP)],
            )),
            trace(vertex(
                "sha256:b",
                "[1/3] FROM docker.io/library/busybox:latest",
                &[(4, b""), (5, STAMP), (6, STAMP)],
            )),
            trace(vertex("sha256:c", "[2/3] RUN make", &[(5, STAMP)])),
            trace(log("sha256:c", "compiling\nhalf a ")),
            trace(log("sha256:c", "line\r\nprogress 10%\rprogress 100%\n")),
            trace(vertex(
                "sha256:c",
                "[2/3] RUN make",
                &[(5, STAMP), (6, STAMP)],
            )),
            r#"{"id":"moby.image.id","aux":{"ID":"sha256:feed"}}"#.to_owned(),
            // Non-JSON noise is kept as a line; blank lines are not.
            "\r\n".to_owned(),
        ]);
        assert_eq!(
            lines,
            vec![
                "#1 [internal] load build definition from Dockerfile",
                "#1 DONE",
                "#2 [1/3] FROM docker.io/library/busybox:latest",
                "#2 CACHED",
                "#3 [2/3] RUN make",
                "#3 compiling",
                "#3 half a line",
                "#3 progress 100%",
                "#3 DONE",
            ]
        );
        assert_eq!(outcome, Ok(Some("sha256:feed".to_owned())));
    }

    #[test]
    fn a_failed_step_prints_its_error_and_fails_the_build() {
        let (lines, outcome) = run(&[
            trace(vertex("sha256:c", "[2/2] RUN exit 7", &[(5, STAMP)])),
            trace(log("sha256:c", "about to fail")),
            trace(vertex("sha256:c", "[2/2] RUN exit 7", &[(5, STAMP), (6, STAMP), (7, b"exit code: 7")])),
            r#"{"errorDetail":{"message":"executor failed running [/bin/sh -c exit 7]: exit code: 7"},"error":"executor failed running [/bin/sh -c exit 7]: exit code: 7"}"#.to_owned(),
            trace(vertex("sha256:d", "never printed", &[(5, STAMP)])),
        ]);
        assert_eq!(
            lines,
            vec![
                "#1 [2/2] RUN exit 7",
                "#1 about to fail",
                "#1 ERROR: exit code: 7",
                "ERROR: executor failed running [/bin/sh -c exit 7]: exit code: 7",
            ]
        );
        assert_eq!(
            outcome,
            Err(
                "the image build failed: executor failed running [/bin/sh -c exit 7]: exit code: 7"
                    .to_owned()
            )
        );
    }

    #[test]
    fn finished_sub_tasks_print_once_with_their_size() {
        let status = |completed: bool| {
            let mut status = Writer::default()
                .bytes(1, b"sha256:layer")
                .bytes(2, b"sha256:b")
                .varint(4, 2_097_152)
                .varint(5, 2_097_152);
            if completed {
                status = status.bytes(8, STAMP);
            }
            Writer::default().bytes(2, &status.finish()).finish()
        };
        let (lines, _) = run(&[
            trace(status(false)),
            trace(status(true)),
            trace(status(true)),
        ]);
        assert_eq!(lines, vec!["#1 sha256:layer 2.0MB done"]);
    }

    /// A request with nothing but `secrets` and `logins` set.
    fn request(secrets: Vec<BuildSecret>, logins: Vec<RegistryCredential>) -> BuildRequest {
        BuildRequest {
            context_tar: Vec::new(),
            dockerfile: "Dockerfile".into(),
            tag: "cantila/a/b:1".into(),
            labels: HashMap::new(),
            memory_bytes: None,
            cpus: None,
            network: None,
            target: None,
            build_args: HashMap::new(),
            secrets,
            registry_credentials: logins,
            builder: crate::config::BuilderKind::Auto,
        }
    }

    #[test]
    fn only_an_engine_without_buildkit_falls_back_to_the_classic_builder() {
        fn check(asked: Asked, status: u16, message: &str, expected: Refusal) {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                classify(asked, status, message),
                expected,
                "{asked:?} {status} {message}"
            );
        }
        use Asked::{Build, Session};
        use Refusal::{Failed, NoBuildKit};
        // Engines without BuildKit, as they answer.
        check(Session, 404, "page not found", NoBuildKit);
        check(Session, 404, "", NoBuildKit);
        check(Build, 400, r#"invalid version "2""#, NoBuildKit);
        check(Build, 500, r#"invalid version "2""#, NoBuildKit);
        check(Build, 400, "buildkit not supported by daemon", NoBuildKit);
        check(
            Build,
            500,
            "BuildKit is disabled on this engine",
            NoBuildKit,
        );
        check(Build, 501, "not implemented", NoBuildKit);
        check(Build, 404, "page not found", NoBuildKit);
        // Engines with BuildKit refusing this build (answers of Docker 20.10), or failing.
        check(
            Build,
            500,
            "invalid reference format: repository name must be lowercase",
            Failed,
        );
        check(
            Build,
            400,
            "error reading build args: invalid character 'o'",
            Failed,
        );
        check(
            Build,
            500,
            "no active session for abc: context deadline exceeded",
            Failed,
        );
        check(
            Build,
            500,
            "write /var/lib/docker/tmp: operation not supported",
            Failed,
        );
        check(Build, 404, "no such image: busybox", Failed);
        check(Build, 503, "", Failed);
        check(Session, 400, "no upgrade proto in request", Failed);
        check(Session, 500, "session already exists", Failed);
    }

    #[test]
    fn a_refusal_says_why_the_classic_builder_does_not_stand_in() {
        let failed = refusal(Asked::Build, StatusCode::INTERNAL_SERVER_ERROR, "boom");
        let Err(RuntimeError::BuildFailed(message)) = failed else {
            panic!("{failed:?}");
        };
        assert!(
            message.contains("500 Internal Server Error: boom"),
            "{message}"
        );
        assert!(message.contains("builder = \"classic\""), "{message}");
        let unavailable = refusal(Asked::Session, StatusCode::NOT_FOUND, "page not found");
        let Ok(Outcome::Unavailable(reason)) = unavailable else {
            panic!("{unavailable:?}");
        };
        assert_eq!(
            reason,
            "the engine answered 404 Not Found to a BuildKit build session: page not found"
        );
    }

    #[test]
    fn the_query_names_the_session_target_args_and_labels() {
        let mut request = request(
            vec![BuildSecret {
                id: "token".into(),
                value: b"never-in-a-query".to_vec(),
            }],
            vec![RegistryCredential {
                server: "docker.io".into(),
                username: "me".into(),
                password: "never-either".into(),
            }],
        );
        request.labels = HashMap::from([("cantila.deploy".to_owned(), "d1".to_owned())]);
        request.network = Some("ignored".into());
        request.target = Some("runtime".into());
        request.build_args = HashMap::from([("MODE".to_owned(), "a b".to_owned())]);
        let query = query(&request, "s1");
        assert_eq!(
            query,
            "version=2&session=s1&dockerfile=Dockerfile&t=cantila%2Fa%2Fb%3A1&rm=1&forcerm=1\
             &labels=%7B%22cantila.deploy%22%3A%22d1%22%7D\
             &buildargs=%7B%22MODE%22%3A%22a+b%22%7D&target=runtime"
        );
    }

    #[test]
    fn secret_values_and_registry_passwords_are_masked_whole_and_line_by_line() {
        let mask = Mask::new(&request(
            vec![
                BuildSecret {
                    id: "token".into(),
                    value: b"tok-123\n".to_vec(),
                },
                BuildSecret {
                    id: "key".into(),
                    value: b"-----BEGIN-----\nAAAAsecret\n-----END-----".to_vec(),
                },
                BuildSecret {
                    id: "empty".into(),
                    value: Vec::new(),
                },
            ],
            vec![RegistryCredential {
                server: "127.0.0.1:5000".into(),
                username: "me".into(),
                password: "hunter2-pass".into(),
            }],
        ));
        assert_eq!(mask.apply("#3 token is tok-123!"), "#3 token is ****!");
        assert_eq!(mask.apply("#3 AAAAsecret"), "#3 ****");
        assert_eq!(mask.apply("login me:hunter2-pass"), "login me:****");
        assert_eq!(mask.apply("nothing secret here"), "nothing secret here");
        assert_eq!(Mask::default().apply("x"), "x");
    }
}

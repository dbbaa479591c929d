//! Private repositories with an access token, against a real authenticated git server:
//! `git http-backend` (CGI) behind a small HTTPS server on loopback that answers 401
//! unless the basic-auth password is the token it accepts now. The daemon is the real
//! binary, so that `SSL_CERT_FILE` (the test CA, which libgit2's OpenSSL then trusts)
//! reaches its process only, with `git.allowed_networks` opening loopback. A connection
//! without the token, or with a wrong one, is refused with a clear error after the
//! server's 401; with it the repository is fetched and deployed; a token the server
//! revokes fails the next deploy with the same clear error. The token is never in an API
//! answer, a deploy's log, the daemon's own log, nor (in the clear) the SQLite file or
//! its WAL. A server whose certificate the daemon does not trust is refused at once, with
//! the reason, and gets no request.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use reqwest::Method;
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::{io::AsyncWriteExt, net::TcpListener};

use crate::{
    deploys::{busybox_app, Repo},
    support::{BinaryDaemon, TestDir},
};

/// The user name Cantila sends with a token (GitHub, Gitea and GitLab accept it).
const TOKEN_USER: &str = "x-access-token";

/// What the git server saw, by how each request authenticated.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// Requests without credentials (each answered 401).
    anonymous: usize,
    /// Requests with credentials other than the accepted token (401).
    refused: usize,
    /// Requests with the accepted token (served by git http-backend).
    served: usize,
}

/// An HTTPS git server on 127.0.0.1 serving the repositories under `root` through
/// `git http-backend`, to clients presenting `x-access-token:<token>` over basic auth.
struct GitServer {
    address: SocketAddr,
    /// The CA that signed the server's certificate (PEM), for the client to trust.
    ca_pem: String,
    accepted: Arc<Mutex<String>>,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitServer {
    async fn start(root: PathBuf, token: &str) -> Self {
        let (ca_pem, certificate_pem, key_pem) = server_certificate();
        let certificates =
            rustls::pki_types::CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(token.to_owned()));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = (root, accepted.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request| {
                        let (root, accepted, seen) = state.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                serve(request, &root, &accepted, &seen).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            address,
            ca_pem,
            accepted,
            seen,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// From now on only `token` is accepted, as when the owner revokes the old one.
    fn accept_only(&self, token: &str) {
        *self.accepted.lock().unwrap() = token.to_owned();
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it: (CA, certificate, key), PEM.
fn server_certificate() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "git server test CA");
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let certificate = params.signed_by(&key, &issuer).unwrap();
    (ca_pem, certificate.pem(), key.serialize_pem())
}

/// One request: 401 unless the basic-auth credentials carry the accepted token, else
/// `git http-backend` answers it.
async fn serve(
    request: Request<Incoming>,
    root: &Path,
    accepted: &Mutex<String>,
    seen: &Mutex<Seen>,
) -> Response<Full<Bytes>> {
    let credentials = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok());
    let expected = format!("{TOKEN_USER}:{}", accepted.lock().unwrap());
    let unauthorized = || {
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"private\"")
            .body(Full::new(Bytes::from_static(b"authentication required\n")))
            .unwrap()
    };
    match credentials {
        None => {
            seen.lock().unwrap().anonymous += 1;
            return unauthorized();
        }
        Some(given) if given != expected => {
            seen.lock().unwrap().refused += 1;
            return unauthorized();
        }
        Some(_) => seen.lock().unwrap().served += 1,
    }
    http_backend(request, root).await
}

/// Runs `git http-backend` for the request as a CGI script and turns its output into the
/// response.
async fn http_backend(request: Request<Incoming>, root: &Path) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", TOKEN_USER)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let encoding = header("content-encoding");
    if !encoding.is_empty() {
        command.env("HTTP_CONTENT_ENCODING", encoding);
    }
    let protocol = header("git-protocol");
    if !protocol.is_empty() {
        command.env("GIT_PROTOCOL", protocol);
    }
    let mut child = command.spawn().expect("git http-backend starts");
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await.unwrap();
    let _ = writer.await;
    let stdout = output.stdout;
    let split = find(&stdout, b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| find(&stdout, b"\n\n").map(|at| (at, 2)));
    let Some((at, separator)) = split else {
        return Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Full::new(Bytes::from(output.stderr)))
            .unwrap();
    };
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    for line in String::from_utf8_lossy(&stdout[..at]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|code| code.parse().ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    response
        .status(status)
        .body(Full::new(Bytes::copy_from_slice(&stdout[at + separator..])))
        .unwrap()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    find(haystack, needle.as_bytes()).is_some()
}

/// The SQLite file and its WAL, as bytes.
fn store_bytes(data_dir: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(data_dir.join("cantila.db")).unwrap();
    if let Ok(wal) = std::fs::read(data_dir.join("cantila.db-wal")) {
        bytes.extend_from_slice(&wal);
    }
    bytes
}

/// The forms a token could leak in: itself and the basic-auth value that carries it.
fn token_forms(token: &str) -> [String; 2] {
    [
        token.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN_USER}:{token}")),
    ]
}

#[track_caller]
fn assert_token_absent(what: &str, haystack: &[u8], token: &str) {
    for form in token_forms(token) {
        assert!(
            !contains(haystack, &form),
            "{what} holds the token ({form})"
        );
    }
}

async fn deploy(daemon: &BinaryDaemon, project_id: &str) -> String {
    let (status, created) = daemon
        .call(
            Method::POST,
            &format!("/v1/projects/{project_id}/deploy"),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    created["deployId"].as_str().unwrap().to_owned()
}

/// Waits until the deploy is final; returns its view and its whole event stream.
async fn finished(daemon: &BinaryDaemon, deploy_id: &str) -> (Value, String) {
    let deploy =
        crate::support::wait_for(Duration::from_secs(120), "the deploy finishes", || async {
            let (_, deploy) = daemon
                .call(
                    Method::GET,
                    &format!("/v1/deploys/{deploy_id}"),
                    Value::Null,
                )
                .await;
            ["running", "failed", "canceled", "superseded"]
                .contains(&deploy["status"].as_str().unwrap_or_default())
                .then_some(deploy)
        })
        .await;
    let events = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/deploys/{deploy_id}/events",
            daemon.api
        ))
        .bearer_auth(&daemon.token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (deploy, events)
}

#[tokio::test]
async fn a_private_repository_is_fetched_with_its_sealed_token_which_is_never_shown() {
    let files = busybox_app("private code\n");
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let repo = Repo::new(&files);
    let token = format!("tok_{}", cantila::ids::random_base62(32));
    // The repository is served from its work tree's parent as `/<dir>/.git`.
    let served_root = repo.path().parent().unwrap().to_owned();
    let dir_name = repo
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let server = GitServer::start(served_root, &token).await;
    let url = server.url(&format!("/{dir_name}/.git"));

    let dir = TestDir::new();
    let data_dir = dir.path().join("data");
    let ca_file = dir.path().join("git-ca.pem");
    std::fs::write(&ca_file, &server.ca_pem).unwrap();
    let config_file = dir.path().join("cantila.toml");
    std::fs::write(
        &config_file,
        format!(
            "data_dir = \"{}\"\nbase_domain = \"test.local\"\napi_listen = \"127.0.0.1:0\"\n\
             http_listen = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\n\
             [tls]\nmode = \"off\"\n[deploy]\nnetwork = \"cantila-test\"\n\
             [git]\nallowed_networks = [\"127.0.0.1/32\"]\n",
            data_dir.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let ca_path = ca_file.display().to_string();
    let daemon = BinaryDaemon::start_from_file_with_env(
        &config_file,
        &data_dir,
        &log,
        "debug",
        &[("SSL_CERT_FILE", ca_path.as_str())],
    )
    .await;

    let (status, project) = daemon
        .call(Method::POST, "/v1/projects", json!({ "name": "private" }))
        .await;
    assert_eq!(status, 201, "{project}");
    let project_id = project["id"].as_str().unwrap().to_owned();
    let git = format!("/v1/projects/{project_id}/git");
    let mut answers = Vec::new();

    // Without a token the server answers 401 and the connection is refused, saying why.
    let (status, refused) = daemon
        .call(Method::POST, &git, json!({ "repo": url, "branch": "main" }))
        .await;
    assert_eq!(status, 422, "{refused}");
    let refusal = refused["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        refusal.contains("refused access") && refusal.contains("token"),
        "{refusal}"
    );
    let seen = server.seen();
    assert!(seen.anonymous >= 1, "{seen:?}");
    assert_eq!(seen.served, 0, "{seen:?}");
    // A wrong token: the same.
    let (status, wrong) = daemon
        .call(
            Method::POST,
            &git,
            json!({ "repo": url, "branch": "main", "accessToken": "tok_wrong" }),
        )
        .await;
    assert_eq!(status, 422, "{wrong}");
    assert_eq!(wrong["error"]["message"], refusal.as_str());
    assert!(server.seen().refused >= 1, "{:?}", server.seen());
    assert_eq!(server.seen().served, 0);

    // With the token: fetched, connected; the token is only ever "set".
    let (status, connected) = daemon
        .call(
            Method::POST,
            &git,
            json!({ "repo": url, "branch": "main", "accessToken": token }),
        )
        .await;
    assert_eq!(status, 200, "{connected}");
    assert_eq!(connected["accessTokenSet"], true, "{connected}");
    assert!(server.seen().served >= 1, "{:?}", server.seen());
    answers.push(connected.to_string());
    let (_, shown) = daemon.call(Method::GET, &git, Value::Null).await;
    assert_eq!(shown["accessTokenSet"], true, "{shown}");
    assert_eq!(shown["repo"], url.as_str(), "{shown}");
    answers.push(shown.to_string());

    // A deploy fetches with it.
    let served_before = server.seen().served;
    let deploy_id = deploy(&daemon, &project_id).await;
    let (deployed, events) = finished(&daemon, &deploy_id).await;
    assert_eq!(deployed["status"], "running", "{deployed}\n{events}");
    let head = git2::Repository::open(repo.path())
        .unwrap()
        .head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string();
    assert_eq!(deployed["commitSha"], head.as_str());
    assert!(server.seen().served > served_before, "{:?}", server.seen());
    assert_eq!(
        crate::deploys::app_answer(&deploy_id, "/").await.as_deref(),
        Some("private code\n")
    );
    answers.push(deployed.to_string());
    answers.push(events);

    // The owner revokes the token: the next deploy fails with the clear error, and the
    // release keeps serving.
    server.accept_only(&format!("tok_{}", cantila::ids::random_base62(32)));
    repo.commit(&[("www/index.html", "v2\n")], "v2");
    let refused_before = server.seen().refused;
    let failed_id = deploy(&daemon, &project_id).await;
    let (failed, failed_events) = finished(&daemon, &failed_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed_events.contains("refused access") && failed_events.contains("token"),
        "{failed_events}"
    );
    assert!(
        server.seen().refused > refused_before,
        "{:?}",
        server.seen()
    );
    assert_eq!(
        crate::deploys::app_answer(&deploy_id, "/").await.as_deref(),
        Some("private code\n")
    );
    answers.push(failed.to_string());
    answers.push(failed_events);
    let (_, project) = daemon
        .call(
            Method::GET,
            &format!("/v1/projects/{project_id}"),
            Value::Null,
        )
        .await;
    answers.push(project.to_string());
    let (_, audit) = daemon.call(Method::GET, "/v1/audit", Value::Null).await;
    answers.push(audit.to_string());

    // The token is nowhere it could be read back: the API, the deploy logs, the daemon's
    // own log (at debug), the store's file and WAL.
    for answer in &answers {
        assert_token_absent("an API answer or deploy log", answer.as_bytes(), &token);
    }
    let log_text = std::fs::read(&log).unwrap();
    assert!(contains(&log_text, "api="), "the log was written");
    assert_token_absent("the daemon's log", &log_text, &token);
    let store = store_bytes(&data_dir);
    assert!(
        contains(&store, &url),
        "the store's bytes hold the connection"
    );
    assert_token_absent("the SQLite file or its WAL", &store, &token);
    drop(daemon);
    drop(dir);
}

/// A git server whose certificate the daemon does not trust (here, the in-process daemon
/// trusts the system's roots only) is refused with the reason, before any request is
/// sent to it. This used to hang the fetch until its timeout, the API request being
/// abandoned after 30 s: libgit2 refused the certificate on an error path that writes
/// through a freed stream (see `source::egress`).
#[tokio::test]
async fn a_git_server_whose_certificate_is_not_trusted_is_refused_with_the_reason() {
    let repo = Repo::new(&[("index.html", "x\n")]);
    let served_root = repo.path().parent().unwrap().to_owned();
    let dir_name = repo
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let token = format!("tok_{}", cantila::ids::random_base62(32));
    let server = GitServer::start(served_root, &token).await;
    let daemon = crate::support::TestDaemon::start_with(|c| {
        c.git.allowed_networks = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let project = daemon.create_project("untrusted").await;
    let refused = daemon
        .post(
            &format!("/v1/projects/{}/git", project["id"].as_str().unwrap()),
            &daemon.admin_token,
            json!({
                "repo": server.url(&format!("/{dir_name}/.git")),
                "branch": "main",
                "accessToken": token,
            }),
        )
        .await
        .expect(422);
    assert!(
        refused
            .error_message()
            .contains("the TLS connection failed: the certificate of 127.0.0.1 is not trusted"),
        "{}",
        refused.text
    );
    assert!(!refused.text.contains(&token));
    let seen = server.seen();
    assert_eq!(
        seen.anonymous + seen.refused + seen.served,
        0,
        "a request reached the server: {seen:?}"
    );
}

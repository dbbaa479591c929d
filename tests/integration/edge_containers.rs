//! The edge's behaviours through the real daemon to real containers, beside `edge.rs`'s
//! fast tests on a hand-built route table: a retry on the other instance when one
//! instance's process died (the container still runs, so the route table keeps it); a
//! WebSocket upgrade, a streamed response, the body limit (413) and the request timeout
//! (504) with a Node app; HTTP/2 over the TLS edge. The apps are built locally from
//! `busybox:latest` and the `node:22-slim` stand-in of `scripts/base-images.sh`.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    deploys::Repo,
    support::{docker, wait_until, within, TestDaemon},
};

/// A Node app for the edge's behaviours: `/` and `/version` (the HTTP version the app was
/// spoken to with) answer at once; `/stream` sends its first chunk and holds the rest
/// until `/release`; `/upload` counts the body's bytes; `/never` never answers; an
/// upgrade to WebSocket echoes text frames.
const NODE_APP: &str = r#"
const http = require('http');
const crypto = require('crypto');
const held = [];
const server = http.createServer((req, res) => {
  switch (req.url) {
    case '/': res.end('edge app\n'); return;
    case '/version': res.end(`HTTP/${req.httpVersion}\n`); return;
    case '/stream':
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first chunk\n');
      held.push(() => res.end('last chunk\n'));
      return;
    case '/release': {
      const count = held.length;
      held.splice(0).forEach((finish) => finish());
      res.end(`released ${count}\n`);
      return;
    }
    case '/upload': {
      let received = 0;
      req.on('data', (chunk) => { received += chunk.length; });
      req.on('end', () => res.end(`received ${received}\n`));
      return;
    }
    case '/never': return;
    default: res.statusCode = 404; res.end('not found\n');
  }
});
// Idle upstream connections stay open longer than the edge's pool keeps them.
server.keepAliveTimeout = 120000;
server.on('upgrade', (req, socket) => {
  const accept = crypto.createHash('sha1')
    .update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
    .digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n' +
    'Connection: Upgrade\r\nSec-WebSocket-Accept: ' + accept + '\r\n\r\n');
  let buffer = Buffer.alloc(0);
  socket.on('data', (data) => {
    buffer = Buffer.concat([buffer, data]);
    while (buffer.length >= 2) {
      const opcode = buffer[0] & 0x0f;
      let length = buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffer.length < 4) return;
        length = buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) { socket.destroy(); return; }
      const maskAt = offset;
      if (buffer[1] & 0x80) offset += 4;
      if (buffer.length < offset + length) return;
      const payload = Buffer.from(buffer.subarray(offset, offset + length));
      if (buffer[1] & 0x80) for (let i = 0; i < length; i++) payload[i] ^= buffer[maskAt + (i % 4)];
      buffer = buffer.subarray(offset + length);
      if (opcode === 8) { socket.end(Buffer.from([0x88, 0])); return; }
      if (opcode === 1) {
        const out = Buffer.from('echo: ' + payload.toString());
        const header = out.length < 126
          ? Buffer.from([0x81, out.length])
          : Buffer.from([0x81, 126, out.length >> 8, out.length & 0xff]);
        socket.write(Buffer.concat([header, out]));
      }
    }
  });
});
server.listen(process.env.PORT || 8080);
"#;

fn node_repo() -> Repo {
    Repo::new(&[
        (
            "Dockerfile",
            "FROM node:22-slim\nCOPY server.js /app/server.js\nEXPOSE 8080\nCMD [\"node\", \"/app/server.js\"]\n",
        ),
        ("server.js", NODE_APP),
    ])
}

/// Deploys `repo` as project `name` and returns its id once it runs.
async fn deployed(daemon: &TestDaemon, name: &str, repo: &Repo) -> String {
    let (project_id, _) = daemon.connected_project(name, repo).await;
    let deploy = daemon.deploy(&project_id, None).await;
    assert_eq!(deploy["status"], "running", "{deploy}");
    project_id
}

/// A client of the edge's plain-HTTP listener that sends `Host` itself.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The web containers of a project.
async fn web_containers(project_id: &str) -> Vec<cantila::runtime::ContainerSummary> {
    cantila::runtime::docker::Engine::connect()
        .await
        .unwrap()
        .containers(&[("cantila.project", project_id), ("cantila.kind", "web")])
        .await
        .unwrap()
}

#[tokio::test]
async fn a_request_to_an_instance_whose_process_died_is_retried_on_the_other() {
    let daemon = TestDaemon::start_with(|c| c.deploy.drain_secs = 0).await;
    // httpd runs in the background of a shell that stays up: once httpd is killed, the
    // container still runs and keeps its place in the route table, but refuses connections.
    let repo = Repo::new(&[
        (
            "Dockerfile",
            "FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD [\"sh\", \"-c\", \"hostname > /www/who.txt && httpd -p 8080 -h /www && while true; do sleep 3600; done\"]\n",
        ),
        ("www/index.html", "retried\n"),
    ]);
    let project_id = deployed(&daemon, "retry", &repo).await;
    daemon
        .post(
            &format!("/v1/projects/{project_id}/scale"),
            &daemon.admin_token,
            json!({ "instances": 2 }),
        )
        .await
        .expect(200);
    let host = "retry.admin.test.local";
    // Both instances take traffic: the edge's round-robin shows both hostnames.
    let containers = web_containers(&project_id).await;
    assert_eq!(containers.len(), 2);
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    wait_until(
        Duration::from_secs(30),
        "both instances answer through the edge",
        || async {
            let (status, who) = daemon.edge_get(host, "/who.txt").await;
            let mut seen = seen.lock().unwrap();
            if status == 200 {
                seen.insert(who.trim().to_owned());
            }
            seen.len() == 2
        },
    )
    .await;

    // One instance's server dies out of band; its container runs on.
    let victim = &containers[0];
    docker(None, &["exec", &victim.id, "killall", "httpd"]).expect("killall httpd");
    let address = *victim.addresses.values().next().unwrap();
    wait_until(
        Duration::from_secs(10),
        "the killed server refuses connections",
        || async move { TcpStream::connect((address, 8080)).await.is_err() },
    )
    .await;
    let running = web_containers(&project_id).await;
    assert!(
        running
            .iter()
            .any(|c| c.id == victim.id && c.state == "running"),
        "the victim's container still runs: {running:?}"
    );

    // Every request is answered: those sent to the dead instance go to the other one.
    let client = plain_client();
    for request in 0..20 {
        let response = client
            .get(format!("http://{}/", daemon.http))
            .header("host", host)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, "retried\n"),
            "request {request}"
        );
    }
    // A body the edge has not read yet is retried too.
    for request in 0..4 {
        let response = client
            .post(format!("http://{}/", daemon.http))
            .header("host", host)
            .body("a small body")
            .send()
            .await
            .unwrap();
        assert_ne!(response.status().as_u16(), 502, "post {request}");
    }
}

#[tokio::test]
async fn websockets_streams_the_body_limit_and_the_timeout_reach_a_container_app() {
    let daemon = TestDaemon::start_with(|c| {
        c.edge.request_timeout_secs = 2;
        c.edge.max_body_mb = 1;
    })
    .await;
    let project_id = deployed(&daemon, "nodeedge", &node_repo()).await;
    let host = "nodeedge.admin.test.local";
    let edge = format!("http://{}", daemon.http);
    let client = plain_client();
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "edge app\n".to_owned())
    );

    // WebSocket: the upgrade reaches the app and frames flow both ways.
    let stream = TcpStream::connect(daemon.http).await.unwrap();
    let (mut socket, response) = within(
        Duration::from_secs(30),
        "the WebSocket handshake",
        tokio_tungstenite::client_async(format!("ws://{host}/ws"), stream),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["hello through the edge", "and again"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = within(Duration::from_secs(30), "the echo", socket.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            echoed.into_text().unwrap().as_str(),
            format!("echo: {text}")
        );
    }
    socket.close(None).await.unwrap();

    // A streamed response: the first chunk arrives while the app still holds the rest.
    let mut streamed = within(
        Duration::from_secs(20),
        "the head of a response whose body is held",
        client
            .get(format!("{edge}/stream"))
            .header("host", host)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(streamed.status(), 200);
    let first = within(
        Duration::from_secs(30),
        "the first chunk before the body ends",
        streamed.chunk(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(first, "first chunk\n");
    let released = client
        .get(format!("{edge}/release"))
        .header("host", host)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(released, "released 1\n");
    let rest = within(
        Duration::from_secs(30),
        "the rest of the body",
        streamed.text(),
    )
    .await
    .unwrap();
    assert_eq!(rest, "last chunk\n");

    // The body limit: a body under it reaches the app; one over it, announced or
    // streamed without a length, is refused with 413.
    let small = vec![b'x'; 100 * 1024];
    let response = client
        .post(format!("{edge}/upload"))
        .header("host", host)
        .body(small)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "received 102400\n");
    let announced = client
        .post(format!("{edge}/upload"))
        .header("host", host)
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(announced.status(), 413);
    let chunks = futures_util::stream::iter(
        (0..32).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 64 * 1024]))),
    );
    let streamed_body = client
        .post(format!("{edge}/upload"))
        .header("host", host)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    // The edge may answer 413 and close before the client has sent everything.
    if let Ok(response) = streamed_body {
        assert_eq!(response.status(), 413);
    }

    // The request timeout: an app that never answers gets the edge's 504.
    let response = within(
        Duration::from_secs(30),
        "the edge's answer for an app that never answers",
        client
            .get(format!("{edge}/never"))
            .header("host", host)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 504);
    assert!(response.text().await.unwrap().contains("in time"));
    // The app still serves.
    assert_eq!(
        daemon.edge_get(host, "/").await,
        (200, "edge app\n".to_owned())
    );
    let _ = project_id;
}

#[tokio::test]
async fn http2_over_the_tls_edge_reaches_a_container_app() {
    let daemon = TestDaemon::start_with(|c| {
        c.tls.mode = cantila::tls::TlsMode::SelfSigned;
    })
    .await;
    deployed(&daemon, "nodeh2", &node_repo()).await;
    let host = "nodeh2.admin.test.local";
    let ca = std::fs::read(daemon.data_dir().join("certs/local-ca/ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&ca) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let tls = within(Duration::from_secs(30), "the TLS handshake", async {
        let stream = TcpStream::connect(daemon.https).await.unwrap();
        connector
            .connect(
                rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap(),
                stream,
            )
            .await
            .unwrap()
    })
    .await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the edge chose HTTP/2"
    );
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = |path: &str, body: Full<Bytes>| {
        hyper::Request::builder()
            .uri(format!("https://{host}{path}"))
            .method(if path == "/upload" { "POST" } else { "GET" })
            .body(body)
            .unwrap()
    };

    // The edge speaks HTTP/2 with the client and HTTP/1.1 with the app.
    let response = sender
        .send_request(request("/version", Full::default()))
        .await
        .unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "HTTP/1.1\n");

    // Streams of one connection are independent: a held response streams its first
    // chunk, and a second stream releases it.
    let held = sender
        .send_request(request("/stream", Full::default()))
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    let mut held = held.into_body();
    let first = within(
        Duration::from_secs(30),
        "the first chunk over HTTP/2",
        held.frame(),
    )
    .await
    .unwrap()
    .unwrap()
    .into_data()
    .unwrap();
    assert_eq!(first, "first chunk\n");
    let released = sender
        .send_request(request("/release", Full::default()))
        .await
        .unwrap();
    let released = released.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(released, "released 1\n");
    let rest = within(
        Duration::from_secs(30),
        "the rest over HTTP/2",
        held.collect(),
    )
    .await
    .unwrap()
    .to_bytes();
    assert_eq!(rest, "last chunk\n");

    // A request body crosses too.
    let uploaded = sender
        .send_request(request(
            "/upload",
            Full::new(Bytes::from(vec![b'z'; 70_000])),
        ))
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 200);
    let uploaded = uploaded.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(uploaded, "received 70000\n");
    // Closed by the client, so the daemon's stop does not wait out its drain for it.
    drop(sender);
    within(Duration::from_secs(30), "the connection closes", connection)
        .await
        .unwrap()
        .unwrap();
}

//! The edge end to end: real upstream servers on 127.0.0.1:0, a route table pointing at
//! them, the edge on 127.0.0.1:0, and real HTTP clients (reqwest, hyper, raw TCP,
//! tokio-tungstenite). Nothing on the network is mocked.

use std::{
    collections::HashMap,
    convert::Infallible,
    io::Read,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use cantila::edge::{
    serve_connection, serve_http, ChallengeResponder, Edge, EdgeConfig, EdgeMetrics, NoChallenges,
    Route, RouteTable, RouteTarget, Routes,
};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::{
    body::{Bytes, Frame, Incoming},
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot, Notify},
    task::JoinHandle,
};
use tokio_tungstenite::tungstenite::{self, protocol::Role, Message};

use crate::support::{wait_until, within};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestBody = BoxBody<Bytes, BoxError>;

// ---------------------------------------------------------------------------------------
// Upstream: a small hyper server that reports what it saw.
// ---------------------------------------------------------------------------------------

/// Signals shared between a test and its upstream, for the streaming tests.
#[derive(Default)]
struct UpstreamSignals {
    /// `/hold` sends its first chunk, then waits for this before the rest.
    release_hold: Notify,
    /// `/first-chunk` reports the size of the first request frame it received.
    first_chunk: Mutex<Option<oneshot::Sender<usize>>>,
}

struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    signals: Arc<UpstreamSignals>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_upstream(name: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let signals = Arc::new(UpstreamSignals::default());
    let (task_hits, task_signals) = (hits.clone(), signals.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (hits, signals) = (task_hits.clone(), task_signals.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let (hits, signals) = (hits.clone(), signals.clone());
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(upstream_handle(name, request, signals).await)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        hits,
        signals,
        task,
    }
}

fn full_body(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn query_number(request: &Request<Incoming>, key: &str) -> u64 {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// The byte at `offset` of the generated test streams, so both ends can check content
/// without keeping it.
fn pattern_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(31).wrapping_add(7) % 251) as u8
}

fn pattern_chunk(start: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| pattern_byte(start + i))
        .collect::<Vec<u8>>()
        .into()
}

async fn upstream_handle(
    name: &'static str,
    request: Request<Incoming>,
    signals: Arc<UpstreamSignals>,
) -> Response<TestBody> {
    match request.uri().path() {
        "/echo" => Response::new(request.into_body().map_err(BoxError::from).boxed()),
        "/big" => {
            let total = query_number(&request, "bytes");
            let chunks = futures_util::stream::unfold(0u64, move |sent| async move {
                if sent >= total {
                    return None;
                }
                let len = (total - sent).min(64 * 1024) as usize;
                Some((
                    Ok::<_, BoxError>(Frame::data(pattern_chunk(sent, len))),
                    sent + len as u64,
                ))
            });
            Response::new(BodyExt::boxed(StreamBody::new(chunks)))
        }
        "/slow" => {
            // The fixture's own behaviour: an instance that takes this long to answer.
            tokio::time::sleep(Duration::from_millis(query_number(&request, "ms"))).await;
            Response::new(full_body("slow done"))
        }
        "/hold" => {
            let (sender, receiver) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
            tokio::spawn(async move {
                let _ = sender.send(Ok(Frame::data(Bytes::from("first;")))).await;
                signals.release_hold.notified().await;
                let _ = sender.send(Ok(Frame::data(Bytes::from("second")))).await;
            });
            let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "/first-chunk" => {
            let mut body = request.into_body();
            let mut total = 0usize;
            let mut reporter = signals.first_chunk.lock().unwrap().take();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    if let Some(reporter) = reporter.take() {
                        let _ = reporter.send(data.len());
                    }
                }
            }
            Response::new(full_body(total.to_string()))
        }
        "/hop" => Response::builder()
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-upstream-kept", "yes")
            .body(full_body("hop"))
            .unwrap(),
        "/own-hsts" => Response::builder()
            .header("strict-transport-security", "max-age=60; includeSubDomains")
            .body(full_body("own hsts"))
            .unwrap(),
        "/ws" => websocket_echo(request),
        _ => {
            let mut seen: HashMap<String, Vec<String>> = HashMap::new();
            for (header, value) in request.headers() {
                seen.entry(header.as_str().to_owned())
                    .or_default()
                    .push(value.to_str().unwrap_or("").to_owned());
            }
            let report = serde_json::json!({
                "upstream": name,
                "method": request.method().as_str(),
                "uri": request.uri().to_string(),
                "headers": seen,
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(full_body(report.to_string()))
                .unwrap()
        }
    }
}

fn websocket_echo(mut request: Request<Incoming>) -> Response<TestBody> {
    let key = request
        .headers()
        .get("sec-websocket-key")
        .map(|key| key.as_bytes().to_vec())
        .unwrap_or_default();
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_text() || message.is_binary() {
                if socket.send(message).await.is_err() {
                    return;
                }
            } else if message.is_close() {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header(
            "sec-websocket-accept",
            tungstenite::handshake::derive_accept_key(&key),
        )
        .body(full_body(Bytes::new()))
        .unwrap()
}

/// An address on which nothing listens: bound, then closed.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------
// The edge under test.
// ---------------------------------------------------------------------------------------

struct RunningEdge {
    addr: SocketAddr,
    edge: Edge,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for RunningEdge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl RunningEdge {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn routes(&self) -> &Routes {
        self.edge.routes()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the edge stops within its drain timeout")
                .unwrap();
        }
    }
}

struct Challenges(HashMap<String, String>);

impl ChallengeResponder for Challenges {
    fn key_authorization(&self, token: &str) -> Option<String> {
        self.0.get(token).cloned()
    }
}

fn test_config() -> EdgeConfig {
    EdgeConfig {
        request_timeout: Duration::from_secs(10),
        max_body_bytes: 256 * 1024 * 1024,
        drain_timeout: Duration::from_secs(5),
        hsts_max_age_secs: 31_536_000,
    }
}

fn make_edge(
    table: RouteTable,
    config: EdgeConfig,
    challenges: Arc<dyn ChallengeResponder>,
) -> Edge {
    Edge::new(
        Arc::new(Routes::new(table)),
        Arc::new(EdgeMetrics::new()),
        config,
        challenges,
    )
}

async fn start_edge_with(
    table: RouteTable,
    config: EdgeConfig,
    challenges: Arc<dyn ChallengeResponder>,
) -> RunningEdge {
    let edge = make_edge(table, config, challenges);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_http(edge.clone(), listener, async move {
        let _ = stopped.await;
    }));
    RunningEdge {
        addr,
        edge,
        stop: Some(stop),
        task: Some(task),
    }
}

async fn start_edge(table: RouteTable) -> RunningEdge {
    start_edge_with(table, test_config(), Arc::new(NoChallenges)).await
}

fn route(id: &str, target: RouteTarget) -> Arc<Route> {
    Arc::new(Route::new(id, id.trim_start_matches("prj_"), target, false))
}

fn table(entries: &[(&str, Arc<Route>)]) -> RouteTable {
    let mut table = RouteTable::new();
    for (host, route) in entries {
        table.insert(host, route.clone());
    }
    table
}

fn proxied(id: &str, instances: &[SocketAddr]) -> Arc<Route> {
    route(id, RouteTarget::Instances(instances.to_vec()))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn hyper_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get_json(edge: &RunningEdge, host: &str, path: &str) -> serde_json::Value {
    let response = client()
        .get(edge.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {host}{path}");
    response.json().await.unwrap()
}

/// Sends `head` (request line and headers, without the blank line) over a fresh
/// connection and reads the whole answer; for what HTTP clients refuse to send.
async fn raw_request(addr: SocketAddr, head: &str) -> (u16, String) {
    raw_exchange(
        addr,
        format!("{head}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Writes exactly `bytes` on a fresh connection and reads the answer until the edge
/// closes it: the status and the whole text.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the edge answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

// ---------------------------------------------------------------------------------------
// Routing and pages.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn requests_route_by_host_whatever_the_case_port_or_trailing_dot() {
    let a = start_upstream("a").await;
    let b = start_upstream("b").await;
    let edge = start_edge(table(&[
        ("app.test", proxied("prj_a", &[a.addr])),
        ("Other.Test", proxied("prj_b", &[b.addr])),
    ]))
    .await;
    for host in ["app.test", "APP.Test:8080", "app.test.", "app.test.:80"] {
        assert_eq!(get_json(&edge, host, "/").await["upstream"], "a", "{host}");
    }
    assert_eq!(get_json(&edge, "other.test", "/").await["upstream"], "b");
    let seen = get_json(&edge, "app.test", "/some/path?x=1&y=2").await;
    assert_eq!(seen["uri"], "/some/path?x=1&y=2");
}

#[tokio::test]
async fn an_unknown_host_gets_the_404_page_and_a_malformed_one_a_400() {
    let edge = start_edge(RouteTable::new()).await;
    let response = client()
        .get(edge.url("/"))
        .header("host", "nobody.example:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(response.headers().contains_key("x-request-id"));
    let page = response.text().await.unwrap();
    assert!(page.contains("nobody.example"), "{page}");

    // Not a host at all: refused, and never quoted back.
    let response = client()
        .get(edge.url("/"))
        .header("host", "<b>nobody</b>.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let page = response.text().await.unwrap();
    assert!(
        !page.contains("<b>nobody") && !page.contains("nobody"),
        "{page}"
    );

    // HTTP/1.0 predates Host: no host is an unknown host, not an error.
    let (status, text) = raw_request(edge.addr, "GET / HTTP/1.0").await;
    assert_eq!(status, 404, "{text}");
}

#[tokio::test]
async fn a_request_names_one_host_or_gets_a_400() {
    let a = start_upstream("a").await;
    let b = start_upstream("b").await;
    let edge = start_edge(table(&[
        ("a.test", proxied("prj_a", &[a.addr])),
        ("b.test", proxied("prj_b", &[b.addr])),
    ]))
    .await;
    for (head, why) in [
        (
            "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test",
            "two Host headers",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test",
            "the same Host twice",
        ),
        ("GET / HTTP/1.1", "HTTP/1.1 without Host"),
        ("GET / HTTP/1.1\r\nHost: ", "an empty Host"),
        (
            "GET / HTTP/1.1\r\nHost: a.test:http",
            "a port that is not a number",
        ),
        (
            "GET / HTTP/1.1\r\nHost: me@a.test",
            "user information in Host",
        ),
        (
            "GET http://me@a.test/ HTTP/1.1\r\nHost: a.test",
            "user information in the target",
        ),
        (
            "GET http://a.test/ HTTP/1.1",
            "an absolute target without Host on HTTP/1.1",
        ),
        (
            "GET / HTTP/1.0\r\nHost: a.test\r\nHost: b.test",
            "two Host headers on HTTP/1.0",
        ),
    ] {
        let (status, text) = raw_request(edge.addr, head).await;
        assert_eq!(status, 400, "{why}: {text}");
        assert!(text.contains("400 Bad Request"), "{why}: {text}");
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), 0, "nothing reached an app");
    assert_eq!(b.hits.load(Ordering::SeqCst), 0, "nothing reached an app");

    // The request line's authority routes, and it is the Host the app receives (RFC 9112
    // §3.2.2), whatever the Host header said.
    let (status, text) = raw_request(
        edge.addr,
        "GET http://A.test:8080/where?x=1 HTTP/1.1\r\nHost: b.test",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let seen: serde_json::Value =
        serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(seen["upstream"], "a", "{seen}");
    assert_eq!(seen["uri"], "/where?x=1");
    assert_eq!(seen["headers"]["host"], serde_json::json!(["A.test:8080"]));
    assert_eq!(seen["headers"]["x-forwarded-host"][0], "A.test:8080");
    assert!(
        seen["headers"]["forwarded"][0]
            .as_str()
            .unwrap()
            .ends_with(";host=\"A.test:8080\""),
        "{seen}"
    );
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_400_not_a_502() {
    let up = start_upstream("a").await;
    let edge = start_edge(table(&[("app.test", proxied("prj_app", &[up.addr]))])).await;
    for (body, why) in [
        ("zz\r\nhello\r\n0\r\n\r\n", "a chunk size that is not hex"),
        ("5\r\nhelloXX0\r\n\r\n", "a chunk without its line end"),
    ] {
        let request = format!(
            "POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n{body}"
        );
        let (status, text) = raw_exchange(edge.addr, request.as_bytes()).await;
        assert_eq!(status, 400, "{why}: {text}");
        assert!(
            text.contains("request body could not be read"),
            "{why}: {text}"
        );
    }
    // A well-formed chunked body still goes through.
    let request = "POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\
                   Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (status, text) = raw_exchange(edge.addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("hello"), "{text}");
}

#[tokio::test]
async fn an_unavailable_project_gets_a_503_naming_its_state() {
    let edge = start_edge(table(&[
        (
            "building.test",
            route(
                "prj_shop",
                RouteTarget::Unavailable {
                    state: "building".into(),
                },
            ),
        ),
        ("empty.test", proxied("prj_empty", &[])),
    ]))
    .await;
    let response = within(
        Duration::from_secs(30),
        "the 503 answers at once, never a hang",
        client()
            .get(edge.url("/"))
            .header("host", "building.test")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "10");
    let page = response.text().await.unwrap();
    assert!(page.contains("shop") && page.contains("building"), "{page}");

    let response = client()
        .get(edge.url("/"))
        .header("host", "empty.test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.text().await.unwrap().contains("unhealthy"));
}

// ---------------------------------------------------------------------------------------
// Load balancing and failures.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn requests_take_turns_across_instances() {
    let a = start_upstream("a").await;
    let b = start_upstream("b").await;
    let edge = start_edge(table(&[(
        "app.test",
        proxied("prj_app", &[a.addr, b.addr]),
    )]))
    .await;
    let mut order = Vec::new();
    for _ in 0..10 {
        let seen = get_json(&edge, "app.test", "/").await;
        order.push(seen["upstream"].as_str().unwrap().to_owned());
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), 5);
    assert_eq!(b.hits.load(Ordering::SeqCst), 5);
    assert!(order.windows(2).all(|pair| pair[0] != pair[1]), "{order:?}");
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_instance() {
    let live = start_upstream("live").await;
    let dead = closed_port().await;
    let edge = start_edge(table(&[(
        "app.test",
        proxied("prj_app", &[dead, live.addr]),
    )]))
    .await;
    for _ in 0..6 {
        assert_eq!(get_json(&edge, "app.test", "/").await["upstream"], "live");
    }
    // A request with a body is retried too, since the dead instance never read a byte.
    for n in 0..4 {
        let body = format!("payload {n} ").repeat(1000);
        let response = client()
            .post(edge.url("/echo"))
            .header("host", "app.test")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), body);
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), 10);
}

/// An instance that counts the connections it accepted and those that ended, and drops
/// every open connection when `close_all` is notified (as an app restarting its server or
/// closing idle keep-alive connections would), without a word to the edge.
struct CountingUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    close_all: Arc<tokio::sync::watch::Sender<u32>>,
    task: JoinHandle<()>,
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_counting_upstream() -> CountingUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let close_all = Arc::new(tokio::sync::watch::Sender::new(0u32));
    let (task_accepted, task_ended, task_close) =
        (accepted.clone(), ended.clone(), close_all.clone());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            task_accepted.fetch_add(1, Ordering::SeqCst);
            let ended = task_ended.clone();
            let mut close = task_close.subscribe();
            close.mark_unchanged();
            tokio::spawn(async move {
                let service = service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(full_body("kept alive")))
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
                    _ = close.changed() => {}
                }
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    CountingUpstream {
        addr,
        accepted,
        ended,
        close_all,
        task,
    }
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_a_closed_one_is_replaced() {
    let upstream = start_counting_upstream().await;
    let edge = start_edge(table(&[("app.test", proxied("prj_app", &[upstream.addr]))])).await;
    let get = || async {
        let response = client()
            .get(edge.url("/"))
            .header("host", "app.test")
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    for _ in 0..10 {
        assert_eq!(get().await, (StatusCode::OK, "kept alive".to_owned()));
    }
    assert_eq!(
        upstream.accepted.load(Ordering::SeqCst),
        1,
        "ten requests one after the other reuse one upstream connection"
    );

    // The instance drops the idle connection: the next request goes out on a new one.
    upstream.close_all.send_modify(|round| *round += 1);
    wait_until(
        Duration::from_secs(10),
        "the instance closed its connection",
        || async { upstream.ended.load(Ordering::SeqCst) == 1 },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(get().await, (StatusCode::OK, "kept alive".to_owned()));
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn all_instances_down_is_a_502_page() {
    let edge = start_edge(table(&[(
        "app.test",
        proxied("prj_app", &[closed_port().await, closed_port().await]),
    )]))
    .await;
    let response = within(
        Duration::from_secs(30),
        "the 502 answers at once, never a hang",
        client()
            .get(edge.url("/"))
            .header("host", "app.test")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 502);
    assert!(response.text().await.unwrap().contains("502 Bad Gateway"));
}

#[tokio::test]
async fn a_slow_instance_gets_a_504_at_the_request_timeout() {
    let slow = start_upstream("slow").await;
    let config = EdgeConfig {
        request_timeout: Duration::from_secs(2),
        ..test_config()
    };
    let edge = start_edge_with(
        table(&[("app.test", proxied("prj_app", &[slow.addr]))]),
        config,
        Arc::new(NoChallenges),
    )
    .await;
    // An instance that would answer in ten minutes: the 504 comes at the edge's timeout,
    // long before.
    let response = within(
        Duration::from_secs(30),
        "the 504 at the request timeout",
        client()
            .get(edge.url("/slow?ms=600000"))
            .header("host", "app.test")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 504);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("504 Gateway Timeout"));
    // An instance slower than nothing but well within the timeout is waited for.
    let fast = client()
        .get(edge.url("/slow?ms=200"))
        .header("host", "app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(fast.status(), 200);
}

// ---------------------------------------------------------------------------------------
// Headers.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_instance_sees_forwarding_headers_and_a_request_id() {
    let up = start_upstream("a").await;
    let edge = start_edge(table(&[("app.test", proxied("prj_app", &[up.addr]))])).await;
    let host = format!("App.test:{}", edge.addr.port());

    let response = client()
        .get(edge.url("/"))
        .header("host", &host)
        .header("x-forwarded-for", "203.0.113.1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "spoofed.example")
        .header("x-real-ip", "203.0.113.66")
        .header(
            "forwarded",
            "for=203.0.113.66;host=spoofed.example;proto=https",
        )
        .header("forwarded", "for=203.0.113.67")
        .send()
        .await
        .unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(generated.starts_with("req_"), "{generated}");
    let seen: serde_json::Value = response.json().await.unwrap();
    let headers = &seen["headers"];
    assert_eq!(headers["x-forwarded-for"][0], "203.0.113.1, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    assert_eq!(headers["x-forwarded-host"][0], host.as_str());
    assert_eq!(headers["host"][0], host.as_str());
    assert_eq!(headers["x-request-id"][0], generated.as_str());
    // X-Real-IP and Forwarded are the edge's word alone: one value, the client's claims gone.
    assert_eq!(headers["x-real-ip"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(
        headers["forwarded"],
        serde_json::json!([format!("for=127.0.0.1;proto=http;host=\"{host}\"")])
    );

    let response = client()
        .get(edge.url("/"))
        .header("host", "app.test")
        .header("x-request-id", "trace-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42.a_b");
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["headers"]["x-request-id"][0], "trace-42.a_b");
    assert_eq!(seen["headers"]["x-forwarded-for"][0], "127.0.0.1");

    let response = client()
        .get(edge.url("/"))
        .header("host", "app.test")
        .header("x-request-id", "not a plain id <>")
        .send()
        .await
        .unwrap();
    let replaced = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(replaced.starts_with("req_"), "{replaced}");
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_cross_the_edge_either_way() {
    let up = start_upstream("a").await;
    let edge = start_edge(table(&[("app.test", proxied("prj_app", &[up.addr]))])).await;
    let (status, answer) = raw_request(
        edge.addr,
        "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: X-Client-Hop\r\nX-Client-Hop: 1\r\n\
         Keep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         Proxy-Connection: keep-alive\r\nX-End-To-End: kept",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let seen: serde_json::Value = serde_json::from_str(body).unwrap();
    let headers = seen["headers"].as_object().unwrap();
    for gone in [
        "connection",
        "x-client-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the instance: {headers:?}"
        );
    }
    assert_eq!(headers["x-end-to-end"][0], "kept");

    let response = client()
        .get(edge.url("/hop"))
        .header("host", "app.test")
        .send()
        .await
        .unwrap();
    let headers = response.headers();
    for gone in ["x-upstream-hop", "keep-alive", "proxy-authenticate"] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the client: {headers:?}"
        );
    }
    assert_eq!(headers["x-upstream-kept"], "yes");
}

// ---------------------------------------------------------------------------------------
// Bodies.
// ---------------------------------------------------------------------------------------

/// A request body fed chunk by chunk from a channel, with no length announced.
fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (sender, receiver) = mpsc::channel::<Bytes>(4);
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver)
        .map(|chunk| Ok::<_, BoxError>(Frame::data(chunk)));
    (sender, BodyExt::boxed(StreamBody::new(stream)))
}

#[tokio::test]
async fn large_bodies_stream_through_both_ways() {
    let up = start_upstream("a").await;
    let edge = start_edge(table(&[("app.test", proxied("prj_app", &[up.addr]))])).await;
    const TOTAL: u64 = 48 * 1024 * 1024;

    // A 48 MiB upload echoed back, generated and checked on the fly.
    let (sender, body) = channel_body();
    let producer = tokio::spawn(async move {
        let mut sent = 0u64;
        while sent < TOTAL {
            let chunk = pattern_chunk(sent, 256 * 1024);
            sent += chunk.len() as u64;
            if sender.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let request = Request::post(edge.url("/echo"))
        .header("host", "app.test")
        .body(body)
        .unwrap();
    let response = hyper_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(data
                .iter()
                .enumerate()
                .all(|(i, &byte)| byte == pattern_byte(received + i as u64)));
            received += data.len() as u64;
        }
    }
    assert_eq!(received, TOTAL);
    producer.await.unwrap();

    // A 48 MiB download.
    let response = client()
        .get(edge.url(&format!("/big?bytes={TOTAL}")))
        .header("host", "app.test")
        .send()
        .await
        .unwrap();
    let mut response = response;
    let mut offset = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert!(chunk
            .iter()
            .enumerate()
            .all(|(i, &byte)| byte == pattern_byte(offset + i as u64)));
        offset += chunk.len() as u64;
    }
    assert_eq!(offset, TOTAL);
}

#[tokio::test]
async fn bodies_are_streamed_not_buffered() {
    let up = start_upstream("a").await;
    let edge = start_edge(table(&[("app.test", proxied("prj_app", &[up.addr]))])).await;

    // The instance sees the first chunk of the upload while the client is still holding
    // the rest back.
    let (reported, first_chunk) = oneshot::channel();
    *up.signals.first_chunk.lock().unwrap() = Some(reported);
    let (sender, body) = channel_body();
    let request = Request::post(edge.url("/first-chunk"))
        .header("host", "app.test")
        .body(body)
        .unwrap();
    let pending = tokio::spawn(hyper_client().request(request));
    sender.send(Bytes::from(vec![b'x'; 1000])).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), first_chunk)
        .await
        .expect("the first chunk reached the instance before the body ended")
        .unwrap();
    assert!(first > 0 && first <= 1000);
    sender.send(Bytes::from(vec![b'y'; 500])).await.unwrap();
    drop(sender);
    let response = pending.await.unwrap().unwrap();
    let total = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(total, "1500");

    // The client reads the first chunk of the answer while the instance holds the rest.
    let response = client()
        .get(edge.url("/hold"))
        .header("host", "app.test")
        .send()
        .await
        .unwrap();
    let mut response = response;
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("the first chunk arrived before the instance finished")
        .unwrap()
        .unwrap();
    assert_eq!(first, "first;");
    up.signals.release_hold.notify_one();
    let rest = response.chunk().await.unwrap().unwrap();
    assert_eq!(rest, "second");
}

#[tokio::test]
async fn bodies_over_the_limit_get_a_413() {
    let up = start_upstream("a").await;
    let config = EdgeConfig {
        max_body_bytes: 1024 * 1024,
        ..test_config()
    };
    let edge = start_edge_with(
        table(&[("app.test", proxied("prj_app", &[up.addr]))]),
        config,
        Arc::new(NoChallenges),
    )
    .await;

    let at_limit = client()
        .post(edge.url("/echo"))
        .header("host", "app.test")
        .body(vec![b'a'; 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(at_limit.status(), 200);
    assert_eq!(at_limit.bytes().await.unwrap().len(), 1024 * 1024);

    // Announced by Content-Length: refused before the instance is asked.
    let hits_before = up.hits.load(Ordering::SeqCst);
    let over = client()
        .post(edge.url("/echo"))
        .header("host", "app.test")
        .body(vec![b'a'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), 413);
    assert!(over.text().await.unwrap().contains("413 Payload Too Large"));
    assert_eq!(up.hits.load(Ordering::SeqCst), hits_before);

    // Chunked, no length: cut while streaming.
    let (sender, body) = channel_body();
    let feeder = tokio::spawn(async move {
        for _ in 0..32 {
            if sender
                .send(Bytes::from(vec![b'b'; 64 * 1024]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let request = Request::post(edge.url("/first-chunk"))
        .header("host", "app.test")
        .body(body)
        .unwrap();
    let response = hyper_client().request(request).await.unwrap();
    assert_eq!(response.status(), 413);
    let _ = feeder.await;
}

// ---------------------------------------------------------------------------------------
// WebSocket, HTTP/2, TLS-agnostic serving.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn websockets_pass_through_the_edge() {
    let up = start_upstream("a").await;
    let edge = start_edge(table(&[("ws.test", proxied("prj_ws", &[up.addr]))])).await;
    let stream = TcpStream::connect(edge.addr).await.unwrap();
    let (mut socket, response) = tokio_tungstenite::client_async("ws://ws.test/ws", stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    socket
        .send(Message::text("hello through the edge"))
        .await
        .unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(
        echoed.into_text().unwrap().as_str(),
        "hello through the edge"
    );
    let blob: Vec<u8> = (0..200_000u32).map(|n| (n % 256) as u8).collect();
    socket.send(Message::binary(blob.clone())).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), blob.as_slice());
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn http2_clients_are_routed_by_authority() {
    let up = start_upstream("a").await;
    let edge = start_edge(table(&[("app.test", proxied("prj_app", &[up.addr]))])).await;
    // The URI's authority is the routed host; the connection goes to the edge.
    let stream = TcpStream::connect(edge.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get("http://APP.test:443/h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["uri"], "/h2");
    assert_eq!(seen["headers"]["host"][0], "APP.test:443");

    // A Host header naming the same host is fine, and the app still sees :authority.
    let request = Request::get("http://app.test/same")
        .header("host", "APP.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["headers"]["host"], serde_json::json!(["app.test"]));

    // A Host header naming another host than :authority is malformed (RFC 9113 §8.3.1):
    // the app must never see a host the edge did not route by.
    let hits_before = up.hits.load(Ordering::SeqCst);
    let request = Request::get("http://app.test/other")
        .header("host", "evil.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(up.hits.load(Ordering::SeqCst), hits_before);
}

#[tokio::test]
async fn acme_challenges_are_answered_and_everything_else_redirects_to_https() {
    let up = start_upstream("a").await;
    let secure = Arc::new(Route::new(
        "prj_secure",
        "secure",
        RouteTarget::Instances(vec![up.addr]),
        true,
    ));
    let challenges = Challenges(HashMap::from([(
        "tok_EN-abc_123".to_owned(),
        "tok_EN-abc_123.thumbprint".to_owned(),
    )]));
    let routes = table(&[("secure.test", secure.clone())]);
    let edge = start_edge_with(routes.clone(), test_config(), Arc::new(challenges)).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    for host in ["secure.test", "not-routed-yet.test"] {
        let response = no_redirects
            .get(edge.url("/.well-known/acme-challenge/tok_EN-abc_123"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
        assert_eq!(response.text().await.unwrap(), "tok_EN-abc_123.thumbprint");
    }

    let response = no_redirects
        .post(edge.url("/cart/add?item=3"))
        .header("host", "Secure.test:80")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        "https://secure.test/cart/add?item=3"
    );
    // An unknown token is not the edge's to answer, and never redirected.
    let response = no_redirects
        .get(edge.url("/.well-known/acme-challenge/unknown"))
        .header("host", "secure.test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);

    // The same edge code over a connection marked https: no redirect, proto https.
    let tls_like = make_edge(routes, test_config(), Arc::new(NoChallenges));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let edge = tls_like.clone();
            tokio::spawn(async move { serve_connection(&edge, stream, peer, true).await });
        }
    });
    let response = no_redirects
        .get(format!("http://{addr}/"))
        .header("host", "secure.test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
}

// ---------------------------------------------------------------------------------------
// Route table swaps, metrics, shutdown.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn replacing_the_route_table_under_load_fails_no_request() {
    let blue = start_upstream("blue").await;
    let green = start_upstream("green").await;
    let edge = Arc::new(start_edge(table(&[("app.test", proxied("prj_app", &[blue.addr]))])).await);

    let mut workers = Vec::new();
    for _ in 0..4 {
        let edge = edge.clone();
        workers.push(tokio::spawn(async move {
            let client = client();
            let mut seen = Vec::new();
            for _ in 0..150 {
                let response = client
                    .get(edge.url("/"))
                    .header("host", "app.test")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.unwrap();
                seen.push(body["upstream"].as_str().unwrap().to_owned());
            }
            seen
        }));
    }
    for swap in 0..100 {
        let target = if swap % 2 == 0 { green.addr } else { blue.addr };
        let mut next = table(&[("app.test", proxied("prj_app", &[target]))]);
        next.insert("unrelated.test", proxied("prj_other", &[target]));
        edge.routes().replace(next);
        // Spreads the swaps over the requests in flight; nothing is waited for.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    assert_eq!(all.len(), 600);
    assert!(all.iter().any(|name| name == "blue"));
    assert!(all.iter().any(|name| name == "green"));
}

#[tokio::test]
async fn requests_are_counted_per_project() {
    let up = start_upstream("a").await;
    let edge = start_edge(table(&[
        ("app.test", proxied("prj_app", &[up.addr])),
        ("down.test", proxied("prj_down", &[closed_port().await])),
    ]))
    .await;
    for _ in 0..3 {
        get_json(&edge, "app.test", "/").await;
    }
    let response = client()
        .post(edge.url("/echo"))
        .header("host", "app.test")
        .body(vec![b'z'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap().len(), 5000);
    let response = client()
        .get(edge.url("/"))
        .header("host", "down.test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    response.bytes().await.unwrap();

    let app = edge.edge.metrics().snapshot("prj_app");
    assert_eq!(app.requests, 4);
    assert_eq!(app.status_2xx, 4);
    assert_eq!(app.bytes_in, 5000);
    assert!(app.bytes_out >= 5000, "{app:?}");
    assert!(app.latency.p50_ms.is_some() && app.latency.p99_ms.is_some());
    let down = edge.edge.metrics().snapshot("prj_down");
    assert_eq!((down.requests, down.status_5xx), (1, 1));
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
    let up = start_upstream("a").await;
    let edge = start_edge(table(&[("app.test", proxied("prj_app", &[up.addr]))])).await;
    let url = edge.url("/slow?ms=700");
    let addr = edge.addr;
    let in_flight = tokio::spawn(async move {
        client()
            .get(url)
            .header("host", "app.test")
            .send()
            .await
            .unwrap()
    });
    // Stopped while the request is at the upstream.
    wait_until(
        Duration::from_secs(10),
        "the request reaches the upstream",
        || async { up.hits.load(Ordering::SeqCst) == 1 },
    )
    .await;
    within(
        Duration::from_secs(30),
        "the edge stops once the request is answered",
        edge.stop(),
    )
    .await;
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow done");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

// ---------------------------------------------------------------------------------------
// Static sites.
// ---------------------------------------------------------------------------------------

struct Site {
    _dir: tempfile::TempDir,
    edge: RunningEdge,
    app_js: String,
    blob: Vec<u8>,
}

fn write(root: &Path, relative: &str, contents: impl AsRef<[u8]>) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

async fn static_site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    write(&root, "index.html", "<h1>home</h1>");
    write(&root, "about/index.html", "<h1>about</h1>");
    let app_js = "export function greet(name) { return `hello ${name}`; }\n".repeat(100);
    write(&root, "assets/app.js", &app_js);
    write(&root, "small.css", "body{margin:0}");
    let blob: Vec<u8> = (0..100_000u32).map(|n| (n % 253) as u8).collect();
    write(&root, "blob.bin", &blob);
    write(&root, "../outside.txt", "outside the root");
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    std::os::unix::fs::symlink("../outside.txt", root.join("outside.txt")).unwrap();
    let plain = route(
        "prj_site",
        RouteTarget::Static {
            root: root.clone(),
            spa_fallback: false,
        },
    );
    let spa = route(
        "prj_spa",
        RouteTarget::Static {
            root,
            spa_fallback: true,
        },
    );
    let edge = start_edge(table(&[("site.test", plain), ("spa.test", spa)])).await;
    Site {
        _dir: dir,
        edge,
        app_js,
        blob,
    }
}

impl Site {
    fn get(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        client().get(self.edge.url(path)).header("host", host)
    }
}

#[tokio::test]
async fn static_files_validate_with_etags_and_last_modified() {
    let site = static_site().await;
    let first = site
        .get("site.test", "/assets/app.js")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let modified = first.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(first.headers()["cache-control"], "public, max-age=300");
    assert!(first.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert_eq!(first.text().await.unwrap(), site.app_js);

    let again = site
        .get("site.test", "/assets/app.js")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());

    let weak = site
        .get("site.test", "/assets/app.js")
        .header("if-none-match", format!("\"other\", W/{etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(weak.status(), 304);

    let by_date = site
        .get("site.test", "/assets/app.js")
        .header("if-modified-since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(by_date.status(), 304);

    let stale = site
        .get("site.test", "/assets/app.js")
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);

    let html = site.get("site.test", "/").send().await.unwrap();
    assert_eq!(html.headers()["cache-control"], "no-cache");
    assert_eq!(html.headers()["content-type"], "text/html; charset=utf-8");

    let head = client()
        .head(site.edge.url("/blob.bin"))
        .header("host", "site.test")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "100000");
    assert!(head.bytes().await.unwrap().is_empty());

    let post = client()
        .post(site.edge.url("/"))
        .header("host", "site.test")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn static_files_answer_single_ranges() {
    let site = static_site().await;
    let part = site
        .get("site.test", "/blob.bin")
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 1000-1999/100000");
    assert_eq!(part.headers()["content-length"], "1000");
    assert_eq!(part.bytes().await.unwrap().as_ref(), &site.blob[1000..2000]);

    let tail = site
        .get("site.test", "/blob.bin")
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &site.blob[99_990..]);

    let outside = site
        .get("site.test", "/blob.bin")
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 416);
    assert_eq!(outside.headers()["content-range"], "bytes */100000");

    let whole = site
        .get("site.test", "/blob.bin")
        .header("range", "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap().len(), 100_000);

    let changed = site
        .get("site.test", "/blob.bin")
        .header("range", "bytes=0-9")
        .header("if-range", "\"an-old-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        changed.status(),
        200,
        "If-Range with an old tag gets the whole file"
    );
}

#[tokio::test]
async fn static_text_is_compressed_when_the_client_accepts_it() {
    let site = static_site().await;
    let gzip = site
        .get("site.test", "/assets/app.js")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    assert_eq!(gzip.headers()["vary"], "accept-encoding");
    let gzip_tag = gzip.headers()["etag"].to_str().unwrap().to_owned();
    let bytes = gzip.bytes().await.unwrap();
    assert!(bytes.len() < site.app_js.len() / 4);
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes.as_ref())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, site.app_js);

    let brotli = site
        .get("site.test", "/assets/app.js")
        .header("accept-encoding", "gzip, deflate, br")
        .send()
        .await
        .unwrap();
    assert_eq!(brotli.headers()["content-encoding"], "br");
    let brotli_tag = brotli.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(brotli_tag, gzip_tag, "each coding has its own tag");
    let bytes = brotli.bytes().await.unwrap();
    let mut text = String::new();
    brotli::Decompressor::new(bytes.as_ref(), 4096)
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, site.app_js);

    let revalidated = site
        .get("site.test", "/assets/app.js")
        .header("accept-encoding", "br")
        .header("if-none-match", &brotli_tag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);

    let small = site
        .get("site.test", "/small.css")
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert!(!small.headers().contains_key("content-encoding"));
    let binary = site
        .get("site.test", "/blob.bin")
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert!(!binary.headers().contains_key("content-encoding"));
}

#[tokio::test]
async fn directories_serve_index_html_and_spa_routes_fall_back() {
    let site = static_site().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let home = site.get("site.test", "/").send().await.unwrap();
    assert_eq!(home.text().await.unwrap(), "<h1>home</h1>");
    let slashless = no_redirects
        .get(site.edge.url("/about?ref=x"))
        .header("host", "site.test")
        .send()
        .await
        .unwrap();
    assert_eq!(slashless.status(), 308);
    assert_eq!(slashless.headers()["location"], "/about/?ref=x");
    let about = site.get("site.test", "/about/").send().await.unwrap();
    assert_eq!(about.text().await.unwrap(), "<h1>about</h1>");

    let missing = site
        .get("site.test", "/dashboard/settings")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let fallback = site
        .get("spa.test", "/dashboard/settings")
        .send()
        .await
        .unwrap();
    assert_eq!(fallback.status(), 200);
    assert_eq!(fallback.text().await.unwrap(), "<h1>home</h1>");
    let missing_asset = site
        .get("spa.test", "/assets/missing.js")
        .send()
        .await
        .unwrap();
    assert_eq!(missing_asset.status(), 404);
}

#[tokio::test]
async fn no_path_escapes_the_static_root() {
    let site = static_site().await;
    let attempts = [
        "/../outside.txt",
        "/../../../../etc/passwd",
        "/%2e%2e/outside.txt",
        "/%2E%2E/%2e%2e/etc/passwd",
        "/assets/..%2f..%2foutside.txt",
        "/..%5coutside.txt",
        "/passwd",
        "/etc/passwd",
        "/outside.txt",
        "/index.html%00.js",
    ];
    for path in attempts {
        for host in ["site.test", "spa.test"] {
            let (status, answer) = raw_request(
                site.edge.addr,
                &format!("GET {path} HTTP/1.1\r\nHost: {host}"),
            )
            .await;
            assert!(
                status == 400 || status == 404,
                "{host}{path} answered {status}: {answer}"
            );
            assert!(!answer.contains("root:"), "{host}{path} leaked /etc/passwd");
            assert!(
                !answer.contains("outside the root"),
                "{host}{path} left the root"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/2 over TLS.
// ---------------------------------------------------------------------------------------

/// TLS in `self-signed` mode under `data_dir` with certificates for `hosts`, and a client
/// config that trusts its CA and offers only `h2`.
async fn local_tls(
    data_dir: &Path,
    hosts: &[&str],
) -> (cantila::tls::Tls, Arc<rustls::ClientConfig>) {
    use rustls::pki_types::{pem::PemObject, CertificateDer};

    let tls = cantila::tls::Tls::start(
        data_dir,
        cantila::tls::TlsConfig {
            mode: cantila::tls::TlsMode::SelfSigned,
            ..cantila::tls::TlsConfig::default()
        },
    )
    .unwrap();
    for host in hosts {
        tls.ensure_certificate(host).await.unwrap();
    }
    let mut roots = rustls::RootCertStore::empty();
    let ca = tls.local_ca_pem().unwrap();
    for certificate in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    (tls, Arc::new(client))
}

/// Serves `edge` on a TLS listener; it stops when the sender is dropped.
async fn serve_tls_edge(edge: Edge, tls: cantila::tls::Tls) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(cantila::edge::serve_https(
        edge,
        listener,
        tls,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// One HTTP/2 connection over TLS to `host` on the edge.
async fn h2_over_tls(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    host: &str,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(
            rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap(),
            stream,
        )
        .await
        .unwrap_or_else(|err| panic!("TLS handshake for {host}: {err}"));
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            panic!("the edge broke the HTTP/2 connection: {err}");
        }
    });
    sender
}

#[tokio::test]
async fn hundreds_of_concurrent_http2_streams_over_tls_all_succeed() {
    // More streams than the edge's SETTINGS_MAX_CONCURRENT_STREAMS (200) on each
    // connection, each with a body larger than a flow-control window's worth divided by
    // the streams, against a proxied app, a static site and the console's hostname.
    const STREAMS: usize = 256;
    const BODY_BYTES: usize = 64 * 1024;

    let up = start_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    let blob: Vec<u8> = (0..BODY_BYTES as u32).map(|n| (n % 251) as u8).collect();
    write(&root, "blob.bin", &blob);
    let console_body = Bytes::from(vec![b'c'; BODY_BYTES]);
    let router = axum::Router::new().route(
        "/v1/big",
        axum::routing::get({
            let body = console_body.clone();
            move || async move { body }
        }),
    );
    let edge = make_edge(
        table(&[
            ("app.test", proxied("prj_app", &[up.addr])),
            (
                "static.test",
                route(
                    "prj_static",
                    RouteTarget::Static {
                        root,
                        spa_fallback: false,
                    },
                ),
            ),
        ]),
        test_config(),
        Arc::new(NoChallenges),
    )
    .with_console(cantila::edge::ConsoleHost::new(
        "console.test",
        true,
        router,
    ));
    let (tls, client) = local_tls(
        &dir.path().join("data"),
        &["app.test", "static.test", "console.test"],
    )
    .await;
    let (addr, _stop) = serve_tls_edge(edge, tls).await;

    let app_body = pattern_chunk(0, BODY_BYTES);
    let cases = [
        ("app.test", format!("/big?bytes={BODY_BYTES}"), app_body),
        ("static.test", "/blob.bin".to_owned(), Bytes::from(blob)),
        ("console.test", "/v1/big".to_owned(), console_body),
    ];
    for (host, path, expected) in cases {
        let sender = h2_over_tls(addr, client.clone(), host).await;
        let requests = (0..STREAMS).map(|n| {
            let mut sender = sender.clone();
            let uri = format!("https://{host}{path}");
            async move {
                let request = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
                let response = sender
                    .send_request(request)
                    .await
                    .unwrap_or_else(|err| panic!("stream {n} to {host} failed: {err}"));
                assert_eq!(response.status(), 200, "stream {n} to {host}");
                assert_eq!(response.version(), hyper::Version::HTTP_2);
                response
                    .into_body()
                    .collect()
                    .await
                    .unwrap_or_else(|err| panic!("stream {n} body from {host}: {err}"))
                    .to_bytes()
            }
        });
        let bodies = futures_util::future::join_all(requests).await;
        assert_eq!(bodies.len(), STREAMS);
        for (n, body) in bodies.iter().enumerate() {
            assert!(
                *body == expected,
                "stream {n} to {host} got {} bytes",
                body.len()
            );
        }
        // The connection is still good for more after the burst.
        let mut sender = sender;
        let again = sender
            .send_request(
                Request::get(format!("https://{host}{path}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(again.status(), 200);
    }
}

/// `GET https://<host><path>` over its own HTTP/2 connection: status and HSTS header.
async fn hsts_over_tls(
    addr: SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    host: &str,
    path: &str,
) -> (u16, Option<String>) {
    let mut sender = h2_over_tls(addr, client.clone(), host).await;
    let response = sender
        .send_request(
            Request::get(format!("https://{host}{path}"))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let hsts = response
        .headers()
        .get("strict-transport-security")
        .map(|value| value.to_str().unwrap().to_owned());
    (response.status().as_u16(), hsts)
}

#[tokio::test]
async fn https_responses_carry_hsts_only_once_the_hostname_has_a_certificate() {
    let up = start_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    write(&root, "index.html", "<h1>home</h1>");
    let certified = |id: &str, target: RouteTarget| Arc::new(Route::new(id, id, target, true));
    let routes = table(&[
        // Certified (so plain HTTP redirects): an app, a static site, an app failing.
        (
            "app.test",
            certified("prj_app", RouteTarget::Instances(vec![up.addr])),
        ),
        (
            "static.test",
            certified(
                "prj_static",
                RouteTarget::Static {
                    root: root.clone(),
                    spa_fallback: false,
                },
            ),
        ),
        (
            "down.test",
            certified(
                "prj_down",
                RouteTarget::Instances(vec![closed_port().await]),
            ),
        ),
        // No certificate yet: reachable over HTTPS (the local CA makes one on the fly),
        // but plain HTTP still serves, so no HSTS either way.
        ("fresh.test", proxied("prj_fresh", &[up.addr])),
    ]);
    let (tls, client) = local_tls(
        &dir.path().join("data"),
        &["app.test", "static.test", "down.test"],
    )
    .await;
    let console_router =
        axum::Router::new().route("/v1/ping", axum::routing::get(|| async { "pong" }));
    let edge = make_edge(routes, test_config(), Arc::new(NoChallenges)).with_console(
        cantila::edge::ConsoleHost::new("console.test", true, console_router)
            .with_certificates(tls.clone()),
    );
    let (addr, _stop) = serve_tls_edge(edge.clone(), tls.clone()).await;
    let plain_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = plain_listener.local_addr().unwrap();
    let (_stop_plain, plain_stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_http(edge, plain_listener, async move {
        let _ = plain_stopped.await;
    }));

    let one_year = Some("max-age=31536000".to_owned());
    assert_eq!(
        hsts_over_tls(addr, &client, "app.test", "/").await,
        (200, one_year.clone())
    );
    assert_eq!(
        hsts_over_tls(addr, &client, "static.test", "/").await,
        (200, one_year.clone())
    );
    // The edge's own error pages for the name carry it too.
    assert_eq!(
        hsts_over_tls(addr, &client, "down.test", "/").await,
        (502, one_year.clone())
    );
    // An app that chose its own policy keeps it.
    assert_eq!(
        hsts_over_tls(addr, &client, "app.test", "/own-hsts").await,
        (200, Some("max-age=60; includeSubDomains".to_owned()))
    );
    assert_eq!(
        hsts_over_tls(addr, &client, "fresh.test", "/").await,
        (200, None)
    );
    // Unknown names get neither a route nor the header.
    assert_eq!(
        hsts_over_tls(addr, &client, "nobody.test", "/").await,
        (404, None)
    );

    // The console's hostname: none before its certificate, then the header.
    assert_eq!(
        hsts_over_tls(addr, &client, "console.test", "/v1/ping").await,
        (200, None)
    );
    tls.ensure_certificate("console.test").await.unwrap();
    assert_eq!(
        hsts_over_tls(addr, &client, "console.test", "/v1/ping").await,
        (200, one_year.clone())
    );

    // Plain HTTP never carries it: redirects for certified names, pages for the others.
    let plain_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (host, status) in [
        ("app.test", 308),
        ("static.test", 308),
        ("console.test", 308),
        ("fresh.test", 200),
    ] {
        let response = plain_client
            .get(format!("http://{plain}/"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{host}");
        assert!(
            response
                .headers()
                .get("strict-transport-security")
                .is_none(),
            "{host} over plain HTTP"
        );
    }
}

#[tokio::test]
async fn hsts_max_age_zero_sends_no_header() {
    let up = start_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (tls, client) = local_tls(&dir.path().join("data"), &["app.test"]).await;
    let routes = table(&[(
        "app.test",
        Arc::new(Route::new(
            "prj_app",
            "app",
            RouteTarget::Instances(vec![up.addr]),
            true,
        )),
    )]);
    let config = EdgeConfig {
        hsts_max_age_secs: 0,
        ..test_config()
    };
    let (addr, _stop) =
        serve_tls_edge(make_edge(routes, config, Arc::new(NoChallenges)), tls).await;
    assert_eq!(
        hsts_over_tls(addr, &client, "app.test", "/").await,
        (200, None)
    );
}

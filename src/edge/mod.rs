//! The public edge: serves HTTP/1.1 and HTTP/2 connections (plain TCP here, TLS streams
//! from `tls`), routes each request by Host to a project's instances or static site,
//! answers ACME HTTP-01 challenges, counts requests per project and hands an access-log
//! record of each to the log collector.
//!
//! `routes` is the atomically swapped route table, `proxy` the request path, `upstream`
//! the per-thread connections to instances, `static_files` the static sites (answered
//! from the indexes `static_site` loads), `metrics` the counters, `access_log` the
//! access-log records, `pages`
//! the edge's own pages, `body` the streaming body types and `console_host` the web
//! console's own hostname.
//!
//! Invariant: the edge is the data plane. It knows its route table, its counters, an
//! access-log sink, TLS and the console host's service, all handed in by the daemon's
//! composition root (`lib.rs`); it never imports the API, the shared state, the store or
//! any service.

pub mod access_log;
mod body;
pub mod console_host;
mod dispatch;
mod host;
pub mod metrics;
mod pages;
mod proxy;
pub mod routes;
pub mod static_files;
pub mod static_site;
mod upstream;

/// A header map from name-value pairs, for the edge's unit tests.
#[cfg(test)]
fn test_headers(pairs: &[(&str, &str)]) -> hyper::HeaderMap {
    let mut map = hyper::HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            hyper::header::HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

use std::{convert::Infallible, fmt, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper::{header::HeaderValue, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
    task::JoinSet,
};

pub use access_log::{AccessLogSink, AccessRecord};
pub use body::{BoxError, EdgeBody};
pub use console_host::ConsoleHost;
pub use metrics::{EdgeMetrics, LatencySnapshot, ProjectCounters, ProjectMetrics};
pub use routes::{normalize_host, Route, RouteTable, RouteTarget, Routes};

/// A client gets this long to send a request's headers before its connection is closed,
/// so idle or trickling connections cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed `accept` (out of file descriptors, typically) the loop pauses this long
/// instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Answers ACME HTTP-01 challenges; implemented by `tls`, consumed here.
pub use crate::tls::ChallengeResponder;

/// A responder with no challenges in flight, for an edge without ACME.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoChallenges;

impl ChallengeResponder for NoChallenges {
    fn key_authorization(&self, _token: &str) -> Option<String> {
        None
    }
}

/// The edge's tunables; the daemon fills them from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// From the request's arrival until the instance's response head: past it, 504.
    /// Streaming the response body afterwards is not limited.
    pub request_timeout: Duration,
    /// The largest request body passed to an instance: 413 beyond it, whether announced
    /// by Content-Length or found while streaming.
    pub max_body_bytes: u64,
    /// On shutdown, how long in-flight requests may take before their connections are
    /// dropped.
    pub drain_timeout: Duration,
    /// The `max-age` of the `Strict-Transport-Security` header on HTTPS responses of
    /// hostnames that have a certificate; 0 sends none.
    pub hsts_max_age_secs: u64,
}

impl From<&crate::config::EdgeSettings> for EdgeConfig {
    fn from(settings: &crate::config::EdgeSettings) -> Self {
        Self {
            request_timeout: Duration::from_secs(settings.request_timeout_secs),
            max_body_bytes: settings.max_body_mb * 1024 * 1024,
            drain_timeout: Duration::from_secs(settings.drain_timeout_secs),
            hsts_max_age_secs: settings.hsts_max_age_secs,
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            max_body_bytes: 100 * 1024 * 1024,
            drain_timeout: Duration::from_secs(10),
            hsts_max_age_secs: 365 * 24 * 60 * 60,
        }
    }
}

/// The edge: shared, cheap to clone, one per daemon.
#[derive(Clone)]
pub struct Edge {
    routes: Arc<Routes>,
    metrics: Arc<EdgeMetrics>,
    config: EdgeConfig,
    challenges: Arc<dyn ChallengeResponder>,
    static_files: Arc<static_files::StaticFiles>,
    /// Where each routed request's access-log record goes, when someone collects them.
    access_log: Option<AccessLogSink>,
    /// The console's hostname and the service answering it, when the daemon hands one in.
    console: Option<Arc<ConsoleHost>>,
    /// The `Strict-Transport-Security` value, made once from the config; `None` when off.
    hsts: Option<HeaderValue>,
    /// Flipped once on shutdown; every connection served by this edge (HTTP or TLS) then
    /// finishes its in-flight requests and closes.
    shutting_down: Arc<watch::Sender<bool>>,
}

impl fmt::Debug for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Edge")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Edge {
    pub fn new(
        routes: Arc<Routes>,
        metrics: Arc<EdgeMetrics>,
        config: EdgeConfig,
        challenges: Arc<dyn ChallengeResponder>,
    ) -> Self {
        let hsts = (config.hsts_max_age_secs > 0)
            .then(|| HeaderValue::from_str(&format!("max-age={}", config.hsts_max_age_secs)))
            .and_then(Result::ok);
        Self {
            hsts,
            routes,
            metrics,
            config,
            challenges,
            static_files: Arc::new(static_files::StaticFiles::new()),
            access_log: None,
            console: None,
            shutting_down: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Sends an access-log record of every routed request to `sink` (never waiting on it).
    pub fn with_access_log(mut self, sink: AccessLogSink) -> Self {
        self.access_log = Some(sink);
        self
    }

    /// Lets static sites hold up to `bytes` of their files in memory, all together
    /// (`[edge] static_memory_mb`).
    pub fn with_static_memory(mut self, bytes: u64) -> Self {
        self.static_files = Arc::new(static_files::StaticFiles::with_memory(bytes));
        self
    }

    /// The static sites' server, for figures (memory held) and tests.
    pub fn static_files(&self) -> &Arc<static_files::StaticFiles> {
        &self.static_files
    }

    /// Serves `console`'s hostname with its own service (the daemon's: the web console
    /// and the API), before any route of the table.
    pub fn with_console(mut self, console: ConsoleHost) -> Self {
        self.console = Some(Arc::new(console));
        self
    }

    /// The live route table, for the daemon to replace.
    pub fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    pub fn metrics(&self) -> &Arc<EdgeMetrics> {
        &self.metrics
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// Tells every connection of this edge to finish what it is doing and close.
    /// `serve_http` calls it when stopped; a TLS accept loop sharing the edge sees it too.
    pub fn begin_shutdown(&self) {
        self.shutting_down.send_replace(true);
    }
}

/// Serves one client connection (plain TCP or a TLS stream) until it closes, or until the
/// edge shuts down and its in-flight requests are done. `https` says whether the
/// connection is TLS: it sets `X-Forwarded-Proto` and turns off the https redirect.
pub async fn serve_connection<IO>(edge: &Edge, io: IO, peer: SocketAddr, https: bool)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(edge.clone());
    let service = service_fn(move |request| {
        let edge = shared.clone();
        async move { Ok::<_, Infallible>(dispatch::handle(&edge, request, peer, https).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut shutting_down = edge.shutting_down.subscribe();
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "edge connection ended with an error");
            }
            return;
        }
        changed = shutting_down.wait_for(|stopping| *stopping) => {
            if changed.is_ok() {
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    if let Err(err) = connection.await {
        tracing::debug!(%peer, error = %err, "edge connection ended with an error while draining");
    }
}

/// Accepts plain-HTTP connections on `listener` until `stopped` completes; then stops
/// accepting, lets in-flight requests finish for up to `drain_timeout`, and drops the
/// connections still open after that.
pub async fn serve_http(edge: Edge, listener: TcpListener, stopped: impl Future<Output = ()>) {
    serve_listener(edge, listener, None, stopped).await;
}

/// The same for HTTPS: each connection completes its TLS handshake first.
pub async fn serve_https(
    edge: Edge,
    listener: TcpListener,
    tls: crate::tls::Tls,
    stopped: impl Future<Output = ()>,
) {
    serve_listener(edge, listener, Some(tls), stopped).await;
}

async fn serve_listener(
    edge: Edge,
    listener: TcpListener,
    tls: Option<crate::tls::Tls>,
    stopped: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small responses go out at once instead of waiting on Nagle.
                    let _ = stream.set_nodelay(true);
                    let edge = edge.clone();
                    let tls = tls.clone();
                    connections.spawn(async move {
                        match tls {
                            None => serve_connection(&edge, stream, peer, false).await,
                            Some(tls) => serve_tls_connection(&edge, &tls, stream, peer).await,
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "edge accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    edge.begin_shutdown();
    let drained = tokio::time::timeout(edge.config.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "edge connections still busy after the drain timeout; closing them"
        );
        connections.abort_all();
    }
}

/// Completes the handshake (bounded like a request head), then serves the connection.
async fn serve_tls_connection(
    edge: &Edge,
    tls: &crate::tls::Tls,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(Some(stream))) => serve_connection(edge, stream, peer, true).await,
        // An ACME TLS-ALPN-01 validation: the handshake was the whole exchange.
        Ok(Ok(None)) => {}
        Ok(Err(err)) => tracing::debug!(%peer, error = %err, "tls handshake failed"),
        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
    }
}

/// How many edge threads `serve` runs: one per core the process may use.
fn edge_thread_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Serves both listeners of `edge` (plain HTTP on `http`, TLS through `tls` on `https`)
/// until `stopped` completes, then drains both.
///
/// The edge runs on threads of its own, one per core, each with a `current_thread`
/// runtime accepting on both listeners: a connection and everything its requests do
/// (upstream connections, bodies, TLS) stay on the thread that accepted it, never hopping
/// cores or queueing behind the control plane's tasks, and each thread keeps its own
/// upstream pool and counter shard. The caller's runtime only waits for `stopped`. The
/// listeners are closed (every clone dropped) when this returns.
pub async fn serve(
    edge: Edge,
    tls: crate::tls::Tls,
    http: std::net::TcpListener,
    https: std::net::TcpListener,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    http.set_nonblocking(true)?;
    https.set_nonblocking(true)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut threads = Vec::new();
    for index in 0..edge_thread_count() {
        let (http, https) = (http.try_clone()?, https.try_clone()?);
        let (edge, tls, stop_rx) = (edge.clone(), tls.clone(), stop_rx.clone());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("cantila-edge-{index}"))
            .spawn(move || {
                metrics::pin_thread_shard(index);
                let _ = done_tx.send(run_edge_thread(edge, tls, http, https, stop_rx));
            });
        match spawned {
            Ok(_) => threads.push(done_rx),
            Err(err) => {
                // The threads already started stop with the others' listeners closed.
                let _ = stop_tx.send(true);
                for done in threads {
                    let _ = done.await;
                }
                return Err(err);
            }
        }
    }
    drop((http, https));
    stopped.await;
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    for done in threads {
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => result = Err(err),
            Err(_) => {
                result = Err(std::io::Error::other("an edge thread ended without a word"));
            }
        }
    }
    result
}

/// One edge thread: its own runtime serving both listeners until `stop` turns true, then
/// draining its connections and handing over its last access-log batch.
fn run_edge_thread(
    edge: Edge,
    tls: crate::tls::Tls,
    http: std::net::TcpListener,
    https: std::net::TcpListener,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let http = TcpListener::from_std(http)?;
        let https = TcpListener::from_std(https)?;
        let until_stopped = |mut stop: watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let flusher = tokio::spawn(access_log::flush_every_interval(edge.access_log.clone()));
        let https_task = tokio::spawn(serve_https(
            edge.clone(),
            https,
            tls,
            until_stopped(stop.clone()),
        ));
        serve_http(edge.clone(), http, until_stopped(stop)).await;
        let _ = https_task.await;
        flusher.abort();
        if let Some(sink) = &edge.access_log {
            sink.flush();
        }
        Ok(())
    })
}

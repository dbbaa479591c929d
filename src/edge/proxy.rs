//! The edge's request path: request ids, the request's host (one, checked, 400 otherwise),
//! ACME HTTP-01 answers, Host routing, the https redirect, and the reverse proxy to a
//! project's instances (round-robin, one retry on connect failure, forwarding headers,
//! hop-by-hop stripping, WebSocket tunnels, body limit and request timeout). Every request
//! ends in a response; none is left hanging.
//!
//! Invariant: the host an instance sees (`Host`, `X-Forwarded-Host`, `Forwarded`'s
//! `host=`) is the host the edge routed by, and `X-Real-IP`, `Forwarded`,
//! `X-Forwarded-Proto` and `X-Forwarded-Host` are the edge's own word, never the client's.

use std::{
    error::Error as StdError,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http_body_util::BodyExt;
use hyper::{
    body::Incoming,
    header::{self, HeaderMap, HeaderName, HeaderValue},
    upgrade::OnUpgrade,
    Request, Response, StatusCode, Uri, Version,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use rand::Rng;

use super::{
    access_log::AccessRecord,
    body::{
        self, full, BodyTooLarge, BoxError, CappedBody, ClientBodyError, CountedBody, EdgeBody,
        ReclaimableBody,
    },
    metrics::ProjectCounters,
    pages,
    routes::{normalize_host, Route, RouteTarget},
    static_files::StaticRequest,
    Edge,
};

/// The body type the upstream client sends: the client's body, capped and counted, and
/// reclaimable until its first byte is read so a connect failure can be retried.
pub(crate) type UpstreamBody = ReclaimableBody<CappedBody<Incoming>>;
/// The pooled keep-alive client to instances.
pub(crate) type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// An instance that does not accept a connection within this time counts as down, and the
/// request moves on to another one.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle keep-alive connections to instances are closed after this long, below the common
/// 75 s default of app servers so the edge never reuses a connection they just closed.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// ACME HTTP-01 challenges live under this path on port 80.
const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// The longest incoming `X-Request-Id` kept as it is.
const MAX_REQUEST_ID_LEN: usize = 128;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The client to instances: HTTP/1.1 with a keep-alive pool, no Nagle delay.
pub(crate) fn upstream_client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(UPSTREAM_CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(UPSTREAM_IDLE_TIMEOUT)
        .build(connector)
}

/// Answers one request. `https` says whether it came over TLS (for `X-Forwarded-Proto`
/// and the https redirect).
pub(crate) async fn handle(
    edge: &Edge,
    request: Request<Incoming>,
    peer: SocketAddr,
    https: bool,
) -> Response<EdgeBody> {
    let started = Instant::now();
    let request_id = incoming_request_id(request.headers()).unwrap_or_else(new_request_id);
    let mut response = dispatch(edge, request, peer, https, &request_id, started).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

async fn dispatch(
    edge: &Edge,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    https: bool,
    request_id: &str,
    started: Instant,
) -> Response<EdgeBody> {
    let host = match request_host(&request) {
        Ok(host) => host,
        Err(problem) => {
            return pages::error(StatusCode::BAD_REQUEST, problem.message(), request_id);
        }
    };
    // From here on the Host header is the host the edge routes by, so everything behind
    // (the console's router, the instance) sees that one and no other.
    if let Some(value) = host
        .as_deref()
        .and_then(|host| HeaderValue::from_str(host).ok())
    {
        request.headers_mut().insert(header::HOST, value);
    }
    let challenge_token = request.uri().path().strip_prefix(ACME_CHALLENGE_PREFIX);
    // Challenges come first: the CA asks over plain HTTP before any certificate exists,
    // possibly for a hostname no route has yet.
    if let Some(token) = challenge_token.filter(|token| is_acme_token(token)) {
        if let Some(key_authorization) = edge.challenges.key_authorization(token) {
            return challenge_answer(key_authorization);
        }
    }
    let is_challenge = challenge_token.is_some();
    // The console's hostname is Cantila's own and comes before any project's route.
    if let Some(console) = edge.console.as_ref().filter(|console| {
        host.as_deref()
            .and_then(normalize_host)
            .is_some_and(|host| console.matches(&host))
    }) {
        return if console.https_only && !https {
            https_redirect(&request, host.as_deref())
        } else {
            let mut response = console.serve(request, peer).await;
            if https && console.has_certificate() {
                add_hsts(edge, &mut response);
            }
            response
        };
    }

    let route = host
        .as_deref()
        .and_then(|host| edge.routes.load().lookup(host).cloned());
    let Some(route) = route else {
        return pages::unknown_host(host.as_deref().unwrap_or("this host"));
    };
    let counters = route.counters(&edge.metrics);
    // Taken before the request is handed on; only when someone collects the records.
    let access = edge.access_log.as_ref().map(|sink| {
        (
            sink,
            request.method().to_string(),
            request.uri().path().to_owned(),
        )
    });

    let response = if !https && route.https_redirect && !is_challenge {
        https_redirect(&request, host.as_deref())
    } else {
        match &route.target {
            RouteTarget::Instances(instances) => {
                let asset = match &route.assets {
                    Some(mount) => {
                        let static_request = StaticRequest {
                            method: request.method(),
                            uri: request.uri(),
                            headers: request.headers(),
                            request_id,
                        };
                        edge.static_files.serve_asset(mount, static_request).await
                    }
                    None => None,
                };
                match asset {
                    Some(response) => response,
                    None if instances.is_empty() => {
                        pages::unavailable(&route.project_name, "unhealthy")
                    }
                    None => {
                        let context = ProxyContext {
                            edge,
                            route: &route,
                            instances,
                            peer,
                            https,
                            host: host.as_deref(),
                            request_id,
                            counters: &counters,
                        };
                        proxy(context, request).await
                    }
                }
            }
            RouteTarget::Static { root, spa_fallback } => {
                let static_request = StaticRequest {
                    method: request.method(),
                    uri: request.uri(),
                    headers: request.headers(),
                    request_id,
                };
                edge.static_files
                    .serve(root, *spa_fallback, static_request)
                    .await
            }
            RouteTarget::Unavailable { state } => pages::unavailable(&route.project_name, state),
        }
    };
    // The hostname has a certificate and plain HTTP redirects: browsers may stop trying it.
    let mut response = response;
    if https && route.https_redirect {
        add_hsts(edge, &mut response);
    }
    let latency = started.elapsed();
    counters.record_response(response.status().as_u16(), latency);
    if let Some((sink, method, path)) = access {
        sink.record(AccessRecord {
            project_id: route.project_id.clone(),
            preview_id: route.preview_id.clone(),
            at_ns: crate::clock::now_nanos(),
            method,
            host: host.unwrap_or_default(),
            path,
            status: response.status().as_u16(),
            latency,
            client: peer.ip(),
            request_id: request_id.to_owned(),
        });
    }
    response.map(|body| CountedBody::new(body, counters).boxed_unsync())
}

/// Everything the proxy needs to know about one request besides the request itself.
struct ProxyContext<'a> {
    edge: &'a Edge,
    route: &'a Route,
    instances: &'a [SocketAddr],
    peer: SocketAddr,
    https: bool,
    host: Option<&'a str>,
    request_id: &'a str,
    counters: &'a Arc<ProjectCounters>,
}

/// Why forwarding ended without an upstream response.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("the upstream request could not be built: {0}")]
    BadUri(#[from] hyper::http::Error),
    #[error(transparent)]
    Upstream(#[from] hyper_util::client::legacy::Error),
}

async fn proxy(context: ProxyContext<'_>, mut request: Request<Incoming>) -> Response<EdgeBody> {
    let limit = context.edge.config.max_body_bytes;
    if declared_length(request.headers()).is_some_and(|length| length > limit) {
        tokio::spawn(body::drain(request.into_body()));
        return too_large(limit, context.request_id);
    }
    let client_upgrade = is_upgrade_request(&request).then(|| hyper::upgrade::on(&mut request));
    let (parts, incoming) = request.into_parts();
    let mut headers = parts.headers;
    let upgrade_protocol = client_upgrade
        .as_ref()
        .and_then(|_| headers.get(header::UPGRADE).cloned());
    strip_hop_by_hop(&mut headers);
    // The interim 100 was already handled by the edge's own server when it read the body.
    headers.remove(header::EXPECT);
    if let Some(protocol) = upgrade_protocol {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    add_forwarding_headers(
        &mut headers,
        context.peer,
        context.https,
        context.host,
        context.request_id,
    );
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |path_and_query| path_and_query.as_str());

    let instances = context.instances;
    let attempts = instances.len().min(2);
    let first = context.route.next_instance_index(instances.len());
    let forward = async {
        let mut body = CappedBody::new(incoming, limit, context.counters.clone());
        let mut attempt = 0;
        loop {
            let instance = instances[(first + attempt) % instances.len()];
            let is_last = attempt + 1 >= attempts;
            let attempt_headers = if is_last {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };
            let (upstream_body, reclaim) = ReclaimableBody::new(body);
            let mut upstream = Request::new(upstream_body);
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = upstream_uri(instance, path_and_query)?;
            *upstream.version_mut() = Version::HTTP_11;
            *upstream.headers_mut() = attempt_headers;
            match context.edge.client.request(upstream).await {
                Ok(response) => return Ok(response),
                Err(err) if err.is_connect() && !is_last => match reclaim.reclaim() {
                    Some(unsent) => {
                        tracing::debug!(%instance, error = %err, project = %context.route.project_name, "instance refused the connection; trying another");
                        body = unsent;
                        attempt += 1;
                    }
                    None => return Err(ForwardError::Upstream(err)),
                },
                Err(err) => return Err(ForwardError::Upstream(err)),
            }
        }
    };
    let mut response = match tokio::time::timeout(context.edge.config.request_timeout, forward)
        .await
    {
        Ok(Ok(response)) => response,
        Ok(Err(err)) if caused_by::<BodyTooLarge>(&err) => {
            return too_large(limit, context.request_id)
        }
        // The client's own body broke (a malformed chunk, a connection closed mid-body):
        // not the app's failure, and not worth a warning a client could repeat at will.
        Ok(Err(err)) if caused_by::<ClientBodyError>(&err) => {
            tracing::debug!(error = %error_chain(&err), project = %context.route.project_name, request_id = context.request_id, "client request body unreadable");
            return pages::error(
                StatusCode::BAD_REQUEST,
                "The request body could not be read: its chunked encoding is malformed or it was cut short.",
                context.request_id,
            );
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %error_chain(&err), project = %context.route.project_name, request_id = context.request_id, "upstream failed");
            return pages::error(
                StatusCode::BAD_GATEWAY,
                "The app did not answer: no instance could be reached.",
                context.request_id,
            );
        }
        Err(_elapsed) => {
            tracing::warn!(project = %context.route.project_name, request_id = context.request_id, timeout = ?context.edge.config.request_timeout, "upstream timed out");
            return pages::error(
                StatusCode::GATEWAY_TIMEOUT,
                "The app did not answer in time.",
                context.request_id,
            );
        }
    };

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let Some(client_side) = client_upgrade else {
            // An upgrade nobody asked for cannot be relayed; the client would be stuck.
            return pages::error(
                StatusCode::BAD_GATEWAY,
                "The app switched protocols without being asked to.",
                context.request_id,
            );
        };
        let upstream_side = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(client_side, upstream_side, context.counters.clone()));
    }
    let (mut parts, incoming) = response.into_parts();
    let upgrade_protocol = switching
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = upgrade_protocol {
        parts.headers.insert(header::UPGRADE, protocol);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // The client's protocol is the edge's business, whatever the instance spoke.
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, incoming.map_err(BoxError::from).boxed_unsync())
}

/// Relays an upgraded connection (WebSocket) both ways until either side closes.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, counters: Arc<ProjectCounters>) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(err) => {
            tracing::debug!(error = %err, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((to_upstream, to_client)) => {
            counters.add_bytes_in(to_upstream);
            counters.add_bytes_out(to_client);
        }
        Err(err) => tracing::debug!(error = %err, "upgraded connection ended with an error"),
    }
}

fn upstream_uri(instance: SocketAddr, path_and_query: &str) -> Result<Uri, hyper::http::Error> {
    Uri::builder()
        .scheme("http")
        .authority(instance.to_string())
        .path_and_query(path_and_query)
        .build()
}

fn too_large(limit: u64, request_id: &str) -> Response<EdgeBody> {
    pages::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("The request body is larger than the limit of {limit} bytes."),
        request_id,
    )
}

/// Whether `E` is somewhere in the chain of causes of `err`.
fn caused_by<E: StdError + 'static>(err: &ForwardError) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(current) = cause {
        if current.is::<E>() {
            return true;
        }
        cause = current.source();
    }
    false
}

/// An error with its causes, for the log (the client only ever sees the page).
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Why the edge cannot tell which host a request is for: each is a 400 (RFC 9112 §3.2,
/// RFC 9113 §8.3.1), because guessing would let the app see a host other than the one
/// the edge routed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostProblem {
    /// More than one `Host` header line.
    Repeated,
    /// An HTTP/1.1 or HTTP/2 request that names no host at all.
    Missing,
    /// A `Host` or authority that is not `host[:port]`.
    Malformed,
    /// `user@host`: credentials have no place in an http(s) request target.
    UserInfo,
    /// An HTTP/2 `Host` header naming another host than `:authority`.
    Conflicting,
}

impl HostProblem {
    fn message(self) -> &'static str {
        match self {
            Self::Repeated => "The request has more than one Host header.",
            Self::Missing => "The request names no host: HTTP/1.1 requires a Host header.",
            Self::Malformed => "The request's Host is not a valid host name with an optional port.",
            Self::UserInfo => {
                "The request's host carries user information (user@host), which is not accepted."
            }
            Self::Conflicting => {
                "The request's Host header names another host than its :authority."
            }
        }
    }
}

/// The host the request is for, as the client wrote it (port included), decided once:
/// an absolute-form target's authority or HTTP/2's `:authority` first, as RFC 9112
/// §3.2.2 and RFC 9113 §8.3.1 say, else the one `Host` header. `None` only for an
/// HTTP/1.0 request without either, which predates Host and gets the unknown-host page.
fn request_host<B>(request: &Request<B>) -> Result<Option<String>, HostProblem> {
    let mut host_headers = request.headers().get_all(header::HOST).iter();
    let host_header = host_headers.next();
    if host_headers.next().is_some() {
        return Err(HostProblem::Repeated);
    }
    // A Host header is checked even where the authority wins over it: an invalid one is
    // a 400 whatever else the request says.
    let header_host = host_header
        .map(|value| parse_authority(value.as_bytes()))
        .transpose()?;
    let version = request.version();
    let pre_host = version == Version::HTTP_09 || version == Version::HTTP_10;
    if let Some(authority) = request.uri().authority() {
        let target = parse_authority(authority.as_str().as_bytes())?;
        if version == Version::HTTP_11 && header_host.is_none() {
            return Err(HostProblem::Missing);
        }
        // HTTP/1.1 ignores the Host of an absolute-form request; HTTP/2 must not carry a
        // Host naming another host than :authority.
        let http2 = !pre_host && version != Version::HTTP_11;
        if http2
            && header_host
                .as_deref()
                .is_some_and(|host| normalize_host(host) != normalize_host(&target))
        {
            return Err(HostProblem::Conflicting);
        }
        return Ok(Some(target));
    }
    match header_host {
        Some(host) => Ok(Some(host)),
        None if pre_host => Ok(None),
        None => Err(HostProblem::Missing),
    }
}

/// `host[:port]` as a Host header or an authority carries it, checked: no user
/// information, a port of digits only, nothing a URI's authority cannot hold.
fn parse_authority(raw: &[u8]) -> Result<String, HostProblem> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(HostProblem::Missing);
    }
    let authority =
        hyper::http::uri::Authority::try_from(raw).map_err(|_| HostProblem::Malformed)?;
    if authority.as_str().contains('@') {
        return Err(HostProblem::UserInfo);
    }
    if normalize_host(authority.as_str()).is_none() {
        return Err(HostProblem::Malformed);
    }
    Ok(authority.as_str().to_owned())
}

/// The client's `X-Request-Id` if it is short and plain enough to log and echo safely.
fn incoming_request_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(&X_REQUEST_ID)?.to_str().ok()?;
    let plain = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    plain.then(|| value.to_owned())
}

/// A fresh `req_` id. Request ids only correlate logs, so a fast thread-local generator is
/// enough; it is still seeded from the OS.
fn new_request_id() -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    let mut id = String::with_capacity(24);
    id.push_str("req_");
    for _ in 0..20 {
        id.push(BASE62[rng.gen_range(0..BASE62.len())] as char);
    }
    id
}

/// ACME tokens are base64url; anything else is never looked up.
fn is_acme_token(token: &str) -> bool {
    (1..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn challenge_answer(key_authorization: String) -> Response<EdgeBody> {
    let mut response = Response::new(full(key_authorization));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Adds `Strict-Transport-Security` to an HTTPS response unless HSTS is off or the app
/// sent its own (which it may have chosen with `includeSubDomains` or `preload`).
fn add_hsts(edge: &Edge, response: &mut Response<EdgeBody>) {
    if let Some(value) = &edge.hsts {
        response
            .headers_mut()
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| value.clone());
    }
}

/// 308 keeps the method and body, so a POST to http:// is retried as a POST to https://.
fn https_redirect<B>(request: &Request<B>, host: Option<&str>) -> Response<EdgeBody> {
    let host = host.and_then(normalize_host).unwrap_or_default();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |path_and_query| path_and_query.as_str());
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{path_and_query}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// An HTTP/1.1 `Connection: upgrade` request naming a protocol (WebSocket and the like).
fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE)
        && connection_tokens(request.headers()).any(|token| token.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Removes the headers that belong to one connection and must not cross the proxy:
/// those named in `Connection`, then the standard hop-by-hop set and every `Proxy-*`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        KEEP_ALIVE.clone(),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let proxy_headers: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_headers {
        headers.remove(name);
    }
}

/// `X-Forwarded-For` gets the client's address appended to what earlier proxies wrote
/// (so only its last entry is the edge's word); `X-Real-IP`, `Forwarded`, `-Proto`,
/// `-Host`, `Host` and `X-Request-Id` are the edge's own word and replace any the client
/// sent, since the client is the first hop the edge can vouch for. `Forwarded` (RFC 7239)
/// is written fresh, one element, rather than appended to: an app reading its first
/// element must never find a client's claim there.
fn add_forwarding_headers(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    https: bool,
    host: Option<&str>,
    request_id: &str,
) {
    let client = peer.ip().to_canonical();
    let client_ip = client.to_string();
    let earlier: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    let forwarded_for = if earlier.is_empty() {
        client_ip.clone()
    } else {
        format!("{}, {client_ip}", earlier.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Ok(value) = HeaderValue::from_str(&client_ip) {
        headers.insert(X_REAL_IP.clone(), value);
    }
    let for_node = match client {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let mut forwarded = format!("for={for_node};proto={proto}");
    headers.remove(&X_FORWARDED_HOST);
    headers.remove(header::HOST);
    if let Some(host) = host.and_then(|host| HeaderValue::from_str(host).ok()) {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        if let Ok(text) = host.to_str() {
            forwarded.push_str(&format!(";host={}", quoted_string(text)));
        }
        // The host routed by, whatever the client's Host said (HTTP/2 sends none at all).
        headers.insert(header::HOST, host);
    }
    headers.remove(header::FORWARDED);
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, value);
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
}

/// An RFC 7230 quoted-string: the text in double quotes, `"` and `\` escaped.
fn quoted_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_are_stripped_with_those_connection_names() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("proxy-anything", "x"),
            ("x-kept", "yes"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut map);
        let mut left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["content-type", "x-kept"]);
    }

    #[test]
    fn forwarding_headers_append_and_replace() {
        let mut map = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed.example"),
            ("x-real-ip", "203.0.113.66"),
            ("x-real-ip", "203.0.113.67"),
            ("forwarded", "for=203.0.113.66;host=evil.example"),
            ("host", "evil.example"),
        ]);
        let peer: SocketAddr = "[::ffff:198.51.100.7]:4444".parse().unwrap();
        add_forwarding_headers(&mut map, peer, false, Some("App.test:8080"), "req_1");
        assert_eq!(map["x-forwarded-for"], "203.0.113.9, 198.51.100.7");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "App.test:8080");
        assert_eq!(map["host"], "App.test:8080");
        assert_eq!(map.get_all("host").iter().count(), 1);
        assert_eq!(map["x-real-ip"], "198.51.100.7");
        assert_eq!(map.get_all("x-real-ip").iter().count(), 1);
        assert_eq!(
            map["forwarded"],
            "for=198.51.100.7;proto=http;host=\"App.test:8080\""
        );
        assert_eq!(map.get_all("forwarded").iter().count(), 1);
        assert_eq!(map["x-request-id"], "req_1");

        let mut map = HeaderMap::new();
        let peer: SocketAddr = "[2001:db8::1]:4444".parse().unwrap();
        add_forwarding_headers(&mut map, peer, true, Some("app.test"), "req_2");
        assert_eq!(
            map["forwarded"],
            "for=\"[2001:db8::1]\";proto=https;host=\"app.test\""
        );
        assert_eq!(map["x-real-ip"], "2001:db8::1");
    }

    #[test]
    fn incoming_request_ids_are_kept_only_when_plain() {
        let keep = headers(&[("x-request-id", "abc-123_x.y:z")]);
        assert_eq!(incoming_request_id(&keep).as_deref(), Some("abc-123_x.y:z"));
        for bad in ["", "has space", "<script>", &"x".repeat(129)] {
            let map = headers(&[("x-request-id", bad)]);
            assert_eq!(incoming_request_id(&map), None, "{bad:?}");
        }
        let fresh = new_request_id();
        assert!(fresh.starts_with("req_") && fresh.len() == 24);
        assert_ne!(fresh, new_request_id());
    }

    #[test]
    fn acme_tokens_are_base64url() {
        assert!(is_acme_token("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"));
        assert!(!is_acme_token(""));
        assert!(!is_acme_token("../secret"));
        assert!(!is_acme_token("a/b"));
    }

    #[test]
    fn the_host_is_one_checked_authority_or_a_400() {
        use HostProblem::*;
        let http1 = Version::HTTP_11;
        let http2 = Version::HTTP_2;
        let http10 = Version::HTTP_10;
        /// Version, target, Host headers, and the host decided (or the 400's reason).
        type Case<'a> = (
            Version,
            &'a str,
            &'a [&'a str],
            Result<Option<&'a str>, HostProblem>,
        );
        let cases: &[Case] = &[
            (http1, "/x", &["Header.test:80"], Ok(Some("Header.test:80"))),
            // Absolute form: the authority wins and the Host header is ignored (§3.2.2).
            (
                http1,
                "http://Authority.test:81/x",
                &["evil.test"],
                Ok(Some("Authority.test:81")),
            ),
            (http1, "http://a.test/x", &[], Err(Missing)),
            (http1, "http://user@a.test/x", &["a.test"], Err(UserInfo)),
            (http1, "/x", &["a.test", "a.test"], Err(Repeated)),
            (http1, "/x", &["a.test", "evil.test"], Err(Repeated)),
            (http1, "/x", &[], Err(Missing)),
            (http1, "/x", &[""], Err(Missing)),
            (http1, "/x", &["<b>x</b>.test"], Err(Malformed)),
            (http1, "/x", &["a.test:port"], Err(Malformed)),
            (http1, "/x", &["user@a.test"], Err(UserInfo)),
            (http1, "http://a.test/x", &["bad host"], Err(Malformed)),
            // HTTP/1.0 predates Host: no host is the unknown-host page, not a 400.
            (http10, "/x", &[], Ok(None)),
            (http10, "/x", &["a.test"], Ok(Some("a.test"))),
            (http10, "/x", &["a.test", "b.test"], Err(Repeated)),
            // HTTP/2: :authority, with a Host only if it names the same host.
            (
                http2,
                "https://App.test:443/x",
                &[],
                Ok(Some("App.test:443")),
            ),
            (
                http2,
                "https://app.test/x",
                &["APP.test"],
                Ok(Some("app.test")),
            ),
            (
                http2,
                "https://app.test/x",
                &["evil.test"],
                Err(Conflicting),
            ),
            (http2, "/x", &["app.test"], Ok(Some("app.test"))),
            (http2, "/x", &[], Err(Missing)),
        ];
        for (version, uri, hosts, expected) in cases {
            let mut builder = Request::builder().version(*version).uri(*uri);
            for host in *hosts {
                builder = builder.header("host", *host);
            }
            let request = builder.body(()).unwrap();
            let found = request_host(&request);
            assert_eq!(
                found.as_ref().map(Option::as_deref),
                expected.as_ref().map(|host| *host),
                "{version:?} {uri} {hosts:?}"
            );
        }
    }
}

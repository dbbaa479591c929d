//! The edge's request path: request ids, ACME HTTP-01 answers, Host routing, the https
//! redirect, and the reverse proxy to a project's instances (round-robin, one retry on
//! connect failure, forwarding headers, hop-by-hop stripping, WebSocket tunnels, body
//! limit and request timeout). Every request ends in a response; none is left hanging.

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
        self, full, BodyTooLarge, BoxError, CappedBody, CountedBody, EdgeBody, ReclaimableBody,
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
    request: Request<Incoming>,
    peer: SocketAddr,
    https: bool,
    request_id: &str,
    started: Instant,
) -> Response<EdgeBody> {
    let host = request_host(&request);
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
        Ok(Err(err)) if caused_by_body_limit(&err) => return too_large(limit, context.request_id),
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

fn caused_by_body_limit(err: &ForwardError) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(current) = cause {
        if current.is::<BodyTooLarge>() {
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

/// The host the client asked for, as it sent it (port included): the `:authority` of
/// HTTP/2 or an absolute-form URI first, as the standard says, else the Host header.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    if let Some(authority) = request.uri().authority() {
        let host_and_port = authority.as_str().rsplit('@').next().unwrap_or_default();
        return Some(host_and_port.to_owned());
    }
    request
        .headers()
        .get(header::HOST)?
        .to_str()
        .ok()
        .map(str::to_owned)
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

/// `X-Forwarded-For` gets the client's address appended to what earlier proxies wrote;
/// `-Proto`, `-Host` and `X-Request-Id` are the edge's own word and replace any sent by
/// the client, which is the first hop the edge can vouch for.
fn add_forwarding_headers(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    https: bool,
    host: Option<&str>,
    request_id: &str,
) {
    let client_ip = peer.ip().to_canonical().to_string();
    let earlier: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    let forwarded_for = if earlier.is_empty() {
        client_ip
    } else {
        format!("{}, {client_ip}", earlier.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    headers.remove(&X_FORWARDED_HOST);
    if let Some(host) = host.and_then(|host| HeaderValue::from_str(host).ok()) {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        // HTTP/2 clients send `:authority` instead of Host; the HTTP/1.1 instance needs one.
        headers.entry(header::HOST).or_insert(host);
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
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
        ]);
        let peer: SocketAddr = "[::ffff:198.51.100.7]:4444".parse().unwrap();
        add_forwarding_headers(&mut map, peer, false, Some("App.test:8080"), "req_1");
        assert_eq!(map["x-forwarded-for"], "203.0.113.9, 198.51.100.7");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "App.test:8080");
        assert_eq!(map["host"], "App.test:8080");
        assert_eq!(map["x-request-id"], "req_1");
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
    fn the_host_comes_from_the_authority_before_the_header() {
        let request = Request::builder()
            .uri("http://Authority.test:81/x")
            .header("host", "header.test")
            .body(())
            .unwrap();
        assert_eq!(request_host(&request).as_deref(), Some("Authority.test:81"));
        let request = Request::builder()
            .uri("/x")
            .header("host", "Header.test:80")
            .body(())
            .unwrap();
        assert_eq!(request_host(&request).as_deref(), Some("Header.test:80"));
        let request = Request::builder().uri("/x").body(()).unwrap();
        assert_eq!(request_host(&request), None);
    }
}

//! The edge's request path, as a sequence of steps: a request id; the request's host (one,
//! checked, 400 otherwise) written back as its `Host`; ACME HTTP-01 answers; the console's
//! hostname; the route table (the unknown-host page otherwise); then the route's answer
//! (the https redirect, an asset file, the instances through `proxy`, a static site, or
//! the 503 page), with HSTS, the route's counters and its access-log record around it.
//! Every request ends in a response; none is left hanging.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use http_body_util::BodyExt;
use hyper::{
    body::Incoming,
    header::{self, HeaderMap, HeaderValue},
    Request, Response, StatusCode,
};
use rand::Rng;

use super::{
    access_log::{AccessLogSink, AccessRecord},
    body::{self, full, CountedBody, EdgeBody},
    host::request_host,
    metrics::ProjectCounters,
    pages,
    proxy::{proxy, ProxyContext, X_REQUEST_ID},
    routes::{normalize_host, Route, RouteTarget},
    static_files::StaticRequest,
    ConsoleHost, Edge,
};

/// ACME HTTP-01 challenges live under this path on port 80.
const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// The longest incoming `X-Request-Id` kept as it is.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Where a request came from and how, known before it is routed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Arrival<'a> {
    pub(super) peer: SocketAddr,
    /// It came over TLS: `X-Forwarded-Proto` says so and the https redirect is off.
    pub(super) https: bool,
    pub(super) request_id: &'a str,
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
    let arrival = Arrival {
        peer,
        https,
        request_id: &request_id,
    };
    let mut response = dispatch(edge, request, arrival, started).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// The steps of a request, in order; the first that answers ends it.
async fn dispatch(
    edge: &Edge,
    mut request: Request<Incoming>,
    arrival: Arrival<'_>,
    started: Instant,
) -> Response<EdgeBody> {
    let host = match pin_host(&mut request) {
        Ok(host) => host,
        Err(problem) => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                problem.message(),
                arrival.request_id,
            );
        }
    };
    // Challenges come first: the CA asks over plain HTTP before any certificate exists,
    // possibly for a hostname no route has yet.
    if let Some(answer) = acme_answer(edge, &request) {
        return answer;
    }
    // The console's hostname is Cantila's own and comes before any project's route.
    if let Some(console) = console_for(edge, host.as_deref()) {
        return serve_console(edge, console, request, host.as_deref(), arrival).await;
    }
    let Some(route) = lookup_route(edge, host.as_deref()) else {
        return pages::unknown_host(host.as_deref().unwrap_or("this host"));
    };
    let accounting = Accounting::begin(edge, &route, &request);
    let mut response = serve_route(
        edge,
        &route,
        request,
        host.as_deref(),
        arrival,
        &accounting.counters,
    )
    .await;
    // The hostname has a certificate and plain HTTP redirects: browsers may stop trying it.
    if arrival.https && route.https_redirect {
        add_hsts(edge, &mut response);
    }
    accounting.finish(&route, response, host, arrival, started)
}

/// Decides the request's host and writes it back as its `Host` header, so everything
/// behind (the console's router, the instance) sees that one and no other.
fn pin_host<B>(request: &mut Request<B>) -> Result<Option<String>, super::host::HostProblem> {
    let host = request_host(request)?;
    if let Some(value) = host
        .as_deref()
        .and_then(|host| HeaderValue::from_str(host).ok())
    {
        request.headers_mut().insert(header::HOST, value);
    }
    Ok(host)
}

/// The answer to an ACME HTTP-01 challenge in flight for the request's path, if any.
fn acme_answer<B>(edge: &Edge, request: &Request<B>) -> Option<Response<EdgeBody>> {
    let token = request
        .uri()
        .path()
        .strip_prefix(ACME_CHALLENGE_PREFIX)
        .filter(|token| is_acme_token(token))?;
    edge.challenges
        .key_authorization(token)
        .map(challenge_answer)
}

/// Whether the path is under the ACME challenge prefix: such requests are never
/// redirected to https, answered or not.
fn is_acme_path(path: &str) -> bool {
    path.starts_with(ACME_CHALLENGE_PREFIX)
}

/// The console host, when the request is for its hostname.
fn console_for<'e>(edge: &'e Edge, host: Option<&str>) -> Option<&'e ConsoleHost> {
    edge.console.as_deref().filter(|console| {
        host.and_then(normalize_host)
            .is_some_and(|host| console.matches(&host))
    })
}

/// The console's hostname: only a redirect over plain HTTP while TLS is on, else its own
/// service's answer, with HSTS once its certificate exists.
async fn serve_console(
    edge: &Edge,
    console: &ConsoleHost,
    request: Request<Incoming>,
    host: Option<&str>,
    arrival: Arrival<'_>,
) -> Response<EdgeBody> {
    if console.https_only && !arrival.https {
        return https_redirect(&request, host);
    }
    let mut response = console.serve(request, arrival.peer).await;
    if arrival.https && console.has_certificate() {
        add_hsts(edge, &mut response);
    }
    response
}

/// The route of the request's host in the table now.
fn lookup_route(edge: &Edge, host: Option<&str>) -> Option<Arc<Route>> {
    host.and_then(|host| edge.routes.load().lookup(host).cloned())
}

/// The bookkeeping of one routed request: its route's counters and, when someone
/// collects the access log, the parts of its record taken before the request is handed on.
struct Accounting<'e> {
    counters: Arc<ProjectCounters>,
    access: Option<(&'e AccessLogSink, String, String)>,
}

impl<'e> Accounting<'e> {
    fn begin<B>(edge: &'e Edge, route: &Route, request: &Request<B>) -> Self {
        Self {
            counters: route.counters(&edge.metrics),
            access: edge.access_log.as_ref().map(|sink| {
                (
                    sink,
                    request.method().to_string(),
                    request.uri().path().to_owned(),
                )
            }),
        }
    }

    /// Counts the response and its latency, sends its access-log record, and counts its
    /// body's bytes as they stream out.
    fn finish(
        self,
        route: &Route,
        response: Response<EdgeBody>,
        host: Option<String>,
        arrival: Arrival<'_>,
        started: Instant,
    ) -> Response<EdgeBody> {
        let latency = started.elapsed();
        let status = response.status().as_u16();
        self.counters.record_response(status, latency);
        if let Some((sink, method, path)) = self.access {
            sink.record(AccessRecord {
                project_id: route.project_id.clone(),
                preview_id: route.preview_id.clone(),
                at_ns: crate::clock::now_nanos(),
                method,
                host: host.unwrap_or_default(),
                path,
                status,
                latency,
                client: arrival.peer.ip(),
                request_id: arrival.request_id.to_owned(),
            });
        }
        let counters = self.counters;
        response.map(|body| CountedBody::new(body, counters).boxed_unsync())
    }
}

/// A route's answer: the redirect to https once the hostname has a certificate (ACME
/// challenges excepted), else its target's.
async fn serve_route(
    edge: &Edge,
    route: &Route,
    request: Request<Incoming>,
    host: Option<&str>,
    arrival: Arrival<'_>,
    counters: &Arc<ProjectCounters>,
) -> Response<EdgeBody> {
    if !arrival.https && route.https_redirect && !is_acme_path(request.uri().path()) {
        return https_redirect(&request, host);
    }
    match &route.target {
        RouteTarget::Instances(instances) => {
            let context = ProxyContext {
                edge,
                route,
                instances,
                peer: arrival.peer,
                https: arrival.https,
                host,
                request_id: arrival.request_id,
                counters,
            };
            serve_instances(context, request).await
        }
        RouteTarget::Static { root, spa_fallback } => {
            edge.static_files
                .serve(
                    root,
                    *spa_fallback,
                    static_request(&request, arrival.request_id),
                )
                .await
        }
        RouteTarget::Unavailable { state } => pages::unavailable(&route.project_name, state),
    }
}

/// A container release: an asset file the edge holds for it, else its instances (503
/// "unhealthy" while there are none).
async fn serve_instances(
    context: ProxyContext<'_>,
    request: Request<Incoming>,
) -> Response<EdgeBody> {
    if let Some(mount) = &context.route.assets {
        let asset = context
            .edge
            .static_files
            .serve_asset(mount, static_request(&request, context.request_id))
            .await;
        if let Some(response) = asset {
            return response;
        }
    }
    if context.instances.is_empty() {
        return pages::unavailable(&context.route.project_name, "unhealthy");
    }
    proxy(context, request).await
}

/// The parts of a request a static site or an asset mount looks at.
fn static_request<'r, B>(request: &'r Request<B>, request_id: &'r str) -> StaticRequest<'r> {
    StaticRequest {
        method: request.method(),
        uri: request.uri(),
        headers: request.headers(),
        request_id,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::test_headers as headers;

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
}

//! The reverse proxy to a project's instances: round-robin over the thread's pooled
//! upstream connections (`upstream`), with one retry on another instance after a connect
//! failure (the body is only handed to a connection once it is made), hop-by-hop stripping, the forwarding headers, WebSocket tunnels, the body
//! limit (413) and the request timeout (504).
//!
//! Invariant: the host an instance sees (`Host`, `X-Forwarded-Host`, `Forwarded`'s
//! `host=`) is the host the edge routed by, and `X-Real-IP`, `Forwarded`,
//! `X-Forwarded-Proto` and `X-Forwarded-Host` are the edge's own word, never the client's.

use std::{error::Error as StdError, net::SocketAddr, sync::Arc};

use http_body_util::BodyExt;
use hyper::{
    body::Incoming,
    header::{self, HeaderMap, HeaderName, HeaderValue},
    upgrade::OnUpgrade,
    Request, Response, StatusCode, Uri, Version,
};
use hyper_util::rt::TokioIo;

use super::{
    body::{self, BodyTooLarge, BoxError, CappedBody, ClientBodyError, EdgeBody},
    metrics::ProjectCounters,
    pages,
    routes::Route,
    upstream::{self, PooledBody, Sender},
    Edge,
};

pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Everything the proxy needs to know about one request besides the request itself.
pub(super) struct ProxyContext<'a> {
    pub(super) edge: &'a Edge,
    pub(super) route: &'a Route,
    /// The route's instances; never empty.
    pub(super) instances: &'a [SocketAddr],
    pub(super) peer: SocketAddr,
    pub(super) https: bool,
    pub(super) host: Option<&'a str>,
    pub(super) request_id: &'a str,
    pub(super) counters: &'a Arc<ProjectCounters>,
}

/// Why forwarding ended without an upstream response.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error(transparent)]
    Connect(#[from] upstream::ConnectError),
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
}

/// Proxies one request to the route's instances: refused at once when it announces a
/// body over the limit; else forwarded with the edge's headers within the request
/// timeout, and the instance's response relayed (an upgrade becomes a tunnel).
pub(super) async fn proxy(
    context: ProxyContext<'_>,
    mut request: Request<Incoming>,
) -> Response<EdgeBody> {
    let limit = context.edge.config.max_body_bytes;
    if declared_length(request.headers()).is_some_and(|length| length > limit) {
        tokio::spawn(body::drain(request.into_body()));
        return too_large(limit, context.request_id);
    }
    let client_upgrade = is_upgrade_request(&request).then(|| hyper::upgrade::on(&mut request));
    let (parts, incoming) = request.into_parts();
    let headers = upstream_headers(parts.headers, client_upgrade.is_some(), &context);
    let mut upstream_request =
        Request::new(CappedBody::new(incoming, limit, context.counters.clone()));
    *upstream_request.method_mut() = parts.method;
    *upstream_request.uri_mut() = origin_form(parts.uri);
    *upstream_request.version_mut() = Version::HTTP_11;
    *upstream_request.headers_mut() = headers;
    let first = context.route.next_instance_index(context.instances.len());
    let forwarded = forward(&context, upstream_request, first);
    let (response, instance, sender) = match tokio::time::timeout(
        context.edge.config.request_timeout,
        forwarded,
    )
    .await
    {
        Ok(Ok(answered)) => answered,
        Ok(Err(err)) => return forward_failure(&context, &err),
        Err(_elapsed) => {
            tracing::warn!(project = %context.route.project_name, request_id = context.request_id, timeout = ?context.edge.config.request_timeout, "upstream timed out");
            return pages::error(
                StatusCode::GATEWAY_TIMEOUT,
                "The app did not answer in time.",
                context.request_id,
            );
        }
    };
    relay(&context, response, instance, sender, client_upgrade)
}

/// The request's headers as the instance gets them: hop-by-hop ones stripped (the
/// upgrade asked for kept), `Expect` dropped, and the edge's forwarding headers set.
fn upstream_headers(
    mut headers: HeaderMap,
    upgrade: bool,
    context: &ProxyContext<'_>,
) -> HeaderMap {
    let upgrade_protocol = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
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
    headers
}

/// Sends the request to its first instance (`first` in the rotation) on a pooled
/// connection, or a new one; after a connect failure, once more to the next instance.
/// The body is only handed over once a connection is there, so a retry never lacks it; a
/// pooled connection that closed before taking the request gives it back, and the request
/// goes out on a new connection instead.
async fn forward(
    context: &ProxyContext<'_>,
    mut request: Request<upstream::UpstreamBody>,
    first: usize,
) -> Result<(Response<Incoming>, SocketAddr, Sender), ForwardError> {
    let instances = context.instances;
    let attempts = instances.len().min(2);
    let mut attempt = 0;
    let mut pooled_allowed = true;
    loop {
        let instance = instances[(first + attempt) % instances.len()];
        let is_last = attempt + 1 >= attempts;
        let pooled = if pooled_allowed {
            upstream::checkout(instance)
        } else {
            None
        };
        let fresh = pooled.is_none();
        let mut sender = match pooled {
            Some(sender) => sender,
            None => match upstream::connect(instance).await {
                Ok(sender) => sender,
                Err(err) if !is_last => {
                    tracing::debug!(%instance, error = %err, project = %context.route.project_name, "instance refused the connection; trying another");
                    attempt += 1;
                    pooled_allowed = true;
                    continue;
                }
                Err(err) => return Err(ForwardError::Connect(err)),
            },
        };
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, instance, sender)),
            Err(mut err) => match err.take_message() {
                // A pooled connection the instance had closed: the same instance, anew.
                Some(unsent) if !fresh => {
                    request = unsent;
                    pooled_allowed = false;
                }
                Some(unsent) if !is_last => {
                    tracing::debug!(%instance, error = %err.error(), project = %context.route.project_name, "new connection closed before the request; trying another instance");
                    request = unsent;
                    attempt += 1;
                    pooled_allowed = true;
                }
                Some(_) | None => return Err(ForwardError::Upstream(err.into_error())),
            },
        }
    }
}

/// The request target as an origin server expects it: `/path?query`, whatever form the
/// client used (HTTP/2 and absolute-form requests carry a scheme and authority, which the
/// `Host` header carries upstream instead).
fn origin_form(uri: Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri;
    }
    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    Uri::from(path_and_query)
}

/// The page for a request forwarding could not complete: 413 past the body limit, 400
/// for the client's own broken body, else 502.
fn forward_failure(context: &ProxyContext<'_>, err: &ForwardError) -> Response<EdgeBody> {
    if caused_by::<BodyTooLarge>(err) {
        return too_large(context.edge.config.max_body_bytes, context.request_id);
    }
    // The client's own body broke (a malformed chunk, a connection closed mid-body):
    // not the app's failure, and not worth a warning a client could repeat at will.
    if caused_by::<ClientBodyError>(err) {
        tracing::debug!(error = %error_chain(err), project = %context.route.project_name, request_id = context.request_id, "client request body unreadable");
        return pages::error(
            StatusCode::BAD_REQUEST,
            "The request body could not be read: its chunked encoding is malformed or it was cut short.",
            context.request_id,
        );
    }
    tracing::warn!(error = %error_chain(err), project = %context.route.project_name, request_id = context.request_id, "upstream failed");
    pages::error(
        StatusCode::BAD_GATEWAY,
        "The app did not answer: no instance could be reached.",
        context.request_id,
    )
}

/// The instance's response as the client gets it: hop-by-hop headers stripped, HTTP/1.1,
/// and a `101 Switching Protocols` the client asked for turned into a tunnel between both.
fn relay(
    context: &ProxyContext<'_>,
    mut response: Response<Incoming>,
    instance: SocketAddr,
    sender: Sender,
    client_upgrade: Option<OnUpgrade>,
) -> Response<EdgeBody> {
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
    let body = if switching {
        // The connection now belongs to the tunnel; it never goes back to the pool.
        drop(sender);
        incoming.map_err(BoxError::from).boxed_unsync()
    } else {
        PooledBody::new(incoming, instance, sender).boxed_unsync()
    };
    Response::from_parts(parts, body)
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
    use crate::edge::test_headers as headers;

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
}

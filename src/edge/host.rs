//! The host a request is for, decided once: an absolute-form target's authority or
//! HTTP/2's `:authority`, else the one `Host` header, checked; a request whose host cannot
//! be told is a 400, never a guess.

use hyper::{header, Request, Version};

use super::routes::normalize_host;

/// Why the edge cannot tell which host a request is for: each is a 400 (RFC 9112 §3.2,
/// RFC 9113 §8.3.1), because guessing would let the app see a host other than the one
/// the edge routed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HostProblem {
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
    pub(super) fn message(self) -> &'static str {
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
pub(super) fn request_host<B>(request: &Request<B>) -> Result<Option<String>, HostProblem> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

//! The console's public hostname (`[console]`, `console.<base_domain>` by default): the
//! edge hands its requests in-process to the service the daemon gave it (the API router,
//! the same service the API listener runs), so the console's files and the `/v1` API it
//! talks to are one origin over HTTPS. The edge knows the service only as an axum
//! `Router` value, never the API module.
//!
//! Invariant: with TLS on, plain HTTP on this hostname only ever answers a redirect to
//! HTTPS (ACME challenges excepted, which the edge answers before this), so a token is
//! never sent in the clear to it, even before its certificate exists. HSTS is added by
//! the edge only once the certificate exists (`has_certificate`).

use std::net::SocketAddr;

use axum::{extract::ConnectInfo, Router};
use http_body_util::BodyExt;
use hyper::{body::Incoming, Request, Response};
use tower::ServiceExt;

use super::body::{BoxError, EdgeBody};

/// The answer when the control plane could not run the request (it is stopping).
fn unavailable() -> Response<EdgeBody> {
    let mut response = Response::new(super::body::full("The console is restarting."));
    *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
    response
}

/// The console's hostname and the service that answers it.
#[derive(Clone)]
pub struct ConsoleHost {
    /// Lowercase, as `normalize_host` leaves a Host header.
    pub hostname: String,
    /// Plain HTTP is redirected to HTTPS (TLS is on).
    pub https_only: bool,
    /// The service answering the hostname (the API router: console files and `/v1`, with
    /// its own limits, timeout and log), handed in by the daemon.
    router: Router,
    /// Where to ask whether the hostname has a certificate yet (for HSTS).
    certificates: Option<crate::tls::Tls>,
    /// The control plane's runtime, where the service's work runs: the edge's threads
    /// only relay, so console and API requests never queue behind proxied traffic (nor
    /// proxied traffic behind them). `None` outside a runtime: served where it arrives.
    control_plane: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for ConsoleHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleHost")
            .field("hostname", &self.hostname)
            .field("https_only", &self.https_only)
            .finish_non_exhaustive()
    }
}

impl ConsoleHost {
    pub fn new(hostname: impl Into<String>, https_only: bool, router: Router) -> Self {
        Self {
            hostname: hostname.into().to_ascii_lowercase(),
            https_only,
            router,
            certificates: None,
            control_plane: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Asks `tls` whether the hostname has a certificate, so HTTPS responses carry HSTS
    /// once it does.
    pub fn with_certificates(mut self, tls: crate::tls::Tls) -> Self {
        self.certificates = Some(tls);
        self
    }

    /// Plain HTTP redirects here and a certificate valid now covers the hostname: the
    /// condition for HSTS.
    pub fn has_certificate(&self) -> bool {
        self.https_only
            && self
                .certificates
                .as_ref()
                .is_some_and(|tls| tls.has_certificate(&self.hostname))
    }

    /// Whether a normalized Host is this one.
    pub fn matches(&self, host: &str) -> bool {
        host == self.hostname
    }

    /// Answers one request through the console's service. The client's address goes
    /// along as the API listener would give it (axum's `ConnectInfo`), so the API's
    /// per-address throttle of bad tokens and its access log see the real client.
    pub async fn serve(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<EdgeBody> {
        request.extensions_mut().insert(ConnectInfo(peer));
        let answer = self.router.clone().oneshot(request);
        let response = match &self.control_plane {
            Some(runtime) => match runtime.spawn(answer).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                // The control plane is shutting down (or the service panicked).
                Err(_) => return unavailable(),
            },
            None => match answer.await {
                Ok(response) => response,
                Err(never) => match never {},
            },
        };
        response.map(|body| body.map_err(BoxError::from).boxed_unsync())
    }
}

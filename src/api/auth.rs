//! Authentication and authorization at the edge of the API: the `Auth<Scope>` extractor
//! and the per-address throttle on failed token checks. Handlers receive an `Actor` that
//! has already passed both; nothing deeper re-checks scopes.

use std::{
    collections::HashMap,
    marker::PhantomData,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts},
};

use crate::{accounts::Actor, api::ApiState, error::Error, names::Scope};

use super::error::ApiError;

/// A scope a handler requires, as a type so the requirement is visible in its signature.
pub trait RequiredScope {
    const SCOPE: Scope;
}

#[derive(Debug)]
pub struct ReadScope;
#[derive(Debug)]
pub struct DeployScope;
#[derive(Debug)]
pub struct AdminScope;

impl RequiredScope for ReadScope {
    const SCOPE: Scope = Scope::Read;
}
impl RequiredScope for DeployScope {
    const SCOPE: Scope = Scope::Deploy;
}
impl RequiredScope for AdminScope {
    const SCOPE: Scope = Scope::Admin;
}

/// An authenticated caller holding at least scope `S`.
#[derive(Debug)]
pub struct Auth<S> {
    pub actor: Actor,
    scope: PhantomData<S>,
}

impl<S: RequiredScope + Send + Sync> FromRequestParts<ApiState> for Auth<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &ApiState) -> Result<Self, ApiError> {
        let actor = authorized(parts, app, S::SCOPE, bearer_secret).await?;
        Ok(Auth {
            actor,
            scope: PhantomData,
        })
    }
}

/// An authenticated caller of a WebSocket endpoint holding at least scope `S`. The token
/// comes from `Authorization: Bearer <token>`, or, since a browser cannot set headers on a
/// WebSocket, from the subprotocol `cantila.token.<token>` offered beside `cantila.v1`
/// (the handler answers with `cantila.v1`, never echoing the token). Either is checked
/// like a bearer token and throttled alike.
#[derive(Debug)]
pub struct WsAuth<S> {
    pub actor: Actor,
    scope: PhantomData<S>,
}

/// The subprotocol a WebSocket endpoint answers with.
pub const WS_PROTOCOL: &str = "cantila.v1";

/// The prefix of the subprotocol that carries a token.
const WS_TOKEN_PREFIX: &str = "cantila.token.";

impl<S: RequiredScope + Send + Sync> FromRequestParts<ApiState> for WsAuth<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &ApiState) -> Result<Self, ApiError> {
        let actor = authorized(parts, app, S::SCOPE, |parts| {
            if parts.headers.contains_key(header::AUTHORIZATION) {
                bearer_secret(parts)
            } else {
                subprotocol_secret(parts)
            }
        })
        .await?;
        Ok(WsAuth {
            actor,
            scope: PhantomData,
        })
    }
}

/// The caller behind the token `secret` reads from the request, when it holds `scope`;
/// an address past its failed checks is refused before any token is read.
async fn authorized(
    parts: &Parts,
    app: &ApiState,
    scope: Scope,
    secret: impl FnOnce(&Parts) -> Result<&str, Error>,
) -> Result<Actor, ApiError> {
    let client_addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    // `router` puts its throttle on every request; a client address is there on both
    // the API listener and the console's hostname.
    let throttle = parts.extensions.get::<Arc<AuthThrottle>>();
    let throttled = client_addr.zip(throttle);
    if let Some((addr, throttle)) = &throttled {
        if let Some(retry_after_secs) = throttle.retry_after(*addr) {
            return Err(Error::RateLimited { retry_after_secs }.into());
        }
    }
    let secret = secret(parts)?;
    let actor = match app
        .tokens
        .authenticate(&app.store, secret, client_addr)
        .await
    {
        Ok(actor) => actor,
        Err(err) => {
            if let (Error::Unauthenticated(_), Some((addr, throttle))) = (&err, &throttled) {
                throttle.record_failure(*addr);
            }
            return Err(err.into());
        }
    };
    if actor.scope < scope {
        return Err(Error::Forbidden(format!(
            "this endpoint requires the `{scope}` scope; the token has `{}`",
            actor.scope
        ))
        .into());
    }
    Ok(actor)
}

/// The token from the subprotocol `cantila.token.<token>` of a WebSocket request
/// (`Sec-WebSocket-Protocol`, a comma-separated list, possibly over several headers).
fn subprotocol_secret(parts: &Parts) -> Result<&str, Error> {
    parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix(WS_TOKEN_PREFIX))
        .filter(|secret| !secret.is_empty())
        .ok_or_else(|| {
            Error::Unauthenticated(format!(
                "this endpoint requires an `Authorization: Bearer <token>` header, or the \
                 WebSocket subprotocols `{WS_PROTOCOL}` and `{WS_TOKEN_PREFIX}<token>`"
            ))
        })
}

/// The token from `Authorization: Bearer <token>`.
fn bearer_secret(parts: &Parts) -> Result<&str, Error> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Error::Unauthenticated(
            "this endpoint requires an `Authorization: Bearer <token>` header".to_owned(),
        )
    })?;
    let malformed =
        || Error::Unauthenticated("the Authorization header must be `Bearer <token>`".to_owned());
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, secret) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || secret.trim().is_empty() {
        return Err(malformed());
    }
    Ok(secret.trim())
}

/// Counts failed token checks per client address in fixed one-minute windows. Past the
/// limit, every authenticated request from that address gets 429 until the window ends.
pub struct AuthThrottle {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, Window>>,
}

struct Window {
    started: Instant,
    failures: u32,
}

/// Past this many tracked addresses, expired windows are dropped so memory stays bounded.
const PRUNE_ABOVE: usize = 4096;

impl AuthThrottle {
    pub fn new(failures_per_minute: u32) -> Self {
        Self {
            limit: failures_per_minute,
            window: Duration::from_secs(60),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `addr` may try again, when it is over the limit.
    pub fn retry_after(&self, addr: IpAddr) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let window = failures.get(&addr)?;
        let elapsed = window.started.elapsed();
        if window.failures >= self.limit && elapsed < self.window {
            Some((self.window - elapsed).as_secs().max(1))
        } else {
            None
        }
    }

    pub fn record_failure(&self, addr: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() > PRUNE_ABOVE {
            let window = self.window;
            failures.retain(|_, w| w.started.elapsed() < window);
        }
        let now = Instant::now();
        let entry = failures.entry(addr).or_insert(Window {
            started: now,
            failures: 0,
        });
        if entry.started.elapsed() >= self.window {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures += 1;
        if entry.failures == self.limit {
            tracing::warn!(client = %addr, "too many failed token checks; throttling this address");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_websocket_token_comes_from_its_subprotocol() {
        let parts = |protocols: &[&str]| {
            let mut request = axum::http::Request::builder();
            for protocol in protocols {
                request = request.header(header::SEC_WEBSOCKET_PROTOCOL, *protocol);
            }
            request.body(()).unwrap().into_parts().0
        };
        for (protocols, secret) in [
            (&["cantila.v1, cantila.token.cnt_abc"][..], Some("cnt_abc")),
            (
                &["cantila.v1", "cantila.token.cnt_abc"][..],
                Some("cnt_abc"),
            ),
            (&["cantila.token.cnt_abc,cantila.v1"][..], Some("cnt_abc")),
            (&["cantila.v1"][..], None),
            (&["cantila.v1, cantila.token."][..], None),
            (&[][..], None),
        ] {
            let parts = parts(protocols);
            assert_eq!(subprotocol_secret(&parts).ok(), secret, "{protocols:?}");
        }
    }

    #[test]
    fn throttles_after_the_limit_per_address() {
        let throttle = AuthThrottle::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            throttle.record_failure(a);
        }
        assert_eq!(throttle.retry_after(a), None);
        throttle.record_failure(a);
        let retry = throttle.retry_after(a).unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(throttle.retry_after(b), None);
    }
}

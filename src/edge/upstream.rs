//! The edge's connections to instances: HTTP/1.1 on `hyper::client::conn::http1`, kept
//! alive in a pool per thread, the way pingora keeps its upstreams: an edge thread's
//! requests only ever take and return its own connections, so there is no pool lock, no
//! boxed client future and no connection shared between cores. A connection goes back to
//! its thread's pool when the response body it carried has been read to its end.
//!
//! Invariant: a connection enters the pool only once hyper says it is ready for a new
//! request, and is reused only while it still is; one that closed or went idle past
//! `IDLE_TIMEOUT` is dropped, and a request never waits on a pooled connection.

use std::{
    cell::RefCell,
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::{
    body::{Body, Bytes, Frame, Incoming, SizeHint},
    client::conn::http1,
};
use hyper_util::rt::TokioIo;

use super::body::{BoxError, CappedBody};

/// The body the edge sends upstream: the client's, capped and counted.
pub(super) type UpstreamBody = CappedBody<Incoming>;
/// The sending half of one upstream connection.
pub(super) type Sender = http1::SendRequest<UpstreamBody>;

/// An instance that does not accept a connection within this time counts as down, and the
/// request moves on to another one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle keep-alive connections to instances are dropped after this long, below the common
/// 75 s default of app servers so the edge never reuses a connection they just closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many idle connections per instance per thread; more are closed when they
/// come back, so a burst does not keep its connections open forever.
const MAX_IDLE_PER_INSTANCE: usize = 512;
/// Every this many new connections a thread opens, its pool is swept of closed and
/// expired connections to every instance (including instances no route has any more).
const SWEEP_EVERY_CONNECTS: u32 = 64;

/// One idle connection and since when.
struct Idle {
    sender: Sender,
    since: Instant,
}

/// One thread's idle connections, by instance.
#[derive(Default)]
struct Pool {
    idle: HashMap<SocketAddr, Vec<Idle>>,
    connects: u32,
}

impl Pool {
    /// Removes closed and expired connections everywhere.
    fn sweep(&mut self, now: Instant) {
        self.idle.retain(|_, list| {
            list.retain(|idle| usable(idle, now));
            !list.is_empty()
        });
    }
}

fn usable(idle: &Idle, now: Instant) -> bool {
    !idle.sender.is_closed() && now.duration_since(idle.since) < IDLE_TIMEOUT
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Why no connection to an instance could be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("connecting to {instance} timed out after {CONNECT_TIMEOUT:?}")]
    TimedOut { instance: SocketAddr },
    #[error("connecting to {instance}: {source}")]
    Io {
        instance: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting HTTP/1.1 with {instance}: {source}")]
    Handshake {
        instance: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

/// The most recently returned idle connection to `instance` that is ready for a request,
/// from this thread's pool (the most recent is the warmest, and the oldest expire).
pub(super) fn checkout(instance: SocketAddr) -> Option<Sender> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.idle.get_mut(&instance)?;
        let now = Instant::now();
        while let Some(idle) = list.pop() {
            if usable(&idle, now) && idle.sender.is_ready() {
                return Some(idle.sender);
            }
        }
        None
    })
}

/// Opens a new connection to `instance` (within `CONNECT_TIMEOUT`) and drives it on a task
/// of the calling thread's runtime.
pub(super) async fn connect(instance: SocketAddr) -> Result<Sender, ConnectError> {
    let stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(instance)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(ConnectError::Io { instance, source }),
            Err(_elapsed) => return Err(ConnectError::TimedOut { instance }),
        };
    // Small requests go out at once instead of waiting on Nagle.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake { instance, source })?;
    tokio::spawn(async move {
        // Upgrades stay possible: a `101` hands the connection over to the tunnel.
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(%instance, error = %err, "upstream connection ended with an error");
        }
    });
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.connects = pool.connects.wrapping_add(1);
        if pool.connects % SWEEP_EVERY_CONNECTS == 0 {
            pool.sweep(Instant::now());
        }
    });
    Ok(sender)
}

/// Puts a connection whose exchange is over back in this thread's pool, once hyper says
/// it takes a new request. Usually it already does; when its connection task has not run
/// since the body's last frame (a busy thread), a small task on this thread waits for it,
/// so a good connection is never closed for being a moment late, and one that never gets
/// ready (a request body still trickling in) is never handed to another request.
fn checkin(instance: SocketAddr, mut sender: Sender) {
    if sender.is_closed() {
        return;
    }
    if sender.is_ready() {
        pool_idle(instance, sender);
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if sender.ready().await.is_ok() {
                pool_idle(instance, sender);
            }
        });
    }
}

fn pool_idle(instance: SocketAddr, sender: Sender) {
    // `try_with`: a body dropped while its thread shuts down just closes its connection.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.idle.entry(instance).or_default();
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    });
}

/// An instance's response body on its way to the client; once it has been read to its
/// end, its connection goes back to the pool (when it is dropped, so after the last frame
/// was handed on). A body dropped before its end closes its connection, since the rest of
/// it would still be on the wire.
pub(super) struct PooledBody {
    inner: Incoming,
    /// The connection and its instance, until they go back to the pool.
    connection: Option<(SocketAddr, Sender)>,
    /// The body's last frame was read (a chunked body only says so by ending).
    ended: bool,
}

impl PooledBody {
    pub(super) fn new(inner: Incoming, instance: SocketAddr, sender: Sender) -> Self {
        Self {
            inner,
            connection: Some((instance, sender)),
            ended: false,
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some((instance, sender)) = self.connection.take() {
            if self.ended || self.inner.is_end_stream() {
                checkin(instance, sender);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

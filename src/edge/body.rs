//! Body types on the edge's request path: the boxed response body, the capped and counted
//! request body, and the counted response body. Bodies are streamed frame by frame, never
//! gathered in memory.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use hyper::body::{Body, Bytes, Frame, SizeHint};

use super::metrics::ProjectCounters;

/// Errors carried through bodies, boxed as hyper expects.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response the edge writes, whatever produced it.
pub type EdgeBody = UnsyncBoxBody<Bytes, BoxError>;

/// A whole body from bytes already in memory (pages, small compressed files).
pub fn full(bytes: impl Into<Bytes>) -> EdgeBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body (redirects, 304, HEAD).
pub fn empty() -> EdgeBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The request body went past the edge's size limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the limit of {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// The client's request body could not be read: a malformed chunked encoding, or a
/// connection that closed mid-body. It is the client's fault, so the edge answers 400
/// instead of blaming the app with a 502.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read")]
pub struct ClientBodyError(#[source] pub BoxError);

/// At most this much of an unwanted request body is read and thrown away after a 413, so
/// the client reads the answer instead of a connection reset; past it, the connection
/// is closed.
const DRAIN_LIMIT_BYTES: u64 = 16 * 1024 * 1024;
/// How long an unwanted request body may keep draining.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Reads and discards what is left of a body the edge refused, within bounds, so the
/// connection ends cleanly after the error response.
pub async fn drain<B>(body: B)
where
    B: Body + Unpin,
{
    let drained = async {
        let mut body = body;
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += hyper::body::Buf::remaining(data) as u64;
                if seen > DRAIN_LIMIT_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_DEADLINE, drained).await;
}

/// A request body on its way upstream: counted into the project's `bytes_in` and cut
/// with `BodyTooLarge` once it passes `limit` bytes (which covers chunked bodies that
/// announce no length). The remainder of an oversize body is drained in the background.
/// A failure to read the client's body is marked `ClientBodyError`, so the proxy can tell
/// it from the instance's own failures.
pub struct CappedBody<B> {
    inner: Option<B>,
    limit: u64,
    received: u64,
    counters: Arc<ProjectCounters>,
}

impl<B> CappedBody<B> {
    pub fn new(inner: B, limit: u64, counters: Arc<ProjectCounters>) -> Self {
        Self {
            inner: Some(inner),
            limit,
            received: 0,
            counters,
        }
    }
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    this.received += len;
                    this.counters.add_bytes_in(len);
                    if this.received > this.limit {
                        if let Some(rest) = this.inner.take() {
                            tokio::spawn(drain(rest));
                        }
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                Poll::Ready(Some(Err(Box::new(ClientBodyError(err.into())))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |inner| inner.size_hint())
    }
}

/// A response body counted into the project's `bytes_out` as it streams to the client.
pub struct CountedBody<B> {
    inner: B,
    counters: Arc<ProjectCounters>,
}

impl<B> CountedBody<B> {
    pub fn new(inner: B, counters: Arc<ProjectCounters>) -> Self {
        Self { inner, counters }
    }
}

impl<B> Body for CountedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.counters.add_bytes_out(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> Arc<ProjectCounters> {
        Arc::new(ProjectCounters::default())
    }

    #[tokio::test]
    async fn a_capped_body_passes_up_to_the_limit_and_fails_past_it() {
        let within = CappedBody::new(Full::new(Bytes::from(vec![1u8; 100])), 100, counters());
        assert_eq!(within.collect().await.unwrap().to_bytes().len(), 100);

        let counters = counters();
        let over = CappedBody::new(
            Full::new(Bytes::from(vec![1u8; 101])),
            100,
            counters.clone(),
        );
        let err = over.collect().await.err().unwrap();
        assert!(err.downcast_ref::<BodyTooLarge>().is_some(), "{err}");
    }

    #[tokio::test]
    async fn counted_bodies_add_their_bytes() {
        let counters = counters();
        let body = CountedBody::new(
            Full::new(Bytes::from_static(b"twelve bytes")),
            counters.clone(),
        );
        body.collect().await.unwrap();
        assert_eq!(counters.snapshot().bytes_out, 12);
    }
}

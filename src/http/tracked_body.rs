//! A request body that remembers whether it was read to its end. A handler that
//! answers without reading the body (a 404, a 405, a 401 before the body is
//! needed) leaves bytes on the connection; hyper would then close it, possibly
//! after the client has put it back in its pool, or reset it under the answer.
//! So an unread body of at most the body limit is drained in the background
//! (the connection stays usable); a larger or unbounded one is answered with
//! `Connection: close`, and closed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use warp::http::{HeaderMap, header};

pub struct TrackedBody<B: Body + Send + Unpin + 'static> {
    /// `None` once handed to the drain task.
    inner: Option<B>,
    ended: Arc<AtomicBool>,
    /// Drained when dropped unread: its declared length is within the limit.
    drain: bool,
}

/// Longest a background drain may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a tracked body was read to its end, or will be drained.
#[derive(Clone)]
pub struct BodyEnd {
    ended: Arc<AtomicBool>,
    drain: bool,
}

impl BodyEnd {
    /// False: the connection must close after the answer.
    pub fn connection_reusable(&self) -> bool {
        self.drain || self.ended.load(Ordering::Acquire)
    }
}

impl<B: Body + Send + Unpin + 'static> TrackedBody<B> {
    /// Wraps a request's body; a request that declares none counts as read.
    pub fn wrap(inner: B, headers: &HeaderMap, limit: u64) -> (Self, BodyEnd) {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|len| len.to_str().ok()?.parse::<u64>().ok());
        let declared =
            headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|len| len > 0);
        let drain = !headers.contains_key(header::TRANSFER_ENCODING)
            && length.is_some_and(|len| len <= limit);
        let ended = Arc::new(AtomicBool::new(!declared || inner.is_end_stream()));
        (
            Self {
                inner: Some(inner),
                ended: ended.clone(),
                drain,
            },
            BodyEnd { ended, drain },
        )
    }
}

impl<B: Body + Send + Unpin + 'static> Drop for TrackedBody<B> {
    fn drop(&mut self) {
        if !self.drain || self.ended.load(Ordering::Acquire) {
            return;
        }
        let (Some(mut body), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let drained = async {
                while let Some(Ok(_)) =
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                {
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
        });
    }
}

impl<B: Body + Send + Unpin + 'static> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        let end = matches!(polled, Poll::Ready(None)) || inner.is_end_stream();
        if end {
            self.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

//! The body wrappers of a forwarded exchange: a request body that drops its trailers and tells
//! when it has been sent whole, a response body whose first frames were read already, and the
//! body of the proxy's answers.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;

use super::stall::WatchedBody;

/// The body of the proxy's answers: the upstream's, watched (most answers: no box around it),
/// or any other.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    Watched(WatchedBody),
    Other(Body),
}

impl ProxyBody {
    /// As an `axum` body (the upstream's boxed).
    pub(crate) fn into_axum(self) -> Body {
        match self {
            Self::Watched(body) => Body::new(body),
            Self::Other(body) => body,
        }
    }
}

/// What the guard's denials are made of.
impl From<String> for ProxyBody {
    fn from(text: String) -> Self {
        Self::Other(Body::from(text))
    }
}

impl http_body::Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Watched(body) => Pin::new(body).poll_frame(cx),
            Self::Other(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Watched(body) => body.is_end_stream(),
            Self::Other(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Watched(body) => body.size_hint(),
            Self::Other(body) => body.size_hint(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body without its trailers, which tells when it has been read whole.
    pub(crate) struct NoTrailers<B> {
        #[pin]
        pub(crate) body: B,
        pub(crate) sent: Arc<AtomicBool>,
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for NoTrailers<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            let mut this = self.as_mut().project();
            match this.body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if !frame.is_data() => continue,
                Poll::Ready(None) => {
                    this.sent.store(true, Ordering::Release);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // A body of known length may not be polled past its last bytes.
                    if this.body.is_end_stream() {
                        this.sent.store(true, Ordering::Release);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The frames already read, then the rest of the body.
    pub(crate) struct Prefixed<B> {
        pub(crate) read: std::collections::VecDeque<Bytes>,
        #[pin]
        pub(crate) rest: B,
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(data) = this.read.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        this.rest.poll_frame(cx)
    }
}

//! The body wrappers of a forwarded exchange: a request body that drops its trailers and tells
//! when it has been sent whole, a response body whose first frames were read already, a body
//! held whole sent in pieces, and the body of the proxy's answers.
//!
//! hyper writes an HTTP/1 message from one buffer (`upstream.rs`, [`HTTP1_BUFFER`]): it copies
//! a body's frames into it, whole, and the buffer keeps its size for the life of the
//! connection. So no frame larger than [`HTTP1_BUFFER`] reaches hyper from here: a body the
//! guard or the rewrite read whole (up to 4 or 8 MiB) goes in slices of the one allocation.

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

use super::{stall::WatchedBody, upstream::HTTP1_BUFFER};

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
    /// A request body without its trailers, in frames of at most [`HTTP1_BUFFER`] bytes, which
    /// tells when it has been read whole.
    pub(crate) struct NoTrailers<B> {
        #[pin]
        body: B,
        sent: Arc<AtomicBool>,
        // The data frame being sent, what remains of it.
        rest: Bytes,
    }
}

impl<B> NoTrailers<B> {
    /// `body`, which sets `sent` when it has been read whole.
    pub(crate) fn new(body: B, sent: Arc<AtomicBool>) -> Self {
        Self {
            body,
            sent,
            rest: Bytes::new(),
        }
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
            if !this.rest.is_empty() {
                let piece = next_piece(this.rest);
                // A body of known length may not be polled past its last bytes.
                if this.rest.is_empty() && this.body.is_end_stream() {
                    this.sent.store(true, Ordering::Release);
                }
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            match this.body.as_mut().poll_frame(cx) {
                // Trailers never cross; a data frame goes out from `rest`, at the top.
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        *this.rest = data;
                    }
                }
                Poll::Ready(None) => {
                    this.sent.store(true, Ordering::Release);
                    return Poll::Ready(None);
                }
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.body.size_hint();
        let rest = self.rest.len() as u64;
        hint.set_lower(hint.lower().saturating_add(rest));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

/// The first [`HTTP1_BUFFER`] bytes of `data` (all of it when shorter), split off without a
/// copy.
fn next_piece(data: &mut Bytes) -> Bytes {
    if data.len() > HTTP1_BUFFER {
        data.split_to(HTTP1_BUFFER)
    } else {
        std::mem::take(data)
    }
}

/// A body held whole, sent in frames of at most [`HTTP1_BUFFER`] bytes.
#[derive(Debug)]
pub(crate) struct Pieces(Bytes);

impl Pieces {
    /// `whole` as an `axum` body.
    pub(crate) fn body(whole: impl Into<Bytes>) -> Body {
        Body::new(Self(whole.into()))
    }
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let rest = &mut self.get_mut().0;
        Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(next_piece(rest)))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.len() as u64)
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

#[cfg(test)]
mod tests {
    use http_body::Body as _;
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    /// The data frames of `body`, by length, and whether it had trailers.
    async fn frames<B>(body: B) -> (Vec<usize>, bool)
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::fmt::Debug,
    {
        let mut body = std::pin::pin!(body);
        let (mut lengths, mut trailers) = (Vec::new(), false);
        while let Some(frame) = body.frame().await {
            match frame.expect("frame").into_data() {
                Ok(data) => lengths.push(data.len()),
                Err(_) => trailers = true,
            }
        }
        (lengths, trailers)
    }

    #[tokio::test]
    async fn a_request_body_goes_in_pieces_without_its_trailers_and_says_when_it_was_sent() {
        let whole = Bytes::from(vec![7u8; 2 * HTTP1_BUFFER + 10]);
        let sent = Arc::new(AtomicBool::new(false));
        let body = NoTrailers::new(Full::new(whole.clone()), Arc::clone(&sent));
        assert_eq!(body.size_hint().exact(), Some(whole.len() as u64));
        let mut body = std::pin::pin!(body);
        let mut lengths = Vec::new();
        while let Some(frame) = body.frame().await {
            assert!(!sent.load(Ordering::Acquire) || body.is_end_stream());
            lengths.push(frame.expect("frame").into_data().expect("data").len());
        }
        assert_eq!(lengths, [HTTP1_BUFFER, HTTP1_BUFFER, 10]);
        assert!(sent.load(Ordering::Acquire));

        let streamed = StreamBody::new(futures_util::stream::iter([
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::trailers(http::HeaderMap::new())),
            Ok(Frame::data(Bytes::from(vec![1u8; HTTP1_BUFFER + 1]))),
        ]));
        let sent = Arc::new(AtomicBool::new(false));
        assert_eq!(
            frames(NoTrailers::new(streamed, Arc::clone(&sent))).await,
            (vec![3, HTTP1_BUFFER, 1], false)
        );
        assert!(sent.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_body_held_whole_goes_in_pieces_of_at_most_the_buffer_size() {
        for (len, want) in [
            (0, vec![]),
            (5, vec![5]),
            (HTTP1_BUFFER, vec![HTTP1_BUFFER]),
            (
                3 * HTTP1_BUFFER + 1,
                vec![HTTP1_BUFFER, HTTP1_BUFFER, HTTP1_BUFFER, 1],
            ),
        ] {
            let body = Pieces::body(vec![0u8; len]);
            assert_eq!(body.size_hint().exact(), Some(len as u64));
            assert_eq!(frames(body).await, (want, false), "{len} bytes");
        }
    }
}

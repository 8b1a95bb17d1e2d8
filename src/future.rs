//! The guard's response future: the inner service's own future on the cache-hit path, a ready
//! response for a denial decided at once, and a boxed future for everything that waits (a body
//! to read, an introspection call, a moka read).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Response, StatusCode};
use pin_project_lite::pin_project;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// Response future of [`SmartGuard`](crate::SmartGuard).
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        /// Allowed at once: the inner service's future, unboxed.
        Inner { #[pin] future: F },
        /// Denied at once.
        Denied { response: Option<Response<B>> },
        /// The decision waits for a body or the authorization server.
        Waiting { future: BoxFuture<Result<Response<B>, E>> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn denied(response: Response<B>) -> Self {
        Self {
            kind: Kind::Denied {
                response: Some(response),
            },
        }
    }

    pub(crate) fn waiting(future: BoxFuture<Result<Response<B>, E>>) -> Self {
        Self {
            kind: Kind::Waiting { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<String>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Denied { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                    // Polled again after it completed: a caller bug, answered without a panic.
                    let mut response = Response::new(B::from(String::new()));
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    response
                })))
            }
            KindProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Denied { .. } => "Denied",
            Kind::Waiting { .. } => "Waiting",
        };
        f.debug_tuple("ResponseFuture").field(&kind).finish()
    }
}

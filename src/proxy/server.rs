//! The proxy's listener on hyper-util: HTTP/1.1 and HTTP/2 (h2c or ALPN), optional TLS, each
//! connection in its own task (a slow client holds up no one else), and a graceful shutdown
//! that lets requests in flight finish up to a grace period.
//!
//! A connection costs a file descriptor and a task, so none is kept without a reason: at most
//! `max_client_connections` are open (more wait in the backlog), one that has not started a
//! request within the header deadline is closed (this covers the TLS handshake and the bytes
//! hyper reads to tell HTTP/1 from the HTTP/2 preface, which no hyper timer covers), and so is
//! one with no request in progress for the idle timeout (HTTP/1 keep-alive and HTTP/2 alike),
//! or one whose later request head is not complete within the header deadline: the watchdog's
//! work (`watchdog.rs`), not a hyper timer armed anew on every request.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use http::{Request, Version};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tower_service::Service;

use super::{
    upstream::HTTP1_BUFFER,
    watchdog::{self, ClientConnection, Obeying, Observed, Working},
};

/// A service made for each client connection, knowing the client's address, that answers
/// through a shared reference (no clone of it per request).
pub(crate) trait ForClient {
    /// The body of its answers.
    type Body: http_body::Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;
    /// The future of an answer.
    type Future: Future<Output = Result<http::Response<Self::Body>, Infallible>> + Send + 'static;

    /// This service for the connection from `addr`.
    fn for_client(&self, addr: std::net::SocketAddr) -> Self;

    /// The answer to `request`.
    fn respond(&self, request: Request<Body>) -> Self::Future;
}

/// The admin listener's routes need no client address.
impl ForClient for axum::Router {
    type Body = Body;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn for_client(&self, _addr: std::net::SocketAddr) -> Self {
        self.clone()
    }

    fn respond(&self, request: Request<Body>) -> Self::Future {
        self.clone().call(request)
    }
}

/// How connections are served.
#[derive(Clone)]
pub(crate) struct ServeOptions {
    pub(crate) header_read_timeout: Duration,
    pub(crate) client_idle_timeout: Duration,
    pub(crate) max_client_connections: usize,
    pub(crate) shutdown_grace: Duration,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("client_idle_timeout", &self.client_idle_timeout)
            .field("max_client_connections", &self.max_client_connections)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits up to
/// the grace period for the requests in flight. Returns whether they all finished in time.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    app: S,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> bool
where
    S: ForClient + Send + Sync + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The watchdog keeps the header deadline: hyper's timer would cost a timer entry, and
        // an allocation, on every request.
        .header_read_timeout(None)
        // Messages written from one buffer; reads of at most this size (`upstream.rs`).
        .writev(false)
        .max_buf_size(HTTP1_BUFFER)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let (down, shutting_down) = tokio::sync::watch::channel(false);
    // One permit per open connection: all of them back means every connection has ended.
    let max = u32::try_from(options.max_client_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(tokio::sync::Semaphore::new(max as usize));
    tokio::pin!(shutdown);
    loop {
        // A slot first, then a connection: past the cap, clients wait in the backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little, do not spin.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let watched = Arc::new(ClientConnection::default());
        let app = app.for_client(peer);
        let tracked = Arc::clone(&watched);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let working = Working::start(&tracked, request.version() == Version::HTTP_2);
            // An empty body needs no box.
            let request = request.map(|body| {
                if http_body::Body::is_end_stream(&body) {
                    Body::empty()
                } else {
                    Body::new(body)
                }
            });
            let answer = app.respond(request);
            async move {
                let response = answer.await.unwrap_or_else(|e| match e {});
                // The request is in progress until its response body has been sent (hyper
                // takes any body: no second box around the first).
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _working: working,
                }))
            }
        });
        let builder = Arc::clone(&builder);
        let tls = options.tls.clone();
        let (first, idle) = (options.header_read_timeout, options.client_idle_timeout);
        let shutting_down = shutting_down.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _watchdog = watchdog::watch(&watched, first, idle, shutting_down);
            let result = match tls {
                None => {
                    let stream = Observed::new(stream, &watched);
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    Obeying::new(connection, &watched).await
                }
                Some(acceptor) => {
                    // The TLS handshake is under the first deadline too.
                    let stream = tokio::select! {
                        accepted = acceptor.accept(stream) => match accepted {
                            Ok(stream) => stream,
                            Err(_) => {
                                tracing::debug!("TLS handshake failed");
                                return;
                            }
                        },
                        () = watchdog::closing(&watched) => return,
                    };
                    let stream = Observed::new(stream, &watched);
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    Obeying::new(connection, &watched).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    down.send_replace(true);
    tokio::select! {
        all = slots.acquire_many(max) => all.is_ok(),
        () = tokio::time::sleep(options.shutdown_grace) => {
            tracing::warn!("requests still in flight at the end of SMART_GUARD_SHUTDOWN_GRACE_MS");
            false
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in progress until it is dropped.
    struct Tracked<B> {
        #[pin]
        body: B,
        _working: Working,
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

//! The proxy's listener on hyper-util: HTTP/1.1 and HTTP/2 (h2c or ALPN), optional TLS, each
//! connection in its own task (a slow client holds up no one else), and a graceful shutdown
//! that lets requests in flight finish up to a grace period.
//!
//! A connection costs a file descriptor and a task, so none is kept without a reason: at most
//! `max_client_connections` are open (more wait in the backlog), one that has not started a
//! request within the header deadline is closed (this covers the TLS handshake and the bytes
//! hyper reads to tell HTTP/1 from the HTTP/2 preface, which no hyper timer covers), and so is
//! one with no request in progress for the idle timeout (HTTP/1 keep-alive and HTTP/2 alike).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use http::Request;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tower_service::Service;

/// A service made for each client connection, knowing the client's address.
pub(crate) trait ForClient {
    /// This service for the connection from `addr`.
    fn for_client(&self, addr: std::net::SocketAddr) -> Self;
}

/// The admin listener's routes need no client address.
impl ForClient for axum::Router {
    fn for_client(&self, _addr: std::net::SocketAddr) -> Self {
        self.clone()
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
    S: Service<Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + ForClient
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_client_connections));
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
        let activity = Arc::new(Activity::new());
        let app = app.for_client(peer);
        let tracked = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let request = request.map(Body::new);
            let mut app = app.clone();
            let working = Working::start(Arc::clone(&tracked));
            async move {
                let response = app.call(request).await.unwrap_or_else(|e| match e {});
                // The request is in progress until its response body has been sent (hyper
                // takes any body: no second box around the first).
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _working: working,
                }))
            }
        });
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let tls = options.tls.clone();
        let (first, idle) = (options.header_read_timeout, options.client_idle_timeout);
        tokio::spawn(async move {
            let _slot = slot;
            let serve = async {
                match tls {
                    None => {
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            tracing::debug!("TLS handshake failed");
                            return Ok(());
                        };
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                }
            };
            tokio::select! {
                result = serve => {
                    if let Err(error) = result {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                }
                () = idle_out(&activity, first, idle) => {
                    tracing::debug!("connection closed: no request started in time, or idle");
                }
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(options.shutdown_grace) => {
            tracing::warn!("requests still in flight at the end of SMART_GUARD_SHUTDOWN_GRACE_MS");
            false
        }
    }
}

/// When a connection's requests start and end, for its deadlines.
#[derive(Debug)]
struct Activity {
    opened: tokio::time::Instant,
    /// Requests in progress: from the service call until the response body is dropped.
    in_flight: AtomicUsize,
    /// Requests started so far.
    started: AtomicUsize,
    /// Milliseconds after `opened` of the last start or end of a request.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

/// One request in progress on a connection.
#[derive(Debug)]
struct Working(Arc<Activity>);

impl Working {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Self(activity)
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Resolves when the connection should close: no request started within `first` of opening,
/// or none in progress for `idle`. Never while a request is in progress. It looks again at least
/// every `min(first, idle)`, so that neither deadline is overslept by the other.
async fn idle_out(activity: &Activity, first: Duration, idle: Duration) {
    let tick = first.min(idle);
    loop {
        if activity.in_flight.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(tick).await;
            continue;
        }
        let limit = if activity.started.load(Ordering::Relaxed) == 0 {
            first
        } else {
            idle
        };
        let last =
            activity.opened + Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
        let deadline = last + limit;
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.min(now + tick)).await;
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

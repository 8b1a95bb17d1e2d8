//! The proxy's listener on hyper-util: HTTP/1.1 and HTTP/2 (h2c or ALPN), optional TLS, each
//! connection in its own task (a slow client holds up no one else), a deadline for request
//! headers, and a graceful shutdown that lets requests in flight finish up to a grace period.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use axum::{Router, body::Body};
use http::Request;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tower_service::Service;

use super::forward::ClientAddr;

/// How connections are served.
#[derive(Clone)]
pub(crate) struct ServeOptions {
    pub(crate) header_read_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits up to
/// the grace period for the requests in flight. Returns whether they all finished in time.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
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
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ClientAddr(peer));
            let mut app = app.clone();
            async move { Ok::<_, Infallible>(app.call(request).await.unwrap_or_else(|e| match e {})) }
        });
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let tls = options.tls.clone();
        let handshake_deadline = options.header_read_timeout;
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(handshake_deadline, acceptor.accept(stream)).await
                    else {
                        tracing::debug!("TLS handshake failed or timed out");
                        return;
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection ended with an error");
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

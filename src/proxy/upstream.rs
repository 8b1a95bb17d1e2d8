//! [`Upstream`]: the connections to the upstream FHIR server. HTTP/1.1 on hyper's connection API
//! (over rustls for an https upstream), kept alive and reused, the most recently used first.
//!
//! A connection carries one request at a time: a request takes an idle one (or opens one), and
//! its response body gives it back when it ends ([`Lease::finish`], called by `stall.rs`). This
//! is the whole pool: no pool key, no waiter queue, no task spawned per request, which is what
//! hyper-util's general-purpose pooled client costs on every request (BENCHMARKS.md,
//! 2026-11-30). How many connections may be busy is the forwarder's slot count; an idle
//! connection is closed after [`IDLE_TIMEOUT`] (up to a sweeper tick, at most 1 s, later), so a
//! connection a firewall forgot is not reused.
//! A response that ends before its request body was sent whole closes its connection.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::body::Body;
use http::{Request, Response};
use hyper::{
    body::Incoming,
    client::conn::{TrySendError, http1},
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::{net::TcpStream, sync::OwnedSemaphorePermit};

/// How long a connection may stay idle in the pool before it is closed instead of reused
/// (hyper-util's pooled client and nginx's `keepalive_timeout` use 60 and 75 s; a shorter idle
/// limit upstream only costs a retry on a fresh connection).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The upstream's address and its idle connections.
pub(crate) struct Upstream {
    /// Host (a DNS name or an IP address, without brackets) and port, to connect to.
    host: String,
    port: u16,
    /// The TLS connector and the name the certificate must carry, for an https upstream.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    max_idle: usize,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// A coarse clock for the idle connections, milliseconds since `origin`: set by
    /// [`Self::close_expired`] at each of the sweeper's ticks (at most 1 s apart), read where a
    /// connection is taken or given back, which then reads no clock of its own.
    clock: AtomicU64,
    origin: Instant,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

struct Idle {
    sender: http1::SendRequest<Body>,
    /// When it went idle, on the coarse clock.
    since: u64,
}

/// The largest read buffer of an HTTP/1 connection on either side, so also the largest request
/// or response head (a larger one is refused: 431 to the client, 502 for the upstream's);
/// hyper's default is 408 KiB, nginx's 4 × 8 KiB for a client's head. Messages are written
/// from one buffer (`writev(false)`), each body frame copied in whole: for the small answers a
/// FHIR server mostly gives, one copy costs fewer instructions than the bookkeeping of a
/// vectored write. A body streams in frames of at most this size (what one read gives, and
/// `bodies.rs` slices a body held whole), and hyper takes a frame only while less than this
/// size waits, so the write buffer, which keeps its size for the connection's life, stays under
/// twice this. Streaming 200 MB each way grows the proxy's memory by a third of what hyper's
/// defaults did (BENCHMARKS.md, "one-buffer writes").
pub(crate) const HTTP1_BUFFER: usize = 64 * 1024;

/// [`IDLE_TIMEOUT`] on the coarse clock.
const IDLE_MS: u64 = IDLE_TIMEOUT.as_secs() * 1000;

/// Why a request did not get an answer from the upstream.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection: refused, unresolvable, timed out or a failed TLS handshake.
    Connect(io::Error),
    /// The connection failed while the request was sent or its answer read.
    Broken(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(error) => write!(f, "connecting to the upstream: {error}"),
            Self::Broken(error) => write!(f, "{}", crate::error::error_chain(error)),
        }
    }
}

/// A connection in use by one request, and the slot that request holds: given back to the pool
/// by [`Lease::finish`] when the response body has ended. Dropped unfinished (a body cut or
/// abandoned half-way), the connection closes, since the rest of its answer is unread.
pub(crate) struct Lease {
    sender: http1::SendRequest<Body>,
    upstream: Arc<Upstream>,
    slot: OwnedSemaphorePermit,
    /// Set when the request body has been sent whole (`None`: it had none).
    request_sent: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

impl Lease {
    /// The response has been read to its end: the connection goes back to the pool, then the
    /// slot is freed (in that order, so a request that takes the slot finds the connection).
    /// An upstream that answered before the request body was sent whole (an early 413, say)
    /// still has it to read: that connection is closed instead, or the next request would wait
    /// for another client's upload.
    pub(crate) fn finish(self) {
        let Self {
            sender,
            upstream,
            slot,
            request_sent,
        } = self;
        if request_sent.is_none_or(|sent| sent.load(Ordering::Acquire)) {
            upstream.give_back(sender);
        }
        drop(slot);
    }
}

/// What hyper's future for a request sent on a connection gives: the response head, or the
/// request back when the connection could not take it.
pub(crate) type Sent = Result<Response<Incoming>, TrySendError<Request<Body>>>;

type SendFuture =
    Pin<Box<dyn Future<Output = Result<(Response<Incoming>, Lease), SendError>> + Send>>;

pin_project_lite::pin_project! {
    /// A request on its way to the upstream ([`Upstream::send`]): the response head and the
    /// [`Lease`] of its connection. Small, unboxed on the usual path: the forwarder's own
    /// future, which holds it, is allocated and moved on every request.
    #[project = SendingProj]
    pub(crate) enum Sending<F> {
        /// Sent on an idle connection; waiting for the answer, the connection's lease held
        /// (`None` once the answer came).
        Sent { #[pin] answer: F, held: Option<Lease> },
        /// A new connection, a wait for one to be ready, or a resend.
        Other { future: SendFuture },
    }
}

impl<F> Future for Sending<F>
where
    F: Future<Output = Sent>,
{
    type Output = Result<(Response<Incoming>, Lease), SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let again = match self.as_mut().project() {
                SendingProj::Other { future } => return future.as_mut().poll(cx),
                SendingProj::Sent { answer, held } => {
                    if held.is_none() {
                        // Polled after it completed: a caller bug. Never ready again (hyper's
                        // future would panic if polled past its end).
                        return Poll::Pending;
                    }
                    let sent = std::task::ready!(answer.poll(cx));
                    let Some(held) = held.take() else {
                        return Poll::Pending;
                    };
                    match sent {
                        Ok(response) => return Poll::Ready(Ok((response, held))),
                        Err(mut error) => match error.take_message() {
                            // The idle connection was closed before it took the request.
                            Some(unsent) => {
                                let Lease {
                                    upstream,
                                    slot,
                                    request_sent,
                                    ..
                                } = held;
                                Box::pin(upstream.send_again(None, unsent, slot, request_sent))
                            }
                            None => {
                                return Poll::Ready(Err(SendError::Broken(error.into_error())));
                            }
                        },
                    }
                }
            };
            self.set(Sending::Other { future: again });
        }
    }
}

impl Upstream {
    /// The upstream at `host:port`; `tls` for an https upstream (its ALPN is set to HTTP/1.1
    /// here). At most `max_idle` connections are kept idle.
    pub(crate) fn new(
        host: &str,
        port: u16,
        tls: Option<rustls::ClientConfig>,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Result<Self, String> {
        // `Url::host_str` brackets an IPv6 address; the resolver and the TLS name take it bare.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = match tls {
            None => None,
            Some(mut config) => {
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Self {
            host,
            port,
            tls,
            connect_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
            clock: AtomicU64::new(0),
            origin: Instant::now(),
        })
    }

    /// Sends `request` (origin-form URI, `Host` set) on an idle connection or a new one; the
    /// [`Sending`] future gives the response head with the connection it holds. A request that
    /// an idle connection could not take (closed by the upstream meanwhile) is sent again on
    /// another one; once it may have reached the upstream it never is. `request_sent` is set by
    /// the request's body when it has been read whole (`None`: no body).
    ///
    /// On the usual path, an idle connection ready for a request, the request goes to it here
    /// and the future only waits for the answer; anything else runs in a boxed future.
    pub(crate) fn send(
        self: &Arc<Self>,
        request: Request<Body>,
        slot: OwnedSemaphorePermit,
        request_sent: Option<Arc<AtomicBool>>,
    ) -> Sending<impl Future<Output = Sent> + use<>> {
        let mut taken = self.take_idle();
        match taken.take() {
            Some(mut sender) if sender.is_ready() => {
                let answer = sender.try_send_request(request);
                Sending::Sent {
                    answer,
                    held: Some(Lease {
                        sender,
                        upstream: Arc::clone(self),
                        slot,
                        request_sent,
                    }),
                }
            }
            other => Sending::Other {
                future: Box::pin(Arc::clone(self).send_again(other, request, slot, request_sent)),
            },
        }
    }

    /// [`Self::send`]'s general case, starting with `first` if there is one.
    async fn send_again(
        self: Arc<Self>,
        mut first: Option<http1::SendRequest<Body>>,
        mut request: Request<Body>,
        slot: OwnedSemaphorePermit,
        request_sent: Option<Arc<AtomicBool>>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        loop {
            let (mut sender, reused) = match first.take().or_else(|| self.take_idle()) {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            if let Err(error) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(SendError::Broken(error));
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease {
                        sender,
                        upstream: Arc::clone(&self),
                        slot,
                        request_sent,
                    };
                    return Ok((response, lease));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Broken(error.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection still open. One idle past [`IDLE_TIMEOUT`] means
    /// all below it are too: they are all closed.
    fn take_idle(&self) -> Option<http1::SendRequest<Body>> {
        let now = self.clock.load(Ordering::Relaxed);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(Idle { sender, since }) = idle.pop() {
            if now.saturating_sub(since) > IDLE_MS {
                idle.clear();
                return None;
            }
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn give_back(&self, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let now = self.clock.load(Ordering::Relaxed);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // The oldest idle connection is the first: past its timeout, it and its likes go.
        if idle
            .first()
            .is_some_and(|oldest| now.saturating_sub(oldest.since) > IDLE_MS)
        {
            idle.retain(|conn| now.saturating_sub(conn.since) <= IDLE_MS);
        }
        if idle.len() < self.max_idle {
            idle.push(Idle { sender, since: now });
        }
    }

    /// Moves the coarse clock on, and closes the connections idle for longer than
    /// [`IDLE_TIMEOUT`] (the forwarder's sweeper calls this at each tick, so they go also when
    /// no request comes).
    pub(crate) fn close_expired(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.clock.store(now, Ordering::Relaxed);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|conn| now.saturating_sub(conn.since) <= IDLE_MS);
    }

    /// A new connection, its HTTP/1.1 driver running in its own task until the connection
    /// closes.
    async fn connect(&self) -> Result<http1::SendRequest<Body>, SendError> {
        let opened = tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no connection within SMART_GUARD_UPSTREAM_CONNECT_TIMEOUT_MS",
                )))
            })?;
        Ok(opened)
    }

    async fn open(&self) -> Result<http1::SendRequest<Body>, SendError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(SendError::Connect)?;
        // Requests and answers are written whole: Nagle would only delay them.
        tcp.set_nodelay(true).map_err(SendError::Connect)?;
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(SendError::Connect)?;
                handshake(tls).await
            }
        }
    }
}

async fn handshake<T>(io: T) -> Result<http1::SendRequest<Body>, SendError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .writev(false)
        .max_buf_size(HTTP1_BUFFER)
        .handshake(TokioIo::new(io))
        .await
        .map_err(SendError::Broken)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %crate::error::error_chain(&error), "upstream connection ended");
        }
    });
    Ok(sender)
}

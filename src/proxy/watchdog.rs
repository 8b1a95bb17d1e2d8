//! The watchdog of one client connection: a task of its own that closes the connection when no
//! request starts within the header deadline, when a later request head takes longer than that
//! once its first bytes came, when no request is in progress for the idle timeout, and that
//! asks it to drain at shutdown.
//!
//! It runs beside the connection, not inside it, so the connection's task polls no timer and no
//! shutdown signal on each of its wake-ups (hyper's own header timer, a new one for every
//! request, is not used): the requests only count themselves in and out ([`Working`]), the
//! stream counts its reads ([`Observed`]), and the connection reads one atomic order per poll
//! ([`Obeying`]).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use hyper_util::server::graceful::GracefulConnection;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
    time::Instant,
};

/// What a connection's watchdog may order it to do.
const SERVE: u8 = 0;
/// Finish the requests in flight, then close (HTTP/2: GOAWAY).
const DRAIN: u8 = 1;
/// Close now.
const CLOSE: u8 = 2;

/// One client connection, as its requests, its watchdog and the connection itself see it.
#[derive(Debug)]
pub(crate) struct ClientConnection {
    /// Requests started and ended so far (ended when the response body is dropped): in progress
    /// while they differ, and a change between two looks means activity.
    started: AtomicUsize,
    ended: AtomicUsize,
    /// Reads that brought bytes, and their count when the last request ended: a change after
    /// that, while no request is in progress, means a request head is on its way. (Bytes of a
    /// pipelined head read before the previous request ended are not seen: the idle timeout
    /// bounds such a connection.)
    reads: AtomicUsize,
    reads_at_end: AtomicUsize,
    /// An HTTP/2 connection: its frames between requests (pings, settings) are no request head.
    http2: AtomicBool,
    order: AtomicU8,
    /// The connection task's waker, for an order.
    waker: Mutex<Option<Waker>>,
}

impl Default for ClientConnection {
    fn default() -> Self {
        Self {
            started: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
            reads_at_end: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            order: AtomicU8::new(SERVE),
            waker: Mutex::new(None),
        }
    }
}

impl ClientConnection {
    fn give(&self, order: u8) {
        self.order.store(order, Ordering::Release);
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// One request in progress on a connection, until it is dropped (with its response body).
#[derive(Debug)]
pub(crate) struct Working(Arc<ClientConnection>);

impl Working {
    /// A request starts on `connection`, over HTTP/2 when `http2`.
    pub(crate) fn start(connection: &Arc<ClientConnection>, http2: bool) -> Self {
        if http2 {
            connection.http2.store(true, Ordering::Relaxed);
        }
        connection.started.fetch_add(1, Ordering::Release);
        Self(Arc::clone(connection))
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        // On the connection's task, as the reads are counted; before `ended`, so a watchdog
        // that sees the end sees this count.
        let reads = self.0.reads.load(Ordering::Relaxed);
        self.0.reads_at_end.store(reads, Ordering::Relaxed);
        self.0.ended.fetch_add(1, Ordering::Release);
    }
}

/// A client connection's stream (TCP, or TLS after its handshake), its reads counted for the
/// watchdog.
#[derive(Debug)]
pub(crate) struct Observed<T> {
    io: T,
    connection: Arc<ClientConnection>,
}

impl<T> Observed<T> {
    pub(crate) fn new(io: T, connection: &Arc<ClientConnection>) -> Self {
        Self {
            io,
            connection: Arc::clone(connection),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Observed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            // Only the connection's task reads: a load and a store, no locked add.
            let reads = &this.connection.reads;
            reads.store(
                reads.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Observed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Starts the watchdog of `connection`; it stops when the returned handle is dropped (the
/// connection's end). `first`: the deadline for the first request; `idle`: for a connection
/// with nothing in progress; `shutdown` turns `true` at shutdown.
pub(crate) fn watch(
    connection: &Arc<ClientConnection>,
    first: Duration,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Watchdog {
    let connection = Arc::clone(connection);
    let task = tokio::spawn(async move {
        tokio::select! {
            () = idle_out(&connection, first, idle) => {
                tracing::debug!("connection closed: no request started in time, or idle");
                connection.give(CLOSE);
                return;
            }
            Ok(_) = shutdown.wait_for(|down| *down) => connection.give(DRAIN),
        }
        // Draining: the deadlines still hold (a TLS handshake or an idle connection left
        // behind would otherwise keep shutdown waiting for the whole grace period).
        idle_out(&connection, first, idle).await;
        connection.give(CLOSE);
    });
    Watchdog(task.abort_handle())
}

/// Stops its watchdog when dropped.
#[derive(Debug)]
pub(crate) struct Watchdog(tokio::task::AbortHandle);

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves when the connection should close:
/// - no request started within `first` of opening (exactly);
/// - on HTTP/1, a request head not started within `first` of the look that saw its first
///   bytes;
/// - no request in progress for `idle`;
///
/// never while a request is in progress. The watchdog looks at least every quarter of the
/// shorter of the two, so a later head's deadline and the idle timeout are met up to that much
/// late.
async fn idle_out(connection: &ClientConnection, first: Duration, idle: Duration) {
    let every = (first.min(idle) / 4).max(Duration::from_millis(1));
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    let mut head_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // `ended` first: every request it counts is counted in `started` read after it, and
        // the reads at its end were stored before it.
        let ended = connection.ended.load(Ordering::Acquire);
        let started = connection.started.load(Ordering::Acquire);
        let reads_at_end = connection.reads_at_end.load(Ordering::Relaxed);
        let reads = connection.reads.load(Ordering::Relaxed);
        let changes = started + ended;
        if started != ended || changes != seen {
            seen = changes;
            quiet_since = now;
            head_since = None;
        }
        let deadline = if started != ended {
            None
        } else if started == 0 {
            Some(quiet_since + first)
        } else if reads != reads_at_end && !connection.http2.load(Ordering::Relaxed) {
            let head = *head_since.get_or_insert(now) + first;
            Some(head.min(quiet_since + idle))
        } else {
            Some(quiet_since + idle)
        };
        if deadline.is_some_and(|deadline| now >= deadline) {
            return;
        }
        let next = now + every;
        tokio::time::sleep_until(deadline.map_or(next, |deadline| deadline.min(next))).await;
    }
}

/// Resolves when the watchdog orders the connection closed or drained (for what comes before
/// serving it, such as a TLS handshake: at shutdown it is abandoned).
pub(crate) fn closing(watched: &ClientConnection) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        *watched.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        if watched.order.load(Ordering::Acquire) != SERVE {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

pin_project_lite::pin_project! {
    /// A connection that obeys its watchdog's orders.
    pub(crate) struct Obeying<'a, C> {
        #[pin]
        connection: C,
        watched: &'a ClientConnection,
        registered: bool,
        draining: bool,
    }
}

impl<'a, C> Obeying<'a, C> {
    pub(crate) fn new(connection: C, watched: &'a ClientConnection) -> Self {
        Self {
            connection,
            watched,
            registered: false,
            draining: false,
        }
    }
}

impl<C: GracefulConnection> Future for Obeying<'_, C> {
    type Output = Result<(), C::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The connection is its task's only future: one waker for its whole life. Registered
        // before the order is read, so an order given meanwhile still wakes it.
        if !*this.registered {
            *this
                .watched
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            *this.registered = true;
        }
        match this.watched.order.load(Ordering::Acquire) {
            CLOSE => return Poll::Ready(Ok(())),
            DRAIN if !*this.draining => {
                *this.draining = true;
                this.connection.as_mut().graceful_shutdown();
            }
            _ => {}
        }
        this.connection.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_idle_timeout_and_not_before() {
        let connection = Arc::new(ClientConnection::default());
        let (_down, shutdown) = watch::channel(false);
        let first = Duration::from_millis(400);
        let idle = Duration::from_millis(1_000);
        let started = Instant::now();
        let _dog = watch(&connection, first, idle, shutdown.clone());
        let working = Working::start(&connection, false);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(connection.order.load(Ordering::Relaxed), SERVE, "busy");
        drop(working);
        let ended = Instant::now();
        while connection.order.load(Ordering::Relaxed) == SERVE {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let idle_for = ended.elapsed();
        assert!(
            idle_for >= idle && idle_for <= idle + first + Duration::from_millis(20),
            "{idle_for:?}"
        );
        assert_eq!(connection.order.load(Ordering::Relaxed), CLOSE);
        assert!(started.elapsed() >= Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_no_request_is_closed_at_the_first_deadline() {
        let connection = Arc::new(ClientConnection::default());
        let (_down, shutdown) = watch::channel(false);
        let started = Instant::now();
        let _dog = watch(
            &connection,
            Duration::from_millis(400),
            Duration::from_secs(60),
            shutdown,
        );
        while connection.order.load(Ordering::Relaxed) == SERVE {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited <= Duration::from_millis(402),
            "{waited:?}"
        );
    }

    /// Waits until the watchdog gives an order; returns how long that took.
    async fn until_ordered(connection: &ClientConnection) -> Duration {
        let from = Instant::now();
        while connection.order.load(Ordering::Relaxed) == SERVE {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        from.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_head_has_the_header_deadline_from_its_first_bytes_and_idle_time_does_not_count()
     {
        let connection = Arc::new(ClientConnection::default());
        let (_down, shutdown) = watch::channel(false);
        let first = Duration::from_millis(400);
        let _dog = watch(&connection, first, Duration::from_secs(10), shutdown);
        drop(Working::start(&connection, false));
        // Idle for five header deadlines: still open (hyper's header timer, armed when the
        // connection goes idle, would have closed it).
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(connection.order.load(Ordering::Relaxed), SERVE);
        // The first bytes of the next head, and no more.
        connection.reads.fetch_add(1, Ordering::Relaxed);
        let waited = until_ordered(&connection).await;
        assert!(
            waited >= first && waited <= first + first / 4 + Duration::from_millis(2),
            "{waited:?}"
        );
        assert_eq!(connection.order.load(Ordering::Relaxed), CLOSE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_begun_as_the_last_answer_ended_still_has_the_header_deadline() {
        let connection = Arc::new(ClientConnection::default());
        let (_down, shutdown) = watch::channel(false);
        let first = Duration::from_millis(400);
        let _dog = watch(&connection, first, Duration::from_secs(10), shutdown);
        tokio::task::yield_now().await;
        // The answer ends, and the next head's first bytes come before the watchdog looks.
        drop(Working::start(&connection, false));
        connection.reads.fetch_add(1, Ordering::Relaxed);
        let waited = until_ordered(&connection).await;
        assert!(
            waited >= first && waited <= first + first / 2 + Duration::from_millis(2),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_requests_are_no_head_and_only_the_idle_timeout_holds() {
        let connection = Arc::new(ClientConnection::default());
        let (_down, shutdown) = watch::channel(false);
        let idle = Duration::from_secs(3);
        let _dog = watch(&connection, Duration::from_millis(400), idle, shutdown);
        drop(Working::start(&connection, true));
        let ended = Instant::now();
        // A ping's answer arrives.
        tokio::time::sleep(Duration::from_millis(500)).await;
        connection.reads.fetch_add(1, Ordering::Relaxed);
        until_ordered(&connection).await;
        let idle_for = ended.elapsed();
        assert!(
            idle_for >= idle && idle_for <= idle + Duration::from_millis(102),
            "{idle_for:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_orders_a_drain_and_a_dropped_watchdog_orders_nothing() {
        let connection = Arc::new(ClientConnection::default());
        let (down, shutdown) = watch::channel(false);
        let dog = watch(
            &connection,
            Duration::from_secs(10),
            Duration::from_secs(10),
            shutdown.clone(),
        );
        tokio::task::yield_now().await;
        down.send_replace(true);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(connection.order.load(Ordering::Relaxed), DRAIN);
        // A connection left idle while draining is still closed at its deadline.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(connection.order.load(Ordering::Relaxed), CLOSE);
        drop(dog);

        let other = Arc::new(ClientConnection::default());
        let dog = watch(
            &other,
            Duration::from_millis(10),
            Duration::from_millis(10),
            shutdown,
        );
        drop(dog);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(other.order.load(Ordering::Relaxed), SERVE);
    }
}

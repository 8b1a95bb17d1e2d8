//! The watchdog of one client connection: a task of its own that closes the connection when no
//! request starts within the header deadline, when none is in progress for the idle timeout,
//! and that asks it to drain at shutdown.
//!
//! It runs beside the connection, not inside it, so the connection's task polls no timer and no
//! shutdown signal on each of its wake-ups: the requests only count themselves in and out
//! ([`Working`]), and the connection reads one atomic order per poll ([`Obeying`]).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use hyper_util::server::graceful::GracefulConnection;
use tokio::{sync::watch, time::Instant};

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
    order: AtomicU8,
    /// The connection task's waker, for an order.
    waker: Mutex<Option<Waker>>,
}

impl Default for ClientConnection {
    fn default() -> Self {
        Self {
            started: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
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
    pub(crate) fn start(connection: &Arc<ClientConnection>) -> Self {
        connection.started.fetch_add(1, Ordering::Release);
        Self(Arc::clone(connection))
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::Release);
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

/// Resolves when the connection should close: no request started within `first` of opening,
/// or none in progress for `idle`, never while a request is in progress. A request's start or
/// end is seen at the next look, at least every `min(first, idle)`: the idle timeout is met
/// between `idle` and one look later, the first deadline exactly.
async fn idle_out(connection: &ClientConnection, first: Duration, idle: Duration) {
    let every = first.min(idle);
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    loop {
        let now = Instant::now();
        // `ended` first: every request it counts is counted in `started` read after it.
        let ended = connection.ended.load(Ordering::Acquire);
        let started = connection.started.load(Ordering::Acquire);
        let changes = started + ended;
        let limit = if started == 0 { first } else { idle };
        if started != ended || changes != seen {
            seen = changes;
            quiet_since = now;
        } else if now >= quiet_since + limit {
            return;
        }
        tokio::time::sleep_until((quiet_since + limit).min(now + every)).await;
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
        let working = Working::start(&connection);
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

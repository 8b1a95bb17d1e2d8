//! Upstream exchanges that stop moving. An upstream that never answers would hold a client,
//! and a client that stops reading (or an HTTP/2 client that never opens its flow-control
//! window, which keeps hyper from polling the body at all) would hold an upstream slot and an
//! upstream connection for ever. Every exchange is watched from the moment its request is sent:
//! a sweeper gives up on an answer that has not come within the upstream timeout (504), and
//! cuts a response body that made no progress for as long, which frees the slot and closes the
//! upstream connection (nginx's `proxy_read_timeout` and `send_timeout` do the same). A body
//! read to its end gives its connection back to the pool at once ([`Lease::finish`]).
//!
//! Time here is the sweeper's tick count, a quarter of the timeout apart (20 ms to 1 s), not a
//! clock read per request or per frame: an exchange is given up after at least the timeout and
//! at most two ticks more, and no timer is registered per request.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use super::upstream::{Lease, Upstream};

/// Watches the upstream exchanges of one forwarder.
#[derive(Debug)]
pub(crate) struct Sweeper {
    /// How often the sweeper looks.
    every: Duration,
    /// Ticks without progress after which an exchange is given up: more than this many.
    limit: u64,
    /// Ticks since the sweeper started.
    ticks: AtomicU64,
    watched: Mutex<Registry>,
    /// Whether the sweeping task runs.
    running: AtomicBool,
    /// The upstream whose idle connections each sweep expires.
    upstream: Option<Arc<Upstream>>,
    cut: AtomicU64,
}

/// The exchanges being watched. A finished one leaves a dead `Weak` behind, which holds its
/// allocation until it is dropped: the list is compacted whenever it has doubled since the last
/// compaction (amortized a few instructions per exchange), not only at each sweep, so at tens of
/// thousands of requests a second it stays near the number of exchanges in flight.
#[derive(Debug)]
struct Registry {
    list: Vec<Weak<Watched>>,
    compact_at: usize,
}

/// The smallest list worth compacting.
const COMPACT_FROM: usize = 256;

impl Registry {
    fn push(&mut self, watched: Weak<Watched>) {
        self.list.push(watched);
        if self.list.len() >= self.compact_at {
            self.list.retain(|weak| weak.strong_count() > 0);
            self.compacted();
        }
    }

    fn compacted(&mut self) {
        self.compact_at = (self.list.len() * 2).max(COMPACT_FROM);
    }
}

/// One exchange: waiting for its answer, then its body and the upstream connection and slot it
/// holds, until it ends, expires or is cut.
#[derive(Debug)]
struct Watched {
    state: Mutex<State>,
    /// The tick of the request or of the body's last frame.
    last: AtomicU64,
}

#[derive(Debug)]
enum State {
    /// The request is on its way; no answer yet. The waker of the task that waits for it.
    Waiting(Option<Waker>),
    /// No answer came within the timeout.
    Expired,
    /// The body, and the upstream connection and slot it holds (given back when it ends,
    /// closed and freed when it is cut); the waker of its reader, woken by a cut (dropping the
    /// upstream body wakes only hyper's connection task).
    Flowing {
        body: Incoming,
        lease: Lease,
        reader: Option<Waker>,
    },
    Ended,
    Cut,
}

impl Watched {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Ends a body that has nothing more to read: its connection goes back to the pool.
    fn end_if_done(&mut self) {
        if let Self::Flowing { body, .. } = self
            && http_body::Body::is_end_stream(body)
            && let Self::Flowing { lease, .. } = std::mem::replace(self, Self::Ended)
        {
            lease.finish();
        }
    }
}

/// One exchange being watched, from [`Sweeper::start`] until its body is handed over.
#[derive(Debug)]
pub(crate) struct Watch {
    watched: Arc<Watched>,
    sweeper: Arc<Sweeper>,
}

/// The body the client receives.
#[derive(Debug)]
pub(crate) struct WatchedBody {
    watched: Arc<Watched>,
    sweeper: Arc<Sweeper>,
    /// Whether the body ended (and gave its connection back), and what remains of it, as the
    /// last look under the lock saw them: hyper asks for both several times per response, and
    /// only [`http_body::Body::poll_frame`] changes them (a cut is seen by the next frame).
    ended: bool,
    hint: SizeHint,
}

/// What [`WatchedBody`] keeps of `state` for the questions asked without the lock (after
/// [`State::end_if_done`]: a body at its end is `Ended`, its connection given back).
fn seen(state: &State) -> (bool, SizeHint) {
    match state {
        State::Flowing { body, .. } => (
            http_body::Body::is_end_stream(body),
            http_body::Body::size_hint(body),
        ),
        State::Ended => (true, SizeHint::default()),
        _ => (false, SizeHint::default()),
    }
}

impl Sweeper {
    /// A sweeper for the exchanges with `upstream`, which also closes its expired idle
    /// connections.
    pub(crate) fn for_upstream(timeout: Duration, upstream: Arc<Upstream>) -> Arc<Self> {
        Self::with(timeout, Some(upstream))
    }

    #[cfg(test)]
    pub(crate) fn new(timeout: Duration) -> Arc<Self> {
        Self::with(timeout, None)
    }

    fn with(timeout: Duration, upstream: Option<Arc<Upstream>>) -> Arc<Self> {
        let every = (timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let limit = timeout.as_nanos().div_ceil(every.as_nanos().max(1));
        Arc::new(Self {
            every,
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
            ticks: AtomicU64::new(0),
            watched: Mutex::new(Registry {
                list: Vec::new(),
                compact_at: COMPACT_FROM,
            }),
            running: AtomicBool::new(false),
            upstream,
            cut: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Bodies cut so far.
    pub(crate) fn cut(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }

    /// Starts watching an exchange whose request is about to be sent.
    pub(crate) fn start(self: &Arc<Self>) -> Watch {
        // Started on first use, inside the runtime; started again if it ended with a runtime
        // that went away (the forwarder is a library type: it may outlive one).
        if !self.running.load(Ordering::Acquire)
            && self
                .running
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // The upstream pool's coarse clock is right from now on, not only from the first
            // tick (a connection given back before it would look idle since the clock's start).
            if let Some(upstream) = &self.upstream {
                upstream.close_expired();
            }
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
        let watched = Arc::new(Watched {
            state: Mutex::new(State::Waiting(None)),
            last: AtomicU64::new(self.now()),
        });
        self.register(&watched);
        Watch {
            watched,
            sweeper: Arc::clone(self),
        }
    }

    fn register(&self, watched: &Arc<Watched>) {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(watched));
    }

    /// Expires the answers and cuts the bodies that have not moved for the timeout; forgets the
    /// finished ones.
    fn sweep_once(&self) {
        let now = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        watched.list.retain(|weak| {
            let Some(exchange) = weak.upgrade() else {
                return false;
            };
            let mut state = exchange.state();
            if !matches!(*state, State::Waiting(_) | State::Flowing { .. }) {
                return false;
            }
            if now.saturating_sub(exchange.last.load(Ordering::Relaxed)) <= self.limit {
                return true;
            }
            match std::mem::replace(&mut *state, State::Cut) {
                State::Waiting(waker) => {
                    *state = State::Expired;
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
                // Dropping the upstream body closes its connection; dropping the lease's
                // permit frees the slot; the reader learns of the cut.
                State::Flowing {
                    reader: Some(reader),
                    ..
                } => {
                    reader.wake();
                    self.cut.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        "a response body made no progress for the upstream timeout: cut"
                    );
                }
                _ => {
                    self.cut.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        "a response body made no progress for the upstream timeout: cut"
                    );
                }
            }
            false
        });
        watched.compacted();
        drop(watched);
        if let Some(upstream) = &self.upstream {
            upstream.close_expired();
        }
    }
}

async fn sweep(sweeper: Weak<Sweeper>) {
    let Some(every) = sweeper.upgrade().map(|s| s.every) else {
        return;
    };
    // Dropped with the task, also when its runtime goes away.
    let _running = Running(Weak::clone(&sweeper));
    loop {
        tokio::time::sleep(every).await;
        let Some(sweeper) = sweeper.upgrade() else {
            return;
        };
        sweeper.sweep_once();
    }
}

/// Marks the sweeper stopped when its task ends.
struct Running(Weak<Sweeper>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(sweeper) = self.0.upgrade() {
            sweeper.running.store(false, Ordering::Release);
        }
    }
}

impl Watch {
    /// Polls `answer`: ready with `None` when it has not come within the timeout. (A poll
    /// function, not a future: the forwarder's future holds the watch beside its answer.)
    pub(crate) fn poll_answer<F: Future>(
        &self,
        cx: &mut Context<'_>,
        answer: Pin<&mut F>,
    ) -> Poll<Option<F::Output>> {
        // Given up first: an answer that comes after the sweeper expired it is not taken.
        {
            let mut state = self.watched.state();
            let State::Waiting(waker) = &mut *state else {
                return Poll::Ready(None);
            };
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        answer.poll(cx).map(Some)
    }

    /// The answer's body, watched until it ends; it holds `lease` until then.
    pub(crate) fn body(self, body: Incoming, lease: Lease) -> WatchedBody {
        let mut state = State::Flowing {
            body,
            lease,
            reader: None,
        };
        // An answer without a body (HEAD, 204, 304, `Content-Length: 0`) is over already.
        state.end_if_done();
        self.watched
            .last
            .store(self.sweeper.now(), Ordering::Relaxed);
        let (ended, hint) = seen(&state);
        let given_up = {
            let mut current = self.watched.state();
            let given_up = matches!(*current, State::Expired);
            *current = state;
            given_up
        };
        if given_up {
            // The answer came as the sweeper gave up on it (and forgot it): watched again.
            self.sweeper.register(&self.watched);
        }
        WatchedBody {
            watched: self.watched,
            sweeper: self.sweeper,
            ended,
            hint,
        }
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        // Read to the end but not polled past it: the connection can still be reused. (Seen
        // ended: given back already.)
        if !self.ended {
            self.watched.state().end_if_done();
        }
    }
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let mut state = this.watched.state();
        let State::Flowing { body, reader, .. } = &mut *state else {
            (this.ended, this.hint) = seen(&state);
            return Poll::Ready(match *state {
                State::Cut => Some(Err("the response body stalled and was cut".into())),
                _ => None,
            });
        };
        let polled = match Pin::new(body).poll_frame(cx) {
            Poll::Pending => {
                if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *reader = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.watched
                    .last
                    .store(this.sweeper.now(), Ordering::Relaxed);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                // The connection is broken: closed, not given back.
                *state = State::Ended;
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(None) => {
                // The end: the connection and the slot are free at once, not when the client
                // drops the body.
                if let State::Flowing { lease, .. } = std::mem::replace(&mut *state, State::Ended) {
                    lease.finish();
                }
                Poll::Ready(None)
            }
        };
        // The last bytes of a body of known length (hyper may not poll for its end), or an end
        // that came with no frame: given back before `ended` says so.
        state.end_if_done();
        (this.ended, this.hint) = seen(&state);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exchange_is_given_up_no_sooner_than_the_timeout() {
        for (timeout_ms, every_ms, limit) in
            [(700, 175, 4), (30_000, 1_000, 30), (10, 20, 1), (90, 22, 4)]
        {
            let sweeper = Sweeper::new(Duration::from_millis(timeout_ms));
            assert_eq!(sweeper.every.as_millis(), every_ms, "{timeout_ms} ms");
            assert_eq!(sweeper.limit, limit, "{timeout_ms} ms");
            // Started just before a tick, given up `limit + 1` ticks later: at least the
            // timeout has passed.
            let earliest = u128::from(limit) * sweeper.every.as_nanos();
            assert!(earliest >= Duration::from_millis(timeout_ms).as_nanos());
        }
    }

    #[tokio::test]
    async fn finished_exchanges_do_not_pile_up_between_sweeps() {
        let sweeper = Sweeper::new(Duration::from_secs(60));
        let live: Vec<Watch> = (0..300).map(|_| sweeper.start()).collect();
        for _ in 0..10_000 {
            drop(sweeper.start());
        }
        let len = sweeper
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .list
            .len();
        assert!((300..300 * 2 + COMPACT_FROM).contains(&len), "{len}");
        drop(live);
    }

    /// `future`'s output under `watch`.
    async fn answer<F: Future>(watch: &Watch, future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| watch.poll_answer(cx, future.as_mut())).await
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_does_not_come_expires_and_one_that_comes_is_kept() {
        let sweeper = Sweeper::new(Duration::from_millis(100));
        let never = sweeper.start();
        let started = tokio::time::Instant::now();
        assert_eq!(answer(&never, std::future::pending::<()>()).await, None);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited <= Duration::from_millis(150),
            "{waited:?}"
        );
        let soon = sweeper.start();
        let soon_answer = answer(&soon, async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            7
        });
        assert_eq!(soon_answer.await, Some(7));
    }
}

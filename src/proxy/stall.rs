//! Response bodies that stop moving. A client that stops reading (or an HTTP/2 client that
//! never opens its flow-control window, which keeps hyper from polling the body at all) would
//! hold an upstream slot and an upstream connection for ever. Every upstream response body is
//! watched; a sweeper cuts the ones that made no progress for the stall timeout, which frees
//! the slot and closes the upstream connection (nginx's `send_timeout` does the same).

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;

/// Watches the response bodies of one forwarder.
#[derive(Debug)]
pub(crate) struct Sweeper {
    stall: Duration,
    epoch: Instant,
    watched: Mutex<Vec<Weak<Watched>>>,
    running: OnceLock<()>,
    cut: AtomicU64,
}

/// One response body and the upstream slot it holds, until it ends or is cut.
#[derive(Debug)]
struct Watched {
    state: Mutex<State>,
    /// Milliseconds after the sweeper's epoch of the last frame.
    last_ms: AtomicU64,
}

#[derive(Debug)]
enum State {
    /// The body, and the upstream slot it holds (released when the state changes).
    Flowing {
        body: Incoming,
        _slot: OwnedSemaphorePermit,
    },
    Ended,
    Cut,
}

impl Watched {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The body the client receives.
#[derive(Debug)]
pub(crate) struct WatchedBody {
    watched: Arc<Watched>,
    sweeper: Arc<Sweeper>,
}

impl Sweeper {
    pub(crate) fn new(stall: Duration) -> Arc<Self> {
        Arc::new(Self {
            stall,
            epoch: Instant::now(),
            watched: Mutex::new(Vec::new()),
            running: OnceLock::new(),
            cut: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bodies cut so far.
    pub(crate) fn cut(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }

    /// Watches `body`, which holds `slot` until it ends or is cut.
    pub(crate) fn watch(
        self: &Arc<Self>,
        body: Incoming,
        slot: OwnedSemaphorePermit,
    ) -> WatchedBody {
        self.running.get_or_init(|| {
            // Started on first use, inside the runtime; it ends with the forwarder.
            tokio::spawn(sweep(Arc::downgrade(self)));
        });
        let watched = Arc::new(Watched {
            state: Mutex::new(State::Flowing { body, _slot: slot }),
            last_ms: AtomicU64::new(self.now_ms()),
        });
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&watched));
        WatchedBody {
            watched,
            sweeper: Arc::clone(self),
        }
    }

    /// Cuts the bodies that have not moved for the stall timeout; forgets the finished ones.
    fn sweep_once(&self) {
        let now = self.now_ms();
        let stall = u64::try_from(self.stall.as_millis()).unwrap_or(u64::MAX);
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        watched.retain(|weak| {
            let Some(body) = weak.upgrade() else {
                return false;
            };
            let mut state = body.state();
            if !matches!(*state, State::Flowing { .. }) {
                return false;
            }
            if now.saturating_sub(body.last_ms.load(Ordering::Relaxed)) < stall {
                return true;
            }
            // Dropping the upstream body closes its connection; dropping the permit frees the slot.
            *state = State::Cut;
            self.cut.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("a response body made no progress for the upstream timeout: cut");
            false
        });
    }
}

async fn sweep(sweeper: Weak<Sweeper>) {
    let every = match sweeper.upgrade() {
        Some(s) => (s.stall / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(sweeper) = sweeper.upgrade() else {
            return;
        };
        sweeper.sweep_once();
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
        let State::Flowing { body, .. } = &mut *state else {
            return Poll::Ready(match *state {
                State::Cut => Some(Err("the response body stalled and was cut".into())),
                _ => None,
            });
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                this.watched
                    .last_ms
                    .store(this.sweeper.now_ms(), Ordering::Relaxed);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                *state = State::Ended;
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(None) => {
                // The end: the slot is free at once, not when the client drops the body.
                *state = State::Ended;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &*self.watched.state() {
            State::Flowing { body, .. } => body.is_end_stream(),
            State::Ended => true,
            State::Cut => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &*self.watched.state() {
            State::Flowing { body, .. } => body.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

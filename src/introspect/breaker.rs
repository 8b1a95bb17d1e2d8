//! A circuit breaker in front of the introspection endpoint.
//!
//! After `threshold` consecutive outage failures (connect, timeout, transport, 5xx, 429) it
//! opens: calls are refused without touching the AS for `cooldown`. Then exactly one probe call
//! is let through; its success closes the breaker, its failure opens it for another cool-down.
//! Answers the AS did give (active, inactive, even a refused credential or a garbage body) show
//! it is reachable and reset the count: they are not what a breaker protects against.
//!
//! The state sits behind a mutex: it is touched once per introspection call (or refused call),
//! never on the cache-hit path.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use crate::readiness::BreakerState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until_ms: u64,
    },
    /// The cool-down is over and one probe call is in flight.
    HalfOpen,
}

/// What became of the breaker when a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    Opened,
    Closed,
}

/// The circuit breaker of one guard.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown_ms: u64,
    state: Mutex<State>,
}

/// Permission to make one call; report how it went with [`Ticket::finish`]. Dropped unreported
/// (the request was cancelled), a probe hands its turn to the next caller.
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
    finished: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown_ms: u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX),
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value, consistent after any panic: poisoning is irrelevant.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ticket for one call at `now_ms`, or `None` while the breaker is open (or its probe is
    /// still out).
    pub(crate) fn admit(&self, now_ms: u64) -> Option<Ticket<'_>> {
        let mut state = self.state();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until_ms } if now_ms >= until_ms => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => return None,
        };
        Some(Ticket {
            breaker: self,
            probe,
            finished: false,
        })
    }

    /// The cool-down, in milliseconds.
    pub(crate) fn cooldown_ms(&self) -> u64 {
        self.cooldown_ms
    }

    /// The state at `now_ms`, as readiness reports it: an open breaker whose cool-down is over
    /// is about to let its probe through.
    pub(crate) fn current(&self, now_ms: u64) -> BreakerState {
        match *self.state() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until_ms } if now_ms < until_ms => BreakerState::Open,
            State::Open { .. } | State::HalfOpen => BreakerState::Probing,
        }
    }

    /// Whether calls are being refused right now (open, or half-open with the probe out).
    #[cfg(test)]
    pub(crate) fn is_open(&self, now_ms: u64) -> bool {
        match *self.state() {
            State::Closed { .. } => false,
            State::Open { until_ms } => now_ms < until_ms,
            State::HalfOpen => true,
        }
    }
}

impl Ticket<'_> {
    /// Reports the call: `outage` is true for a failure that says the AS is down or overloaded.
    pub(crate) fn finish(mut self, outage: bool, now_ms: u64) -> Transition {
        self.finished = true;
        let breaker = self.breaker;
        let mut state = breaker.state();
        match (*state, outage) {
            (State::Closed { .. }, false) => {
                *state = State::Closed { failures: 0 };
                Transition::None
            }
            (State::Closed { failures }, true) => {
                let failures = failures.saturating_add(1);
                if failures >= breaker.threshold {
                    *state = State::Open {
                        until_ms: now_ms.saturating_add(breaker.cooldown_ms),
                    };
                    Transition::Opened
                } else {
                    *state = State::Closed { failures };
                    Transition::None
                }
            }
            // The AS answered: whether this was the probe or a call that started before the
            // breaker opened, it is back.
            (State::Open { .. } | State::HalfOpen, false) => {
                *state = State::Closed { failures: 0 };
                Transition::Closed
            }
            (State::HalfOpen, true) if self.probe => {
                *state = State::Open {
                    until_ms: now_ms.saturating_add(breaker.cooldown_ms),
                };
                Transition::Opened
            }
            // A straggler that started before the breaker opened: already counted as open.
            (State::Open { .. } | State::HalfOpen, true) => Transition::None,
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe && !self.finished {
            let mut state = self.breaker.state();
            if *state == State::HalfOpen {
                // The probe was cancelled: the next caller probes.
                *state = State::Open { until_ms: 0 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(3, Duration::from_millis(100))
    }

    #[test]
    fn it_opens_after_the_threshold_of_consecutive_outages_only() {
        let b = breaker();
        for _ in 0..2 {
            let t = b.admit(0).expect("closed");
            assert_eq!(t.finish(true, 0), Transition::None);
        }
        // An answer in between resets the count.
        b.admit(0).expect("closed").finish(false, 0);
        for _ in 0..2 {
            b.admit(0).expect("closed").finish(true, 0);
        }
        assert!(!b.is_open(0));
        assert_eq!(
            b.admit(5).expect("closed").finish(true, 5),
            Transition::Opened
        );
        assert!(b.is_open(5));
        assert!(b.admit(50).is_none(), "open during the cool-down");
        assert!(b.admit(104).is_none());
    }

    #[test]
    fn after_the_cool_down_exactly_one_probe_goes_through() {
        let b = breaker();
        for _ in 0..3 {
            b.admit(0).expect("closed").finish(true, 0);
        }
        let probe = b.admit(100).expect("the probe");
        assert!(b.admit(100).is_none(), "one probe at a time");
        assert!(b.admit(1_000).is_none(), "still one probe, however late");
        assert_eq!(probe.finish(false, 120), Transition::Closed);
        assert!(b.admit(120).is_some(), "closed again");
    }

    #[test]
    fn a_failed_probe_opens_it_for_another_cool_down() {
        let b = breaker();
        for _ in 0..3 {
            b.admit(0).expect("closed").finish(true, 0);
        }
        let probe = b.admit(100).expect("the probe");
        assert_eq!(probe.finish(true, 150), Transition::Opened);
        assert!(b.admit(249).is_none());
        assert!(b.admit(250).is_some());
    }

    #[test]
    fn a_cancelled_probe_hands_over_to_the_next_caller() {
        let b = breaker();
        for _ in 0..3 {
            b.admit(0).expect("closed").finish(true, 0);
        }
        drop(b.admit(100).expect("the probe"));
        let next = b.admit(101).expect("the next probe");
        assert!(b.admit(101).is_none());
        assert_eq!(next.finish(false, 102), Transition::Closed);
    }

    #[test]
    fn stragglers_do_not_extend_the_cool_down_but_a_late_answer_closes_it() {
        let b = breaker();
        let straggler = b.admit(0).expect("closed");
        let late = b.admit(0).expect("closed");
        for _ in 0..3 {
            b.admit(0).expect("closed").finish(true, 0);
        }
        assert_eq!(straggler.finish(true, 90), Transition::None);
        assert!(b.admit(100).is_some(), "cool-down counted from the opening");
        let b2 = breaker();
        let late2 = b2.admit(0).expect("closed");
        for _ in 0..3 {
            b2.admit(0).expect("closed").finish(true, 0);
        }
        assert_eq!(late2.finish(false, 10), Transition::Closed);
        drop(late);
    }
}

//! Counters of one guard: a [`GuardStats`] snapshot for code without a metrics recorder, and
//! (feature `metrics`) the same events through the `metrics` facade.
//!
//! Counters are striped per thread and cache-line padded, so the hit path pays one uncontended
//! relaxed add per event, not a shared cache line bouncing between cores.

use std::{
    cell::Cell,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use crate::{error::IntrospectErrorKind, readiness::BreakerState, rejection::AuthFailure};

const STRIPES: usize = 8;

#[repr(align(64))]
#[derive(Default)]
struct Padded(AtomicU64);

/// A counter striped over [`STRIPES`] cache lines.
#[derive(Default)]
struct Counter([Padded; STRIPES]);

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    STRIPE.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        s.get()
    })
}

impl Counter {
    fn add(&self, n: u64) {
        self.0[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::Relaxed)).sum()
    }
}

const ERROR_KINDS: [IntrospectErrorKind; 8] = [
    IntrospectErrorKind::Connect,
    IntrospectErrorKind::Timeout,
    IntrospectErrorKind::CredentialsRejected,
    IntrospectErrorKind::Status,
    IntrospectErrorKind::AnswerTooLarge,
    IntrospectErrorKind::MalformedAnswer,
    IntrospectErrorKind::Transport,
    IntrospectErrorKind::OwnCredentials,
];

const FAILURES: [AuthFailure; 10] = [
    AuthFailure::MissingToken,
    AuthFailure::InvalidRequest,
    AuthFailure::MalformedPath,
    AuthFailure::NotFound,
    AuthFailure::PayloadTooLarge,
    AuthFailure::UnsupportedMediaType,
    AuthFailure::InvalidToken,
    AuthFailure::InsufficientScope,
    AuthFailure::Unavailable,
    AuthFailure::Internal,
];

fn error_index(kind: IntrospectErrorKind) -> usize {
    ERROR_KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(ERROR_KINDS.len() - 1)
}

fn failure_index(kind: AuthFailure) -> usize {
    FAILURES.iter().position(|k| *k == kind).unwrap_or(0)
}

/// The `metrics` handles of the per-request events, registered once when the guard is built:
/// an increment is then one call on the recorder's own counter, with no key lookup per request.
/// (The events of the miss path, at most one per token per TTL, use the macros directly.)
#[cfg(feature = "metrics")]
struct Handles {
    cache_hits: metrics::Counter,
    allowed: metrics::Counter,
    public: metrics::Counter,
    denied: [metrics::Counter; FAILURES.len()],
}

#[cfg(feature = "metrics")]
impl Default for Handles {
    fn default() -> Self {
        Self {
            cache_hits: metrics::counter!(names::CACHE_HITS),
            allowed: metrics::counter!(names::DECISIONS, "outcome" => "allow"),
            public: metrics::counter!(names::DECISIONS, "outcome" => "public"),
            denied: FAILURES
                .map(|kind| metrics::counter!(names::DECISIONS, "outcome" => kind.as_str())),
        }
    }
}

/// The live counters of one guard (shared by its clones).
///
/// With the `metrics` feature, `Stats::default()` registers the per-request metrics with the
/// recorder installed at that moment: install it before building the layer.
#[derive(Default)]
pub(crate) struct Stats {
    #[cfg(feature = "metrics")]
    handles: Handles,
    cache_hits: Counter,
    cache_misses: Counter,
    inactive_hits: Counter,
    coalesced_waits: Counter,
    as_calls: Counter,
    as_latency_micros: Counter,
    as_errors: [Counter; ERROR_KINDS.len()],
    allowed: Counter,
    public: Counter,
    denied: [Counter; FAILURES.len()],
    breaker_open_rejections: Counter,
    breaker_openings: Counter,
    in_flight_rejections: Counter,
    deadline_rejections: Counter,
    stale_served: Counter,
    fleet: [Counter; FLEET_EVENTS.len()],
}

/// What happened at the shared cache of fleet mode (feature `redis`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FleetEvent {
    /// A first-level miss found the token's entry in the shared cache.
    SharedHit,
    /// A first-level miss found no entry in the shared cache.
    SharedMiss,
    /// A Redis command failed or timed out, or the Redis breaker was open.
    SharedError,
    /// A shared value did not open (changed, another fleet key, another name): a miss.
    Tampered,
    /// A replica waited for another's introspection call through the fleet lock.
    LockWait,
    /// A revocation this replica sent to the fleet.
    RevocationSent,
    /// A revocation this replica received from the fleet.
    RevocationReceived,
}

const FLEET_EVENTS: [FleetEvent; 7] = [
    FleetEvent::SharedHit,
    FleetEvent::SharedMiss,
    FleetEvent::SharedError,
    FleetEvent::Tampered,
    FleetEvent::LockWait,
    FleetEvent::RevocationSent,
    FleetEvent::RevocationReceived,
];

impl FleetEvent {
    #[cfg(feature = "metrics")]
    fn metric(self) -> &'static str {
        match self {
            Self::SharedHit => "smart_guard_shared_cache_hits_total",
            Self::SharedMiss => "smart_guard_shared_cache_misses_total",
            Self::SharedError => "smart_guard_shared_cache_errors_total",
            Self::Tampered => "smart_guard_shared_cache_tampered_total",
            Self::LockWait => "smart_guard_shared_lock_waits_total",
            Self::RevocationSent => "smart_guard_revocations_sent_total",
            Self::RevocationReceived => "smart_guard_revocations_received_total",
        }
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

#[cfg(feature = "metrics")]
mod names {
    pub(super) const CACHE_HITS: &str = "smart_guard_cache_hits_total";
    pub(super) const CACHE_MISSES: &str = "smart_guard_cache_misses_total";
    pub(super) const INACTIVE_HITS: &str = "smart_guard_inactive_cache_hits_total";
    pub(super) const COALESCED: &str = "smart_guard_coalesced_waits_total";
    pub(super) const AS_CALLS: &str = "smart_guard_introspection_calls_total";
    pub(super) const AS_ERRORS: &str = "smart_guard_introspection_errors_total";
    pub(super) const AS_LATENCY: &str = "smart_guard_introspection_duration_seconds";
    pub(super) const DECISIONS: &str = "smart_guard_decisions_total";
    pub(super) const BREAKER_REJECTIONS: &str = "smart_guard_breaker_open_rejections_total";
    pub(super) const BREAKER_OPENINGS: &str = "smart_guard_breaker_openings_total";
    pub(super) const IN_FLIGHT_REJECTIONS: &str = "smart_guard_in_flight_rejections_total";
    pub(super) const DEADLINE_REJECTIONS: &str = "smart_guard_deadline_rejections_total";
    pub(super) const STALE_SERVED: &str = "smart_guard_stale_served_total";
    pub(super) const BREAKER_STATE: &str = "smart_guard_breaker_state";
    pub(super) const IN_FLIGHT: &str = "smart_guard_introspection_in_flight";
}

/// One introspection call out: the in-flight gauge goes down again when it is dropped.
#[derive(Debug)]
pub(crate) struct CallOut(());

impl Drop for CallOut {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!(names::IN_FLIGHT).decrement(1.0);
    }
}

impl Stats {
    #[inline]
    pub(crate) fn cache_hit(&self) {
        self.cache_hits.add(1);
        #[cfg(feature = "metrics")]
        self.handles.cache_hits.increment(1);
    }

    pub(crate) fn cache_miss(&self) {
        self.cache_misses.add(1);
        #[cfg(feature = "metrics")]
        metrics::counter!(names::CACHE_MISSES).increment(1);
    }

    pub(crate) fn inactive_hit(&self) {
        self.inactive_hits.add(1);
        #[cfg(feature = "metrics")]
        metrics::counter!(names::INACTIVE_HITS).increment(1);
    }

    pub(crate) fn coalesced_wait(&self) {
        self.coalesced_waits.add(1);
        #[cfg(feature = "metrics")]
        metrics::counter!(names::COALESCED).increment(1);
    }

    /// One introspection call finished (successfully or not) after `elapsed`.
    pub(crate) fn as_call(&self, elapsed: Duration, error: Option<IntrospectErrorKind>) {
        self.as_calls.add(1);
        self.as_latency_micros
            .add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        if let Some(kind) = error {
            self.as_errors[error_index(kind)].add(1);
        }
        #[cfg(feature = "metrics")]
        {
            metrics::counter!(names::AS_CALLS).increment(1);
            metrics::histogram!(names::AS_LATENCY).record(elapsed.as_secs_f64());
            if let Some(kind) = error {
                metrics::counter!(names::AS_ERRORS, "kind" => kind.as_str()).increment(1);
            }
        }
    }

    /// The guard's decision on one request: allowed, public, or denied with `failure`.
    #[inline]
    pub(crate) fn decision(&self, outcome: Result<bool, AuthFailure>) {
        match outcome {
            Ok(true) => self.public.add(1),
            Ok(false) => self.allowed.add(1),
            Err(kind) => self.denied[failure_index(kind)].add(1),
        }
        #[cfg(feature = "metrics")]
        match outcome {
            Ok(true) => self.handles.public.increment(1),
            Ok(false) => self.handles.allowed.increment(1),
            Err(kind) => self.handles.denied[failure_index(kind)].increment(1),
        }
    }

    /// An uncached token was refused without calling the AS: the circuit breaker is open.
    pub(crate) fn breaker_open_rejection(&self) {
        self.breaker_open_rejections.add(1);
        #[cfg(feature = "metrics")]
        metrics::counter!(names::BREAKER_REJECTIONS).increment(1);
    }

    /// The circuit breaker opened (after consecutive outages, or a failed probe).
    pub(crate) fn breaker_opened(&self) {
        self.breaker_openings.add(1);
        #[cfg(feature = "metrics")]
        metrics::counter!(names::BREAKER_OPENINGS).increment(1);
    }

    /// An uncached token was refused without calling the AS: too many calls in flight.
    pub(crate) fn in_flight_rejection(&self) {
        self.in_flight_rejections.add(1);
        #[cfg(feature = "metrics")]
        metrics::counter!(names::IN_FLIGHT_REJECTIONS).increment(1);
    }

    /// A request stopped waiting for an introspection answer at its deadline.
    pub(crate) fn deadline_rejection(&self) {
        self.deadline_rejections.add(1);
        #[cfg(feature = "metrics")]
        metrics::counter!(names::DEADLINE_REJECTIONS).increment(1);
    }

    /// An introspection call starts; it ends when the returned value is dropped.
    #[must_use]
    pub(crate) fn call_out(&self) -> CallOut {
        #[cfg(feature = "metrics")]
        metrics::gauge!(names::IN_FLIGHT).increment(1.0);
        CallOut(())
    }

    /// The breaker's state after a call or a refusal: 0 closed, 1 open, 2 probing.
    pub(crate) fn breaker_state(&self, state: BreakerState) {
        #[cfg(feature = "metrics")]
        metrics::gauge!(names::BREAKER_STATE).set(match state {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::Probing => 2.0,
        });
        #[cfg(not(feature = "metrics"))]
        let _ = state;
    }

    /// A stale active answer was served during an AS outage (stale-if-error).
    pub(crate) fn stale_served(&self) {
        self.stale_served.add(1);
        #[cfg(feature = "metrics")]
        metrics::counter!(names::STALE_SERVED).increment(1);
    }

    /// An event at the shared cache (fleet mode).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn fleet(&self, event: FleetEvent) {
        self.fleet[event as usize].add(1);
        #[cfg(feature = "metrics")]
        metrics::counter!(event.metric()).increment(1);
    }

    pub(crate) fn snapshot(&self) -> GuardStats {
        let fleet = |event: FleetEvent| self.fleet[event as usize].get();
        GuardStats {
            cache_hits: self.cache_hits.get(),
            cache_misses: self.cache_misses.get(),
            inactive_hits: self.inactive_hits.get(),
            coalesced_waits: self.coalesced_waits.get(),
            introspection_calls: self.as_calls.get(),
            introspection_time: Duration::from_micros(self.as_latency_micros.get()),
            introspection_errors: ERROR_KINDS
                .iter()
                .zip(&self.as_errors)
                .map(|(kind, c)| (*kind, c.get()))
                .filter(|(_, n)| *n > 0)
                .collect(),
            allowed: self.allowed.get(),
            public: self.public.get(),
            denied: FAILURES
                .iter()
                .zip(&self.denied)
                .map(|(kind, c)| (*kind, c.get()))
                .filter(|(_, n)| *n > 0)
                .collect(),
            breaker_open_rejections: self.breaker_open_rejections.get(),
            breaker_openings: self.breaker_openings.get(),
            in_flight_rejections: self.in_flight_rejections.get(),
            deadline_rejections: self.deadline_rejections.get(),
            stale_served: self.stale_served.get(),
            shared_hits: fleet(FleetEvent::SharedHit),
            shared_misses: fleet(FleetEvent::SharedMiss),
            shared_errors: fleet(FleetEvent::SharedError),
            shared_tampered: fleet(FleetEvent::Tampered),
            shared_lock_waits: fleet(FleetEvent::LockWait),
            revocations_sent: fleet(FleetEvent::RevocationSent),
            revocations_received: fleet(FleetEvent::RevocationReceived),
        }
    }
}

/// A snapshot of a guard's counters since it was built (all clones of one layer share them).
///
/// ```
/// # fn f(layer: &smart_guard::SmartGuardLayer) {
/// let stats = layer.stats();
/// println!("{} hits, {} AS calls", stats.cache_hits, stats.introspection_calls);
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuardStats {
    /// Requests whose token was found in the active or inactive cache.
    pub cache_hits: u64,
    /// Requests that made an introspection call.
    pub cache_misses: u64,
    /// Of the hits, those that found a cached inactive answer.
    pub inactive_hits: u64,
    /// Requests that waited for another request's concurrent introspection call.
    pub coalesced_waits: u64,
    /// Introspection calls made, successful or not.
    pub introspection_calls: u64,
    /// Time spent in introspection calls, summed.
    pub introspection_time: Duration,
    /// Failed introspection calls, by kind (kinds with no failure are left out).
    pub introspection_errors: Vec<(IntrospectErrorKind, u64)>,
    /// Requests allowed to the inner service after authorization.
    pub allowed: u64,
    /// Requests to public endpoints, passed without a token.
    pub public: u64,
    /// Requests denied, by reason (reasons with no denial are left out).
    pub denied: Vec<(AuthFailure, u64)>,
    /// Requests refused with 503 without an AS call because the circuit breaker was open.
    pub breaker_open_rejections: u64,
    /// Times the circuit breaker opened.
    pub breaker_openings: u64,
    /// Requests refused with 503 without an AS call because `SMART_GUARD_MAX_IN_FLIGHT` calls
    /// were already out.
    pub in_flight_rejections: u64,
    /// Requests that stopped waiting for an introspection answer at `SMART_GUARD_REQUEST_DEADLINE_MS`.
    pub deadline_rejections: u64,
    /// Requests allowed on a stale active answer during an AS outage (`SMART_GUARD_STALE_IF_ERROR_SECS`).
    pub stale_served: u64,
    /// Fleet mode: first-level misses answered by the shared cache.
    pub shared_hits: u64,
    /// Fleet mode: first-level misses the shared cache had no entry for.
    pub shared_misses: u64,
    /// Fleet mode: Redis commands that failed or timed out, or were skipped by Redis's open
    /// breaker (each fell back to the AS path).
    pub shared_errors: u64,
    /// Fleet mode: shared values that did not open (changed, or sealed under another fleet
    /// key), taken as misses.
    pub shared_tampered: u64,
    /// Fleet mode: waits for another replica's introspection call (the fleet lock).
    pub shared_lock_waits: u64,
    /// Fleet mode: revocations this replica sent to the fleet.
    pub revocations_sent: u64,
    /// Fleet mode: revocations this replica received from the fleet.
    pub revocations_received: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_counters_add_up_across_threads() {
        let stats = std::sync::Arc::new(Stats::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let stats = std::sync::Arc::clone(&stats);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        stats.cache_hit();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(stats.snapshot().cache_hits, 4000);
    }

    #[test]
    fn the_snapshot_lists_only_seen_error_kinds_and_denials() {
        let stats = Stats::default();
        stats.as_call(Duration::from_millis(3), Some(IntrospectErrorKind::Timeout));
        stats.as_call(Duration::from_millis(2), None);
        stats.decision(Err(AuthFailure::InvalidToken));
        stats.decision(Ok(false));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.introspection_calls, 2);
        assert_eq!(snapshot.introspection_time, Duration::from_millis(5));
        assert_eq!(
            snapshot.introspection_errors,
            [(IntrospectErrorKind::Timeout, 1)]
        );
        assert_eq!(snapshot.denied, [(AuthFailure::InvalidToken, 1)]);
        assert_eq!(snapshot.allowed, 1);
    }
}

//! Whether a guard can authenticate new tokens now: for a readiness endpoint beside the FHIR
//! routes.

use std::time::Duration;

/// The state of the guard's circuit breaker in front of the introspection endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go to the AS.
    Closed,
    /// After consecutive outages: uncached tokens get 503 without an AS call until the
    /// cool-down ends.
    Open,
    /// The cool-down is over and one probe call decides whether the AS is back.
    Probing,
}

impl BreakerState {
    /// `closed`, `open` or `probing`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::Probing => "probing",
        }
    }
}

/// A snapshot of what a guard knows about its authorization server, from
/// [`SmartGuardLayer::readiness`](crate::SmartGuardLayer::readiness). Taking it does no I/O.
///
/// ```
/// # fn f(layer: &smart_guard::SmartGuardLayer) {
/// let readiness = layer.readiness();
/// let status = if readiness.is_ready() { 200 } else { 503 };
/// # let _ = status;
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Readiness {
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// How long ago the AS last answered an introspection call (any answer, even an inactive
    /// token or a refusal of our credentials: it is reachable); `None` before the first answer.
    pub since_last_answer: Option<Duration>,
    /// Introspection calls out now.
    pub in_flight: usize,
}

impl Readiness {
    /// Ready unless the breaker refuses calls: a guard that has made no call yet is ready
    /// (nothing says the AS is out), and cached tokens work whatever this says.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.breaker == BreakerState::Closed
    }
}

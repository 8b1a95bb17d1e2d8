//! Log lines that survive an outage: at most one per interval, with a count of what the lines
//! in between would have said.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::time::unix_now;

/// Lets a log line through at most once per interval (so an outage or a misconfiguration logs
/// once per interval, not once per request).
#[derive(Debug)]
pub(crate) struct LogEvery {
    interval_secs: u64,
    /// Unix seconds of the last line + 1 (0: never logged).
    last: AtomicU64,
}

impl LogEvery {
    pub(crate) const fn new(interval: Duration) -> Self {
        Self {
            interval_secs: interval.as_secs(),
            last: AtomicU64::new(0),
        }
    }

    /// Whether a line is due now; if so, the next one is due an interval later.
    pub(crate) fn due(&self) -> bool {
        let now = unix_now().saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= self.interval_secs)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Counts events and lets a summary line through at most once per interval.
#[derive(Debug)]
pub(crate) struct Tally {
    every: LogEvery,
    since_last_line: AtomicU64,
}

impl Tally {
    pub(crate) const fn new(interval: Duration) -> Self {
        Self {
            every: LogEvery::new(interval),
            since_last_line: AtomicU64::new(0),
        }
    }

    /// Counts one event. `Some(n)` when a line is due: `n` events since the last line, this one
    /// included (the first event of a burst is logged at once, with `n` = 1).
    pub(crate) fn count(&self) -> Option<u64> {
        self.since_last_line.fetch_add(1, Ordering::Relaxed);
        self.every
            .due()
            .then(|| self.since_last_line.swap(0, Ordering::Relaxed))
    }
}

/// The interval of outage summaries: the 503 answers, failed introspection calls, stale
/// answers and refused calls.
pub(crate) const OUTAGE_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limited_line_is_due_once_per_interval() {
        let every = LogEvery::new(Duration::from_secs(60));
        assert!(every.due(), "the first line is logged");
        assert!(!every.due(), "the next one within the interval is not");
        let every = LogEvery::new(Duration::ZERO);
        assert!(every.due() && every.due());
    }

    #[test]
    fn a_tally_logs_the_first_event_then_counts_the_rest_until_the_next_line() {
        let tally = Tally::new(Duration::from_secs(60));
        assert_eq!(tally.count(), Some(1));
        for _ in 0..9_999 {
            assert_eq!(tally.count(), None);
        }
        assert_eq!(tally.since_last_line.load(Ordering::Relaxed), 9_999);
        let every_time = Tally::new(Duration::ZERO);
        assert_eq!(every_time.count(), Some(1));
        assert_eq!(every_time.count(), Some(1));
    }
}

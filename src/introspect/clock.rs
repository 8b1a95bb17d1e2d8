//! The cache-hit path's clock: the kernel's coarse wall clock moved forward by its largest lag,
//! so that it is not behind the time, for the price of a memory read.
//!
//! `SystemTime::now()` reads the TSC through the vDSO: ~90 instructions and ~48 ns on a VM, on
//! every hit. `CLOCK_REALTIME_COARSE` is the time of the kernel's last timekeeping tick, read
//! from the vDSO's data page with no TSC read. It lags the true time by less than a tick (its
//! `clock_getres`), or by up to five when a VM's timekeeping vCPU is preempted (Linux lets
//! another CPU take over after five stalled ticks). Adding five ticks and a millisecond gives a
//! time that is not earlier than the true one, so the hit path's "has it expired?" tests are
//! conservative: near its end (21 ms at `HZ=250`) an entry counts as expired early. That only
//! sends the request down the slow path, which decides with the precise clock; no decision is
//! ever made on the coarse clock alone. Where the coarse clock is missing or its tick is over
//! 10 ms, the precise clock is used. Should a stalled kernel ever lag by more than that, an entry
//! would be served from the front cache for the excess, milliseconds, against `exp` in whole
//! seconds and the configured clock-skew leeway (5 s by default).

use std::time::{SystemTime, UNIX_EPOCH};

/// Above this tick the coarse clock is not worth its slack: use the precise clock.
const MAX_TICK_NS: i64 = 10_000_000;

/// How many ticks the coarse clock may lag: Linux's `MAX_STALLED_JIFFIES`, after which another
/// CPU takes over a stalled timekeeper.
const MAX_LAG_TICKS: u64 = 5;

/// A clock for deadline tests: unix milliseconds, never earlier than the true time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeadlineClock {
    /// Milliseconds added to the coarse clock (five ticks and one), or `None` for the precise
    /// clock.
    slack_ms: Option<u64>,
}

impl DeadlineClock {
    /// The coarse clock where the platform has one with a tick of at most 10 ms.
    pub(crate) fn new() -> Self {
        Self {
            slack_ms: coarse_tick_ns().map(|tick| (MAX_LAG_TICKS * tick).div_ceil(1_000_000) + 1),
        }
    }

    /// A coarse clock with the given slack (for tests of what an early "expired" does).
    #[cfg(test)]
    pub(crate) fn ahead_by_ms(slack_ms: u64) -> Self {
        Self {
            slack_ms: Some(slack_ms),
        }
    }

    /// Unix milliseconds, not earlier than the true time, and at most the slack past it.
    #[inline]
    pub(crate) fn now_ms(self) -> u64 {
        match self.slack_ms {
            Some(slack) => coarse_unix_ms().saturating_add(slack),
            None => unix_now_ms(),
        }
    }
}

/// Seconds since the Unix epoch, precise (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the Unix epoch, precise (0 if the clock is before it).
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(target_os = "linux")]
#[allow(
    clippy::useless_conversion,
    reason = "time_t and c_long are i32 on some 32-bit targets"
)]
fn coarse_tick_ns() -> Option<u64> {
    use nix::time::{ClockId, clock_getres};
    let res = clock_getres(ClockId::CLOCK_REALTIME_COARSE).ok()?;
    let tick = i64::from(res.tv_sec())
        .checked_mul(1_000_000_000)?
        .checked_add(i64::from(res.tv_nsec()))?;
    (1..=MAX_TICK_NS)
        .contains(&tick)
        .then(|| u64::try_from(tick).ok())
        .flatten()
}

#[cfg(not(target_os = "linux"))]
fn coarse_tick_ns() -> Option<u64> {
    None
}

#[cfg(target_os = "linux")]
#[inline]
fn coarse_unix_ms() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    let Ok(now) = clock_gettime(ClockId::CLOCK_REALTIME_COARSE) else {
        return unix_now_ms();
    };
    let secs = u64::try_from(now.tv_sec()).unwrap_or(0);
    let millis = u64::try_from(now.tv_nsec()).unwrap_or(0) / 1_000_000;
    secs.saturating_mul(1000).saturating_add(millis)
}

#[cfg(not(target_os = "linux"))]
fn coarse_unix_ms() -> u64 {
    unix_now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_clock_is_never_behind_the_precise_clock() {
        let clock = DeadlineClock::new();
        for _ in 0..10_000 {
            let before = unix_now_ms();
            let deadline_now = clock.now_ms();
            assert!(
                deadline_now >= before,
                "{deadline_now} ms is behind {before} ms"
            );
        }
    }

    #[test]
    fn the_deadline_clock_is_ahead_by_at_most_its_slack() {
        let clock = DeadlineClock::new();
        let slack = clock.slack_ms.unwrap_or(0);
        assert!(slack <= 51, "five ticks of at most 10 ms, and one");
        for _ in 0..10_000 {
            let deadline_now = clock.now_ms();
            let after = unix_now_ms();
            assert!(
                deadline_now <= after + slack + 1,
                "{deadline_now} ms is more than {slack} ms past {after} ms"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_has_a_coarse_clock_with_a_short_tick() {
        assert!(DeadlineClock::new().slack_ms.is_some());
    }
}

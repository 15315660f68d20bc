//! Wall-clock time, injected.
//!
//! Every wall-clock decision (token `exp`/`nbf`, proof skew, nonce windows, cache ages) reads a
//! [`Clock`], so the conformance runner can follow a vector's `atMs` and tests can pin a date.
//! Timers (deadlines, refresh loops) use `tokio::time` instead, which paused-time tests drive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;

    fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place the machine's wall clock is read (clippy.toml bans it elsewhere).
    #[allow(clippy::disallowed_methods)]
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn at(ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(ms)))
    }

    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// At most one event per interval on a clock: the log line of an outage, not one per request.
#[derive(Debug, Default)]
pub(crate) struct Every {
    last_ms: AtomicU64,
    skipped: AtomicU64,
}

/// How often a warning that every request could raise is logged.
pub(crate) const WARN_EVERY_MS: u64 = 10_000;

impl Every {
    pub(crate) const fn new() -> Self {
        Every {
            last_ms: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(events skipped since the last one)` when one is due at `now_ms`; `None` (and one
    /// more skipped) otherwise.
    pub(crate) fn due(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let now = now_ms.max(1);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY_MS;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::Relaxed));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18, finding 11: a warning every request could raise is logged at most once per
    /// 10 s, with the number it stood for.
    #[test]
    fn an_outage_logs_once_per_interval_with_the_count_it_stood_for() {
        let every = Every::new();
        let t0 = 1_767_225_600_000;
        assert_eq!(every.due(t0), Some(0));
        let quiet: Vec<_> = (1..=999).map(|i| every.due(t0 + i * 5)).collect();
        assert!(quiet.iter().all(Option::is_none));
        assert_eq!(every.due(t0 + WARN_EVERY_MS - 1), None);
        assert_eq!(every.due(t0 + WARN_EVERY_MS), Some(1_000));
        assert_eq!(every.due(t0 + WARN_EVERY_MS + 1), None);
    }
}

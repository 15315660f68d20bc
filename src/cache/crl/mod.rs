//! The certificate revocation list, cached with the reference's timing.
//!
//! `age = now - last success`. The list is *stale* when nothing was ever loaded or
//! `age > max_age`; a refresh is *due* when stale or `age >= refresh_interval`. Refreshing happens
//! in the background, never on a request (`docs/deviations.md` item 2): `CrlCache::run_refresher`
//! refreshes when due, with jitter, and retries every few seconds while stale. A failed refresh
//! only logs. While stale, `fail-closed` answers 503 and `fail-open` keeps the last good list (or
//! nothing). A 404 `CRL_NOT_FOUND` is a valid empty list (item 3), and a list issued before the
//! one held is ignored (no rollback).
//!
//! While pushed revocation events are flowing (`CrlCache::set_push_healthy`), the poll interval
//! is lengthened to `push_refresh_interval`, capped at 80 % of `max_age` so that waiting never
//! makes the list stale.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

mod refresh;

use crate::cache::keys::KeyCache;
use crate::clock::Clock;
use crate::protocol::crl::{crl_token_from_body, verify_crl_index};
use crate::protocol::jws::{Expectations, TokenError};
use crate::protocol::keys::KeySet;
use crate::registry::Registry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleBehavior {
    FailOpen,
    FailClosed,
}

impl StaleBehavior {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StaleBehavior::FailOpen => "fail-open",
            StaleBehavior::FailClosed => "fail-closed",
        }
    }
}

/// What the CRL says of one AIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub revoked: bool,
    /// The list is older than `crl.max_age`.
    pub stale: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct CrlTiming {
    pub(crate) refresh_interval_ms: u64,
    pub(crate) max_age_ms: u64,
    pub stale_behavior: StaleBehavior,
    /// The interval while push revocation is healthy.
    pub(crate) push_refresh_interval_ms: u64,
}

/// While the list is stale, refreshes are retried this often.
const STALE_RETRY_MS: u64 = 5_000;

pub struct CrlCache {
    registry: Arc<dyn Registry>,
    clock: Arc<dyn Clock>,
    issuer: String,
    timing: CrlTiming,
    /// The held list and its timing: a snapshot every check reads without a lock, replaced whole
    /// by the refresher (one at a time, under `refreshing`).
    state: ArcSwap<State>,
    /// One refresh at a time; checks that find one running use the list they have.
    refreshing: tokio::sync::Mutex<()>,
    push_healthy: AtomicBool,
    /// Wakes the refresher when push health changes, so the interval follows at once.
    push_changed: Arc<tokio::sync::Notify>,
    /// Set once the first refresh has ended, whatever its result: until then a replica does not
    /// report itself ready, so it never serves before it has tried to learn the revocations.
    attempted: tokio::sync::watch::Sender<bool>,
    stale_checks: AtomicU64,
    last_stale_warning_ms: AtomicU64,
    refreshes_ok: AtomicU64,
    refresh_failures: AtomicU64,
    /// The reason of the latest refresh, when it failed (cleared by a success); kept apart from
    /// the snapshot every check reads.
    last_failure: Mutex<Option<String>>,
}

/// What readiness reports about the list (`/readyz`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrlStatus {
    /// `fresh`, `stale` (older than `crl.max_age_secs`) or `never-loaded`.
    pub state: &'static str,
    /// What checks do while it is stale.
    pub stale_behavior: &'static str,
    pub age_secs: Option<u64>,
    pub revocations: usize,
    pub refreshes_ok: u64,
    pub refresh_failures: u64,
    /// Why the latest refresh failed, when it did.
    pub last_failure: Option<String>,
}

#[derive(Default, Clone)]
struct State {
    revoked: Arc<HashSet<String>>,
    issued_at: Option<u64>,
    last_success_ms: Option<u64>,
    last_attempt_ms: Option<u64>,
}

impl CrlCache {
    pub(crate) fn new(
        registry: Arc<dyn Registry>,
        clock: Arc<dyn Clock>,
        issuer: String,
        timing: CrlTiming,
    ) -> Self {
        CrlCache {
            registry,
            clock,
            issuer,
            timing,
            state: ArcSwap::from_pointee(State::default()),
            refreshing: tokio::sync::Mutex::new(()),
            push_healthy: AtomicBool::new(false),
            push_changed: Arc::new(tokio::sync::Notify::new()),
            attempted: tokio::sync::watch::Sender::new(false),
            stale_checks: AtomicU64::new(0),
            last_stale_warning_ms: AtomicU64::new(0),
            refreshes_ok: AtomicU64::new(0),
            refresh_failures: AtomicU64::new(0),
            last_failure: Mutex::new(None),
        }
    }

    /// `true` once a first refresh has ended (loaded, or failed and left to the stale policy).
    pub fn attempted(&self) -> tokio::sync::watch::Receiver<bool> {
        self.attempted.subscribe()
    }

    /// Refreshes that succeeded and that failed (transport, status, size, payload, signature or
    /// schema, or a rollback to an older list).
    pub fn refresh_counts(&self) -> (u64, u64) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (load(&self.refreshes_ok), load(&self.refresh_failures))
    }

    /// The list's state for readiness: fresh or stale, its policy, and the latest failure.
    pub fn status(&self) -> CrlStatus {
        let state = self.state.load();
        let now = self.clock.now_ms();
        let (refreshes_ok, refresh_failures) = self.refresh_counts();
        CrlStatus {
            state: match state.last_success_ms {
                None => "never-loaded",
                Some(_) if self.is_stale(&state, now) => "stale",
                Some(_) => "fresh",
            },
            stale_behavior: self.timing.stale_behavior.as_str(),
            age_secs: state.last_success_ms.map(|t| now.saturating_sub(t) / 1000),
            revocations: state.revoked.len(),
            refreshes_ok,
            refresh_failures,
            last_failure: self.failure().clone(),
        }
    }

    /// Checks answered while the list was stale (denied under `fail-closed`, allowed on the
    /// last good list under `fail-open`).
    pub fn stale_checks(&self) -> u64 {
        self.stale_checks.load(Ordering::Relaxed)
    }

    /// A warning when checks start meeting a stale list, and once a minute while they do.
    fn warn_stale(&self, state: &State, now: u64) {
        let last = self.last_stale_warning_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 60_000 {
            return;
        }
        self.last_stale_warning_ms.store(now, Ordering::Relaxed);
        let behavior = match self.timing.stale_behavior {
            StaleBehavior::FailOpen => "fail-open: allowing on the last good list",
            StaleBehavior::FailClosed => "fail-closed: denying 503",
        };
        tracing::warn!(
            age_secs = state.last_success_ms.map(|t| now.saturating_sub(t) / 1000),
            behavior,
            "CRL is older than crl.max_age_secs"
        );
    }

    /// Age of the held list (since the last successful refresh), if any.
    /// How long the held list has been past `crl.max_age` (0 while fresh; `None` before any
    /// load).
    pub(crate) fn stale_for_ms(&self, now_ms: u64) -> Option<u64> {
        self.age_ms(now_ms)
            .map(|age| age.saturating_sub(self.timing.max_age_ms))
    }

    pub(crate) fn age_ms(&self, now_ms: u64) -> Option<u64> {
        self.state
            .load()
            .last_success_ms
            .map(|t| now_ms.saturating_sub(t))
    }

    /// Pushed revocation events are (or stopped) flowing: the poll interval follows.
    pub(crate) fn set_push_healthy(&self, healthy: bool) {
        if self.push_healthy.swap(healthy, Ordering::Relaxed) != healthy {
            tracing::info!(
                healthy,
                interval_secs = self.interval_ms() / 1000,
                "push revocation health changed; CRL poll interval follows"
            );
            self.push_changed.notify_one();
        }
    }

    pub fn push_healthy(&self) -> bool {
        self.push_healthy.load(Ordering::Relaxed)
    }

    /// The poll interval now.
    pub fn interval_ms(&self) -> u64 {
        let base = self.timing.refresh_interval_ms;
        if !self.push_healthy.load(Ordering::Relaxed) {
            return base;
        }
        let cap = self.timing.max_age_ms / 10 * 8;
        self.timing.push_refresh_interval_ms.min(cap).max(base)
    }

    /// What the list says of the AIT `jti`, and whether the list is stale. Never waits for the
    /// registry; what a stale list means is the caller's policy (`CrlCache::stale_behavior`).
    pub fn check(&self, jti: &str) -> Listed {
        let state = self.state.load();
        let now = self.clock.now_ms();
        let stale = self.is_stale(&state, now);
        if stale {
            self.stale_checks.fetch_add(1, Ordering::Relaxed);
            self.warn_stale(&state, now);
        }
        Listed {
            revoked: state.revoked.contains(jti),
            stale,
        }
    }

    /// The configured meaning of a stale list (`crl.stale_behavior`).
    pub(crate) fn stale_behavior(&self) -> StaleBehavior {
        self.timing.stale_behavior
    }

    fn is_stale(&self, state: &State, now: u64) -> bool {
        state
            .last_success_ms
            .is_none_or(|t| now.saturating_sub(t) > self.timing.max_age_ms)
    }

    fn failure(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the snapshot with a changed copy (only the refresher writes, one at a time).
    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut next = State::clone(&self.state.load());
        change(&mut next);
        self.state.store(Arc::new(next));
    }
}

/// Runs `work` on the blocking pool.
#[cfg(test)]
mod tests;

//! Trust answers, cached in front of any [`TrustStore`] (`docs/deviations.md` item 6).
//!
//! Known-agent answers are reused for `ttl` (a pairing change takes up to that long to apply;
//! 0 turns the reuse off).
//! Revocation answers are never reused while the store answers: a pushed revocation must take
//! effect at once. When the store fails, the last answer for the agent, up to `stale_if_error`
//! old, is used instead and a warning is logged; with no such answer the caller gets the error
//! (and the pipeline denies 403). Ages come from the injected clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::StoreError;
use super::trust::TrustStore;
use crate::clock::Clock;

#[derive(Debug, Clone, Copy)]
pub struct TrustTiming {
    pub ttl_ms: u64,
    pub stale_if_error_ms: u64,
}

/// Per map; past it, old answers are swept and new ones may go unremembered.
const CAPACITY: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    answer: bool,
    at_ms: u64,
}

pub struct TrustCache {
    store: Arc<dyn TrustStore>,
    clock: Arc<dyn Clock>,
    timing: TrustTiming,
    known: Mutex<HashMap<String, Entry>>,
    revoked: Mutex<HashMap<String, Entry>>,
    stale_used: AtomicU64,
    /// Known-agent lookups (revocation lookups always ask the store).
    pub counts: crate::metrics::CacheCounts,
}

impl TrustCache {
    pub fn new(store: Arc<dyn TrustStore>, clock: Arc<dyn Clock>, timing: TrustTiming) -> Self {
        TrustCache {
            store,
            clock,
            timing,
            known: Mutex::new(HashMap::new()),
            revoked: Mutex::new(HashMap::new()),
            stale_used: AtomicU64::new(0),
            counts: Default::default(),
        }
    }

    /// How many answers were taken from the cache because the store failed.
    pub fn stale_used(&self) -> u64 {
        self.stale_used.load(Ordering::Relaxed)
    }

    pub async fn is_known(&self, agent_did: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        if let Some(e) = lock(&self.known).get(agent_did)
            && now.saturating_sub(e.at_ms) < self.timing.ttl_ms
        {
            self.counts.hit();
            return Ok(e.answer);
        }
        let outcome = self.store.is_known(agent_did).await;
        let failed = outcome.is_err();
        let answer = self.settle(&self.known, agent_did, outcome, "known-agent");
        // Stale only when the fallback answered; a failure with nothing cached is a miss.
        match (failed, &answer) {
            (true, Ok(_)) => self.counts.stale(),
            _ => self.counts.miss(),
        }
        answer
    }

    pub async fn is_revoked(&self, agent_did: &str, now_ms: u64) -> Result<bool, StoreError> {
        let outcome = self.store.is_revoked(agent_did, now_ms).await;
        self.settle(&self.revoked, agent_did, outcome, "revocation")
    }

    /// Remembers a store answer, or falls back to the remembered one when the store failed.
    fn settle(
        &self,
        map: &Mutex<HashMap<String, Entry>>,
        agent_did: &str,
        outcome: Result<bool, StoreError>,
        lookup: &'static str,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let error = match outcome {
            Ok(answer) => {
                remember(map, agent_did, answer, now, self.timing);
                return Ok(answer);
            }
            Err(error) => error,
        };
        let cached = lock(map).get(agent_did).copied();
        match cached {
            Some(e) if now.saturating_sub(e.at_ms) <= self.timing.stale_if_error_ms => {
                self.stale_used.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    %error,
                    lookup,
                    agent_did,
                    age_secs = now.saturating_sub(e.at_ms) / 1000,
                    "trust store failed; using the cached answer"
                );
                Ok(e.answer)
            }
            _ => {
                tracing::error!(%error, lookup, agent_did, "trust store failed; no cached answer");
                Err(error)
            }
        }
    }
}

fn remember(
    map: &Mutex<HashMap<String, Entry>>,
    agent_did: &str,
    answer: bool,
    now: u64,
    timing: TrustTiming,
) {
    let mut entries = lock(map);
    if let Some(e) = entries.get_mut(agent_did) {
        *e = Entry { answer, at_ms: now };
        return;
    }
    if entries.len() >= CAPACITY {
        let keep = timing.stale_if_error_ms.max(timing.ttl_ms);
        entries.retain(|_, e| now.saturating_sub(e.at_ms) <= keep);
        if entries.len() >= CAPACITY {
            return;
        }
    }
    entries.insert(agent_did.to_owned(), Entry { answer, at_ms: now });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::*;
    use crate::clock::ManualClock;
    use crate::registry::BoxFuture;

    /// Knows and revokes whatever it is told; fails on demand; counts lookups.
    #[derive(Default)]
    struct Scripted {
        known: AtomicBool,
        revoked: AtomicBool,
        failing: AtomicBool,
        lookups: AtomicUsize,
    }

    impl Scripted {
        fn answer(&self, v: &AtomicBool) -> BoxFuture<'_, Result<bool, StoreError>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let out = match self.failing.load(Ordering::SeqCst) {
                true => Err(StoreError("connection reset".into())),
                false => Ok(v.load(Ordering::SeqCst)),
            };
            Box::pin(std::future::ready(out))
        }
    }

    impl TrustStore for Scripted {
        fn is_revoked<'a>(&'a self, _: &'a str, _: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
            self.answer(&self.revoked)
        }

        fn is_known<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
            self.answer(&self.known)
        }
    }

    fn cache() -> (TrustCache, Arc<Scripted>, ManualClock) {
        let store = Arc::new(Scripted::default());
        let clock = ManualClock::at(1_000_000);
        let timing = TrustTiming {
            ttl_ms: 120_000,
            stale_if_error_ms: 3_600_000,
        };
        let cache = TrustCache::new(store.clone(), Arc::new(clock.clone()), timing);
        (cache, store, clock)
    }

    #[tokio::test]
    async fn known_answers_are_reused_for_the_ttl() {
        let (c, store, clock) = cache();
        store.known.store(true, Ordering::SeqCst);
        assert_eq!(c.is_known("a").await, Ok(true));
        store.known.store(false, Ordering::SeqCst);
        clock.advance_ms(119_999);
        assert_eq!(c.is_known("a").await, Ok(true));
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
        clock.advance_ms(1);
        assert_eq!(c.is_known("a").await, Ok(false));
        assert_eq!(store.lookups.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn revocations_are_always_asked_while_the_store_answers() {
        let (c, store, _) = cache();
        assert_eq!(c.is_revoked("a", 0).await, Ok(false));
        store.revoked.store(true, Ordering::SeqCst);
        assert_eq!(c.is_revoked("a", 0).await, Ok(true));
        assert_eq!(store.lookups.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failing_store_falls_back_to_the_last_answer_within_the_window() {
        let (c, store, clock) = cache();
        store.known.store(true, Ordering::SeqCst);
        assert_eq!(c.is_known("a").await, Ok(true));
        assert_eq!(c.is_revoked("a", 0).await, Ok(false));
        store.failing.store(true, Ordering::SeqCst);
        clock.advance_ms(3_600_000);
        assert_eq!(c.is_known("a").await, Ok(true));
        assert_eq!(c.is_revoked("a", 0).await, Ok(false));
        assert_eq!(c.stale_used(), 2);
        assert!(c.is_known("b").await.is_err(), "never answered for b");
        // Known lookups: a miss (store asked), a stale answer, a miss with nothing to fall back on.
        assert_eq!(c.counts.get(), [0, 1, 2]);
        clock.advance_ms(1);
        assert!(c.is_known("a").await.is_err(), "past stale_if_error");
        assert!(c.is_revoked("a", 0).await.is_err());
    }
}

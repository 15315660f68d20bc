//! Trust answers, cached in front of a [`TrustStore`] that is asked over the network (Redis;
//! `docs/deviations.md` item 6), in bounded `moka` caches. A store holding its answers in memory
//! (the file) is read directly: its answers cost less than a cache lookup, apply as soon as the
//! file is reloaded, and cannot fail.
//!
//! Known-agent answers are reused for `ttl` (a pairing change takes up to that long to apply;
//! 0 turns the reuse off).
//! Revocation answers are never reused while the store answers: a pushed revocation must take
//! effect at once. When the store fails, the last answer for the agent, up to `stale_if_error`
//! old, is used instead and a warning is logged; with no such answer the caller gets the error
//! (and the pipeline denies 403). Ages come from the injected clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use moka::ops::compute::Op;

use crate::clock::{Clock, Every};
use crate::store::StoreError;
use crate::store::trust::TrustStore;

/// A revocation answer the store repeats is written to the fallback cache at most this often.
const FALLBACK_REFRESH_MS: u64 = 1_000;

#[derive(Debug, Clone, Copy)]
pub(crate) struct TrustTiming {
    pub(crate) ttl_ms: u64,
    pub(crate) stale_if_error_ms: u64,
    /// Answers kept per kind (agent DIDs are caller-chosen once their AIT verified).
    pub(crate) capacity: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    answer: bool,
    at_ms: u64,
}

pub struct TrustCache {
    store: Arc<dyn TrustStore>,
    clock: Arc<dyn Clock>,
    timing: TrustTiming,
    /// Known-agent answers: reused for the TTL, and the fallback when the store fails.
    known: moka::future::Cache<String, Entry>,
    /// Revocation answers: only ever the fallback when the store fails. An evicted one leaves
    /// no fallback, so the check is denied (never allowed) while the store is down.
    revoked: moka::sync::Cache<String, Entry>,
    stale_used: AtomicU64,
    /// The store-failure log lines, at most every 10 s.
    failure_log: Every,
    /// Known-agent lookups (revocation lookups always ask the store).
    pub counts: crate::metrics::CacheCounts,
}

impl TrustCache {
    pub(crate) fn new(
        store: Arc<dyn TrustStore>,
        clock: Arc<dyn Clock>,
        timing: TrustTiming,
    ) -> Self {
        let held = super::held_for(timing.stale_if_error_ms.max(timing.ttl_ms));
        TrustCache {
            store,
            clock,
            timing,
            known: moka::future::Cache::builder()
                .max_capacity(timing.capacity)
                .time_to_live(held)
                .build(),
            revoked: moka::sync::Cache::builder()
                .max_capacity(timing.capacity)
                .time_to_live(held)
                .build(),
            stale_used: AtomicU64::new(0),
            failure_log: Every::new(),
            counts: Default::default(),
        }
    }

    /// Applies every pending insert and eviction, so [`TrustCache::len`] is exact.
    pub async fn flush(&self) {
        self.known.run_pending_tasks().await;
        self.revoked.run_pending_tasks();
    }

    /// Answers held, known-agent and revocation (the known-agent cache's count may lag its
    /// latest inserts until [`TrustCache::flush`]).
    pub fn len(&self) -> usize {
        self.revoked.run_pending_tasks();
        let held = self.known.entry_count() + self.revoked.entry_count();
        usize::try_from(held).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many answers were taken from the cache because the store failed.
    pub fn stale_used(&self) -> u64 {
        self.stale_used.load(Ordering::Relaxed)
    }

    /// Whether the agent is known; one store lookup per agent at a time, the checks queued
    /// behind it taking its answer.
    pub(crate) async fn is_known(&self, agent_did: &str) -> Result<bool, StoreError> {
        if let Some(snapshot) = self.store.in_memory() {
            return Ok(snapshot.is_known(agent_did));
        }
        let fresh = |e: &Entry, now: u64| now.saturating_sub(e.at_ms) < self.timing.ttl_ms;
        if let Some(e) = self.known.get(agent_did).await
            && fresh(&e, self.clock.now_ms())
        {
            self.counts.hit();
            return Ok(e.answer);
        }
        let mut answer = Err(StoreError(String::new()));
        let out = &mut answer;
        let lookup = |held: Option<moka::Entry<String, Entry>>| async move {
            let held = held.map(|e| e.into_value());
            if let Some(e) = held.filter(|e| fresh(e, self.clock.now_ms())) {
                self.counts.hit();
                *out = Ok(e.answer);
                return Op::Nop;
            }
            let outcome = self.store.is_known(agent_did).await;
            let failed = outcome.is_err();
            let (op, settled) = self.settle(held, agent_did, outcome, "known-agent");
            // Stale only when the fallback answered; a failure with nothing cached is a miss.
            match (failed, &settled) {
                (true, Ok(_)) => self.counts.stale(),
                _ => self.counts.miss(),
            }
            *out = settled;
            op
        };
        let key = agent_did.to_owned();
        self.known.entry(key).and_compute_with(lookup).await;
        answer
    }

    pub(crate) async fn is_revoked(
        &self,
        agent_did: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        if let Some(snapshot) = self.store.in_memory() {
            return Ok(snapshot.is_revoked(agent_did, now_ms));
        }
        let outcome = self.store.is_revoked(agent_did, now_ms).await;
        let held = self.revoked.get(agent_did);
        let (op, answer) = self.settle(held, agent_did, outcome, "revocation");
        // Rewriting the same answer on every check is a cache write per check; once a second
        // keeps the fallback as good (its age counts against `stale_if_error`, in seconds).
        if let Op::Put(e) = op
            && held.is_none_or(|h| {
                h.answer != e.answer || e.at_ms.saturating_sub(h.at_ms) >= FALLBACK_REFRESH_MS
            })
        {
            self.revoked.insert(agent_did.to_owned(), e);
        }
        answer
    }

    /// The entry to keep for a store answer, or the fallback to `held` when the store failed.
    fn settle(
        &self,
        held: Option<Entry>,
        agent_did: &str,
        outcome: Result<bool, StoreError>,
        lookup: &'static str,
    ) -> (Op<Entry>, Result<bool, StoreError>) {
        let now = self.clock.now_ms();
        let error = match outcome {
            Ok(answer) => return (Op::Put(Entry { answer, at_ms: now }), Ok(answer)),
            Err(error) => error,
        };
        match held {
            Some(e) if now.saturating_sub(e.at_ms) <= self.timing.stale_if_error_ms => {
                self.stale_used.fetch_add(1, Ordering::Relaxed);
                if let Some(skipped) = self.failure_log.due(now) {
                    tracing::warn!(
                        %error,
                        lookup,
                        agent_did,
                        age_secs = now.saturating_sub(e.at_ms) / 1000,
                        skipped,
                        "trust store failed; using the cached answer"
                    );
                }
                (Op::Nop, Ok(e.answer))
            }
            _ => {
                if let Some(skipped) = self.failure_log.due(now) {
                    let message = "trust store failed; no cached answer";
                    tracing::error!(%error, lookup, agent_did, skipped, message);
                }
                (Op::Nop, Err(error))
            }
        }
    }
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
            capacity: 1_000,
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

    /// The file store is read directly: a reload applies at once (not after the known-agent
    /// TTL), and nothing is cached or counted as a cache lookup.
    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // file modification times are wall-clock times
    async fn a_trust_file_is_read_directly_and_a_reload_applies_at_once() {
        use crate::store::trust::FileTrustStore;
        let dir = std::env::temp_dir().join(format!("claw-trust-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trust.yaml");
        std::fs::write(&path, "pairs: [[a, b]]\nrevoked_agents: [c]\n").unwrap();
        let store = Arc::new(FileTrustStore::load(&path).unwrap());
        let clock = ManualClock::at(1_000_000);
        let timing = TrustTiming {
            ttl_ms: 120_000,
            stale_if_error_ms: 3_600_000,
            capacity: 1_000,
        };
        let c = TrustCache::new(store.clone(), Arc::new(clock.clone()), timing);
        assert_eq!(c.is_known("a").await, Ok(true));
        assert_eq!(c.is_known("c").await, Ok(false));
        assert_eq!(c.is_revoked("c", 0).await, Ok(true));
        assert_eq!(c.is_revoked("a", 0).await, Ok(false));

        std::fs::write(&path, "pairs: [[c, d]]\nrevoked_agents: [a]\n").unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(later).unwrap();
        assert!(store.reload_if_changed());
        clock.advance_ms(1);
        assert_eq!(c.is_known("a").await, Ok(false), "within the TTL");
        assert_eq!(c.is_known("c").await, Ok(true));
        assert_eq!(c.is_revoked("a", 0).await, Ok(true));
        assert_eq!(c.is_revoked("c", 0).await, Ok(false));

        c.known.run_pending_tasks().await;
        c.revoked.run_pending_tasks();
        assert_eq!((c.known.entry_count(), c.revoked.entry_count()), (0, 0));
        assert_eq!(c.counts.get(), [0, 0, 0]);
        std::fs::remove_dir_all(&dir).unwrap();
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
    async fn a_repeated_revocation_answer_refreshes_the_fallback_once_a_second() {
        let (c, store, clock) = cache();
        assert_eq!(c.is_revoked("a", 0).await, Ok(false));
        let written = |c: &TrustCache| c.revoked.get("a").map(|e| (e.answer, e.at_ms));
        assert_eq!(written(&c), Some((false, 1_000_000)));
        clock.advance_ms(999);
        assert_eq!(c.is_revoked("a", 0).await, Ok(false));
        assert_eq!(
            written(&c),
            Some((false, 1_000_000)),
            "the same answer within a second"
        );
        store.revoked.store(true, Ordering::SeqCst);
        assert_eq!(c.is_revoked("a", 0).await, Ok(true));
        assert_eq!(
            written(&c),
            Some((true, 1_000_999)),
            "a changed answer at once"
        );
        clock.advance_ms(1_000);
        assert_eq!(c.is_revoked("a", 0).await, Ok(true));
        assert_eq!(
            written(&c),
            Some((true, 1_001_999)),
            "refreshed after a second"
        );
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

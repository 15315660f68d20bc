//! Agent access-token validation, cached (`docs/deviations.md` item 4).
//!
//! Results are keyed by `(access token, agent DID, AIT jti)`: a valid answer (204) is reused for
//! `positive_ttl`, an invalid one (401) for `negative_ttl`. When the registry cannot answer, a
//! valid answer up to `stale_if_error` old is used instead (never past the AIT's `exp`) and a
//! warning is logged. Concurrent identical misses share one registry call. Ages come from the
//! injected clock, like every other cache age.
//!
//! So that a slow or failing registry costs known agents nothing, a valid answer is renewed in
//! the background once it is past 80 % of its TTL and still in use (it stays fresh meanwhile,
//! so the TTL bound holds), and a renewal that fails is remembered: when the answer then
//! expires, the stale answer is used at once rather than after another failing call on the
//! request path. A remembered failure is retried in the background at most every 5 s.
//!
//! Keys are caller-chosen (any access token), so both maps are bounded: valid and refused answers
//! are kept apart, so refused ones (a flood of made-up tokens) can never crowd out valid ones; a
//! full map is swept of its expired entries at most once a second, never once per miss. The
//! single-flight gate of a key is released by a guard, so a check that Envoy's deadline cancels
//! mid-call leaves nothing behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::{Registry, TransportError};
use crate::clock::Clock;
use crate::denial::{Denial, Detail};

#[derive(Debug, Clone, Copy)]
pub struct AccessTiming {
    pub positive_ttl_ms: u64,
    pub negative_ttl_ms: u64,
    pub stale_if_error_ms: u64,
}

/// At most this many valid answers, and as many refused ones, are kept; past it, expired ones are
/// swept and new ones may go uncached (a registry call per check, never a wrong answer).
const CAPACITY: usize = 100_000;

/// A full map is swept at most this often.
const SWEEP_MS: u64 = 1_000;

/// A failed renewal is retried at most this often.
const RETRY_MS: u64 = 5_000;

/// A valid answer and the state of its renewal.
#[derive(Debug, Clone, Copy)]
struct Entry {
    at_ms: u64,
    /// A background renewal is running.
    renewing: bool,
    /// The last renewal attempt, and whether the registry failed it (and none succeeded since).
    attempt_ms: u64,
    failed: bool,
}

impl Entry {
    fn new(at_ms: u64) -> Self {
        Entry {
            at_ms,
            renewing: false,
            attempt_ms: at_ms,
            failed: false,
        }
    }
}

pub struct AccessCache {
    registry: Arc<dyn Registry>,
    clock: Arc<dyn Clock>,
    timing: AccessTiming,
    /// Valid answers.
    entries: Mutex<HashMap<u128, Entry>>,
    /// Refused (401) answers: when.
    refused: Mutex<HashMap<u128, u64>>,
    capacity: usize,
    /// When each map was last swept.
    swept_ms: [AtomicU64; 2],
    in_flight: Mutex<HashMap<u128, Gate>>,
    stale_used: AtomicU64,
    pub counts: crate::metrics::CacheCounts,
}

enum Settled {
    Valid,
    Invalid,
    Failed(Detail),
}

/// What the caller knows about the token being validated.
pub struct Subject<'a> {
    pub access_token: &'a str,
    pub agent_did: &'a str,
    pub ait_jti: &'a str,
    /// The AIT's `exp` (unix seconds): a stale answer is never used past it.
    pub ait_exp_secs: u64,
}

type Gate = Arc<tokio::sync::Mutex<()>>;

/// A check's place in the single flight of its key; dropping it (the call finished, or the check
/// was cancelled) removes the gate once no other check holds it.
struct Flight<'a> {
    in_flight: &'a Mutex<HashMap<u128, Gate>>,
    key: u128,
    gate: Gate,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut in_flight = lock(self.in_flight);
        // Held by the map and by this flight only: the last one out.
        let last = in_flight
            .get(&self.key)
            .is_some_and(|g| Arc::ptr_eq(g, &self.gate) && Arc::strong_count(&self.gate) == 2);
        if last {
            in_flight.remove(&self.key);
        }
    }
}

impl AccessCache {
    pub fn new(registry: Arc<dyn Registry>, clock: Arc<dyn Clock>, timing: AccessTiming) -> Self {
        Self::bounded(registry, clock, timing, CAPACITY)
    }

    /// A cache keeping at most `capacity` valid and `capacity` refused answers.
    pub fn bounded(
        registry: Arc<dyn Registry>,
        clock: Arc<dyn Clock>,
        timing: AccessTiming,
        capacity: usize,
    ) -> Self {
        AccessCache {
            registry,
            clock,
            timing,
            entries: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            capacity,
            swept_ms: Default::default(),
            in_flight: Mutex::new(HashMap::new()),
            stale_used: AtomicU64::new(0),
            counts: Default::default(),
        }
    }

    /// How many checks were allowed on a stale answer during a registry failure.
    pub fn stale_used(&self) -> u64 {
        self.stale_used.load(Ordering::Relaxed)
    }

    pub async fn validate(self: &Arc<Self>, s: &Subject<'_>) -> Result<(), Denial> {
        let key = cache_key(s);
        let now = self.clock.now_ms();
        let cached = lock(&self.entries).get(&key).copied();
        if let Some(e) = cached {
            let age = now.saturating_sub(e.at_ms);
            let ttl = self.timing.positive_ttl_ms;
            if age <= ttl {
                if age >= ttl / 5 * 4 {
                    self.renew(key, s, now);
                }
                self.counts.hit();
                return Ok(());
            }
            if e.failed && self.usable(&e, s, now) {
                self.renew(key, s, now);
                self.use_stale(s);
                return Ok(());
            }
        }
        if self.refused_at(key, now) {
            self.counts.hit();
            return Err(Denial::AccessTokenInvalid);
        }
        // One registry call per key at a time; waiters take the answer it cached.
        let flight = Flight {
            in_flight: &self.in_flight,
            key,
            gate: lock(&self.in_flight).entry(key).or_default().clone(),
        };
        let _one = flight.gate.lock().await;
        if let Some(answer) = self.fresh(key) {
            self.counts.hit();
            return answer;
        }
        self.counts.miss();
        let outcome = self
            .registry
            .validate_access(s.access_token, s.agent_did, s.ait_jti)
            .await;
        let now = self.clock.now_ms();
        match self.settle(key, outcome, now) {
            Settled::Valid => Ok(()),
            Settled::Invalid => Err(Denial::AccessTokenInvalid),
            Settled::Failed(detail) => self.stale_or(key, s, now, detail),
        }
    }

    /// Records a registry answer: a verdict replaces the entry, a failure marks it.
    fn settle(&self, key: u128, outcome: Result<u16, TransportError>, now: u64) -> Settled {
        let detail = match outcome {
            Ok(204) => {
                self.store(key, true, now);
                return Settled::Valid;
            }
            Ok(401) => {
                self.store(key, false, now);
                return Settled::Invalid;
            }
            Ok(status) => Detail::Status(status),
            Err(e) => Detail::Reason(e.reason().to_owned()),
        };
        if let Some(e) = lock(&self.entries).get_mut(&key) {
            e.renewing = false;
            e.failed = true;
            e.attempt_ms = now;
        }
        Settled::Failed(detail)
    }

    /// Starts one background renewal of `key`, unless one is running or one failed recently.
    fn renew(self: &Arc<Self>, key: u128, s: &Subject<'_>, now: u64) {
        {
            let mut entries = lock(&self.entries);
            let Some(e) = entries.get_mut(&key) else {
                return;
            };
            if e.renewing || (e.failed && now.saturating_sub(e.attempt_ms) < RETRY_MS) {
                return;
            }
            e.renewing = true;
            e.attempt_ms = now;
        }
        let this = self.clone();
        let (token, did, jti) = (
            s.access_token.to_owned(),
            s.agent_did.to_owned(),
            s.ait_jti.to_owned(),
        );
        tokio::spawn(async move {
            let outcome = this.registry.validate_access(&token, &did, &jti).await;
            let now = this.clock.now_ms();
            if let Settled::Failed(_) = this.settle(key, outcome, now) {
                tracing::warn!(
                    agent_did = did,
                    "background renewal of an access validation failed"
                );
            }
        });
    }

    fn usable(&self, e: &Entry, s: &Subject<'_>, now: u64) -> bool {
        now.saturating_sub(e.at_ms) <= self.timing.stale_if_error_ms
            && now < s.ait_exp_secs.saturating_mul(1000)
    }

    fn use_stale(&self, s: &Subject<'_>) {
        self.counts.stale();
        self.stale_used.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            agent_did = s.agent_did,
            "registry validation unavailable; using a stale valid answer"
        );
    }

    /// A refused answer for `key` still within the negative TTL.
    fn refused_at(&self, key: u128, now: u64) -> bool {
        lock(&self.refused)
            .get(&key)
            .is_some_and(|at| now.saturating_sub(*at) <= self.timing.negative_ttl_ms)
    }

    /// A cached answer still within its TTL.
    fn fresh(&self, key: u128) -> Option<Result<(), Denial>> {
        let now = self.clock.now_ms();
        let valid = lock(&self.entries).get(&key).map(|e| e.at_ms);
        if valid.is_some_and(|at| now.saturating_sub(at) <= self.timing.positive_ttl_ms) {
            return Some(Ok(()));
        }
        self.refused_at(key, now)
            .then_some(Err(Denial::AccessTokenInvalid))
    }

    fn stale_or(&self, key: u128, s: &Subject<'_>, now: u64, detail: Detail) -> Result<(), Denial> {
        let entry = lock(&self.entries).get(&key).copied();
        if entry.is_some_and(|e| self.usable(&e, s, now)) {
            self.use_stale(s);
            return Ok(());
        }
        Err(Denial::AccessValidationUnavailable(detail))
    }

    /// Records a verdict in its own map (and drops any other verdict for the key).
    fn store(&self, key: u128, valid: bool, now: u64) {
        let t = &self.timing;
        if valid {
            lock(&self.refused).remove(&key);
            let keep = t.stale_if_error_ms.max(t.positive_ttl_ms);
            let mut entries = lock(&self.entries);
            if self.room(&mut entries, key, now, 0, |e| {
                now.saturating_sub(e.at_ms) <= keep
            }) {
                entries.insert(key, Entry::new(now));
            }
        } else {
            lock(&self.entries).remove(&key);
            let keep = t.negative_ttl_ms;
            let mut refused = lock(&self.refused);
            if self.room(&mut refused, key, now, 1, |at| {
                now.saturating_sub(*at) <= keep
            }) {
                refused.insert(key, now);
            }
        }
    }

    /// Whether `key` fits in `map`: it is there already, or the map is under capacity, or a
    /// sweep (at most once per [`SWEEP_MS`] per map) of what `live` rejects makes room.
    fn room<V>(
        &self,
        map: &mut HashMap<u128, V>,
        key: u128,
        now: u64,
        which: usize,
        live: impl Fn(&V) -> bool,
    ) -> bool {
        if map.len() < self.capacity || map.contains_key(&key) {
            return true;
        }
        let swept = &self.swept_ms[which];
        if now.saturating_sub(swept.load(Ordering::Relaxed)) >= SWEEP_MS {
            swept.store(now, Ordering::Relaxed);
            map.retain(|_, v| live(v));
        }
        map.len() < self.capacity
    }
}

fn cache_key(s: &Subject<'_>) -> u128 {
    let mut h = Sha256::new();
    for part in [s.access_token, s.agent_did, s.ait_jti] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    u128::from_le_bytes(h.finalize()[..16].try_into().expect("16 bytes"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;

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
//! Keys are caller-chosen (any access token), so both caches are bounded `moka` caches, and
//! valid and refused answers are kept apart: refused ones (a flood of made-up tokens) can never
//! crowd out valid ones. Calls for one key are serialized by `moka` (`and_compute_with`): the
//! first miss calls the registry, the checks queued behind it take its answer, and a check that
//! Envoy's deadline cancels mid-call releases the key for the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use moka::ops::compute::Op;
use sha2::{Digest, Sha256};

use crate::clock::{Clock, Every};
use crate::registry::{Registry, TransportError};

#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessTiming {
    pub(crate) positive_ttl_ms: u64,
    pub(crate) negative_ttl_ms: u64,
    pub(crate) stale_if_error_ms: u64,
    /// Registry calls one agent may cause per minute on the request path (a new access token,
    /// an expired answer); past it, its checks needing a call are refused until the minute ends.
    pub(crate) calls_per_agent_per_minute: u64,
}

/// One agent's registry calls in the current minute.
#[derive(Debug)]
struct Budget {
    minute_start_ms: AtomicU64,
    calls: AtomicU64,
}

const MINUTE_MS: u64 = 60_000;

/// A failed renewal is retried at most this often.
const RETRY_MS: u64 = 5_000;

/// A valid answer and the state of its renewal.
#[derive(Debug)]
struct Valid {
    at_ms: u64,
    /// A background renewal is running.
    renewing: AtomicBool,
    /// The registry failed the last renewal attempt (and none succeeded since)...
    failed: AtomicBool,
    /// ...made at this time.
    attempt_ms: AtomicU64,
}

impl Valid {
    fn new(at_ms: u64) -> Arc<Self> {
        Arc::new(Valid {
            at_ms,
            renewing: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            attempt_ms: AtomicU64::new(at_ms),
        })
    }

    fn mark_failed(&self, now: u64) {
        self.renewing.store(false, Ordering::Relaxed);
        self.failed.store(true, Ordering::Relaxed);
        self.attempt_ms.store(now, Ordering::Relaxed);
    }
}

pub struct AccessCache {
    registry: Arc<dyn Registry>,
    clock: Arc<dyn Clock>,
    timing: AccessTiming,
    valid: moka::future::Cache<u128, Arc<Valid>>,
    /// Request-path registry calls per agent DID, this minute.
    budgets: moka::sync::Cache<String, Arc<Budget>>,
    /// Refused (401) answers: when.
    refused: moka::sync::Cache<u128, u64>,
    stale_used: AtomicU64,
    /// The stale-answer warning, at most every 10 s.
    stale_log: Every,
    pub counts: crate::metrics::CacheCounts,
}

/// What the registry said, once settled into the caches.
enum Settled {
    Valid,
    Invalid,
    Failed(Unavailable),
    /// The agent spent its calls for this minute; no call was made.
    OverBudget {
        retry_after_secs: u64,
    },
}

/// Why a token is not vouched for: facts about the answer; the access stage decides the denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessError {
    /// The registry refused the token (401), now or within the negative TTL.
    Invalid,
    /// The registry could not answer and no usable stale answer was held.
    Unavailable(Unavailable),
    /// The agent caused too many registry calls this minute (a flood of new tokens): refused
    /// without a call, so one agent cannot spend the registry's capacity for everyone.
    OverBudget { retry_after_secs: u64 },
}

/// How the registry failed to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// Any status other than 204 and 401.
    Status(u16),
    /// No HTTP answer.
    Transport(TransportError),
}

/// What the caller knows about the token being validated.
pub(crate) struct Subject<'a> {
    pub access_token: &'a str,
    pub agent_did: &'a str,
    pub(crate) ait_jti: &'a str,
    /// The AIT's `exp` (unix seconds): a stale answer is never used past it.
    pub(crate) ait_exp_secs: u64,
}

impl AccessCache {
    /// A cache keeping at most `capacity` valid and `capacity` refused answers.
    pub(crate) fn new(
        registry: Arc<dyn Registry>,
        clock: Arc<dyn Clock>,
        timing: AccessTiming,
        capacity: u64,
    ) -> Self {
        let keep = timing.stale_if_error_ms.max(timing.positive_ttl_ms);
        AccessCache {
            registry,
            clock,
            timing,
            valid: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(super::held_for(keep))
                .build(),
            refused: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(super::held_for(timing.negative_ttl_ms))
                .build(),
            budgets: moka::sync::Cache::builder()
                .max_capacity(capacity)
                // Kept while the agent keeps calling, so its minute is never reset early.
                .time_to_idle(super::held_for(2 * MINUTE_MS))
                .build(),
            stale_used: AtomicU64::new(0),
            stale_log: Every::new(),
            counts: Default::default(),
        }
    }

    /// Applies every pending insert and eviction, so [`AccessCache::len`] is exact.
    pub async fn flush(&self) {
        self.valid.run_pending_tasks().await;
        self.refused.run_pending_tasks();
    }

    /// Answers held, valid and refused (the valid cache's count may lag its latest inserts
    /// until [`AccessCache::flush`]).
    pub fn len(&self) -> usize {
        self.refused.run_pending_tasks();
        let held = self.valid.entry_count() + self.refused.entry_count();
        usize::try_from(held).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many checks were allowed on a stale answer during a registry failure.
    pub fn stale_used(&self) -> u64 {
        self.stale_used.load(Ordering::Relaxed)
    }

    pub(crate) async fn validate(self: &Arc<Self>, s: &Subject<'_>) -> Result<(), AccessError> {
        let key = cache_key(s);
        let now = self.clock.now_ms();
        if let Some(v) = self.valid.get(&key).await {
            let age = now.saturating_sub(v.at_ms);
            let ttl = self.timing.positive_ttl_ms;
            if age <= ttl {
                if age >= ttl / 5 * 4 {
                    self.renew(key, &v, s, now);
                }
                self.counts.hit();
                return Ok(());
            }
            if v.failed.load(Ordering::Relaxed) && self.usable(&v, s, now) {
                self.renew(key, &v, s, now);
                self.use_stale(s);
                return Ok(());
            }
        }
        if self.refused_at(key, now) {
            self.counts.hit();
            return Err(AccessError::Invalid);
        }
        match self.call(key, s).await {
            Settled::Valid => Ok(()),
            Settled::Invalid => Err(AccessError::Invalid),
            Settled::Failed(detail) => self.stale_or(key, s, detail).await,
            Settled::OverBudget { retry_after_secs } => {
                Err(AccessError::OverBudget { retry_after_secs })
            }
        }
    }

    /// Spends one of the agent's registry calls for this minute; `Err(retry_after_secs)` when
    /// none is left.
    fn spend(&self, agent_did: &str, now: u64) -> Result<(), u64> {
        let budget = self.budgets.get_with_by_ref(agent_did, || {
            Arc::new(Budget {
                minute_start_ms: AtomicU64::new(now),
                calls: AtomicU64::new(0),
            })
        });
        let start = budget.minute_start_ms.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= MINUTE_MS {
            budget.minute_start_ms.store(now, Ordering::Relaxed);
            budget.calls.store(0, Ordering::Relaxed);
        }
        let spent = budget.calls.fetch_add(1, Ordering::Relaxed);
        if spent < self.timing.calls_per_agent_per_minute {
            return Ok(());
        }
        let start = budget.minute_start_ms.load(Ordering::Relaxed);
        let left_ms = MINUTE_MS.saturating_sub(now.saturating_sub(start));
        Err(left_ms.div_ceil(1000).max(1))
    }

    /// One registry call for `key` at a time: a check queued behind another takes the answer it
    /// settled instead of calling again.
    async fn call(&self, key: u128, s: &Subject<'_>) -> Settled {
        let mut settled = Settled::Invalid;
        let out = &mut settled;
        let compute = |held: Option<moka::Entry<u128, Arc<Valid>>>| async move {
            let now = self.clock.now_ms();
            let held = held.map(|e| e.into_value());
            if held
                .as_ref()
                .is_some_and(|v| now.saturating_sub(v.at_ms) <= self.timing.positive_ttl_ms)
            {
                self.counts.hit();
                *out = Settled::Valid;
                return Op::Nop;
            }
            if self.refused_at(key, now) {
                self.counts.hit();
                return Op::Nop;
            }
            if let Err(retry_after_secs) = self.spend(s.agent_did, now) {
                *out = Settled::OverBudget { retry_after_secs };
                return Op::Nop;
            }
            self.counts.miss();
            let outcome = self
                .registry
                .validate_access(s.access_token, s.agent_did, s.ait_jti)
                .await;
            let (op, answer) = self.settle(key, held.as_deref(), outcome);
            *out = answer;
            op
        };
        self.valid.entry(key).and_compute_with(compute).await;
        settled
    }

    /// Records a registry answer: a verdict replaces the entry, a failure marks it.
    fn settle(
        &self,
        key: u128,
        held: Option<&Valid>,
        outcome: Result<u16, TransportError>,
    ) -> (Op<Arc<Valid>>, Settled) {
        let now = self.clock.now_ms();
        let detail = match outcome {
            Ok(204) => {
                self.refused.invalidate(&key);
                return (Op::Put(Valid::new(now)), Settled::Valid);
            }
            Ok(401) => {
                self.refused.insert(key, now);
                return (Op::Remove, Settled::Invalid);
            }
            Ok(status) => Unavailable::Status(status),
            Err(e) => Unavailable::Transport(e),
        };
        if let Some(v) = held {
            v.mark_failed(now);
        }
        (Op::Nop, Settled::Failed(detail))
    }

    /// Starts one background renewal of `key`, unless one is running or one failed recently.
    fn renew(self: &Arc<Self>, key: u128, v: &Arc<Valid>, s: &Subject<'_>, now: u64) {
        let failed_lately = v.failed.load(Ordering::Relaxed)
            && now.saturating_sub(v.attempt_ms.load(Ordering::Relaxed)) < RETRY_MS;
        if failed_lately || v.renewing.swap(true, Ordering::Relaxed) {
            return;
        }
        v.attempt_ms.store(now, Ordering::Relaxed);
        let (this, v) = (self.clone(), v.clone());
        let (token, did, jti) = (
            s.access_token.to_owned(),
            s.agent_did.to_owned(),
            s.ait_jti.to_owned(),
        );
        tokio::spawn(async move {
            let outcome = this.registry.validate_access(&token, &did, &jti).await;
            let op = match this.settle(key, Some(&v), outcome) {
                (op, Settled::Failed(_)) => {
                    tracing::warn!(
                        agent_did = did,
                        "background renewal of an access validation failed"
                    );
                    op
                }
                (op, _) => op,
            };
            match op {
                Op::Put(renewed) => this.valid.insert(key, renewed).await,
                Op::Remove => this.valid.invalidate(&key).await,
                Op::Nop => {}
            }
        });
    }

    fn usable(&self, v: &Valid, s: &Subject<'_>, now: u64) -> bool {
        now.saturating_sub(v.at_ms) <= self.timing.stale_if_error_ms
            && now < s.ait_exp_secs.saturating_mul(1000)
    }

    fn use_stale(&self, s: &Subject<'_>) {
        self.counts.stale();
        self.stale_used.fetch_add(1, Ordering::Relaxed);
        if let Some(skipped) = self.stale_log.due(self.clock.now_ms()) {
            tracing::warn!(
                agent_did = s.agent_did,
                skipped,
                "registry validation unavailable; using a stale valid answer"
            );
        }
    }

    /// A refused answer for `key` still within the negative TTL.
    fn refused_at(&self, key: u128, now: u64) -> bool {
        self.refused
            .get(&key)
            .is_some_and(|at| now.saturating_sub(at) <= self.timing.negative_ttl_ms)
    }

    async fn stale_or(
        &self,
        key: u128,
        s: &Subject<'_>,
        detail: Unavailable,
    ) -> Result<(), AccessError> {
        let now = self.clock.now_ms();
        let held = self.valid.get(&key).await;
        if held.is_some_and(|v| self.usable(&v, s, now)) {
            self.use_stale(s);
            return Ok(());
        }
        Err(AccessError::Unavailable(detail))
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

#[cfg(test)]
mod tests;

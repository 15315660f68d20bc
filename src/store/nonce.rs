//! Replay protection: each `(agent DID, nonce)` is accepted once within its window.
//!
//! The window follows `docs/deviations.md` item 9: a record lives until
//! `max(timestamp, now) + max_skew + margin`, the last moment the same proof could still pass the
//! skew check, so a future-dated request cannot be replayed after its record expires.
//!
//! The memory store is bounded. Expired records are pruned in expiry order, costing only the
//! records removed; when the store is still full it refuses new nonces (the caller answers 503
//! and counts it) instead of forgetting a live one, which would reopen a replay. So that one
//! agent cannot fill it for everyone, each agent may hold at most `per_agent` live records
//! (`nonce.per_agent_capacity`); past that its new nonces are refused (429) while every other
//! agent is still served. The Redis store keeps the same quota (`redis.rs`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::StoreError;
use crate::registry::BoxFuture;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceOutcome {
    Fresh,
    Replay,
    /// The agent already holds its quota of live records; this one was not recorded.
    OverQuota,
}

pub trait NonceStore: Send + Sync + 'static {
    /// Records the nonce unless a live record exists; `expires_at_ms` is when it may be reused.
    fn check_and_record<'a>(
        &'a self,
        agent_did: &'a str,
        nonce: &'a str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<NonceOutcome, StoreError>>;

    /// Drops a nonce recorded for a request that was then refused (by the agent's rate limit),
    /// so it holds no capacity. Best effort: a nonce left behind only expires later.
    fn forget<'a>(&'a self, agent_did: &'a str, nonce: &'a str) -> BoxFuture<'a, ()>;

    /// Nonces refused because the store was full (a bounded store only).
    fn refused_full(&self) -> u64 {
        0
    }

    /// Live records held here (`None` for a shared store).
    fn live_records(&self) -> Option<u64> {
        None
    }
}

/// When a nonce seen at `now_secs` with timestamp `ts_secs` may be forgotten.
pub(crate) fn record_expiry_ms(
    ts_secs: u64,
    now_ms: u64,
    max_skew_secs: u64,
    margin_ms: u64,
) -> u64 {
    let latest_valid_ms = ts_secs
        .saturating_add(max_skew_secs)
        .saturating_mul(1000)
        .saturating_add(999);
    latest_valid_ms
        .max(now_ms.saturating_add(max_skew_secs * 1000))
        .saturating_add(margin_ms)
}

/// A 64-bit digest of the agent, whose records count against its quota (0: unattributed, for
/// records read back from a log that did not keep the agent).
pub(crate) fn agent_key(agent_did: &str) -> u64 {
    let digest = Sha256::digest(agent_did.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")).max(1)
}

/// A 128-bit digest of the pair, so records have a fixed small size whatever the nonce length.
pub(crate) fn record_key(agent_did: &str, nonce: &str) -> u128 {
    let mut h = Sha256::new();
    h.update(agent_did.as_bytes());
    h.update([0u8]);
    h.update(nonce.as_bytes());
    let digest = h.finalize();
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

#[derive(Debug)]
pub struct MemoryNonceStore {
    capacity: usize,
    per_agent: usize,
    inner: Mutex<Records>,
    refused_full: AtomicU64,
}

/// Keys are digests of caller-chosen nonces: a per-process seed keeps a flood of chosen ones
/// from piling into one probe sequence, at a fraction of SipHash's cost.
type Hasher = foldhash::fast::RandomState;

#[derive(Debug, Default)]
struct Records {
    /// Each record's expiry and agent.
    expiry_by_key: HashMap<u128, (u64, u64), Hasher>,
    by_expiry: BTreeSet<(u64, u128)>,
    /// Live records per agent (unattributed ones are not counted).
    per_agent: HashMap<u64, usize, Hasher>,
}

impl MemoryNonceStore {
    /// At most `capacity` live records, `per_agent` of them for one agent.
    pub(crate) fn new(capacity: usize, per_agent: usize) -> Self {
        MemoryNonceStore {
            capacity,
            per_agent,
            inner: Mutex::new(Records::default()),
            refused_full: AtomicU64::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().expiry_by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many nonces were refused because the store was full.
    pub(crate) fn refused_full(&self) -> u64 {
        self.refused_full.load(Ordering::Relaxed)
    }

    pub fn check(
        &self,
        agent_did: &str,
        nonce: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<NonceOutcome, StoreError> {
        let (key, agent) = (record_key(agent_did, nonce), agent_key(agent_did));
        self.check_key(key, agent, expires_at_ms, now_ms)
    }

    /// [`MemoryNonceStore::check`] for a key already computed with `record_key`.
    pub(crate) fn check_key(
        &self,
        key: u128,
        agent: u64,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<NonceOutcome, StoreError> {
        let mut r = self.lock();
        r.prune(now_ms);
        if r.expiry_by_key.contains_key(&key) {
            return Ok(NonceOutcome::Replay);
        }
        if r.per_agent
            .get(&agent)
            .is_some_and(|n| *n >= self.per_agent)
        {
            return Ok(NonceOutcome::OverQuota);
        }
        if r.expiry_by_key.len() >= self.capacity {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError(format!(
                "nonce store is full ({} live records)",
                self.capacity
            )));
        }
        r.expiry_by_key.insert(key, (expires_at_ms, agent));
        r.by_expiry.insert((expires_at_ms, key));
        *r.per_agent.entry(agent).or_default() += 1;
        Ok(NonceOutcome::Fresh)
    }

    /// Drops a live record (and its count against its agent's quota).
    pub(crate) fn forget_key(&self, key: u128) {
        let mut r = self.lock();
        let Some((expiry, agent)) = r.expiry_by_key.remove(&key) else {
            return;
        };
        r.by_expiry.remove(&(expiry, key));
        if let Some(n) = r.per_agent.get_mut(&agent) {
            *n -= 1;
            if *n == 0 {
                r.per_agent.remove(&agent);
            }
        }
    }

    /// Puts back a record read from storage at startup (capacity is not checked: a live record
    /// is never dropped). Expired ones are ignored.
    pub(crate) fn restore(&self, key: u128, expires_at_ms: u64, now_ms: u64) {
        if expires_at_ms <= now_ms {
            return;
        }
        let mut r = self.lock();
        if let Some((old, _)) = r.expiry_by_key.insert(key, (expires_at_ms, 0)) {
            r.by_expiry.remove(&(old, key));
        }
        r.by_expiry.insert((expires_at_ms, key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Records {
    /// Drops every record whose expiry is `<= now`, oldest first.
    fn prune(&mut self, now_ms: u64) {
        while let Some(&(expiry, key)) = self.by_expiry.first() {
            if expiry > now_ms {
                break;
            }
            self.by_expiry.pop_first();
            let agent = self
                .expiry_by_key
                .remove(&key)
                .map_or(0, |(_, agent)| agent);
            if let Some(n) = self.per_agent.get_mut(&agent) {
                *n -= 1;
                if *n == 0 {
                    self.per_agent.remove(&agent);
                }
            }
        }
    }
}

impl NonceStore for MemoryNonceStore {
    fn check_and_record<'a>(
        &'a self,
        agent_did: &'a str,
        nonce: &'a str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<NonceOutcome, StoreError>> {
        let result = self.check(agent_did, nonce, expires_at_ms, now_ms);
        Box::pin(std::future::ready(result))
    }

    fn forget<'a>(&'a self, agent_did: &'a str, nonce: &'a str) -> BoxFuture<'a, ()> {
        self.forget_key(record_key(agent_did, nonce));
        Box::pin(std::future::ready(()))
    }

    fn refused_full(&self) -> u64 {
        MemoryNonceStore::refused_full(self)
    }

    fn live_records(&self) -> Option<u64> {
        Some(MemoryNonceStore::len(self) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_covers_future_dated_requests() {
        // Seen at t=1000 s with a timestamp 300 s ahead: valid until 1600 s, not 1300 s.
        assert_eq!(record_expiry_ms(1300, 1_000_000, 300, 0), 1_600_999);
        // Seen with an old timestamp: the first-sight window still applies.
        assert_eq!(record_expiry_ms(700, 1_000_000, 300, 0), 1_300_000);
    }

    #[test]
    fn replay_scoped_per_agent_and_expires() {
        let s = MemoryNonceStore::new(10, 10);
        assert_eq!(s.check("a", "n", 2000, 1000), Ok(NonceOutcome::Fresh));
        assert_eq!(s.check("a", "n", 2000, 1999), Ok(NonceOutcome::Replay));
        assert_eq!(s.check("b", "n", 2000, 1999), Ok(NonceOutcome::Fresh));
        // At expiry the record is gone.
        assert_eq!(s.check("a", "n", 3000, 2000), Ok(NonceOutcome::Fresh));
    }

    #[test]
    fn full_store_fails_closed_and_counts() {
        let s = MemoryNonceStore::new(2, 10);
        assert_eq!(s.check("a", "1", 5000, 0), Ok(NonceOutcome::Fresh));
        assert_eq!(s.check("a", "2", 5000, 0), Ok(NonceOutcome::Fresh));
        assert!(s.check("a", "3", 5000, 10).is_err());
        assert_eq!(s.refused_full(), 1);
        // The live records were not forgotten.
        assert_eq!(s.check("a", "1", 5000, 10), Ok(NonceOutcome::Replay));
        // Once they expire there is room again.
        assert_eq!(s.check("a", "3", 9000, 5000), Ok(NonceOutcome::Fresh));
        assert_eq!(s.len(), 1);
    }

    /// Issue 18, finding 3: one agent holds at most its quota; the others are still served.
    #[test]
    fn one_agent_holds_at_most_its_quota() {
        let s = MemoryNonceStore::new(100, 3);
        for n in ["1", "2", "3"] {
            assert_eq!(s.check("a", n, 5000, 0), Ok(NonceOutcome::Fresh));
        }
        assert_eq!(s.check("a", "4", 5000, 0), Ok(NonceOutcome::OverQuota));
        assert_eq!(s.check("a", "1", 5000, 0), Ok(NonceOutcome::Replay));
        assert_eq!(s.check("b", "1", 5000, 0), Ok(NonceOutcome::Fresh));
        // As a's records expire, its quota comes back.
        assert_eq!(s.check("a", "4", 9000, 5000), Ok(NonceOutcome::Fresh));
        assert_eq!(s.len(), 1);
    }
}

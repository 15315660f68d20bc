//! Verified AITs, by the SHA-256 of the token, until their `exp`.
//!
//! An agent sends the same AIT with every request, so verifying it (a JSON parse, an Ed25519
//! verification with the registry key, and the agent key's decompression and torsion check)
//! once per token is enough. An entry answers only while:
//! - `nbf <= now < exp` (zero tolerance, as the verification itself);
//! - the key that verified it is still in the registry's current key set under the same `kid`
//!   (a rotated-out or replaced key stops every token it signed at once).
//!
//! Revocation, trust, proof and replay run on every request whatever the cache says. Only
//! successes are cached. Sharded so concurrent checks rarely meet on one lock.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use crate::crypto::PublicKey;
use crate::protocol::ait::AitClaims;
use crate::protocol::keys::KeySet;
use crate::telemetry::CacheCounts;

const SHARDS: usize = 16;

/// A verified token and the registry key that verified it.
pub struct VerifiedAit {
    pub claims: AitClaims,
    kid: String,
    key: PublicKey,
}

impl VerifiedAit {
    /// `claims` of a token verified by `key`, named `kid` in the registry's key set.
    pub fn new(claims: AitClaims, kid: String, key: PublicKey) -> Self {
        VerifiedAit { claims, kid, key }
    }
}

pub struct AitCache {
    shards: Vec<RwLock<HashMap<[u8; 32], Arc<VerifiedAit>>>>,
    per_shard: usize,
    pub counts: CacheCounts,
}

impl AitCache {
    /// Holds at most about `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        AitCache {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            counts: CacheCounts::default(),
        }
    }

    pub fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn shard(&self, digest: &[u8; 32]) -> &RwLock<HashMap<[u8; 32], Arc<VerifiedAit>>> {
        &self.shards[usize::from(digest[0]) % SHARDS]
    }

    /// The cached token, if it is still valid at `now_secs` under `keys`.
    pub fn get(&self, digest: &[u8; 32], keys: &KeySet, now_secs: u64) -> Option<Arc<VerifiedAit>> {
        let hit = self
            .shard(digest)
            .read()
            .ok()
            .and_then(|m| m.get(digest).cloned());
        let valid = hit.filter(|v| {
            let c = &v.claims;
            c.nbf <= now_secs
                && now_secs < c.exp
                && keys.get(&v.kid).is_some_and(|k| same(k, &v.key))
        });
        match valid {
            Some(v) => {
                self.counts.hit();
                Some(v)
            }
            None => {
                self.counts.miss();
                None
            }
        }
    }

    /// Remembers a verified token.
    pub fn insert(
        &self,
        digest: [u8; 32],
        verified: VerifiedAit,
        now_secs: u64,
    ) -> Arc<VerifiedAit> {
        let verified = Arc::new(verified);
        if let Ok(mut map) = self.shard(&digest).write() {
            if map.len() >= self.per_shard {
                map.retain(|_, v| now_secs < v.claims.exp);
            }
            if map.len() >= self.per_shard
                && let Some(victim) = map.keys().next().copied()
            {
                map.remove(&victim);
            }
            map.insert(digest, verified.clone());
        }
        verified
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn same(a: &PublicKey, b: &PublicKey) -> bool {
    match (a, b) {
        (PublicKey::Ed25519(a), PublicKey::Ed25519(b)) => a.as_bytes() == b.as_bytes(),
        (PublicKey::P256(a), PublicKey::P256(b)) => a.sec1_uncompressed() == b.sec1_uncompressed(),
        _ => false,
    }
}

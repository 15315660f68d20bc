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
use crate::metrics::CacheCounts;
use crate::protocol::ait::AitClaims;
use crate::protocol::keys::KeySet;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Ed25519Key;
    use crate::dev::sign::Ed25519Signer;
    use crate::protocol::ait::AgentKey;
    use crate::protocol::b64;

    fn key(seed: u8) -> PublicKey {
        let public = Ed25519Signer::from_seed([seed; 32]).public_b64();
        let bytes = b64::decode_array::<32>(&public).unwrap();
        PublicKey::Ed25519(Ed25519Key::from_bytes(&bytes).unwrap())
    }

    fn claims(nbf: u64, exp: u64) -> AitClaims {
        AitClaims {
            iss: "https://registry.example".into(),
            sub: "did:cdi:registry.example:agent:01HF7YAT00W6W7CM7N3W5FDXT4".into(),
            owner_did: "did:cdi:registry.example:human:01HF7YAT31JZHSMW1CG6Q6MHB7".into(),
            name: "a".into(),
            framework: "generic".into(),
            description: None,
            cnf: AgentKey {
                key: key(9),
                x: "x".into(),
                y: None,
            },
            iat: nbf,
            nbf,
            exp,
            jti: "01HF7YAT00W6W7CM7N3W5FDXT5".into(),
        }
    }

    #[test]
    fn a_token_answers_until_exp_and_only_under_the_key_that_verified_it() {
        let cache = AitCache::new(100);
        let keys = KeySet::new(vec![("k1".into(), key(1))]);
        let digest = AitCache::digest("token");
        cache.insert(
            digest,
            VerifiedAit::new(claims(100, 200), "k1".into(), key(1)),
            150,
        );

        assert!(cache.get(&digest, &keys, 150).is_some());
        assert!(cache.get(&digest, &keys, 199).is_some());
        assert!(
            cache.get(&digest, &keys, 200).is_none(),
            "exp == now is expired"
        );
        assert!(cache.get(&digest, &keys, 99).is_none(), "before nbf");
        let rotated_out = KeySet::new(vec![("k2".into(), key(2))]);
        assert!(cache.get(&digest, &rotated_out, 150).is_none());
        let replaced = KeySet::new(vec![("k1".into(), key(3))]);
        assert!(cache.get(&digest, &replaced, 150).is_none());
        assert!(cache.get(&AitCache::digest("other"), &keys, 150).is_none());
        assert_eq!(cache.counts.get(), [2, 0, 5]);
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity_dropping_expired_tokens_first() {
        let cache = AitCache::new(32);
        for i in 0..1_000u32 {
            let digest = AitCache::digest(&i.to_string());
            let exp = if i % 2 == 0 { 120 } else { 1_000 };
            cache.insert(
                digest,
                VerifiedAit::new(claims(0, exp), "k1".into(), key(1)),
                150,
            );
        }
        assert!(cache.len() <= 32, "{} entries", cache.len());
        let keys = KeySet::new(vec![("k1".into(), key(1))]);
        let newest = AitCache::digest("999");
        assert!(
            cache.get(&newest, &keys, 150).is_some(),
            "the newest entry stays"
        );
    }
}

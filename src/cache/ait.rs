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
//! successes are cached, so only tokens the registry signed can fill it; it is a bounded `moka`
//! cache all the same, each entry expiring at its token's `exp`, and its admission policy
//! (TinyLFU) keeps the tokens in steady use when one-off tokens crowd in.

use std::sync::Arc;

use super::by_digest::ByDigest;
use crate::crypto::PublicKey;
use crate::metrics::CacheCounts;
use crate::pipeline::ClawIdentity;
use crate::protocol::ait::AitClaims;
use crate::protocol::keys::KeySet;

/// A verified token and the registry key that verified it.
pub struct VerifiedAit {
    pub claims: AitClaims,
    /// The agent as allowed checks name it, built once for all the token's checks.
    pub(crate) identity: Arc<ClawIdentity>,
    kid: String,
    key: PublicKey,
}

impl VerifiedAit {
    /// `claims` of a token verified by `key`, named `kid` in the registry's key set.
    pub(crate) fn new(claims: AitClaims, kid: String, key: PublicKey) -> Self {
        let identity = Arc::new(ClawIdentity::from_claims(&claims));
        VerifiedAit {
            claims,
            identity,
            kid,
            key,
        }
    }
}

pub struct AitCache {
    tokens: ByDigest<VerifiedAit>,
    pub counts: CacheCounts,
}

impl AitCache {
    /// Holds at most `capacity` tokens.
    pub(crate) fn new(capacity: u64) -> Self {
        AitCache {
            tokens: ByDigest::new(capacity),
            counts: CacheCounts::default(),
        }
    }

    pub(crate) fn digest(token: &str) -> [u8; 32] {
        ByDigest::<VerifiedAit>::digest(token)
    }

    /// The cached token, if it is still valid at `now_secs` under `keys`.
    pub fn get(&self, digest: &[u8; 32], keys: &KeySet, now_secs: u64) -> Option<Arc<VerifiedAit>> {
        let valid = self.tokens.get(digest).filter(|v| {
            let c = &v.claims;
            c.nbf <= now_secs
                && now_secs < c.exp
                && keys.get(&v.kid).is_some_and(|k| super::same_key(k, &v.key))
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

    /// Remembers a verified token until its `exp` (one already expired is not kept).
    pub(crate) fn insert(
        &self,
        digest: [u8; 32],
        verified: VerifiedAit,
        now_secs: u64,
    ) -> Arc<VerifiedAit> {
        let left = verified.claims.exp.saturating_sub(now_secs);
        let ait = Arc::new(verified);
        self.tokens.insert(digest, ait.clone(), left);
        ait
    }

    /// Tokens held (after pending evictions are applied).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// One-off tokens (1,000 of them through a cache of 32) neither grow the cache past its
    /// capacity nor push out the token an agent keeps using.
    #[test]
    fn one_off_tokens_stay_within_capacity_and_leave_a_token_in_use_cached() {
        let cache = AitCache::new(32);
        let keys = KeySet::new(vec![("k1".into(), key(1))]);
        let in_use = AitCache::digest("in use");
        let verified = || VerifiedAit::new(claims(0, 1_000), "k1".into(), key(1));
        cache.insert(in_use, verified(), 150);
        for i in 0..1_000u32 {
            let digest = AitCache::digest(&i.to_string());
            assert!(cache.get(&digest, &keys, 150).is_none());
            cache.insert(digest, verified(), 150);
            if i % 10 == 0 {
                assert!(cache.get(&in_use, &keys, 150).is_some(), "after {i}");
            }
        }
        assert!(cache.len() <= 32, "{} entries", cache.len());
        assert!(cache.get(&in_use, &keys, 150).is_some());
    }

    #[test]
    fn an_expired_token_is_not_kept() {
        let cache = AitCache::new(32);
        let digest = AitCache::digest("old");
        cache.insert(
            digest,
            VerifiedAit::new(claims(0, 100), "k1".into(), key(1)),
            150,
        );
        assert_eq!(cache.len(), 0);
    }
}

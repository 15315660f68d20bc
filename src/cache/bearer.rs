//! Verified bearer tokens, by the SHA-256 of the token, until their `exp`.
//!
//! A client sends the same access token with every request until it expires, so its JSON,
//! base64url and signature need checking once per token, as Envoy's `jwt_authn` does with its
//! `jwt_cache_config`. An entry answers only while:
//! - the route's audience is one of the token's `aud`;
//! - `exp` is still ahead, and `iat` and `nbf` within the issuer's skew;
//! - the key that verified it is still in its issuer's current JWKS under the same `kid` (a
//!   rotated-out or replaced key stops every token it signed at once).
//!
//! Anything else is verified again in full, which gives the exact refusal. Revocation (the
//! token's `jti` in pushed events), the DPoP or `cnf` proof, replay and the route's grants run on
//! every request whatever the cache says. Only tokens a configured issuer signed can enter; it
//! is a bounded `moka` cache all the same (`limits.bearer_cache_capacity`, 0 turns it off), each
//! entry expiring at its token's `exp`, its admission policy (TinyLFU) keeping the tokens in
//! steady use when one-off tokens crowd in.

use std::sync::Arc;

use super::by_digest::ByDigest;
use crate::crypto::PublicKey;
use crate::metrics::CacheCounts;
use crate::protocol::bearer::BearerClaims;
use crate::protocol::keys::KeySet;
use crate::response::SharedAnswers;

/// A verified token, its issuer and the key that verified it; allowed checks name its subject
/// (`Identity::Bearer`).
#[derive(Debug)]
pub struct VerifiedBearer {
    pub claims: BearerClaims,
    /// The issuer's place in the configuration (`bearer.issuers`).
    issuer: usize,
    key: PublicKey,
    /// The token's encoded allow answers, by policy: kept only while the token is cached (a
    /// token verified for one check has nothing to share them with).
    pub(crate) answers: Option<SharedAnswers>,
}

/// The same identity: the same issuer, subject and token id.
impl PartialEq for VerifiedBearer {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.claims, &other.claims);
        (&a.iss, &a.sub, &a.jti) == (&b.iss, &b.sub, &b.jti)
    }
}

impl VerifiedBearer {
    /// `claims` of a token from the `issuer`-th configured issuer, verified by `key`.
    pub(crate) fn new(claims: BearerClaims, issuer: usize, key: PublicKey) -> Self {
        VerifiedBearer {
            claims,
            issuer,
            key,
            answers: None,
        }
    }

    /// The issuer's place in the configuration.
    pub(crate) fn issuer(&self) -> usize {
        self.issuer
    }

    /// Whether the token still holds as `expect` says (the checks of
    /// `protocol::bearer::verify` that can change after it was verified).
    fn holds(&self, expect: Expect<'_>) -> bool {
        let c = &self.claims;
        let latest = expect.now_secs.saturating_add(expect.max_skew_secs);
        expect.now_secs < c.exp
            && c.iat <= latest
            && c.nbf.is_none_or(|nbf| nbf <= latest)
            && c.audiences.iter().any(|a| a == expect.audience)
            && (expect.keys.get(&c.kid)).is_some_and(|k| super::same_key(k, &self.key))
    }
}

/// What a cached token is checked against on its way out.
pub(crate) struct Expect<'a> {
    /// Its issuer's current keys.
    pub keys: &'a KeySet,
    pub audience: &'a str,
    pub now_secs: u64,
    pub max_skew_secs: u64,
}

pub struct BearerCache {
    tokens: ByDigest<VerifiedBearer>,
    /// Zero: nothing is kept (and no digest computed).
    capacity: u64,
    pub counts: CacheCounts,
}

impl BearerCache {
    /// Holds at most `capacity` tokens; none at 0.
    pub(crate) fn new(capacity: u64) -> Self {
        BearerCache {
            tokens: ByDigest::new(capacity),
            capacity,
            counts: CacheCounts::default(),
        }
    }

    /// The token's key in the cache, unless the cache is off.
    pub(crate) fn digest(&self, token: &str) -> Option<[u8; 32]> {
        (self.capacity > 0).then(|| ByDigest::<VerifiedBearer>::digest(token))
    }

    /// The token as it was verified, whether or not it still holds.
    pub(crate) fn entry(&self, digest: &[u8; 32]) -> Option<Arc<VerifiedBearer>> {
        self.tokens.get(digest)
    }

    /// Whether `cached` (from [`BearerCache::entry`]) still holds as `expect` says; counted as
    /// a hit or a miss.
    pub(crate) fn holds(&self, cached: &VerifiedBearer, expect: Expect<'_>) -> bool {
        let holds = cached.holds(expect);
        match holds {
            true => self.counts.hit(),
            false => self.counts.miss(),
        }
        holds
    }

    /// Remembers a verified token until its `exp` (one already expired is not kept).
    pub(crate) fn insert(
        &self,
        digest: Option<[u8; 32]>,
        verified: VerifiedBearer,
        now_secs: u64,
    ) -> Arc<VerifiedBearer> {
        let left = verified.claims.exp.saturating_sub(now_secs);
        let digest = digest.filter(|_| left > 0);
        let token = Arc::new(VerifiedBearer {
            answers: digest.map(|_| SharedAnswers::default()),
            ..verified
        });
        if let Some(digest) = digest {
            self.tokens.insert(digest, token.clone(), left);
        }
        token
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
mod tests;

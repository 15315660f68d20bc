use super::*;
use crate::dev::sign::P256Signer;
use crate::protocol::b64;

/// A new P-256 key.
fn key() -> PublicKey {
    let jwk = P256Signer::random().jwk();
    let x = b64::decode_array::<32>(jwk["x"].as_str().unwrap()).unwrap();
    let y = b64::decode_array::<32>(jwk["y"].as_str().unwrap()).unwrap();
    PublicKey::P256(crate::crypto::P256Key::from_coordinates(&x, &y).unwrap())
}

fn claims(iat: u64, nbf: Option<u64>, exp: u64) -> BearerClaims {
    BearerClaims {
        sub: "agent-7".into(),
        iss: "https://auth.example.com".into(),
        jti: "tok-1".into(),
        iat,
        exp,
        nbf,
        audiences: vec!["svc-orders".into(), "svc-billing".into()],
        kid: "k1".into(),
        roles: vec!["reader".into()],
        permissions: Vec::new(),
        trust_score: None,
        cnf: None,
        jkt: None,
        scopes: Vec::new(),
    }
}

fn expect<'a>(keys: &'a KeySet, audience: &'a str, now_secs: u64) -> Expect<'a> {
    Expect {
        keys,
        audience,
        now_secs,
        max_skew_secs: 60,
    }
}

fn held(cache: &BearerCache, digest: &[u8; 32], expect: Expect<'_>) -> bool {
    cache
        .entry(digest)
        .is_some_and(|cached| cache.holds(&cached, expect))
}

#[test]
fn a_token_holds_for_its_audiences_until_exp_and_only_under_the_key_that_verified_it() {
    let cache = BearerCache::new(100);
    let k1 = key();
    let keys = KeySet::new(vec![("k1".into(), k1.clone())]);
    let digest = cache.digest("token").unwrap();
    let verified = VerifiedBearer::new(claims(100, Some(130), 200), 0, k1.clone());
    cache.insert(Some(digest), verified, 150);

    assert!(held(&cache, &digest, expect(&keys, "svc-orders", 150)));
    assert!(held(&cache, &digest, expect(&keys, "svc-billing", 199)));
    assert!(!held(&cache, &digest, expect(&keys, "svc-other", 150)));
    assert!(
        !held(&cache, &digest, expect(&keys, "svc-orders", 200)),
        "exp == now is expired"
    );
    // `iat` and `nbf` within the skew, as verified: 130 - 60 = 70 is the earliest.
    assert!(held(&cache, &digest, expect(&keys, "svc-orders", 70)));
    assert!(
        !held(&cache, &digest, expect(&keys, "svc-orders", 69)),
        "nbf past the skew"
    );
    let rotated_out = KeySet::new(vec![("k2".into(), k1)]);
    assert!(!held(
        &cache,
        &digest,
        expect(&rotated_out, "svc-orders", 150)
    ));
    let replaced = KeySet::new(vec![("k1".into(), key())]);
    assert!(!held(&cache, &digest, expect(&replaced, "svc-orders", 150)));
    assert!(cache.entry(&cache.digest("other").unwrap()).is_none());
    assert_eq!(cache.counts.get(), [3, 0, 5]);
}

/// One-off tokens (1,000 of them through a cache of 32) neither grow the cache past its
/// capacity nor push out the token a client keeps using.
#[test]
fn one_off_tokens_stay_within_capacity_and_leave_a_token_in_use_cached() {
    let cache = BearerCache::new(32);
    let k1 = key();
    let keys = KeySet::new(vec![("k1".into(), k1.clone())]);
    let in_use = cache.digest("in use").unwrap();
    let verified = || VerifiedBearer::new(claims(0, None, 1_000), 0, k1.clone());
    cache.insert(Some(in_use), verified(), 150);
    for i in 0..1_000u32 {
        let digest = cache.digest(&i.to_string()).unwrap();
        assert!(cache.entry(&digest).is_none());
        cache.insert(Some(digest), verified(), 150);
        if i % 10 == 0 {
            assert!(
                held(&cache, &in_use, expect(&keys, "svc-orders", 150)),
                "after {i}"
            );
        }
    }
    assert!(cache.len() <= 32, "{} entries", cache.len());
    assert!(held(&cache, &in_use, expect(&keys, "svc-orders", 150)));
}

#[test]
fn an_expired_token_is_not_kept_and_a_cache_of_zero_keeps_nothing() {
    let cache = BearerCache::new(32);
    let digest = cache.digest("old").unwrap();
    let verified = VerifiedBearer::new(claims(0, None, 100), 0, key());
    let token = cache.insert(Some(digest), verified, 150);
    assert_eq!(token.claims.sub, "agent-7");
    assert_eq!(cache.len(), 0);

    let off = BearerCache::new(0);
    assert_eq!(off.digest("token"), None);
    let verified = VerifiedBearer::new(claims(0, None, 1_000), 0, key());
    off.insert(None, verified, 150);
    assert_eq!(off.len(), 0);
}

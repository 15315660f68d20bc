//! Unit tests of `src/cache/keys/mod.rs`.

use super::*;
use crate::clock::ManualClock;
use crate::registry::fake::{FakeRegistry, ok, status};

const TIMING: KeyTiming = KeyTiming {
    ttl_ms: 3_600_000,
    max_stale_ms: 86_400_000,
    kid_miss_cooldown_ms: 30_000,
};

type Fixture = (
    Arc<FakeRegistry>,
    crate::dev::sign::RegistrySigner,
    ManualClock,
    Arc<KeyCache>,
);

fn fixture(seed: u8) -> Fixture {
    let registry = Arc::new(FakeRegistry::default());
    let signer = crate::dev::sign::RegistrySigner::new(
        "k1",
        "https://registry.example.com",
        crate::dev::sign::Ed25519Signer::from_seed([seed; 32]),
    );
    let clock = ManualClock::at(1_000_000);
    let cache = Arc::new(KeyCache::new(
        registry.clone(),
        Arc::new(clock.clone()),
        TIMING,
    ));
    (registry, signer, clock, cache)
}

/// Lets spawned background work run (the fake registry answers immediately).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn stale_keys_are_served_while_a_background_refresh_runs() {
    let (registry, signer, clock, cache) = fixture(8);
    registry.set_keys(vec![ok(signer.keys_document()), status(503)]);
    cache.current().await.unwrap();
    // Ten minutes past the TTL with the registry down: keys still served, refresh tried once.
    clock.advance_ms(3_600_000 + 600_000);
    for _ in 0..100 {
        assert_eq!(cache.current().await.unwrap().len(), 1);
    }
    settle().await;
    assert_eq!(
        registry.calls().keys,
        2,
        "one background attempt, not one per check"
    );
    assert_eq!(cache.stale_served(), 100);
    // The next attempt waits for the retry delay, then succeeds and the keys are fresh again.
    registry.set_keys(vec![ok(signer.keys_document())]);
    clock.advance_ms(STALE_RETRY_MS);
    cache.current().await.unwrap();
    settle().await;
    assert_eq!(registry.calls().keys, 3);
    cache.current().await.unwrap();
    assert_eq!(cache.stale_served(), 101, "fresh again after the refresh");
    // Past the maximum staleness, a dead registry means no keys.
    registry.set_keys(vec![status(503)]);
    clock.advance_ms(86_400_001);
    assert_eq!(cache.current().await.unwrap_err(), KeysError::Status(503));
}

#[tokio::test]
async fn fresh_keys_are_reused_failures_are_not_kept() {
    let (registry, signer, clock, cache) = fixture(6);
    registry.set_keys(vec![status(502), ok(signer.keys_document())]);
    assert_eq!(cache.current().await.unwrap_err(), KeysError::Status(502));
    assert!(!*cache.ready().borrow());
    // A failure is shared for a second (issue 18), then the next check fetches again.
    assert_eq!(cache.current().await.unwrap_err(), KeysError::Status(502));
    assert_eq!(registry.calls().keys, 1);
    clock.advance_ms(COLD_RETRY_MS);
    assert_eq!(cache.current().await.unwrap().len(), 1);
    assert!(*cache.ready().borrow());
    clock.advance_ms(3_600_000);
    cache.current().await.unwrap();
    assert_eq!(
        registry.calls().keys,
        2,
        "fresh through now - fetched_at == ttl"
    );
    // One millisecond past the TTL: the stale keys answer, the refresh happens behind them.
    clock.advance_ms(1);
    cache.current().await.unwrap();
    settle().await;
    assert_eq!(registry.calls().keys, 3);
    assert_eq!(cache.stale_served(), 1);
}

#[tokio::test]
async fn unknown_kid_floods_cost_one_fetch_per_cooldown() {
    let (registry, signer, clock, cache) = fixture(7);
    registry.set_keys(vec![ok(signer.keys_document())]);
    cache.current().await.unwrap();
    let misses: Vec<_> = (0..10_000)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.refresh_for_unknown_kid(&format!("rand-{i}")).await })
        })
        .collect();
    for m in misses {
        assert_eq!(m.await.unwrap().unwrap().len(), 1);
    }
    assert_eq!(
        registry.calls().keys,
        2,
        "the first load plus one kid-miss fetch"
    );
    clock.advance_ms(29_999);
    cache.refresh_for_unknown_kid("rand-x").await.unwrap();
    assert_eq!(registry.calls().keys, 2);
    clock.advance_ms(1);
    cache.refresh_for_unknown_kid("rand-y").await.unwrap();
    assert_eq!(
        registry.calls().keys,
        3,
        "one more fetch once the cooldown has passed"
    );
    // A known kid never waits for the cooldown.
    assert!(cache.refresh_for_unknown_kid("k1").await.is_ok());
    assert_eq!(registry.calls().keys, 3);
}

/// Issue 18, finding 8: with no keys held and the registry failing, 1,000 concurrent checks
/// cost one fetch, not one each; the next is a second later.
#[tokio::test]
async fn a_cold_cache_fetches_one_at_a_time() {
    let (registry, signer, clock, cache) = fixture(9);
    registry.set_keys(vec![status(503)]);
    let checks: Vec<_> = (0..1_000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.current().await })
        })
        .collect();
    for c in checks {
        assert_eq!(c.await.unwrap().unwrap_err(), KeysError::Status(503));
    }
    assert_eq!(registry.calls().keys, 1);
    registry.set_keys(vec![ok(signer.keys_document())]);
    clock.advance_ms(COLD_RETRY_MS);
    assert_eq!(cache.current().await.unwrap().len(), 1);
    assert_eq!(registry.calls().keys, 2);
}

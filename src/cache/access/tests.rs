//! Unit tests of the access-validation cache, on the injected clock and the in-process fake registry.

use super::*;
use crate::clock::ManualClock;
use crate::registry::TransportError;
use crate::registry::fake::{FakeRegistry, status};

const T0: u64 = 1_767_225_600_000;
const TIMING: AccessTiming = AccessTiming {
    positive_ttl_ms: 60_000,
    negative_ttl_ms: 10_000,
    stale_if_error_ms: 600_000,
    calls_per_agent_per_minute: 1_000,
};

fn subject(exp: u64) -> Subject<'static> {
    Subject {
        access_token: "clw_agt_x",
        agent_did: "did:a",
        ait_jti: "J",
        ait_exp_secs: exp,
    }
}

#[tokio::test]
async fn positive_and_negative_answers_are_reused_for_their_ttls() {
    let (registry, clock, cache) = valid_once();
    let s = subject(u64::MAX / 1000);
    for _ in 0..100 {
        assert_eq!(cache.validate(&s).await, Ok(()));
    }
    assert_eq!(registry.calls().validate, 1);
    clock.advance_ms(60_001);
    registry.set_validate(vec![status(401)]);
    assert_eq!(cache.validate(&s).await, Err(AccessError::Invalid));
    clock.advance_ms(10_000);
    assert_eq!(cache.validate(&s).await, Err(AccessError::Invalid));
    assert_eq!(registry.calls().validate, 2);
    clock.advance_ms(1);
    registry.set_validate(vec![status(204)]);
    assert_eq!(cache.validate(&s).await, Ok(()));
    assert_eq!(registry.calls().validate, 3);
}

#[tokio::test]
async fn registry_failures_use_a_stale_valid_answer_within_limits() {
    let registry = Arc::new(FakeRegistry::default());
    registry.set_validate(vec![status(204), status(500)]);
    let clock = ManualClock::at(T0);
    let cache = Arc::new(AccessCache::new(
        registry.clone(),
        Arc::new(clock.clone()),
        TIMING,
        1_000,
    ));
    let exp = T0 / 1000 + 300;
    assert_eq!(cache.validate(&subject(exp)).await, Ok(()));
    clock.advance_ms(120_000);
    assert_eq!(
        cache.validate(&subject(exp)).await,
        Ok(()),
        "stale answer during a 500"
    );
    assert_eq!(cache.stale_used(), 1);
    // Never past the AIT's exp...
    clock.set_ms(exp * 1000);
    assert_eq!(
        cache.validate(&subject(exp)).await,
        Err(AccessError::Unavailable(Unavailable::Status(500)))
    );
    // ...nor past stale_if_error.
    let long = u64::MAX / 1000;
    clock.set_ms(T0 + 600_001);
    registry.set_validate(vec![Err(TransportError::Timeout)]);
    assert_eq!(
        cache.validate(&subject(long)).await,
        Err(AccessError::Unavailable(Unavailable::Transport(
            TransportError::Timeout
        )))
    );
    // An agent never validated gets no stale answer at all.
    let other = Subject {
        agent_did: "did:b",
        ..subject(long)
    };
    assert!(cache.validate(&other).await.is_err());
}

/// A cache over a registry that answers 204, at `T0`.
fn valid_once() -> (Arc<FakeRegistry>, ManualClock, Arc<AccessCache>) {
    let registry = Arc::new(FakeRegistry::default());
    registry.set_validate(vec![status(204)]);
    let clock = ManualClock::at(T0);
    let cache = Arc::new(AccessCache::new(
        registry.clone(),
        Arc::new(clock.clone()),
        TIMING,
        1_000,
    ));
    (registry, clock, cache)
}

/// Lets spawned renewals run until the registry has seen `calls` validations.
async fn settle_calls(registry: &FakeRegistry, calls: usize) {
    for _ in 0..100 {
        if registry.calls().validate >= calls {
            break;
        }
        tokio::task::yield_now().await;
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(registry.calls().validate, calls);
}

fn token(i: usize) -> String {
    format!("clw_agt_{i}")
}

/// Issue 17: a flood of made-up tokens (each refused by the registry) fills the refused map;
/// a valid answer is still cached, and stays cached through the next flood.
#[tokio::test]
async fn a_full_cache_keeps_caching_valid_answers() {
    let registry = Arc::new(FakeRegistry::default());
    let clock = ManualClock::at(T0);
    let cache = Arc::new(AccessCache::new(
        registry.clone(),
        Arc::new(clock.clone()),
        TIMING,
        100,
    ));
    registry.set_validate(vec![status(401)]);
    for i in 0..150 {
        let (t, exp) = (token(i), u64::MAX / 1000);
        let s = Subject {
            access_token: &t,
            ait_exp_secs: exp,
            ..subject(exp)
        };
        assert_eq!(cache.validate(&s).await, Err(AccessError::Invalid));
    }
    cache.refused.run_pending_tasks();
    assert!(cache.refused.entry_count() <= 100, "bounded");
    registry.set_validate(vec![status(204)]);
    let s = subject(u64::MAX / 1000);
    for _ in 0..10 {
        assert_eq!(cache.validate(&s).await, Ok(()));
    }
    assert_eq!(
        registry.calls().validate,
        151,
        "the valid answer was cached"
    );
    // A valid answer in use stays cached through another flood.
    registry.set_validate(vec![status(401)]);
    for i in 150..300 {
        let t = token(i);
        let flood = Subject {
            access_token: &t,
            ..subject(u64::MAX / 1000)
        };
        assert_eq!(cache.validate(&flood).await, Err(AccessError::Invalid));
        assert_eq!(cache.validate(&s).await, Ok(()));
    }
    assert_eq!(registry.calls().validate, 301);
}

/// Issue 17: a check cancelled while its registry call hangs (tonic drops the handler at
/// Envoy's deadline) releases the single flight: the next identical miss makes its own call.
#[tokio::test(start_paused = true)]
async fn a_cancelled_check_does_not_block_the_next_identical_miss() {
    let (registry, _clock, cache) = valid_once();
    registry.hang_validate(true);
    let s = subject(u64::MAX / 1000);
    let cancelled =
        tokio::time::timeout(std::time::Duration::from_millis(100), cache.validate(&s)).await;
    assert!(cancelled.is_err(), "the hanging call was cut off");
    assert_eq!(registry.calls().validate, 1);
    registry.hang_validate(false);
    let next = tokio::time::timeout(std::time::Duration::from_secs(1), cache.validate(&s));
    assert_eq!(next.await, Ok(Ok(())));
    assert_eq!(registry.calls().validate, 2);
}

#[tokio::test]
async fn an_answer_in_use_is_renewed_in_the_background_before_it_expires() {
    let (registry, clock, cache) = valid_once();
    let s = subject(u64::MAX / 1000);
    assert_eq!(cache.validate(&s).await, Ok(()));
    clock.advance_ms(47_999);
    assert_eq!(cache.validate(&s).await, Ok(()));
    settle_calls(&registry, 1).await;
    clock.advance_ms(1);
    assert_eq!(cache.validate(&s).await, Ok(()), "answered from the cache");
    settle_calls(&registry, 2).await;
    // Renewed at T0 + 48 s: fresh and not yet due for renewal at T0 + 95 s.
    clock.set_ms(T0 + 95_000);
    assert_eq!(cache.validate(&s).await, Ok(()));
    settle_calls(&registry, 2).await;
    // A renewal answering 401 makes the next check fail at once.
    registry.set_validate(vec![status(401)]);
    clock.set_ms(T0 + 48_000 + 48_000);
    assert_eq!(cache.validate(&s).await, Ok(()));
    settle_calls(&registry, 3).await;
    assert_eq!(cache.validate(&s).await, Err(AccessError::Invalid));
}

#[tokio::test]
async fn after_a_failed_renewal_the_expired_answer_is_used_without_waiting() {
    let (registry, clock, cache) = valid_once();
    let s = subject(u64::MAX / 1000);
    assert_eq!(cache.validate(&s).await, Ok(()));
    registry.set_validate(vec![status(503)]);
    clock.advance_ms(50_000);
    assert_eq!(cache.validate(&s).await, Ok(()));
    settle_calls(&registry, 2).await;
    // Expired now; the renewal failed, so the stale answer is used and a retry started
    // (not on the request path: the registry hangs from here on).
    registry.hang_validate(true);
    clock.advance_ms(20_000);
    assert_eq!(cache.validate(&s).await, Ok(()));
    assert_eq!(cache.stale_used(), 1);
    settle_calls(&registry, 3).await;
    // The retry is still hanging: no second one.
    clock.advance_ms(10_000);
    assert_eq!(cache.validate(&s).await, Ok(()));
    settle_calls(&registry, 3).await;
    assert_eq!(cache.stale_used(), 2);
}

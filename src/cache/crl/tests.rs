//! Unit tests of the CRL cache, on the injected clock and the in-process fake registry.

use super::*;
use crate::clock::ManualClock;
use crate::denial::Denial;
use crate::dev::sign::{Ed25519Signer, RegistrySigner};
use crate::registry::fake::{FakeRegistry, ok, status};
use crate::stage::revocation::crl_verdict;

const T0: u64 = 1_767_225_600_000;
const ISSUER: &str = "https://registry.example.com";

struct Fixture {
    registry: Arc<FakeRegistry>,
    clock: ManualClock,
    keys: Arc<KeyCache>,
    crl: CrlCache,
    signer: RegistrySigner,
}

fn fixture(stale_behavior: StaleBehavior) -> Fixture {
    let signer = RegistrySigner::new("k1", ISSUER, Ed25519Signer::from_seed([5; 32]));
    let registry = Arc::new(FakeRegistry::default());
    registry.set_keys(vec![ok(signer.keys_document())]);
    let clock = ManualClock::at(T0);
    let timing = crate::cache::keys::KeyTiming {
        ttl_ms: 3_600_000,
        max_stale_ms: 86_400_000,
        kid_miss_cooldown_ms: 30_000,
    };
    let keys = Arc::new(KeyCache::new(
        registry.clone(),
        Arc::new(clock.clone()),
        timing,
    ));
    let timing = CrlTiming {
        refresh_interval_ms: 300_000,
        max_age_ms: 900_000,
        stale_behavior,
        push_refresh_interval_ms: 900_000,
    };
    let crl = CrlCache::new(
        registry.clone(),
        Arc::new(clock.clone()),
        ISSUER.into(),
        timing,
    );
    Fixture {
        registry,
        clock,
        keys,
        crl,
        signer,
    }
}

impl Fixture {
    /// What a check sees once the refresher has done whatever is due now.
    async fn refreshed_check(&self) -> Result<(), Denial> {
        self.crl.refresh_if_due(&self.keys).await;
        crl_verdict(self.crl.check(JTI), self.crl.stale_behavior())
    }
}

fn crl_body(signer: &RegistrySigner, jtis: &[&str], iat_ms: u64) -> Vec<u8> {
    let revoked: Vec<(String, String)> = jtis
        .iter()
        .map(|j| {
            (
                signer.agent_did("01KDVA7EC0AGENTC0000000001"),
                (*j).to_owned(),
            )
        })
        .collect();
    let token = signer.sign_crl(&revoked, iat_ms / 1000, "01KDVDKFD0CR00000000000001");
    format!(r#"{{"crl":"{token}"}}"#).into_bytes()
}

const JTI: &str = "01KDVA7EC1AT00000000000003";

#[tokio::test]
async fn reused_until_the_refresh_interval_then_refetched() {
    let f = fixture(StaleBehavior::FailOpen);
    const OTHER: &str = "01KDVA7EC1AT00000000000009";
    f.registry.set_crl(vec![
        ok(crl_body(&f.signer, &[OTHER], T0)),
        ok(crl_body(&f.signer, &[JTI], T0 + 300_000)),
    ]);
    assert_eq!(f.refreshed_check().await, Ok(()));
    f.clock.set_ms(T0 + 299_999);
    assert_eq!(f.refreshed_check().await, Ok(()));
    assert_eq!(f.registry.calls().crl, 1);
    f.clock.set_ms(T0 + 300_000);
    assert_eq!(f.refreshed_check().await, Err(Denial::AitRevoked));
    assert_eq!(f.registry.calls().crl, 2);
}

#[tokio::test]
async fn checks_never_call_the_registry_the_refresher_does() {
    let f = fixture(StaleBehavior::FailOpen);
    f.registry
        .set_crl(vec![ok(crl_body(&f.signer, &[JTI], T0))]);
    // Nothing loaded yet: fail-open allows, and the check itself fetched nothing.
    assert!(!f.crl.check(JTI).revoked);
    assert_eq!(f.registry.calls().crl, 0);
    let crl = Arc::new(f.crl);
    crl.run_refresher(f.keys.clone());
    // Verification runs on the blocking pool: poll until the refresher has loaded the list.
    let loaded = async {
        while crl.refresh_counts() == (0, 0) {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), loaded)
        .await
        .expect("the refresher ran");
    assert_eq!(crl.refresh_counts(), (1, 0));
    assert_eq!(f.registry.calls().crl, 1, "the refresher loaded the list");
    assert!(crl.check(JTI).revoked);
    // Due again: checks keep answering from the held list without calling the registry.
    f.clock.set_ms(T0 + 300_000);
    for _ in 0..100 {
        assert!(crl.check(JTI).revoked);
    }
    assert_eq!(f.registry.calls().crl, 1);
}

#[tokio::test]
async fn healthy_push_lengthens_the_poll_but_never_past_most_of_max_age() {
    let f = fixture(StaleBehavior::FailClosed);
    f.registry.set_crl(vec![status(404)]);
    assert_eq!(f.refreshed_check().await, Ok(()));
    f.crl.set_push_healthy(true);
    // 900 s asked, capped at 80 % of the 900 s max age.
    assert_eq!(f.crl.interval_ms(), 720_000);
    f.clock.set_ms(T0 + 719_999);
    assert_eq!(f.refreshed_check().await, Ok(()));
    assert_eq!(f.registry.calls().crl, 1);
    f.clock.set_ms(T0 + 720_000);
    assert_eq!(f.refreshed_check().await, Ok(()));
    assert_eq!(f.registry.calls().crl, 2);
    f.crl.set_push_healthy(false);
    assert_eq!(f.crl.interval_ms(), 300_000);
}

#[tokio::test]
async fn not_found_is_an_empty_list_even_fail_closed() {
    let f = fixture(StaleBehavior::FailClosed);
    f.registry.set_crl(vec![status(404)]);
    assert_eq!(f.refreshed_check().await, Ok(()));
}

#[tokio::test]
async fn stale_list_fails_closed_or_keeps_the_last_one_open() {
    for (behavior, want) in [
        (StaleBehavior::FailClosed, Err(Denial::CrlUnavailable)),
        (StaleBehavior::FailOpen, Err(Denial::AitRevoked)),
    ] {
        let f = fixture(behavior);
        f.registry
            .set_crl(vec![ok(crl_body(&f.signer, &[JTI], T0)), status(500)]);
        assert_eq!(f.refreshed_check().await, Err(Denial::AitRevoked));
        // Refresh attempts fail, but the list is only stale past max age.
        f.clock.set_ms(T0 + 900_000);
        assert_eq!(f.refreshed_check().await, Err(Denial::AitRevoked));
        f.clock.set_ms(T0 + 900_001);
        assert_eq!(f.refreshed_check().await, want, "{behavior:?}");
    }
}

#[tokio::test]
async fn an_older_list_never_replaces_a_newer_one() {
    let f = fixture(StaleBehavior::FailOpen);
    f.registry.set_crl(vec![
        ok(crl_body(&f.signer, &[JTI], T0)),
        ok(crl_body(
            &f.signer,
            &["01KDVA7EC1AT00000000000009"],
            T0 - 60_000,
        )),
    ]);
    assert_eq!(f.refreshed_check().await, Err(Denial::AitRevoked));
    f.clock.set_ms(T0 + 300_000);
    assert_eq!(f.refreshed_check().await, Err(Denial::AitRevoked));
    assert_eq!(f.registry.calls().crl, 2);
}

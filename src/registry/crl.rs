//! The certificate revocation list, cached with the reference's timing.
//!
//! `age = now - last success`. The list is *stale* when nothing was ever loaded or
//! `age > max_age`; a refresh is *due* when stale or `age >= refresh_interval`, and is attempted
//! on every check while stale, else at most once per `refresh_interval`. A failed refresh only
//! logs. While stale, `fail-closed` answers 503 and `fail-open` keeps the last good list (or
//! nothing). A 404 `CRL_NOT_FOUND` is a valid empty list (`deviations.md` item 3), and a list
//! issued before the one held is ignored (no rollback).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::Registry;
use super::keys::KeyCache;
use crate::clock::Clock;
use crate::denial::Denial;
use crate::protocol::crl::{crl_token_from_body, verify_crl};
use crate::protocol::jws::{Expectations, TokenError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleBehavior {
    FailOpen,
    FailClosed,
}

#[derive(Debug, Clone, Copy)]
pub struct CrlTiming {
    pub refresh_interval_ms: u64,
    pub max_age_ms: u64,
    pub stale_behavior: StaleBehavior,
}

pub struct CrlCache {
    registry: Arc<dyn Registry>,
    clock: Arc<dyn Clock>,
    issuer: String,
    timing: CrlTiming,
    state: Mutex<State>,
    /// One refresh at a time; checks that find one running use the list they have.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default, Clone)]
struct State {
    revoked: Arc<HashSet<String>>,
    issued_at: Option<u64>,
    last_success_ms: Option<u64>,
    last_attempt_ms: Option<u64>,
}

impl CrlCache {
    pub fn new(
        registry: Arc<dyn Registry>,
        clock: Arc<dyn Clock>,
        issuer: String,
        timing: CrlTiming,
    ) -> Self {
        CrlCache {
            registry,
            clock,
            issuer,
            timing,
            state: Mutex::new(State::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// `Ok` unless the AIT `jti` is revoked, or the list is stale under `fail-closed`.
    pub async fn check(&self, jti: &str, keys: &Arc<KeyCache>) -> Result<(), Denial> {
        let now = self.clock.now_ms();
        if self.refresh_wanted(now) {
            self.refresh(keys).await;
        }
        let state = self.lock().clone();
        if self.is_stale(&state, self.clock.now_ms()) {
            tracing::warn!("CRL is stale and could not be refreshed");
            if self.timing.stale_behavior == StaleBehavior::FailClosed {
                return Err(Denial::CrlUnavailable);
            }
        }
        if state.revoked.contains(jti) {
            return Err(Denial::AitRevoked);
        }
        Ok(())
    }

    fn is_stale(&self, state: &State, now: u64) -> bool {
        state
            .last_success_ms
            .is_none_or(|t| now.saturating_sub(t) > self.timing.max_age_ms)
    }

    fn refresh_wanted(&self, now: u64) -> bool {
        let state = self.lock();
        let stale = self.is_stale(&state, now);
        let due = stale
            || state
                .last_success_ms
                .is_some_and(|t| now.saturating_sub(t) >= self.timing.refresh_interval_ms);
        due && (stale
            || state
                .last_attempt_ms
                .is_none_or(|t| now.saturating_sub(t) >= self.timing.refresh_interval_ms))
    }

    async fn refresh(&self, keys: &Arc<KeyCache>) {
        let _one = self.refreshing.lock().await;
        let now = self.clock.now_ms();
        if !self.refresh_wanted(now) {
            return; // another check refreshed while this one waited
        }
        self.lock().last_attempt_ms = Some(now);
        match self.fetch(keys).await {
            Ok(Some((revoked, issued_at))) => {
                let mut state = self.lock();
                if state.issued_at.is_some_and(|held| issued_at < held) {
                    tracing::warn!("ignoring a CRL issued before the one held (rollback)");
                    return;
                }
                state.revoked = Arc::new(revoked);
                state.issued_at = Some(issued_at);
                state.last_success_ms = Some(now);
            }
            Ok(None) => {
                let mut state = self.lock();
                state.revoked = Arc::new(HashSet::new());
                state.last_success_ms = Some(now);
            }
            Err(reason) => tracing::warn!(reason, "CRL refresh failed"),
        }
    }

    /// `Ok(None)` is the registry's "no revocations" (404).
    async fn fetch(&self, keys: &Arc<KeyCache>) -> Result<Option<(HashSet<String>, u64)>, String> {
        let response = self
            .registry
            .fetch_crl()
            .await
            .map_err(|e| e.reason().to_owned())?;
        if response.status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&response.status) {
            return Err(format!("status {}", response.status));
        }
        let token = crl_token_from_body(&response.body).ok_or("CRL payload is invalid")?;
        let expect = Expectations {
            issuer: Some(&self.issuer),
            now_secs: self.clock.now_secs(),
        };
        let key_set = keys.current().await.map_err(|d| d.to_string())?;
        let claims = match verify_crl(&token, &key_set, expect) {
            Err(TokenError::UnknownKid(_, kid)) => {
                let key_set = keys
                    .refresh_for_unknown_kid(&kid)
                    .await
                    .map_err(|d| d.to_string())?;
                verify_crl(&token, &key_set, expect)
            }
            other => other,
        }
        .map_err(|e| e.to_string())?;
        Ok(Some((claims.revoked_jtis(), claims.iat)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::registry::fake::{FakeRegistry, ok, status};
    use crate::sign::{Ed25519Signer, RegistrySigner};

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
        let timing = crate::registry::keys::KeyTiming {
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
        assert_eq!(f.crl.check(JTI, &f.keys).await, Ok(()));
        f.clock.set_ms(T0 + 299_999);
        assert_eq!(f.crl.check(JTI, &f.keys).await, Ok(()));
        assert_eq!(f.registry.calls().1, 1);
        f.clock.set_ms(T0 + 300_000);
        assert_eq!(f.crl.check(JTI, &f.keys).await, Err(Denial::AitRevoked));
        assert_eq!(f.registry.calls().1, 2);
    }

    #[tokio::test]
    async fn not_found_is_an_empty_list_even_fail_closed() {
        let f = fixture(StaleBehavior::FailClosed);
        f.registry.set_crl(vec![status(404)]);
        assert_eq!(f.crl.check(JTI, &f.keys).await, Ok(()));
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
            assert_eq!(f.crl.check(JTI, &f.keys).await, Err(Denial::AitRevoked));
            // Refresh attempts fail, but the list is only stale past max age.
            f.clock.set_ms(T0 + 900_000);
            assert_eq!(f.crl.check(JTI, &f.keys).await, Err(Denial::AitRevoked));
            f.clock.set_ms(T0 + 900_001);
            assert_eq!(f.crl.check(JTI, &f.keys).await, want, "{behavior:?}");
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
        assert_eq!(f.crl.check(JTI, &f.keys).await, Err(Denial::AitRevoked));
        f.clock.set_ms(T0 + 300_000);
        assert_eq!(f.crl.check(JTI, &f.keys).await, Err(Denial::AitRevoked));
        assert_eq!(f.registry.calls().1, 2);
    }
}

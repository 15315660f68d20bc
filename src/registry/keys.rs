//! The registry's signing keys, cached.
//!
//! Reference behaviour (protocol.md §2): keys are fetched before a token is even parsed, kept
//! for `keys_ttl`, refetched when stale, and force-refetched once when a token names an unknown
//! `kid`. A failed fetch is not cached. The first successful load marks the sidecar ready.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Registry, TransportError};
use crate::clock::Clock;
use crate::denial::{Denial, Detail};
use crate::protocol::keys::{KeySet, KeysDocError, parse_keys_document};

pub struct KeyCache {
    registry: Arc<dyn Registry>,
    clock: Arc<dyn Clock>,
    ttl_ms: u64,
    state: Mutex<Option<Loaded>>,
    ready: watch::Sender<bool>,
}

#[derive(Clone)]
struct Loaded {
    keys: KeySet,
    fetched_at_ms: u64,
}

impl KeyCache {
    pub fn new(registry: Arc<dyn Registry>, clock: Arc<dyn Clock>, ttl_ms: u64) -> Self {
        KeyCache {
            registry,
            clock,
            ttl_ms,
            state: Mutex::new(None),
            ready: watch::channel(false).0,
        }
    }

    /// Becomes `true` once keys have loaded, and stays so.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// The cached keys while fresh (`now - fetched_at <= ttl`), else a new fetch.
    pub async fn current(&self) -> Result<KeySet, Denial> {
        let now = self.clock.now_ms();
        let cached = self.lock().clone();
        match cached {
            Some(l) if now.saturating_sub(l.fetched_at_ms) <= self.ttl_ms => Ok(l.keys),
            _ => self.refresh().await,
        }
    }

    /// Fetches the document now and replaces the cache on success.
    pub async fn refresh(&self) -> Result<KeySet, Denial> {
        let keys = match self.registry.fetch_keys().await {
            Err(e) => return Err(unavailable(e)),
            Ok(r) if !(200..300).contains(&r.status) => {
                tracing::warn!(status = r.status, "registry keys fetch answered non-2xx");
                return Err(Denial::KeysUnavailable(Some(Detail::Status(r.status))));
            }
            Ok(r) => parse_keys_document(&r.body).map_err(|e| {
                tracing::warn!(error = ?e, "registry keys document refused");
                match e {
                    KeysDocError::PayloadInvalid => Denial::KeysPayloadInvalid,
                    KeysDocError::Invalid => Denial::KeysInvalid,
                    KeysDocError::NoActiveKey => Denial::KeysUnavailable(None),
                }
            })?,
        };
        *self.lock() = Some(Loaded {
            keys: keys.clone(),
            fetched_at_ms: self.clock.now_ms(),
        });
        self.ready.send_replace(true);
        Ok(keys)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn unavailable(e: TransportError) -> Denial {
    Denial::KeysUnavailable(Some(Detail::Reason(e.reason().to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::registry::fake::{FakeRegistry, ok, status};

    #[tokio::test]
    async fn fresh_keys_are_reused_failures_are_not_cached() {
        let registry = Arc::new(FakeRegistry::default());
        let signer = crate::sign::RegistrySigner::new(
            "k1",
            "https://registry.example.com",
            crate::sign::Ed25519Signer::from_seed([6; 32]),
        );
        registry.set_keys(vec![status(502), ok(signer.keys_document())]);
        let clock = ManualClock::at(1_000_000);
        let cache = KeyCache::new(registry.clone(), Arc::new(clock.clone()), 3_600_000);
        assert_eq!(
            cache.current().await.unwrap_err(),
            Denial::KeysUnavailable(Some(Detail::Status(502)))
        );
        assert!(!*cache.ready().borrow());
        assert_eq!(cache.current().await.unwrap().len(), 1);
        assert!(*cache.ready().borrow());
        clock.advance_ms(3_600_000);
        cache.current().await.unwrap();
        assert_eq!(
            registry.calls().0,
            2,
            "fresh through now - fetched_at == ttl"
        );
        clock.advance_ms(1);
        cache.current().await.unwrap();
        assert_eq!(registry.calls().0, 3);
    }
}

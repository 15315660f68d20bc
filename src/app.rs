//! Builds the running parts from a [`Config`]: registry client, caches, stores, pipeline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Config;
use crate::pipeline::{Pipeline, Settings};
use crate::policy::RoutePolicies;
use crate::registry::Registry;
use crate::registry::access::{AccessCache, AccessTiming};
use crate::registry::crl::{CrlCache, CrlTiming};
use crate::registry::http::{Endpoints, HttpRegistry};
use crate::registry::keys::{KeyCache, KeyTiming};
use crate::store::nonce::MemoryNonceStore;
use crate::store::trust::FileTrustStore;

/// Everything a server needs to answer `Check`.
pub struct App {
    pub pipeline: Pipeline,
    /// Credentials removed from allowed requests.
    pub remove_headers: Vec<String>,
    pub nonces: Arc<MemoryNonceStore>,
    /// Kept free of Envoy's deadline so the denial still gets back in time.
    pub deadline_margin: Duration,
}

impl App {
    /// Wires the app over the HTTP registry named in `config`.
    pub fn from_config(config: &Config, clock: Arc<dyn Clock>) -> Result<App, String> {
        let r = &config.registry;
        let registry = HttpRegistry::new(
            Endpoints {
                keys: r.keys_url.clone(),
                crl: r.crl_url.clone(),
                validate: r.validate_url.clone(),
            },
            Duration::from_millis(r.timeout_ms),
        )
        .map_err(|e| format!("cannot build the registry client: {e}"))?;
        App::with_registry(config, clock, Arc::new(registry))
    }

    /// Wires the app over any registry (tests and the demo use real HTTP fakes through
    /// [`App::from_config`]; this seam is for in-process fakes).
    pub fn with_registry(
        config: &Config,
        clock: Arc<dyn Clock>,
        registry: Arc<dyn Registry>,
    ) -> Result<App, String> {
        let keys = Arc::new(KeyCache::new(
            registry.clone(),
            clock.clone(),
            KeyTiming {
                ttl_ms: config.registry.keys_ttl_secs * 1000,
                max_stale_ms: config.registry.keys_max_stale_secs * 1000,
                kid_miss_cooldown_ms: config.registry.kid_miss_cooldown_secs * 1000,
            },
        ));
        let crl = Arc::new(CrlCache::new(
            registry.clone(),
            clock.clone(),
            config.registry.issuer.clone(),
            CrlTiming {
                refresh_interval_ms: config.crl.refresh_interval_secs * 1000,
                max_age_ms: config.crl.max_age_secs * 1000,
                stale_behavior: config.crl.stale_behavior,
            },
        ));
        let trust = Arc::new(match &config.trust.file {
            Some(path) => FileTrustStore::load(path)?,
            None => FileTrustStore::empty(),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            trust.watch(Duration::from_secs(config.trust.reload_interval_secs));
        }
        let access = Arc::new(AccessCache::new(
            registry.clone(),
            clock.clone(),
            AccessTiming {
                positive_ttl_ms: config.access.ttl_secs * 1000,
                negative_ttl_ms: config.access.negative_ttl_secs * 1000,
                stale_if_error_ms: config.access.stale_if_error_secs * 1000,
            },
        ));
        let capacity = usize::try_from(config.nonce.capacity).unwrap_or(usize::MAX);
        let nonces = Arc::new(MemoryNonceStore::new(capacity));
        let pipeline = Pipeline {
            settings: Settings {
                issuer: config.registry.issuer.clone(),
                max_skew_secs: config.proof.max_skew_secs,
                nonce_margin_ms: config.nonce.margin_secs * 1000,
                policies: RoutePolicies {
                    rules: config.routes.clone(),
                    named: config.policies.clone(),
                },
            },
            clock,
            access,
            keys,
            crl,
            trust,
            nonces: nonces.clone(),
        };
        Ok(App {
            pipeline,
            remove_headers: config.headers.remove.clone(),
            nonces,
            deadline_margin: Duration::from_millis(config.registry.deadline_margin_ms),
        })
    }

    /// `true` once the signing keys have loaded.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.pipeline.keys.ready()
    }

    /// Starts the background work: loading the signing keys until they load once (backing off
    /// to 30 s), and the CRL refresher.
    pub fn warm_up(self: &Arc<Self>) {
        self.pipeline.crl.run_refresher(self.pipeline.keys.clone());
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(250);
            loop {
                let Some(app) = app.upgrade() else { return };
                match app.pipeline.keys.refresh().await {
                    Ok(_) => return,
                    Err(denial) => tracing::warn!(%denial, "signing keys not loaded yet"),
                }
                drop(app);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        });
    }
}

//! Builds the running parts from a [`Config`]: registry client, caches, stores, pipeline.
//!
//! [`App::build`] reads as the list of what a server is made of; `wiring.rs` builds each part
//! from its config section, `observe.rs` registers the observable metrics.

mod observe;
mod wiring;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::watch;

use crate::cache::ait::AitCache;
use crate::cache::bearer::BearerCache;
use crate::cache::keys::KeyCache;
use crate::clock::Clock;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::registry::Registry;
use crate::registry::guard::Guarded;
use crate::revocation::{Events, StreamSettings, spawn_consumer};
use crate::store::nonce::NonceStore;
use crate::store::redis::Redis;
use crate::store::trust::TrustStore;
use crate::telemetry::Telemetry;

/// Everything a server needs to answer `Check`.
pub struct App {
    pub pipeline: Pipeline,
    /// Credentials removed from allowed requests.
    pub(crate) remove_headers: Vec<String>,
    pub nonces: Arc<dyn NonceStore>,
    /// The Redis connection, when a store uses it.
    pub redis: Option<Redis>,
    /// The registry as the caches see it: a timeout and a circuit breaker per endpoint.
    pub registry: Arc<Guarded>,
    /// Kept free of Envoy's deadline so the denial still gets back in time.
    pub(crate) deadline_margin: Duration,
    /// The longest a Check waits on the registry, whatever its deadline.
    pub(crate) request_timeout: Duration,
    /// Where registry events come from, when a Redis stream is consumed.
    pub(crate) event_stream: Option<StreamSettings>,
    /// Who may `POST /v1/events`.
    pub(crate) events_endpoint: EventsEndpoint,
    /// Metrics (Prometheus `/metrics`, OTLP when configured).
    pub telemetry: Telemetry,
    /// The gRPC listener's limits.
    pub(crate) limits: ListenerLimits,
    /// After the shutdown signal: health NOT_SERVING and checks still answered this long, then
    /// `grace` for in-flight checks.
    pub(crate) drain: Duration,
    pub(crate) grace: Duration,
    /// Set once shutdown began (`/readyz` answers 503).
    pub(crate) draining: std::sync::atomic::AtomicBool,
    /// TLS on the gRPC listener, when `tls.cert_file` is set.
    pub(crate) tls: Option<crate::server::tls::Tls>,
}

/// `limits.connections`, `limits.concurrent_checks`, and the largest gRPC message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenerLimits {
    pub(crate) connections: usize,
    pub(crate) concurrent_checks: usize,
    pub(crate) message_bytes: usize,
    pub(crate) in_flight_bytes: usize,
}

/// Who may push a revocation through `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventsEndpoint {
    /// `events.admin_endpoint: false`: 404.
    Off,
    /// Callers presenting this bearer token (`events.token_file`).
    Token(String),
    /// Anyone reaching the loopback admin listener (`events.admin_unauthenticated: true`).
    Unauthenticated,
    /// No token configured: every call is refused (401) until one is.
    NoToken,
}

/// Parts that replace what the config would build (in-process fakes, test doubles).
#[derive(Default)]
pub struct Parts {
    pub registry: Option<Arc<dyn Registry>>,
    pub trust: Option<Arc<dyn TrustStore>>,
}

impl App {
    /// Wires the app over the HTTP registry and the trust file named in `config`.
    pub fn from_config(config: &Config, clock: Arc<dyn Clock>) -> Result<App, String> {
        App::build(config, clock, Parts::default())
    }

    /// Wires the app, taking the given parts instead of building them from `config`.
    pub fn build(config: &Config, clock: Arc<dyn Clock>, parts: Parts) -> Result<App, String> {
        let telemetry = Telemetry::new(&config.telemetry)?;
        let metrics = telemetry.metrics.clone();
        let reg = wiring::registry(config, &clock, &metrics, parts.registry)?;
        let bearer = wiring::bearer_issuers(config, &clock, &metrics)?;
        let agents = wiring::signature_agents(config, &clock, &metrics)?;
        let redis = wiring::redis(config)?;
        let trust = wiring::trust(config, &clock, parts.trust, redis.as_ref())?;
        let nonces = wiring::nonces(config, &clock, redis.as_ref())?;
        let pipeline = Pipeline {
            settings: wiring::settings(config),
            clock,
            access: reg.access,
            keys: reg.keys,
            aits: Arc::new(AitCache::new(config.limits.ait_cache_capacity)),
            crl: reg.crl,
            trust,
            events: Arc::new(Events::new(wiring::size(config.events.capacity))),
            bearer,
            bearer_tokens: Arc::new(BearerCache::new(config.limits.bearer_cache_capacity)),
            agents,
            limiter: wiring::limiter(config, redis.as_ref()),
            signature_checks: AtomicU64::new(0),
            metrics,
            nonces: nonces.clone(),
            security: Arc::new(crate::security::Monitor::new(&config.security)),
        };
        observe::register(telemetry.meter(), &pipeline, &reg.guarded, &nonces);
        Ok(App {
            telemetry,
            pipeline,
            remove_headers: config.headers.remove.clone(),
            nonces,
            redis,
            registry: reg.guarded,
            deadline_margin: config.registry.deadline_margin,
            request_timeout: config.registry.request_timeout,
            event_stream: wiring::event_stream(config),
            events_endpoint: match (&config.events, &config.events.token) {
                (e, _) if !e.admin_endpoint => EventsEndpoint::Off,
                (_, Some(token)) => EventsEndpoint::Token(token.clone()),
                (e, None) if e.admin_unauthenticated => EventsEndpoint::Unauthenticated,
                (_, None) => EventsEndpoint::NoToken,
            },
            limits: ListenerLimits {
                connections: wiring::size(config.limits.connections),
                concurrent_checks: wiring::size(config.limits.concurrent_checks),
                message_bytes: wiring::size(
                    config.limits.body_bytes + crate::config::HEADERS_BUDGET,
                ),
                in_flight_bytes: wiring::size(config.limits.in_flight_bytes),
            },
            drain: config.listen.drain,
            grace: config.listen.grace,
            draining: std::sync::atomic::AtomicBool::new(false),
            tls: crate::server::tls::Tls::from_config(&config.tls)?,
        })
    }

    /// `true` once the signing keys have loaded.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.pipeline.keys.ready()
    }

    /// Starts the background work: loading the signing keys until they load once (backing off
    /// to 30 s), the CRL refresher, and the registry-event consumer.
    pub fn warm_up(self: &Arc<Self>) {
        self.pipeline.crl.run_refresher(self.pipeline.keys.clone());
        if let Some(settings) = &self.event_stream {
            let p = &self.pipeline;
            spawn_consumer(&p.events, settings.clone(), p.clock.clone(), p.crl.clone());
        }
        let p = &self.pipeline;
        let reading = observe::security_reading(p, &self.registry);
        let logger = self.telemetry.security_logger();
        p.security
            .start(p.clock.clone(), reading, self.redis.clone(), logger);
        load_until_ok(&self.pipeline.keys, "registry signing keys");
        for issuer in &self.pipeline.bearer {
            load_until_ok(&issuer.keys, "bearer issuer keys");
        }
    }
}

/// Fetches a key set until it loads once, backing off from 250 ms to 30 s; stops when the cache
/// is dropped.
fn load_until_ok(keys: &Arc<KeyCache>, what: &'static str) {
    let keys = Arc::downgrade(keys);
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(250);
        loop {
            let Some(cache) = keys.upgrade() else { return };
            match cache.refresh().await {
                Ok(_) => return,
                Err(error) => tracing::warn!(%error, what, "keys not loaded yet"),
            }
            drop(cache);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    });
}

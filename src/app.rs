//! Builds the running parts from a [`Config`]: registry client, caches, stores, pipeline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Config;
use crate::pipeline::{Pipeline, Settings};
use crate::policy::RoutePolicies;
use crate::protocol::bearer::parse_jwks;
use crate::ratelimit::{LocalLimiter, RedisLimiter};
use crate::registry::Registry;
use crate::registry::access::{AccessCache, AccessTiming};
use crate::registry::breaker::BreakerSettings;
use crate::registry::crl::{CrlCache, CrlTiming};
use crate::registry::guard::Guarded;
use crate::registry::http::{BodyLimits, Endpoints, HttpRegistry};
use crate::registry::keys::{KeyCache, KeyTiming};
use crate::revocation::{Events, StreamSettings, spawn_consumer};
use crate::stage::ait_cache::AitCache;
use crate::stage::bearer::IssuerKeys;
use crate::store::nonce::{MemoryNonceStore, NonceStore};
use crate::store::nonce_file::{FileNonceStore, Fsync};
use crate::store::redis::{Redis, RedisNonceStore, RedisTrustStore};
use crate::store::trust::{FileTrustStore, TrustStore};
use crate::store::trust_cache::{TrustCache, TrustTiming};
use crate::telemetry::Telemetry;
use std::sync::atomic::AtomicU64;

/// Verified AITs kept (one per agent token in use; about 1 KiB each).
const AIT_CACHE_CAPACITY: usize = 100_000;

/// Everything a server needs to answer `Check`.
pub struct App {
    pub pipeline: Pipeline,
    /// Credentials removed from allowed requests.
    pub remove_headers: Vec<String>,
    pub nonces: Arc<dyn NonceStore>,
    /// The Redis connection, when a store uses it.
    pub redis: Option<Redis>,
    /// The registry as the caches see it: a timeout and a circuit breaker per endpoint.
    pub registry: Arc<Guarded>,
    /// Kept free of Envoy's deadline so the denial still gets back in time.
    pub deadline_margin: Duration,
    /// The longest a Check waits on the registry, whatever its deadline.
    pub request_timeout: Duration,
    /// Where registry events come from, when a Redis stream is consumed.
    pub event_stream: Option<StreamSettings>,
    /// The bearer token `POST /v1/events` requires, if any; `None` in `events_endpoint` when the
    /// endpoint is off.
    pub events_endpoint: Option<Option<String>>,
    /// Metrics (Prometheus `/metrics`, OTLP when configured).
    pub telemetry: Telemetry,
}

/// A configured byte limit as a length (saturating on a 32-bit target).
fn limit(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
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
        let r = &config.registry;
        let telemetry = Telemetry::new(&config.telemetry)?;
        let metrics = telemetry.metrics.clone();
        let background_timeout = Duration::from_millis(r.timeout_ms);
        let registry: Arc<dyn Registry> = match parts.registry {
            Some(registry) => registry,
            None => Arc::new(
                HttpRegistry::new(
                    Endpoints {
                        keys: r.keys_url.clone(),
                        crl: r.crl_url.clone(),
                        validate: r.validate_url.clone(),
                    },
                    background_timeout,
                    BodyLimits {
                        keys: limit(config.limits.keys_bytes),
                        crl: limit(config.limits.crl_bytes),
                    },
                )
                .map_err(|e| format!("cannot build the registry client: {e}"))?,
            ),
        };
        let breakers = BreakerSettings {
            failures: u32::try_from(r.breaker_failures).unwrap_or(u32::MAX),
            open_ms: r.breaker_open_secs * 1000,
        };
        let guarded = Arc::new(Guarded::new(
            registry,
            background_timeout,
            breakers,
            clock.clone(),
            metrics.clone(),
        ));
        let key_timing = KeyTiming {
            ttl_ms: r.keys_ttl_secs * 1000,
            max_stale_ms: r.keys_max_stale_secs * 1000,
            kid_miss_cooldown_ms: r.kid_miss_cooldown_secs * 1000,
        };
        // Each bearer issuer's JWKS: the same cache, breaker and deadlines as the registry keys.
        let mut bearer = Vec::new();
        for issuer in &config.bearer {
            let url = issuer.jwks_url.clone();
            let endpoints = Endpoints {
                keys: url.clone(),
                crl: url.clone(),
                validate: url,
            };
            let jwks_limit = limit(config.limits.jwks_bytes);
            let limits = BodyLimits {
                keys: jwks_limit,
                crl: jwks_limit,
            };
            let http = HttpRegistry::new(endpoints, background_timeout, limits)
                .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
            let jwks = Arc::new(Guarded::named(
                Arc::new(http),
                background_timeout,
                breakers,
                clock.clone(),
                metrics.clone(),
                "jwks",
            ));
            bearer.push(IssuerKeys {
                config: issuer.clone(),
                keys: Arc::new(KeyCache::with_parser(
                    jwks.clone(),
                    clock.clone(),
                    key_timing,
                    parse_jwks,
                )),
                jwks,
            });
        }
        let registry: Arc<dyn Registry> = guarded.clone();
        let keys = Arc::new(KeyCache::new(registry.clone(), clock.clone(), key_timing));
        let crl = Arc::new(CrlCache::new(
            registry.clone(),
            clock.clone(),
            config.registry.issuer.clone(),
            CrlTiming {
                refresh_interval_ms: config.crl.refresh_interval_secs * 1000,
                max_age_ms: config.crl.max_age_secs * 1000,
                stale_behavior: config.crl.stale_behavior,
                push_refresh_interval_ms: config.crl.push_refresh_interval_secs * 1000,
            },
        ));
        let redis = match &config.redis.url {
            Some(url)
                if config.nonce.store == "redis"
                    || config.trust.store == "redis"
                    || config.rate_limit.store == "redis" =>
            {
                Some(
                    Redis::connect(
                        url,
                        Duration::from_millis(config.redis.timeout_ms),
                        &config.redis.prefix,
                    )
                    .map_err(|e| format!("redis.url: {e}"))?,
                )
            }
            _ => None,
        };
        let store: Arc<dyn TrustStore> = match (parts.trust, &redis) {
            (Some(store), _) => store,
            (None, Some(r)) if config.trust.store == "redis" => {
                Arc::new(RedisTrustStore(r.clone()))
            }
            (None, _) => {
                let file = Arc::new(match &config.trust.file {
                    Some(path) => FileTrustStore::load(path)?,
                    None => FileTrustStore::empty(),
                });
                if tokio::runtime::Handle::try_current().is_ok() {
                    file.watch(Duration::from_secs(config.trust.reload_interval_secs));
                }
                file
            }
        };
        let trust = Arc::new(TrustCache::new(
            store,
            clock.clone(),
            TrustTiming {
                ttl_ms: config.trust.cache_ttl_secs * 1000,
                stale_if_error_ms: config.trust.stale_if_error_secs * 1000,
            },
        ));
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
        let n = &config.nonce;
        let nonces: Arc<dyn NonceStore> = match (n.store.as_str(), &redis) {
            ("redis", Some(r)) => Arc::new(RedisNonceStore(r.clone())),
            ("file", _) => {
                let fsync = match n.fsync.as_str() {
                    "always" => Fsync::Always,
                    _ => Fsync::Interval(n.fsync_interval_ms),
                };
                Arc::new(
                    FileNonceStore::open(&n.dir, capacity, fsync, clock.now_ms())
                        .map_err(|e| format!("nonce.dir: {e}"))?,
                )
            }
            _ => Arc::new(MemoryNonceStore::new(capacity)),
        };
        let event_stream = match (&config.redis.url, config.events.consume) {
            (Some(url), true) => Some(StreamSettings {
                url: url.clone(),
                stream: config.events.stream.clone(),
                dlq: config.events.dlq.clone(),
                replay_ms: config.events.replay_days * 86_400_000,
            }),
            _ => None,
        };
        let events_endpoint = config
            .events
            .admin_endpoint
            .then(|| config.events.token.clone());
        let pipeline = Pipeline {
            settings: Settings {
                issuer: config.registry.issuer.clone(),
                token_bytes: limit(config.limits.token_bytes),
                max_skew_secs: config.proof.max_skew_secs,
                skew_warning_secs: config.proof.skew_warning_secs,
                rate_limit_fail_closed: config.rate_limit.fail_closed,
                client_header: config.rate_limit.client_header.clone(),
                nonce_store: match config.nonce.store.as_str() {
                    "redis" => "redis",
                    "file" => "file",
                    _ => "memory",
                },
                nonce_margin_ms: config.nonce.margin_secs * 1000,
                policies: RoutePolicies {
                    rules: config.routes.clone(),
                    named: config.policies.clone(),
                },
            },
            clock,
            access,
            keys,
            aits: Arc::new(AitCache::new(AIT_CACHE_CAPACITY)),
            crl,
            trust,
            events: Arc::new(Events::default()),
            bearer,
            limiter: match (&redis, config.rate_limit.store.as_str()) {
                (Some(r), "redis") => Arc::new(RedisLimiter(r.clone())),
                _ => {
                    let capacity =
                        usize::try_from(config.rate_limit.capacity).unwrap_or(usize::MAX);
                    Arc::new(LocalLimiter::new(capacity))
                }
            },
            signature_checks: AtomicU64::new(0),
            metrics,
            nonces: nonces.clone(),
        };
        observe(telemetry.meter(), &pipeline, &guarded, &nonces);
        Ok(App {
            telemetry,
            pipeline,
            remove_headers: config.headers.remove.clone(),
            nonces,
            redis,
            registry: guarded,
            deadline_margin: Duration::from_millis(config.registry.deadline_margin_ms),
            request_timeout: Duration::from_millis(config.registry.request_timeout_ms),
            event_stream,
            events_endpoint,
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
                Err(denial) => tracing::warn!(%denial, what, "keys not loaded yet"),
            }
            drop(cache);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    });
}

/// Registers the observable instruments: values the components keep, read at collection time.
fn observe(
    meter: &opentelemetry::metrics::Meter,
    p: &Pipeline,
    registry: &Arc<Guarded>,
    nonces: &Arc<dyn NonceStore>,
) {
    use crate::registry::breaker::{Breaker, State};
    use opentelemetry::KeyValue;
    // Every breaker with its labels: the registry's three, then each bearer issuer's JWKS one
    // (labelled with the configured issuer, a bounded set).
    type Observed = (Arc<Guarded>, fn(&Guarded) -> &Breaker, Option<String>);
    let mut all: Vec<Observed> = vec![
        (registry.clone(), |g| &g.keys, None),
        (registry.clone(), |g| &g.crl, None),
        (registry.clone(), |g| &g.validate, None),
    ];
    for issuer in &p.bearer {
        let name = Some(issuer.config.issuer.clone());
        all.push((issuer.jwks.clone(), |g| &g.keys, name));
    }
    let all = Arc::new(all);
    let labels = |b: &Breaker, issuer: &Option<String>| {
        let mut labels = vec![KeyValue::new("endpoint", b.endpoint())];
        labels.extend(issuer.clone().map(|i| KeyValue::new("issuer", i)));
        labels
    };
    let breakers = all.clone();
    meter
        .i64_observable_gauge("claw_authz_breaker_state")
        .with_description(
            "Circuit breaker (registry endpoints, bearer JWKS): 0 closed, 1 open, 2 half-open",
        )
        .with_callback(move |o| {
            for (guard, breaker, issuer) in breakers.iter() {
                let b = breaker(guard);
                let value = match b.state() {
                    State::Closed => 0,
                    State::Open => 1,
                    State::HalfOpen => 2,
                };
                o.observe(value, &labels(b, issuer));
            }
        })
        .build();
    meter
        .u64_observable_counter("claw_authz_breaker_transitions")
        .with_description("Circuit breaker transitions (registry endpoints, bearer JWKS)")
        .with_callback(move |o| {
            for (guard, breaker, issuer) in all.iter() {
                let b = breaker(guard);
                for to in [State::Closed, State::Open, State::HalfOpen] {
                    let mut labels = labels(b, issuer);
                    labels.push(KeyValue::new("to", to.as_str()));
                    o.observe(b.transitions_to(to), &labels);
                }
            }
        })
        .build();
    let (keys, access, trust) = (p.keys.clone(), p.access.clone(), p.trust.clone());
    let aits = p.aits.clone();
    meter
        .u64_observable_counter("claw_authz_cache_results")
        .with_description("Cache lookups by result")
        .with_callback(move |o| {
            let caches = [
                ("keys", keys.counts.get()),
                ("ait", aits.counts.get()),
                ("access", access.counts.get()),
                ("trust", trust.counts.get()),
            ];
            for (cache, counts) in caches {
                for (result, n) in ["hit", "stale", "miss"].into_iter().zip(counts) {
                    let labels = [
                        KeyValue::new("cache", cache),
                        KeyValue::new("result", result),
                    ];
                    o.observe(n, &labels);
                }
            }
        })
        .build();
    let (keys, crl, clock) = (p.keys.clone(), p.crl.clone(), p.clock.clone());
    meter
        .f64_observable_gauge("claw_authz_data_age")
        .with_unit("s")
        .with_description("Age of the signing key set and of the CRL (absent until loaded)")
        .with_callback(move |o| {
            let now = clock.now_ms();
            for (data, age) in [("keys", keys.age_ms(now)), ("crl", crl.age_ms(now))] {
                if let Some(ms) = age {
                    o.observe(ms as f64 / 1000.0, &[KeyValue::new("data", data)]);
                }
            }
        })
        .build();
    let crl = p.crl.clone();
    meter
        .u64_observable_counter("claw_authz_crl_refreshes")
        .with_description(
            "CRL refreshes by result (failed: transport, status, size, payload or signature)",
        )
        .with_callback(move |o| {
            let (ok, failed) = crl.refresh_counts();
            o.observe(ok, &[KeyValue::new("result", "ok")]);
            o.observe(failed, &[KeyValue::new("result", "failed")]);
        })
        .build();
    let n = nonces.clone();
    meter
        .u64_observable_gauge("claw_authz_nonce_store_size")
        .with_description("Live nonce records held by this replica (memory and file stores)")
        .with_callback(move |o| {
            if let Some(len) = n.live_records() {
                o.observe(len, &[]);
            }
        })
        .build();
    let n = nonces.clone();
    meter
        .u64_observable_counter("claw_authz_nonce_store_full")
        .with_description("Nonces refused because the store was full")
        .with_callback(move |o| o.observe(n.refused_full(), &[]))
        .build();
    let events = p.events.clone();
    meter
        .u64_observable_counter("claw_authz_revocation_events")
        .with_description("Registry events by result")
        .with_callback(move |o| {
            let c = events.counts();
            let results = [
                ("revoked", c.revoked),
                ("duplicate", c.duplicates),
                ("ignored", c.ignored),
                ("rejected", c.rejected),
            ];
            for (result, n) in results {
                o.observe(n, &[KeyValue::new("result", result)]);
            }
        })
        .build();
    let (keys, access, trust) = (p.keys.clone(), p.access.clone(), p.trust.clone());
    meter
        .u64_observable_counter("claw_authz_stale_served")
        .with_description("Checks answered from stale data because the source failed")
        .with_callback(move |o| {
            let served = [
                ("keys", keys.stale_served()),
                ("access", access.stale_used()),
                ("trust", trust.stale_used()),
            ];
            for (data, n) in served {
                o.observe(n, &[KeyValue::new("data", data)]);
            }
        })
        .build();
}

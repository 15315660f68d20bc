//! One builder per concern, each from its config section: the registry (client, breakers,
//! caches), the bearer issuers, Redis, trust, nonces, the limiter, the pipeline settings.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::access::{AccessCache, AccessTiming};
use crate::cache::crl::{CrlCache, CrlTiming};
use crate::cache::keys::{KeyCache, KeyTiming};
use crate::cache::trust::{TrustCache, TrustTiming};
use crate::clock::Clock;
use crate::config::{Config, FsyncMode, LimitStoreKind, NonceStoreKind, TrustStoreKind};
use crate::metrics::Metrics;
use crate::pipeline::Settings;
use crate::policy::RoutePolicies;
use crate::protocol::bearer::parse_jwks;
use crate::ratelimit::{Limiter, LocalLimiter, RedisLimiter};
use crate::registry::Registry;
use crate::registry::breaker::BreakerSettings;
use crate::registry::guard::Guarded;
use crate::registry::http::{BodyLimits, Endpoints, HttpRegistry};
use crate::registry::jwks::Jwks;
use crate::revocation::StreamSettings;
use crate::stage::bearer::IssuerKeys;
use crate::stage::httpsig::AgentKeys;
use crate::store::nonce::{MemoryNonceStore, NonceStore};
use crate::store::nonce_file::{FileNonceStore, Fsync};
use crate::store::nonce_redis::RedisNonceStore;
use crate::store::redis::{Redis, RedisTrustStore};
use crate::store::trust::{FileTrustStore, TrustStore};

/// A configured time in milliseconds, the unit of the injected clock the components run on.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A configured byte limit or capacity as a length (saturating on a 32-bit target).
pub(super) fn size(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The registry and what is cached from it.
pub(super) struct RegistryParts {
    pub(crate) guarded: Arc<Guarded>,
    pub keys: Arc<KeyCache>,
    pub crl: Arc<CrlCache>,
    pub access: Arc<AccessCache>,
}

fn breakers(config: &Config) -> BreakerSettings {
    let r = &config.registry;
    BreakerSettings {
        failures: u32::try_from(r.breaker_failures).unwrap_or(u32::MAX),
        open_ms: ms(r.breaker_open),
    }
}

fn key_timing(config: &Config) -> KeyTiming {
    let r = &config.registry;
    KeyTiming {
        ttl_ms: ms(r.keys_ttl),
        max_stale_ms: ms(r.keys_max_stale),
        kid_miss_cooldown_ms: ms(r.kid_miss_cooldown),
    }
}

/// The registry over HTTP (or `given`), behind its timeout and breakers, and its caches.
pub(super) fn registry(
    config: &Config,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    given: Option<Arc<dyn Registry>>,
) -> Result<RegistryParts, String> {
    let r = &config.registry;
    let background_timeout = r.timeout;
    let registry: Arc<dyn Registry> = match given {
        Some(registry) => registry,
        None => {
            let endpoints = Endpoints {
                keys: r.keys_url.clone(),
                crl: r.crl_url.clone(),
                validate: r.validate_url.clone(),
            };
            let limits = BodyLimits {
                keys: size(config.limits.keys_bytes),
                crl: size(config.limits.crl_bytes),
            };
            Arc::new(
                HttpRegistry::new(endpoints, background_timeout, limits)
                    .map_err(|e| format!("cannot build the registry client: {e}"))?,
            )
        }
    };
    let guarded = Arc::new(Guarded::new(
        registry,
        background_timeout,
        breakers(config),
        clock.clone(),
        metrics.clone(),
    ));
    let registry: Arc<dyn Registry> = guarded.clone();
    let keys = Arc::new(KeyCache::new(
        registry.clone(),
        clock.clone(),
        key_timing(config),
    ));
    let c = &config.crl;
    let crl = Arc::new(CrlCache::new(
        registry.clone(),
        clock.clone(),
        r.issuer.clone(),
        CrlTiming {
            refresh_interval_ms: ms(c.refresh_interval),
            max_age_ms: ms(c.max_age),
            stale_behavior: c.stale_behavior,
            push_refresh_interval_ms: ms(c.push_refresh_interval),
        },
    ));
    let a = &config.access;
    let access = Arc::new(AccessCache::new(
        registry,
        clock.clone(),
        AccessTiming {
            positive_ttl_ms: ms(a.ttl),
            negative_ttl_ms: ms(a.negative_ttl),
            stale_if_error_ms: ms(a.stale_if_error),
            calls_per_agent_per_minute: a.calls_per_agent_per_minute,
        },
        a.capacity,
    ));
    Ok(RegistryParts {
        guarded,
        keys,
        crl,
        access,
    })
}

/// Each bearer issuer's JWKS: its own endpoint and breaker, the same cache and deadlines as the
/// registry keys.
pub(super) fn bearer_issuers(
    config: &Config,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
) -> Result<Vec<IssuerKeys>, String> {
    let mut bearer = Vec::new();
    for issuer in &config.bearer {
        let jwks = Jwks::new(
            issuer.jwks_url.clone(),
            config.registry.timeout,
            size(config.limits.jwks_bytes),
            breakers(config),
            clock.clone(),
            metrics.clone(),
        )
        .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
        let jwks = Arc::new(jwks);
        bearer.push(IssuerKeys {
            config: issuer.clone(),
            keys: Arc::new(KeyCache::with_parser(
                jwks.clone(),
                clock.clone(),
                key_timing(config),
                parse_jwks,
            )),
            jwks,
        });
    }
    Ok(bearer)
}

/// Each Web Bot Auth agent's key directory: its own endpoint (no redirects, public addresses
/// only unless allowed) and breaker, the same stale-while-revalidate cache and deadlines as the
/// registry keys, keyed by thumbprint.
pub(super) fn signature_agents(
    config: &Config,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
) -> Result<Vec<AgentKeys>, String> {
    let h = &config.httpsig;
    h.agents
        .iter()
        .map(|agent| {
            let directory = crate::registry::directory::endpoint(
                agent.directory.clone(),
                config.registry.timeout,
                size(config.limits.jwks_bytes),
                h.allow_private_addresses,
                breakers(config),
                clock.clone(),
                metrics.clone(),
            )
            .map_err(|e| format!("cannot build the directory client: {e}"))?;
            let directory = Arc::new(directory);
            Ok(AgentKeys {
                config: agent.clone(),
                keys: Arc::new(KeyCache::with_parser(
                    directory.clone(),
                    clock.clone(),
                    key_timing(config),
                    crate::httpsig::keys::parse_directory,
                )),
                directory,
            })
        })
        .collect()
}

fn redis_target(config: &Config, url: &str) -> crate::store::redis::Target {
    crate::store::redis::Target {
        url: url.to_owned(),
        ca: config.redis.ca.clone(),
        cluster: config.redis.cluster,
    }
}

/// The Redis connection, when a store uses it.
pub(super) fn redis(config: &Config) -> Result<Option<Redis>, String> {
    let used = config.nonce.store == NonceStoreKind::Redis
        || config.trust.store == TrustStoreKind::Redis
        || config.rate_limit.store == LimitStoreKind::Redis;
    match &config.redis.url {
        Some(url) if used => {
            let target = redis_target(config, url);
            Redis::connect(&target, config.redis.timeout, &config.redis.prefix)
                .map(Some)
                .map_err(|e| format!("redis.url: {e}"))
        }
        _ => Ok(None),
    }
}

/// The trust store (`given`, Redis or the watched file) behind its answer cache.
pub(super) fn trust(
    config: &Config,
    clock: &Arc<dyn Clock>,
    given: Option<Arc<dyn TrustStore>>,
    redis: Option<&Redis>,
) -> Result<Arc<TrustCache>, String> {
    let t = &config.trust;
    let store: Arc<dyn TrustStore> = match (given, redis) {
        (Some(store), _) => store,
        (None, Some(r)) if t.store == TrustStoreKind::Redis => Arc::new(RedisTrustStore(r.clone())),
        (None, _) => {
            let file = Arc::new(match &t.file {
                Some(path) => FileTrustStore::load(path)?,
                None => FileTrustStore::empty(),
            });
            if tokio::runtime::Handle::try_current().is_ok() {
                file.watch(t.reload_interval);
            }
            file
        }
    };
    Ok(Arc::new(TrustCache::new(
        store,
        clock.clone(),
        TrustTiming {
            ttl_ms: ms(t.cache_ttl),
            stale_if_error_ms: ms(t.stale_if_error),
            capacity: t.cache_capacity,
        },
    )))
}

/// The nonce store the config names.
pub(super) fn nonces(
    config: &Config,
    clock: &Arc<dyn Clock>,
    redis: Option<&Redis>,
) -> Result<Arc<dyn NonceStore>, String> {
    let n = &config.nonce;
    let capacity = size(n.capacity);
    let per_agent = size(n.per_agent_capacity);
    Ok(match (n.store, redis) {
        (NonceStoreKind::Redis, Some(r)) => {
            Arc::new(RedisNonceStore::new(r.clone(), n.per_agent_capacity))
        }
        (NonceStoreKind::File, _) => {
            let fsync = match n.fsync {
                FsyncMode::Always => Fsync::Always,
                FsyncMode::Interval => Fsync::Interval(ms(n.fsync_interval)),
            };
            Arc::new(
                FileNonceStore::open(&n.dir, capacity, per_agent, fsync, clock.now_ms())
                    .map_err(|e| format!("nonce.dir: {e}"))?,
            )
        }
        // Redis without a connection cannot happen: the config requires `redis.url` for it.
        (NonceStoreKind::Memory | NonceStoreKind::Redis, _) => {
            Arc::new(MemoryNonceStore::new(capacity, per_agent))
        }
    })
}

/// Where route policies' rate limits are kept.
pub(super) fn limiter(config: &Config, redis: Option<&Redis>) -> Arc<dyn Limiter> {
    match (redis, config.rate_limit.store) {
        (Some(r), LimitStoreKind::Redis) => Arc::new(RedisLimiter(r.clone())),
        _ => {
            let capacity = size(config.rate_limit.capacity);
            Arc::new(LocalLimiter::new(capacity))
        }
    }
}

/// The Redis stream of registry events, when configured and consumed.
pub(super) fn event_stream(config: &Config) -> Option<StreamSettings> {
    match (&config.redis.url, config.events.consume) {
        (Some(url), true) => Some(StreamSettings {
            target: redis_target(config, url),
            stream: config.events.stream.clone(),
            dlq: config.events.dlq.clone(),
            replay_ms: ms(config.events.replay),
        }),
        _ => None,
    }
}

/// What the pipeline reads of the config on every check.
pub(super) fn settings(config: &Config) -> Settings {
    Settings {
        issuer: config.registry.issuer.clone(),
        token_bytes: size(config.limits.token_bytes),
        max_skew_secs: config.proof.max_skew.as_secs(),
        skew_warning_secs: config.proof.skew_warning.as_secs(),
        rate_limit_fail_closed: config.rate_limit.fail_closed,
        client_header: config.rate_limit.client_header.clone(),
        nonce_store: config.nonce.store.as_str(),
        nonce_margin_ms: ms(config.nonce.margin),
        policies: RoutePolicies {
            rules: config.routes.clone(),
            named: config.policies.clone(),
        },
        httpsig: config.httpsig.clone(),
        dpop: config.dpop.clone(),
    }
}

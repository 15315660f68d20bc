//! What the observable instruments read (`crate::metrics::Observed`): the breakers, caches,
//! data ages and stores of this app.

use std::sync::Arc;

use opentelemetry::metrics::Meter;

use crate::metrics::{BreakerReading, BreakerState, Cache, Data, EventCounts, Observed};
use crate::pipeline::Pipeline;
use crate::registry::breaker::Breaker;
use crate::registry::guard::Guarded;
use crate::store::nonce::NonceStore;

/// Registers every observable instrument, reading `p`, the registry and the nonce store.
pub(super) fn register(
    meter: &Meter,
    p: &Pipeline,
    registry: &Arc<Guarded>,
    nonces: &Arc<dyn NonceStore>,
) {
    let (keys, access, trust, aits, bearer) = (
        p.keys.clone(),
        p.access.clone(),
        p.trust.clone(),
        p.aits.clone(),
        p.bearer_tokens.clone(),
    );
    let held_bearer = bearer.clone();
    let (crl, clock, events) = (p.crl.clone(), p.clock.clone(), p.events.clone());
    let held_events = events.clone();
    let (held_aits, held_access, held_trust) = (aits.clone(), access.clone(), trust.clone());
    let (stale_keys, stale_access, stale_trust) = (keys.clone(), access.clone(), trust.clone());
    let (age_keys, age_crl) = (keys.clone(), crl.clone());
    let (records, full) = (nonces.clone(), nonces.clone());
    Observed {
        breakers: breakers(p, registry),
        caches: Arc::new(move || {
            vec![
                (Cache::Keys, keys.counts.get()),
                (Cache::Ait, aits.counts.get()),
                (Cache::Bearer, bearer.counts.get()),
                (Cache::Access, access.counts.get()),
                (Cache::Trust, trust.counts.get()),
            ]
        }),
        entries: Arc::new(move || {
            vec![
                (Cache::Ait, held_aits.len() as u64),
                (Cache::Bearer, held_bearer.len() as u64),
                (Cache::Access, held_access.len() as u64),
                (Cache::Trust, held_trust.len() as u64),
            ]
        }),
        stale_served: Arc::new(move || {
            vec![
                (Data::Keys, stale_keys.stale_served()),
                (Data::Access, stale_access.stale_used()),
                (Data::Trust, stale_trust.stale_used()),
            ]
        }),
        ages_ms: Arc::new(move || {
            let now = clock.now_ms();
            vec![
                (Data::Keys, age_keys.age_ms(now)),
                (Data::Crl, age_crl.age_ms(now)),
            ]
        }),
        crl_refreshes: Arc::new(move || crl.refresh_counts()),
        nonce_records: Arc::new(move || records.live_records()),
        nonce_full: Arc::new(move || full.refused_full()),
        limiter_keys: {
            let limiter = p.limiter.clone();
            Arc::new(move || limiter.tracked().map(|n| n as u64))
        },
        events: Arc::new(move || {
            let c = events.counts();
            EventCounts {
                revoked: c.revoked,
                duplicate: c.duplicates,
                ignored: c.ignored,
                rejected: c.rejected,
                full: c.full,
                held: held_events.held() as u64,
            }
        }),
    }
    .register(meter);
    security(meter, p.security.counters.clone());
}

/// The security events' counters: events by type, observations dropped, deliveries by result.
fn security(meter: &Meter, c: Arc<crate::security::Counters>) {
    use opentelemetry::KeyValue;
    use std::sync::atomic::Ordering::Relaxed;
    let events = c.clone();
    meter
        .u64_observable_counter("claw_authz_security_events")
        .with_description("Security events made, by CloudEvents type")
        .with_callback(move |o| {
            for kind in crate::security::Kind::ALL {
                o.observe(
                    events.events_of(kind),
                    &[KeyValue::new("type", kind.as_str())],
                );
            }
        })
        .build();
    meter
        .u64_observable_counter("claw_authz_security_deliveries")
        .with_description(
            "Security event deliveries: delivered, failed attempts, dead-lettered, dropped (a full sink queue), streamed to Redis, and observations dropped (a full detector queue)",
        )
        .with_callback(move |o| {
            for (result, n) in [
                ("delivered", &c.delivered),
                ("failed_attempt", &c.failed_attempts),
                ("dead_letter", &c.dead_lettered),
                ("dropped", &c.events_dropped),
                ("streamed", &c.streamed),
                ("observation_dropped", &c.observations_dropped),
            ] {
                o.observe(n.load(Relaxed), &[KeyValue::new("result", result)]);
            }
        })
        .build();
}

/// Every breaker: the registry's three, then each bearer issuer's JWKS breaker (labelled with
/// the configured issuer, a bounded set), then each signature agent's directory breaker.
fn breakers(
    p: &Pipeline,
    registry: &Arc<Guarded>,
) -> Arc<dyn Fn() -> Vec<BreakerReading> + Send + Sync> {
    let registry = registry.clone();
    let issuers: Vec<_> = p
        .bearer
        .iter()
        .map(|i| (i.jwks.clone(), i.config.issuer.clone()))
        .collect();
    let agents: Vec<_> = p
        .agents
        .iter()
        .map(|a| (a.directory.clone(), a.config.origin.clone()))
        .collect();
    Arc::new(move || {
        let ours = [&registry.keys, &registry.crl, &registry.validate];
        let mut all: Vec<_> = ours.into_iter().map(|b| reading(b, None)).collect();
        for (jwks, issuer) in &issuers {
            all.push(reading(jwks.breaker(), Some(issuer.clone())));
        }
        // A directory's breaker is labelled with its agent's origin (`issuer` of its keys).
        for (directory, origin) in &agents {
            all.push(reading(directory.breaker(), Some(origin.clone())));
        }
        all
    })
}

fn reading(b: &Breaker, issuer: Option<String>) -> BreakerReading {
    BreakerReading {
        endpoint: b.endpoint(),
        issuer,
        state: b.state(),
        transitions: BreakerState::ALL.map(|s| b.transitions_to(s)),
    }
}

/// What the security detectors read on their own: every breaker, and the keys' and CRL's ages.
pub(super) fn security_reading(
    p: &Pipeline,
    registry: &Arc<Guarded>,
) -> Box<dyn Fn() -> crate::security::Reading + Send> {
    let read_breakers = breakers(p, registry);
    let (keys, crl, clock) = (p.keys.clone(), p.crl.clone(), p.clock.clone());
    Box::new(move || {
        let now = clock.now_ms();
        crate::security::Reading {
            breakers: read_breakers(),
            stale_for_ms: vec![
                (Data::Keys, keys.stale_for_ms(now)),
                (Data::Crl, crl.stale_for_ms(now)),
            ],
        }
    })
}

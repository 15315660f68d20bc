//! The observable instruments: values the components keep (breaker states, cache and store
//! counters, data ages), read at collection time.

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use crate::pipeline::Pipeline;
use crate::registry::breaker::{Breaker, State};
use crate::registry::guard::Guarded;
use crate::store::nonce::NonceStore;

/// Registers every observable instrument.
pub(super) fn register(
    meter: &Meter,
    p: &Pipeline,
    registry: &Arc<Guarded>,
    nonces: &Arc<dyn NonceStore>,
) {
    breakers(meter, p, registry);
    caches(meter, p);
    data(meter, p, nonces);
    events(meter, p);
}

/// Every breaker's state and transitions.
fn breakers(meter: &Meter, p: &Pipeline, registry: &Arc<Guarded>) {
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
}

/// Cache lookups by result, and stale answers served.
fn caches(meter: &Meter, p: &Pipeline) {
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

/// The age of the keys and the CRL, CRL refreshes, and the nonce store's size.
fn data(meter: &Meter, p: &Pipeline, nonces: &Arc<dyn NonceStore>) {
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
}

/// Registry events by result.
fn events(meter: &Meter, p: &Pipeline) {
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
}

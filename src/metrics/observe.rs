//! The observable instruments: values the components keep (breaker states, cache and store
//! counters, data ages), read at collection time through the readers the app's wiring gives in
//! [`Observed`].

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use super::Endpoint;

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub(crate) const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The gauge's value: 0 closed, 1 open, 2 half-open.
    fn value(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// One breaker at collection time.
pub struct BreakerReading {
    pub endpoint: Endpoint,
    /// The configured issuer, for a bearer issuer's JWKS breaker.
    pub issuer: Option<String>,
    pub state: BreakerState,
    /// Transitions into each state, in `BreakerState::ALL` order.
    pub transitions: [u64; 3],
}

/// A cache (`cache` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    Keys,
    Ait,
    Bearer,
    Access,
    Trust,
}

impl Cache {
    fn as_str(self) -> &'static str {
        match self {
            Cache::Keys => "keys",
            Cache::Ait => "ait",
            Cache::Bearer => "bearer",
            Cache::Access => "access",
            Cache::Trust => "trust",
        }
    }
}

/// Data the server holds from a source (`data` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    Keys,
    Crl,
    Access,
    Trust,
}

impl Data {
    fn as_str(self) -> &'static str {
        match self {
            Data::Keys => "keys",
            Data::Crl => "crl",
            Data::Access => "access",
            Data::Trust => "trust",
        }
    }
}

/// Registry events by result.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventCounts {
    pub revoked: u64,
    pub(crate) duplicate: u64,
    pub ignored: u64,
    pub rejected: u64,
    /// New revocations refused because `events.capacity` of their kind were held.
    pub full: u64,
    /// Revocations held now (agents and token ids).
    pub held: u64,
}

type Read<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// The readers of everything observed; each is called at collection time.
pub struct Observed {
    /// Every breaker: the registry's and each bearer issuer's JWKS.
    pub breakers: Read<Vec<BreakerReading>>,
    /// `[hit, stale, miss]` per cache.
    pub caches: Read<Vec<(Cache, [u64; 3])>>,
    /// Entries held per cache (the ones callers can grow).
    pub entries: Read<Vec<(Cache, u64)>>,
    /// Checks answered from stale data because the source failed.
    pub stale_served: Read<Vec<(Data, u64)>>,
    /// Age in milliseconds of the data loaded so far.
    pub(crate) ages_ms: Read<Vec<(Data, Option<u64>)>>,
    /// CRL refreshes `(ok, failed)`.
    pub(crate) crl_refreshes: Read<(u64, u64)>,
    /// Live nonce records held by this replica (`None` for a shared store).
    pub(crate) nonce_records: Read<Option<u64>>,
    /// Nonces refused because the store was full.
    pub(crate) nonce_full: Read<u64>,
    pub events: Read<EventCounts>,
    /// Keys the local rate limiter tracks (`None` with the Redis limiter).
    pub limiter_keys: Read<Option<u64>>,
}

impl Observed {
    /// Registers every observable instrument on `meter`.
    pub(crate) fn register(self, meter: &Meter) {
        breakers(meter, self.breakers);
        caches(meter, self.caches, self.stale_served);
        let entries = self.entries;
        meter
            .u64_observable_gauge("claw_authz_cache_entries")
            .with_description("Entries held per cache (each bounded by its capacity setting)")
            .with_callback(move |o| {
                for (cache, n) in entries() {
                    o.observe(n, &[KeyValue::new("cache", cache.as_str())]);
                }
            })
            .build();
        data(meter, self.ages_ms, self.crl_refreshes);
        nonces(meter, self.nonce_records, self.nonce_full);
        events(meter, self.events);
        let keys = self.limiter_keys;
        meter
            .u64_observable_gauge("claw_authz_rate_limit_keys")
            .with_description("Keys the local rate limiter tracks (bounded by rate_limit.capacity)")
            .with_callback(move |o| {
                if let Some(n) = keys() {
                    o.observe(n, &[]);
                }
            })
            .build();
    }
}

fn breakers(meter: &Meter, read: Read<Vec<BreakerReading>>) {
    let labels = |b: &BreakerReading| {
        let mut labels = vec![KeyValue::new("endpoint", b.endpoint.as_str())];
        labels.extend(b.issuer.clone().map(|i| KeyValue::new("issuer", i)));
        labels
    };
    let states = read.clone();
    meter
        .i64_observable_gauge("claw_authz_breaker_state")
        .with_description(
            "Circuit breaker (registry endpoints, bearer JWKS): 0 closed, 1 open, 2 half-open",
        )
        .with_callback(move |o| {
            for b in states() {
                o.observe(b.state.value(), &labels(&b));
            }
        })
        .build();
    meter
        .u64_observable_counter("claw_authz_breaker_transitions")
        .with_description("Circuit breaker transitions (registry endpoints, bearer JWKS)")
        .with_callback(move |o| {
            for b in read() {
                for (to, n) in BreakerState::ALL.into_iter().zip(b.transitions) {
                    let mut labels = labels(&b);
                    labels.push(KeyValue::new("to", to.as_str()));
                    o.observe(n, &labels);
                }
            }
        })
        .build();
}

fn caches(meter: &Meter, results: Read<Vec<(Cache, [u64; 3])>>, stale: Read<Vec<(Data, u64)>>) {
    meter
        .u64_observable_counter("claw_authz_cache_results")
        .with_description("Cache lookups by result")
        .with_callback(move |o| {
            for (cache, counts) in results() {
                for (result, n) in ["hit", "stale", "miss"].into_iter().zip(counts) {
                    let labels = [
                        KeyValue::new("cache", cache.as_str()),
                        KeyValue::new("result", result),
                    ];
                    o.observe(n, &labels);
                }
            }
        })
        .build();
    meter
        .u64_observable_counter("claw_authz_stale_served")
        .with_description("Checks answered from stale data because the source failed")
        .with_callback(move |o| {
            for (data, n) in stale() {
                o.observe(n, &[KeyValue::new("data", data.as_str())]);
            }
        })
        .build();
}

fn data(meter: &Meter, ages_ms: Read<Vec<(Data, Option<u64>)>>, crl: Read<(u64, u64)>) {
    meter
        .f64_observable_gauge("claw_authz_data_age")
        .with_unit("s")
        .with_description("Age of the signing key set and of the CRL (absent until loaded)")
        .with_callback(move |o| {
            for (data, age) in ages_ms() {
                if let Some(ms) = age {
                    o.observe(ms as f64 / 1000.0, &[KeyValue::new("data", data.as_str())]);
                }
            }
        })
        .build();
    meter
        .u64_observable_counter("claw_authz_crl_refreshes")
        .with_description(
            "CRL refreshes by result (failed: transport, status, size, payload or signature)",
        )
        .with_callback(move |o| {
            let (ok, failed) = crl();
            o.observe(ok, &[KeyValue::new("result", "ok")]);
            o.observe(failed, &[KeyValue::new("result", "failed")]);
        })
        .build();
}

fn nonces(meter: &Meter, records: Read<Option<u64>>, full: Read<u64>) {
    meter
        .u64_observable_gauge("claw_authz_nonce_store_size")
        .with_description("Live nonce records held by this replica (memory and file stores)")
        .with_callback(move |o| {
            if let Some(len) = records() {
                o.observe(len, &[]);
            }
        })
        .build();
    meter
        .u64_observable_counter("claw_authz_nonce_store_full")
        .with_description("Nonces refused because the store was full")
        .with_callback(move |o| o.observe(full(), &[]))
        .build();
}

fn events(meter: &Meter, read: Read<EventCounts>) {
    let held = read.clone();
    meter
        .u64_observable_counter("claw_authz_revocation_events")
        .with_description("Registry events by result")
        .with_callback(move |o| {
            let c = read();
            let results = [
                ("revoked", c.revoked),
                ("duplicate", c.duplicate),
                ("ignored", c.ignored),
                ("rejected", c.rejected),
                ("full", c.full),
            ];
            for (result, n) in results {
                o.observe(n, &[KeyValue::new("result", result)]);
            }
        })
        .build();
    meter
        .u64_observable_gauge("claw_authz_revocations_held")
        .with_description("Pushed revocations held (bounded by events.capacity per kind)")
        .with_callback(move |o| o.observe(held().held, &[]))
        .build();
}

//! What the server counts and times, as methods named for events.
//!
//! The request path calls [`Metrics`] methods (`Metrics::decision`, `Metrics::stage`,
//! `Metrics::registry_call`, `Metrics::nonce`, `Metrics::rate_limited`, `Metrics::skew`);
//! every label comes from a closed enum of this module or from a configured name (policy,
//! issuer), so every series is bounded. Values the components keep themselves (breaker states,
//! cache results, data ages, store sizes) are read at collection time by the observable
//! instruments registered in `observe.rs`, from readings the app's wiring supplies. This module
//! imports nothing of the crate, so every component can use it. Exporters and the log subscriber
//! are `crate::telemetry`'s.

mod bound;
mod observe;
mod runs;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider};

use bound::{Bound, BoundSeries, Durations, Measured};
pub use observe::{BreakerReading, BreakerState, Cache, Data, EventCounts, Observed};

/// Check, stage and registry durations (seconds).
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];
/// Clock skew of accepted requests (seconds).
const SKEW_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 200.0, 250.0, 300.0, 600.0,
];

/// How a Check ended (`decision` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allow,
    Deny,
    /// A `shadow` route that would have denied.
    ShadowAllow,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::ShadowAllow => "shadow_allow",
        }
    }
}

/// A remote endpoint behind a breaker (`endpoint` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The registry's signing keys.
    Keys,
    Crl,
    /// The registry's access-token validation.
    Validate,
    /// A bearer issuer's JWKS.
    Jwks,
    /// A Web Bot Auth agent's key directory.
    Directory,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Keys => "keys",
            Endpoint::Crl => "crl",
            Endpoint::Validate => "validate",
            Endpoint::Jwks => "jwks",
            Endpoint::Directory => "directory",
        }
    }
}

/// How one call to an endpoint went (`outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    Ok,
    /// A 5xx answer: the endpoint is failing.
    ErrorStatus,
    /// A 429 answer: the endpoint is up and asks us to slow down.
    Throttled,
    Timeout,
    /// The Check's own deadline ended the call before the endpoint could be judged.
    Deadline,
    TransportError,
    /// Refused by the open breaker without a call.
    CircuitOpen,
}

impl CallOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::ErrorStatus => "error_status",
            CallOutcome::Throttled => "throttled",
            CallOutcome::Timeout => "timeout",
            CallOutcome::Deadline => "deadline",
            CallOutcome::TransportError => "transport_error",
            CallOutcome::CircuitOpen => "circuit_open",
        }
    }
}

/// What recording a nonce found (`result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceResult {
    Fresh,
    Replay,
    /// The agent holds its quota of live records (`nonce.per_agent_capacity`).
    OverQuota,
    Error,
}

impl NonceResult {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NonceResult::Fresh => "fresh",
            NonceResult::Replay => "replay",
            NonceResult::OverQuota => "over_quota",
            NonceResult::Error => "error",
        }
    }
}

/// Which limit a request hit (`kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitKind {
    /// Per client address, before authentication.
    Client,
    /// Per authenticated agent.
    Agent,
    /// Registry validations one agent causes (`access.calls_per_agent_per_minute`).
    Access,
}

impl LimitKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitKind::Client => "client",
            LimitKind::Agent => "agent",
            LimitKind::Access => "access",
        }
    }
}

/// How a TLS handshake ended (`result` label): `failed` covers a client certificate the CA or
/// the allowlist refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    Ok,
    Failed,
    Timeout,
}

impl Handshake {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Handshake::Ok => "ok",
            Handshake::Failed => "failed",
            Handshake::Timeout => "timeout",
        }
    }
}

/// Which of the listener's limits shed a caller (`limit` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    /// `limits.connections`: the connection was closed.
    Connections,
    /// `limits.concurrent_checks`: the Check got a 503 denial, unread.
    Checks,
    /// A message past `limits.body_bytes` (and the headers' budget): `RESOURCE_EXHAUSTED`.
    MessageSize,
    /// A message that would take the bytes of checks in flight past `limits.in_flight_bytes`:
    /// `RESOURCE_EXHAUSTED`.
    InFlightBytes,
}

impl Shed {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Shed::Connections => "connections",
            Shed::Checks => "checks",
            Shed::MessageSize => "message_size",
            Shed::InFlightBytes => "in_flight_bytes",
        }
    }
}

/// Why a limit stopped or nearly stopped a request (`result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitResult {
    Limited,
    /// The limit store failed (the request is then allowed or denied by configuration).
    StoreError,
}

impl LimitResult {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitResult::Limited => "limited",
            LimitResult::StoreError => "store_error",
        }
    }
}

/// Policies whose allowed checks have a bound `decisions` series, at most this many (the rest
/// are counted unbound).
const BOUND_POLICIES: usize = 256;

/// The instruments recorded on the request path; see the module doc.
#[derive(Clone)]
pub struct Metrics {
    /// `claw_authz_decisions_total{decision, code, policy}`
    decisions: Counter<u64>,
    // `claw_authz_check_duration_seconds{decision}`, `claw_authz_stage_duration_seconds{stage}`
    // and `claw_authz_clock_skew_seconds`: in `bound.durations`.
    /// `claw_authz_registry_requests_total{endpoint, outcome}`
    registry_requests: Counter<u64>,
    /// `claw_authz_registry_request_duration_seconds{endpoint}`
    registry_duration: Histogram<f64>,
    /// `claw_authz_nonce_operations_total{store, result}`
    nonce_operations: Counter<u64>,
    /// `claw_authz_clock_skew_warnings_total`
    clock_skew_warnings: Counter<u64>,
    /// `claw_authz_rate_limited_total{policy, kind, result}`
    rate_limited: Counter<u64>,
    /// `claw_authz_load_shed_total{limit}`
    load_shed: Counter<u64>,
    /// `claw_authz_tls_handshakes_total{result}`
    tls_handshakes: Counter<u64>,
    /// The series every check records, bound.
    bound: Arc<BoundSeries>,
}

impl Metrics {
    /// The instruments; `stages` are the `stage` label's values (`pipeline::Stage`), the series
    /// bound for speed.
    pub(crate) fn new(meter: &Meter, stages: &[&'static str]) -> Self {
        let seconds = |name: &'static str, help: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(help)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let latency = |name, help| seconds(name, help, &LATENCY_BUCKETS);
        let clock_skew_warnings = counter(
            "claw_authz_clock_skew_warnings",
            "Accepted requests skewed past the warning threshold",
        );
        // Present from the start, so alert rules see 0 rather than no series.
        clock_skew_warnings.add(0, &[]);
        let metrics = Metrics {
            decisions: counter("claw_authz_decisions", "Check decisions"),
            registry_requests: counter("claw_authz_registry_requests", "Registry calls"),
            registry_duration: latency(
                "claw_authz_registry_request_duration",
                "Registry call duration",
            ),
            nonce_operations: counter("claw_authz_nonce_operations", "Nonce store operations"),
            clock_skew_warnings,
            rate_limited: counter("claw_authz_rate_limited", "Requests over a rate limit"),
            load_shed: counter(
                "claw_authz_load_shed",
                "Connections and checks answered at once, unread, past the listener's limits",
            ),
            tls_handshakes: counter(
                "claw_authz_tls_handshakes",
                "TLS handshakes on the gRPC listener, by result",
            ),
            bound: Arc::new(BoundSeries {
                stages: Bound::new("stage", stages),
                checks: Bound::new(
                    "decision",
                    &[Outcome::Allow, Outcome::Deny, Outcome::ShadowAllow].map(Outcome::as_str),
                ),
                allowed: RwLock::new(Vec::new()),
                nonces: Bound::new(
                    "result",
                    &[
                        NonceResult::Fresh,
                        NonceResult::Replay,
                        NonceResult::OverQuota,
                        NonceResult::Error,
                    ]
                    .map(NonceResult::as_str),
                ),
                skew: OnceLock::new(),
                durations: Durations {
                    check: latency("claw_authz_check_duration", "Time to answer a Check"),
                    stage: latency("claw_authz_stage_duration", "Time spent per pipeline stage"),
                    skew: seconds(
                        "claw_authz_clock_skew",
                        "Clock skew of accepted requests",
                        &SKEW_BUCKETS,
                    ),
                },
                runs: runs::Runs::new(),
            }),
        };
        // The callback records nothing itself (the instrument is never exported): it hands the
        // SDK what the threads hold before each collection reads the histograms.
        let bound = Arc::downgrade(&metrics.bound);
        meter
            .u64_observable_gauge("claw_authz_runs_taken_in")
            .with_callback(move |_| {
                if let Some(bound) = bound.upgrade() {
                    bound.take_in();
                }
            })
            .build();
        metrics
    }

    /// Instruments that go nowhere (for parts built without an app).
    pub fn noop() -> Self {
        Metrics::new(
            &opentelemetry::metrics::NoopMeterProvider::new().meter("noop"),
            &[],
        )
    }

    /// A Check answered: `code` is the denial's (`none` when allowed), `policy` the configured
    /// policy's name (`none` before one was chosen).
    pub(crate) fn decision(
        &self,
        outcome: Outcome,
        code: &'static str,
        policy: &str,
        spent: Duration,
    ) {
        if outcome != Outcome::Allow || !self.allowed(policy) {
            let labels = [
                KeyValue::new("decision", outcome.as_str()),
                KeyValue::new("code", code),
                KeyValue::new("policy", policy.to_owned()),
            ];
            self.decisions.add(1, &labels);
        }
        let spent = spent.as_secs_f64();
        self.bound.measure(Measured::Check(outcome, spent));
    }

    /// Counts an allowed check on `policy` on its bound series; false when there is none.
    fn allowed(&self, policy: &str) -> bool {
        let held = self.bound.allowed.read().unwrap_or_else(|p| p.into_inner());
        if let Some((_, series)) = held.iter().find(|(p, _)| &**p == policy) {
            series.add(1);
            return true;
        }
        let full = held.len() >= BOUND_POLICIES;
        drop(held);
        if full {
            return false;
        }
        let labels = [
            KeyValue::new("decision", Outcome::Allow.as_str()),
            KeyValue::new("code", "none"),
            KeyValue::new("policy", policy.to_owned()),
        ];
        let series = self.decisions.bind(&labels);
        series.add(1);
        let mut held = self
            .bound
            .allowed
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if !held.iter().any(|(p, _)| &**p == policy) {
            held.push((policy.into(), series));
        }
        true
    }

    /// One pipeline stage passed, in `spent`; `stage` is a `pipeline::Stage` label, `index` its
    /// place in the labels `Metrics::new` was given.
    pub(crate) fn stage(&self, index: usize, stage: &'static str, spent: Duration) {
        let spent = spent.as_secs_f64();
        self.bound.measure(Measured::Stage(index, stage, spent));
    }

    /// A call to `endpoint` ended with `outcome` after `spent` (`None`: refused by its breaker,
    /// no call made).
    pub(crate) fn registry_call(
        &self,
        endpoint: Endpoint,
        outcome: CallOutcome,
        spent: Option<Duration>,
    ) {
        let endpoint = KeyValue::new("endpoint", endpoint.as_str());
        if let Some(spent) = spent {
            let label = std::slice::from_ref(&endpoint);
            self.registry_duration.record(spent.as_secs_f64(), label);
        }
        let labels = [endpoint, KeyValue::new("outcome", outcome.as_str())];
        self.registry_requests.add(1, &labels);
    }

    /// A nonce recorded in `store` (`memory`, `file` or `redis`).
    pub(crate) fn nonce(&self, store: &'static str, result: NonceResult) {
        let labels = |result: &[KeyValue]| {
            let mut labels = vec![KeyValue::new("store", store)];
            labels.extend_from_slice(result);
            labels
        };
        let counter = &self.nonce_operations;
        let bound = self.bound.nonces.get(result.as_str(), |result| {
            (store, counter.bind(&labels(result)))
        });
        match bound {
            Some((bound_store, series)) if *bound_store == store => series.add(1),
            _ => counter.add(1, &labels(&[KeyValue::new("result", result.as_str())])),
        }
    }

    /// A request on `policy` over a `kind` limit, or the limit store failing.
    pub(crate) fn rate_limited(&self, policy: &str, kind: LimitKind, result: LimitResult) {
        let labels = [
            KeyValue::new("policy", policy.to_owned()),
            KeyValue::new("kind", kind.as_str()),
            KeyValue::new("result", result.as_str()),
        ];
        self.rate_limited.add(1, &labels);
    }

    /// A connection or a Check over the listener's limits, answered at once.
    pub(crate) fn shed(&self, what: Shed) {
        self.load_shed
            .add(1, &[KeyValue::new("limit", what.as_str())]);
        if what == Shed::Checks {
            let labels = [
                KeyValue::new("decision", Outcome::Deny.as_str()),
                KeyValue::new("code", crate::denial::Denial::Overloaded.code()),
                KeyValue::new("policy", "none"),
            ];
            self.decisions.add(1, &labels);
        }
    }

    /// A TLS handshake on the gRPC listener ended.
    pub(crate) fn tls_handshake(&self, result: Handshake) {
        let labels = [KeyValue::new("result", result.as_str())];
        self.tls_handshakes.add(1, &labels);
    }

    /// The clock skew of an accepted request; `warned` when it passed the warning threshold.
    pub(crate) fn skew(&self, skew_secs: u64, warned: bool) {
        self.bound.measure(Measured::Skew(skew_secs as f64));
        if warned {
            self.clock_skew_warnings.add(1, &[]);
        }
    }
}

/// Results of one cache, kept by the cache and read at collection time.
#[derive(Debug, Default)]
pub struct CacheCounts {
    hit: AtomicU64,
    stale: AtomicU64,
    miss: AtomicU64,
}

impl CacheCounts {
    pub(crate) fn hit(&self) {
        self.hit.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.miss.fetch_add(1, Ordering::Relaxed);
    }

    /// `[hit, stale, miss]`
    pub fn get(&self) -> [u64; 3] {
        let o = Ordering::Relaxed;
        [self.hit.load(o), self.stale.load(o), self.miss.load(o)]
    }
}

//! The registry behind a timeout and a circuit breaker per endpoint (`docs/deviations.md` item 5).
//!
//! Every call is bounded by the configured background timeout, or, on the request path, by the
//! Check's own deadline when that is nearer (`call_timeout`). A call the breaker refuses never
//! reaches the registry and fails at once with [`TransportError::CircuitOpen`]; the caches then
//! answer from what they hold or deny with 503.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::breaker::{Breaker, BreakerSettings, State};
use super::{BoxFuture, KeySource, Registry, Response, TransportError, call_timeout};
use crate::clock::Clock;
use crate::metrics::{CallOutcome, Endpoint, Metrics};

pub struct Guarded {
    inner: Arc<dyn Registry>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    pub keys: Breaker,
    pub crl: Breaker,
    pub validate: Breaker,
}

impl Guarded {
    pub(crate) fn new(
        inner: Arc<dyn Registry>,
        timeout: Duration,
        settings: BreakerSettings,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Guarded {
            inner,
            timeout,
            metrics,
            keys: Breaker::new(Endpoint::Keys, settings, clock.clone()),
            crl: Breaker::new(Endpoint::Crl, settings, clock.clone()),
            validate: Breaker::new(Endpoint::Validate, settings, clock),
        }
    }

    /// `(endpoint, state)` for each breaker.
    pub(crate) fn states(&self) -> [(Endpoint, State); 3] {
        [&self.keys, &self.crl, &self.validate].map(|b| (b.endpoint(), b.state()))
    }
}

/// A timeout counts against the registry only when the call had at least this long (or its
/// whole configured timeout, if shorter): a Check sent with a tiny `grpc-timeout` must not make
/// the registry look down for everyone (issue 18, finding 5).
const JUDGED_AFTER: Duration = Duration::from_millis(100);

/// `call` through `breaker`, within `timeout`, counted and timed.
pub(super) async fn guarded<T>(
    breaker: &Breaker,
    timeout: Duration,
    metrics: &Metrics,
    call: BoxFuture<'_, Result<T, TransportError>>,
    status: fn(&T) -> u16,
) -> Result<T, TransportError> {
    let endpoint = breaker.endpoint();
    let Some(permit) = breaker.permit() else {
        metrics.registry_call(endpoint, CallOutcome::CircuitOpen, None);
        return Err(TransportError::CircuitOpen);
    };
    // Inside a Check that was not sampled there is no span to be a child of, and a root span
    // here would sample the call apart from its Check.
    let span = if super::in_a_check() && tracing::Span::current().is_none() {
        tracing::Span::none()
    } else {
        tracing::info_span!(
            "registry",
            otel.kind = "client",
            endpoint = endpoint.as_str()
        )
    };
    let started = tokio::time::Instant::now();
    let allowed = call_timeout(timeout);
    let outcome = tokio::time::timeout(allowed, call)
        .instrument(span)
        .await
        .unwrap_or(Err(TransportError::Timeout));
    let label = match &outcome {
        Ok(v) if status(v) == 429 => CallOutcome::Throttled,
        Ok(v) if status(v) >= 500 => CallOutcome::ErrorStatus,
        Ok(_) => CallOutcome::Ok,
        Err(TransportError::Timeout) if allowed < timeout.min(JUDGED_AFTER) => {
            CallOutcome::Deadline
        }
        Err(TransportError::Timeout) => CallOutcome::Timeout,
        Err(_) => CallOutcome::TransportError,
    };
    match label {
        // The Check's own deadline ended the call: the registry is not judged by it.
        CallOutcome::Deadline => drop(permit),
        // A registry that answers, even to say "slow down", is up.
        CallOutcome::Ok | CallOutcome::Throttled => permit.record(true),
        CallOutcome::ErrorStatus
        | CallOutcome::Timeout
        | CallOutcome::TransportError
        | CallOutcome::CircuitOpen => permit.record(false),
    }
    metrics.registry_call(endpoint, label, Some(started.elapsed()));
    outcome
}

impl KeySource for Guarded {
    fn fetch_keys(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(guarded(
            &self.keys,
            self.timeout,
            &self.metrics,
            self.inner.fetch_keys(),
            |r| r.status,
        ))
    }
}

impl Registry for Guarded {
    fn fetch_crl(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(guarded(
            &self.crl,
            self.timeout,
            &self.metrics,
            self.inner.fetch_crl(),
            |r| r.status,
        ))
    }

    fn validate_access<'a>(
        &'a self,
        access_token: &'a str,
        agent_did: &'a str,
        ait_jti: &'a str,
    ) -> BoxFuture<'a, Result<u16, TransportError>> {
        Box::pin(guarded(
            &self.validate,
            self.timeout,
            &self.metrics,
            self.inner.validate_access(access_token, agent_did, ait_jti),
            |s| *s,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::registry::fake::{FakeRegistry, status};

    fn guarded(fake: Arc<FakeRegistry>, clock: &ManualClock) -> Guarded {
        let settings = BreakerSettings {
            failures: 2,
            open_ms: 30_000,
        };
        Guarded::new(
            fake,
            Duration::from_secs(5),
            settings,
            Arc::new(clock.clone()),
            Arc::new(Metrics::noop()),
        )
    }

    #[tokio::test]
    async fn five_hundreds_open_the_breaker_and_verdicts_do_not() {
        let fake = Arc::new(FakeRegistry::default());
        let clock = ManualClock::at(1_000);
        let g = guarded(fake.clone(), &clock);
        fake.set_validate(vec![status(401)]);
        for _ in 0..3 {
            assert_eq!(g.validate_access("t", "d", "j").await, Ok(401));
        }
        assert_eq!(g.validate.state(), State::Closed);
        fake.set_validate(vec![status(503)]);
        for _ in 0..2 {
            assert_eq!(g.validate_access("t", "d", "j").await, Ok(503));
        }
        assert_eq!(
            g.validate_access("t", "d", "j").await,
            Err(TransportError::CircuitOpen)
        );
        assert_eq!(fake.calls().validate, 5);
        assert_eq!(g.keys.state(), State::Closed, "breakers are per endpoint");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_call_ends_at_the_timeout_and_counts_as_a_failure() {
        let fake = Arc::new(FakeRegistry::default());
        fake.hang_keys(true);
        let clock = ManualClock::at(1_000);
        let g = guarded(fake.clone(), &clock);
        let started = tokio::time::Instant::now();
        assert_eq!(g.fetch_keys().await, Err(TransportError::Timeout));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(g.fetch_keys().await, Err(TransportError::Timeout));
        assert_eq!(g.keys.state(), State::Open);
    }

    /// Issue 18, finding 2: a registry answering 429 is up; it never opens the breaker.
    #[tokio::test]
    async fn a_429_is_the_registry_throttling_not_an_outage() {
        let fake = Arc::new(FakeRegistry::default());
        let clock = ManualClock::at(1_000);
        let g = guarded(fake.clone(), &clock);
        fake.set_validate(vec![status(429)]);
        for _ in 0..10 {
            assert_eq!(g.validate_access("t", "d", "j").await, Ok(429));
        }
        assert_eq!(g.validate.state(), State::Closed);
        assert_eq!(fake.calls().validate, 10);
    }

    /// Issue 18, finding 5: a call the Check's own deadline cuts short is not judged.
    #[tokio::test(start_paused = true)]
    async fn a_call_cut_short_by_the_checks_deadline_is_not_judged() {
        let fake = Arc::new(FakeRegistry::default());
        fake.hang_validate(true);
        let clock = ManualClock::at(1_000);
        let g = guarded(fake.clone(), &clock);
        let soon = tokio::time::Instant::now() + Duration::from_millis(1);
        for _ in 0..5 {
            let call = g.validate_access("t", "d", "j");
            let outcome = super::super::with_deadline(Some(soon), call).await;
            assert_eq!(outcome, Err(TransportError::Timeout));
        }
        assert_eq!(
            g.validate.state(),
            State::Closed,
            "the caller's deadline, not the registry"
        );
        // The same hang with the whole timeout to answer in is the registry's failure.
        for _ in 0..2 {
            assert_eq!(
                g.validate_access("t", "d", "j").await,
                Err(TransportError::Timeout)
            );
        }
        assert_eq!(g.validate.state(), State::Open);
    }
}

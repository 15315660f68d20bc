//! A bearer issuer's JWKS endpoint: one URL, behind its own timeout and circuit breaker.

use std::sync::Arc;
use std::time::Duration;

use super::breaker::{Breaker, BreakerSettings};
use super::guard::guarded;
use super::{BoxFuture, KeySource, Response, TransportError, http};
use crate::clock::Clock;
use crate::metrics::{Endpoint, Metrics};

pub struct Jwks {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    /// The largest JWKS accepted (`limits.jwks_bytes`).
    limit: usize,
    breaker: Breaker,
    metrics: Arc<Metrics>,
}

impl Jwks {
    pub(crate) fn new(
        url: String,
        timeout: Duration,
        limit: usize,
        breaker: BreakerSettings,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Jwks {
            client: http::client(timeout)?,
            url,
            timeout,
            limit,
            breaker: Breaker::new(Endpoint::Jwks, breaker, clock),
            metrics,
        })
    }

    /// Its breaker (its state is a metric).
    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl KeySource for Jwks {
    fn fetch_keys(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        let call = http::get(&self.client, &self.url, self.timeout, self.limit);
        Box::pin(guarded(
            &self.breaker,
            self.timeout,
            &self.metrics,
            Box::pin(call),
            |r| r.status,
        ))
    }
}

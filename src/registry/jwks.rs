//! A key set endpoint (a bearer issuer's JWKS, a Web Bot Auth agent's directory): one URL,
//! behind its own timeout, size limit and circuit breaker.

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
    /// A bearer issuer's JWKS (`endpoint="jwks"`), with the registry's HTTP client.
    pub(crate) fn new(
        url: String,
        timeout: Duration,
        limit: usize,
        breaker: BreakerSettings,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let client = http::client(timeout)?;
        let breaker = Breaker::new(Endpoint::Jwks, breaker, clock);
        Ok(Jwks::with_client(
            client, url, timeout, limit, breaker, metrics,
        ))
    }

    /// An endpoint over `client`, behind `breaker`.
    pub(crate) fn with_client(
        client: reqwest::Client,
        url: String,
        timeout: Duration,
        limit: usize,
        breaker: Breaker,
        metrics: Arc<Metrics>,
    ) -> Self {
        Jwks {
            client,
            url,
            timeout,
            limit,
            breaker,
            metrics,
        }
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

//! The Clawdentity registry, seen from the sidecar: one trait at the I/O boundary, its HTTP
//! implementation, and the caches that turn its answers into verdicts.
//!
//! The trait returns raw HTTP outcomes (status and body, or a transport failure); deciding what
//! they mean (a usable key set, a CRL, a valid access token) happens in the caches, over bytes.

pub mod breaker;
pub mod directory;
#[cfg(test)]
pub(crate) mod fake;
pub mod guard;
pub mod http;
pub mod jwks;

use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

tokio::task_local! {
    /// The request path's deadline: Envoy's `grpc-timeout` for the Check call, less a margin.
    /// Registry calls made while handling that call never wait past it; background calls (no
    /// deadline in scope) use the configured timeout alone.
    static DEADLINE: tokio::time::Instant;
}

/// Runs `f` (the handling of one Check) with registry calls bounded by `deadline`.
pub(crate) async fn with_deadline<F: Future>(
    deadline: Option<tokio::time::Instant>,
    f: F,
) -> F::Output {
    match deadline {
        Some(d) => DEADLINE.scope(d, f).await,
        None => f.await,
    }
}

/// The time a registry call may take now: `configured`, or less if the current Check's deadline
/// is nearer. Zero when the deadline has passed.
pub(crate) fn call_timeout(configured: std::time::Duration) -> std::time::Duration {
    DEADLINE
        .try_with(|d| d.saturating_duration_since(tokio::time::Instant::now()))
        .map_or(configured, |left| left.min(configured))
}

/// Whether this task is handling a Check (a deadline is in scope): its registry calls are child
/// spans of the Check's span, and get none when the Check was not sampled.
pub(crate) fn in_a_check() -> bool {
    DEADLINE.try_with(|_| ()).is_ok()
}

/// A registry answer: any HTTP status with its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A call that produced no HTTP answer. The reasons are the reference's wording for the same
/// failure (Node's fetch), so `details.reason` matches it; nothing else of the error is exposed.
/// `CircuitOpen` has no reference counterpart: the call was never made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    Refused,
    Timeout,
    Failed,
    /// The body ran past the endpoint's size limit (`limits.*_bytes`) and was dropped unread.
    TooLarge,
    /// Not attempted: the endpoint's circuit breaker is open.
    CircuitOpen,
}

impl TransportError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            TransportError::Refused => "connect ECONNREFUSED",
            TransportError::Timeout => "The operation was aborted due to timeout",
            TransportError::Failed => "fetch failed",
            TransportError::TooLarge => "Registry response is over its size limit",
            TransportError::CircuitOpen => "Registry circuit breaker is open",
        }
    }
}

/// Where a key set comes from: the registry's keys endpoint, or a bearer issuer's JWKS.
pub trait KeySource: Send + Sync + 'static {
    /// The key document, as served.
    fn fetch_keys(&self) -> BoxFuture<'_, Result<Response, TransportError>>;
}

/// The registry's three endpoints: its keys (`GET /.well-known/claw-keys.json`, the
/// [`KeySource`]), its CRL and access-token validation.
pub trait Registry: KeySource {
    /// `GET /v1/crl`
    fn fetch_crl(&self) -> BoxFuture<'_, Result<Response, TransportError>>;
    /// `POST /v1/agents/auth/validate`; only the status matters.
    fn validate_access<'a>(
        &'a self,
        access_token: &'a str,
        agent_did: &'a str,
        ait_jti: &'a str,
    ) -> BoxFuture<'a, Result<u16, TransportError>>;
}

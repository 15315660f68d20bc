//! The registry over HTTP(S) with reqwest and rustls.
//!
//! Bodies are capped per endpoint (`limits.*_bytes`: a registry answering garbage cannot make
//! the sidecar buffer without bound, and a CRL of tens of thousands of revocations still fits)
//! and every call has a timeout: the configured one, or less when the Check being
//! handled has a nearer deadline (`call_timeout`). Transport errors are reduced to [`TransportError`]; the
//! full error is logged here and goes nowhere else.

use std::time::Duration;

use super::{BoxFuture, KeySource, Registry, Response, TransportError, call_timeout};

/// The validate endpoint answers with a status; at most this much of its body is read (so the
/// connection can be reused), and a longer one changes nothing.
const MAX_VALIDATE_BODY: usize = 64 * 1024;

/// The largest body accepted from each endpoint; a larger one is a failed call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    pub keys: usize,
    pub crl: usize,
}

#[derive(Debug, Clone)]
pub struct Endpoints {
    pub keys: String,
    pub crl: String,
    pub validate: String,
}

impl Endpoints {
    /// The standard paths under a registry origin.
    pub fn under(registry_url: &str) -> Self {
        let base = registry_url.trim_end_matches('/');
        Endpoints {
            keys: format!("{base}/.well-known/claw-keys.json"),
            crl: format!("{base}/v1/crl"),
            validate: format!("{base}/v1/agents/auth/validate"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HttpRegistry {
    client: reqwest::Client,
    endpoints: Endpoints,
    timeout: Duration,
    limits: BodyLimits,
}

impl HttpRegistry {
    pub(crate) fn new(
        endpoints: Endpoints,
        timeout: Duration,
        limits: BodyLimits,
    ) -> Result<Self, reqwest::Error> {
        let client = client(timeout)?;
        Ok(HttpRegistry {
            client,
            endpoints,
            timeout,
            limits,
        })
    }

    async fn get(&self, url: &str, limit: usize) -> Result<Response, TransportError> {
        get(&self.client, url, self.timeout, limit).await
    }
}

impl KeySource for HttpRegistry {
    fn fetch_keys(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(self.get(&self.endpoints.keys, self.limits.keys))
    }
}

impl Registry for HttpRegistry {
    fn fetch_crl(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(self.get(&self.endpoints.crl, self.limits.crl))
    }

    fn validate_access<'a>(
        &'a self,
        access_token: &'a str,
        agent_did: &'a str,
        ait_jti: &'a str,
    ) -> BoxFuture<'a, Result<u16, TransportError>> {
        Box::pin(async move {
            let body = serde_json::json!({ "agentDid": agent_did, "aitJti": ait_jti }).to_string();
            let request = self
                .client
                .post(&self.endpoints.validate)
                .timeout(call_timeout(self.timeout))
                .header("content-type", "application/json")
                .header("x-claw-agent-access", access_token)
                .body(body);
            status_only(request.send().await, &self.endpoints.validate).await
        })
    }
}

/// A client for the registry's endpoints and bearer issuers' JWKS: rustls, a connect timeout,
/// and redirects followed only within the origin first called.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .user_agent(concat!("claw-authz/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::custom(same_origin_only))
        .build()
}

/// Redirects allowed: at most [`MAX_REDIRECTS`], each to the origin of the first request. The
/// access token travels in the validate call and the keys decide every verdict, so a redirect
/// to another host, or from HTTPS to plain HTTP (another origin too), is not followed: the
/// 3xx itself is the answer, a failed call like any other status.
fn same_origin_only(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    if attempt.previous().len() > MAX_REDIRECTS {
        return attempt.stop();
    }
    let first = attempt.previous().first();
    if first.is_some_and(|first| followed(first, attempt.url())) {
        return attempt.follow();
    }
    tracing::warn!(
        to = %attempt.url().origin().ascii_serialization(),
        "registry redirect to another origin not followed"
    );
    attempt.stop()
}

const MAX_REDIRECTS: usize = 5;

/// Whether a redirect from a call to `first` may go to `next`: the same scheme, host and port.
fn followed(first: &reqwest::Url, next: &reqwest::Url) -> bool {
    first.origin() == next.origin()
}

/// `GET url`, reading at most `limit` bytes of body, within `timeout` (or the Check's nearer
/// deadline).
pub async fn get(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<Response, TransportError> {
    let request = client.get(url).timeout(call_timeout(timeout));
    read(request.send().await, url, limit).await
}

async fn read(
    sent: Result<reqwest::Response, reqwest::Error>,
    url: &str,
    limit: usize,
) -> Result<Response, TransportError> {
    let mut response = sent.map_err(|e| classify(&e, url))?;
    let status = response.status().as_u16();
    if response.content_length().is_some_and(|n| n > limit as u64) {
        tracing::warn!(url, limit, "registry response body over its size limit");
        return Err(TransportError::TooLarge);
    }
    // Sized from the announced length, and never grown past the limit: a body near the limit
    // (a CRL of megabytes) must not hold twice its size while it is read.
    let announced = response.content_length().unwrap_or(0);
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(limit));
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let needed = body.len() + chunk.len();
                if needed > limit {
                    tracing::warn!(url, limit, "registry response body over its size limit");
                    return Err(TransportError::TooLarge);
                }
                if needed > body.capacity() {
                    let grown = (body.capacity() * 2).clamp(needed, limit);
                    body.reserve_exact(grown - body.len());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Response { status, body }),
            Err(e) => return Err(classify(&e, url)),
        }
    }
}

/// The status of an answer whose body does not matter: a registry (or a proxy before it) that
/// answers 401 with a large page is still a 401.
async fn status_only(
    sent: Result<reqwest::Response, reqwest::Error>,
    url: &str,
) -> Result<u16, TransportError> {
    let mut response = sent.map_err(|e| classify(&e, url))?;
    let status = response.status().as_u16();
    let mut drained = 0;
    while drained < MAX_VALIDATE_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => drained += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
    Ok(status)
}

fn classify(error: &reqwest::Error, url: &str) -> TransportError {
    tracing::warn!(url, error = %error_chain(error), "registry call failed");
    if error.is_timeout() {
        return TransportError::Timeout;
    }
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return TransportError::Refused;
        }
        source = e.source();
    }
    TransportError::Failed
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::followed;

    #[test]
    fn redirects_stay_within_the_first_origin() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let first = url("https://registry.example.com/v1/crl");
        let cases = [
            ("https://registry.example.com/v2/crl", true),
            ("https://registry.example.com:443/moved", true),
            ("http://registry.example.com/v1/crl", false),
            ("https://registry.example.com:8443/v1/crl", false),
            ("https://evil.example.net/v1/crl", false),
            ("https://sub.registry.example.com/v1/crl", false),
        ];
        for (next, want) in cases {
            assert_eq!(followed(&first, &url(next)), want, "{next}");
        }
    }
}

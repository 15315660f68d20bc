//! The registry over HTTP(S) with reqwest and rustls.
//!
//! Bodies are capped (a registry answering garbage cannot make the sidecar buffer without
//! bound) and every call has a timeout: the configured one, or less when the Check being
//! handled has a nearer deadline (`call_timeout`). Transport errors are reduced to [`TransportError`]; the
//! full error is logged here and goes nowhere else.

use std::time::Duration;

use super::{BoxFuture, Registry, Response, TransportError, call_timeout};

/// Larger keys documents or CRLs are refused as transport failures.
const MAX_BODY: usize = 4 * 1024 * 1024;

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
pub struct HttpRegistry {
    client: reqwest::Client,
    endpoints: Endpoints,
    timeout: Duration,
}

impl HttpRegistry {
    pub fn new(endpoints: Endpoints, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .user_agent(concat!("claw-authz/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpRegistry {
            client,
            endpoints,
            timeout,
        })
    }

    async fn get(&self, url: &str) -> Result<Response, TransportError> {
        let request = self.client.get(url).timeout(call_timeout(self.timeout));
        read(request.send().await, url).await
    }
}

impl Registry for HttpRegistry {
    fn fetch_keys(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(self.get(&self.endpoints.keys))
    }

    fn fetch_crl(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(self.get(&self.endpoints.crl))
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
            read(request.send().await, &self.endpoints.validate)
                .await
                .map(|r| r.status)
        })
    }
}

async fn read(
    sent: Result<reqwest::Response, reqwest::Error>,
    url: &str,
) -> Result<Response, TransportError> {
    let mut response = sent.map_err(|e| classify(&e, url))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    tracing::warn!(url, "registry response body over {MAX_BODY} bytes");
                    return Err(TransportError::Failed);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Response { status, body }),
            Err(e) => return Err(classify(&e, url)),
        }
    }
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

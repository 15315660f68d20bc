//! The pre-signed requests: a Claw proof per agent, or the httpsig scenario's RFC 9421 message
//! signature over the same request.

use super::*;

/// The authority the httpsig scenario's requests go to.
const HTTPSIG_AUTHORITY: &str = "api.bench.example";

/// The httpsig scenario's `Signature-Input` and `Signature` for one request of `signer`.
pub(super) fn message_signature(
    signer: &AgentSigner,
    created: u64,
    nonce: &str,
) -> (String, String) {
    use claw_authz::httpsig::{Request, SignatureSpec};
    let request = Request {
        method: "POST".into(),
        scheme: "https".into(),
        authority: HTTPSIG_AUTHORITY.into(),
        target: PATH.into(),
        fields: vec![("content-digest".into(), content_digest())],
    };
    let spec = SignatureSpec {
        label: "sig1".into(),
        components: ["@method", "@authority", "@path", "content-digest"]
            .map(String::from)
            .to_vec(),
        created: i64::try_from(created).unwrap_or(i64::MAX),
        nonce: Some(nonce.to_owned()),
        ..SignatureSpec::default()
    };
    signer
        .sign_message(&request, &spec)
        .unwrap_or_else(|e| panic!("the bench's signature: {e}"))
}

/// `Content-Digest` of [`BODY`].
fn content_digest() -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(BODY);
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest);
    format!("sha-256=:{b64}:")
}

/// Per agent, the httpsig scenario's request without its signature, on the policy `signed`.
pub(super) fn httpsig_templates(registry: &DevRegistry) -> Vec<Arc<CheckRequest>> {
    let digest = content_digest();
    registry
        .agents
        .iter()
        .map(|_| {
            let headers = [
                ("host", HTTPSIG_AUTHORITY),
                ("content-type", "application/json"),
                ("content-digest", digest.as_str()),
                ("x-request-id", "5f0c8a53-3f1e-4a4e-9d36-bench0request"),
            ];
            let mut request = check_request("POST", PATH, &headers, BODY);
            if let Some(a) = request.attributes.as_mut() {
                a.context_extensions
                    .insert("claw_policy".into(), "signed".into());
            }
            Arc::new(request)
        })
        .collect()
}

/// One pre-signed Check per agent, signed at `timestamp`.
pub fn templates(registry: &DevRegistry, timestamp: u64) -> Vec<Arc<CheckRequest>> {
    registry
        .agents
        .iter()
        .map(|a| {
            let proof = a.signer.sign_request("POST", PATH, BODY, timestamp, "n");
            let mut headers: Vec<(&str, &str)> = proof.pairs().to_vec();
            let auth = format!("Claw {}", a.ait);
            headers.push(("authorization", &auth));
            headers.push(("content-type", "application/json"));
            headers.push(("x-claw-agent-access", &a.access_token));
            // Envoy always sends one.
            headers.push(("x-request-id", "5f0c8a53-3f1e-4a4e-9d36-bench0request"));
            Arc::new(check_request("POST", PATH, &headers, BODY))
        })
        .collect()
}

//! The floor server: the least an ext_authz server verifying these requests must do. It answers
//! `Check` over the same tonic stack (and allocator) as claw-authz and does one signature
//! verification with a key it was given up front, and nothing else: no token, no caches, no replay
//! store, no telemetry. Its CPU per check is the floor of this architecture. For Claw requests
//! that is one Ed25519 `verify_strict` of the proof (ed25519-dalek's own, as the issue defines
//! the floor; claw-authz's `Ed25519Key::verify` gives the same verdicts a little cheaper); for
//! the bearer profile, one P-256 verify of the JWT's signature.

use std::net::SocketAddr;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status;
use prost::Message;
use tonic::{Request, Response};

use claw_authz::crypto::{Ed25519Key, P256Key};
use claw_authz::protocol::{b64, pop::canonical_string};
use ed25519_dalek::{Signature, VerifyingKey};

pub enum Floor {
    /// Verifies the request's proof with ed25519-dalek's `verify_strict`.
    Proof(VerifyingKey),
    /// Verifies the `Authorization: Bearer` JWT's ES256 signature.
    Bearer(P256Key),
}

/// A floor and what it answers a check that passes.
struct FloorServer {
    floor: Floor,
    /// The allow answer to send instead of a bare OK.
    allow: Option<CheckResponse>,
}

#[tonic::async_trait]
impl Authorization for FloorServer {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, tonic::Status> {
        let http = request
            .get_ref()
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let ok = http.is_some_and(|h| {
            // Envoy with `encode_raw_headers: true` (the bench's) sends `header_map` instead.
            let header = |k: &str| match h.headers.get(k) {
                Some(value) => value.as_str(),
                None => h
                    .header_map
                    .as_ref()
                    .and_then(|m| m.headers.iter().find(|line| line.key == k))
                    .map_or("", |line| match line.raw_value.is_empty() {
                        true => line.value.as_str(),
                        false => std::str::from_utf8(&line.raw_value).unwrap_or(""),
                    }),
            };
            let key = match &self.floor {
                Floor::Proof(key) => key,
                Floor::Bearer(key) => {
                    let token = header("authorization").strip_prefix("Bearer ");
                    let parts = token.and_then(|t| t.rsplit_once('.'));
                    return parts.is_some_and(|(input, sig)| {
                        b64::decode(sig).is_ok_and(|sig| key.verify(input.as_bytes(), &sig))
                    });
                }
            };
            let canonical = canonical_string(
                &h.method,
                &h.path,
                header("x-claw-timestamp"),
                header("x-claw-nonce"),
                header("x-claw-body-sha256"),
            );
            b64::decode_array::<64>(header("x-claw-proof")).is_ok_and(|sig| {
                key.verify_strict(canonical.as_bytes(), &Signature::from_bytes(&sig))
                    .is_ok()
            })
        });
        Ok(Response::new(match (ok, &self.allow) {
            (true, Some(allow)) => allow.clone(),
            _ => CheckResponse {
                status: Some(Status {
                    code: if ok { 0 } else { 16 },
                    ..Default::default()
                }),
                ..Default::default()
            },
        }))
    }
}

/// The floor for Claw proofs by this Ed25519 key (base64url).
pub fn proof(key_b64: &str) -> Result<Floor, String> {
    let bytes =
        b64::decode_array::<32>(key_b64).map_err(|_| "--floor-key: 32 bytes of base64url")?;
    // Parsed with claw-authz's key checks, verified with ed25519-dalek's.
    let key = Ed25519Key::from_bytes(&bytes).map_err(|e| format!("--floor-key: {e:?}"))?;
    let key = VerifyingKey::from_bytes(key.as_bytes()).map_err(|e| format!("--floor-key: {e}"))?;
    Ok(Floor::Proof(key))
}

/// The floor for bearer JWTs signed by this P-256 key (`x.y`, base64url).
pub fn bearer(key_xy: &str) -> Result<Floor, String> {
    let key = crate::bed::floor_p256_key(key_xy).map_err(|e| format!("--floor-p256-key: {e}"))?;
    Ok(Floor::Bearer(key))
}

/// `--floor-answer`: an encoded allow `CheckResponse`, in base64url.
pub fn allow_answer(encoded: &str) -> Result<CheckResponse, String> {
    let bytes = b64::decode(encoded).map_err(|_| "--floor-answer: base64url")?;
    let answer =
        CheckResponse::decode(bytes.as_slice()).map_err(|e| format!("--floor-answer: {e}"))?;
    match answer.status.as_ref().is_none_or(|s| s.code == 0) {
        true => Ok(answer),
        false => Err("--floor-answer: not an allow answer".into()),
    }
}

/// `claw-authz-bench --floor-key X` (or `--floor-p256-key X.Y`): serves on `listen` and prints
/// `{"grpc": "<addr>"}` on stderr once bound; a check that passes gets `allow`, or a bare OK.
pub async fn serve(
    listen: SocketAddr,
    floor: Floor,
    allow: Option<CheckResponse>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("{}", serde_json::json!({ "grpc": addr.to_string() }));
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(FloorServer { floor, allow }))
        .serve_with_incoming(claw_authz::server::incoming(listener))
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: i32, header: &str) -> CheckResponse {
        use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
        use envoy_types::pb::envoy::service::auth::v3::OkHttpResponse;
        use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
        CheckResponse {
            status: Some(Status {
                code,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![HeaderValueOption {
                    header: Some(HeaderValue {
                        key: header.into(),
                        value: "did:claw:agent:1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn the_floor_answer_is_the_allow_answer_it_was_given() {
        let allow = answer(0, "x-claw-agent-did");
        let given = allow_answer(&b64::encode(&allow.encode_to_vec())).expect("an allow answer");
        assert_eq!(given, allow);
    }

    #[test]
    fn the_floor_answer_refuses_denials_and_broken_base64url() {
        let deny = b64::encode(&answer(16, "x").encode_to_vec());
        assert_eq!(
            allow_answer(&deny).unwrap_err(),
            "--floor-answer: not an allow answer"
        );
        let allow = b64::encode(&answer(0, "x").encode_to_vec());
        for broken in [
            format!("{allow}="),
            format!("{allow}+"),
            format!("é{allow}"),
        ] {
            assert_eq!(
                allow_answer(&broken).unwrap_err(),
                "--floor-answer: base64url",
                "{broken}"
            );
        }
    }
}

//! The whole Check path: a CheckRequest through the real pipeline (both profiles), over an
//! in-process registry. The first byte picks the input's shape:
//! - 0: the rest is a protobuf `CheckRequest`, decoded as Envoy's would be;
//! - otherwise fields separated by 0xFF (method, path, authorization, timestamp, nonce, body
//!   hash, proof, body) on the Claw, bearer or `any` route. An empty authorization is a valid
//!   AIT, and an empty proof is a valid signature over the fuzzed request, so the stages past
//!   the token (proof, revocation, replay, access) are reached too.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use claw_authz::app::{App, Parts};
use claw_authz::clock::ManualClock;
use claw_authz::config::Config;
use claw_authz::dev::check::check_request;
use claw_authz::dev::sign::{AitSpec, Ed25519Signer, RegistrySigner};
use claw_authz::registry::{BoxFuture, KeySource, Registry, Response, TransportError};
use claw_authz::request::RequestView;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

const NOW_MS: u64 = 1_767_225_600_000;
const ISSUER: &str = "https://registry.example.com";

/// The registry: its keys, no revocations, and every access token refused.
struct InProcess {
    keys: String,
}

impl KeySource for InProcess {
    fn fetch_keys(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        let body = self.keys.clone().into_bytes();
        Box::pin(async move { Ok(Response { status: 200, body }) })
    }
}

impl Registry for InProcess {
    fn fetch_crl(&self) -> BoxFuture<'_, Result<Response, TransportError>> {
        Box::pin(async {
            Ok(Response {
                status: 404,
                body: Vec::new(),
            })
        })
    }

    fn validate_access<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<u16, TransportError>> {
        Box::pin(async { Ok(401) })
    }
}

struct World {
    runtime: tokio::runtime::Runtime,
    app: Arc<App>,
    agent: Ed25519Signer,
    ait: String,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let registry = RegistrySigner::new("k1", ISSUER, Ed25519Signer::from_seed([7; 32]));
        let agent = Ed25519Signer::from_seed([8; 32]);
        let ait = registry.mint_ait(&AitSpec {
            agent_ulid: "01KDRQTQC0HVMAN00000000009".into(),
            owner_ulid: "01KDRQTQC0HVMAN00000000001".into(),
            name: "fuzz".into(),
            public_key_b64: agent.public_b64(),
            jti: "01KDRQTQC1AT00000000000009".into(),
            issued_at: NOW_MS / 1000 - 60,
            ttl_secs: 86_400,
        });
        let yaml = format!(
            "registry:\n  url: {ISSUER}\nnonce:\n  store: memory\n  capacity: 100000\n\
             bearer:\n  issuers:\n    - {{issuer: https://auth.example.com, audience: svc, jwks_url: http://127.0.0.1:9/jwks, insecure_http: true}}\n\
             policies:\n  bearer: {{profile: bearer, require_roles: [reader]}}\n  any: {{profile: any}}\n"
        );
        let config = Config::load(&yaml, &HashMap::new()).expect("the fuzz config");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let parts = Parts {
            registry: Some(Arc::new(InProcess {
                keys: registry.keys_document(),
            })),
            trust: None,
        };
        let clock = Arc::new(ManualClock::at(NOW_MS));
        let app = runtime
            .block_on(async { App::build(&config, clock, parts) })
            .expect("the fuzz app");
        World {
            runtime,
            app: Arc::new(app),
            agent,
            ait,
        }
    })
}

/// A request from fields separated by 0xFF, on the route `mode` picks.
fn structured(w: &World, mode: u8, data: &[u8]) -> CheckRequest {
    let mut fields = data.splitn(8, |&b| b == 0xff);
    let mut next = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let (method, path, auth, ts, nonce, hash, proof) =
        (next(), next(), next(), next(), next(), next(), next());
    let body = fields.next().unwrap_or_default();
    let auth = match auth.is_empty() {
        true => format!("Claw {}", w.ait),
        false => auth,
    };
    let signed = w
        .agent
        .sign_request(&method, &path, body, NOW_MS / 1000, &nonce);
    let mut headers: Vec<(&str, &str)> = vec![("authorization", &auth)];
    if proof.is_empty() {
        headers.extend(signed.pairs());
    } else {
        headers.extend([
            ("x-claw-timestamp", ts.as_str()),
            ("x-claw-nonce", nonce.as_str()),
            ("x-claw-body-sha256", hash.as_str()),
            ("x-claw-proof", proof.as_str()),
        ]);
    }
    let mut request = check_request(&method, &path, &headers, body);
    let policy = match mode % 3 {
        0 => None,
        1 => Some("bearer"),
        _ => Some("any"),
    };
    if let (Some(policy), Some(attributes)) = (policy, request.attributes.as_mut()) {
        attributes
            .context_extensions
            .insert("claw_policy".into(), policy.into());
    }
    request
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let request = match mode {
        0 => match CheckRequest::decode(rest) {
            Ok(request) => request,
            Err(_) => return,
        },
        _ => structured(w, mode, rest),
    };
    let view = RequestView::from_check(request);
    let _ = w.runtime.block_on(w.app.pipeline.check(&view));
});

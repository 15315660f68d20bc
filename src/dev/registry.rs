//! The dev registry: a registry on loopback for the demo, the bench and tests. It mints its own
//! signing key and the agents' AITs, serves the keys document, a CRL (revoking the agent named
//! `revoked`) and access-token validation, and can hang on demand.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::dev::sign::{
    AgentSigner, AitSpec, Ed25519Signer, RegistrySigner, random_nonce, random_ulid,
};

/// One agent the demo registry knows.
pub struct DemoAgent {
    pub name: &'static str,
    pub signer: AgentSigner,
    pub did: String,
    pub jti: String,
    pub ait: String,
    pub access_token: String,
}

/// The dev registry: keys document, CRL, access-token validation.
pub struct DevRegistry {
    pub url: String,
    pub signer: RegistrySigner,
    pub agents: Vec<DemoAgent>,
    hanging: Arc<AtomicBool>,
}

struct RegistryState {
    signer: RegistrySigner,
    /// access token -> (agent DID, current AIT jti)
    tokens: HashMap<String, (String, String)>,
    revoked: Vec<(String, String)>,
    clock: SystemClock,
    /// Every endpoint hangs (never answers) while set.
    hanging: Arc<AtomicBool>,
}

impl DevRegistry {
    /// Starts the registry on `127.0.0.1:0` with agents `alpha` and `beta` (paired), `stranger`
    /// (no pairs) and `revoked` (paired, but its AIT is on the CRL).
    pub async fn start() -> std::io::Result<DevRegistry> {
        Self::start_with(&["alpha", "beta", "stranger", "revoked"], |_| {
            AgentSigner::Ed25519(Ed25519Signer::random())
        })
        .await
    }

    /// Starts the registry with these agents (an agent named `revoked` is on the CRL), each
    /// with the key `key(name)` makes.
    pub async fn start_with(
        names: &[&'static str],
        key: impl Fn(&str) -> AgentSigner,
    ) -> std::io::Result<DevRegistry> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let signer = RegistrySigner::new("dev-key-1", &url, Ed25519Signer::random());
        let now = SystemClock.now_secs();
        let owner = random_ulid(now * 1000);
        let agents: Vec<DemoAgent> = names
            .iter()
            .map(|&name| {
                let key = key(name);
                let ulid = random_ulid(now * 1000);
                let jti = random_ulid(now * 1000);
                let spec = AitSpec {
                    agent_ulid: ulid.clone(),
                    owner_ulid: owner.clone(),
                    name: format!("{name}-agent"),
                    public_key_b64: String::new(),
                    jti: jti.clone(),
                    issued_at: now.saturating_sub(60),
                    ttl_secs: 30 * 86_400,
                };
                let ait = signer.mint_ait_with_key(&spec, key.jwk());
                DemoAgent {
                    name,
                    did: signer.agent_did(&ulid),
                    signer: key,
                    jti,
                    ait,
                    access_token: format!("clw_agt_{}", random_nonce()),
                }
            })
            .collect();
        let hanging = Arc::new(AtomicBool::new(false));
        let state = Arc::new(RegistryState {
            signer: signer.clone(),
            tokens: agents
                .iter()
                .map(|a| (a.access_token.clone(), (a.did.clone(), a.jti.clone())))
                .collect(),
            revoked: agents
                .iter()
                .filter(|a| a.name == "revoked")
                .map(|a| (a.did.clone(), a.jti.clone()))
                .collect(),
            clock: SystemClock,
            hanging: hanging.clone(),
        });
        let router = axum::Router::new()
            .route("/.well-known/claw-keys.json", get(keys_document))
            .route("/v1/crl", get(crl))
            .route("/v1/agents/auth/validate", post(validate))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                hang_while_set,
            ))
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(DevRegistry {
            url,
            signer,
            agents,
            hanging,
        })
    }

    /// While set, every endpoint hangs: the registry accepts connections and never answers.
    pub fn set_hanging(&self, hanging: bool) {
        self.hanging.store(hanging, Ordering::Relaxed);
    }

    pub fn agent(&self, name: &str) -> &DemoAgent {
        self.agents
            .iter()
            .find(|a| a.name == name)
            .expect("a demo agent")
    }

    /// A trust file pairing alpha with beta and with revoked.
    pub fn trust_yaml(&self) -> String {
        let (a, b, r) = (
            &self.agent("alpha").did,
            &self.agent("beta").did,
            &self.agent("revoked").did,
        );
        format!("pairs:\n  - [\"{a}\", \"{b}\"]\n  - [\"{a}\", \"{r}\"]\n")
    }
}

async fn hang_while_set(
    State(s): State<Arc<RegistryState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if s.hanging.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
    next.run(request).await
}

async fn keys_document(State(s): State<Arc<RegistryState>>) -> String {
    s.signer.keys_document()
}

async fn crl(State(s): State<Arc<RegistryState>>) -> Json<serde_json::Value> {
    let now = s.clock.now_secs();
    let token = s.signer.sign_crl(&s.revoked, now, &random_ulid(now * 1000));
    Json(serde_json::json!({ "crl": token }))
}

async fn validate(
    State(s): State<Arc<RegistryState>>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> StatusCode {
    let token = headers
        .get("x-claw-agent-access")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match s.tokens.get(token) {
        Some((did, jti)) if body["agentDid"] == *did && body["aitJti"] == *jti => {
            StatusCode::NO_CONTENT
        }
        _ => StatusCode::UNAUTHORIZED,
    }
}

//! A registry with agents, its three endpoints on loopback, and a trust file: the setting of the
//! server-level tests.
#![allow(dead_code)]

use claw_authz::dev::check::check_request;
use claw_authz::dev::sign::{AitSpec, Ed25519Signer, RegistrySigner};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use serde_json::json;

use super::registry::{FakeEndpoint, Reply};

pub const NOW_MS: u64 = 1_767_225_600_000;
pub const ISSUER: &str = "https://registry.example.com";
pub const OWNER_ULID: &str = "01KDRQTQC0HVMAN00000000001";

pub struct Agent {
    pub key: Ed25519Signer,
    pub ait: String,
    pub ulid: String,
    pub jti: String,
}

impl Agent {
    /// A request signed at `at_ms` (the proof's timestamp) with this agent's AIT.
    pub fn request(
        &self,
        at_ms: u64,
        method: &str,
        path: &str,
        body: &[u8],
        nonce: &str,
        extra: &[(&str, &str)],
    ) -> CheckRequest {
        let proof = self
            .key
            .sign_request(method, path, body, at_ms / 1000, nonce);
        let auth = format!("Claw {}", self.ait);
        let mut headers: Vec<(&str, &str)> = proof.pairs().to_vec();
        headers.push(("authorization", &auth));
        headers.extend_from_slice(extra);
        check_request(method, path, &headers, body)
    }
}

impl Agent {
    /// A `POST /hooks/message` (the access-token route) signed at `at_ms`, presenting `token`.
    pub fn message(&self, at_ms: u64, nonce: &str, token: &str) -> CheckRequest {
        let access = [("x-claw-agent-access", token)];
        self.request(at_ms, "POST", "/hooks/message", b"{}", nonce, &access)
    }
}

/// An allowed response's headers as (name, value, append_action, deprecated `append` set).
pub type SetHeader = (String, String, i32, bool);

pub struct World {
    /// The time the AITs were minted around (issued a minute before, valid a day).
    pub now_ms: u64,
    pub registry: RegistrySigner,
    /// Paired with beta and with every crew member.
    pub alpha: Agent,
    pub beta: Agent,
    /// More known agents, for load.
    pub crew: Vec<Agent>,
    /// Not paired with anyone.
    pub stranger: Agent,
    pub keys: FakeEndpoint,
    pub crl: FakeEndpoint,
    pub validate: FakeEndpoint,
    pub dir: std::path::PathBuf,
}

/// `n` as a 26-character ULID-shaped suffix after `prefix` (Crockford digits only).
fn ulid(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:0width$}", width = 26 - prefix.len())
}

impl World {
    pub async fn new(name: &str) -> World {
        World::with_crew(name, 0).await
    }

    /// A world whose alpha also pairs with `crew` more agents.
    pub async fn with_crew(name: &str, crew: usize) -> World {
        World::at(name, crew, NOW_MS).await
    }

    /// A world minted around the machine's clock, for servers running on it (other processes).
    pub async fn live(name: &str, crew: usize) -> World {
        use claw_authz::clock::Clock;
        World::at(name, crew, claw_authz::clock::SystemClock.now_ms()).await
    }

    async fn at(name: &str, crew: usize, now_ms: u64) -> World {
        let registry = RegistrySigner::new("k1", ISSUER, Ed25519Signer::from_seed([1; 32]));
        let agent = |seed: u8, agent_ulid: String, jti: String| {
            let key = Ed25519Signer::from_seed([seed; 32]);
            let ait = mint_at(&registry, &key, &agent_ulid, &jti, now_ms);
            Agent {
                key,
                ait,
                ulid: agent_ulid,
                jti,
            }
        };
        let alpha = agent(
            2,
            "01KDVA7EC0AGENTA0000000001".into(),
            "01KDVA7EC1AT00000000000001".into(),
        );
        let stranger = agent(
            3,
            "01KDVA7EC0AGENTS0000000001".into(),
            "01KDVA7EC1AT00000000000002".into(),
        );
        let beta = agent(
            4,
            "01KDVA7EC0AGENTB0000000001".into(),
            "01KDVA7EC1AT00000000000004".into(),
        );
        let crew: Vec<Agent> = (0..crew)
            .map(|i| {
                let seed = u8::try_from(10 + i).expect("a small crew");
                agent(seed, ulid("01KDVA7EC0CREW", i), ulid("01KDVA7EC1CRJT", i))
            })
            .collect();
        let keys = FakeEndpoint::start(
            "/.well-known/claw-keys.json",
            vec![Reply::Body(200, registry.keys_document())],
        )
        .await;
        let crl = FakeEndpoint::start(
            "/v1/crl",
            vec![Reply::json(
                404,
                &json!({"error": {"code": "CRL_NOT_FOUND"}}),
            )],
        )
        .await;
        let validate =
            FakeEndpoint::start("/v1/agents/auth/validate", vec![Reply::Status(204)]).await;
        let dir =
            std::env::temp_dir().join(format!("claw-server-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = registry.agent_did(&alpha.ulid);
        let pairs: Vec<String> = std::iter::once(&beta)
            .chain(&crew)
            .map(|peer| format!("[\"{a}\", \"{}\"]", registry.agent_did(&peer.ulid)))
            .collect();
        std::fs::write(
            dir.join("trust.yaml"),
            format!("pairs: [{}]\n", pairs.join(", ")),
        )
        .unwrap();
        World {
            now_ms,
            registry,
            alpha,
            beta,
            crew,
            stranger,
            keys,
            crl,
            validate,
            dir,
        }
    }

    /// The config for this world, with `extra` YAML appended.
    pub fn yaml(&self, extra: &str) -> String {
        self.yaml_with("", extra)
    }

    /// Like [`World::yaml`], with `registry_extra` (indented lines) added to `registry:`.
    /// Nonces live in memory unless `extra` says otherwise.
    pub fn yaml_with(&self, registry_extra: &str, extra: &str) -> String {
        let nonce = if extra.contains("nonce:") {
            ""
        } else {
            "nonce:\n  store: memory\n"
        };
        format!(
            "registry:\n  url: {ISSUER}\n  insecure_http: true\n  keys_url: {}\n  crl_url: {}\n  validate_url: {}\n{registry_extra}trust:\n  file: {}\n{nonce}{extra}",
            self.keys.url,
            self.crl.url,
            self.validate.url,
            self.dir.join("trust.yaml").display()
        )
    }

    /// A request signed at the world's time.
    pub fn signed(
        &self,
        agent: &Agent,
        method: &str,
        path: &str,
        body: &[u8],
        nonce: &str,
        extra: &[(&str, &str)],
    ) -> CheckRequest {
        agent.request(self.now_ms, method, path, body, nonce, extra)
    }

    /// `yaml` (from [`World::yaml`]) with the trust store in Redis, `settings` the lines under
    /// `trust:` that replace the trust file's.
    pub fn with_trust_in_redis(&self, yaml: &str, settings: &str) -> String {
        let file = format!("  file: {}\n", self.dir.join("trust.yaml").display());
        yaml.replace(&file, &format!("  store: redis\n{settings}"))
    }

    /// Every known agent: alpha, beta, then the crew.
    pub fn known(&self) -> Vec<&Agent> {
        [&self.alpha, &self.beta]
            .into_iter()
            .chain(&self.crew)
            .collect()
    }
}

/// An AIT for `key`, issued a minute before [`NOW_MS`] and valid for a day.
pub fn mint(registry: &RegistrySigner, key: &Ed25519Signer, agent_ulid: &str, jti: &str) -> String {
    mint_at(registry, key, agent_ulid, jti, NOW_MS)
}

/// An AIT for `key`, issued a minute before `now_ms` and valid for a day.
pub fn mint_at(
    registry: &RegistrySigner,
    key: &Ed25519Signer,
    agent_ulid: &str,
    jti: &str,
    now_ms: u64,
) -> String {
    registry.mint_ait(&AitSpec {
        agent_ulid: agent_ulid.into(),
        owner_ulid: OWNER_ULID.into(),
        name: "agent".into(),
        public_key_b64: key.public_b64(),
        jti: jti.into(),
        issued_at: now_ms / 1000 - 60,
        ttl_secs: 86_400,
    })
}

pub fn ok_headers(r: &CheckResponse) -> (Vec<SetHeader>, Vec<String>) {
    match &r.http_response {
        Some(HttpResponse::OkResponse(ok)) => (
            ok.headers
                .iter()
                .map(|h| {
                    let hv = h.header.clone().unwrap();
                    #[allow(deprecated)]
                    let append = h.append.is_some();
                    (hv.key, hv.value, h.append_action, append)
                })
                .collect(),
            ok.headers_to_remove.clone(),
        ),
        other => panic!("expected an allow, got {other:?}"),
    }
}

pub fn denied(r: &CheckResponse) -> (i32, Vec<(String, String)>, String) {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => (
            d.status.as_ref().unwrap().code,
            d.headers
                .iter()
                .map(|h| {
                    let hv = h.header.clone().unwrap();
                    (hv.key, hv.value)
                })
                .collect(),
            d.body.clone(),
        ),
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// The outcome in one line: `200` for an allow, else `status code` from the envelope.
pub fn outcome(r: &CheckResponse) -> String {
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) => "200".into(),
        Some(HttpResponse::DeniedResponse(_)) => {
            let (status, _, body) = denied(r);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            format!("{status} {}", v["error"]["code"].as_str().unwrap())
        }
        other => panic!("no http response: {other:?}"),
    }
}

/// The request routed to the named policy, as Envoy's per-route `context_extensions` would.
pub fn on_policy(policy: &str, mut req: CheckRequest) -> CheckRequest {
    let attrs = req.attributes.as_mut().unwrap();
    attrs
        .context_extensions
        .insert("claw_policy".into(), policy.into());
    req
}

/// Sends `requests` over `client` from `workers` concurrent tasks; every outcome must be `want`.
pub async fn drain(
    client: &envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
        tonic::transport::Channel,
    >,
    requests: Vec<CheckRequest>,
    workers: usize,
    want: &'static str,
) {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(requests));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (queue, mut client) = (queue.clone(), client.clone());
            tokio::spawn(async move {
                loop {
                    let Some(r) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let answer = client.check(r).await.unwrap().into_inner();
                    assert_eq!(outcome(&answer), want);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// `GET /v1/x` through an HTTP front (Envoy) at `base`, signed now by `agent` with `nonce`.
pub fn http_request(
    http: &reqwest::Client,
    base: &str,
    agent: &Agent,
    nonce: &str,
) -> reqwest::Request {
    use claw_authz::clock::Clock;
    let now = claw_authz::clock::SystemClock.now_secs();
    let proof = agent.key.sign_request("GET", "/v1/x", b"", now, nonce);
    let mut r = http
        .get(format!("{base}/v1/x"))
        .header("authorization", format!("Claw {}", agent.ait));
    for (k, v) in proof.pairs() {
        r = r.header(k, v);
    }
    r.build().unwrap()
}

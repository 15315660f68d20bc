//! A test bed: the dev registry with its agents, a server process configured for one scenario,
//! the pre-signed requests, and the raw-verify baseline.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use super::sink::CountingSink;
use claw_authz::crypto::PublicKey;
use claw_authz::dev::check::check_request;
use claw_authz::dev::process::{Process, start_redis};
use claw_authz::dev::registry::DevRegistry;
use claw_authz::dev::sign::{AgentSigner, Ed25519Signer, P256Signer, random_nonce};
use claw_authz::protocol::b64;

/// What the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The configuration people deploy (the main figure): the defaults, so the file nonce store
    /// and Prometheus metrics, plus OTLP export of metrics and of spans sampled at 10 %.
    Default,
    /// Known agents, hot caches, memory nonce store, no export, Ed25519.
    Hot,
    /// As `hot`, with P-256 (ES256) agent keys.
    P256,
    /// As `hot`, with the embedded persistent nonce store (`nonce.store: file`).
    File,
    /// As `hot`, with the Redis nonce store (a local `redis-server`).
    Redis,
    /// The registry hangs and every breaker is open; access tokens come from the cache.
    BreakerOpen,
    /// As `default`, exporting every span (100 % sampling).
    Telemetry,
    /// The bearer profile: an ES256 JWT from a configured issuer's JWKS, one P-256 verify.
    Bearer,
    /// As `hot`, with the httpsig profile: a fresh RFC 9421 Ed25519 signature per request
    /// (`@method`, `@authority`, `@path`, `content-digest`, a nonce) by a configured key.
    Httpsig,
    /// The floor server: one `verify_strict` per check and nothing else.
    Floor,
    /// The floor server of the bearer profile: one P-256 verify of the JWT per check.
    FloorP256,
}

pub const SCENARIOS: [Scenario; 11] = [
    Scenario::Floor,
    Scenario::Default,
    Scenario::Hot,
    Scenario::File,
    Scenario::Redis,
    Scenario::Telemetry,
    Scenario::P256,
    Scenario::BreakerOpen,
    Scenario::FloorP256,
    Scenario::Bearer,
    Scenario::Httpsig,
];

impl Scenario {
    /// The floor server this scenario's CPU per check is compared with.
    pub fn floor(self) -> Scenario {
        match self {
            Scenario::Bearer | Scenario::P256 | Scenario::FloorP256 => Scenario::FloorP256,
            _ => Scenario::Floor,
        }
    }

    pub fn is_floor(self) -> bool {
        matches!(self, Scenario::Floor | Scenario::FloorP256)
    }

    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }
}

pub const PATH: &str = "/bench/message";
pub const BODY: &[u8] = br#"{"message":"a benchmark request of a typical small size","n":1}"#;
pub const AGENTS: [&str; 8] = ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"];

/// One pre-signed request: which agent, and its nonce and proof (the rest is shared).
pub struct Signed {
    pub agent: usize,
    pub nonce: String,
    pub proof: String,
}

pub struct Bed {
    pub scenario: Scenario,
    pub registry: DevRegistry,
    pub server: Process,
    /// Per agent, the `CheckRequest` every request of that agent starts from.
    pub templates: Vec<Arc<CheckRequest>>,
    pub timestamp: u64,
    pub sink: Option<CountingSink>,
    /// The bearer scenarios' issuer.
    pub issuer: Option<Issuer>,
    _redis: Option<Process>,
    dir: PathBuf,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bed {
    pub async fn start(binary: &Path, scenario: Scenario) -> Result<Bed, String> {
        Bed::start_on(binary, scenario, false).await
    }

    /// Like [`Bed::start`]; with `unix`, claw-authz listens on a Unix domain socket in the
    /// bed's directory (`server.grpc_unix`).
    pub async fn start_on(binary: &Path, scenario: Scenario, unix: bool) -> Result<Bed, String> {
        let io = |e: std::io::Error| e.to_string();
        let p256 = scenario == Scenario::P256;
        let registry = DevRegistry::start_with(&AGENTS, |_| {
            if p256 {
                AgentSigner::P256(P256Signer::random())
            } else {
                AgentSigner::Ed25519(Ed25519Signer::random())
            }
        })
        .await
        .map_err(io)?;
        let dir = std::env::temp_dir().join(format!("claw-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::write(dir.join("trust.yaml"), trust_yaml(&registry)).map_err(io)?;

        let timestamp = claw_authz::clock::Clock::now_secs(&claw_authz::clock::SystemClock);
        let issuer = match scenario {
            Scenario::Bearer | Scenario::FloorP256 => Some(Issuer::start(timestamp).await?),
            _ => None,
        };
        let (extra, redis, sink) =
            scenario_config(scenario, &dir, issuer.as_ref(), &registry).await?;
        let server = match (scenario, &issuer) {
            (Scenario::Floor, _) => start_floor(&registry).await?,
            (Scenario::FloorP256, Some(issuer)) => start_floor_p256(issuer).await?,
            _ => {
                let grpc = match unix {
                    true => format!("\"unix:{}\"", dir.join("grpc.sock").display()),
                    false => "127.0.0.1:0".to_owned(),
                };
                start_claw_authz(binary, &dir, &registry.url, &grpc, &extra).await?
            }
        };
        let templates = match &issuer {
            Some(issuer) => vec![issuer.template()],
            None if scenario == Scenario::Httpsig => httpsig_templates(&registry),
            None => templates(&registry, timestamp),
        };
        Ok(Bed {
            scenario,
            registry,
            server,
            templates,
            timestamp,
            sink,
            issuer,
            _redis: redis,
            dir,
        })
    }

    /// `n` requests, each with a fresh nonce and its own signature, agents taken in turn (the
    /// floor server knows one key, so it gets agent 0 only). Signed on every core, before any
    /// timing starts.
    pub fn sign(&self, n: usize) -> Vec<Signed> {
        if self.issuer.is_some() {
            // A bearer token is sent as it is, request after request.
            let unsigned = || Signed {
                agent: 0,
                nonce: String::new(),
                proof: String::new(),
            };
            return (0..n).map(|_| unsigned()).collect();
        }
        let agents = if self.scenario == Scenario::Floor {
            1
        } else {
            self.registry.agents.len()
        };
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let per = n.div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        (t * per..((t + 1) * per).min(n))
                            .map(|i| {
                                let agent = i % agents;
                                let nonce = random_nonce();
                                let signer = &self.registry.agents[agent].signer;
                                if self.scenario == Scenario::Httpsig {
                                    let (input, signature) =
                                        message_signature(signer, self.timestamp, &nonce);
                                    return Signed {
                                        agent,
                                        nonce: input,
                                        proof: signature,
                                    };
                                }
                                let proof = signer
                                    .sign_request("POST", PATH, BODY, self.timestamp, &nonce)
                                    .proof;
                                Signed {
                                    agent,
                                    nonce,
                                    proof,
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }

    /// The `CheckRequest` for one pre-signed request.
    pub fn request(&self, signed: &Signed) -> CheckRequest {
        let mut request = (*self.templates[signed.agent]).clone();
        if signed.nonce.is_empty() {
            return request;
        }
        if let Some(http) = request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            let (nonce, proof) = match self.scenario {
                Scenario::Httpsig => ("signature-input", "signature"),
                _ => ("x-claw-nonce", "x-claw-proof"),
            };
            http.headers.insert(nonce.into(), signed.nonce.clone());
            http.headers.insert(proof.into(), signed.proof.clone());
        }
        request
    }

    /// CPU time of one raw signature verification of this bed's agent algorithm (of a real
    /// request's proof), measured on this thread for about `budget`.
    pub fn cpu_per_verify(&self, budget: Duration) -> Duration {
        let (key, message, signature) = match &self.issuer {
            Some(issuer) => issuer.verification(),
            None => self.proof_verification(),
        };
        // The median of many short slices of wall time on this thread: a slice that was
        // preempted or shared its core with a burst of other work (this is a shared 2-core
        // machine) does not move the median. (The kernel's per-thread CPU clock advances in
        // scheduler ticks, too coarse for slices this short.)
        let slices = (budget.as_millis() * 2).max(5);
        let mut per_verify: Vec<Duration> = (0..slices)
            .map(|_| {
                let started = tokio::time::Instant::now();
                for _ in 0..10 {
                    std::hint::black_box(key.verify(message.as_bytes(), &signature));
                }
                started.elapsed() / 10
            })
            .collect();
        per_verify.sort();
        per_verify[per_verify.len() / 2]
    }

    /// Agent 0's key, and the canonical string and signature of one of its proofs.
    fn proof_verification(&self) -> (PublicKey, String, Vec<u8>) {
        let agent = &self.registry.agents[0];
        let key = agent_key(&agent.signer);
        let signed = agent
            .signer
            .sign_request("POST", PATH, BODY, self.timestamp, "nonce");
        let message = claw_authz::protocol::pop::canonical_string(
            "POST",
            PATH,
            &signed.timestamp,
            &signed.nonce,
            &signed.body_sha256,
        );
        let signature = b64::decode(&signed.proof).unwrap_or_default();
        (key, message, signature)
    }
}

/// The bearer scenarios' token issuer: an ES256 key, its JWKS served on loopback, and one token.
pub struct Issuer {
    signer: P256Signer,
    pub jwks_url: String,
    pub token: String,
}

pub const BEARER_ISSUER: &str = "https://issuer.bench.example";
pub const BEARER_AUDIENCE: &str = "bench-api";

impl Issuer {
    async fn start(now: u64) -> Result<Issuer, String> {
        let signer = P256Signer::random();
        let mut jwk = signer.jwk();
        jwk["kid"] = "bench-1".into();
        jwk["alg"] = "ES256".into();
        jwk["use"] = "sig".into();
        let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let jwks_url = format!(
            "http://{}/jwks.json",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let router = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || std::future::ready(jwks.clone())),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let header = r#"{"alg":"ES256","typ":"JWT","kid":"bench-1"}"#;
        let claims = serde_json::json!({
            "iss": BEARER_ISSUER, "aud": BEARER_AUDIENCE, "sub": "agent-bench",
            "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 86_400,
            "roles": ["reader"], "permissions": ["orders:read"],
        });
        let input = format!(
            "{}.{}",
            b64::encode(header.as_bytes()),
            b64::encode(claims.to_string().as_bytes())
        );
        let token = format!("{input}.{}", b64::encode(&signer.sign(input.as_bytes())));
        Ok(Issuer {
            signer,
            jwks_url,
            token,
        })
    }

    fn template(&self) -> Arc<CheckRequest> {
        let auth = format!("Bearer {}", self.token);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("x-request-id", "5f0c8a53-3f1e-4a4e-9d36-bench0request"),
        ];
        let mut request = check_request("POST", PATH, &headers, BODY);
        // The route's policy, chosen by Envoy's per-route `context_extensions`.
        if let Some(attributes) = request.attributes.as_mut() {
            let policy = ("claw_policy".to_owned(), "orders".to_owned());
            attributes.context_extensions.extend([policy]);
        }
        Arc::new(request)
    }

    /// `x.y` of the issuer's key, base64url.
    pub fn key_b64(&self) -> String {
        let jwk = self.signer.jwk();
        format!(
            "{}.{}",
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default()
        )
    }

    /// The key, the token's signing input and its signature.
    fn verification(&self) -> (PublicKey, String, Vec<u8>) {
        let key = floor_p256_key(&self.key_b64()).expect("a generated key is valid");
        let key = PublicKey::P256(key);
        let (input, signature) = self.token.rsplit_once('.').unwrap_or_default();
        let signature = b64::decode(signature).unwrap_or_default();
        (key, input.to_owned(), signature)
    }
}

/// The P-256 key of `x.y` (base64url coordinates).
pub fn floor_p256_key(xy: &str) -> Result<claw_authz::crypto::P256Key, String> {
    let (x, y) = xy.split_once('.').ok_or("x.y")?;
    let x = b64::decode_array::<32>(x).map_err(|_| "x: 32 bytes of base64url")?;
    let y = b64::decode_array::<32>(y).map_err(|_| "y: 32 bytes of base64url")?;
    claw_authz::crypto::P256Key::from_coordinates(&x, &y).map_err(|e| format!("{e:?}"))
}

fn agent_key(signer: &AgentSigner) -> PublicKey {
    let jwk = signer.jwk();
    let field = |k: &str| {
        jwk[k]
            .as_str()
            .and_then(|v| b64::decode_array::<32>(v).ok())
            .unwrap_or([0; 32])
    };
    match signer {
        AgentSigner::Ed25519(_) => PublicKey::Ed25519(
            claw_authz::crypto::Ed25519Key::from_bytes(&field("x"))
                .expect("a generated key is valid"),
        ),
        AgentSigner::P256(_) => PublicKey::P256(
            claw_authz::crypto::P256Key::from_coordinates(&field("x"), &field("y"))
                .expect("a generated key is valid"),
        ),
    }
}

/// What a scenario adds to the config (nonce store, Redis, OTLP sink, a fragile registry), and
/// the processes it needs.
async fn scenario_config(
    scenario: Scenario,
    dir: &Path,
    issuer: Option<&Issuer>,
    registry: &DevRegistry,
) -> Result<(String, Option<Process>, Option<CountingSink>), String> {
    let io = |e: std::io::Error| e.to_string();
    let mut redis = None;
    let mut sink = None;
    let mut extra = String::new();
    let file_store = format!(
        "nonce: {{store: file, dir: {}}}\n",
        dir.join("nonces").display()
    );
    match scenario {
        Scenario::Default | Scenario::Telemetry => {
            let counting = CountingSink::default();
            let addr = counting.start().await.map_err(io)?;
            sink = Some(counting);
            let percent = if scenario == Scenario::Default { 10 } else { 100 };
            extra.push_str(&file_store);
            extra.push_str(&format!(
                "telemetry: {{otlp_endpoint: \"http://{addr}\", trace_sample_percent: {percent}}}\n"
            ));
        }
        Scenario::Hot | Scenario::P256 => extra.push_str("nonce: {store: memory}\n"),
        Scenario::File => extra.push_str(&file_store),
        Scenario::Redis => {
            let (process, port) = start_redis(dir).await?;
            redis = Some(process);
            // A saturated 2-core machine can stall one Redis round trip past the 50 ms
            // default; the bench measures cost, not that timeout.
            extra.push_str(&format!(
                "nonce: {{store: redis}}\nredis: {{url: \"redis://127.0.0.1:{port}/0\", timeout_ms: 500}}\n"
            ));
        }
        Scenario::BreakerOpen => extra.push_str(&format!(
            "nonce: {{store: memory}}\nroutes:\n  - {{path: {PATH}, require_access_token: true}}\n\
             access: {{ttl_secs: 1}}\ncrl: {{refresh_interval_secs: 1}}\n\
             registry: {{url: {REGISTRY_URL}, insecure_http: true, breaker_failures: 1, timeout_ms: 100, request_timeout_ms: 100}}\n"
        )),
        Scenario::Bearer => {
            let issuer = issuer.ok_or("the bearer scenario needs its issuer")?;
            extra.push_str(&format!(
                "bearer:\n  issuers:\n    - {{issuer: \"{BEARER_ISSUER}\", audience: {BEARER_AUDIENCE}, jwks_url: \"{}\", insecure_http: true}}\n\
                 policies:\n  orders: {{profile: bearer, require_roles: [reader]}}\n",
                issuer.jwks_url
            ));
        }
        Scenario::Httpsig => {
            extra.push_str("nonce: {store: memory}\nhttpsig:\n  keys:\n");
            for agent in &registry.agents {
                extra.push_str(&format!("    - {}\n", agent.signer.jwk()));
            }
            extra.push_str("policies:\n  signed: {profile: httpsig}\n");
        }
        Scenario::Floor | Scenario::FloorP256 => {}
    }
    Ok((extra, redis, sink))
}

/// The floor server: this bench binary itself, knowing agent 0's key.
async fn start_floor(registry: &DevRegistry) -> Result<Process, String> {
    let key = match &registry.agents[0].signer {
        AgentSigner::Ed25519(k) => k.public_b64(),
        AgentSigner::P256(_) => return Err("the floor server takes an Ed25519 key".into()),
    };
    // `--floor-key=`: a base64url key may begin with `-`.
    let key = format!("--floor-key={key}");
    let this = std::env::current_exe().map_err(|e| e.to_string())?;
    Process::start_server(&this, &[&key]).await
}

/// The P-256 floor server: this bench binary, knowing the bearer issuer's key.
async fn start_floor_p256(issuer: &Issuer) -> Result<Process, String> {
    let key = format!("--floor-p256-key={}", issuer.key_b64());
    let this = std::env::current_exe().map_err(|e| e.to_string())?;
    Process::start_server(&this, &[&key]).await
}

/// Stands for the registry's URL in a scenario's config.
const REGISTRY_URL: &str = "{registry}";

/// `binary serve` with the scenario's config.
async fn start_claw_authz(
    binary: &Path,
    dir: &Path,
    registry_url: &str,
    grpc: &str,
    extra: &str,
) -> Result<Process, String> {
    let extra = extra.replace(REGISTRY_URL, registry_url);
    let registry_line = if extra.contains("registry:") {
        String::new()
    } else {
        format!("registry: {{url: {registry_url}, insecure_http: true}}\n")
    };
    let config = format!(
        "listen: {{grpc: {grpc}, admin: 127.0.0.1:0}}\n{registry_line}trust: {{file: {}}}\nlog: {{format: json, level: info}}\n{extra}",
        dir.join("trust.yaml").display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let path = path.display().to_string();
    Process::start_server(binary, &["serve", "--config", &path]).await
}

/// The trust file: each agent paired with the next.
pub fn trust_yaml(registry: &DevRegistry) -> String {
    let dids: Vec<&str> = registry.agents.iter().map(|a| a.did.as_str()).collect();
    let pairs: String = dids
        .windows(2)
        .map(|w| format!("  - [\"{}\", \"{}\"]\n", w[0], w[1]))
        .collect();
    format!("pairs:\n{pairs}")
}

/// One pre-signed Check per agent, signed at `timestamp`.
/// The authority the httpsig scenario's requests go to.
const HTTPSIG_AUTHORITY: &str = "api.bench.example";

/// The httpsig scenario's `Signature-Input` and `Signature` for one request of `signer`.
fn message_signature(signer: &AgentSigner, created: u64, nonce: &str) -> (String, String) {
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
fn httpsig_templates(registry: &DevRegistry) -> Vec<Arc<CheckRequest>> {
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

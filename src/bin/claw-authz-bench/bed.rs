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

mod issuer;
mod requests;

pub use issuer::{BEARER_AUDIENCE, BEARER_ISSUER, Issuer, floor_p256_key};
pub use requests::templates;
use requests::{httpsig_templates, message_signature};

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
    /// The bearer profile: an ES256 JWT from a configured issuer's JWKS, sent with every
    /// request as clients do, so verified once and then answered from the verified-token cache.
    Bearer,
    /// As `bearer` with that cache off (`limits.bearer_cache_capacity: 0`): one P-256 verify
    /// per check, as if every request brought a new token.
    BearerUncached,
    /// As `hot`, with the httpsig profile: a fresh RFC 9421 Ed25519 signature per request
    /// (`@method`, `@authority`, `@path`, `content-digest`, a nonce) by a configured key.
    Httpsig,
    /// The floor server: one `verify_strict` per check and nothing else.
    Floor,
    /// The floor server of the bearer profile: one P-256 verify of the JWT per check.
    FloorP256,
}

pub const SCENARIOS: [Scenario; 12] = [
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
    Scenario::BearerUncached,
    Scenario::Httpsig,
];

impl Scenario {
    /// The floor server this scenario's CPU per check is compared with.
    pub fn floor(self) -> Scenario {
        match self {
            Scenario::Bearer | Scenario::BearerUncached | Scenario::P256 | Scenario::FloorP256 => {
                Scenario::FloorP256
            }
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
    /// The server runs `workers` runtime threads (0: tokio's default, one per CPU).
    pub async fn start(binary: &Path, scenario: Scenario, workers: usize) -> Result<Bed, String> {
        Bed::start_on(binary, scenario, false, None, workers).await
    }

    /// Like [`Bed::start`]; with `unix`, claw-authz listens on a Unix domain socket in the
    /// bed's directory (`server.grpc_unix`). The floor server answers a check that passes with
    /// `floor_answer` (an encoded allow answer, in base64url), or a bare OK.
    pub async fn start_on(
        binary: &Path,
        scenario: Scenario,
        unix: bool,
        floor_answer: Option<&str>,
        workers: usize,
    ) -> Result<Bed, String> {
        // tokio reads it when the server builds its runtime; both servers are tokio's.
        let env: Vec<(&str, String)> = match workers {
            0 => Vec::new(),
            n => vec![("TOKIO_WORKER_THREADS", n.to_string())],
        };
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
            Scenario::Bearer | Scenario::BearerUncached | Scenario::FloorP256 => {
                Some(Issuer::start(timestamp).await?)
            }
            _ => None,
        };
        let (extra, redis, sink) =
            scenario_config(scenario, &dir, issuer.as_ref(), &registry).await?;
        let server = match (scenario, &issuer) {
            (Scenario::Floor, _) => start_floor(&registry, floor_answer, &env).await?,
            (Scenario::FloorP256, Some(issuer)) => start_floor_p256(issuer, &env).await?,
            _ => {
                let grpc = match unix {
                    true => format!("\"unix:{}\"", dir.join("grpc.sock").display()),
                    false => "127.0.0.1:0".to_owned(),
                };
                start_claw_authz(binary, &dir, &registry.url, &grpc, &extra, &env).await?
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
        Scenario::Bearer | Scenario::BearerUncached => {
            let issuer = issuer.ok_or("the bearer scenario needs its issuer")?;
            if scenario == Scenario::BearerUncached {
                extra.push_str("limits: {bearer_cache_capacity: 0}\n");
            }
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
async fn start_floor(
    registry: &DevRegistry,
    answer: Option<&str>,
    env: &[(&str, String)],
) -> Result<Process, String> {
    let key = match &registry.agents[0].signer {
        AgentSigner::Ed25519(k) => k.public_b64(),
        AgentSigner::P256(_) => return Err("the floor server takes an Ed25519 key".into()),
    };
    // `--floor-key=`: a base64url key may begin with `-`.
    let key = format!("--floor-key={key}");
    let this = std::env::current_exe().map_err(|e| e.to_string())?;
    match answer {
        // `=` for the same reason.
        Some(answer) => {
            let answer = format!("--floor-answer={answer}");
            Process::start_server_with(&this, &[&key, &answer], env).await
        }
        None => Process::start_server_with(&this, &[&key], env).await,
    }
}

/// The P-256 floor server: this bench binary, knowing the bearer issuer's key.
async fn start_floor_p256(issuer: &Issuer, env: &[(&str, String)]) -> Result<Process, String> {
    let key = format!("--floor-p256-key={}", issuer.key_b64());
    let this = std::env::current_exe().map_err(|e| e.to_string())?;
    Process::start_server_with(&this, &[&key], env).await
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
    env: &[(&str, String)],
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
    Process::start_server_with(binary, &["serve", "--config", &path], env).await
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

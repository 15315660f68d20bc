//! `docs/security-cases.md` section 1: one named test per JWS attack row, with the exact outcome.

mod support;

use std::net::TcpListener;

use claw_authz::crypto::{Ed25519Key, KeyError, P256Key, PublicKey};
use claw_authz::protocol::ait::verify_ait;
use claw_authz::protocol::crl::verify_crl;
use claw_authz::protocol::events::{EventOutcome, parse_event};
use claw_authz::protocol::jws::{Expectations, HeaderProblem, TokenError, TokenKind};
use claw_authz::protocol::keys::{KeySet, KeysDocError, parse_keys_document};
use claw_authz::protocol::path::path_with_query;
use claw_authz::protocol::pop::{
    PopError, ProofInput, body_sha256, canonical_string, verify_proof,
};
use ed25519_dalek::Signer;
use serde_json::{Value, json};
use sha2::Digest;
use support::*;

const AT_NOW: Expectations<'static> = Expectations {
    issuer: Some(ISSUER),
    now_secs: NOW,
};
const ALG_EDDSA: TokenError = TokenError::Header(TokenKind::Ait, HeaderProblem::Alg("EdDSA"));
const UNSUPPORTED: TokenError =
    TokenError::Header(TokenKind::Ait, HeaderProblem::UnsupportedMember);

fn claims() -> String {
    agent_a_claims().to_string()
}

fn ait(header: &str, payload: &str) -> String {
    sign_jws_ed(header, payload, &registry_signer("reg-key-a"))
}

fn check(token: &str) -> Result<claw_authz::protocol::ait::AitClaims, TokenError> {
    verify_ait(token, &fixture_keys(), AT_NOW)
}

fn check_err(token: &str) -> TokenError {
    check(token).expect_err("token must be refused")
}

/// HMAC (RFC 2104) over any sha2 hash, to build HS* attack tokens without a MAC crate.
fn hmac<D: Digest>(key: &[u8], message: &[u8], block: usize) -> Vec<u8> {
    let mut k = if key.len() > block {
        D::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(block, 0);
    let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let mut h = D::new();
    h.update(&inner);
    h.update(message);
    let inner_hash = h.finalize();
    let mut h = D::new();
    h.update(&outer);
    h.update(inner_hash);
    h.finalize().to_vec()
}

/// A key set with reg-key-a (Ed25519) and a P-256 key `reg-key-p`.
fn mixed_keys() -> (KeySet, p256::ecdsa::SigningKey) {
    let p = p256_signer("attack/p256-registry");
    let (x, y) = p256_xy(&p);
    let doc = json!({"keys": [
        fixtures()["keysDoc"]["keys"][0].clone(),
        {"kid": "reg-key-p", "alg": "ES256", "crv": "P-256", "x": x, "y": y, "status": "active"},
    ]});
    (parse_keys_document(doc.to_string().as_bytes()).unwrap(), p)
}

#[test]
fn row01_alg_none_and_case_variants_are_refused() {
    let payload = b64(claims().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"AIT","kid":"reg-key-a"}}"#).as_bytes());
        for sig in ["", "AA"] {
            assert_eq!(
                check_err(&format!("{header}.{payload}.{sig}")),
                ALG_EDDSA,
                "{alg}/{sig}"
            );
        }
        // Two segments: jose fails to read a protected header before anything else.
        assert_eq!(
            check_err(&format!("{header}.{payload}")),
            TokenError::HeaderFormat
        );
    }
}

#[test]
fn row02_hmac_keyed_with_the_public_key_is_refused() {
    let public = unb64(
        fixtures()["registryKeys"]["reg-key-a"]["publicKeyB64u"]
            .as_str()
            .unwrap(),
    );
    let jwk_text = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&public)}).to_string();
    let p = p256_signer("attack/hs-p256");
    let sec1 = p.verifying_key().to_sec1_point(false).as_bytes().to_vec();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        b64(&public)
    );
    for alg in ["HS256", "HS384", "HS512"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"AIT","kid":"reg-key-a"}}"#);
        let input = format!("{}.{}", b64(header.as_bytes()), b64(claims().as_bytes()));
        for key in [&public[..], jwk_text.as_bytes(), &sec1, pem.as_bytes()] {
            let mac = match alg {
                "HS256" => hmac::<sha2::Sha256>(key, input.as_bytes(), 64),
                "HS384" => hmac::<sha2::Sha384>(key, input.as_bytes(), 128),
                _ => hmac::<sha2::Sha512>(key, input.as_bytes(), 128),
            };
            assert_eq!(
                check_err(&format!("{input}.{}", b64(&mac))),
                ALG_EDDSA,
                "{alg}"
            );
        }
    }
}

#[test]
fn row03_alg_must_be_the_one_the_key_allows() {
    let (keys, p) = mixed_keys();
    // ES256 header, kid of an OKP key.
    let es_on_okp = sign_jws_es(
        r#"{"alg":"ES256","typ":"AIT","kid":"reg-key-a"}"#,
        &claims(),
        &p,
    );
    assert_eq!(
        verify_ait(&es_on_okp, &keys, AT_NOW).unwrap_err(),
        ALG_EDDSA
    );
    // EdDSA header, kid of an EC key.
    let ed_on_ec = ait(
        r#"{"alg":"EdDSA","typ":"AIT","kid":"reg-key-p"}"#,
        &claims(),
    );
    assert_eq!(
        verify_ait(&ed_on_ec, &keys, AT_NOW).unwrap_err(),
        TokenError::Header(TokenKind::Ait, HeaderProblem::Alg("ES256"))
    );
    // Keys that could carry another algorithm never enter a key set.
    let entry = |extra: Value| {
        let mut e = json!({"kid": "k", "alg": "EdDSA", "crv": "Ed25519",
            "x": fixtures()["registryKeys"]["reg-key-a"]["publicKeyB64u"], "status": "active"});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        parse_keys_document(json!({"keys": [e]}).to_string().as_bytes()).map(|_| ())
    };
    assert_eq!(entry(json!({"alg": "ES256"})), Err(KeysDocError::Invalid));
    assert_eq!(entry(json!({"crv": "X25519"})), Err(KeysDocError::Invalid));
    assert_eq!(entry(json!({"use": "enc"})), Err(KeysDocError::Invalid));
    assert_eq!(
        entry(json!({"alg": "ES256", "crv": "P-384"})),
        Err(KeysDocError::Invalid)
    );
    assert_eq!(entry(json!({"use": "sig"})), Ok(()));
}

#[test]
fn row04_kid_injection_is_refused_without_any_lookup() {
    let not_allowed = TokenError::Header(TokenKind::Ait, HeaderProblem::KidNotAllowed);
    for kid in [
        json!("../../../../dev/null"),
        json!("' OR '1'='1"),
        json!("a\u{0}b"),
        json!("k".repeat(129)),
    ] {
        let header = json!({"alg": "EdDSA", "typ": "AIT", "kid": kid}).to_string();
        let err = check_err(&ait(&header, &claims()));
        assert_eq!(err, not_allowed, "{kid}");
        assert!(!err.is_unknown_kid());
        assert!(!err.to_string().contains("dev/null"));
    }
    let missing = TokenError::Header(TokenKind::Ait, HeaderProblem::KidMissing);
    for kid in [json!(7), json!({"a": 1})] {
        let header = json!({"alg": "EdDSA", "typ": "AIT", "kid": kid}).to_string();
        assert_eq!(check_err(&ait(&header, &claims())), missing);
    }
    let huge = json!({"alg": "EdDSA", "typ": "AIT", "kid": "k".repeat(10 * 1024)}).to_string();
    assert_eq!(
        check_err(&ait(&huge, &claims())),
        TokenError::Header(TokenKind::Ait, HeaderProblem::TooLarge)
    );
    let long = json!({"alg": "EdDSA", "typ": "AIT", "kid": "k".repeat(2 * 1024)}).to_string();
    assert_eq!(
        check_err(&ait(&long, &claims())),
        TokenError::Header(TokenKind::Ait, HeaderProblem::TooLarge)
    );
}

#[test]
fn row05_unknown_kid_asks_for_a_refresh_and_rotation_then_verifies() {
    for i in 0..100 {
        let kid = format!("rand-{i:04}");
        let header = format!(r#"{{"alg":"EdDSA","typ":"AIT","kid":"{kid}"}}"#);
        let err = check_err(&ait(&header, &claims()));
        assert!(err.is_unknown_kid());
        assert_eq!(err.to_string(), format!("Unknown AIT signing kid: {kid}"));
    }
    let rotated = sign_jws_ed(
        r#"{"alg":"EdDSA","typ":"AIT","kid":"reg-key-d"}"#,
        &claims(),
        &registry_signer("reg-key-d"),
    );
    assert!(check_err(&rotated).is_unknown_kid());
    assert!(verify_ait(&rotated, &rotated_keys(), AT_NOW).is_ok());
}

#[test]
fn row06_crit_is_refused() {
    for extra in [
        r#""crit":["x-foo"],"x-foo":1"#,
        r#""crit":[]"#,
        r#""crit":["exp"]"#,
    ] {
        let header = format!(r#"{{"alg":"EdDSA","typ":"AIT","kid":"reg-key-a",{extra}}}"#);
        assert_eq!(check_err(&ait(&header, &claims())), UNSUPPORTED, "{extra}");
    }
}

#[test]
fn row07_key_carrying_headers_are_refused_and_never_fetched() {
    let attacker = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let jwk =
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(attacker.verifying_key().as_bytes())});
    let header = json!({"alg": "EdDSA", "typ": "AIT", "kid": "reg-key-a", "jwk": jwk}).to_string();
    assert_eq!(
        check_err(&sign_jws_ed(&header, &claims(), &attacker)),
        UNSUPPORTED
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    for member in ["jku", "x5u"] {
        let header =
            json!({"alg": "EdDSA", "typ": "AIT", "kid": "reg-key-a", member: url}).to_string();
        assert_eq!(
            check_err(&sign_jws_ed(&header, &claims(), &attacker)),
            UNSUPPORTED
        );
    }
    let header =
        json!({"alg": "EdDSA", "typ": "AIT", "kid": "reg-key-a", "x5c": ["MIIB"]}).to_string();
    assert_eq!(check_err(&ait(&header, &claims())), UNSUPPORTED);
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "no connection may reach the jku/x5u listener"
    );
}

#[test]
fn row08_unencoded_payload_is_refused() {
    let signer = registry_signer("reg-key-a");
    for header in [
        r#"{"alg":"EdDSA","typ":"AIT","kid":"reg-key-a","b64":false,"crit":["b64"]}"#,
        r#"{"alg":"EdDSA","typ":"AIT","kid":"reg-key-a","b64":false}"#,
    ] {
        // A payload without dots reaches the header check, which refuses `b64`.
        let input = format!("{}.{}", b64(header.as_bytes()), r#"{"x":1}"#);
        let sig = signer.sign(input.as_bytes());
        assert_eq!(
            check_err(&format!("{input}.{}", b64(&sig.to_bytes()))),
            UNSUPPORTED
        );
        // The real claims contain dots, so the token is not even three segments.
        let input = format!("{}.{}", b64(header.as_bytes()), claims());
        let sig = signer.sign(input.as_bytes());
        assert_eq!(
            check_err(&format!("{input}.{}", b64(&sig.to_bytes()))),
            TokenError::HeaderFormat
        );
    }
}

#[test]
fn row09_duplicate_members_are_refused() {
    let header = r#"{"alg":"none","alg":"EdDSA","typ":"AIT","kid":"reg-key-a"}"#;
    assert_eq!(
        check_err(&ait(header, &claims())),
        TokenError::Header(TokenKind::Ait, HeaderProblem::DuplicateMember)
    );
    let text = claims();
    for dup in [
        r#""sub":"did:cdi:registry.example.com:agent:01KDVA7EC0AGENTB0000000001","#,
        r#""jti":"01KDVA7EC1AT00000000000009","#,
    ] {
        let payload = text.replacen('{', &format!("{{{dup}"), 1);
        assert_eq!(
            check_err(&ait(AIT_HEADER, &payload)),
            TokenError::ClaimsDuplicateMember
        );
    }
}

#[test]
fn row10_time_claim_edges_and_types() {
    let with = |name: &str, value: Value| {
        let mut c = agent_a_claims();
        c[name] = value;
        ait(AIT_HEADER, &c.to_string())
    };
    let exp = agent_a_claims()["exp"].as_u64().unwrap();
    let at = |now_secs| Expectations {
        issuer: Some(ISSUER),
        now_secs,
    };
    let token = with("exp", json!(exp));
    assert!(verify_ait(&token, &fixture_keys(), at(exp - 1)).is_ok());
    assert_eq!(
        verify_ait(&token, &fixture_keys(), at(exp)).unwrap_err(),
        TokenError::Expired
    );
    let nbf = agent_a_claims()["nbf"].as_u64().unwrap();
    assert!(verify_ait(&token, &fixture_keys(), at(nbf)).is_ok());
    assert_eq!(
        verify_ait(&token, &fixture_keys(), at(nbf - 1)).unwrap_err(),
        TokenError::NotYetValid
    );

    // 1.7e9 is an integer to JavaScript, so the reference accepts it as nbf.
    assert!(check(&with("nbf", json!(1.7e9))).is_ok());
    assert_eq!(
        check_err(&with("exp", json!("1800000000"))),
        TokenError::TimeClaimType("exp")
    );
    assert_eq!(
        check_err(&with("exp", Value::Null)),
        TokenError::TimeClaimType("exp")
    );
    assert_eq!(
        check_err(&with("iat", json!("x"))),
        TokenError::TimeClaimType("iat")
    );
    assert_eq!(check_err(&with("exp", json!(-1))), TokenError::Expired);
    let schema = |message: &str| TokenError::Claims(TokenKind::Ait, message.into());
    assert_eq!(
        check_err(&with("exp", json!(9_223_372_036_854_775_808u64))),
        schema("Too big: expected int to be <=9007199254740991")
    );
    assert_eq!(
        check_err(&with("exp", json!(1e300))),
        schema("Too big: expected int to be <=9007199254740991")
    );
    let mut c = agent_a_claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        check_err(&ait(AIT_HEADER, &c.to_string())),
        schema("Invalid input: expected number, received undefined")
    );
    assert_eq!(
        check_err(&with("iat", json!(exp))),
        schema("exp must be greater than iat")
    );
}

#[test]
fn row11_oversized_and_deep_tokens_are_refused_before_decoding() {
    // The protocol layer's ceiling; the configured limit (`limits.token_bytes`, 8 KiB) applies
    // before it, in the token stage (`tests/leniency.rs`).
    let big = "a".repeat(64 * 1024 + 1);
    assert_eq!(check_err(&big), TokenError::Malformed("Token is too large"));
    let huge = "a".repeat(1 << 20);
    assert_eq!(
        check_err(&huge),
        TokenError::Malformed("Token is too large")
    );
    // Too many segments is decided by counting, before any decoding.
    let dots = ".".repeat(10_000);
    assert_eq!(check_err(&dots), TokenError::HeaderFormat);
    let deep = b64("[".repeat(2000).as_bytes());
    assert_eq!(
        check_err(&format!("{deep}.e30.AA")),
        TokenError::Header(TokenKind::Ait, HeaderProblem::TooLarge)
    );
    let deep_small = b64("[".repeat(500).as_bytes());
    assert_eq!(
        check_err(&format!("{deep_small}.e30.AA")),
        TokenError::HeaderFormat
    );
}

#[test]
fn row12_nested_and_encrypted_tokens_are_refused() {
    let inner = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(claims().as_bytes())
    );
    let header = r#"{"alg":"EdDSA","typ":"AIT","kid":"reg-key-a","cty":"JWT"}"#;
    assert_eq!(
        check_err(&ait(header, &format!("\"{inner}\""))),
        UNSUPPORTED
    );
    // A JWE: jose reads its protected header first, whose `alg` is not EdDSA.
    assert_eq!(
        check_err("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d"),
        TokenError::Header(TokenKind::Ait, HeaderProblem::Alg("EdDSA"))
    );
    // Five segments under a good header are refused as not a compact JWS.
    let header = b64(br#"{"alg":"EdDSA","typ":"AIT","kid":"reg-key-a"}"#);
    assert_eq!(
        check_err(&format!("{header}.a.b.c.d")),
        TokenError::Malformed("Invalid Compact JWS")
    );
}

#[test]
fn row13_non_canonical_base64url_is_refused() {
    let token = ait(AIT_HEADER, &claims());
    assert!(check(&token).is_ok());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let last = sig.chars().last().unwrap();
    // The last of 86 characters carries 4 unused bits; any other value of them is non-canonical.
    let flipped = if last == 'A' { 'B' } else { 'A' };
    let variants = [
        format!("{input}.{}{flipped}", &sig[..sig.len() - 1]),
        format!("{token}=="),
        format!("{input}.{}", sig.replace('-', "+").replace('_', "/")),
        format!("{input}.{}\r\n", sig),
        format!("{input}.{} ", sig),
        format!("{input}."),
    ];
    for v in &variants {
        if v == &token {
            continue;
        }
        let err = check_err(v);
        assert!(
            matches!(err, TokenError::SignatureSegment | TokenError::Signature),
            "{v}: {err:?}"
        );
    }
    // A signed but non-canonical payload segment is caught after the signature.
    let payload = b64(claims().as_bytes());
    let bad = format!("{payload}=");
    let input = format!("{}.{bad}", b64(AIT_HEADER.as_bytes()));
    let sig = registry_signer("reg-key-a").sign(input.as_bytes());
    assert_eq!(
        check_err(&format!("{input}.{}", b64(&sig.to_bytes()))),
        TokenError::PayloadSegment
    );
    // And a non-canonical header segment never reaches the key lookup.
    let header = format!("{}=", b64(AIT_HEADER.as_bytes()));
    assert_eq!(
        check_err(&format!("{header}.{payload}.AA")),
        TokenError::HeaderFormat
    );
}

/// The P-256 group order n, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn sub_be(a: &[u8; 32], b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = (d + 256 * borrow) as u8;
    }
    out
}

fn p256_ait_with_cnf() -> (KeySet, String, String) {
    let (keys, registry) = mixed_keys();
    let agent = p256_signer("attack/p256-agent");
    let (x, y) = p256_xy(&agent);
    let mut c = agent_a_claims();
    c["cnf"] = json!({"jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y}});
    let token = sign_jws_es(
        r#"{"alg":"ES256","typ":"AIT","kid":"reg-key-p"}"#,
        &c.to_string(),
        &registry,
    );
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = unb64(sig);
    let high_s = sub_be(&P256_N, &sig[32..]);
    let twin = format!("{input}.{}", b64(&[&sig[..32], &high_s[..]].concat()));
    (keys, token, twin)
}

#[test]
fn row14_ecdsa_high_s_twins_verify_to_the_same_identity() {
    let (keys, token, twin) = p256_ait_with_cnf();
    assert_ne!(token, twin);
    let a = verify_ait(&token, &keys, AT_NOW).unwrap();
    let b = verify_ait(&twin, &keys, AT_NOW).unwrap();
    // Revocation is keyed on jti and replay on (agent, nonce), never on signature bytes.
    assert_eq!((a.jti, a.sub), (b.jti, b.sub));
}

#[test]
fn row15_der_and_odd_length_ecdsa_signatures_are_refused() {
    let (keys, token, _) = p256_ait_with_cnf();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let raw = unb64(sig);
    let der = p256::ecdsa::Signature::from_slice(&raw)
        .unwrap()
        .to_der()
        .as_bytes()
        .to_vec();
    let variants: Vec<Vec<u8>> = vec![
        der,
        raw[..63].to_vec(),
        [&raw[..], &[0]].concat(),
        [&[0][..], &raw[..32], &[0], &raw[32..]].concat(),
    ];
    for v in variants {
        assert_eq!(
            verify_ait(&format!("{input}.{}", b64(&v)), &keys, AT_NOW).unwrap_err(),
            TokenError::Signature,
            "{} bytes",
            v.len()
        );
    }
}

/// The Ed25519 group order L, little-endian.
const ED_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn add_multiple_of_l(s: &[u8], times: u16) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut carry = 0u32;
    for i in 0..32 {
        let v = u32::from(s[i]) + u32::from(ED_L[i]) * u32::from(times) + carry;
        out[i] = v as u8;
        carry = v >> 8;
    }
    out
}

#[test]
fn row16_ed25519_malleability_weak_keys_and_universal_forgery() {
    // (a) S + L, S + 2L, S + 8L.
    let token = ait(AIT_HEADER, &claims());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = unb64(sig);
    for times in [1, 2, 8] {
        let s = add_multiple_of_l(&sig[32..], times);
        let forged = format!("{input}.{}", b64(&[&sig[..32], &s[..]].concat()));
        assert_eq!(check_err(&forged), TokenError::Signature, "S+{times}L");
    }
    // (b) weak or non-canonical confirmation keys in an otherwise valid AIT.
    let weak_keys = [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];
    for hex in weak_keys {
        let mut c = agent_a_claims();
        c["cnf"]["jwk"]["x"] = json!(b64(&seed(hex)));
        assert_eq!(
            check_err(&ait(AIT_HEADER, &c.to_string())),
            TokenError::WeakAgentKey,
            "{hex}"
        );
    }
    // A mixed-order key: a valid key plus a small-order component.
    let mixed = {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        let good = CompressedEdwardsY(*agent_signer("agentA").verifying_key().as_bytes())
            .decompress()
            .unwrap();
        let torsion = CompressedEdwardsY(seed(weak_keys[4])).decompress().unwrap();
        (good + torsion).compress().to_bytes()
    };
    assert_eq!(Ed25519Key::from_bytes(&mixed).unwrap_err(), KeyError::Weak);
    // (c) the identity key (universal forgery with R = identity, S = 0) is refused as a
    // registry key, as an AIT confirmation key, and so can never verify a proof.
    let identity = seed(weak_keys[0]);
    assert_eq!(
        Ed25519Key::from_bytes(&identity).unwrap_err(),
        KeyError::Weak
    );
    let doc = json!({"keys": [{"kid": "id", "alg": "EdDSA", "crv": "Ed25519", "x": b64(&identity), "status": "active"}]});
    assert_eq!(
        parse_keys_document(doc.to_string().as_bytes()).unwrap_err(),
        KeysDocError::Invalid
    );
    let mut forged_sig = vec![0u8; 64];
    forged_sig[0] = 1;
    let forged = format!("{input}.{}", b64(&forged_sig));
    assert_eq!(check_err(&forged), TokenError::Signature);
}

#[test]
fn row17_psychic_signatures_are_refused() {
    let (keys, token, _) = p256_ait_with_cnf();
    let (input, _) = token.rsplit_once('.').unwrap();
    let mut one = [0u8; 32];
    one[31] = 1;
    for (r, s) in [
        ([0u8; 32], [0u8; 32]),
        ([0u8; 32], P256_N),
        (P256_N, P256_N),
        (one, one),
    ] {
        let sig = b64(&[r, s].concat());
        assert_eq!(
            verify_ait(&format!("{input}.{sig}"), &keys, AT_NOW).unwrap_err(),
            TokenError::Signature
        );
    }
    let ed = ait(AIT_HEADER, &claims());
    let (input, _) = ed.rsplit_once('.').unwrap();
    assert_eq!(
        check_err(&format!("{input}.{}", b64(&[0u8; 64]))),
        TokenError::Signature
    );
}

#[test]
fn row18_cross_token_confusion_is_refused() {
    let f = fixtures();
    let crl = f["crls"]["revokesAgentC"].as_str().unwrap();
    assert_eq!(
        check_err(crl),
        TokenError::Header(TokenKind::Ait, HeaderProblem::Typ)
    );
    let aitoken = f["aits"]["agentA"].as_str().unwrap();
    assert_eq!(
        verify_crl(aitoken, &fixture_keys(), AT_NOW).unwrap_err(),
        TokenError::Header(TokenKind::Crl, HeaderProblem::Typ)
    );
    for typ in [json!("ait"), json!("AIT "), json!("JWT"), Value::Null] {
        let mut h = json!({"alg": "EdDSA", "kid": "reg-key-a"});
        if !typ.is_null() {
            h["typ"] = typ;
        }
        assert_eq!(
            check_err(&ait(&h.to_string(), &claims())),
            TokenError::Header(TokenKind::Ait, HeaderProblem::Typ)
        );
    }
    let mut c = agent_a_claims();
    c["sub"] = c["ownerDid"].clone();
    assert_eq!(
        check_err(&ait(AIT_HEADER, &c.to_string())),
        TokenError::Claims(TokenKind::Ait, "sub must be a valid agent DID".into())
    );
}

#[test]
fn row19_crl_rollback_bad_crls_and_event_replays() {
    let f = fixtures();
    let keys = fixture_keys();
    let newer = verify_crl(f["crls"]["revokesAgentC"].as_str().unwrap(), &keys, AT_NOW).unwrap();
    let mut older = newer.clone();
    older.iat -= 60;
    assert!(!older.supersedes(Some(&newer)), "rollback must be ignored");
    assert!(newer.supersedes(Some(&older)));
    assert!(newer.supersedes(None));

    let token = f["crls"]["revokesAgentC"].as_str().unwrap();
    let (input, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{input}.{}", b64(&[1u8; 64]));
    assert_eq!(
        verify_crl(&forged, &keys, AT_NOW).unwrap_err(),
        TokenError::Signature
    );
    let late = Expectations {
        issuer: Some(ISSUER),
        now_secs: newer.exp,
    };
    assert_eq!(
        verify_crl(token, &keys, late).unwrap_err(),
        TokenError::Expired
    );

    let event = load("events.json")["vectors"][0]["queueMessageBody"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(parse_event(event.as_bytes()), parse_event(event.as_bytes()));
    let unrevoke = event.replace("agent.auth.revoked", "agent.auth.unrevoked");
    assert!(matches!(
        parse_event(unrevoke.as_bytes()),
        EventOutcome::Ignored(_)
    ));
}

#[test]
fn row20_canonical_string_ambiguity_is_impossible() {
    let signer = agent_signer("agentA");
    let key = ed_public(&signer);
    let body = br#"{"message":"hello"}"#;
    let hash = body_sha256(body);
    let sign = |method: &str, path: &str, ts: &str, nonce: &str| {
        let c = canonical_string(method, path, ts, nonce, &hash);
        b64(&signer.sign(c.as_bytes()).to_bytes())
    };
    let now_ms = NOW * 1000;
    let verify = |method: &str, ts: &str, nonce: &str, proof: &str| {
        verify_proof(
            &ProofInput {
                method,
                path_with_query: "/hooks/message",
                timestamp: Some(ts),
                nonce: Some(nonce),
                body_sha256: Some(&hash),
                proof: Some(proof),
                body,
            },
            &key,
            now_ms,
            300,
        )
    };
    let ts = NOW.to_string();
    assert!(
        verify(
            "POST",
            &ts,
            "n1",
            &sign("POST", "/hooks/message", &ts, "n1")
        )
        .is_ok()
    );
    // CR or LF in the nonce is refused even when signed that way.
    for nonce in ["n1\nx", "n1\rx"] {
        let proof = sign("POST", "/hooks/message", &ts, nonce);
        assert_eq!(
            verify("POST", &ts, nonce, &proof).unwrap_err(),
            PopError::NonceControlChars
        );
    }
    // Newlines never survive path normalization.
    assert_eq!(
        path_with_query("/hooks/\nmessage\r").unwrap(),
        "/hooks/message"
    );
    // Two nonce headers arrive comma-joined and do not match a proof for either.
    let proof = sign("POST", "/hooks/message", &ts, "n1");
    assert_eq!(
        verify("POST", &ts, "n1,n2", &proof).unwrap_err(),
        PopError::SignatureMismatch
    );
    assert_eq!(
        verify("POST", &format!("+{ts}"), "n1", &proof).unwrap_err(),
        PopError::InvalidTimestamp
    );
    // A proof over the lowercase method does not verify: the verifier signs the uppercase one.
    let lower_canonical = format!("CLAW-PROOF-V1\npost\n/hooks/message\n{ts}\nn1\n{hash}");
    let lower = b64(&signer.sign(lower_canonical.as_bytes()).to_bytes());
    assert_eq!(
        verify("post", &ts, "n1", &lower).unwrap_err(),
        PopError::SignatureMismatch
    );
    // Leading zeros are accepted as the reference accepts them; the string carries them verbatim.
    let zero = format!("0{ts}");
    assert!(
        verify(
            "POST",
            &zero,
            "n1",
            &sign("POST", "/hooks/message", &zero, "n1")
        )
        .is_ok()
    );
    assert_eq!(
        verify("PO\nST", &ts, "n1", &proof).unwrap_err(),
        PopError::InvalidMethod
    );
}

#[test]
fn p256_registry_and_agent_keys_positive_and_negative() {
    let (keys, token, _) = p256_ait_with_cnf();
    let claims = verify_ait(&token, &keys, AT_NOW).unwrap();
    assert!(matches!(claims.cnf.key, PublicKey::P256(_)));
    let agent = p256_signer("attack/p256-agent");
    let hash = body_sha256(b"");
    let ts = NOW.to_string();
    let canonical = canonical_string("GET", "/v1/x", &ts, "n", &hash);
    let sig: p256::ecdsa::Signature =
        p256::ecdsa::signature::Signer::sign(&agent, canonical.as_bytes());
    fn input<'a>(proof: &'a str, ts: &'a str, hash: &'a str) -> ProofInput<'a> {
        ProofInput {
            method: "GET",
            path_with_query: "/v1/x",
            timestamp: Some(ts),
            nonce: Some("n"),
            body_sha256: Some(hash),
            proof: Some(proof),
            body: b"",
        }
    }
    let good = b64(&sig.to_bytes());
    let proof = input(&good, &ts, &hash);
    assert!(verify_proof(&proof, &claims.cnf.key, NOW * 1000, 300).is_ok());
    // An Ed25519 signature, a DER signature and a signature by another P-256 key all fail.
    let ed = b64(&agent_signer("agentA").sign(canonical.as_bytes()).to_bytes());
    assert_eq!(
        verify_proof(&input(&ed, &ts, &hash), &claims.cnf.key, NOW * 1000, 300).unwrap_err(),
        PopError::SignatureMismatch
    );
    let der = b64(sig.to_der().as_bytes());
    assert_eq!(
        verify_proof(&input(&der, &ts, &hash), &claims.cnf.key, NOW * 1000, 300).unwrap_err(),
        PopError::ProofEncoding
    );
    let other: p256::ecdsa::Signature =
        p256::ecdsa::signature::Signer::sign(&p256_signer("other"), canonical.as_bytes());
    assert_eq!(
        verify_proof(
            &input(&b64(&other.to_bytes()), &ts, &hash),
            &claims.cnf.key,
            NOW * 1000,
            300
        )
        .unwrap_err(),
        PopError::SignatureMismatch
    );
    // kty/crv mismatches in cnf.jwk.
    for jwk in [
        json!({"kty": "EC", "crv": "Ed25519", "x": "AA", "y": "AA"}),
        json!({"kty": "OKP", "crv": "P-256", "x": "AA"}),
        json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
        json!({"kty": "RSA", "n": "AA", "e": "AQAB"}),
    ] {
        let mut c = agent_a_claims();
        c["cnf"] = json!({"jwk": jwk});
        let err = check_err(&ait(AIT_HEADER, &c.to_string()));
        assert!(
            matches!(err, TokenError::Claims(TokenKind::Ait, _)),
            "{jwk}: {err:?}"
        );
    }
    // An off-curve P-256 confirmation key.
    let mut c = agent_a_claims();
    c["cnf"] =
        json!({"jwk": {"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])}});
    assert_eq!(
        check_err(&ait(AIT_HEADER, &c.to_string())),
        TokenError::WeakAgentKey
    );
    assert_eq!(
        P256Key::from_coordinates(&[1; 32], &[2; 32]).unwrap_err(),
        KeyError::Invalid
    );
}

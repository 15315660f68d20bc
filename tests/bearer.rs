//! The bearer (ES256 JWT) profile at the protocol layer: `src/protocol/bearer.rs` against tokens
//! signed here with generated P-256 keys, one case per refusal, each with its own code.
//! (The profile is not yet wired into the pipeline; see the README's status of issue 9.)

mod support;

use claw_authz::protocol::bearer::{BearerError, BearerExpect, parse_jwks, peek_issuer, verify};
use claw_authz::protocol::keys::KeysDocError;
use serde_json::{Value, json};
use support::{b64, p256_signer, p256_xy, sign_jws_es};

const NOW: u64 = 1_767_225_600;
const ISS: &str = "https://auth.example.com";
const AUD: &str = "svc-orders";

fn expect() -> BearerExpect<'static> {
    BearerExpect {
        issuer: ISS,
        audience: AUD,
        now_secs: NOW,
        max_iat_skew_secs: 60,
    }
}

fn jwks(kids: &[(&str, &str)]) -> String {
    let keys: Vec<Value> = kids
        .iter()
        .map(|(kid, label)| {
            let (x, y) = p256_xy(&p256_signer(label));
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"})
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn claims() -> Value {
    json!({
        "sub": "agent-7", "aud": AUD, "iss": ISS, "iat": NOW - 10, "exp": NOW + 3600,
        "jti": "tok-1", "roles": ["reader"], "permissions": ["orders:read"], "trustScore": 0.82,
    })
}

fn token(claims: &Value) -> String {
    sign_jws_es(
        r#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#,
        &claims.to_string(),
        &p256_signer("issuer-k1"),
    )
}

fn check(token: &str) -> Result<claw_authz::protocol::bearer::BearerClaims, BearerError> {
    let keys = parse_jwks(jwks(&[("k1", "issuer-k1")]).as_bytes()).unwrap();
    verify(token, &keys, expect())
}

fn code(token: &str) -> &'static str {
    check(token).map(|_| "ok").unwrap_or_else(|e| e.code())
}

fn with(field: &str, value: Value) -> Value {
    let mut c = claims();
    c[field] = value;
    c
}

#[test]
fn a_valid_token_yields_its_claims() {
    let c = check(&token(&claims())).unwrap();
    assert_eq!((c.sub.as_str(), c.jti.as_str()), ("agent-7", "tok-1"));
    assert_eq!(c.roles, ["reader"]);
    assert_eq!(c.permissions, ["orders:read"]);
    assert_eq!(c.trust_score, Some(0.82));
    assert!(c.cnf.is_none());
    assert_eq!(peek_issuer(&token(&claims())).as_deref(), Some(ISS));
    // `aud` may be a list containing this service.
    assert_eq!(code(&token(&with("aud", json!(["other", AUD])))), "ok");
}

#[test]
fn each_refusal_has_its_own_code() {
    let cases = [
        (
            token(&with("aud", json!("svc-other"))),
            "PROXY_AUTH_BEARER_AUDIENCE",
        ),
        (
            token(&with("iss", json!("https://evil.example"))),
            "PROXY_AUTH_BEARER_ISSUER",
        ),
        (token(&with("exp", json!(NOW))), "PROXY_AUTH_BEARER_EXPIRED"),
        (
            token(&with("iat", json!(NOW + 61))),
            "PROXY_AUTH_BEARER_NOT_YET_VALID",
        ),
        (token(&with("exp", Value::Null)), "PROXY_AUTH_BEARER_CLAIMS"),
        (
            token(&with("roles", json!("admin"))),
            "PROXY_AUTH_BEARER_CLAIMS",
        ),
    ];
    for (t, want) in cases {
        assert_eq!(code(&t), want);
    }
    // 60 s of future `iat` is tolerated.
    assert_eq!(code(&token(&with("iat", json!(NOW + 60)))), "ok");
}

#[test]
fn only_es256_with_a_known_kid_and_a_raw_signature() {
    let payload = claims().to_string();
    let input = |header: &str| format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    // HS256 keyed with the issuer's public key (the classic confusion) and `none`.
    let (x, _) = p256_xy(&p256_signer("issuer-k1"));
    let hs = {
        use aws_lc_rs::hmac;
        let i = input(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#);
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, x.as_bytes()),
            i.as_bytes(),
        );
        format!("{i}.{}", b64(tag.as_ref()))
    };
    assert_eq!(code(&hs), "PROXY_AUTH_BEARER_ALGORITHM");
    let none = format!("{}.", input(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#));
    assert_eq!(code(&none), "PROXY_AUTH_BEARER_ALGORITHM");
    let ed = sign_jws_es(
        r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#,
        &payload,
        &p256_signer("issuer-k1"),
    );
    assert_eq!(code(&ed), "PROXY_AUTH_BEARER_ALGORITHM");
    // A kid the issuer does not publish.
    let unknown = sign_jws_es(
        r#"{"alg":"ES256","typ":"JWT","kid":"k9"}"#,
        &payload,
        &p256_signer("issuer-k1"),
    );
    assert_eq!(code(&unknown), "PROXY_AUTH_BEARER_UNKNOWN_KEY");
    assert!(check(&unknown).unwrap_err().is_unknown_key());
    // The same signature DER-encoded.
    let good = token(&claims());
    let (signed, sig) = good.rsplit_once('.').unwrap();
    let raw = support::unb64(sig);
    let der = p256::ecdsa::Signature::from_slice(&raw).unwrap().to_der();
    let der_token = format!("{signed}.{}", b64(der.as_bytes()));
    assert_eq!(code(&der_token), "PROXY_AUTH_BEARER_SIGNATURE");
    // Signed by another key under k1's kid.
    let forged = sign_jws_es(
        r#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#,
        &payload,
        &p256_signer("mallory"),
    );
    assert_eq!(code(&forged), "PROXY_AUTH_BEARER_SIGNATURE");
    // Header members beyond alg, typ, kid (jku, jwk, crit...) are refused outright.
    let jku = sign_jws_es(
        r#"{"alg":"ES256","typ":"JWT","kid":"k1","jku":"https://evil.example/jwks"}"#,
        &payload,
        &p256_signer("issuer-k1"),
    );
    assert_eq!(code(&jku), "PROXY_AUTH_BEARER_MALFORMED");
    let dup = sign_jws_es(
        r#"{"alg":"ES256","alg":"ES256","kid":"k1"}"#,
        &payload,
        &p256_signer("issuer-k1"),
    );
    assert_eq!(code(&dup), "PROXY_AUTH_BEARER_MALFORMED");
}

#[test]
fn a_confirmation_key_is_read_and_a_bad_one_refused() {
    let (x, y) = p256_xy(&p256_signer("agent-7-key"));
    let bound = with(
        "cnf",
        json!({"jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y}}),
    );
    assert!(check(&token(&bound)).unwrap().cnf.is_some());
    let off_curve = with(
        "cnf",
        json!({"jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": x}}),
    );
    assert_eq!(code(&token(&off_curve)), "PROXY_AUTH_BEARER_CLAIMS");
}

#[test]
fn a_jwks_keeps_only_usable_p256_signing_keys() {
    let (x, y) = p256_xy(&p256_signer("a"));
    let doc = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "enc", "use": "enc"},
        {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "ok"},
        {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "bad kid"},
    ]});
    let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
    assert_eq!(keys.kids().collect::<Vec<_>>(), ["ok"]);
    assert_eq!(
        parse_jwks(b"{\"keys\":[]}").unwrap_err(),
        KeysDocError::NoActiveKey
    );
    assert_eq!(parse_jwks(b"[]").unwrap_err(), KeysDocError::PayloadInvalid);
}

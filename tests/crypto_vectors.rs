//! Wycheproof (Ed25519, P-256 P1363 and DER) and the RFC 8032 / 8037 / 7515 known answers.

mod support;

use claw_authz::crypto::{Ed25519Key, P256Key, PublicKey};
use claw_authz::protocol::ait::verify_ait;
use claw_authz::protocol::b64;
use claw_authz::protocol::json::Json;
use claw_authz::protocol::jws::{
    Expectations, HeaderProblem, TokenError, TokenKind, check_registered_claims,
};
use serde_json::Value;
use support::*;
use wycheproof::TestResult;

#[derive(Debug, Default)]
struct Tally {
    valid_ok: usize,
    invalid_ok: usize,
    acceptable_rejected: usize,
    mismatches: Vec<String>,
}

fn ed25519_outcome(pk: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let Ok(pk) = <[u8; 32]>::try_from(pk) else {
        return false;
    };
    Ed25519Key::from_bytes(&pk).is_ok_and(|k| k.verify(msg, sig))
}

fn p256_outcome(uncompressed: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    if uncompressed.len() != 65 || uncompressed[0] != 4 {
        return false;
    }
    let x: [u8; 32] = uncompressed[1..33].try_into().unwrap();
    let y: [u8; 32] = uncompressed[33..].try_into().unwrap();
    P256Key::from_coordinates(&x, &y).is_ok_and(|k| k.verify(msg, sig))
}

fn record(
    t: &mut Tally,
    id: String,
    result: TestResult,
    accepted: bool,
    acceptable_must_fail: bool,
) {
    match (result, accepted) {
        (TestResult::Valid, true) => t.valid_ok += 1,
        (TestResult::Invalid, false) => t.invalid_ok += 1,
        (TestResult::Acceptable, false) => t.acceptable_rejected += 1,
        (TestResult::Acceptable, true) if !acceptable_must_fail => {}
        _ => t
            .mismatches
            .push(format!("{id}: {result:?} but accepted={accepted}")),
    }
}

#[test]
fn wycheproof_ed25519_crate_set() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let mut t = Tally::default();
    for g in &set.test_groups {
        for c in &g.tests {
            let accepted = ed25519_outcome(&g.key.pk, &c.msg, &c.sig);
            record(&mut t, format!("tc{}", c.tc_id), c.result, accepted, true);
        }
    }
    println!("wycheproof crate ed25519: {t:?}");
    assert_eq!(t.mismatches, Vec::<String>::new());
    assert_eq!(t.valid_ok + t.invalid_ok, 151);
}

/// The newer upstream set with the small-order and mixed-order "acceptable" keys, all refused.
#[test]
fn wycheproof_ed25519_with_small_and_mixed_order_keys() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wycheproof/ed25519_test.json"
    );
    let set: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let hex = |s: &Value| -> Vec<u8> {
        let s = s.as_str().unwrap();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut t = Tally::default();
    for g in set["testGroups"].as_array().unwrap() {
        let pk = hex(&g["publicKey"]["pk"]);
        for c in g["tests"].as_array().unwrap() {
            let result = match c["result"].as_str().unwrap() {
                "valid" => TestResult::Valid,
                "invalid" => TestResult::Invalid,
                _ => TestResult::Acceptable,
            };
            let accepted = ed25519_outcome(&pk, &hex(&c["msg"]), &hex(&c["sig"]));
            record(&mut t, format!("tc{}", c["tcId"]), result, accepted, true);
        }
    }
    println!("wycheproof upstream ed25519: {t:?}");
    assert_eq!(t.mismatches, Vec::<String>::new());
    assert_eq!(
        t.acceptable_rejected, 29,
        "8 small-order + 21 mixed-order keys refused"
    );
    assert_eq!(t.valid_ok + t.invalid_ok + t.acceptable_rejected, 210);
}

#[test]
fn wycheproof_p256_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let mut t = Tally::default();
    for g in &set.test_groups {
        for c in &g.tests {
            let accepted = p256_outcome(&g.key.key, &c.msg, &c.sig);
            record(&mut t, format!("tc{}", c.tc_id), c.result, accepted, false);
        }
    }
    println!("wycheproof p256 p1363: {t:?}");
    assert_eq!(t.mismatches, Vec::<String>::new());
    assert!(t.valid_ok >= 170 && t.invalid_ok >= 85, "{t:?}");
}

/// JWS carries raw r||s only, so every DER signature (valid or not) is refused.
#[test]
fn wycheproof_p256_der_signatures_are_all_refused() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256).unwrap();
    let mut total = 0;
    for g in &set.test_groups {
        for c in &g.tests {
            total += 1;
            assert!(!p256_outcome(&g.key.key, &c.msg, &c.sig), "tc{}", c.tc_id);
        }
    }
    assert!(total > 400);
}

#[test]
fn rfc8032_test1() {
    let seed = seed("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let signer = ed25519_dalek::SigningKey::from_bytes(&seed);
    let pk = signer.verifying_key().to_bytes();
    assert_eq!(
        b64(&pk),
        b64(&support::seed(
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        ))
    );
    let sig = [
        support::seed("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"),
        support::seed("5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ]
    .concat();
    let key = Ed25519Key::from_bytes(&pk).unwrap();
    assert!(key.verify(b"", &sig));
    assert!(!key.verify(b"x", &sig));
}

#[test]
fn rfc8037_a4_eddsa_jws() {
    let d = unb64("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
    let signer = ed25519_dalek::SigningKey::from_bytes(&d.try_into().unwrap());
    let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    assert_eq!(b64(signer.verifying_key().as_bytes()), x);
    let jws = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    let (input, sig) = jws.rsplit_once('.').unwrap();
    let key = PublicKey::Ed25519(Ed25519Key::from_bytes(&b64::decode_array(x).unwrap()).unwrap());
    assert!(key.verify(input.as_bytes(), &unb64(sig)));
    assert_eq!(
        unb64(input.split_once('.').unwrap().1),
        b"Example of Ed25519 signing"
    );
    // As an AIT it is refused: the header has no typ.
    assert_eq!(
        verify_ait(
            jws,
            &fixture_keys(),
            Expectations {
                issuer: None,
                now_secs: NOW
            }
        )
        .unwrap_err(),
        TokenError::Header(TokenKind::Ait, HeaderProblem::Typ)
    );
}

const RFC7515_A3: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

#[test]
fn rfc7515_a3_es256_and_its_low_s_twin_with_a_pinned_clock() {
    let key = PublicKey::P256(
        P256Key::from_coordinates(
            &b64::decode_array("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU").unwrap(),
            &b64::decode_array("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0").unwrap(),
        )
        .unwrap(),
    );
    for sig in [
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmU69fgrc8OPGycO0lD3tat_FoFp57SETepkeks4eL_QfA",
    ] {
        assert!(key.verify(RFC7515_A3.as_bytes(), &unb64(sig)), "{sig}");
    }
    let payload = unb64(RFC7515_A3.split_once('.').unwrap().1);
    let claims = Json::parse(&payload).unwrap();
    let claims = claims.as_object().unwrap();
    let at = |now_secs| Expectations {
        issuer: Some("joe"),
        now_secs,
    };
    assert_eq!(check_registered_claims(claims, at(1_300_819_379)), Ok(()));
    assert_eq!(
        check_registered_claims(claims, at(1_300_819_380)),
        Err(TokenError::Expired)
    );
}

#[test]
fn rfc7515_a1_hs256_and_a5_none_are_not_allowed() {
    let a1 = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let a5 = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";
    let not_allowed = TokenError::Header(TokenKind::Ait, HeaderProblem::Alg("EdDSA"));
    let at = Expectations {
        issuer: None,
        now_secs: 1_300_819_000,
    };
    assert_eq!(
        verify_ait(a1, &fixture_keys(), at).unwrap_err(),
        not_allowed
    );
    assert_eq!(
        verify_ait(a5, &fixture_keys(), at).unwrap_err(),
        not_allowed
    );
}

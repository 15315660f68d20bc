//! Token parsing: raw AIT/CRL strings, claims signed by a known key (so the schema is reached),
//! keys documents and JWKS, and DPoP proofs (raw, and claims signed by the key their header
//! carries). The first byte picks the mode.
#![no_main]

use std::sync::OnceLock;

use claw_authz::protocol::ait::verify_ait;
use claw_authz::protocol::b64;
use claw_authz::protocol::bearer::parse_jwks;
use claw_authz::protocol::crl::verify_crl;
use claw_authz::protocol::dpop::{self, DpopExpect};
use claw_authz::protocol::jws::Expectations;
use claw_authz::protocol::keys::{KeySet, parse_keys_document};
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;

const EXPECT: Expectations<'static> = Expectations {
    issuer: Some("https://registry.example.com"),
    now_secs: 1_767_225_600,
};

fn signer() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_bytes(&[42u8; 32]))
}

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let x = b64::encode(signer().verifying_key().as_bytes());
        let doc = format!(
            r#"{{"keys":[{{"kid":"k1","alg":"EdDSA","crv":"Ed25519","x":"{x}","status":"active"}}]}}"#
        );
        parse_keys_document(doc.as_bytes()).expect("fixed keys document")
    })
}

const DPOP: DpopExpect<'static> = DpopExpect {
    method: "POST",
    htu: "https://mcp.example.com/mcp",
    now_secs: 1_767_225_600,
    iat_window_secs: 60,
    access_token: Some("token"),
    jkt: None,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 6 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            let _ = verify_ait(&token, keys(), EXPECT);
            let _ = verify_crl(&token, keys(), EXPECT);
        }
        1 => {
            // rest = header JSON 0xFF payload JSON, signed with the known key.
            let mut parts = rest.splitn(2, |&b| b == 0xff);
            let header = parts.next().unwrap_or_default();
            let payload = parts.next().unwrap_or_default();
            let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
            let sig = signer().sign(input.as_bytes());
            let token = format!("{input}.{}", b64::encode(&sig.to_bytes()));
            let _ = verify_ait(&token, keys(), EXPECT);
            let _ = verify_crl(&token, keys(), EXPECT);
        }
        2 => {
            let _ = parse_keys_document(rest);
        }
        3 => {
            let _ = parse_jwks(rest);
        }
        4 => {
            let _ = dpop::verify(&String::from_utf8_lossy(rest), DPOP);
        }
        _ => {
            // rest = the proof's claims, under a header carrying the known key.
            let x = b64::encode(signer().verifying_key().as_bytes());
            let header = format!(
                r#"{{"typ":"dpop+jwt","alg":"EdDSA","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}}}"#
            );
            let input = format!("{}.{}", b64::encode(header.as_bytes()), b64::encode(rest));
            let sig = signer().sign(input.as_bytes());
            let proof = format!("{input}.{}", b64::encode(&sig.to_bytes()));
            let _ = dpop::verify(&proof, DPOP);
        }
    }
});

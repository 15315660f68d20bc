//! What the registry and bearer issuers serve, as their parsers read it: the first byte picks a
//! keys document, a JWKS, or a CRL response body (whose token is then verified).
#![no_main]

use std::sync::OnceLock;

use claw_authz::protocol::bearer::parse_jwks;
use claw_authz::protocol::crl::{crl_token_from_body, verify_crl};
use claw_authz::protocol::jws::Expectations;
use claw_authz::protocol::keys::{KeySet, parse_keys_document};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let doc = r#"{"keys":[{"kid":"k1","alg":"EdDSA","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","status":"active"}]}"#;
        parse_keys_document(doc.as_bytes()).expect("fixed keys document")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = parse_keys_document(rest);
        }
        1 => {
            let _ = parse_jwks(rest);
        }
        _ => {
            if let Some(token) = crl_token_from_body(rest) {
                let expect = Expectations {
                    issuer: Some("https://registry.example.com"),
                    now_secs: 1_767_225_600,
                };
                let _ = verify_crl(&token, keys(), expect);
            }
        }
    }
});

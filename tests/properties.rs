//! Property tests: no panic on any input, an injective canonical string, base64url round trips.

mod support;

use claw_authz::protocol::ait::verify_ait;
use claw_authz::protocol::crl::verify_crl;
use claw_authz::protocol::events::parse_event;
use claw_authz::protocol::jws::Expectations;
use claw_authz::protocol::keys::parse_keys_document;
use claw_authz::protocol::path::normalize;
use claw_authz::protocol::pop::{ProofInput, canonical_string, verify_proof};
use claw_authz::protocol::{b64, pop};
use proptest::prelude::*;
use support::*;

const AT_NOW: Expectations<'static> = Expectations {
    issuer: Some(ISSUER),
    now_secs: NOW,
};

/// Strings biased toward the characters that matter to JWS and header parsing.
fn tokenish() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,300}",
        "[A-Za-z0-9_\\-\\.=+/ \r\n]{0,400}",
        (".{0,40}", ".{0,40}", ".{0,40}").prop_map(|(a, b, c)| format!(
            "{}.{}.{}",
            b64(a.as_bytes()),
            b64(b.as_bytes()),
            b64(c.as_bytes())
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn token_parsing_never_panics(token in tokenish()) {
        let keys = fixture_keys();
        let _ = verify_ait(&token, &keys, AT_NOW);
        let _ = verify_crl(&token, &keys, AT_NOW);
    }

    #[test]
    fn json_documents_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_keys_document(&bytes);
        let _ = parse_event(&bytes);
    }

    #[test]
    fn proof_headers_never_panic(
        method in "[A-Za-z\n ]{0,8}",
        target in ".{0,80}",
        ts in "[0-9+\\- ]{0,30}",
        nonce in ".{0,40}",
        hash in "[A-Za-z0-9_\\-=+/]{0,50}",
        proof in "[A-Za-z0-9_\\-=+/]{0,100}",
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let key = ed_public(&agent_signer("agentA"));
        let path = normalize(&target).map(|n| n.path_with_query).unwrap_or_default();
        let input = ProofInput {
            method: &method,
            path_with_query: &path,
            timestamp: Some(&ts),
            nonce: Some(&nonce),
            body_sha256: Some(&hash),
            proof: Some(&proof),
            body: &body,
        };
        let _ = verify_proof(&input, &key, NOW * 1000, 300);
    }

    /// Every field the verifier accepts is free of LF, so the six fields split back exactly:
    /// two different requests can never produce the same signed string.
    #[test]
    fn canonical_string_is_injective(
        method in "[A-Za-z]{1,8}",
        target in "/.{0,60}",
        ts in "[0-9]{1,12}",
        nonce in "[^\\p{Cc}]{1,30}",
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let path = normalize(&target).unwrap().path_with_query;
        let hash = pop::body_sha256(&body);
        let s = canonical_string(&method, &path, &ts, &nonce, &hash);
        let fields: Vec<&str> = s.split('\n').collect();
        let upper = method.to_ascii_uppercase();
        prop_assert_eq!(
            fields,
            vec!["CLAW-PROOF-V1", upper.as_str(), path.as_str(), ts.as_str(), nonce.as_str(), hash.as_str()]
        );
    }

    /// A nonce with a line break or NUL (which no HTTP header can carry, and which would make the
    /// canonical string ambiguous) never verifies, whatever was signed.
    #[test]
    fn line_breaks_in_the_nonce_never_verify(prefix in "[a-z]{0,5}", c in "[\\r\\n\\x00]", suffix in "[a-z]{0,5}") {
        let nonce = format!("{prefix}{c}{suffix}");
        prop_assert!(nonce_verifies(&nonce).is_err());
    }

    /// Any other control character (a tab, as HTTP allows) is signed as sent and verifies, as in
    /// the reference.
    #[test]
    fn other_control_characters_in_the_nonce_are_signed_as_sent(prefix in "[a-z]{1,5}", c in "[\\p{Cc}&&[^\\r\\n\\x00]]", suffix in "[a-z]{1,5}") {
        let nonce = format!("{prefix}{c}{suffix}");
        prop_assert!(nonce_verifies(&nonce).is_ok());
    }

    #[test]
    fn base64url_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = b64::encode(&bytes);
        prop_assert_eq!(b64::decode(&text).unwrap(), bytes.clone());
        prop_assert_eq!(text.len(), b64::encoded_len(bytes.len()));
    }

    /// Decoding accepts only canonical text: whatever decodes re-encodes to the same string.
    #[test]
    fn base64url_decoding_is_canonical(text in "[A-Za-z0-9_\\-=+/]{0,40}") {
        if let Ok(bytes) = b64::decode(&text) {
            prop_assert_eq!(b64::encode(&bytes), text);
        }
    }

    #[test]
    fn path_normalization_is_idempotent(target in "/.{0,80}") {
        let once = normalize(&target).unwrap().path_with_query;
        let twice = normalize(&once).unwrap().path_with_query;
        prop_assert_eq!(once, twice);
    }
}

/// Signs a `GET /` with `nonce` as agent A and verifies it.
fn nonce_verifies(nonce: &str) -> Result<pop::VerifiedProof, pop::PopError> {
    use ed25519_dalek::Signer;
    let signer = agent_signer("agentA");
    let hash = pop::body_sha256(b"");
    let ts = NOW.to_string();
    let canonical = canonical_string("GET", "/", &ts, nonce, &hash);
    let proof = b64(&signer.sign(canonical.as_bytes()).to_bytes());
    let input = ProofInput {
        method: "GET",
        path_with_query: "/",
        timestamp: Some(&ts),
        nonce: Some(nonce),
        body_sha256: Some(&hash),
        proof: Some(&proof),
        body: b"",
    };
    verify_proof(&input, &ed_public(&signer), NOW * 1000, 300)
}

//! RFC 9449's own examples (§4.1 Figure 2, §5 Figure 7, §6.1 Figure 9, §7.1 Figure 13), whose
//! ES256 signatures verify with the key in their headers, then one refusal per check.

use super::*;

const FIGURE_2: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
const FIGURE_7: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjY1Mjk2fQ.pAqut2IRDm_De6PR93SYmGBPXpwrAk90e8cP2hjiaG5QsGSuKDYW7_X620BxqhvYC8ynrrvZLTk41mSRroapUA";
const FIGURE_13: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";
/// §7.1 Figure 13's access token, and §6.1's thumbprint of the examples' key.
const TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
const JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

fn token_request(now_secs: u64) -> DpopExpect<'static> {
    DpopExpect {
        method: "POST",
        htu: "https://server.example.com/token",
        now_secs,
        iat_window_secs: 60,
        access_token: None,
        jkt: None,
    }
}

fn resource_request() -> DpopExpect<'static> {
    DpopExpect {
        method: "GET",
        htu: "https://resource.example.org/protectedresource",
        now_secs: 1_562_262_618,
        iat_window_secs: 60,
        access_token: Some(TOKEN),
        jkt: Some(JKT),
    }
}

#[test]
fn the_rfc_examples_verify_with_their_thumbprint_and_ath() {
    let v = verify(FIGURE_2, token_request(1_562_262_616)).unwrap();
    assert_eq!(v.jti, "-BwC3ESc6acc2lTc");
    assert_eq!(v.jkt, JKT, "§6.1's cnf.jkt");
    assert_eq!(v.iat, 1_562_262_616);
    let v = verify(FIGURE_7, token_request(1_562_265_296)).unwrap();
    assert_eq!(v.jti, "-BwC3ESc6acc2lTc");
    assert_eq!(
        access_token_hash(TOKEN),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo",
        "§7.1's ath"
    );
    let v = verify(FIGURE_13, resource_request()).unwrap();
    assert_eq!(v.jti, "e1j3V_bKic8-LAEB");
    assert_eq!(v.nonce, None);
}

#[test]
fn each_check_refuses_with_its_reason() {
    let expect = resource_request();
    let with = |f: fn(&mut DpopExpect<'static>)| {
        let mut e = expect;
        f(&mut e);
        verify(FIGURE_13, e)
    };
    assert_eq!(with(|e| e.method = "POST"), Err(DpopError::Method));
    assert_eq!(
        with(|e| e.htu = "https://resource.example.org/other"),
        Err(DpopError::Uri)
    );
    assert_eq!(
        with(|e| e.htu = "http://resource.example.org/protectedresource"),
        Err(DpopError::Uri)
    );
    assert_eq!(with(|e| e.now_secs += 61), Err(DpopError::Time));
    assert_eq!(with(|e| e.now_secs -= 61), Err(DpopError::Time));
    assert_eq!(
        with(|e| e.access_token = Some("another-token")),
        Err(DpopError::AccessTokenHash)
    );
    assert_eq!(
        with(|e| e.jkt = Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")),
        Err(DpopError::KeyMismatch)
    );
    // A token sent with a proof that carries no ath.
    let mut e = token_request(1_562_262_616);
    e.access_token = Some(TOKEN);
    assert_eq!(verify(FIGURE_2, e), Err(DpopError::AccessTokenHash));
}

#[test]
fn htu_is_compared_without_query_fragment_case_or_default_port() {
    let mut e = resource_request();
    e.htu = "HTTPS://Resource.Example.ORG:443/protectedresource?page=2#top";
    assert!(verify(FIGURE_13, e).is_ok());
    // The path is compared as it is.
    e.htu = "https://resource.example.org/ProtectedResource";
    assert_eq!(verify(FIGURE_13, e), Err(DpopError::Uri));
    // Neither side a URI: no match (two failed normalizations are not equal).
    e.htu = "resource";
    assert_eq!(verify(FIGURE_13, e), Err(DpopError::Uri));
}

#[test]
fn the_iat_window_holds_to_its_second_either_way() {
    let iat = 1_562_262_618;
    for (now, ok) in [
        (iat + 60, true),
        (iat - 60, true),
        (iat + 61, false),
        (iat - 61, false),
    ] {
        let mut e = resource_request();
        e.now_secs = now;
        let got = verify(FIGURE_13, e).map(|_| ());
        assert_eq!(
            got,
            if ok { Ok(()) } else { Err(DpopError::Time) },
            "now {now}"
        );
    }
}

#[test]
fn a_proof_by_another_key_is_refused_before_its_signature_is_checked() {
    let mut e = resource_request();
    e.jkt = Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    // The signature is broken too: the key comparison answers first.
    let mut broken = FIGURE_13.to_owned();
    broken.truncate(broken.len() - 4);
    broken.push_str("AAAA");
    assert_eq!(verify(&broken, e), Err(DpopError::KeyMismatch));
}

/// `FIGURE_13` with its header replaced (the signature no longer matters for these).
fn with_header(header: &str) -> String {
    let rest = FIGURE_13.split_once('.').unwrap().1;
    format!("{}.{rest}", b64::encode(header.as_bytes()))
}

const JWK: &str = r#"{"kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA","crv":"P-256"}"#;

#[test]
fn malformed_headers_algorithms_and_signatures_are_refused() {
    let e = resource_request();
    let header = |typ: &str, alg: &str, extra: &str| {
        with_header(&format!(
            r#"{{"typ":"{typ}","alg":"{alg}","jwk":{JWK}{extra}}}"#
        ))
    };
    assert_eq!(
        verify(&header("jwt", "ES256", ""), e),
        Err(DpopError::Malformed("DPoP proof typ must be dpop+jwt"))
    );
    for alg in ["none", "HS256", "EdDSA", "RS256", "es256"] {
        assert_eq!(
            verify(&header("dpop+jwt", alg, ""), e),
            Err(DpopError::Algorithm),
            "{alg}"
        );
    }
    assert_eq!(
        verify(&header("dpop+jwt", "ES256", r#","kid":"k1""#), e),
        Err(DpopError::Malformed(
            "DPoP proof header has an unsupported member"
        ))
    );
    let private = with_header(&format!(
        r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{}}}"#,
        JWK.replace("}", r#","d":"AAAA"}"#)
    ));
    assert_eq!(
        verify(&private, e),
        Err(DpopError::Malformed("DPoP proof jwk holds a private key"))
    );
    // The example's header members in another order: the signature covers the bytes received.
    let reordered = with_header(&format!(
        r#"{{"alg":"ES256","typ":"dpop+jwt","jwk":{JWK}}}"#
    ));
    assert_eq!(verify(&reordered, e), Err(DpopError::Signature));
    let mut tampered = FIGURE_13.to_owned();
    tampered.pop();
    tampered.push('B');
    assert_eq!(verify(&tampered, e), Err(DpopError::Signature));
    assert_eq!(
        verify("a.b", e),
        Err(DpopError::Malformed("DPoP proof is not a compact JWS"))
    );
    assert_eq!(
        verify(&"x".repeat(MAX_PROOF_LEN + 1), e),
        Err(DpopError::Malformed("DPoP proof is too large"))
    );
}

/// An Ed25519 proof under both names of its algorithm (npm `dpop` sends `Ed25519`).
#[test]
fn ed25519_proofs_verify_under_eddsa_and_ed25519() {
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[5; 32]);
    let x = b64::encode(key.verifying_key().as_bytes());
    for alg in ["EdDSA", "Ed25519"] {
        let header = format!(
            r#"{{"typ":"dpop+jwt","alg":"{alg}","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}}}"#
        );
        let claims =
            r#"{"jti":"j-1","htm":"GET","htu":"https://api.example.com/mcp","iat":1700000000}"#;
        let input = format!(
            "{}.{}",
            b64::encode(header.as_bytes()),
            b64::encode(claims.as_bytes())
        );
        let proof = format!(
            "{input}.{}",
            b64::encode(&key.sign(input.as_bytes()).to_bytes())
        );
        let e = DpopExpect {
            method: "GET",
            htu: "https://api.example.com/mcp",
            now_secs: 1_700_000_000,
            iat_window_secs: 60,
            access_token: None,
            jkt: None,
        };
        assert_eq!(verify(&proof, e).unwrap().jti, "j-1", "{alg}");
    }
}

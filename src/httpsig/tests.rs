//! RFC 9421 Appendix B, against the RFC's own keys and published signatures (the keys come from
//! `tests/data/rfc9421`, see its README). Every published signature is verified over the base
//! built here, so a base that differs by one byte fails; the bases are also compared as text.

use base64::Engine as _;

use super::*;
use crate::crypto::{Ed25519Key, P256Key};

/// A message of Appendix B: a request (or, for B.2.4, a response with its status).
struct Fixture {
    method: &'static str,
    authority: &'static str,
    target: &'static str,
    status: Option<u16>,
    fields: Vec<(&'static str, &'static str)>,
}

impl Message for Fixture {
    fn method(&self) -> &str {
        self.method
    }
    fn scheme(&self) -> &str {
        "https"
    }
    fn authority(&self) -> &str {
        self.authority
    }
    fn target(&self) -> &str {
        self.target
    }
    fn status(&self) -> Option<u16> {
        self.status
    }
    fn field_lines(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    }
}

const DIGEST_B2: &str = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";

/// `test-request` of Appendix B.2.
fn test_request() -> Fixture {
    Fixture {
        method: "POST",
        authority: "example.com",
        target: "/foo?param=Value&Pet=dog",
        status: None,
        fields: vec![
            ("Host", "example.com"),
            ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("Content-Type", "application/json"),
            ("Content-Digest", DIGEST_B2),
            ("Content-Length", "18"),
        ],
    }
}

fn pem_der(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/rfc9421/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// B.1.4: the last 32 bytes of the SubjectPublicKeyInfo.
fn ed25519_key() -> PublicKey {
    let der = pem_der("test-key-ed25519.pem");
    let bytes: [u8; 32] = der[der.len() - 32..].try_into().unwrap();
    PublicKey::Ed25519(Ed25519Key::from_bytes(&bytes).unwrap())
}

/// B.1.3: the uncompressed point at the end of the SubjectPublicKeyInfo.
fn p256_key() -> PublicKey {
    let der = pem_der("test-key-ecc-p256.pem");
    let point = &der[der.len() - 65..];
    assert_eq!(point[0], 4);
    let x: [u8; 32] = point[1..33].try_into().unwrap();
    let y: [u8; 32] = point[33..].try_into().unwrap();
    PublicKey::P256(P256Key::from_coordinates(&x, &y).unwrap())
}

/// B.1.2, RSA-PSS with SHA-512: used here only to check the bases of B.2.1-B.2.3 (claw-authz
/// does not accept RSA signatures on requests).
fn rsa_pss_verifies(base: &str, signature: &[u8]) -> bool {
    use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA512, UnparsedPublicKey};
    let der = pem_der("test-key-rsa-pss.pem");
    // SubjectPublicKeyInfo of rsaEncryption: the RSAPublicKey follows a 24-byte header.
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA512, &der[24..])
        .verify(base.as_bytes(), signature)
        .is_ok()
}

fn one_signature(input: &str, signature: &str) -> Signature {
    let mut all = parse(input, signature).unwrap();
    assert_eq!(all.len(), 1);
    all.remove(0)
}

fn unwrap(text: &str) -> String {
    text.split_whitespace().collect()
}

#[test]
fn b_2_1_minimal_signature() {
    let sig = one_signature(
        r#"sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd""#,
        &unwrap(
            "sig-b21=:d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopem
            LJcWDy/lkbbHAve4cRAtx31Iq786U7it++wgGxbtRxf8Udx7zFZsckzXaJMkA7ChG
            52eSkFxykJeNqsrWH5S+oxNFlD4dzVuwe8DhTSja8xxbR/Z2cOGdCbzR72rgFWhzx
            2VjBqJzsPLMIQKhO4DGezXehhWwE56YCE+O6c0mKZsfxVrogUvA4HELjVKWmAvtl6
            UnCh8jYzuVG5WSb/QEVPnP5TmcAnLH1g+s++v6d4s8m0gCw1fV5/SITLq9mhho8K3
            +7EPYTU8IU1bLhdxO5Nyt8C8ssinQ98Xw9Q==:",
        ),
    );
    let base = base(&test_request(), &sig).unwrap();
    assert_eq!(
        base,
        r#""@signature-params": ();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd""#
    );
    assert!(rsa_pss_verifies(&base, &sig.value));
    assert_eq!(sig.nonce.as_deref(), Some("b3k2pp5k7z-50gnwp.yemd"));
}

#[test]
fn b_2_2_selective_components() {
    let sig = one_signature(
        r#"sig-b22=("@authority" "content-digest" "@query-param";name="Pet");created=1618884473;keyid="test-key-rsa-pss";tag="header-example""#,
        &unwrap(
            "sig-b22=:LjbtqUbfmvjj5C5kr1Ugj4PmLYvx9wVjZvD9GsTT4F7GrcQ
            EdJzgI9qHxICagShLRiLMlAJjtq6N4CDfKtjvuJyE5qH7KT8UCMkSowOB4+ECxCmT
            8rtAmj/0PIXxi0A0nxKyB09RNrCQibbUjsLS/2YyFYXEu4TRJQzRw1rLEuEfY17SA
            RYhpTlaqwZVtR8NV7+4UKkjqpcAoFqWFQh62s7Cl+H2fjBSpqfZUJcsIk4N6wiKYd
            4je2U/lankenQ99PZfB4jY3I5rSV2DSBVkSFsURIjYErOs0tFTQosMTAoxk//0RoK
            UqiYY8Bh0aaUEb0rQl3/XaVe4bXTugEjHSw==:",
        ),
    );
    let base = base(&test_request(), &sig).unwrap();
    let expected = format!(
        "\"@authority\": example.com\n\"content-digest\": {DIGEST_B2}\n\"@query-param\";name=\"Pet\": dog\n\"@signature-params\": (\"@authority\" \"content-digest\" \"@query-param\";name=\"Pet\");created=1618884473;keyid=\"test-key-rsa-pss\";tag=\"header-example\""
    );
    assert_eq!(base, expected);
    assert!(rsa_pss_verifies(&base, &sig.value));
    assert_eq!(sig.tag.as_deref(), Some("header-example"));
}

#[test]
fn b_2_3_full_coverage() {
    let sig = one_signature(
        r#"sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss""#,
        &unwrap(
            "sig-b23=:bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yB
            iMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFkeGt683+qRpRRU5p2voTp768ZrCUb38K0fU
            xN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7KsLNmvKiLJH1
            pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9
            bpG6A9BmzhuzF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5Z
            JzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cUA==:",
        ),
    );
    let base = base(&test_request(), &sig).unwrap();
    let expected = format!(
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@method\": POST\n\"@path\": /foo\n\"@query\": ?param=Value&Pet=dog\n\"@authority\": example.com\n\"content-type\": application/json\n\"content-digest\": {DIGEST_B2}\n\"content-length\": 18\n\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@query\" \"@authority\" \"content-type\" \"content-digest\" \"content-length\");created=1618884473;keyid=\"test-key-rsa-pss\""
    );
    assert_eq!(base, expected);
    assert!(rsa_pss_verifies(&base, &sig.value));
}

#[test]
fn b_2_4_response_with_ecdsa_p256() {
    let response = Fixture {
        method: "POST",
        authority: "example.com",
        target: "/foo?param=Value&Pet=dog",
        status: Some(200),
        fields: vec![
            ("Date", "Tue, 20 Apr 2021 02:07:56 GMT"),
            ("Content-Type", "application/json"),
            (
                "Content-Digest",
                "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:",
            ),
            ("Content-Length", "23"),
        ],
    };
    let sig = one_signature(
        r#"sig-b24=("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256""#,
        "sig-b24=:wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw==:",
    );
    let base = base(&response, &sig).unwrap();
    assert!(base.starts_with("\"@status\": 200\n\"content-type\": application/json\n"));
    assert_eq!(verify(&p256_key(), &sig, &base), Ok(()));
    // A request has no status.
    assert!(matches!(
        super::base(&test_request(), &sig),
        Err(Error::Component(_))
    ));
}

#[test]
fn b_2_5_hmac_base_is_reproduced_and_hmac_is_never_accepted() {
    use aws_lc_rs::hmac;
    let sig = one_signature(
        r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#,
        "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:",
    );
    let base = base(&test_request(), &sig).unwrap();
    assert_eq!(
        base,
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
    );
    // B.1.5's shared secret: the published MAC is over exactly this base.
    let secret = base64::engine::general_purpose::STANDARD
        .decode("uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==")
        .unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
    assert_eq!(hmac::sign(&key, base.as_bytes()).as_ref(), sig.value);
}

#[test]
fn an_hmac_algorithm_over_a_public_key_is_refused() {
    let mut sig = b_2_6_signature();
    sig.alg = Some("hmac-sha256".into());
    let base = base(&test_request(), &sig).unwrap();
    assert_eq!(verify(&ed25519_key(), &sig, &base), Err(Error::Algorithm));
    sig.alg = Some("ed25519".into());
    assert_eq!(verify(&ed25519_key(), &sig, &base), Ok(()));
    assert_eq!(verify(&p256_key(), &sig, &base), Err(Error::Algorithm));
}

fn b_2_6_signature() -> Signature {
    one_signature(
        r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
        "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
    )
}

#[test]
fn b_2_6_ed25519() {
    let sig = b_2_6_signature();
    let base = base(&test_request(), &sig).unwrap();
    assert_eq!(
        base,
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@method\": POST\n\"@path\": /foo\n\"@authority\": example.com\n\"content-type\": application/json\n\"content-length\": 18\n\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\""
    );
    assert_eq!(verify(&ed25519_key(), &sig, &base), Ok(()));
    let mut tampered = base.clone().into_bytes();
    tampered[12] ^= 1;
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        verify(&ed25519_key(), &sig, &tampered),
        Err(Error::BadSignature)
    );
}

#[test]
fn b_3_proxy_signature_over_a_client_certificate() {
    let cert = unwrap(
        ":MIIBqDCCAU6gAwIBAgIBBzAKBggqhkjOPQQDAjA6MRswGQYDVQQKD
        BJMZXQncyBBdXRoZW50aWNhdGUxGzAZBgNVBAMMEkxBIEludGVybWVkaWF0ZSBDQT
        AeFw0yMDAxMTQyMjU1MzNaFw0yMTAxMjMyMjU1MzNaMA0xCzAJBgNVBAMMAkJDMFk
        wEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8YnXXfaUgmnMtOXU/IncWalRhebrXmck
        C8vdgJ1p5Be5F/3YC8OthxM4+k1M6aEAEFcGzkJiNy6J84y7uzo9M6NyMHAwCQYDV
        R0TBAIwADAfBgNVHSMEGDAWgBRm3WjLa38lbEYCuiCPct0ZaSED2DAOBgNVHQ8BAf
        8EBAMCBsAwEwYDVR0lBAwwCgYIKwYBBQUHAwIwHQYDVR0RAQH/BBMwEYEPYmRjQGV
        4YW1wbGUuY29tMAoGCCqGSM49BAMCA0gAMEUCIBHda/r1vaL6G3VliL4/Di6YK0Q6
        bMjeSkC3dFCOOB8TAiEAx/kHSB4urmiZ0NX5r5XarmPk0wmuydBVoU4hBVZ1yhk=:",
    );
    let cert: &'static str = Box::leak(cert.into_boxed_str());
    let request = Fixture {
        method: "POST",
        authority: "service.internal.example",
        target: "/foo?param=Value&Pet=dog",
        status: None,
        fields: vec![
            ("Host", "service.internal.example"),
            ("Content-Type", "application/json"),
            ("Content-Length", "18"),
            ("Client-Cert", cert),
        ],
    };
    let sig = one_signature(
        r#"ttrp=("@path" "@query" "@method" "@authority" "client-cert");created=1618884473;keyid="test-key-ecc-p256""#,
        "ttrp=:xVMHVpawaAC/0SbHrKRs9i8I3eOs5RtTMGCWXm/9nvZzoHsIg6Mce9315T6xoklyy0yzhD9ah4JHRwMLOgmizw==:",
    );
    let base = base(&request, &sig).unwrap();
    assert_eq!(verify(&p256_key(), &sig, &base), Ok(()));
}

/// B.4: one published signature, and the transformations of its message.
fn b_4(
    method: &'static str,
    authority: &'static str,
    fields: Vec<(&'static str, &'static str)>,
) -> Result<(), Error> {
    let message = Fixture {
        method,
        authority,
        target: "/demo?name1=Value1&Name2=value2",
        status: None,
        fields,
    };
    let sig = one_signature(
        r#"transform=("@method" "@path" "@authority" "accept");created=1618884473;keyid="test-key-ed25519""#,
        "transform=:ZT1kooQsEHpZ0I1IjCqtQppOmIqlJPeo7DHR3SoMn0s5JZ1eRGS0A+vyYP9t/LXlh5QMFFQ6cpLt2m0pmj3NDA==:",
    );
    verify(&ed25519_key(), &sig, &base(&message, &sig)?)
}

const DATE_B4: (&str, &str) = ("Date", "Fri, 15 Jul 2022 14:24:55 GMT");

#[test]
fn b_4_transformations_that_keep_the_signature_valid() {
    let original = vec![
        ("Host", "example.org"),
        DATE_B4,
        ("Accept", "application/json"),
        ("Accept", "*/*"),
    ];
    assert_eq!(b_4("GET", "example.org", original), Ok(()));
    let added = vec![
        ("Host", "example.org"),
        DATE_B4,
        ("Accept", "application/json"),
        ("Accept", "*/*"),
        ("Accept-Language", "en-US,en;q=0.5"),
    ];
    assert_eq!(b_4("GET", "example.org", added), Ok(()));
    let combined = vec![
        ("Host", "example.org"),
        ("Referer", "https://developer.example.org/demo"),
        ("Accept", "application/json, */*"),
    ];
    assert_eq!(b_4("GET", "example.org", combined), Ok(()));
    let reordered_names = vec![
        ("Accept", "application/json"),
        ("Accept", "*/*"),
        DATE_B4,
        ("Host", "example.org"),
    ];
    assert_eq!(b_4("GET", "example.org", reordered_names), Ok(()));
}

#[test]
fn b_4_transformations_that_break_the_signature() {
    let fields = || {
        vec![
            ("Host", "example.com"),
            DATE_B4,
            ("Accept", "application/json"),
            ("Accept", "*/*"),
        ]
    };
    assert_eq!(
        b_4("POST", "example.com", fields()),
        Err(Error::BadSignature)
    );
    assert_eq!(
        b_4("POST", "example.org", fields()),
        Err(Error::BadSignature)
    );
    assert_eq!(
        b_4("GET", "example.com", fields()),
        Err(Error::BadSignature)
    );
    let reordered_values = vec![
        ("Host", "example.org"),
        DATE_B4,
        ("Accept", "*/*"),
        ("Accept", "application/json"),
    ];
    assert_eq!(
        b_4("GET", "example.org", reordered_values),
        Err(Error::BadSignature)
    );
}

mod rules;

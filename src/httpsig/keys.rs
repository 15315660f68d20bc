//! Verification keys by `keyid`: JWKs, named by their RFC 7638 thumbprint.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::Digest as _;

use crate::crypto::{Ed25519Key, P256Key, PublicKey};
use crate::protocol::b64;
use crate::protocol::keys::{KeySet, KeysDocError};

/// The thumbprints of published test keys (RFC 9421 B.1.3 and B.1.4; the Web Bot Auth drafts
/// use B.1.4): anyone holds their private halves, so they are refused as real keys unless
/// `httpsig.allow_test_keys` is set.
pub const TEST_KEY_THUMBPRINTS: [&str; 2] = [
    "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U",
    "ydQXMtvbsOsZyFir-Y7A8t7fKEM1gbKPvyFkdpu4fvI",
];

/// A key the verifier may use, and the name its identity headers give it.
#[derive(Debug, Clone)]
pub struct Known {
    pub key: PublicKey,
    /// The configured `name`, else the thumbprint.
    pub name: String,
}

/// The configured keys, by thumbprint.
pub type Configured = Arc<HashMap<String, Known>>;

/// The RFC 7638 thumbprint of `key`, base64url without padding.
pub fn thumbprint(key: &PublicKey) -> String {
    // Members in lexicographic order, no whitespace.
    let json = match key {
        PublicKey::Ed25519(k) => format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            b64::encode(k.as_bytes())
        ),
        PublicKey::P256(k) => {
            let sec1 = k.sec1_uncompressed();
            format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64::encode(&sec1[1..33]),
                b64::encode(&sec1[33..])
            )
        }
        PublicKey::Rsa(k) => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            b64::encode(k.exponent()),
            b64::encode(k.modulus())
        ),
    };
    b64::encode(&sha2::Sha256::digest(json.as_bytes()))
}

/// A public JWK (`OKP`/`Ed25519` or `EC`/`P-256`), validated; private members are refused.
pub fn from_jwk(jwk: &serde_json::Value) -> Result<PublicKey, &'static str> {
    let text = |k: &str| jwk.get(k).and_then(serde_json::Value::as_str);
    if jwk.get("d").is_some() {
        return Err("is a private key (has d)");
    }
    match (text("kty"), text("crv")) {
        (Some("OKP"), Some("Ed25519")) => {
            let x = text("x").ok_or("has no x")?;
            let bytes = b64::decode_array::<32>(x).map_err(|_| "x is not 32 base64url bytes")?;
            Ed25519Key::from_bytes(&bytes)
                .map(PublicKey::Ed25519)
                .map_err(|_| "is not a valid Ed25519 key")
        }
        (Some("EC"), Some("P-256")) => {
            let x = text("x").ok_or("has no x")?;
            let y = text("y").ok_or("has no y")?;
            let x = b64::decode_array::<32>(x).map_err(|_| "x is not 32 base64url bytes")?;
            let y = b64::decode_array::<32>(y).map_err(|_| "y is not 32 base64url bytes")?;
            P256Key::from_coordinates(&x, &y)
                .map(PublicKey::P256)
                .map_err(|_| "is not a point on P-256")
        }
        _ => Err("must be an OKP Ed25519 or EC P-256 JWK"),
    }
}

/// The most keys a directory may hold (the rest are ignored).
pub const MAX_DIRECTORY_KEYS: usize = 64;

/// A key directory (`{"keys": [JWK, ...]}`, RFC 7517 JWKS), keyed by thumbprint: Web Bot Auth's
/// `keyid` is the thumbprint, whatever `kid` says. Keys of other types, private keys and
/// duplicates are skipped; a directory with no usable key is refused.
pub fn parse_directory(body: &[u8]) -> Result<KeySet, KeysDocError> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| KeysDocError::PayloadInvalid)?;
    let Some(entries) = doc.get("keys").and_then(serde_json::Value::as_array) else {
        return Err(KeysDocError::PayloadInvalid);
    };
    let mut keys: Vec<(String, PublicKey)> = Vec::new();
    for entry in entries.iter().take(MAX_DIRECTORY_KEYS) {
        let Ok(key) = from_jwk(entry) else {
            continue;
        };
        let id = thumbprint(&key);
        if !keys.iter().any(|(k, _)| *k == id) {
            keys.push((id, key));
        }
    }
    if keys.is_empty() {
        return Err(KeysDocError::NoActiveKey);
    }
    Ok(KeySet::new(keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_of_the_rfc_test_keys() {
        let ed = from_jwk(&serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
        }))
        .unwrap();
        assert_eq!(thumbprint(&ed), TEST_KEY_THUMBPRINTS[0]);
        let p256 = from_jwk(&serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": "qIVYZVLCrPZHGHjP17CTW0_-D9Lfw0EkjqF7xB4FivA",
            "y": "Mc4nN9LTDOBhfoUeg8Ye9WedFRhnZXZJA12Qp0zZ6F0"
        }))
        .unwrap();
        assert_eq!(thumbprint(&p256), TEST_KEY_THUMBPRINTS[1]);
    }

    /// RFC 7638 §3.1's example, an RSA key (DPoP proofs and bearer JWKS may carry one).
    #[test]
    fn rfc_7638_thumbprint() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let n = b64::decode(n).unwrap();
        let e = b64::decode("AQAB").unwrap();
        let key = crate::crypto::RsaKey::from_components(&n, &e, crate::crypto::Alg::RS256);
        assert_eq!(
            thumbprint(&PublicKey::Rsa(key.unwrap())),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    /// RFC 8037 Appendix A.3 gives an Ed25519 thumbprint.
    #[test]
    fn rfc_8037_thumbprint() {
        let key = from_jwk(&serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        }))
        .unwrap();
        assert_eq!(
            thumbprint(&key),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn private_or_foreign_keys_are_refused() {
        let private = serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
        });
        assert_eq!(from_jwk(&private).unwrap_err(), "is a private key (has d)");
        let hmac = serde_json::json!({"kty": "oct", "k": "AAAA"});
        assert!(from_jwk(&hmac).is_err());
    }
}

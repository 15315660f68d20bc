//! DPoP proofs (RFC 9449): the checks a resource server makes on a request's `DPoP` header
//! (§4.3 and §7.1), as a pure function of the proof and what the request must match.
//!
//! The proof is a compact JWS whose header carries the public key (`jwk`) it is signed with;
//! the key decides the algorithm (`ES256` for P-256, `EdDSA` or `Ed25519` for Ed25519, `RS256`
//! or `PS256` for RSA of 2048 bits or more), private key members are refused, and only `typ`,
//! `alg` and `jwk` may appear in the header. The caller records
//! `jti` in the nonce store (replay) and compares the key's thumbprint with the token's
//! `cnf.jkt` through [`DpopExpect::jkt`].

use sha2::Digest as _;

use super::b64;
use super::json::{Json, JsonError, Object};
use crate::crypto::{Alg, Ed25519Key, P256Key, PublicKey};
use crate::httpsig::keys::thumbprint;

/// The longest proof read (a P-256 proof is about 500 bytes).
pub const MAX_PROOF_LEN: usize = 4 * 1024;

/// What the request the proof came with must match.
#[derive(Debug, Clone, Copy)]
pub struct DpopExpect<'a> {
    /// The request's method (`htm`).
    pub method: &'a str,
    /// The request's URI without query and fragment (`htu`), from trusted configuration: the
    /// scheme and authority the client used, and the path.
    pub htu: &'a str,
    pub now_secs: u64,
    /// How far `iat` may be from now, either way.
    pub iat_window_secs: u64,
    /// The access token presented with the proof: its hash must be the proof's `ath`.
    pub access_token: Option<&'a str>,
    /// The token's `cnf.jkt`: the proof key's thumbprint must be this.
    pub jkt: Option<&'a str>,
}

/// A proof that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDpop {
    /// The proof's unique identifier: the replay key.
    pub jti: String,
    /// The RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
    pub iat: u64,
    /// The server-provided nonce the proof carries, if any.
    pub nonce: Option<String>,
}

/// Why a proof was refused; every one is `invalid_dpop_proof` to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopError {
    Malformed(&'static str),
    /// `alg` is not the one the key admits (`none` and HMAC never are).
    Algorithm,
    Signature,
    /// `htm` is not the request's method.
    Method,
    /// `htu` is not the request's URI.
    Uri,
    /// `iat` is outside the window.
    Time,
    /// `ath` is missing or is not the access token's hash.
    AccessTokenHash,
    /// The proof's key is not the one the token is bound to.
    KeyMismatch,
}

impl DpopError {
    /// The `error_description` of the `WWW-Authenticate` challenge (no request data in it).
    pub fn description(self) -> &'static str {
        match self {
            DpopError::Malformed(what) => what,
            DpopError::Algorithm => "DPoP proof alg does not match its key",
            DpopError::Signature => "DPoP proof signature is invalid",
            DpopError::Method => "DPoP proof htm does not match the request method",
            DpopError::Uri => "DPoP proof htu does not match the request URI",
            DpopError::Time => "DPoP proof iat is outside the accepted window",
            DpopError::AccessTokenHash => "DPoP proof ath does not match the access token",
            DpopError::KeyMismatch => "DPoP proof key does not match the token's cnf.jkt",
        }
    }
}

/// `ath`: the base64url SHA-256 of the access token (§4.2).
pub fn access_token_hash(token: &str) -> String {
    b64::encode(&sha2::Sha256::digest(token.as_bytes()))
}

/// Checks `proof` against what the request must match (§4.3 steps 2-12, without the replay
/// check, which is the nonce store's).
pub fn verify(proof: &str, expect: DpopExpect<'_>) -> Result<VerifiedDpop, DpopError> {
    let malformed = DpopError::Malformed;
    if proof.len() > MAX_PROOF_LEN {
        return Err(malformed("DPoP proof is too large"));
    }
    let mut parts = proof.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("DPoP proof is not a compact JWS"));
    };
    let header = object(header_b64)?;
    if header.names().any(|n| !matches!(n, "typ" | "alg" | "jwk")) {
        return Err(malformed("DPoP proof header has an unsupported member"));
    }
    if header.get("typ").and_then(Json::as_str) != Some("dpop+jwt") {
        return Err(malformed("DPoP proof typ must be dpop+jwt"));
    }
    let jwk = header
        .get("jwk")
        .and_then(Json::as_object)
        .ok_or(malformed("DPoP proof header has no jwk"))?;
    let alg = header.get("alg").and_then(Json::as_str).unwrap_or_default();
    let key = public_key(jwk, alg)?;
    // The cheap comparison first: a proof by another key costs no signature verification.
    let jkt = thumbprint(&key);
    if expect.jkt.is_some_and(|bound| bound != jkt) {
        return Err(DpopError::KeyMismatch);
    }
    let signature = b64::decode(signature_b64).map_err(|_| DpopError::Signature)?;
    let input = &proof[..header_b64.len() + 1 + claims_b64.len()];
    if !key.verify(input.as_bytes(), &signature) {
        return Err(DpopError::Signature);
    }
    let claims = object(claims_b64)?;
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
    };
    let jti = text("jti").ok_or(malformed("DPoP proof jti is required"))?;
    if jti.len() > 256 || jti.chars().any(char::is_control) {
        return Err(malformed("DPoP proof jti is invalid"));
    }
    if text("htm").ok_or(malformed("DPoP proof htm is required"))? != expect.method {
        return Err(DpopError::Method);
    }
    let htu = text("htu").ok_or(malformed("DPoP proof htu is required"))?;
    match (normalized_uri(htu), normalized_uri(expect.htu)) {
        (Some(sent), Some(expected)) if sent == expected => {}
        _ => return Err(DpopError::Uri),
    }
    // A NumericDate (RFC 7519 §2) may have a fraction; whole seconds are compared.
    let iat = claims
        .get("iat")
        .and_then(Json::as_f64)
        .filter(|t| t.is_finite() && *t >= 0.0 && *t < 1e15)
        .ok_or(malformed("DPoP proof iat is required"))? as u64;
    if iat.abs_diff(expect.now_secs) > expect.iat_window_secs {
        return Err(DpopError::Time);
    }
    if let Some(token) = expect.access_token
        && text("ath") != Some(access_token_hash(token).as_str())
    {
        return Err(DpopError::AccessTokenHash);
    }
    Ok(VerifiedDpop {
        jti: jti.to_owned(),
        jkt,
        iat,
        nonce: text("nonce").map(str::to_owned),
    })
}

fn object(segment: &str) -> Result<Object, DpopError> {
    let bytes =
        b64::decode(segment).map_err(|_| DpopError::Malformed("DPoP proof is not base64url"))?;
    match Json::parse_standard(&bytes) {
        Ok(Json::Object(o)) => Ok(o),
        Err(JsonError::DuplicateMember) => Err(DpopError::Malformed(
            "DPoP proof has a duplicate JSON member",
        )),
        _ => Err(DpopError::Malformed(
            "DPoP proof segment is not a JSON object",
        )),
    }
}

/// The algorithms a proof may use, for the `algs` of a `DPoP` challenge.
pub const ALGORITHMS: &str = "ES256 EdDSA Ed25519 RS256 PS256";

/// The proof's public key for `alg`: `EC`/`P-256` for `ES256`, `OKP`/`Ed25519` for `EdDSA` (or
/// RFC 9864's `Ed25519`, which npm `dpop` sends), `RSA` for `RS256` and `PS256`; no private
/// member. Any other pairing is [`DpopError::Algorithm`].
fn public_key(jwk: &Object, alg: &str) -> Result<PublicKey, DpopError> {
    let refused = DpopError::Malformed("DPoP proof jwk must be a public P-256, Ed25519 or RSA key");
    let private = ["d", "p", "q", "dp", "dq", "qi", "k"];
    if jwk.names().any(|n| private.contains(&n)) {
        return Err(DpopError::Malformed("DPoP proof jwk holds a private key"));
    }
    let text = |name| jwk.get(name).and_then(Json::as_str);
    let kty = text("kty");
    let admitted = matches!(
        (kty, alg),
        (Some("EC"), "ES256")
            | (Some("OKP"), "EdDSA" | "Ed25519")
            | (Some("RSA"), "RS256" | "PS256")
    );
    if !admitted {
        return Err(DpopError::Algorithm);
    }
    if kty == Some("RSA") {
        let alg = if alg == "RS256" {
            Alg::RS256
        } else {
            Alg::PS256
        };
        // A client's key needs no more than 4096 bits; larger ones only cost verification time.
        return super::bearer::rsa_key(jwk, alg)
            .filter(|k| k.modulus().len() <= 512)
            .map(PublicKey::Rsa)
            .ok_or(refused);
    }
    match (kty, text("crv")) {
        (Some("EC"), Some("P-256")) => {
            let x = text("x").and_then(|x| b64::decode_array::<32>(x).ok());
            let y = text("y").and_then(|y| b64::decode_array::<32>(y).ok());
            let (Some(x), Some(y)) = (x, y) else {
                return Err(refused);
            };
            P256Key::from_coordinates(&x, &y)
                .map(PublicKey::P256)
                .map_err(|_| refused)
        }
        (Some("OKP"), Some("Ed25519")) => {
            let x = text("x").and_then(|x| b64::decode_array::<32>(x).ok());
            let key = x.and_then(|x| Ed25519Key::from_bytes(&x).ok());
            key.map(PublicKey::Ed25519).ok_or(refused)
        }
        _ => Err(refused),
    }
}

/// A URI for `htu` comparison (§4.3 step 9, RFC 3986 §6.2.2-6.2.3): without query and
/// fragment, scheme and host lowercase, no default port, an empty path as `/`. `None` when it
/// is not an absolute http(s) URI.
fn normalized_uri(uri: &str) -> Option<String> {
    let uri = uri.split(['?', '#']).next()?;
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let authority = authority.strip_suffix(default).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}{path}"))
}

pub mod nonce;

#[cfg(test)]
mod tests;

//! The second token profile: `Authorization: Bearer <JWT>` (or `DPoP <JWT>`) issued by an
//! agent authentication service (the ClawAuth model) or an OAuth authorization server, verified
//! as strictly as the Claw AIT: the key chosen by `kid` from the issuer's JWKS decides the
//! algorithm (`ES256` with 64-byte `r||s` signatures for P-256; `RS256` or `PS256` for RSA, as
//! the JWK's `alg` says), header members limited to `alg`, `typ`, `kid`, no duplicate JSON
//! members, canonical base64url, `iss` and `aud` checked, `exp` required, `iat` at most
//! `max_iat_skew` in the future.

use super::b64;
use super::json::{Json, JsonError, Object};
use super::jws::is_allowed_kid;
use super::keys::{KeySet, KeysDocError};
use crate::crypto::{Alg, P256Key, PublicKey, RsaKey};

/// The ceiling whatever `limits.token_bytes` says; the stage applies the configured limit.
pub(crate) const MAX_TOKEN_LEN: usize = super::jws::MAX_TOKEN_LEN;

/// Why a bearer token was refused; each has its own code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerError {
    Malformed(&'static str),
    /// `alg` other than the key's (`none`, `HS256`, `EdDSA`, `RS256` for a P-256 key, ...).
    Algorithm,
    UnknownKey,
    Signature,
    Issuer,
    Audience,
    Expired,
    /// `iat` (or `nbf`) further in the future than the allowed skew.
    NotYetValid,
    Claims(&'static str),
}

impl BearerError {
    pub fn code(&self) -> &'static str {
        use BearerError::*;
        match self {
            Malformed(_) => "PROXY_AUTH_BEARER_MALFORMED",
            Algorithm => "PROXY_AUTH_BEARER_ALGORITHM",
            UnknownKey => "PROXY_AUTH_BEARER_UNKNOWN_KEY",
            Signature => "PROXY_AUTH_BEARER_SIGNATURE",
            Issuer => "PROXY_AUTH_BEARER_ISSUER",
            Audience => "PROXY_AUTH_BEARER_AUDIENCE",
            Expired => "PROXY_AUTH_BEARER_EXPIRED",
            NotYetValid => "PROXY_AUTH_BEARER_NOT_YET_VALID",
            Claims(_) => "PROXY_AUTH_BEARER_CLAIMS",
        }
    }

    /// `details.reason`: fixed text, never token bytes.
    pub fn reason(&self) -> &'static str {
        use BearerError::*;
        match self {
            Malformed(m) | Claims(m) => m,
            Algorithm => "Bearer token alg is not the algorithm of its key",
            UnknownKey => "Bearer token kid is not in the issuer's key set",
            Signature => "Bearer token signature verification failed",
            Issuer => "Bearer token issuer is not accepted",
            Audience => "Bearer token audience does not include this service",
            Expired => "Bearer token has expired",
            NotYetValid => "Bearer token is not valid yet",
        }
    }

    /// Only an unknown `kid` warrants a key refresh.
    pub fn is_unknown_key(&self) -> bool {
        matches!(self, BearerError::UnknownKey)
    }
}

/// What this service expects of a token.
#[derive(Debug, Clone, Copy)]
pub struct BearerExpect<'a> {
    pub issuer: &'a str,
    /// Required in `aud`: the route's `resource` (RFC 8707) or the issuer's `audience`.
    pub audience: &'a str,
    pub now_secs: u64,
    pub max_iat_skew_secs: u64,
}

#[derive(Debug, Clone)]
pub struct BearerClaims {
    pub sub: String,
    pub iss: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    /// `nbf`, when the token has one.
    pub nbf: Option<u64>,
    /// Every audience of `aud` (a string or an array of strings).
    pub audiences: Vec<String>,
    /// The header's `kid`: the issuer's key that verified the token.
    pub kid: String,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub trust_score: Option<f64>,
    /// The confirmation key (`cnf.jwk`, P-256): the request must then carry a proof by it.
    pub cnf: Option<P256Key>,
    /// The DPoP key's RFC 7638 thumbprint (`cnf.jkt`, RFC 9449 §6.1): the token is then only
    /// accepted with a `DPoP` proof by that key.
    pub jkt: Option<String>,
    /// OAuth scopes: `scope` (space-separated, RFC 9068 §2.2.3) or `scp` (an array).
    pub scopes: Vec<String>,
}

/// A token's payload, decoded and parsed once: its unverified `iss` picks the issuer whose keys
/// verify the token, and [`verify_peeked`] then reads the claims from it.
pub struct Payload(Object);

impl Payload {
    /// The payload of `token` when it is a base64url JSON object (no length or shape check: that
    /// is [`verify`]'s).
    pub fn peek(token: &str) -> Option<Payload> {
        let payload = token.split('.').nth(1)?;
        let bytes = b64::decode(payload).ok()?;
        match Json::parse_standard(&bytes).ok()? {
            Json::Object(o) => Some(Payload(o)),
            _ => None,
        }
    }

    /// The unverified `iss`.
    pub fn issuer(&self) -> Option<&str> {
        self.0.get("iss").and_then(Json::as_str)
    }
}

/// The unverified `iss`, to pick the issuer whose keys verify the token.
pub fn peek_issuer(token: &str) -> Option<String> {
    Payload::peek(token)?.issuer().map(str::to_owned)
}

/// The `kid` of the header (unverified), for a key refresh when it is unknown.
pub(crate) fn peek_kid(token: &str) -> Option<String> {
    let header = object(token.split('.').next()?).ok()?;
    header
        .get("kid")
        .and_then(Json::as_str)
        .filter(|k| is_allowed_kid(k))
        .map(str::to_owned)
}

/// Verifies `token` against the issuer's `keys` and what this service expects.
pub fn verify(
    token: &str,
    keys: &KeySet,
    expect: BearerExpect<'_>,
) -> Result<BearerClaims, BearerError> {
    verify_peeked(token, None, keys, expect)
}

/// [`verify`], with the payload [`Payload::peek`] already parsed from `token` (the same segment
/// this reads, so the claims are the same).
pub fn verify_peeked(
    token: &str,
    payload: Option<&Payload>,
    keys: &KeySet,
    expect: BearerExpect<'_>,
) -> Result<BearerClaims, BearerError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(BearerError::Malformed("Bearer token is too large"));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = parts[..] else {
        return Err(BearerError::Malformed("Bearer token is not a compact JWS"));
    };
    let header = object(header_b64)?;
    if header.names().any(|n| !matches!(n, "alg" | "typ" | "kid")) {
        return Err(BearerError::Malformed(
            "Bearer token header has an unsupported member",
        ));
    }
    let alg = header.get("alg").and_then(Json::as_str);
    if !matches!(alg, Some("ES256" | "RS256" | "PS256")) {
        return Err(BearerError::Algorithm);
    }
    if header
        .get("typ")
        .is_some_and(|t| !matches!(t.as_str(), Some("JWT" | "at+jwt")))
    {
        return Err(BearerError::Malformed("Bearer token typ must be JWT"));
    }
    let kid = match header.get("kid").and_then(Json::as_str) {
        Some(k) if is_allowed_kid(k) => k,
        _ => {
            return Err(BearerError::Malformed(
                "Bearer token kid is missing or invalid",
            ));
        }
    };
    let Some(key) = keys.get(kid) else {
        return Err(BearerError::UnknownKey);
    };
    if alg != Some(key.alg().as_str()) {
        return Err(BearerError::Algorithm);
    }
    let signature = b64::decode(signature_b64).map_err(|_| BearerError::Signature)?;
    let input = &token[..header_b64.len() + 1 + payload_b64.len()];
    if !key.verify(input.as_bytes(), &signature) {
        return Err(BearerError::Signature);
    }
    match payload {
        Some(Payload(parsed)) => claims(parsed, kid, expect),
        None => claims(&object(payload_b64)?, kid, expect),
    }
}

fn object(segment: &str) -> Result<Object, BearerError> {
    let bytes = b64::decode(segment)
        .map_err(|_| BearerError::Malformed("Bearer token is not base64url"))?;
    match Json::parse_standard(&bytes) {
        Ok(Json::Object(o)) => Ok(o),
        Err(JsonError::DuplicateMember) => Err(BearerError::Malformed(
            "Bearer token has a duplicate JSON member",
        )),
        _ => Err(BearerError::Malformed(
            "Bearer token segment is not a JSON object",
        )),
    }
}

fn claims(c: &Object, kid: &str, expect: BearerExpect<'_>) -> Result<BearerClaims, BearerError> {
    let text = |name: &str| c.get(name).and_then(Json::as_str).filter(|s| !s.is_empty());
    let time = |name: &str| {
        c.get(name)
            .and_then(Json::as_f64)
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(|t| t as u64)
    };
    let iss = text("iss").ok_or(BearerError::Issuer)?;
    if iss != expect.issuer {
        return Err(BearerError::Issuer);
    }
    let audiences: Vec<String> = match c.get("aud") {
        Some(Json::String(a)) => vec![a.clone()],
        Some(Json::Array(list)) => list
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    if !audiences.iter().any(|a| a == expect.audience) {
        return Err(BearerError::Audience);
    }
    let exp = time("exp").ok_or(BearerError::Claims("Bearer token exp is required"))?;
    if exp <= expect.now_secs {
        return Err(BearerError::Expired);
    }
    let iat = time("iat").ok_or(BearerError::Claims("Bearer token iat is required"))?;
    let latest = expect.now_secs.saturating_add(expect.max_iat_skew_secs);
    let nbf = time("nbf");
    if iat > latest || nbf.is_some_and(|nbf| nbf > latest) {
        return Err(BearerError::NotYetValid);
    }
    // These reach the upstream as header values: no control characters (CR/LF would split a
    // header), and no commas in a list item (the header joins them with commas).
    let sub = text("sub").ok_or(BearerError::Claims("Bearer token sub is required"))?;
    let jti = text("jti").ok_or(BearerError::Claims("Bearer token jti is required"))?;
    if !header_safe(sub) || !header_safe(jti) {
        return Err(BearerError::Claims(
            "Bearer token sub and jti must not contain control characters",
        ));
    }
    let list = |name: &str| -> Result<Vec<String>, BearerError> {
        let refused = BearerError::Claims(
            "Bearer token roles and permissions must be arrays of strings without commas or control characters",
        );
        match c.get(name) {
            None => Ok(Vec::new()),
            Some(Json::Array(items)) => items
                .iter()
                .map(|i| i.as_str().filter(|s| header_safe(s) && !s.contains(',')))
                .map(|i| i.map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(refused),
            Some(_) => Err(refused),
        }
    };
    let trust_score = match c.get("trustScore") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|t| t.is_finite())
                .ok_or(BearerError::Claims(
                    "Bearer token trustScore must be a number",
                ))?,
        ),
    };
    let (cnf, jkt) = match c.get("cnf") {
        None => (None, None),
        Some(v) => confirmation(v).ok_or(BearerError::Claims(
            "Bearer token cnf must hold one of jwk (a P-256 public key) or jkt (a thumbprint)",
        ))?,
    };
    let scopes = match (c.get("scope"), c.get("scp")) {
        (None, None) => Some(Vec::new()),
        (Some(Json::String(s)), None) => Some(
            s.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        (None, Some(Json::Array(items))) => items
            .iter()
            .map(|i| i.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
            .collect::<Option<Vec<_>>>(),
        _ => None,
    };
    let scopes = scopes.filter(|list| {
        list.len() <= 64
            && list
                .iter()
                .all(|s| !s.contains([' ', ',', '"', '\\']) && header_safe(s))
    });
    let Some(scopes) = scopes else {
        return Err(BearerError::Claims(
            "Bearer token scope must be space-separated tokens",
        ));
    };
    Ok(BearerClaims {
        sub: sub.to_owned(),
        iss: iss.to_owned(),
        jti: jti.to_owned(),
        iat,
        exp,
        nbf,
        audiences,
        kid: kid.to_owned(),
        roles: list("roles")?,
        permissions: list("permissions")?,
        trust_score,
        cnf,
        jkt,
        scopes,
    })
}

/// A value that can go into an HTTP header unchanged: no control characters.
fn header_safe(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

/// `cnf`: exactly one of `jwk` (a P-256 key, proven with `X-Claw-Proof`) and `jkt` (a DPoP
/// key's thumbprint: 43 base64url characters of a SHA-256).
fn confirmation(cnf: &Json) -> Option<(Option<P256Key>, Option<String>)> {
    let cnf = cnf.as_object()?;
    match (cnf.get("jwk"), cnf.get("jkt")) {
        (Some(jwk), None) => Some((Some(ec_key(jwk.as_object()?)?), None)),
        (None, Some(jkt)) => {
            let jkt = jkt.as_str()?;
            b64::decode_array::<32>(jkt).ok()?;
            Some((None, Some(jkt.to_owned())))
        }
        _ => None,
    }
}

/// A JWK `{kty: EC, crv: P-256, x, y}`.
fn ec_key(jwk: &Object) -> Option<P256Key> {
    let text = |name| jwk.get(name).and_then(Json::as_str);
    if text("kty")? != "EC" || text("crv")? != "P-256" {
        return None;
    }
    let x = b64::decode_array::<32>(text("x")?).ok()?;
    let y = b64::decode_array::<32>(text("y")?).ok()?;
    P256Key::from_coordinates(&x, &y).ok()
}

/// An RSA JWK `{kty: RSA, n, e}` of 2048 to 8192 bits, for `alg`.
pub(crate) fn rsa_key(jwk: &Object, alg: Alg) -> Option<RsaKey> {
    let text = |name| jwk.get(name).and_then(Json::as_str);
    if text("kty")? != "RSA" {
        return None;
    }
    let n = b64::decode(text("n")?).ok()?;
    let e = b64::decode(text("e")?).ok()?;
    RsaKey::from_components(&n, &e, alg).ok()
}

/// A standard JWKS: the signing keys (`use` absent or `sig`, an allowed `kid`) that are P-256
/// (`kty: EC`, `alg` absent or `ES256`) or RSA (`kty: RSA`, `alg` `RS256`, `PS256`, or absent
/// for `RS256`: the one algorithm the key is then used with). Other keys are skipped, as a JWKS
/// may serve several purposes; no usable key at all is an error.
pub fn parse_jwks(body: &[u8]) -> Result<KeySet, KeysDocError> {
    let doc = Json::parse_standard(body).map_err(|_| KeysDocError::PayloadInvalid)?;
    let Some(Json::Array(entries)) = doc.as_object().and_then(|o| o.get("keys")) else {
        return Err(KeysDocError::PayloadInvalid);
    };
    let mut keys: Vec<(String, PublicKey)> = Vec::new();
    for entry in entries.iter().filter_map(Json::as_object) {
        let text = |name| entry.get(name).and_then(Json::as_str);
        let usable = text("use").is_none_or(|u| u == "sig");
        let Some(kid) = text("kid").filter(|k| is_allowed_kid(k)) else {
            continue;
        };
        if !usable || keys.iter().any(|(k, _)| k == kid) {
            continue;
        }
        let key = match (text("kty"), text("alg")) {
            (Some("EC"), None | Some("ES256")) => ec_key(entry).map(PublicKey::P256),
            (Some("RSA"), None | Some("RS256")) => rsa_key(entry, Alg::RS256).map(PublicKey::Rsa),
            (Some("RSA"), Some("PS256")) => rsa_key(entry, Alg::PS256).map(PublicKey::Rsa),
            _ => None,
        };
        if let Some(key) = key {
            keys.push((kid.to_owned(), key));
        }
    }
    if keys.is_empty() {
        return Err(KeysDocError::NoActiveKey);
    }
    Ok(KeySet::new(keys))
}

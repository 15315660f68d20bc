//! JWS compact tokens (AIT and CRL), and the jose checks the reference runs before its claim
//! schemas.
//!
//! The order is the reference's: protected header (`alg`, `typ`, `kid`), key lookup by `kid`,
//! signature over the received bytes, then `iss`, `nbf` and `exp` with zero tolerance. The
//! verifier picks the algorithm: the key found by `kid` allows exactly one `alg`, and the header
//! must name it.
//!
//! An AIT comes from the caller, so it is read under a closed profile, stricter than the
//! reference (`docs/deviations.md` item 7): only `alg`, `typ` and `kid` may appear in the header,
//! duplicate members are refused, every segment must be canonical base64url, and a `kid` outside
//! `^[A-Za-z0-9._:-]{1,128}$` is refused before any lookup. A CRL comes from the registry, and
//! refusing one only stops revocation, so once its signature verifies under the key its `kid`
//! names it is read as the reference reads it: other header members ignored (`crit` refused: jose
//! refuses every extension the reference does not ask for), the last of repeated members kept,
//! segments decoded as `atob` decodes them.

use std::fmt;

use super::b64;
use super::json::{Json, JsonError, Object};
use super::keys::KeySet;

/// AITs longer than this are refused before any decoding whatever the configuration says
/// (`limits.token_bytes`, default [`DEFAULT_TOKEN_LEN`], may not exceed it). A CRL is bounded by
/// the registry response's size limit instead (`limits.crl_bytes`).
pub(crate) const MAX_TOKEN_LEN: usize = 64 * 1024;
/// The default limit on an AIT's or a bearer token's length; real AITs are 0.7-3.5 KB.
pub(crate) const DEFAULT_TOKEN_LEN: usize = 8 * 1024;
/// Decoded protected headers longer than this are refused.
pub(crate) const MAX_HEADER_LEN: usize = 1024;

/// Which token profile is being verified; fixes `typ` and the error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Ait,
    Crl,
}

impl TokenKind {
    pub fn typ(self) -> &'static str {
        match self {
            TokenKind::Ait => "AIT",
            TokenKind::Crl => "CRL",
        }
    }
}

/// What was wrong with the protected header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    /// `alg` is not the one algorithm the key (or profile) allows.
    Alg(&'static str),
    Typ,
    KidMissing,
    /// `kid` outside the allowed character set or length; never echoed.
    KidNotAllowed,
    UnsupportedMember,
    DuplicateMember,
    TooLarge,
}

/// Why a token was refused. `Display` gives the reference's message, which is safe to return
/// as `details.reason`: it never contains token bytes or keys (a `kid` is echoed only after it
/// matched the allowed pattern).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Past the protocol's size ceiling, or five segments under a good header (a JWE).
    Malformed(&'static str),
    /// Not three (or five) segments, or the protected header is not decodable JSON: jose's
    /// "Invalid Token or Protected Header formatting".
    HeaderFormat,
    Header(TokenKind, HeaderProblem),
    /// No active key has this `kid`; the only error that warrants a key refresh.
    UnknownKid(TokenKind, String),
    SignatureSegment,
    PayloadSegment,
    Signature,
    /// The claims are not a JSON object (or repeat a member).
    ClaimsNotObject,
    ClaimsDuplicateMember,
    MissingIssuer,
    WrongIssuer,
    /// `"iat"|"nbf"|"exp" claim must be a number`.
    TimeClaimType(&'static str),
    NotYetValid,
    Expired,
    /// Claim schema failures, in the reference's zod wording.
    Claims(TokenKind, String),
    /// The AIT's confirmation key is a weak or invalid point.
    WeakAgentKey,
}

impl TokenError {
    /// The reference's error code (jose's or the SDK's).
    pub fn code(&self) -> &'static str {
        use TokenError::*;
        match self {
            Malformed(_) | PayloadSegment | SignatureSegment => "ERR_JWS_INVALID",
            HeaderFormat | ClaimsNotObject | ClaimsDuplicateMember => "ERR_JWT_INVALID",
            Header(TokenKind::Ait, _) => "INVALID_AIT_HEADER",
            Header(TokenKind::Crl, _) => "INVALID_CRL_HEADER",
            UnknownKid(TokenKind::Ait, _) => "UNKNOWN_AIT_KID",
            UnknownKid(TokenKind::Crl, _) => "UNKNOWN_CRL_KID",
            Signature => "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
            MissingIssuer | WrongIssuer | TimeClaimType(_) | NotYetValid => {
                "ERR_JWT_CLAIM_VALIDATION_FAILED"
            }
            Expired => "ERR_JWT_EXPIRED",
            Claims(TokenKind::Ait, _) | WeakAgentKey => "INVALID_AIT_CLAIMS",
            Claims(TokenKind::Crl, _) => "INVALID_CRL_CLAIMS",
        }
    }

    pub fn is_unknown_kid(&self) -> bool {
        matches!(self, TokenError::UnknownKid(..))
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TokenError::*;
        match self {
            Malformed(m) => f.write_str(m),
            HeaderFormat => f.write_str("Invalid Token or Protected Header formatting"),
            Header(kind, problem) => {
                let t = kind.typ();
                match problem {
                    HeaderProblem::Alg(alg) => write!(f, "{t} token must use alg={alg}"),
                    HeaderProblem::Typ => write!(f, "{t} token must use typ={t}"),
                    HeaderProblem::KidMissing => {
                        write!(f, "{t} token missing protected kid header")
                    }
                    HeaderProblem::KidNotAllowed => {
                        write!(
                            f,
                            "{t} token kid has characters or a length that is not allowed"
                        )
                    }
                    HeaderProblem::UnsupportedMember => {
                        write!(f, "{t} token protected header has an unsupported member")
                    }
                    HeaderProblem::DuplicateMember => {
                        write!(f, "{t} token protected header has a duplicate member")
                    }
                    HeaderProblem::TooLarge => write!(f, "{t} token protected header is too large"),
                }
            }
            UnknownKid(kind, kid) => write!(f, "Unknown {} signing kid: {kid}", kind.typ()),
            SignatureSegment => f.write_str("Failed to base64url decode the signature"),
            PayloadSegment => f.write_str("Failed to base64url decode the payload"),
            Signature => f.write_str("signature verification failed"),
            ClaimsNotObject => f.write_str("JWT Claims Set must be a top-level JSON object"),
            ClaimsDuplicateMember => f.write_str("JWT Claims Set has a duplicate member"),
            MissingIssuer => f.write_str("missing required \"iss\" claim"),
            WrongIssuer => f.write_str("unexpected \"iss\" claim value"),
            TimeClaimType(claim) => write!(f, "\"{claim}\" claim must be a number"),
            NotYetValid => f.write_str("\"nbf\" claim timestamp check failed"),
            Expired => f.write_str("\"exp\" claim timestamp check failed"),
            Claims(_, message) => f.write_str(message),
            WeakAgentKey => f.write_str("cnf.jwk is not an acceptable public key"),
        }
    }
}

/// `^[A-Za-z0-9._:-]{1,128}$`
pub(crate) fn is_allowed_kid(kid: &str) -> bool {
    (1..=128).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// What a caller fixes about a verification: the expected issuer (`None` skips the check, as the
/// reference does for CRLs from a loopback registry) and the wall clock in unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    pub issuer: Option<&'a str>,
    pub now_secs: u64,
}

/// Verifies a compact JWS of `kind` against `keys` and returns its claims object after the jose
/// checks; the profile's own schema runs next, in `ait` or `crl`.
pub fn verify(
    token: &str,
    kind: TokenKind,
    keys: &KeySet,
    expect: Expectations<'_>,
) -> Result<Object, TokenError> {
    if kind == TokenKind::Ait && token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("Token is too large"));
    }
    let segments: Vec<&str> = token.splitn(6, '.').collect();
    // jose reads the header of a 3- or 5-segment token (JWS or JWE) before it counts segments.
    if !matches!(segments.len(), 3 | 5) {
        return Err(TokenError::HeaderFormat);
    }
    let header = check_header(segments[0], kind)?;
    let key = keys
        .get(&header.kid)
        .ok_or_else(|| TokenError::UnknownKid(kind, header.kid.clone()))?;
    if header.alg != key.alg().as_str() {
        return Err(TokenError::Header(
            kind,
            HeaderProblem::Alg(key.alg().as_str()),
        ));
    }
    let [header_b64, payload_b64, signature_b64] = segments[..] else {
        return Err(TokenError::Malformed("Invalid Compact JWS"));
    };

    let decode = |segment: &str| match kind {
        TokenKind::Ait => b64::decode(segment).ok(),
        TokenKind::Crl => b64::decode_lenient(segment),
    };
    let signature = decode(signature_b64).ok_or(TokenError::SignatureSegment)?;
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    if !key.verify(signing_input.as_bytes(), &signature) {
        return Err(TokenError::Signature);
    }
    let payload = decode(payload_b64).ok_or(TokenError::PayloadSegment)?;
    let claims = match parse_json(&payload, kind) {
        Ok(Json::Object(o)) => o,
        Err(JsonError::DuplicateMember) => return Err(TokenError::ClaimsDuplicateMember),
        _ => return Err(TokenError::ClaimsNotObject),
    };
    check_registered_claims(&claims, expect)?;
    Ok(claims)
}

/// An AIT's JSON refuses repeated members; a CRL's keeps the last, as `JSON.parse` does.
fn parse_json(bytes: &[u8], kind: TokenKind) -> Result<Json, JsonError> {
    match kind {
        TokenKind::Ait => Json::parse(bytes),
        TokenKind::Crl => Json::parse_lenient(bytes),
    }
}

/// The `kid` of a token whose header passes the checks of `kind`.
pub(crate) fn kid_of(token: &str, kind: TokenKind) -> Option<String> {
    let header = token.split('.').next()?;
    check_header(header, kind).ok().map(|h| h.kid)
}

struct CheckedHeader {
    alg: String,
    kid: String,
}

fn check_header(header_b64: &str, kind: TokenKind) -> Result<CheckedHeader, TokenError> {
    if header_b64.len() > b64::encoded_len(MAX_HEADER_LEN) {
        return Err(TokenError::Header(kind, HeaderProblem::TooLarge));
    }
    let bytes = match kind {
        TokenKind::Ait => b64::decode(header_b64).ok(),
        TokenKind::Crl => b64::decode_lenient(header_b64),
    };
    let bytes = bytes.ok_or(TokenError::HeaderFormat)?;
    let header = match parse_json(&bytes, kind) {
        Ok(Json::Object(o)) => o,
        Err(JsonError::DuplicateMember) => {
            return Err(TokenError::Header(kind, HeaderProblem::DuplicateMember));
        }
        _ => return Err(TokenError::HeaderFormat),
    };
    let unsupported = |n: &str| match kind {
        TokenKind::Ait => !matches!(n, "alg" | "typ" | "kid"),
        // jose refuses any `crit` it does not implement, and it implements none the reference
        // asks for; every other member is ignored.
        TokenKind::Crl => n == "crit",
    };
    if header.names().any(unsupported) {
        return Err(TokenError::Header(kind, HeaderProblem::UnsupportedMember));
    }
    // Before the key is known, any algorithm the verifier implements may stand; the reference
    // names EdDSA, its only one, in the message.
    let alg = match header.get("alg").and_then(Json::as_str) {
        Some(a @ ("EdDSA" | "ES256")) => a.to_owned(),
        _ => return Err(TokenError::Header(kind, HeaderProblem::Alg("EdDSA"))),
    };
    if header.get("typ").and_then(Json::as_str) != Some(kind.typ()) {
        return Err(TokenError::Header(kind, HeaderProblem::Typ));
    }
    let kid = match header.get("kid").and_then(Json::as_str) {
        Some("") | None => return Err(TokenError::Header(kind, HeaderProblem::KidMissing)),
        // A CRL's `kid` only selects among the registry's own keys (any non-empty name there)
        // and is never echoed to a caller.
        Some(k) if kind == TokenKind::Ait && !is_allowed_kid(k) => {
            return Err(TokenError::Header(kind, HeaderProblem::KidNotAllowed));
        }
        Some(k) => k.to_owned(),
    };
    Ok(CheckedHeader { alg, kid })
}

/// jose's `validateClaimsSet` for the options the reference passes: `iss`, then `iat` type,
/// `nbf`, `exp`, with zero tolerance and `exp == now` already expired.
pub fn check_registered_claims(
    claims: &Object,
    expect: Expectations<'_>,
) -> Result<(), TokenError> {
    if let Some(issuer) = expect.issuer {
        match claims.get("iss") {
            None => return Err(TokenError::MissingIssuer),
            Some(v) if v.as_str() != Some(issuer) => return Err(TokenError::WrongIssuer),
            Some(_) => {}
        }
    }
    // JavaScript compares these as doubles; so do we, which also cannot overflow.
    let now = expect.now_secs as f64;
    let time = |name: &'static str| -> Result<Option<f64>, TokenError> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or(TokenError::TimeClaimType(name)),
        }
    };
    time("iat")?;
    if time("nbf")?.is_some_and(|nbf| nbf > now) {
        return Err(TokenError::NotYetValid);
    }
    if time("exp")?.is_some_and(|exp| exp <= now) {
        return Err(TokenError::Expired);
    }
    Ok(())
}

//! Agent Identity Tokens: the claims schema and `verify_ait`.
//!
//! After the jose checks in [`jws::verify`], the claims go through the reference's strict schema
//! (every field in schema order, unrecognized members, then the cross-field rules), so a refused
//! token carries the reference's `details.reason` text. The confirmation key `cnf.jwk` is parsed
//! and validated here, once per token: OKP/Ed25519 as in the reference, or EC/P-256 beyond it.

use super::b64;
use super::ids::{DidKind, is_ulid, issuer_authority, parse_did};
use super::json::{Json, Object};
use super::jws::{self, Expectations, TokenError, TokenKind};
use super::keys::KeySet;
use super::schema::{Issues, as_int, has_control_chars};
use crate::crypto::{Ed25519Key, KeyError, P256Key, PublicKey};

const CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "ownerDid",
    "name",
    "framework",
    "description",
    "cnf",
    "iat",
    "nbf",
    "exp",
    "jti",
];

/// The agent's proof-of-possession key from `cnf.jwk`, with its JWK text for identity headers.
#[derive(Debug, Clone)]
pub struct AgentKey {
    pub key: PublicKey,
    /// `cnf.jwk.x` as sent (for P-256, `y` follows in `y`).
    pub x: String,
    pub y: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AitClaims {
    pub iss: String,
    pub sub: String,
    pub owner_did: String,
    pub name: String,
    pub framework: String,
    pub description: Option<String>,
    pub cnf: AgentKey,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

pub fn verify_ait(
    token: &str,
    keys: &KeySet,
    expect: Expectations<'_>,
) -> Result<AitClaims, TokenError> {
    let claims = jws::verify(token, TokenKind::Ait, keys, expect)?;
    parse_claims(&claims)
}

/// Unvalidated key material from `cnf.jwk`, decoded after the schema has passed.
enum CnfJwk<'a> {
    Okp { x: &'a str },
    Ec { x: &'a str, y: &'a str },
}

/// The claims once every field passed its type and shape.
struct Fields<'a> {
    iss: &'a str,
    sub: &'a str,
    owner: &'a str,
    name: &'a str,
    framework: &'a str,
    description: Option<&'a str>,
    cnf: CnfJwk<'a>,
    iat: f64,
    nbf: f64,
    exp: f64,
    jti: &'a str,
}

fn parse_claims(obj: &Object) -> Result<AitClaims, TokenError> {
    let mut issues = Issues::default();
    // Only a type or shape problem leaves a field unread; zod then skips the cross-field rules.
    let Some(f) = read_fields(&mut issues, obj) else {
        return Err(claims_error(&issues));
    };
    let authority = issuer_authority(f.iss);
    if authority.is_none() {
        issues.push("iss must be an http(s) URL with a hostname");
    }
    check_did(&mut issues, f.sub, DidKind::Agent, authority.as_deref());
    check_did(&mut issues, f.owner, DidKind::Human, authority.as_deref());
    let key = decode_cnf(&mut issues, &f.cnf);
    if !is_ulid(f.jti) {
        issues.push("jti must be a valid ULID");
    }
    if f.exp <= f.nbf {
        issues.push("exp must be greater than nbf");
    }
    if f.exp <= f.iat {
        issues.push("exp must be greater than iat");
    }
    if !issues.is_empty() {
        return Err(claims_error(&issues));
    }
    let key = key.ok_or(TokenError::WeakAgentKey)?;
    let (x, y) = match f.cnf {
        CnfJwk::Okp { x } => (x.to_owned(), None),
        CnfJwk::Ec { x, y } => (x.to_owned(), Some(y.to_owned())),
    };
    Ok(AitClaims {
        iss: f.iss.to_owned(),
        sub: f.sub.to_owned(),
        owner_did: f.owner.to_owned(),
        name: f.name.to_owned(),
        framework: f.framework.to_owned(),
        description: f.description.map(str::to_owned),
        cnf: AgentKey { key, x, y },
        iat: as_int(f.iat),
        nbf: as_int(f.nbf),
        exp: as_int(f.exp),
        jti: f.jti.to_owned(),
    })
}

/// The schema pass: every field in schema order, then unrecognized members; `None` when a
/// field's type or shape failed (the cross-field rules then do not run).
fn read_fields<'a>(issues: &mut Issues, obj: &'a Object) -> Option<Fields<'a>> {
    let iss = issues.string(obj, "iss");
    iss.inspect(|s| issues.non_empty(s, "iss is required"));
    let sub = issues.string(obj, "sub");
    sub.inspect(|s| issues.non_empty(s, "sub is required"));
    let owner = issues.string(obj, "ownerDid");
    owner.inspect(|s| issues.non_empty(s, "ownerDid is required"));
    let name = issues.string(obj, "name");
    if name.is_some_and(|n| !is_agent_name(n)) {
        issues.push("name contains invalid characters or length");
    }
    let framework = issues.string(obj, "framework");
    if let Some(f) = framework {
        issues.non_empty(f, "framework is required");
        text_field(issues, f, 32, "framework");
    }
    let description = issues.optional_string(obj, "description");
    if let Some(d) = description {
        text_field(issues, d, 280, "description");
    }
    let cnf = parse_cnf(issues, obj);
    let iat = issues.non_negative_int(obj, "iat");
    let nbf = issues.non_negative_int(obj, "nbf");
    let exp = issues.non_negative_int(obj, "exp");
    let jti = issues.string(obj, "jti");
    jti.inspect(|s| issues.non_empty(s, "Too small: expected string to have >=1 characters"));
    issues.strict(obj, CLAIMS);
    if issues.aborted() {
        return None;
    }
    Some(Fields {
        iss: iss?,
        sub: sub?,
        owner: owner?,
        name: name?,
        framework: framework?,
        description,
        cnf: cnf?,
        iat: iat?,
        nbf: nbf?,
        exp: exp?,
        jti: jti?,
    })
}

/// A free-text claim: at most `max` UTF-16 units, no control characters.
fn text_field(issues: &mut Issues, value: &str, max: usize, name: &str) {
    issues.max_len(value, max);
    if has_control_chars(value) {
        issues.push(format!("{name} contains control characters"));
    }
}

fn claims_error(issues: &Issues) -> TokenError {
    let message = issues.message();
    if message.is_empty() {
        TokenError::Claims(TokenKind::Ait, "Invalid AIT claims payload".into())
    } else {
        TokenError::Claims(TokenKind::Ait, message)
    }
}

/// `^[A-Za-z0-9._ -]{1,64}$`
fn is_agent_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b' ' | b'-'))
}

/// `cnf: {jwk: {kty, crv, x[, y]}}`, both levels strict.
fn parse_cnf<'a>(issues: &mut Issues, obj: &'a Object) -> Option<CnfJwk<'a>> {
    let cnf = issues.object(obj, "cnf")?;
    let jwk = issues.object(cnf, "jwk");
    issues.strict(cnf, &["jwk"]);
    let jwk = jwk?;
    // The P-256 extension applies to a JWK that says so in full; anything else is read against
    // the reference's Ed25519 schema and gets its messages (`kty: "EC"` alone: expected "OKP").
    let text = |name| jwk.get(name).and_then(|v: &Json| v.as_str());
    if text("kty") == Some("EC") && text("crv") == Some("P-256") {
        let kty = issues.literal(jwk, "kty", "EC");
        let crv = issues.literal(jwk, "crv", "P-256");
        let x = issues.string(jwk, "x");
        x.inspect(|s| issues.non_empty(s, "Too small: expected string to have >=1 characters"));
        let y = issues.string(jwk, "y");
        y.inspect(|s| issues.non_empty(s, "Too small: expected string to have >=1 characters"));
        issues.strict(jwk, &["kty", "crv", "x", "y"]);
        (kty && crv).then_some(CnfJwk::Ec { x: x?, y: y? })
    } else {
        let kty = issues.literal(jwk, "kty", "OKP");
        let crv = issues.literal(jwk, "crv", "Ed25519");
        let x = issues.string(jwk, "x");
        x.inspect(|s| issues.non_empty(s, "Too small: expected string to have >=1 characters"));
        issues.strict(jwk, &["kty", "crv", "x"]);
        (kty && crv).then_some(CnfJwk::Okp { x: x? })
    }
}

/// Decodes the confirmation key as the reference's rules read it: not canonical base64url, then
/// the wrong length, are schema issues with its messages; a weak or off-curve point is `None`
/// (refused after the schema, see `docs/deviations.md` item 7).
fn decode_cnf(issues: &mut Issues, cnf: &CnfJwk<'_>) -> Option<PublicKey> {
    let key: Result<PublicKey, KeyError> = match *cnf {
        CnfJwk::Okp { x } => {
            let Ok(bytes) = b64::decode(x) else {
                issues.push("cnf.jwk.x must be valid base64url");
                return None;
            };
            let Ok(bytes) = <[u8; 32]>::try_from(bytes) else {
                issues.push("cnf.jwk.x must decode to 32-byte Ed25519 public key");
                return None;
            };
            Ed25519Key::from_bytes(&bytes).map(PublicKey::Ed25519)
        }
        CnfJwk::Ec { x, y } => {
            let (Ok(x), Ok(y)) = (b64::decode_array::<32>(x), b64::decode_array::<32>(y)) else {
                issues.push("cnf.jwk.x and cnf.jwk.y must decode to 32-byte P-256 coordinates");
                return None;
            };
            P256Key::from_coordinates(&x, &y).map(PublicKey::P256)
        }
    };
    key.ok()
}

/// The reference's DID rules and words: `sub` must be an agent DID, `ownerDid` a human one, each
/// under the issuer's hostname.
fn check_did(issues: &mut Issues, value: &str, kind: DidKind, authority: Option<&str>) {
    let (valid, foreign) = match kind {
        DidKind::Agent => (
            "sub must be a valid agent DID",
            "sub DID authority must match iss hostname",
        ),
        DidKind::Human => (
            "ownerDid must be a valid human DID",
            "ownerDid authority must match iss hostname",
        ),
    };
    match parse_did(value) {
        Some(did) if did.kind == kind => {
            if authority.is_some_and(|a| a != did.authority) {
                issues.push(foreign);
            }
        }
        _ => issues.push(valid),
    }
}

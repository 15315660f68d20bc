//! Certificate revocation lists: the `/v1/crl` response body, the claims schema and `verify_crl`.
//!
//! Same JWS rules as the AIT with `typ: CRL`. The reference looks revocations up by AIT `jti`
//! only; [`CrlClaims::revoked_jtis`] gives exactly that set.

use std::collections::HashSet;

use super::ids::{DidKind, is_ulid, issuer_authority, parse_did};
use super::json::{Json, Object};
use super::jws::{self, Expectations, TokenError, TokenKind};
use super::keys::KeySet;
use super::schema::{Issues, has_control_chars};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub jti: String,
    pub agent_did: String,
    pub reason: Option<String>,
    pub revoked_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlClaims {
    pub iss: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    pub revocations: Vec<Revocation>,
}

impl CrlClaims {
    pub fn revoked_jtis(&self) -> HashSet<String> {
        self.revocations.iter().map(|r| r.jti.clone()).collect()
    }

    /// Whether a freshly verified CRL may replace `current`: never one issued earlier (a
    /// rollback to an older list could un-revoke agents).
    pub fn supersedes(&self, current: Option<&CrlClaims>) -> bool {
        current.is_none_or(|c| self.iat >= c.iat)
    }
}

/// The token inside a `200 {"crl":"<JWS>"}` body; `None` when the body has another shape.
pub fn crl_token_from_body(body: &[u8]) -> Option<String> {
    match Json::parse(body).ok()?.as_object()?.get("crl")? {
        Json::String(s) => Some(s.clone()),
        _ => None,
    }
}

pub fn verify_crl(
    token: &str,
    keys: &KeySet,
    expect: Expectations<'_>,
) -> Result<CrlClaims, TokenError> {
    let claims = jws::verify(token, TokenKind::Crl, keys, expect)?;
    parse_claims(&claims)
}

fn parse_claims(obj: &Object) -> Result<CrlClaims, TokenError> {
    let mut issues = Issues::default();
    let iss = issues.string(obj, "iss");
    iss.inspect(|s| issues.non_empty(s, "iss is required"));
    let jti = issues.string(obj, "jti");
    jti.inspect(|s| issues.non_empty(s, "jti is required"));
    let iat = issues.non_negative_int(obj, "iat");
    let exp = issues.non_negative_int(obj, "exp");
    let revocations = parse_revocations(&mut issues, obj);
    issues.strict(obj, &["iss", "jti", "iat", "exp", "revocations"]);

    let (Some(iss), Some(jti), Some(iat), Some(exp), Some(revocations)) =
        (iss, jti, iat, exp, revocations)
    else {
        return Err(claims_error(&issues));
    };
    if !issues.is_empty() {
        return Err(claims_error(&issues));
    }

    let authority = issuer_authority(iss);
    if authority.is_none() {
        issues.push("iss must be an http(s) URL with a hostname");
    }
    if !is_ulid(jti) {
        issues.push("jti must be a valid ULID");
    }
    if exp <= iat {
        issues.push("exp must be greater than iat");
    }
    for r in &revocations {
        match parse_did(&r.agent_did) {
            Some(did) if did.kind == DidKind::Agent => {
                if authority.as_deref().is_some_and(|a| a != did.authority) {
                    issues.push("revocation.agentDid authority must match iss hostname");
                }
            }
            Some(_) => issues.push("revocation.agentDid must refer to an agent DID"),
            None => issues.push("revocation.agentDid must be a valid DID"),
        }
        if !is_ulid(&r.jti) {
            issues.push("revocation.jti must be a valid ULID");
        }
    }
    if !issues.is_empty() {
        return Err(claims_error(&issues));
    }
    Ok(CrlClaims {
        iss: iss.to_owned(),
        jti: jti.to_owned(),
        iat,
        exp,
        revocations,
    })
}

fn parse_revocations(issues: &mut Issues, obj: &Object) -> Option<Vec<Revocation>> {
    let list = match obj.get("revocations") {
        Some(Json::Array(list)) => list,
        other => {
            issues.invalid_type("array", other);
            return None;
        }
    };
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for item in list {
        let Some(entry) = item.as_object() else {
            issues.invalid_type("object", Some(item));
            ok = false;
            continue;
        };
        match parse_revocation(issues, entry) {
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    if list.is_empty() {
        issues.push("revocations must include at least one entry");
        ok = false;
    }
    ok.then_some(out)
}

fn parse_revocation(issues: &mut Issues, entry: &Object) -> Option<Revocation> {
    let before = issues.count();
    let jti = issues.string(entry, "jti");
    jti.inspect(|s| issues.non_empty(s, "revocation.jti is required"));
    let agent_did = issues.string(entry, "agentDid");
    agent_did.inspect(|s| issues.non_empty(s, "agentDid is required"));
    let reason = issues.optional_string(entry, "reason");
    reason.inspect(|s| issues.max_len(s, 280));
    let revoked_at = issues.non_negative_int(entry, "revokedAt");
    issues.strict(entry, &["jti", "agentDid", "reason", "revokedAt"]);
    if agent_did.is_some_and(has_control_chars) {
        issues.push("revocation.agentDid contains control characters");
    }
    if issues.count() != before {
        return None;
    }
    Some(Revocation {
        jti: jti?.to_owned(),
        agent_did: agent_did?.to_owned(),
        reason: reason.map(str::to_owned),
        revoked_at: revoked_at?,
    })
}

fn claims_error(issues: &Issues) -> TokenError {
    let message = issues.message();
    if message.is_empty() {
        TokenError::Claims(TokenKind::Crl, "Invalid CRL claims payload".into())
    } else {
        TokenError::Claims(TokenKind::Crl, message)
    }
}

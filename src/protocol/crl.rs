//! Certificate revocation lists: the `/v1/crl` response body, the claims schema and `verify_crl`.
//!
//! Same JWS rules as the AIT with `typ: CRL`. The reference looks revocations up by AIT `jti`
//! only; [`CrlClaims::revoked_jtis`] gives exactly that set.

use std::collections::HashSet;

use super::ids::{DidKind, is_ulid, issuer_authority, parse_did};
use super::json::{Json, Object};
use super::jws::{self, Expectations, TokenError, TokenKind};
use super::keys::KeySet;
use super::schema::{Issues, as_int, has_control_chars};

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
    let Json::Object(Object(members)) = Json::parse_lenient(body).ok()? else {
        return None;
    };
    // Moved out, never copied: the token is most of a CRL of megabytes.
    match members.into_iter().find(|(name, _)| name == "crl")?.1 {
        Json::String(s) => Some(s),
        _ => None,
    }
}

pub fn verify_crl(
    token: &str,
    keys: &KeySet,
    expect: Expectations<'_>,
) -> Result<CrlClaims, TokenError> {
    let claims = jws::verify(token, TokenKind::Crl, keys, expect)?;
    let checked = check_claims(&claims)?;
    Ok(CrlClaims {
        iss: checked.iss.to_owned(),
        jti: checked.jti.to_owned(),
        iat: checked.iat,
        exp: checked.exp,
        revocations: checked
            .revocations
            .into_iter()
            .map(RawRevocation::owned)
            .collect(),
    })
}

/// What a refresh keeps of a CRL [`verify_crl`] accepts: its revoked AIT ids and its `iat`.
/// The same checks, without an owned copy of every revocation (a CRL of megabytes is
/// verified with its parsed claims and the set alone in memory).
pub fn verify_crl_index(
    token: &str,
    keys: &KeySet,
    expect: Expectations<'_>,
) -> Result<(HashSet<String>, u64), TokenError> {
    let claims = jws::verify(token, TokenKind::Crl, keys, expect)?;
    let checked = check_claims(&claims)?;
    let jtis = checked
        .revocations
        .iter()
        .map(|r| r.jti.to_owned())
        .collect();
    Ok((jtis, checked.iat))
}

/// The claims of a CRL, checked, borrowing from the parsed payload.
struct Checked<'a> {
    iss: &'a str,
    jti: &'a str,
    iat: u64,
    exp: u64,
    revocations: Vec<RawRevocation<'a>>,
}

fn check_claims(obj: &Object) -> Result<Checked<'_>, TokenError> {
    let mut issues = Issues::default();
    let iss = issues.string(obj, "iss");
    iss.inspect(|s| issues.non_empty(s, "iss is required"));
    // Any non-empty string, as the reference's schema has it (not necessarily a ULID).
    let jti = issues.string(obj, "jti");
    jti.inspect(|s| issues.non_empty(s, "jti is required"));
    let iat = issues.non_negative_int(obj, "iat");
    let exp = issues.non_negative_int(obj, "exp");
    let revocations = parse_revocations(&mut issues, obj);
    issues.strict(obj, &["iss", "jti", "iat", "exp", "revocations"]);

    // zod skips the cross-field rules after a type or shape problem.
    let (false, Some(iss), Some(jti), Some(iat), Some(exp), Some(revocations)) =
        (issues.aborted(), iss, jti, iat, exp, revocations)
    else {
        return Err(claims_error(&issues));
    };

    let authority = issuer_authority(iss);
    if authority.is_none() {
        issues.push("iss must be an http(s) URL with a hostname");
    }
    if exp <= iat {
        issues.push("exp must be greater than iat");
    }
    for r in &revocations {
        match parse_did(r.agent_did) {
            Some(did) if did.kind == DidKind::Agent => {
                if authority.as_deref().is_some_and(|a| a != did.authority) {
                    issues.push("revocation.agentDid authority must match iss hostname");
                }
            }
            Some(_) => issues.push("revocation.agentDid must refer to an agent DID"),
            None => issues.push("revocation.agentDid must be a valid DID"),
        }
        if !is_ulid(r.jti) {
            issues.push("revocation.jti must be a valid ULID");
        }
    }
    if !issues.is_empty() {
        return Err(claims_error(&issues));
    }
    Ok(Checked {
        iss,
        jti,
        iat: as_int(iat),
        exp: as_int(exp),
        revocations,
    })
}

/// A revocation entry read without a type or shape problem (it may still have others).
struct RawRevocation<'a> {
    jti: &'a str,
    agent_did: &'a str,
    reason: Option<&'a str>,
    revoked_at: f64,
}

impl RawRevocation<'_> {
    fn owned(self) -> Revocation {
        Revocation {
            jti: self.jti.to_owned(),
            agent_did: self.agent_did.to_owned(),
            reason: self.reason.map(str::to_owned),
            revoked_at: as_int(self.revoked_at),
        }
    }
}

fn parse_revocations<'a>(issues: &mut Issues, obj: &'a Object) -> Option<Vec<RawRevocation<'a>>> {
    let list = match obj.get("revocations") {
        Some(Json::Array(list)) => list,
        other => {
            issues.invalid_type("array", other);
            return None;
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let Some(entry) = item.as_object() else {
            issues.invalid_type("object", Some(item));
            continue;
        };
        out.extend(parse_revocation(issues, entry));
    }
    if list.is_empty() {
        issues.push("revocations must include at least one entry");
    }
    Some(out)
}

/// One entry, with its own refinement (control characters in `agentDid`) run as zod runs it:
/// only when the entry itself had no type or shape problem.
fn parse_revocation<'a>(issues: &mut Issues, entry: &'a Object) -> Option<RawRevocation<'a>> {
    let mut own = Issues::default();
    let jti = own.string(entry, "jti");
    jti.inspect(|s| own.non_empty(s, "revocation.jti is required"));
    let agent_did = own.string(entry, "agentDid");
    agent_did.inspect(|s| own.non_empty(s, "agentDid is required"));
    let reason = own.optional_string(entry, "reason");
    reason.inspect(|s| own.max_len(s, 280));
    let revoked_at = own.non_negative_int(entry, "revokedAt");
    own.strict(entry, &["jti", "agentDid", "reason", "revokedAt"]);
    if !own.aborted() && agent_did.is_some_and(has_control_chars) {
        own.push("revocation.agentDid contains control characters");
    }
    let read = !own.aborted();
    issues.merge(own);
    read.then_some(RawRevocation {
        jti: jti?,
        agent_did: agent_did?,
        reason,
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

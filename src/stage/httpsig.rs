//! The HTTP Message Signatures profile: the `token` stage chooses the signature the route
//! requires and its key and checks its times; the `body` and `proof` stages check
//! `Content-Digest` and the signature over the rebuilt base.

use std::sync::Arc;

use sfv::{BareItem, ListEntry, Parser};

use crate::cache::keys::{KeyCache, KeysError};
use crate::clock::Every;
use crate::config::{AgentConfig, HttpSigConfig};
use crate::crypto::PublicKey;
use crate::denial::Denial;
use crate::httpsig::{self, Error, Message, Signature};
use crate::policy::Policy;
use crate::request::RequestView;

/// A Web Bot Auth agent and its key directory, behind the registry keys' cache machinery.
pub(crate) struct AgentKeys {
    pub(crate) config: AgentConfig,
    pub(crate) keys: Arc<KeyCache>,
    pub(crate) directory: Arc<crate::registry::jwks::Jwks>,
}

/// A signature chosen and checked up to its verification.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub(crate) signature: Signature,
    pub(crate) keyid: String,
    pub(crate) key: PublicKey,
    /// The key's configured name, or its agent's.
    pub(crate) name: String,
    /// The directory the key came from (`None`: a configured key).
    pub(crate) directory: Option<String>,
}

impl Signed {
    /// Whose nonces: one space per key (per directory and key for an agent's).
    pub(crate) fn subject(&self) -> String {
        match &self.directory {
            Some(d) => format!("httpsig|{d}|{}", self.keyid),
            None => format!("httpsig|{}", self.keyid),
        }
    }

    /// Until when the nonce must be remembered: the last instant the signature is accepted
    /// (its `created` plus the maximum age, or its `expires` if sooner), plus the clock skew.
    pub(crate) fn nonce_expiry_ms(&self, config: &HttpSigConfig, max_skew_secs: u64) -> u64 {
        let created = u64::try_from(self.signature.created.unwrap_or(0)).unwrap_or(0);
        let mut last = created.saturating_add(config.max_age.as_secs());
        if let Some(expires) = self.signature.expires.and_then(|e| u64::try_from(e).ok()) {
            last = last.min(expires);
        }
        last.saturating_add(max_skew_secs).saturating_mul(1000)
    }
}

/// Whether the request is signed at all (`any` routes pick this profile then).
pub(crate) fn present(req: &RequestView) -> bool {
    req.header("signature-input").is_some()
}

/// The components the route requires of this request.
pub(crate) fn required(req: &RequestView, policy: &Policy) -> Vec<String> {
    let mut out = match &policy.signature_components {
        Some(list) => list.clone(),
        None => {
            let mut d = vec![
                "@method".to_owned(),
                "@authority".to_owned(),
                "@path".to_owned(),
            ];
            if req.raw_path.contains('?') {
                d.push("@query".to_owned());
            }
            d
        }
    };
    if req.has_body() && !out.iter().any(|c| c == "content-digest") {
        out.push("content-digest".to_owned());
    }
    out
}

/// The `Accept-Signature` challenge naming what the route requires (RFC 9421 §5.1).
pub(crate) fn accept_signature(
    required: &[String],
    policy: &Policy,
    config: &HttpSigConfig,
) -> String {
    let mut out = String::from("sig1=(");
    for (i, c) in required.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push('"');
        out.push_str(c);
        out.push('"');
    }
    out.push_str(");created");
    if config.require_nonce {
        out.push_str(";nonce");
    }
    if let Some(tag) = &policy.signature_tag {
        // A policy tag is a plain string (checked at load); quotes and backslashes escaped.
        out.push_str(";tag=\"");
        out.push_str(&tag.replace('\\', "\\\\").replace('"', "\\\""));
        out.push('"');
    }
    out
}

/// The `token` stage: parse both fields, choose the first signature that covers what the route
/// requires (and carries its tag), find its key (a configured one, or in the directory of the
/// agent its covered `Signature-Agent` names), check its times and nonce.
pub(crate) async fn select(
    req: &RequestView,
    policy: &Policy,
    config: &HttpSigConfig,
    agents: &[AgentKeys],
    now_secs: u64,
    max_skew_secs: u64,
) -> Result<Signed, Denial> {
    let required = required(req, policy);
    let invalid = |e: Error| Denial::SignatureInvalid {
        reason: e.to_string(),
        accept: accept_signature(&required, policy, config),
    };
    let input = req.field_lines("signature-input").join(", ");
    let values = req.field_lines("signature").join(", ");
    if input.is_empty() && values.is_empty() {
        return Err(Denial::SignatureMissing {
            accept: accept_signature(&required, policy, config),
        });
    }
    let signatures = httpsig::parse(&input, &values).map_err(invalid)?;
    let tag = policy.signature_tag.as_deref();
    // Every signature that covers what the route requires, carries its tag and passes the
    // cheap checks (times, nonce, keyid) is a candidate, in order; the first whose key is
    // known is the one verified. Nothing is fetched for a signature refused here.
    let mut first_error = None;
    for signature in signatures {
        if !(required.iter().all(|c| signature.covers(c))
            && (tag.is_none() || signature.tag.as_deref() == tag))
        {
            continue;
        }
        if let Err(e) = cheap_checks(&signature, config, now_secs, max_skew_secs) {
            first_error.get_or_insert(e);
            continue;
        }
        match find_key(req, &signature, config, agents, now_secs).await? {
            Ok((key, name, directory)) => {
                if let Some(alg) = &signature.alg
                    && alg != httpsig::alg_name(&key)
                {
                    return Err(invalid(Error::Algorithm));
                }
                return Ok(Signed {
                    keyid: signature.keyid.clone().unwrap_or_default(),
                    key,
                    name,
                    directory,
                    signature,
                });
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(invalid(first_error.unwrap_or(Error::NoAcceptableSignature)))
}

/// What a signature must be before its key is looked for: `created` within the skew and the
/// maximum age, `expires` not past, a nonce when required, a `keyid`.
fn cheap_checks(
    signature: &Signature,
    config: &HttpSigConfig,
    now_secs: u64,
    max_skew_secs: u64,
) -> Result<(), Error> {
    let now = i64::try_from(now_secs).unwrap_or(i64::MAX);
    let skew = i64::try_from(max_skew_secs).unwrap_or(i64::MAX);
    let max_age = i64::try_from(config.max_age.as_secs()).unwrap_or(i64::MAX);
    match (signature.created, signature.expires) {
        (None, _) => return Err(Error::Time("created is required")),
        (Some(c), _) if c > now.saturating_add(skew) => {
            return Err(Error::Time("created is in the future"));
        }
        (Some(c), _) if now.saturating_sub(c) > max_age => {
            return Err(Error::Time("created is older than the maximum age"));
        }
        (_, Some(e)) if e <= now => return Err(Error::Time("the signature expired")),
        _ => {}
    }
    match &signature.nonce {
        None if config.require_nonce => return Err(Error::MissingNonce),
        Some(n) if n.is_empty() || n.len() > 256 || n.chars().any(char::is_control) => {
            return Err(Error::Malformed("nonce"));
        }
        _ => {}
    }
    match signature.keyid.as_deref() {
        Some(k) if !k.is_empty() && k.len() <= 256 => Ok(()),
        _ => Err(Error::Malformed("keyid")),
    }
}

/// The signature's key: in the directory of the agent its covered `Signature-Agent` names, else
/// among the configured keys. The outer error is a directory that cannot be loaded (503).
async fn find_key(
    req: &RequestView,
    signature: &Signature,
    config: &HttpSigConfig,
    agents: &[AgentKeys],
    now_secs: u64,
) -> Result<Result<(PublicKey, String, Option<String>), Error>, Denial> {
    let keyid = signature.keyid.as_deref().unwrap_or_default();
    let agent = match signature_agent(req, signature, agents) {
        Ok(agent) => agent,
        Err(e) => return Ok(Err(e)),
    };
    Ok(match agent {
        Some(agent) => match directory_key(agent, keyid, now_secs).await? {
            Some(key) => Ok((
                key,
                agent.config.name.clone(),
                Some(agent.config.directory.clone()),
            )),
            None => Err(Error::UnknownKey),
        },
        None => match config.keys.get(keyid) {
            Some(known) => Ok((known.key.clone(), known.name.clone(), None)),
            None => Err(Error::UnknownKey),
        },
    })
}

/// The agent whose directory holds the signature's key: the one its covered `Signature-Agent`
/// names (`None`: no such header is covered, the key is a configured one). A covered
/// `Signature-Agent` naming no configured agent is refused.
fn signature_agent<'a>(
    req: &RequestView,
    signature: &Signature,
    agents: &'a [AgentKeys],
) -> Result<Option<&'a AgentKeys>, Error> {
    let Some(component) = signature
        .components
        .iter()
        .find(|c| c.name == "signature-agent")
    else {
        return Ok(None);
    };
    let field = req.field_lines("signature-agent").join(", ");
    if field.is_empty() {
        return Err(Error::MissingComponent(component.identifier()));
    }
    let malformed = || Error::Malformed("Signature-Agent");
    let named = match component.params.get("key") {
        // The dictionary form: the member the signature covers.
        Some(BareItem::String(key)) => dictionary_member(&field, key.as_str()),
        Some(_) => None,
        // The legacy form, a lone string; or a dictionary covered whole (one member, or the
        // member named like the signature's label).
        None => match Parser::new(&field).parse::<sfv::Item>() {
            // A string, or a bare URL (a Token to Structured Fields).
            Ok(item) => match &item.bare_item {
                BareItem::String(s) => Some(s.as_str().to_owned()),
                BareItem::Token(t) => Some(t.as_str().to_owned()),
                _ => None,
            },
            Err(_) => {
                let dict: sfv::Dictionary = Parser::new(&field).parse().map_err(|_| malformed())?;
                match dict.len() {
                    1 => dictionary_member(&field, dict.keys().next().map_or("", |k| k.as_str())),
                    _ => dictionary_member(&field, &signature.label),
                }
            }
        },
    }
    .ok_or_else(malformed)?;
    let origin = crate::config::origin_of(&named, true);
    agents
        .iter()
        .find(|a| Some(&a.config.origin) == origin.as_ref() || a.config.directory == named)
        .map(Some)
        .ok_or(Error::UnknownAgent)
}

/// The string value of member `key` of the dictionary `field`.
fn dictionary_member(field: &str, key: &str) -> Option<String> {
    let dict: sfv::Dictionary = Parser::new(field).parse().ok()?;
    match dict.iter().find(|(k, _)| k.as_str() == key)?.1 {
        ListEntry::Item(item) => item.bare_item.as_string().map(|s| s.as_str().to_owned()),
        ListEntry::InnerList(_) => None,
    }
}

/// `keyid` in `agent`'s directory: the cached directory, refetched once per cooldown when it
/// lacks the key. `Ok(None)`: the directory does not hold it.
async fn directory_key(
    agent: &AgentKeys,
    keyid: &str,
    now_secs: u64,
) -> Result<Option<PublicKey>, Denial> {
    let unavailable = |error: KeysError| {
        static UNAVAILABLE: Every = Every::new();
        if let Some(skipped) = UNAVAILABLE.due(now_secs.saturating_mul(1000)) {
            let origin = &agent.config.origin;
            tracing::warn!(%error, %origin, skipped, "signature agent directory unavailable");
        }
        Denial::SignatureKeysUnavailable
    };
    let keys = agent.keys.current().await.map_err(unavailable)?;
    if let Some(key) = keys.get(keyid) {
        return Ok(Some(key.clone()));
    }
    let keys = agent
        .keys
        .refresh_for_unknown_kid(keyid)
        .await
        .map_err(unavailable)?;
    Ok(keys.get(keyid).cloned())
}

/// The request as the signer saw it: `@authority` and `@scheme` from trusted configuration
/// when set.
struct Signer<'r> {
    req: &'r RequestView,
    authority: &'r str,
    scheme: &'r str,
}

impl Message for Signer<'_> {
    fn method(&self) -> &str {
        &self.req.method
    }
    fn scheme(&self) -> &str {
        self.scheme
    }
    fn authority(&self) -> &str {
        self.authority
    }
    fn target(&self) -> &str {
        &self.req.raw_path
    }
    fn field_lines(&self, name: &str) -> Vec<&str> {
        self.req.field_lines(name)
    }
}

/// The `body` and `proof` stages' work: the digest against the exact body, then the signature.
pub(crate) fn verify(
    req: &RequestView,
    body: &[u8],
    signed: &Signed,
    policy: &Policy,
    config: &HttpSigConfig,
) -> Result<(), Denial> {
    let invalid = |e: Error| Denial::SignatureInvalid {
        reason: e.to_string(),
        accept: accept_signature(&required(req, policy), policy, config),
    };
    if signed.signature.covers("content-digest") {
        let field = req.field_lines("content-digest").join(", ");
        httpsig::digest::check(&field, body).map_err(invalid)?;
    }
    let view = Signer {
        req,
        authority: config.authority.as_deref().unwrap_or(&req.authority),
        scheme: match (&config.scheme, req.scheme.as_str()) {
            (Some(s), _) => s,
            (None, "") => "https",
            (None, s) => s,
        },
    };
    let base = httpsig::base(&view, &signed.signature).map_err(invalid)?;
    httpsig::verify(&signed.key, &signed.signature, &base).map_err(invalid)
}

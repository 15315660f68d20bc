//! The HTTP Message Signatures profile: the `token` stage chooses the signature the route
//! requires and its key and checks its times; the `body` and `proof` stages check
//! `Content-Digest` and the signature over the rebuilt base.

use crate::config::HttpSigConfig;
use crate::crypto::PublicKey;
use crate::denial::Denial;
use crate::httpsig::{self, Error, Message, Signature};
use crate::policy::Policy;
use crate::request::RequestView;

/// A signature chosen and checked up to its verification.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub(crate) signature: Signature,
    pub(crate) keyid: String,
    pub(crate) key: PublicKey,
    /// The key's configured name.
    pub(crate) name: String,
}

impl Signed {
    /// Whose nonces: one space per key.
    pub(crate) fn subject(&self) -> String {
        format!("httpsig|{}", self.keyid)
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
/// requires (and carries its tag), find its key, check its times and nonce.
pub(crate) fn select(
    req: &RequestView,
    policy: &Policy,
    config: &HttpSigConfig,
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
    let signature = signatures
        .into_iter()
        .find(|s| {
            required.iter().all(|c| s.covers(c)) && (tag.is_none() || s.tag.as_deref() == tag)
        })
        .ok_or_else(|| invalid(Error::NoAcceptableSignature))?;
    let keyid = signature.keyid.clone().unwrap_or_default();
    let known = config
        .keys
        .get(&keyid)
        .ok_or_else(|| invalid(Error::UnknownKey))?;
    if let Some(alg) = &signature.alg
        && alg != httpsig::alg_name(&known.key)
    {
        return Err(invalid(Error::Algorithm));
    }
    let now = i64::try_from(now_secs).unwrap_or(i64::MAX);
    let skew = i64::try_from(max_skew_secs).unwrap_or(i64::MAX);
    let max_age = i64::try_from(config.max_age.as_secs()).unwrap_or(i64::MAX);
    match (signature.created, signature.expires) {
        (None, _) => return Err(invalid(Error::Time("created is required"))),
        (Some(c), _) if c > now.saturating_add(skew) => {
            return Err(invalid(Error::Time("created is in the future")));
        }
        (Some(c), _) if now.saturating_sub(c) > max_age => {
            return Err(invalid(Error::Time(
                "created is older than the maximum age",
            )));
        }
        (_, Some(e)) if e <= now => return Err(invalid(Error::Time("the signature expired"))),
        _ => {}
    }
    match &signature.nonce {
        None if config.require_nonce => return Err(invalid(Error::MissingNonce)),
        Some(n) if n.is_empty() || n.len() > 256 || n.chars().any(char::is_control) => {
            return Err(invalid(Error::Malformed("nonce")));
        }
        _ => {}
    }
    Ok(Signed {
        keyid,
        key: known.key.clone(),
        name: known.name.clone(),
        signature,
    })
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

//! The bearer profile: `Authorization: Bearer <JWT>` (or `DPoP <JWT>` with a `DPoP` proof, RFC
//! 9449) from a configured issuer, its keys from the issuer's JWKS (its own endpoint and
//! breaker) through the same stale-while-revalidate cache and deadlines as the registry keys;
//! then the route's scopes, roles, permissions and trust score.

use std::sync::Arc;

use crate::cache::bearer::{BearerCache, Expect, VerifiedBearer};
use crate::cache::keys::{KeyCache, KeysError};
use crate::clock::Every;
use crate::config::{BearerIssuer, DpopConfig};
use crate::denial::Denial;
use crate::policy::Policy;
use crate::protocol::bearer::{self, BearerClaims, BearerError, BearerExpect};
use crate::protocol::dpop::{self, DpopError, DpopExpect, VerifiedDpop};
use crate::registry::jwks::Jwks;
use crate::request::RequestView;

/// One configured issuer and its key cache.
pub struct IssuerKeys {
    pub config: BearerIssuer,
    pub keys: Arc<KeyCache>,
    /// The JWKS endpoint behind its breaker (its state is a metric).
    pub jwks: Arc<Jwks>,
}

/// How an access token came (the `Authorization` scheme, case-insensitive as RFC 9110 §11.1
/// says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Bearer,
    /// A DPoP-bound token, with its proof in the `DPoP` header (RFC 9449 §7.1).
    Dpop,
}

impl Scheme {
    /// The scheme of the request's `Authorization`, when it is one of these.
    pub(crate) fn of(req: &RequestView) -> Option<Scheme> {
        let value = req.header("authorization")?;
        let name = value.split(char::is_whitespace).next()?;
        match name {
            n if n.eq_ignore_ascii_case("bearer") => Some(Scheme::Bearer),
            n if n.eq_ignore_ascii_case("dpop") => Some(Scheme::Dpop),
            _ => None,
        }
    }
}

/// The token of `Authorization: Bearer <token>` or `Authorization: DPoP <token>`.
pub(crate) fn token(req: &RequestView) -> Option<(Scheme, &str)> {
    let scheme = Scheme::of(req)?;
    let value = req.header("authorization")?;
    let rest = value.split_once(char::is_whitespace)?.1.trim_start();
    Some((scheme, rest)).filter(|(_, t)| !t.is_empty() && !t.contains(char::is_whitespace))
}

/// Verifies `token` (at most `max_len` bytes, checked before anything reads it) against the
/// keys of the issuer it names; `aud` must hold `resource` when the route is one, else the
/// issuer's audience. A token verified before answers from `tokens` while it still holds there.
pub(crate) async fn verify(
    token: &str,
    max_len: usize,
    (issuers, tokens): (&[IssuerKeys], &BearerCache),
    resource: Option<&str>,
    now_secs: u64,
) -> Result<Arc<VerifiedBearer>, Denial> {
    let refused = |e: BearerError| Denial::Bearer(e);
    if token.len() > max_len {
        return Err(refused(BearerError::Malformed("Bearer token is too large")));
    }
    let digest = tokens.digest(token);
    let cached = digest.as_ref().and_then(|d| tokens.entry(d));
    // A token not held is parsed once: its payload names the issuer, then gives the claims.
    let payload = match cached {
        Some(_) => None,
        None => bearer::Payload::peek(token),
    };
    let index = match &cached {
        Some(held) => Some(held.issuer()),
        None => {
            let iss = payload.as_ref().and_then(bearer::Payload::issuer);
            let named = |i: &IssuerKeys| Some(i.config.issuer.as_str()) == iss;
            issuers.iter().position(named)
        }
    };
    let (index, issuer) = index
        .and_then(|i| Some((i, issuers.get(i)?)))
        .ok_or(refused(BearerError::Issuer))?;
    let audience = resource.or(issuer.config.audience.as_deref());
    let audience = audience.ok_or(refused(BearerError::Audience))?;
    let max_skew_secs = issuer.config.max_iat_skew.as_secs();
    let expect = BearerExpect {
        issuer: &issuer.config.issuer,
        audience,
        now_secs,
        max_iat_skew_secs: max_skew_secs,
    };
    let unavailable = |error: KeysError| {
        static UNAVAILABLE: Every = Every::new();
        if let Some(skipped) = UNAVAILABLE.due(now_secs.saturating_mul(1000)) {
            let issuer = &issuer.config.issuer;
            tracing::warn!(%error, %issuer, skipped, "bearer issuer keys unavailable");
        }
        Denial::BearerKeysUnavailable
    };
    let keys = issuer.keys.current().await.map_err(unavailable)?;
    if let Some(held) = cached {
        let expect = Expect {
            keys: &keys,
            audience,
            now_secs,
            max_skew_secs,
        };
        if tokens.holds(&held, expect) {
            return Ok(held);
        }
    } else if digest.is_some() {
        tokens.counts.miss();
    }
    let payload = payload.as_ref();
    let (claims, keys) = match bearer::verify_peeked(token, payload, &keys, expect) {
        Err(e) if e.is_unknown_key() => {
            let kid = bearer::peek_kid(token).unwrap_or_default();
            let keys = issuer
                .keys
                .refresh_for_unknown_kid(&kid)
                .await
                .map_err(unavailable)?;
            let verified = bearer::verify_peeked(token, payload, &keys, expect);
            (verified.map_err(refused)?, keys)
        }
        other => (other.map_err(refused)?, keys),
    };
    let key = keys.get(&claims.kid).cloned();
    let key = key.ok_or(refused(BearerError::UnknownKey))?;
    let verified = VerifiedBearer::new(claims, index, key);
    Ok(tokens.insert(digest, verified, now_secs))
}

/// The scheme against the token's binding and the route: a DPoP-bound token (`cnf.jkt`) only
/// as `DPoP`, `DPoP` only with a bound token, and only `DPoP` where the route requires it.
pub(crate) fn check_binding(
    scheme: Scheme,
    claims: &BearerClaims,
    policy: &Policy,
) -> Result<(), Denial> {
    match (scheme, &claims.jkt) {
        (Scheme::Bearer, Some(_)) => Err(Denial::DpopRequired("DPoP-bound token sent as Bearer")),
        (Scheme::Bearer, None) if policy.require_dpop => Err(Denial::DpopRequired(
            "This resource requires a DPoP-bound token",
        )),
        (Scheme::Dpop, None) => Err(Denial::DpopRequired("Token is not DPoP-bound")),
        _ => Ok(()),
    }
}

/// The `DPoP` proof of a request whose token is bound to `jkt` (RFC 9449 §4.3 and §7.1):
/// exactly one `DPoP` field line holding one proof (Envoy joins repeated lines with a comma,
/// and a compact JWS never holds one), `htu` of the request's path under the scheme and
/// authority the client used, `ath` of `token`, and the server nonce when required.
///
/// The scheme and authority are trusted configuration where there is one: the route's
/// `resource`, else `dpop.scheme` and `dpop.authority`; only then the request's own (so a
/// `Host` chosen by the client cannot move a proof made for another server here).
pub(crate) fn prove(
    req: &RequestView,
    token: &str,
    jkt: &str,
    config: &DpopConfig,
    resource: Option<&str>,
    now_secs: u64,
) -> Result<VerifiedDpop, Denial> {
    let refused = |e| Denial::Dpop(e);
    let lines = req.field_lines("dpop");
    let proof = match (lines.len(), req.header("dpop")) {
        (0 | 1, Some(p)) if !p.contains(',') => p,
        (_, None) => return Err(refused(DpopError::Malformed("DPoP proof is required"))),
        _ => {
            return Err(refused(DpopError::Malformed(
                "Exactly one DPoP proof is allowed",
            )));
        }
    };
    let from_resource = resource
        .and_then(|r| r.split_once("://"))
        .map(|(scheme, rest)| (scheme, &rest[..rest.find('/').unwrap_or(rest.len())]));
    let (scheme, authority) = match from_resource {
        Some(trusted) => trusted,
        None => (
            config
                .scheme
                .as_deref()
                .unwrap_or(match req.scheme.as_str() {
                    "http" => "http",
                    _ => "https",
                }),
            config.authority.as_deref().unwrap_or(&req.authority),
        ),
    };
    if !is_authority(authority) {
        return Err(refused(DpopError::Malformed(
            "Request authority is invalid",
        )));
    }
    let path = req.raw_path.split(['?', '#']).next().unwrap_or("/");
    let htu = format!("{scheme}://{authority}{path}");
    let expect = DpopExpect {
        method: &req.method,
        htu: &htu,
        now_secs,
        iat_window_secs: config.iat_window.as_secs(),
        access_token: Some(token),
        jkt: Some(jkt),
    };
    let verified = dpop::verify(proof, expect).map_err(refused)?;
    if config.require_nonce
        && !verified
            .nonce
            .as_deref()
            .is_some_and(|n| config.nonces.accepts(n, now_secs))
    {
        let nonce = config.nonces.issue(now_secs);
        return Err(Denial::DpopNonceRequired { nonce });
    }
    Ok(verified)
}

/// The route's requirements: every scope (the tool's too, on MCP routes with `tool_scopes`),
/// every role, every permission, the minimum trust score.
pub(crate) fn authorize(
    req: &RequestView,
    claims: &BearerClaims,
    policy: &Policy,
) -> Result<(), Denial> {
    let missing = |required: &[String], held: &[String]| -> Vec<String> {
        required
            .iter()
            .filter(|r| !held.contains(r))
            .cloned()
            .collect()
    };
    let scopes = super::mcp::required_scopes(req, policy)?;
    if scopes
        .iter()
        .any(|s| !claims.scopes.iter().any(|held| held == s))
    {
        let scopes = scopes.into_iter().map(str::to_owned).collect();
        return Err(Denial::InsufficientScope(scopes));
    }
    let roles = missing(&policy.require_roles, &claims.roles);
    if !roles.is_empty() {
        return Err(Denial::MissingRoles(roles));
    }
    let permissions = missing(&policy.require_permissions, &claims.permissions);
    if !permissions.is_empty() {
        return Err(Denial::MissingPermissions(permissions));
    }
    match policy.min_trust_score {
        Some(required) if claims.trust_score.is_none_or(|s| s < required) => {
            Err(Denial::TrustScoreTooLow { required })
        }
        _ => Ok(()),
    }
}

/// A `host[:port]` that cannot change the meaning of the URI it is placed in.
pub(crate) fn is_authority(authority: &str) -> bool {
    !authority.is_empty()
        && authority.len() <= 255
        && !authority.contains(['/', '?', '#', '@', '\\'])
        && !authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
}

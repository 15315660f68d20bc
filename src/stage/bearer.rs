//! The bearer profile: `Authorization: Bearer <JWT>` from a configured issuer, its keys from the
//! issuer's JWKS (its own endpoint and breaker) through the same stale-while-revalidate cache
//! and deadlines as the registry keys; then the route's roles, permissions and trust score.

use std::sync::Arc;

use crate::cache::keys::{KeyCache, KeysError};
use crate::clock::Every;
use crate::config::BearerIssuer;
use crate::denial::Denial;
use crate::policy::Policy;
use crate::protocol::bearer::{self, BearerClaims, BearerError, BearerExpect};
use crate::registry::jwks::Jwks;
use crate::request::RequestView;

/// One configured issuer and its key cache.
pub struct IssuerKeys {
    pub config: BearerIssuer,
    pub keys: Arc<KeyCache>,
    /// The JWKS endpoint behind its breaker (its state is a metric).
    pub jwks: Arc<Jwks>,
}

/// The token of `Authorization: Bearer <token>`, if that is the scheme.
pub(crate) fn token(req: &RequestView) -> Option<&str> {
    let rest = req.header("authorization")?.strip_prefix("Bearer")?;
    let token = rest.strip_prefix(char::is_whitespace)?.trim_start();
    Some(token).filter(|t| !t.is_empty() && !t.contains(char::is_whitespace))
}

/// Verifies `token` (at most `max_len` bytes, checked before anything reads it) against the
/// keys of the issuer it names.
pub(crate) async fn verify(
    token: &str,
    max_len: usize,
    issuers: &[IssuerKeys],
    now_secs: u64,
) -> Result<BearerClaims, Denial> {
    let refused = |e: BearerError| Denial::Bearer(e);
    if token.len() > max_len {
        return Err(refused(BearerError::Malformed("Bearer token is too large")));
    }
    let iss = bearer::peek_issuer(token);
    let issuer = issuers
        .iter()
        .find(|i| Some(&i.config.issuer) == iss.as_ref())
        .ok_or(refused(BearerError::Issuer))?;
    let expect = BearerExpect {
        issuer: &issuer.config.issuer,
        audience: &issuer.config.audience,
        now_secs,
        max_iat_skew_secs: issuer.config.max_iat_skew.as_secs(),
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
    match bearer::verify(token, &keys, expect) {
        Err(e) if e.is_unknown_key() => {
            let kid = bearer::peek_kid(token).unwrap_or_default();
            let keys = issuer
                .keys
                .refresh_for_unknown_kid(&kid)
                .await
                .map_err(unavailable)?;
            bearer::verify(token, &keys, expect).map_err(refused)
        }
        other => other.map_err(refused),
    }
}

/// The route's requirements: every role, every permission, the minimum trust score.
pub(crate) fn authorize(claims: &BearerClaims, policy: &Policy) -> Result<(), Denial> {
    let missing = |required: &[String], held: &[String]| -> Vec<String> {
        required
            .iter()
            .filter(|r| !held.contains(r))
            .cloned()
            .collect()
    };
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

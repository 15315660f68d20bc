//! Revocation: pushed registry events, then the trust store's revoked agents, then the
//! registry's CRL by AIT `jti`.

use crate::cache::crl::{CrlCache, Listed, StaleBehavior};
use crate::cache::trust::TrustCache;
use crate::denial::Denial;
use crate::protocol::ait::AitClaims;
use crate::revocation::Events;

pub(crate) async fn check(
    events: &Events,
    trust: &TrustCache,
    crl: &CrlCache,
    claims: &AitClaims,
    now_ms: u64,
) -> Result<(), Denial> {
    if events.is_revoked(&claims.sub, now_ms) {
        return Err(Denial::AgentRevoked);
    }
    if events.is_token_revoked(&claims.jti, now_ms) {
        return Err(Denial::AitRevoked);
    }
    match trust.is_revoked(&claims.sub, now_ms).await {
        Ok(true) => return Err(Denial::AgentRevoked),
        Ok(false) => {}
        // Logged by the cache; with no answer to fall back on, the agent is not trusted.
        Err(_) => {
            return Err(Denial::TrustUnconfirmed {
                agent_did: claims.sub.clone(),
            });
        }
    }
    crl_verdict(crl.check(&claims.jti), crl.stale_behavior())
}

/// What the CRL's answer means: a stale list denies only where the operator chose
/// `crl.stale_behavior: fail-closed` (`docs/deviations.md` item 3); otherwise the last good list
/// decides.
pub(crate) fn crl_verdict(listed: Listed, behavior: StaleBehavior) -> Result<(), Denial> {
    match (listed.stale, behavior) {
        (true, StaleBehavior::FailClosed) => Err(Denial::CrlUnavailable),
        _ if listed.revoked => Err(Denial::AitRevoked),
        _ => Ok(()),
    }
}

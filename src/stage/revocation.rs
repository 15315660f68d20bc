//! Revocation: pushed registry events, then the trust store's revoked agents, then the
//! registry's CRL by AIT `jti`.

use crate::cache::crl::CrlCache;
use crate::cache::trust::TrustCache;
use crate::denial::Denial;
use crate::protocol::ait::AitClaims;
use crate::revocation::Events;

pub async fn check(
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
    crl.check(&claims.jti)
}

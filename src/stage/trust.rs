//! Known agent: the caller must be paired with at least one peer.

use crate::cache::trust::TrustCache;
use crate::denial::Denial;
use crate::protocol::ait::AitClaims;

pub(crate) async fn check_known(trust: &TrustCache, claims: &AitClaims) -> Result<(), Denial> {
    match trust.is_known(&claims.sub).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Denial::UnknownAgent {
            agent_did: claims.sub.clone(),
        }),
        // Logged by the cache; with no answer to fall back on, the agent is not trusted.
        Err(_) => Err(Denial::TrustUnconfirmed {
            agent_did: claims.sub.clone(),
        }),
    }
}

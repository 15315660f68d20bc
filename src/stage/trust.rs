//! Known agent: the caller must be paired with at least one peer.

use crate::denial::Denial;
use crate::protocol::ait::AitClaims;
use crate::store::trust::TrustStore;

pub async fn check_known(trust: &dyn TrustStore, claims: &AitClaims) -> Result<(), Denial> {
    match trust.is_known(&claims.sub).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Denial::UnknownAgent {
            agent_did: claims.sub.clone(),
        }),
        Err(error) => {
            tracing::error!(%error, "trust store failed on the known-agent check");
            Err(Denial::TrustStateUnavailable)
        }
    }
}

//! Revocation: the trust store's revoked-agent overlay (written by registry events), then the
//! registry's CRL by AIT `jti`.

use crate::denial::Denial;
use crate::protocol::ait::AitClaims;
use crate::registry::crl::CrlCache;
use crate::store::trust::TrustStore;

pub async fn check(
    trust: &dyn TrustStore,
    crl: &CrlCache,
    claims: &AitClaims,
    now_ms: u64,
) -> Result<(), Denial> {
    match trust.is_revoked(&claims.sub, now_ms).await {
        Ok(true) => return Err(Denial::AgentRevoked),
        Ok(false) => {}
        Err(error) => {
            tracing::error!(%error, "trust store failed on the revocation check");
            return Err(Denial::TrustStateUnavailable);
        }
    }
    crl.check(&claims.jti)
}

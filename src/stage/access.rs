//! Agent access-token validation: the header must be present; the registry (through the
//! validation cache) says 204 valid, 401 invalid, anything else means it cannot vouch right now.

use std::sync::Arc;

use crate::cache::access::{AccessCache, AccessError, Subject, Unavailable};
use crate::denial::{Denial, Detail};
use crate::protocol::ait::AitClaims;
use crate::request::RequestView;

pub(crate) async fn validate(
    req: &RequestView,
    cache: &Arc<AccessCache>,
    claims: &AitClaims,
) -> Result<(), Denial> {
    let token = req
        .header("x-claw-agent-access")
        .filter(|t| !t.is_empty())
        .ok_or(Denial::AccessTokenRequired)?;
    cache
        .validate(&Subject {
            access_token: token,
            agent_did: &claims.sub,
            ait_jti: &claims.jti,
            ait_exp_secs: claims.exp,
        })
        .await
        .map_err(|e| match e {
            AccessError::Invalid => Denial::AccessTokenInvalid,
            AccessError::Unavailable(Unavailable::Status(status)) => {
                Denial::AccessValidationUnavailable(Detail::Status(status))
            }
            AccessError::Unavailable(Unavailable::Transport(e)) => {
                Denial::AccessValidationUnavailable(Detail::Reason(e.reason().to_owned()))
            }
            AccessError::OverBudget { retry_after_secs } => {
                Denial::RateLimited { retry_after_secs }
            }
        })
}

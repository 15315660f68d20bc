//! Agent access-token validation with the registry: 204 valid, 401 invalid, anything else
//! (or no answer) means the registry cannot vouch right now.

use crate::denial::{Denial, Detail};
use crate::protocol::ait::AitClaims;
use crate::registry::Registry;
use crate::request::RequestView;

pub async fn validate(
    req: &RequestView,
    registry: &dyn Registry,
    claims: &AitClaims,
) -> Result<(), Denial> {
    let token = req
        .header("x-claw-agent-access")
        .filter(|t| !t.is_empty())
        .ok_or(Denial::AccessTokenRequired)?;
    match registry
        .validate_access(token, &claims.sub, &claims.jti)
        .await
    {
        Ok(204) => Ok(()),
        Ok(401) => Err(Denial::AccessTokenInvalid),
        Ok(status) => Err(Denial::AccessValidationUnavailable(Detail::Status(status))),
        Err(e) => Err(Denial::AccessValidationUnavailable(Detail::Reason(
            e.reason().to_owned(),
        ))),
    }
}

//! `Authorization: Claw <AIT>`, then the AIT against the registry keys.

use crate::denial::Denial;
use crate::protocol::ait::{AitClaims, verify_ait};
use crate::protocol::jws::{Expectations, TokenError};
use crate::registry::keys::KeyCache;
use crate::request::RequestView;

/// The token from `^Claw\s+(\S+)$` on the trimmed header; the scheme is case-sensitive.
pub fn authorization(req: &RequestView) -> Result<&str, Denial> {
    let value = req.header("authorization").unwrap_or("");
    if value.is_empty() {
        return Err(Denial::MissingToken);
    }
    let rest = value.strip_prefix("Claw").ok_or(Denial::InvalidScheme)?;
    if !rest.starts_with(char::is_whitespace) {
        return Err(Denial::InvalidScheme);
    }
    let token = rest.trim_start();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(Denial::InvalidScheme);
    }
    Ok(token)
}

/// Keys first (a keys outage is a 503 even for a garbage token), then the AIT; an unknown `kid`
/// refetches the keys (at most once per cooldown) and retries once.
pub async fn verify(
    token: &str,
    keys: &std::sync::Arc<KeyCache>,
    expect: Expectations<'_>,
) -> Result<AitClaims, Denial> {
    let key_set = keys.current().await?;
    let result = match verify_ait(token, &key_set, expect) {
        Err(TokenError::UnknownKid(_, kid)) => {
            verify_ait(token, &keys.refresh_for_unknown_kid(&kid).await?, expect)
        }
        other => other,
    };
    result.map_err(|e| Denial::InvalidAit(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(value: &str) -> Result<String, Denial> {
        let req = RequestView::new("GET", "/", &[("Authorization", value)], b"");
        authorization(&req).map(str::to_owned)
    }

    #[test]
    fn scheme_rules() {
        assert_eq!(auth("Claw abc"), Ok("abc".into()));
        assert_eq!(auth("  Claw \t abc  "), Ok("abc".into()));
        assert_eq!(auth(""), Err(Denial::MissingToken));
        assert_eq!(auth("   "), Err(Denial::MissingToken));
        assert_eq!(auth("Bearer abc"), Err(Denial::InvalidScheme));
        assert_eq!(auth("claw abc"), Err(Denial::InvalidScheme));
        assert_eq!(auth("Clawabc"), Err(Denial::InvalidScheme));
        assert_eq!(auth("Claw abc extra"), Err(Denial::InvalidScheme));
        assert_eq!(auth("Claw"), Err(Denial::InvalidScheme));
        let none = RequestView::new("GET", "/", &[], b"");
        assert_eq!(authorization(&none), Err(Denial::MissingToken));
    }
}

//! `Authorization: Claw <AIT>`, then the AIT against the registry keys.

use crate::denial::Denial;
use std::sync::Arc;

use crate::cache::ait::{AitCache, VerifiedAit};
use crate::cache::keys::{KeyCache, KeysError};
use crate::denial::Detail;
use crate::protocol::ait::verify_ait;
use crate::protocol::jws::{Expectations, TokenError, TokenKind, kid_of};
use crate::protocol::keys::KeysDocError;
use crate::request::RequestView;

/// The token from `^Claw\s+(\S+)$` on the trimmed header; the scheme is case-sensitive.
pub(crate) fn authorization(req: &RequestView) -> Result<&str, Denial> {
    let value = req.header("authorization").unwrap_or("");
    if value.is_empty() {
        return Err(Denial::MissingToken);
    }
    let rest = value.strip_prefix("Claw").ok_or(Denial::InvalidScheme)?;
    if !rest.starts_with(char::is_whitespace) {
        return Err(Denial::InvalidScheme);
    }
    let token = rest.trim_start();
    if token.is_empty() || has_whitespace(token) {
        return Err(Denial::InvalidScheme);
    }
    Ok(token)
}

/// Whether `s` holds any Unicode whitespace; an ASCII token (every real one) is scanned by bytes.
fn has_whitespace(s: &str) -> bool {
    match s.is_ascii() {
        true => s
            .bytes()
            .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r')),
        false => s.contains(char::is_whitespace),
    }
}

/// Keys first (a keys outage is a 503 even for a garbage token), then the AIT, refused unread
/// past `max_len` bytes (`limits.token_bytes`, `docs/deviations.md` item 15): from `cache` when
/// this token was verified before under the same registry key, otherwise verified here (an
/// unknown `kid` refetches the keys, at most once per cooldown, and retries once).
pub(crate) async fn verify(
    token: &str,
    max_len: usize,
    keys: &std::sync::Arc<KeyCache>,
    cache: &AitCache,
    expect: Expectations<'_>,
) -> Result<Arc<VerifiedAit>, Denial> {
    // Without keys held, a token with no readable `kid` never causes a fetch (issue 18): it
    // gets the answer the registry's keys being unavailable gives.
    if !keys.loaded() && kid_of(token, TokenKind::Ait).is_none() {
        return Err(Denial::KeysUnavailable(None));
    }
    let key_set = keys.current().await.map_err(keys_denial)?;
    if token.len() > max_len {
        return Err(Denial::InvalidAit(
            TokenError::Malformed("Token is too large").to_string(),
        ));
    }
    let digest = AitCache::digest(token);
    if let Some(hit) = cache.get(&digest, &key_set, expect.now_secs) {
        return Ok(hit);
    }
    let (claims, key_set) = match verify_ait(token, &key_set, expect) {
        Err(TokenError::UnknownKid(_, kid)) => {
            let refreshed = keys
                .refresh_for_unknown_kid(&kid)
                .await
                .map_err(keys_denial)?;
            (verify_ait(token, &refreshed, expect), refreshed)
        }
        other => (other, key_set),
    };
    let claims = claims.map_err(|e| Denial::InvalidAit(e.to_string()))?;
    let kid = kid_of(token, TokenKind::Ait).unwrap_or_default();
    let key = key_set
        .get(&kid)
        .cloned()
        .ok_or_else(|| Denial::InvalidAit("the verifying key is gone".into()))?;
    let verified = VerifiedAit::new(claims, kid, key);
    Ok(cache.insert(digest, verified, expect.now_secs))
}

/// The registry keys could not be had: 503 with what failed, or the document's own refusal.
pub(crate) fn keys_denial(e: KeysError) -> Denial {
    match e {
        KeysError::Transport(e) => Denial::KeysUnavailable(Some(Detail::Reason(e.reason().into()))),
        KeysError::Status(status) => Denial::KeysUnavailable(Some(Detail::Status(status))),
        KeysError::Document(KeysDocError::PayloadInvalid) => Denial::KeysPayloadInvalid,
        KeysError::Document(KeysDocError::Invalid) => Denial::KeysInvalid,
        KeysError::Document(KeysDocError::NoActiveKey) => Denial::KeysUnavailable(None),
    }
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

    #[test]
    fn every_unicode_whitespace_inside_a_token_is_refused() {
        for space in [
            '\u{0B}', '\u{0C}', '\u{85}', '\u{A0}', '\u{2028}', '\u{3000}',
        ] {
            let token = format!("Claw ab{space}cd");
            assert_eq!(auth(&token), Err(Denial::InvalidScheme), "{space:?}");
            assert_eq!(
                has_whitespace(&token[5..]),
                token[5..].contains(char::is_whitespace)
            );
        }
        assert_eq!(
            auth("Claw ab\u{E9}cd"),
            Ok("ab\u{E9}cd".into()),
            "not whitespace"
        );
    }

    /// Issue 18, finding 8: while no keys are held, a token without a readable `kid` is answered
    /// without any keys fetch.
    #[tokio::test]
    async fn a_malformed_token_never_causes_a_keys_fetch() {
        use crate::cache::keys::KeyTiming;
        use crate::clock::ManualClock;
        use crate::registry::fake::{FakeRegistry, status};
        let registry = Arc::new(FakeRegistry::default());
        registry.set_keys(vec![status(503)]);
        let timing = KeyTiming {
            ttl_ms: 3_600_000,
            max_stale_ms: 86_400_000,
            kid_miss_cooldown_ms: 30_000,
        };
        let clock = Arc::new(ManualClock::at(1_000_000));
        let keys = Arc::new(KeyCache::new(registry.clone(), clock, timing));
        let cache = AitCache::new(10);
        let expect = Expectations {
            issuer: None,
            now_secs: 1_000,
        };
        for garbage in ["x", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", ""] {
            let verified = verify(garbage, 8_192, &keys, &cache, expect).await;
            assert_eq!(
                verified.err(),
                Some(Denial::KeysUnavailable(None)),
                "{garbage:?}"
            );
        }
        assert_eq!(registry.calls().keys, 0);
    }
}

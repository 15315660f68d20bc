//! `httpsig`: the keys and rules of the HTTP Message Signatures profile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::fields::{Reader, yaml_text};
use crate::httpsig::keys::{self, Known};

/// The `httpsig` section.
#[derive(Debug, Clone)]
pub struct HttpSigConfig {
    /// Configured keys by `keyid` (their JWK thumbprint).
    pub keys: keys::KeySet,
    /// `@authority` as the signer saw it, when a proxy in front rewrites `Host`.
    pub authority: Option<String>,
    /// `@scheme` as the signer saw it (default: Envoy's, else `https`).
    pub scheme: Option<String>,
    /// A signature `created` longer ago than this is refused.
    pub max_age: Duration,
    /// Signatures without a `nonce` are refused (each nonce is then recorded: replays fail).
    pub require_nonce: bool,
}

impl HttpSigConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> HttpSigConfig {
        let r = r.section("httpsig");
        let allow_test_keys = r.bool("allow_test_keys", false);
        let keys = read_keys(r, allow_test_keys);
        let authority = r.opt_string("authority");
        let scheme = r.opt_string("scheme");
        if let Some(s) = &scheme
            && s != "http"
            && s != "https"
        {
            r.error("scheme", "must be http or https");
        }
        HttpSigConfig {
            keys: Arc::new(keys),
            authority,
            scheme,
            max_age: r.secs("max_age_secs", 300, 1, 86_400),
            require_nonce: r.bool("require_nonce", true),
        }
    }
}

fn read_keys(r: &mut Reader<'_>, allow_test_keys: bool) -> HashMap<String, Known> {
    let mut out = HashMap::new();
    let value = r.get("keys").cloned();
    r.note("keys", value.clone().unwrap_or(Value::Sequence(Vec::new())));
    let Some(value) = value else {
        return out;
    };
    let Value::Sequence(items) = value else {
        r.error("keys", "must be a list of public JWKs");
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("keys[{i}]");
        let Ok(mut jwk) = serde_json::to_value(item) else {
            r.error(&at, &format!("must be a JWK, got {}", yaml_text(item)));
            continue;
        };
        let name = match jwk.as_object_mut().map(|o| o.remove("name")) {
            Some(Some(serde_json::Value::String(n))) if !n.is_empty() => Some(n),
            Some(None) => None,
            _ => {
                r.error(
                    &at,
                    "must be a JWK (a mapping), with an optional string name",
                );
                continue;
            }
        };
        match keys::from_jwk(&jwk) {
            Ok(key) => {
                let keyid = keys::thumbprint(&key);
                if !allow_test_keys && keys::TEST_KEY_THUMBPRINTS.contains(&keyid.as_str()) {
                    r.error(
                        &at,
                        "is a published test key (RFC 9421); set httpsig.allow_test_keys to use it",
                    );
                    continue;
                }
                let name = name.unwrap_or_else(|| keyid.clone());
                out.insert(keyid, Known { key, name });
            }
            Err(problem) => r.error(&at, problem),
        }
    }
    out
}

//! The `registry`, `crl` and `access` sections: where the registry is and how its answers are
//! kept.

use std::time::Duration;

use serde_yaml_ng::Value;

use super::fields::Reader;
use crate::cache::crl::StaleBehavior;

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub url: String,
    /// The AIT/CRL issuer to accept (`docs/deviations.md` item 13); default: the registry origin.
    pub issuer: String,
    pub keys_url: String,
    pub crl_url: String,
    pub validate_url: String,
    /// Background calls (key and CRL refreshes) time out after this long.
    pub timeout: Duration,
    /// Calls on a Check's path time out after this long, or sooner at the Check's deadline.
    pub(crate) request_timeout: Duration,
    /// Consecutive failures that open an endpoint's circuit breaker.
    pub breaker_failures: u64,
    /// How long an open breaker refuses calls before one probe.
    pub(crate) breaker_open: Duration,
    pub(crate) keys_ttl: Duration,
    /// Past `keys_ttl`, cached keys are served (while refreshing) for up to this long.
    pub(crate) keys_max_stale: Duration,
    /// A token with an unknown `kid` refetches the keys at most once per this long.
    pub(crate) kid_miss_cooldown: Duration,
    /// Request-path registry calls end this long before Envoy's deadline for the Check.
    pub(crate) deadline_margin: Duration,
}

impl RegistryConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> Option<RegistryConfig> {
        let r = r.section("registry");
        let url = r.opt_string("url");
        if url.is_none() {
            r.error("url", "is required");
        }
        let origin = url.as_deref().and_then(|u| r.origin("url", u));
        let issuer = r.opt_string("issuer").or_else(|| origin.clone());
        if let Some(i) = &issuer
            && crate::protocol::ids::issuer_authority(i).is_none()
        {
            r.error("issuer", "must be an http(s) URL with a hostname");
        }
        // An explicit endpoint URL is checked on its own; a derived one is as good as `url`.
        let endpoint = |r: &mut Reader<'_>, key: &str, path: &str| match r.opt_string(key) {
            Some(explicit) => r.origin(key, &explicit).map(|_| explicit),
            None => origin
                .as_ref()
                .and(url.as_ref())
                .map(|u| format!("{}{path}", u.trim_end_matches('/'))),
        };
        let keys_url = endpoint(r, "keys_url", "/.well-known/claw-keys.json");
        let crl_url = endpoint(r, "crl_url", "/v1/crl");
        let validate_url = endpoint(r, "validate_url", "/v1/agents/auth/validate");
        // The access token and the signing keys travel in these calls: plain HTTP only when
        // asked for by name.
        // (An endpoint derived from `url` shares its error.)
        if !r.bool("insecure_http", false) {
            for key in ["url", "keys_url", "crl_url", "validate_url"] {
                let given = r.get(key).and_then(Value::as_str);
                if given.is_some_and(is_plain_http) {
                    r.error(key, PLAIN_HTTP);
                }
            }
        }
        // The effective values are the derived ones.
        let derived = [
            ("issuer", &issuer),
            ("keys_url", &keys_url),
            ("crl_url", &crl_url),
            ("validate_url", &validate_url),
        ];
        for (key, value) in derived {
            r.note(key, value.clone().map_or(Value::Null, Value::String));
        }
        // Key, default, then the range accepted.
        Some(RegistryConfig {
            timeout: r.millis("timeout_ms", 5_000, 1, 600_000),
            request_timeout: r.millis("request_timeout_ms", 1_000, 1, 60_000),
            breaker_failures: r.u64("breaker_failures", 5, 1, 1_000),
            breaker_open: r.secs("breaker_open_secs", 30, 1, 3_600),
            keys_ttl: r.secs("keys_ttl_secs", 3_600, 1, 86_400 * 7),
            keys_max_stale: r.secs("keys_max_stale_secs", 86_400, 0, 86_400 * 30),
            kid_miss_cooldown: r.secs("kid_miss_cooldown_secs", 30, 0, 3_600),
            deadline_margin: r.millis("deadline_margin_ms", 25, 0, 10_000),
            url: url?,
            issuer: issuer?,
            keys_url: keys_url?,
            crl_url: crl_url?,
            validate_url: validate_url?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct CrlConfig {
    pub(crate) refresh_interval: Duration,
    pub(crate) max_age: Duration,
    pub stale_behavior: StaleBehavior,
    /// The poll interval while pushed revocation events are flowing.
    pub(crate) push_refresh_interval: Duration,
}

impl CrlConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> CrlConfig {
        let r = r.section("crl");
        let words = ["fail-open", "fail-closed"];
        CrlConfig {
            refresh_interval: r.secs("refresh_interval_secs", 300, 1, 86_400),
            max_age: r.secs("max_age_secs", 900, 1, 86_400 * 7),
            stale_behavior: match r.choice("stale_behavior", "fail-open", &words) {
                Some("fail-closed") => StaleBehavior::FailClosed,
                _ => StaleBehavior::FailOpen,
            },
            push_refresh_interval: r.secs("push_refresh_interval_secs", 900, 1, 86_400),
        }
    }
}

/// Caching of the registry's access-token validation (`docs/deviations.md` item 4).
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub(crate) ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) stale_if_error: Duration,
    /// Registry validations one agent may cause per minute on the request path.
    pub(crate) calls_per_agent_per_minute: u64,
    /// Valid answers held, and as many refused ones and per-agent budgets.
    pub capacity: u64,
}

impl AccessConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> AccessConfig {
        let r = r.section("access");
        AccessConfig {
            ttl: r.secs("ttl_secs", 60, 0, 3_600),
            negative_ttl: r.secs("negative_ttl_secs", 10, 0, 3_600),
            stale_if_error: r.secs("stale_if_error_secs", 600, 0, 86_400),
            calls_per_agent_per_minute: r.u64("calls_per_agent_per_minute", 30, 1, 100_000),
            capacity: r.u64("capacity", 16_000, 1, 1 << 32),
        }
    }
}

/// The error for a plain `http://` URL where the secure scheme is required.
pub(super) const PLAIN_HTTP: &str = "is plain http (tokens and keys would travel unprotected): use https, or set insecure_http: \
     true beside it (a test or a loopback registry)";

pub(super) fn is_plain_http(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

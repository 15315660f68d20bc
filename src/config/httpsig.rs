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
    pub keys: keys::Configured,
    /// `@authority` as the signer saw it, when a proxy in front rewrites `Host`.
    pub authority: Option<String>,
    /// `@scheme` as the signer saw it (default: Envoy's, else `https`).
    pub scheme: Option<String>,
    /// A signature `created` longer ago than this is refused.
    pub max_age: Duration,
    /// Signatures without a `nonce` are refused (each nonce is then recorded: replays fail).
    pub require_nonce: bool,
    /// Web Bot Auth agents whose key directories may be fetched (`Signature-Agent` must name one).
    pub agents: Vec<AgentConfig>,
    /// Directories may resolve to private, loopback or link-local addresses (tests only).
    pub allow_private_addresses: bool,
}

/// One Web Bot Auth agent: its origin (what `Signature-Agent` names) and its key directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// `https://host[:port]`, lowercase, without a default port.
    pub origin: String,
    /// The directory URL (default: the origin's `/.well-known/http-message-signatures-directory`).
    pub directory: String,
    /// The name identity headers give it (default: the origin).
    pub name: String,
}

/// The most agents one configuration may list (each holds a key cache and a breaker).
const MAX_AGENTS: usize = 64;

/// The well-known path of a key directory (draft-meunier-http-message-signatures-directory).
pub const DIRECTORY_PATH: &str = "/.well-known/http-message-signatures-directory";

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
        let allow_private_addresses = r.bool("allow_private_addresses", false);
        let agents = read_agents(r, allow_private_addresses);
        HttpSigConfig {
            agents,
            allow_private_addresses,
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

fn read_agents(r: &mut Reader<'_>, allow_private: bool) -> Vec<AgentConfig> {
    let mut out: Vec<AgentConfig> = Vec::new();
    let value = r.get("agents").cloned();
    r.note(
        "agents",
        value.clone().unwrap_or(Value::Sequence(Vec::new())),
    );
    let Some(value) = value else {
        return out;
    };
    let Value::Sequence(items) = value else {
        r.error(
            "agents",
            "must be a list of {origin, directory?, name?, insecure_http?}",
        );
        return out;
    };
    if items.len() > MAX_AGENTS {
        r.error("agents", &format!("at most {MAX_AGENTS} agents"));
    }
    for (i, item) in items.iter().enumerate().take(MAX_AGENTS) {
        let at = format!("agents[{i}]");
        let Value::Mapping(m) = item else {
            r.error(&at, "must be a mapping");
            continue;
        };
        for k in m.keys() {
            let known = ["origin", "directory", "name", "insecure_http"];
            if !k.as_str().is_some_and(|k| known.contains(&k)) {
                r.error(&at, &format!("unknown key {}", yaml_text(k)));
            }
        }
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let insecure = m.get("insecure_http").and_then(Value::as_bool) == Some(true);
        let Some(origin) = text("origin").and_then(|o| origin_of(&o, insecure)) else {
            r.error(
                &format!("{at}.origin"),
                "must be an https:// origin (scheme and host only)",
            );
            continue;
        };
        let directory = text("directory").unwrap_or_else(|| format!("{origin}{DIRECTORY_PATH}"));
        match reqwest::Url::parse(&directory) {
            Ok(u) if u.scheme() == "https" || (insecure && u.scheme() == "http") => {
                if let Some(problem) = literal_address_problem(&u, allow_private) {
                    r.error(&format!("{at}.directory"), problem);
                    continue;
                }
            }
            _ => {
                r.error(&format!("{at}.directory"), "must be an https:// URL");
                continue;
            }
        }
        if out.iter().any(|a| a.origin == origin) {
            r.error(&format!("{at}.origin"), "is listed twice");
            continue;
        }
        let name = text("name").unwrap_or_else(|| origin.clone());
        out.push(AgentConfig {
            origin,
            directory,
            name,
        });
    }
    out
}

/// `scheme://host[:port]` of `text` when it is an origin (no path beyond `/`, no query,
/// fragment or credentials), lowercase and without the default port.
pub fn origin_of(text: &str, insecure_http: bool) -> Option<String> {
    let url = reqwest::Url::parse(text).ok()?;
    let scheme_ok = url.scheme() == "https" || (insecure_http && url.scheme() == "http");
    let bare = matches!(url.path(), "" | "/")
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !scheme_ok || !bare {
        return None;
    }
    Some(url.origin().ascii_serialization()).filter(|o| o != "null")
}

/// An IP-literal host that is not public, unless private addresses are allowed.
fn literal_address_problem(url: &reqwest::Url, allow_private: bool) -> Option<&'static str> {
    let host = url.host_str()?;
    let ip: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let public = crate::registry::directory::is_public(ip);
    (!public && !allow_private).then_some(
        "names a private, loopback or link-local address (allow_private_addresses is off)",
    )
}

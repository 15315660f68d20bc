//! The `routes` and `policies` sections.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::BearerIssuer;
use super::fields::{Reader, yaml_text};
use crate::policy::{Mode, PathMatch, Policy, Profile, Rule, reference_rules};

pub(super) fn read_routes(r: &mut Reader<'_>) -> Vec<Rule> {
    let Some(value) = r.get("routes") else {
        return reference_rules();
    };
    let Value::Sequence(items) = value else {
        r.error("routes", "must be a list of rules");
        return Vec::new();
    };
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("routes[{i}]");
        let Value::Mapping(m) = item else {
            r.error(&at, "must be a mapping");
            continue;
        };
        for k in m.keys() {
            let known = [
                "path",
                "prefix",
                "mode",
                "require_access_token",
                "require_known_agent",
            ];
            if !k.as_str().is_some_and(|k| known.contains(&k)) {
                r.error(&at, &format!("unknown key {}", yaml_text(k)));
            }
        }
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let path = match (text("path"), text("prefix")) {
            (Some(p), None) if p.starts_with('/') => Some(PathMatch::Exact(p)),
            (None, Some(p)) if p.starts_with('/') => Some(PathMatch::Prefix(p)),
            _ => {
                r.error(
                    &at,
                    "needs exactly one of `path` or `prefix`, starting with /",
                );
                None
            }
        };
        let mode = match m.get("mode") {
            None => None,
            Some(v) => {
                let mode = v.as_str().and_then(Mode::parse);
                if mode.is_none() {
                    r.error(&format!("{at}.mode"), "must be enforce, shadow or bypass");
                }
                mode
            }
        };
        let flag = |r: &mut Reader<'_>, k: &str| match m.get(k) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                r.error(&format!("{at}.{k}"), "must be true or false");
                None
            }
        };
        let require_access_token = flag(r, "require_access_token");
        let require_known_agent = flag(r, "require_known_agent");
        if let Some(path) = path {
            rules.push(Rule {
                path,
                mode,
                require_access_token,
                require_known_agent,
            });
        }
    }
    rules
}

pub(super) fn read_policies(r: &mut Reader<'_>) -> BTreeMap<String, Policy> {
    let mut out = BTreeMap::new();
    let Some(value) = r.get("policies") else {
        return out;
    };
    let Value::Mapping(m) = value else {
        r.error("policies", "must be a mapping of name to policy");
        return out;
    };
    for (name, body) in m {
        let Some(name) = name.as_str() else {
            r.error("policies", "names must be strings");
            continue;
        };
        let at = format!("policies.{name}");
        let Value::Mapping(body) = body else {
            r.error(&at, "must be a mapping");
            continue;
        };
        let mut policy = Policy::default_enforce();
        policy.name = name.to_owned();
        for (k, v) in body {
            match (k.as_str(), v) {
                (Some("mode"), v) => match v.as_str().and_then(Mode::parse) {
                    Some(mode) => policy.mode = mode,
                    None => r.error(&format!("{at}.mode"), "must be enforce, shadow or bypass"),
                },
                (Some("require_access_token"), Value::Bool(b)) => policy.require_access_token = *b,
                (Some("require_known_agent"), Value::Bool(b)) => policy.require_known_agent = *b,
                (Some(k @ ("require_access_token" | "require_known_agent")), _) => {
                    r.error(&format!("{at}.{k}"), "must be true or false")
                }
                (Some("profile"), v) => match v.as_str().and_then(Profile::parse) {
                    Some(p) => policy.profile = p,
                    None => r.error(
                        &format!("{at}.profile"),
                        "must be claw, bearer, httpsig or any",
                    ),
                },
                (Some(k @ ("require_roles" | "require_permissions")), v) => {
                    let list = v.as_sequence().and_then(|items| {
                        items
                            .iter()
                            .map(|i| i.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                    });
                    match (list, k) {
                        (Some(l), "require_roles") => policy.require_roles = l,
                        (Some(l), _) => policy.require_permissions = l,
                        (None, _) => r.error(&format!("{at}.{k}"), "must be a list of strings"),
                    }
                }
                (Some(k @ ("rate_limit" | "client_rate_limit")), v) => match read_limit(v) {
                    Some(l) if k == "rate_limit" => policy.agent_rate_limit = Some(l),
                    Some(l) => policy.client_rate_limit = Some(l),
                    None => r.error(
                        &format!("{at}.{k}"),
                        "must be {requests: N, window_secs: N, burst: N (optional)} with N from 1",
                    ),
                },
                (Some("signature_components"), v) => {
                    let list = v.as_sequence().and_then(|items| {
                        items
                            .iter()
                            .map(|i| i.as_str().and_then(crate::httpsig::component_id))
                            .collect::<Option<Vec<_>>>()
                    });
                    match list {
                        Some(l) if l.len() <= crate::httpsig::MAX_COMPONENTS => {
                            policy.signature_components = Some(l)
                        }
                        _ => r.error(
                            &format!("{at}.signature_components"),
                            "must be a list of component names (\"@method\", \"content-digest\", ...)",
                        ),
                    }
                }
                (Some("signature_tag"), v) => match v.as_str() {
                    Some(t) if !t.is_empty() && t.len() <= 128 => {
                        policy.signature_tag = Some(t.to_owned())
                    }
                    _ => r.error(&format!("{at}.signature_tag"), "must be a string"),
                },
                (Some("require_dpop"), Value::Bool(b)) => policy.require_dpop = *b,
                (Some("require_dpop"), _) => {
                    r.error(&format!("{at}.require_dpop"), "must be true or false")
                }
                (Some("resource"), v) => match v.as_str() {
                    Some(uri) if crate::policy::is_canonical_resource(uri) => {
                        policy.resource = Some(uri.to_owned())
                    }
                    _ => r.error(
                        &format!("{at}.resource"),
                        "must be the canonical http(s) URI of the resource (lowercase scheme and host, no query or fragment)",
                    ),
                },
                (Some(k @ ("authorization_servers" | "scopes_supported" | "required_scopes")), v) => {
                    let token = |s: &str| {
                        !s.is_empty() && !s.contains([' ', ',', '"', '\\']) && !s.chars().any(char::is_control)
                    };
                    let list = v.as_sequence().and_then(|items| {
                        items
                            .iter()
                            .map(|i| i.as_str().filter(|s| token(s)).map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                    });
                    match (list, k) {
                        (Some(l), "authorization_servers") => policy.authorization_servers = l,
                        (Some(l), "scopes_supported") => policy.scopes_supported = l,
                        (Some(l), _) => policy.required_scopes = l,
                        (None, _) => r.error(
                            &format!("{at}.{k}"),
                            "must be a list of strings without spaces, commas or quotes",
                        ),
                    }
                }
                (Some("tool_scopes"), v) => {
                    let token = |s: &str| {
                        !s.is_empty()
                            && !s.contains([' ', ',', '"', '\\'])
                            && !s.chars().any(char::is_control)
                    };
                    let map = v.as_mapping().and_then(|m| {
                        m.iter()
                            .map(|(tool, scopes)| {
                                let tool = tool.as_str().filter(|t| !t.is_empty())?.to_owned();
                                let scopes = scopes.as_sequence()?.iter().map(|s| {
                                    s.as_str().filter(|s| token(s)).map(str::to_owned)
                                });
                                Some((tool, scopes.collect::<Option<Vec<_>>>()?))
                            })
                            .collect::<Option<BTreeMap<_, _>>>()
                    });
                    match map {
                        Some(m) => policy.tool_scopes = m,
                        None => r.error(
                            &format!("{at}.tool_scopes"),
                            "must map tool names to lists of scopes",
                        ),
                    }
                }
                (Some("min_trust_score"), v) => match v.as_f64().filter(|f| f.is_finite()) {
                    Some(f) => policy.min_trust_score = Some(f),
                    None => r.error(&format!("{at}.min_trust_score"), "must be a number"),
                },
                (other, _) => r.error(&at, &format!("unknown key {}", other.unwrap_or("?"))),
            }
        }
        let mcp = !policy.authorization_servers.is_empty() || !policy.scopes_supported.is_empty();
        if mcp && policy.resource.is_none() {
            r.error(
                &at,
                "authorization_servers and scopes_supported describe a resource: set resource",
            );
        }
        let oauth_only = policy.resource.is_some()
            || policy.require_dpop
            || !policy.required_scopes.is_empty()
            || !policy.tool_scopes.is_empty();
        if oauth_only && policy.profile != Profile::Bearer {
            // Other credentials carry no audience, scopes or DPoP binding: on `any` they would
            // pass these checks by not being checked.
            r.error(
                &at,
                "resource, require_dpop, required_scopes and tool_scopes need profile: bearer",
            );
        }
        if policy.resource.is_some() && policy.authorization_servers.is_empty() {
            r.error(
                &format!("{at}.authorization_servers"),
                "is required with resource (RFC 9728: clients discover the authorization server there)",
            );
        }
        out.insert(name.to_owned(), policy);
    }
    out
}

/// `bearer.issuers`: the issuers whose JWTs the bearer profile accepts.
pub(super) fn read_bearer(r: &mut Reader<'_>) -> Vec<BearerIssuer> {
    let mut out = Vec::new();
    let Some(value) = r.get("bearer.issuers") else {
        return out;
    };
    let Value::Sequence(items) = value else {
        r.error("bearer.issuers", "must be a list");
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("bearer.issuers[{i}]");
        let Value::Mapping(m) = item else {
            r.error(&at, "must be a mapping");
            continue;
        };
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        for k in m.keys() {
            let known = [
                "issuer",
                "audience",
                "jwks_url",
                "max_iat_skew_secs",
                "insecure_http",
            ];
            if !k.as_str().is_some_and(|k| known.contains(&k)) {
                r.error(&at, &format!("unknown key {}", yaml_text(k)));
            }
        }
        let skew = match m.get("max_iat_skew_secs") {
            None => Some(60),
            Some(v) => v.as_u64().filter(|s| *s <= 3_600),
        };
        let jwks_ok =
            text("jwks_url").is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"));
        let insecure = m.get("insecure_http").and_then(Value::as_bool) == Some(true);
        if !insecure && text("jwks_url").is_some_and(|u| super::registry::is_plain_http(&u)) {
            r.error(&format!("{at}.jwks_url"), super::registry::PLAIN_HTTP);
        }
        let audience = text("audience");
        if m.contains_key("audience") && audience.as_deref().is_none_or(str::is_empty) {
            r.error(&format!("{at}.audience"), "must be a non-empty string");
        }
        match (text("issuer"), text("jwks_url"), skew) {
            (Some(issuer), Some(jwks_url), Some(skew)) if jwks_ok => out.push(BearerIssuer {
                issuer,
                audience,
                jwks_url,
                max_iat_skew: std::time::Duration::from_secs(skew),
            }),
            _ => r.error(
                &at,
                "needs issuer, an http(s) jwks_url, and max_iat_skew_secs from 0 to 3600",
            ),
        }
    }
    out
}

/// `{requests: 60, window_secs: 60, burst: 60}` (burst defaults to requests).
fn read_limit(v: &Value) -> Option<crate::ratelimit::Limit> {
    let Value::Mapping(m) = v else { return None };
    let n = |k: &str| {
        m.get(k)
            .map(|v| v.as_u64().filter(|n| (1..=1_000_000).contains(n)))
    };
    if m.keys()
        .any(|k| !matches!(k.as_str(), Some("requests" | "window_secs" | "burst")))
    {
        return None;
    }
    let requests = n("requests")??;
    let window_secs = n("window_secs")??;
    let burst = match n("burst") {
        None => requests,
        Some(b) => b?,
    };
    Some(crate::ratelimit::Limit {
        requests,
        window_ms: window_secs * 1000,
        burst,
    })
}

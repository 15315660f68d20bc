//! Route policies: which checks a request gets, chosen by the path the upstream will route on.
//!
//! Rules are ordered; each names an exact path or a prefix and sets any of `mode`,
//! `require_access_token`, `require_known_agent`. The first rule that matches the route path
//! exactly decides. Following `docs/deviations.md` item 14, the trailing-slash variant of the path
//! (`/hooks/message/` for `/hooks/message`, and back) can only add checks: rules matching it
//! contribute their stricter settings, never their exemptions. A route may instead name a policy
//! through Envoy's per-route `context_extensions` (key `claw_policy`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ratelimit::Limit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Shadow,
    Bypass,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
            Mode::Bypass => "bypass",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Mode> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "shadow" => Some(Mode::Shadow),
            "bypass" => Some(Mode::Bypass),
            _ => None,
        }
    }
}

/// Which credentials a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// `Authorization: Claw <AIT>` with its proof (the reference's only profile).
    Claw,
    /// `Authorization: Bearer <JWT>` from a configured issuer.
    Bearer,
    /// An HTTP Message Signature (RFC 9421) by a configured key.
    #[serde(rename = "httpsig")]
    HttpSig,
    /// A bearer token when there is one, else a message signature when there is one, else Claw.
    Any,
}

impl Profile {
    pub(crate) fn parse(s: &str) -> Option<Profile> {
        match s {
            "claw" => Some(Profile::Claw),
            "bearer" => Some(Profile::Bearer),
            "httpsig" => Some(Profile::HttpSig),
            "any" => Some(Profile::Any),
            _ => None,
        }
    }
}

/// The checks one request gets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// The rule or named policy that chose this (for logs and metadata).
    pub name: String,
    pub mode: Mode,
    pub require_access_token: bool,
    pub require_known_agent: bool,
    pub profile: Profile,
    /// Bearer tokens must carry every one of these roles...
    pub require_roles: Vec<String>,
    /// ...and every one of these permissions...
    pub require_permissions: Vec<String>,
    /// ...and at least this `trustScore`.
    pub min_trust_score: Option<f64>,
    /// Per verified agent, after authentication (before the access-token call).
    pub(crate) agent_rate_limit: Option<Limit>,
    /// Per client address, before any signature work.
    pub client_rate_limit: Option<Limit>,
    /// HTTP Message Signatures: the components a signature must cover (`None`: `@method`,
    /// `@authority`, `@path`, and `@query` when the request has a query); `content-digest` is
    /// required whenever the request has a body.
    pub signature_components: Option<Vec<String>>,
    /// ...and the `tag` it must carry.
    pub signature_tag: Option<String>,
    /// Bearer tokens must come as `DPoP` with a proof (RFC 9449); `Bearer` is refused.
    pub require_dpop: bool,
    /// An OAuth protected resource (RFC 9728, the MCP authorization spec): its canonical URI,
    /// which bearer tokens must carry in `aud` (RFC 8707).
    pub resource: Option<String>,
    /// The authorization servers its metadata document names.
    pub authorization_servers: Vec<String>,
    /// The scopes its metadata document lists.
    pub scopes_supported: Vec<String>,
    /// Bearer tokens must hold every one of these scopes (403 `insufficient_scope`).
    pub required_scopes: Vec<String>,
    /// ...and for a `tools/call` of one of these tools, its scopes too (`stage/mcp.rs`).
    pub tool_scopes: BTreeMap<String, Vec<String>>,
}

impl Policy {
    pub(crate) fn default_enforce() -> Self {
        Policy {
            name: "default".into(),
            mode: Mode::Enforce,
            require_access_token: false,
            require_known_agent: true,
            profile: Profile::Claw,
            require_roles: Vec::new(),
            require_permissions: Vec::new(),
            min_trust_score: None,
            agent_rate_limit: None,
            client_rate_limit: None,
            signature_components: None,
            signature_tag: None,
            require_dpop: false,
            resource: None,
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            required_scopes: Vec::new(),
            tool_scopes: BTreeMap::new(),
        }
    }

    /// Where the resource's metadata document is (RFC 9728 §3.1): the well-known path inserted
    /// between the resource's authority and its path.
    pub fn resource_metadata_url(&self) -> Option<String> {
        let resource = self.resource.as_deref()?;
        let (scheme, rest) = resource.split_once("://")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = path.trim_end_matches('/');
        Some(format!(
            "{scheme}://{authority}/.well-known/oauth-protected-resource{path}"
        ))
    }
}

/// A canonical resource URI (RFC 8707 §2, the MCP authorization spec): `http` or `https`,
/// lowercase scheme and host, no query, fragment or user info.
pub(crate) fn is_canonical_resource(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return false;
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && !authority.contains('@')
        && !authority.bytes().any(|b| b.is_ascii_uppercase())
        && !uri.contains(['?', '#'])
        && !uri
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// One configured rule; `None` settings leave the default in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    #[serde(rename = "match")]
    pub path: PathMatch,
    pub mode: Option<Mode>,
    pub require_access_token: Option<bool>,
    pub require_known_agent: Option<bool>,
}

impl Rule {
    fn name(&self) -> String {
        match &self.path {
            PathMatch::Exact(p) => p.clone(),
            PathMatch::Prefix(p) => format!("{p}*"),
        }
    }
}

/// The reference proxy's behaviour, as rules.
pub(crate) fn reference_rules() -> Vec<Rule> {
    let exact = |p: &str| PathMatch::Exact(p.to_owned());
    let rule = |p: &str, mode, access, known| Rule {
        path: exact(p),
        mode,
        require_access_token: access,
        require_known_agent: known,
    };
    vec![
        rule("/health", Some(Mode::Bypass), None, None),
        rule("/hooks/message", None, Some(true), None),
        rule("/v1/relay/connect", None, Some(true), Some(false)),
        rule("/v1/relay/delivery-receipts", None, Some(true), None),
        rule("/pair/start", None, None, Some(false)),
        rule("/pair/confirm", None, None, Some(false)),
        rule("/pair/status", None, None, Some(false)),
    ]
}

pub(crate) const CONTEXT_EXTENSION_KEY: &str = "claw_policy";

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoutePolicies {
    pub rules: Vec<Rule>,
    pub named: BTreeMap<String, Policy>,
}

/// What a route selects: a policy, or a name that is not configured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Selected {
    Policy(Box<Policy>),
    UnknownName(String),
}

impl RoutePolicies {
    pub(crate) fn select(
        &self,
        route_path: &str,
        context_extensions: &std::collections::HashMap<String, String>,
    ) -> Selected {
        if let Some(name) = context_extensions.get(CONTEXT_EXTENSION_KEY) {
            return match self.named.get(name) {
                Some(p) => Selected::Policy(Box::new(p.clone())),
                None => Selected::UnknownName(name.clone()),
            };
        }
        Selected::Policy(Box::new(self.for_path(route_path)))
    }

    pub(crate) fn for_path(&self, path: &str) -> Policy {
        let mut policy = Policy::default_enforce();
        if let Some(rule) = self.rules.iter().find(|r| r.path.matches(path)) {
            policy.name = rule.name();
            policy.mode = rule.mode.unwrap_or(policy.mode);
            policy.require_access_token = rule.require_access_token.unwrap_or(false);
            policy.require_known_agent = rule.require_known_agent.unwrap_or(true);
        }
        let variant = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p.to_owned(),
            Some(_) => return policy,
            None => format!("{path}/"),
        };
        for rule in self.rules.iter().filter(|r| r.path.matches(&variant)) {
            if rule.mode == Some(Mode::Enforce) {
                policy.mode = Mode::Enforce;
            }
            policy.require_access_token |= rule.require_access_token == Some(true);
            policy.require_known_agent |= rule.require_known_agent == Some(true);
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> RoutePolicies {
        RoutePolicies {
            rules: reference_rules(),
            named: BTreeMap::new(),
        }
    }

    #[test]
    fn reference_defaults() {
        let p = reference();
        assert_eq!(p.for_path("/health").mode, Mode::Bypass);
        assert_eq!(p.for_path("/health/").mode, Mode::Enforce);
        let hook = p.for_path("/hooks/message");
        assert!(hook.require_access_token && hook.require_known_agent);
        let relay = p.for_path("/v1/relay/connect");
        assert!(relay.require_access_token && !relay.require_known_agent);
        assert!(!p.for_path("/pair/start").require_known_agent);
        let other = p.for_path("/anything");
        assert!(!other.require_access_token && other.require_known_agent);
    }

    #[test]
    fn trailing_slash_variant_adds_checks_but_never_exemptions() {
        let p = reference();
        // The access token still applies to /hooks/message/ (the reference skips it there).
        assert!(p.for_path("/hooks/message/").require_access_token);
        // The known-agent exemption does not extend to /pair/start/.
        assert!(p.for_path("/pair/start/").require_known_agent);
        // ...but the access token of /v1/relay/connect does extend to its variant.
        let relay = p.for_path("/v1/relay/connect/");
        assert!(relay.require_access_token && relay.require_known_agent);
    }

    #[test]
    fn context_extension_selects_a_named_policy() {
        let mut p = reference();
        let mut shadow = Policy::default_enforce();
        shadow.name = "canary".into();
        shadow.mode = Mode::Shadow;
        p.named.insert("canary".into(), shadow.clone());
        let ext = |v: &str| [(CONTEXT_EXTENSION_KEY.to_owned(), v.to_owned())].into();
        assert_eq!(
            p.select("/x", &ext("canary")),
            Selected::Policy(Box::new(shadow))
        );
        assert_eq!(
            p.select("/x", &ext("nope")),
            Selected::UnknownName("nope".into())
        );
    }
}

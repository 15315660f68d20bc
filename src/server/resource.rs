//! OAuth protected-resource metadata (RFC 9728) for the routes that are resources: the
//! document an MCP client fetches from the `resource_metadata` URL of a 401 challenge, served
//! on the admin listener at the well-known path (Envoy routes that path here, see
//! `envoy/README.md`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};

use crate::app::App;
use crate::policy::Policy;
use crate::protocol::dpop;

/// The well-known path (RFC 9728 §3).
pub(crate) const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata document of one resource, from the routes (policies) that guard it: their
/// authorization servers and scopes, in order without repeats, and DPoP-bound tokens required
/// only when every one of them requires them.
pub(crate) fn document(policies: &[&Policy]) -> serde_json::Value {
    let union = |list: fn(&Policy) -> &Vec<String>| {
        let mut out: Vec<&str> = Vec::new();
        for item in policies.iter().flat_map(|p| list(p)) {
            if !out.contains(&item.as_str()) {
                out.push(item);
            }
        }
        out
    };
    let mut doc = serde_json::json!({
        "resource": policies.first().and_then(|p| p.resource.as_deref()),
        "authorization_servers": union(|p| &p.authorization_servers),
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": dpop::ALGORITHMS.split(' ').collect::<Vec<_>>(),
    });
    let scopes = union(|p| &p.scopes_supported);
    if !scopes.is_empty() {
        doc["scopes_supported"] = serde_json::json!(scopes);
    }
    if policies.iter().all(|p| p.require_dpop) {
        doc["dpop_bound_access_tokens_required"] = serde_json::json!(true);
    }
    doc
}

/// The policies of the resource whose metadata URL has this path. Resources on different
/// hosts may share a path: the `Host` then picks one.
fn find<'a>(policies: impl Iterator<Item = &'a Policy>, path: &str, host: &str) -> Vec<&'a Policy> {
    let found: Vec<(&str, &Policy)> = policies
        .filter_map(|p| {
            let resource = p.resource.as_deref()?;
            let url = p.resource_metadata_url()?;
            let rest = url.split_once("://")?.1;
            let url_path = &rest[rest.find('/')?..];
            (url_path == path).then_some((resource, p))
        })
        .collect();
    let resource = match found.first() {
        Some((r, _)) if found.iter().all(|(other, _)| other == r) => *r,
        _ => match found
            .iter()
            .find(|(r, _)| authority(r).eq_ignore_ascii_case(host))
        {
            Some((r, _)) => *r,
            None => return Vec::new(),
        },
    };
    found
        .into_iter()
        .filter(|(r, _)| *r == resource)
        .map(|(_, p)| p)
        .collect()
}

fn authority(resource: &str) -> &str {
    let rest = resource.split_once("://").map_or(resource, |(_, r)| r);
    &rest[..rest.find('/').unwrap_or(rest.len())]
}

/// `GET /.well-known/oauth-protected-resource[/path]`: the document, or 404.
pub(super) async fn metadata(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
) -> (StatusCode, HeaderMap, Json<serde_json::Value>) {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let policies = app.pipeline.settings.policies.named.values();
    let mut out = HeaderMap::new();
    // Clients in browsers fetch it across origins (the MCP authorization spec).
    out.insert(
        "access-control-allow-origin",
        "*".parse().expect("a header value"),
    );
    match find(policies, uri.path(), host) {
        found if !found.is_empty() => {
            out.insert(
                "cache-control",
                "max-age=300".parse().expect("a header value"),
            );
            (StatusCode::OK, out, Json(document(&found)))
        }
        _ => {
            let error = serde_json::json!({ "error": "no protected resource at this path" });
            (StatusCode::NOT_FOUND, out, Json(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str, uri: &str) -> Policy {
        let mut p = Policy::default_enforce();
        p.name = name.into();
        p.resource = Some(uri.into());
        p.authorization_servers = vec!["https://auth.example".into()];
        p
    }

    /// RFC 9728 §3.1's examples: the well-known path goes between authority and path.
    #[test]
    fn the_metadata_url_inserts_the_well_known_path() {
        let url = |uri| resource("p", uri).resource_metadata_url().unwrap();
        assert_eq!(
            url("https://resource.example.com"),
            "https://resource.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            url("https://resource.example.com/resource1"),
            "https://resource.example.com/.well-known/oauth-protected-resource/resource1"
        );
        assert_eq!(
            url("http://127.0.0.1:8080/mcp/"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"
        );
    }

    #[test]
    fn the_path_and_then_the_host_pick_the_resource() {
        let list = [
            resource("a", "https://a.example/mcp"),
            resource("b", "https://b.example/mcp"),
            resource("c", "https://a.example/other"),
        ];
        let pick = |path, host| -> Vec<&str> {
            find(list.iter(), path, host)
                .iter()
                .map(|p| p.name.as_str())
                .collect()
        };
        assert_eq!(
            pick("/.well-known/oauth-protected-resource/other", "x"),
            ["c"]
        );
        assert_eq!(
            pick("/.well-known/oauth-protected-resource/mcp", "b.example"),
            ["b"]
        );
        assert!(pick("/.well-known/oauth-protected-resource/mcp", "x.example").is_empty());
        assert!(pick("/.well-known/oauth-protected-resource", "a.example").is_empty());
    }

    #[test]
    fn routes_of_one_resource_share_one_document() {
        let mut strict = resource("strict", "https://a.example/mcp");
        strict.require_dpop = true;
        strict.scopes_supported = vec!["admin".into()];
        let mut open = resource("open", "https://a.example/mcp");
        open.scopes_supported = vec!["read".into(), "admin".into()];
        open.authorization_servers
            .push("https://other-as.example".into());
        let doc = document(&[&strict, &open]);
        assert_eq!(
            doc["scopes_supported"],
            serde_json::json!(["admin", "read"])
        );
        assert_eq!(
            doc["authorization_servers"],
            serde_json::json!(["https://auth.example", "https://other-as.example"])
        );
        assert_eq!(doc.get("dpop_bound_access_tokens_required"), None);
        let doc = document(&[&strict]);
        assert_eq!(
            doc["dpop_bound_access_tokens_required"],
            serde_json::json!(true)
        );
    }
}

//! Per-tool scopes on MCP routes: the JSON-RPC method and tool of a request, from the
//! `Mcp-Method` and `Mcp-Name` headers the Streamable HTTP transport sets (MCP SEP-2243) and
//! from the body, which Envoy must forward; the two must agree, so a scope cannot be dodged by a
//! header that names another tool than the body calls.
//!
//! The body is read so that no MCP server can read it differently: repeated members are
//! refused, and so are members of the message or its `params` that a case-insensitive decoder
//! (Go's `encoding/json`) would take for `method`, `name` or `uri` (CVE-2026-27896).

use crate::denial::Denial;
use crate::policy::Policy;
use crate::protocol::json::{Json, Object};
use crate::request::RequestView;

/// The method whose `Mcp-Name` is a tool name.
const TOOLS_CALL: &str = "tools/call";

/// The scopes this request needs: the route's `required_scopes`, and on routes with
/// `tool_scopes`, those of the tool a `tools/call` names.
pub(crate) fn required_scopes<'p>(
    req: &RequestView,
    policy: &'p Policy,
) -> Result<Vec<&'p str>, Denial> {
    let mut scopes: Vec<&str> = policy.required_scopes.iter().map(String::as_str).collect();
    if policy.tool_scopes.is_empty() {
        return Ok(scopes);
    }
    let (method, name) = call(req)?;
    if method.as_deref() == Some(TOOLS_CALL)
        && let Some(tool) = name.as_deref().and_then(|n| policy.tool_scopes.get(n))
    {
        for scope in tool {
            if !scopes.contains(&scope.as_str()) {
                scopes.push(scope);
            }
        }
    }
    Ok(scopes)
}

/// The method and name of the call, from the headers and the body, which must agree.
fn call(req: &RequestView) -> Result<(Option<String>, Option<String>), Denial> {
    let mismatch = Denial::McpMismatch;
    let header_method = req.header("mcp-method").map(str::to_owned);
    let header_name = match req.header("mcp-name") {
        Some(value) => Some(decode_name(value).ok_or(mismatch("Mcp-Name is not a valid value"))?),
        None => None,
    };
    let body = match req.has_body() {
        true => req.full_body()?,
        false => &[][..],
    };
    if body.is_empty() {
        // A POST always carries its JSON-RPC message: an empty one was not forwarded (an
        // HTTP/2 request announces no length), and the headers alone cannot be trusted.
        if req.method == "POST" {
            return Err(Denial::BodyNotForwarded);
        }
        return Ok((header_method, header_name));
    }
    let not_one = "The body of an MCP request must be one JSON-RPC message";
    let message = Json::parse_standard(body).map_err(|_| mismatch(not_one))?;
    let message = message.as_object().ok_or(mismatch(not_one))?;
    let params = message.get("params").and_then(Json::as_object);
    if ambiguous(message, &["jsonrpc", "id", "method", "params"])
        || params.is_some_and(|p| ambiguous(p, &["name", "uri"]))
    {
        return Err(mismatch(
            "The JSON-RPC message has members a server could read differently",
        ));
    }
    let body_method = message.get("method").and_then(Json::as_str);
    let body_name = params
        .and_then(|p| p.get("name").or_else(|| p.get("uri")))
        .and_then(Json::as_str);
    if header_method.is_some() && header_method.as_deref() != body_method {
        return Err(mismatch("Mcp-Method does not match the body's method"));
    }
    if header_name.is_some() && header_name.as_deref() != body_name {
        return Err(mismatch(
            "Mcp-Name does not match the body's tool or resource",
        ));
    }
    Ok((body_method.map(str::to_owned), body_name.map(str::to_owned)))
}

/// Whether `object` has a member that is not one of `names` but a case-insensitive or
/// Unicode-folding decoder could take for one: the same letters in another case, or any
/// non-ASCII name (Go folds `ſ` to `s` and the Kelvin sign to `k`).
fn ambiguous(object: &Object, names: &[&str]) -> bool {
    object.names().any(|member| {
        !names.contains(&member)
            && (!member.is_ascii() || names.iter().any(|n| n.eq_ignore_ascii_case(member)))
    })
}

/// An `Mcp-Name` value: as sent, or `=?base64?<standard base64>?=` for a name a header cannot
/// carry plainly (SEP-2243).
fn decode_name(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(encoded) => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let mut p = Policy::default_enforce();
        p.required_scopes = vec!["mcp".into()];
        p.tool_scopes = [("delete_repo".to_owned(), vec!["repo:admin".to_owned()])].into();
        p
    }

    fn request(headers: &[(&str, &str)], body: &str) -> RequestView {
        let mut all = vec![("content-length", "0")];
        all.extend_from_slice(headers);
        let length = body.len().to_string();
        all[0].1 = &length;
        RequestView::new("POST", "/mcp", &all, body.as_bytes())
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo","arguments":{}}}"#;

    #[test]
    fn a_tool_call_needs_the_tool_scopes_beside_the_route_ones() {
        let p = policy();
        let headers = [("mcp-method", "tools/call"), ("mcp-name", "delete_repo")];
        assert_eq!(
            required_scopes(&request(&headers, CALL), &p).unwrap(),
            ["mcp", "repo:admin"]
        );
        // From the body alone (a client without SEP-2243 headers).
        assert_eq!(
            required_scopes(&request(&[], CALL), &p).unwrap(),
            ["mcp", "repo:admin"]
        );
        // Base64-encoded names (SEP-2243): "delete_repo".
        let encoded = [
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?ZGVsZXRlX3JlcG8=?="),
        ];
        assert_eq!(
            required_scopes(&request(&encoded, CALL), &p).unwrap(),
            ["mcp", "repo:admin"]
        );
        let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
        assert_eq!(
            required_scopes(&request(&[("mcp-method", "tools/list")], list), &p).unwrap(),
            ["mcp"]
        );
    }

    #[test]
    fn headers_that_disagree_with_the_body_are_refused() {
        let p = policy();
        let mismatch = |headers: &[(&str, &str)], body: &str| {
            matches!(
                required_scopes(&request(headers, body), &p),
                Err(Denial::McpMismatch(_))
            )
        };
        assert!(mismatch(
            &[("mcp-method", "tools/call"), ("mcp-name", "read_file")],
            CALL
        ));
        assert!(mismatch(&[("mcp-method", "tools/list")], CALL));
        assert!(mismatch(&[], &format!("[{CALL}]")));
        assert!(mismatch(&[], "not json"));
        assert!(mismatch(&[("mcp-name", "=?base64?!!!?=")], CALL));
    }

    #[test]
    fn members_a_go_server_would_read_differently_are_refused() {
        let p = policy();
        let headers = [("mcp-method", "tools/call"), ("mcp-name", "read_file")];
        // A second name in another case, a repeated member, another-case method, and a name
        // with the Kelvin sign (Go folds it to `k`): each could make a case-insensitive
        // decoder call delete_repo while the headers name read_file.
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","Name":"delete_repo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","name":"delete_repo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"tools/list","params":{"name":"read_file"}}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"read_file\",\"\u{212a}ind\":\"x\"}}",
        ] {
            let r = required_scopes(&request(&headers, body), &p);
            assert!(matches!(r, Err(Denial::McpMismatch(_))), "{body}: {r:?}");
        }
    }

    #[test]
    fn a_post_without_its_body_is_refused_on_a_tool_scoped_route() {
        let headers = [("mcp-method", "tools/list")];
        let req = RequestView::new("POST", "/mcp", &headers, b"");
        assert_eq!(
            required_scopes(&req, &policy()),
            Err(Denial::BodyNotForwarded)
        );
        let get = RequestView::new("GET", "/mcp", &[], b"");
        assert_eq!(required_scopes(&get, &policy()).unwrap(), ["mcp"]);
    }
}

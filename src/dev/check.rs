//! Building an Envoy-shaped `CheckRequest` and reading a `CheckResponse` the way a client sees
//! it: the demo, the `sign --check` command, the bench and the tests all send requests this way.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};

/// Builds an Envoy-shaped `CheckRequest`.
pub fn check_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> CheckRequest {
    let mut map: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
        .collect();
    map.insert(":method".into(), method.into());
    map.insert(":path".into(), path.into());
    map.insert("content-length".into(), body.len().to_string());
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    headers: map,
                    raw_body: body.to_vec(),
                    size: i64::try_from(body.len()).unwrap_or(i64::MAX),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Status and `error.code` of a response (`-` for an allow).
pub fn outcome(response: &CheckResponse) -> (u16, String) {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            let status = d.status.as_ref().map_or(403, |s| s.code);
            let code = serde_json::from_str::<serde_json::Value>(&d.body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (u16::try_from(status).unwrap_or(0), code)
        }
        _ => (200, "-".into()),
    }
}

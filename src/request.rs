//! The view of an Envoy `CheckRequest` that the pipeline needs.
//!
//! Envoy sends the raw `:path` (query included), lowercased header names, repeated headers
//! comma-joined, and the body as `raw_body` bytes (with `pack_as_bytes`) or as UTF-8 `body`.
//! Header values are trimmed of surrounding whitespace here, once, as the reference's HTTP stack
//! does, so the canonical string and the replay key both see the trimmed value.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use crate::denial::Denial;
use crate::protocol::path::{self, NormalizedPath};

#[derive(Debug, Clone, Default)]
pub struct RequestView {
    pub method: String,
    /// Envoy's `:path` as received.
    pub raw_path: String,
    pub path: Option<NormalizedPath>,
    headers: HashMap<String, String>,
    pub body: Vec<u8>,
    body_partial: bool,
    /// The request announces a body (`content-length` > 0 or chunked) that Envoy did not send.
    body_missing: bool,
    pub context_extensions: HashMap<String, String>,
    /// The downstream peer's address as Envoy saw it (`source.address`).
    pub(crate) source_address: Option<String>,
}

impl RequestView {
    pub fn from_check(request: CheckRequest) -> Self {
        let attributes = request.attributes.unwrap_or_default();
        let source_address = attributes
            .source
            .as_ref()
            .and_then(|p| p.address.as_ref())
            .and_then(|a| match &a.address {
                Some(
                    envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s),
                ) => Some(s.address.clone()),
                _ => None,
            })
            .filter(|a| !a.is_empty());
        let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
        // Envoy sends lowercased, trimmed headers: the map is kept as it came unless a key or a
        // value needs fixing.
        let mut headers: HashMap<String, String> = http.headers;
        let untidy = |(k, v): (&String, &String)| {
            k.bytes().any(|b| b.is_ascii_uppercase()) || v.trim().len() != v.len()
        };
        if headers.iter().any(untidy) {
            headers = headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
        }
        let body = if http.raw_body.is_empty() {
            http.body.into_bytes()
        } else {
            http.raw_body
        };
        let announced = headers
            .get("content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(headers.contains_key("transfer-encoding"), |n| n > 0);
        let raw_path = if http.path.is_empty() {
            headers.get(":path").cloned().unwrap_or_default()
        } else {
            http.path
        };
        let method = if http.method.is_empty() {
            headers.get(":method").cloned().unwrap_or_default()
        } else {
            http.method
        };
        RequestView {
            method,
            path: path::normalize(&raw_path).ok(),
            raw_path,
            body_partial: headers
                .get("x-envoy-auth-partial-body")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            body_missing: announced && body.is_empty(),
            headers,
            body,
            context_extensions: attributes.context_extensions,
            source_address,
        }
    }

    /// Builds a view directly (tests, benchmarks, the demo).
    pub fn new(method: &str, raw_path: &str, headers: &[(&str, &str)], body: &[u8]) -> Self {
        RequestView {
            method: method.to_owned(),
            raw_path: raw_path.to_owned(),
            path: path::normalize(raw_path).ok(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
                .collect(),
            body: body.to_vec(),
            ..RequestView::default()
        }
    }

    /// A header by case-insensitive name, trimmed; `None` when absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.headers
                .get(&name.to_ascii_lowercase())
                .map(String::as_str)
        } else {
            self.headers.get(name).map(String::as_str)
        }
    }

    /// The exact body bytes, or why they cannot be trusted to be the whole body.
    pub(crate) fn full_body(&self) -> Result<&[u8], Denial> {
        if self.body_partial {
            return Err(Denial::BodyIncomplete);
        }
        if self.body_missing {
            return Err(Denial::BodyNotForwarded);
        }
        Ok(&self.body)
    }

    /// The incoming `x-request-id` if it has the reference's shape.
    pub(crate) fn request_id(&self) -> Option<&str> {
        self.header("x-request-id").filter(|id| {
            (8..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
    }
}

//! The view of an Envoy `CheckRequest` that the pipeline needs.
//!
//! Envoy sends the raw `:path` (query included), lowercased header names, repeated headers
//! comma-joined, and the body as `raw_body` bytes (with `pack_as_bytes`) or as UTF-8 `body`.
//! Header values are trimmed of surrounding whitespace here, once, as the reference's HTTP stack
//! does, so the canonical string and the replay key both see the trimmed value.
//!
//! With `encode_raw_headers: true` Envoy sends `header_map` instead: one entry per field line,
//! values as bytes. The view then keeps those lines in order (HTTP Message Signatures join a
//! field's lines with ", ", where Envoy's map form joined them with ","), and builds the map the
//! other profiles read by joining them as Envoy would.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use crate::denial::Denial;
use crate::protocol::path::{self, NormalizedPath};

pub mod wire;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestView {
    pub method: String,
    /// Envoy's `:path` as received.
    pub raw_path: String,
    pub path: Option<NormalizedPath>,
    headers: HashMap<String, String>,
    /// Every field line as sent, lowercased names, when Envoy sent `header_map`.
    lines: Option<Vec<(String, String)>>,
    /// `:authority` (the `Host` header in HTTP/1.1) and the scheme, as Envoy saw them.
    pub(crate) authority: String,
    pub(crate) scheme: String,
    pub body: Vec<u8>,
    body_partial: bool,
    /// The request announces a body (`content-length` > 0 or chunked) that Envoy did not send.
    body_missing: bool,
    pub context_extensions: HashMap<String, String>,
    /// The downstream peer's address as Envoy saw it (`source.address`).
    pub(crate) source_address: Option<String>,
}

/// What a view is made of: the fields of a `CheckRequest` it reads, as decoded (by prost in
/// [`RequestView::from_check`], from the wire in [`RequestView::decode`]).
#[derive(Debug, Default)]
pub(crate) struct Parts {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) host: String,
    pub(crate) scheme: String,
    pub(crate) headers: HashMap<String, String>,
    /// `header_map`'s lines as (key, value, raw value), when the field was sent.
    pub(crate) header_map: Option<Vec<(String, String, Vec<u8>)>>,
    pub(crate) body: String,
    pub(crate) raw_body: Vec<u8>,
    pub(crate) context_extensions: HashMap<String, String>,
    /// `source.address.socket_address.address`, when the address is a socket address.
    pub(crate) source_address: Option<String>,
}

impl Parts {
    fn from_check(request: CheckRequest) -> Parts {
        use envoy_types::pb::envoy::config::core::v3::address::Address;
        let attributes = request.attributes.unwrap_or_default();
        let source_address =
            attributes
                .source
                .and_then(|p| p.address)
                .and_then(|a| match a.address {
                    Some(Address::SocketAddress(s)) => Some(s.address),
                    _ => None,
                });
        let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
        let header_map = http.header_map.map(|map| {
            let lines = map.headers.into_iter();
            lines.map(|h| (h.key, h.value, h.raw_value)).collect()
        });
        Parts {
            method: http.method,
            path: http.path,
            host: http.host,
            scheme: http.scheme,
            headers: http.headers,
            header_map,
            body: http.body,
            raw_body: http.raw_body,
            context_extensions: attributes.context_extensions,
            source_address,
        }
    }
}

impl RequestView {
    pub fn from_check(request: CheckRequest) -> Self {
        RequestView::from_parts(Parts::from_check(request))
    }

    /// A view of the `CheckRequest` encoded in `message`, decoded straight from the wire (see
    /// [`wire`]): the same view [`RequestView::from_check`] gives for every message prost
    /// decodes.
    pub fn decode(message: &[u8]) -> Result<Self, wire::Malformed> {
        wire::parts(message).map(RequestView::from_parts)
    }

    fn from_parts(parts: Parts) -> Self {
        let mut http = parts;
        let source_address = http.source_address.take().filter(|a| !a.is_empty());
        let lines = http.header_map.take().map(|map| {
            map.into_iter()
                .map(|(key, value, raw_value)| {
                    let value = match raw_value.is_empty() {
                        true => value,
                        false => String::from_utf8_lossy(&raw_value).into_owned(),
                    };
                    (key.to_ascii_lowercase(), value)
                })
                .collect::<Vec<_>>()
        });
        if let Some(lines) = &lines {
            // The lines are the whole header set: a map sent beside them is not added twice.
            http.headers.clear();
            for (name, value) in lines {
                http.headers
                    .entry(name.clone())
                    .and_modify(|joined| {
                        joined.push(',');
                        joined.push_str(value);
                    })
                    .or_insert_with(|| value.clone());
            }
        }
        // Envoy sends lowercased, trimmed headers: the map is kept as it came unless a key or a
        // value needs fixing.
        let mut headers: HashMap<String, String> = http.headers;
        let untidy = |(k, v): (&String, &String)| {
            k.bytes().any(|b| b.is_ascii_uppercase()) || v.trim().len() != v.len()
        };
        if headers.iter().any(untidy) {
            // Names that differ only in case become one: the one sent in lowercase wins, else
            // the greatest (in sorted order, so the same whatever the map's order was).
            let mut sorted: Vec<_> = headers.into_iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            headers = sorted
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
        let authority = match http.host.is_empty() {
            true => headers.get(":authority").or(headers.get("host")).cloned(),
            false => Some(http.host),
        };
        RequestView {
            method,
            path: path::normalize(&raw_path).ok(),
            raw_path,
            lines,
            authority: authority.unwrap_or_default(),
            scheme: http.scheme,
            body_partial: headers
                .get("x-envoy-auth-partial-body")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            body_missing: announced && body.is_empty(),
            headers,
            body,
            context_extensions: http.context_extensions,
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
            authority: headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default(),
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

    /// A field's lines as the client sent them: the raw lines when Envoy forwarded them
    /// (`encode_raw_headers`), else the one value Envoy's map holds. Empty when absent.
    pub(crate) fn field_lines(&self, name: &str) -> Vec<&str> {
        match &self.lines {
            Some(lines) => lines
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect(),
            None => self.header(name).into_iter().collect(),
        }
    }

    /// Whether the request carries a body (forwarded or not).
    pub(crate) fn has_body(&self) -> bool {
        !self.body.is_empty() || self.body_missing || self.body_partial
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

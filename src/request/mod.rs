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

use std::borrow::Cow;
use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use crate::denial::Denial;
use crate::protocol::path::{self, NormalizedPath};

mod headers;
pub mod wire;

use headers::{Entries, Headers};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestView {
    pub method: String,
    /// Envoy's `:path` as received.
    pub raw_path: String,
    pub path: Option<NormalizedPath>,
    /// With every field line as sent when Envoy sent `header_map`.
    headers: Headers,
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

/// What a view is made of: the fields of a `CheckRequest` it reads, borrowed from the message
/// (prost's in [`RequestView::from_check`], its bytes in [`RequestView::decode`]).
#[derive(Debug, Default)]
pub(crate) struct Parts<'m> {
    pub(crate) method: &'m str,
    pub(crate) path: &'m str,
    pub(crate) host: &'m str,
    pub(crate) scheme: &'m str,
    pub(crate) headers: Entries<'m>,
    /// `header_map`'s lines as (key, value, raw value), when the field was sent.
    pub(crate) header_map: Option<Vec<(&'m str, &'m str, &'m [u8])>>,
    pub(crate) body: &'m str,
    pub(crate) raw_body: &'m [u8],
    pub(crate) context_extensions: HashMap<String, String>,
    /// `source.address.socket_address.address`, when the address is a socket address.
    pub(crate) source_address: Option<&'m str>,
}

impl Parts<'_> {
    fn from_check(request: &CheckRequest) -> Parts<'_> {
        use envoy_types::pb::envoy::config::core::v3::address::Address;
        let Some(attributes) = &request.attributes else {
            return Parts::default();
        };
        let source_address = attributes
            .source
            .as_ref()
            .and_then(|p| p.address.as_ref())
            .and_then(|a| match &a.address {
                Some(Address::SocketAddress(s)) => Some(s.address.as_str()),
                _ => None,
            });
        let mut parts = Parts {
            context_extensions: attributes.context_extensions.clone(),
            source_address,
            ..Parts::default()
        };
        if let Some(http) = attributes.request.as_ref().and_then(|r| r.http.as_ref()) {
            let header_map = http.header_map.as_ref().map(|map| {
                let lines = map.headers.iter();
                lines
                    .map(|h| (h.key.as_str(), h.value.as_str(), &h.raw_value[..]))
                    .collect()
            });
            parts = Parts {
                method: &http.method,
                path: &http.path,
                host: &http.host,
                scheme: &http.scheme,
                headers: http.headers.iter().map(|(k, v)| (&k[..], &v[..])).collect(),
                header_map,
                body: &http.body,
                raw_body: &http.raw_body,
                ..parts
            };
        }
        parts
    }
}

impl RequestView {
    pub fn from_check(request: CheckRequest) -> Self {
        RequestView::from_parts(Parts::from_check(&request))
    }

    /// A view of the `CheckRequest` encoded in `message`, decoded straight from the wire (see
    /// [`wire`]): the same view [`RequestView::from_check`] gives for every message prost
    /// decodes.
    pub fn decode(message: &[u8]) -> Result<Self, wire::Malformed> {
        wire::parts(message).map(RequestView::from_parts)
    }

    fn from_parts(parts: Parts<'_>) -> Self {
        let headers = match parts.header_map {
            // The lines are the whole header set: a map sent beside them is not added twice.
            Some(lines) => Headers::from_lines(lines.into_iter().map(|(key, value, raw)| {
                let value = match raw.is_empty() {
                    true => Cow::Borrowed(value),
                    false => String::from_utf8_lossy(raw),
                };
                (key, value)
            })),
            None => Headers::from_entries(parts.headers),
        };
        let body = match parts.raw_body.is_empty() {
            true => parts.body.as_bytes().to_vec(),
            false => parts.raw_body.to_vec(),
        };
        let announced = headers
            .get("content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(headers.get("transfer-encoding").is_some(), |n| n > 0);
        let raw_path = match parts.path.is_empty() {
            true => headers.get(":path").unwrap_or_default(),
            false => parts.path,
        };
        let method = match parts.method.is_empty() {
            true => headers.get(":method").unwrap_or_default(),
            false => parts.method,
        };
        let authority = match parts.host.is_empty() {
            true => headers.get(":authority").or(headers.get("host")),
            false => Some(parts.host),
        };
        RequestView {
            method: method.to_owned(),
            path: path::normalize(raw_path).ok(),
            raw_path: raw_path.to_owned(),
            authority: authority.unwrap_or_default().to_owned(),
            scheme: parts.scheme.to_owned(),
            body_partial: headers
                .get("x-envoy-auth-partial-body")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            body_missing: announced && body.is_empty(),
            headers,
            body,
            context_extensions: parts.context_extensions,
            source_address: parts
                .source_address
                .filter(|a| !a.is_empty())
                .map(str::to_owned),
        }
    }

    /// Builds a view directly (tests, benchmarks, the demo).
    pub fn new(method: &str, raw_path: &str, headers: &[(&str, &str)], body: &[u8]) -> Self {
        RequestView {
            method: method.to_owned(),
            raw_path: raw_path.to_owned(),
            path: path::normalize(raw_path).ok(),
            headers: {
                let lowered: Vec<_> = headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), *v))
                    .collect();
                Headers::from_entries(lowered.iter().map(|(k, v)| (&k[..], *v)).collect())
            },
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
            self.headers.get(&name.to_ascii_lowercase())
        } else {
            self.headers.get(name)
        }
    }

    /// A field's lines as the client sent them: the raw lines when Envoy forwarded them
    /// (`encode_raw_headers`), else the one value Envoy's map holds. Empty when absent.
    pub(crate) fn field_lines(&self, name: &str) -> Vec<&str> {
        match self.headers.lines(name) {
            Some(lines) => lines,
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

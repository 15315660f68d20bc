//! Component values (RFC 9421 §2.1 and §2.2): header fields, with `sf`, `key` and `bs`, and the
//! derived components of a request.

use base64::Engine as _;
use sfv::{FieldType, ListEntry, Parser};

use super::{Component, Error};

/// A request as the signer saw it.
pub trait Message {
    /// The method, as sent (`@method` is case-sensitive).
    fn method(&self) -> &str;
    /// `http` or `https`: from trusted configuration when a TLS terminator sits in front.
    fn scheme(&self) -> &str;
    /// The request's authority (`Host` or `:authority`), or the configured one.
    fn authority(&self) -> &str;
    /// The request target in origin form, path and query as received.
    fn target(&self) -> &str;
    /// The field's lines, in order (empty: absent); `name` is lowercase.
    fn field_lines(&self, name: &str) -> Vec<&str>;
    /// A response's status (`@status`); requests have none.
    fn status(&self) -> Option<u16> {
        None
    }
}

/// Fields whose Structured Field type is known, for `;sf` and `;key`.
enum Shape {
    Dictionary,
    List,
    Item,
}

fn shape(name: &str) -> Option<Shape> {
    match name {
        "content-digest"
        | "repr-digest"
        | "want-content-digest"
        | "want-repr-digest"
        | "signature-input"
        | "signature"
        | "accept-signature"
        | "priority"
        | "cache-status"
        | "proxy-status"
        | "signature-agent"
        | "example-dict" => Some(Shape::Dictionary),
        "accept-ch" | "example-list" => Some(Shape::List),
        "example-item" => Some(Shape::Item),
        _ => None,
    }
}

/// The value of `component` in `message`.
pub(super) fn value(message: &dyn Message, c: &Component) -> Result<String, Error> {
    if c.flag("req") || c.flag("tr") {
        return Err(Error::Component(c.identifier()));
    }
    if c.name.starts_with('@') {
        return derived(message, c);
    }
    // §2.5: a parameter the verifier does not understand fails the component.
    let known = |k: &str| matches!(k, "sf" | "key" | "bs");
    if c.name.bytes().any(|b| b.is_ascii_uppercase()) || !c.params.keys().all(|k| known(k.as_str()))
    {
        return Err(Error::Component(c.identifier()));
    }
    let lines = message.field_lines(&c.name);
    if lines.is_empty() {
        return Err(Error::MissingComponent(c.identifier()));
    }
    let trimmed = || lines.iter().map(|l| l.trim_matches([' ', '\t']));
    let (sf, bs, key) = (c.flag("sf"), c.flag("bs"), c.params.get("key"));
    match (sf, bs, key) {
        (false, false, None) => Ok(trimmed().collect::<Vec<_>>().join(", ")),
        (false, true, None) => Ok(trimmed()
            .map(|l| {
                let b64 = base64::engine::general_purpose::STANDARD.encode(l.as_bytes());
                format!(":{b64}:")
            })
            .collect::<Vec<_>>()
            .join(", ")),
        (_, false, None) => {
            let joined = trimmed().collect::<Vec<_>>().join(", ");
            let unusable = || Error::Component(c.identifier());
            match shape(&c.name).ok_or_else(unusable)? {
                Shape::Dictionary => Parser::new(&joined)
                    .parse::<sfv::Dictionary>()
                    .ok()
                    .and_then(|d| d.serialize()),
                Shape::List => Parser::new(&joined)
                    .parse::<sfv::List>()
                    .ok()
                    .and_then(|l| l.serialize()),
                Shape::Item => Parser::new(&joined)
                    .parse::<sfv::Item>()
                    .ok()
                    .map(|i| i.serialize()),
            }
            .ok_or_else(unusable)
        }
        (_, false, Some(sfv::BareItem::String(key))) => {
            let joined = trimmed().collect::<Vec<_>>().join(", ");
            let dict: sfv::Dictionary = Parser::new(&joined)
                .parse()
                .map_err(|_| Error::Component(c.identifier()))?;
            let member = dict
                .iter()
                .find(|(k, _)| k.as_str() == key.as_str())
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Error::MissingComponent(c.identifier()))?;
            one_member(member).ok_or_else(|| Error::Component(c.identifier()))
        }
        _ => Err(Error::Component(c.identifier())),
    }
}

/// A dictionary member's value serialized alone (an item or an inner list, with parameters).
fn one_member(entry: ListEntry) -> Option<String> {
    let list: sfv::List = vec![entry];
    list.serialize()
}

fn derived(m: &dyn Message, c: &Component) -> Result<String, Error> {
    let allowed_params = match c.name.as_str() {
        "@query-param" => &["name"][..],
        _ => &[][..],
    };
    if c.params
        .keys()
        .any(|k| !allowed_params.contains(&k.as_str()))
    {
        return Err(Error::Component(c.identifier()));
    }
    let target = m.target();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Ok(match c.name.as_str() {
        "@method" => m.method().to_owned(),
        "@authority" => authority(m.scheme(), m.authority()),
        "@scheme" => m.scheme().to_ascii_lowercase(),
        "@target-uri" => format!(
            "{}://{}{target}",
            m.scheme().to_ascii_lowercase(),
            authority(m.scheme(), m.authority())
        ),
        "@request-target" => target.to_owned(),
        "@path" if path.is_empty() => "/".to_owned(),
        "@path" => path.to_owned(),
        "@query" => format!("?{}", query.unwrap_or("")),
        "@query-param" => {
            let name = c
                .string_param("name")
                .ok_or_else(|| Error::Component(c.identifier()))?;
            query_param(query.unwrap_or(""), name).map_err(|missing| match missing {
                true => Error::MissingComponent(c.identifier()),
                false => Error::Component(c.identifier()),
            })?
        }
        "@status" => match m.status() {
            Some(status) => status.to_string(),
            None => return Err(Error::Component(c.identifier())),
        },
        // `@signature-params` is never a covered component.
        _ => return Err(Error::Component(c.identifier())),
    })
}

/// `@authority`: lowercase, without the scheme's default port (HTTP §4.2.3).
fn authority(scheme: &str, authority: &str) -> String {
    let lower = authority.to_ascii_lowercase();
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return lower,
    };
    match lower.strip_suffix(default) {
        Some(host) if !host.is_empty() && !host.ends_with(':') => host.to_owned(),
        _ => lower,
    }
}

/// The value of the single query parameter `name` (already in the encoded form the identifier
/// carries): `Err(true)` when absent, `Err(false)` when it occurs more than once (ambiguous:
/// sign `@query` instead).
fn query_param(query: &str, name: &str) -> Result<String, bool> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        if reencode(&form_decode(n)) != name {
            continue;
        }
        if found.is_some() {
            return Err(false);
        }
        found = Some(reencode(&form_decode(v)));
    }
    found.ok_or(true)
}

/// `application/x-www-form-urlencoded` parsing of one name or value: `+` is a space, `%XX` an
/// octet (a `%` not followed by two hex digits stays as it is).
fn form_decode(s: &str) -> Vec<u8> {
    let spaced: Vec<u8> = s
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&spaced)
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// "Percent-encode after encoding" with the `application/x-www-form-urlencoded` set, spaces as
/// `%20` (RFC 9421 §2.2.8's examples).
fn reencode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded_then_encoded_again() {
        let q = "var=this%20is%20a%20big%0Avalue&bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something";
        assert_eq!(
            query_param(q, "var").unwrap(),
            "this%20is%20a%20big%0Avalue"
        );
        assert_eq!(query_param(q, "bar").unwrap(), "with%20plus%20whitespace");
        assert_eq!(query_param(q, "fa%C3%A7ade%22%3A%20").unwrap(), "something");
        assert_eq!(query_param(q, "missing"), Err(true));
        assert_eq!(query_param("a=1&a=2", "a"), Err(false));
        assert_eq!(query_param("a=&b", "b").unwrap(), "");
    }

    #[test]
    fn the_authority_drops_the_default_port_only() {
        assert_eq!(authority("https", "Example.COM:443"), "example.com");
        assert_eq!(authority("https", "example.com:8443"), "example.com:8443");
        assert_eq!(authority("http", "example.com:80"), "example.com");
        assert_eq!(authority("http", "example.com:443"), "example.com:443");
    }
}

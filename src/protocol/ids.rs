//! Identifiers: ULIDs, `did:cdi` DIDs and the issuer URL whose host is the DID authority.
//!
//! These are the reference's exact grammars (docs/protocol.md §10.2-10.3, §1.1). A DID's authority must
//! equal the issuer's lowercased hostname, which is why the issuer parser lives here too.

/// `^[0-9A-HJKMNP-TV-Z]{26}$` with a first character of at most `7` (a 48-bit timestamp).
pub(crate) fn is_ulid(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 26
        && bytes[0] <= b'7'
        && bytes.iter().all(|&b| {
            b.is_ascii_digit()
                || (b.is_ascii_uppercase() && !matches!(b, b'I' | b'L' | b'O' | b'U'))
        })
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID from a millisecond timestamp and 80 random bits (the high bits of `random` are unused).
pub(crate) fn encode_ulid(ms: u64, random: u128) -> String {
    let value = (u128::from(ms & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1u128 << 80) - 1));
    (0..26)
        .rev()
        .map(|i| char::from(CROCKFORD[((value >> (i * 5)) & 31) as usize]))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DidKind {
    Human,
    Agent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Did<'a> {
    pub authority: &'a str,
    pub kind: DidKind,
    pub ulid: &'a str,
}

/// Parses `did:cdi:<authority>:<human|agent>:<ULID>`.
pub fn parse_did(value: &str) -> Option<Did<'_>> {
    let mut parts = value.split(':');
    let (Some("did"), Some("cdi"), Some(authority), Some(kind), Some(ulid), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let kind = match kind {
        "human" => DidKind::Human,
        "agent" => DidKind::Agent,
        _ => return None,
    };
    (is_authority(authority) && is_ulid(ulid)).then_some(Did {
        authority,
        kind,
        ulid,
    })
}

pub(crate) fn parse_agent_did(value: &str) -> Option<Did<'_>> {
    parse_did(value).filter(|d| d.kind == DidKind::Agent)
}

/// The reference's error text for a rejected DID.
pub fn invalid_did_message(value: &str) -> String {
    format!("Invalid DID: {value}")
}

/// 1-253 characters, at least two dot-separated lowercase DNS labels.
fn is_authority(value: &str) -> bool {
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    (1..=253).contains(&value.len())
        && value.split('.').count() >= 2
        && value.split('.').all(label_ok)
}

/// The lowercased hostname of an issuer `^https?://host[:port]...`, or `None` when the issuer
/// does not have that shape (userinfo and IPv6 literals are refused).
pub(crate) fn issuer_authority(issuer: &str) -> Option<String> {
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains(['@', '[', ']']) {
        return None;
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    (port_ok && host_ok).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulid_bounds() {
        assert!(is_ulid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ"));
        assert!(!is_ulid("80000000000000000000000000"));
        assert!(!is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAI"));
        assert!(!is_ulid("01kdva7ec0agenta0000000001"));
        assert!(!is_ulid("01KDVA7EC0AGENTA000000000"));
    }

    #[test]
    fn generated_ulids_are_valid() {
        assert_eq!(encode_ulid(0, 0), "00000000000000000000000000");
        assert!(is_ulid(&encode_ulid(1_767_225_600_000, u128::MAX)));
        assert_eq!(
            encode_ulid(1_767_225_600_000, 0),
            "01KDVDNA000000000000000000"
        );
    }

    #[test]
    fn issuer_authority_shapes() {
        assert_eq!(
            issuer_authority("https://Registry.Example.com:8443"),
            Some("registry.example.com".into())
        );
        assert_eq!(issuer_authority("https://a.b/"), Some("a.b".into()));
        assert_eq!(issuer_authority("https://u@a.b"), None);
        assert_eq!(issuer_authority("http://[::1]:80"), None);
        assert_eq!(issuer_authority("ftp://a.b"), None);
        assert_eq!(issuer_authority("https://a.b:"), None);
        assert_eq!(issuer_authority("https://"), None);
    }
}

//! `Content-Digest` (RFC 9530) against the exact body Envoy forwarded.

use sfv::{BareItem, ListEntry, Parser};
use sha2::Digest as _;

use super::Error;

/// Checks `field` (the `Content-Digest` value) against `body`: every `sha-256` and `sha-512`
/// member must match, at least one must be there, other algorithms are ignored.
pub fn check(field: &str, body: &[u8]) -> Result<(), Error> {
    if field.len() > super::MAX_FIELD_BYTES {
        return Err(Error::Digest("field too large"));
    }
    let dict: sfv::Dictionary = Parser::new(field)
        .parse()
        .map_err(|_| Error::Digest("not a dictionary"))?;
    let mut checked = 0;
    for (alg, entry) in &dict {
        let expected: Vec<u8> = match alg.as_str() {
            "sha-256" => sha2::Sha256::digest(body).to_vec(),
            "sha-512" => sha2::Sha512::digest(body).to_vec(),
            _ => continue,
        };
        let given = match entry {
            ListEntry::Item(item) => match &item.bare_item {
                BareItem::ByteSequence(bytes) => bytes.as_slice(),
                _ => return Err(Error::Digest("not a byte sequence")),
            },
            ListEntry::InnerList(_) => return Err(Error::Digest("not a byte sequence")),
        };
        if given != expected.as_slice() {
            return Err(Error::Digest("does not match the body"));
        }
        checked += 1;
    }
    match checked {
        0 => Err(Error::Digest("no sha-256 or sha-512 member")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9530 §2's example: `{"hello": "world"}` and its SHA-256 and SHA-512 digests.
    const BODY: &[u8] = b"{\"hello\": \"world\"}\n";

    #[test]
    fn the_rfc_9530_examples_match() {
        let sha256 = "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:";
        let sha512 = "sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:";
        assert_eq!(check(sha256, BODY), Ok(()));
        assert_eq!(check(sha512, BODY), Ok(()));
        assert_eq!(check(&format!("{sha256}, {sha512}"), BODY), Ok(()));
        assert_eq!(
            check(sha256, b"{\"hello\": \"world\"}"),
            Err(Error::Digest("does not match the body"))
        );
    }

    #[test]
    fn unknown_or_malformed_digests_are_refused() {
        assert_eq!(
            check("md5=:AAAA:", BODY),
            Err(Error::Digest("no sha-256 or sha-512 member"))
        );
        assert_eq!(
            check("sha-256=abc", BODY),
            Err(Error::Digest("not a byte sequence"))
        );
        assert_eq!(
            check("sha-256=:", BODY),
            Err(Error::Digest("not a dictionary"))
        );
    }
}

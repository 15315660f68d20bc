//! Strict base64url (RFC 4648 §5, no padding), the only encoding the protocol uses.
//!
//! Strict means what the reference's decoder means: no `=`, no `+` or `/`, no whitespace and no
//! non-zero trailing bits, so every byte string has exactly one accepted encoding. Caches and
//! replay keys can then be keyed on encoded text without aliasing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The input was not canonical unpadded base64url.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidBase64;

pub fn decode(input: &str) -> Result<Vec<u8>, InvalidBase64> {
    URL_SAFE_NO_PAD
        .decode(input.as_bytes())
        .map_err(|_| InvalidBase64)
}

/// Decodes into exactly `N` bytes, without allocating.
pub fn decode_array<const N: usize>(input: &str) -> Result<[u8; N], InvalidBase64> {
    // A canonical encoding of N bytes has exactly this many characters.
    if input.len() != encoded_len(N) {
        return Err(InvalidBase64);
    }
    let mut out = [0u8; N];
    let written = URL_SAFE_NO_PAD
        .decode_slice(input.as_bytes(), &mut out)
        .map_err(|_| InvalidBase64)?;
    if written != N {
        return Err(InvalidBase64);
    }
    Ok(out)
}

/// Decodes as jose does on the reference's runtime (`atob` after mapping `-_` to `+/`):
/// whitespace dropped, either alphabet, optional padding, trailing bits ignored. Only for
/// registry-signed documents whose signature has already been checked over the received text.
pub(crate) fn decode_lenient(input: &str) -> Option<Vec<u8>> {
    use base64::alphabet::STANDARD;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const FORGIVING: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mapped: Vec<u8> = input
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'-' => b'+',
            b'_' => b'/',
            other => other,
        })
        .collect();
    // `atob` takes padding only where it completes a multiple of four characters.
    if mapped.contains(&b'=') && !mapped.len().is_multiple_of(4) {
        return None;
    }
    FORGIVING.decode(mapped).ok()
}

pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub const fn encoded_len(bytes: usize) -> usize {
    (bytes * 4).div_ceil(3)
}

/// The reference's error text for a rejected input (`Invalid base64url input: <input>`).
pub fn reference_message(input: &str) -> String {
    format!("Invalid base64url input: {input}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_trailing_bits_padding_and_standard_alphabet() {
        assert_eq!(decode("AA"), Ok(vec![0]));
        assert_eq!(decode("AB"), Err(InvalidBase64));
        assert_eq!(decode("AQ=="), Err(InvalidBase64));
        assert_eq!(decode("+/8"), Err(InvalidBase64));
        assert_eq!(decode("A"), Err(InvalidBase64));
        assert_eq!(decode("AA\n"), Err(InvalidBase64));
    }

    #[test]
    fn lenient_decoding_takes_what_atob_takes() {
        assert_eq!(decode_lenient("AB"), Some(vec![0]));
        assert_eq!(decode_lenient("AQ=="), Some(vec![1]));
        assert_eq!(decode_lenient("AQ="), None);
        assert_eq!(decode_lenient("+/8"), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_lenient("-_8\n"), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_lenient("A"), None);
        assert_eq!(decode_lenient("A*"), None);
    }

    #[test]
    fn decode_array_needs_exact_length() {
        assert_eq!(decode_array::<1>("AA"), Ok([0]));
        assert_eq!(decode_array::<2>("AA"), Err(InvalidBase64));
        assert_eq!(decode_array::<2>("AAA"), Ok([0, 0]));
        assert_eq!(decode_array::<2>("AAB"), Err(InvalidBase64));
        assert_eq!(encoded_len(32), 43);
        assert_eq!(encoded_len(64), 86);
    }
}

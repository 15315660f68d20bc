//! Proof of possession: the `CLAW-PROOF-V1` canonical string and its verification.
//!
//! The verifier runs the reference's steps in order (headers present, timestamp digits, skew,
//! body hash, proof encoding, signature) and reports the SDK's error code, message and details,
//! so the request layer can map them to the proxy's envelope. Header values arrive already
//! trimmed by the request layer, as the reference's HTTP stack trims them; they are signed
//! verbatim, never re-serialized.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::b64;
use crate::crypto::PublicKey;

pub(crate) const PROOF_VERSION: &str = "CLAW-PROOF-V1";
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;

/// The four proof headers, in the order the reference checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofHeader {
    Timestamp,
    Nonce,
    BodySha256,
    Proof,
}

impl ProofHeader {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ProofHeader::Timestamp => "X-Claw-Timestamp",
            ProofHeader::Nonce => "X-Claw-Nonce",
            ProofHeader::BodySha256 => "X-Claw-Body-SHA256",
            ProofHeader::Proof => "X-Claw-Proof",
        }
    }
}

/// One request as the proof covers it.
#[derive(Debug, Clone, Copy)]
pub struct ProofInput<'a> {
    pub method: &'a str,
    /// WHATWG-serialized path and query (see `path::path_with_query`).
    pub path_with_query: &'a str,
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub body_sha256: Option<&'a str>,
    pub proof: Option<&'a str>,
    pub body: &'a [u8],
}

/// A proof that verified; the timestamp is what the replay window is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedProof {
    pub timestamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PopError {
    Missing(ProofHeader),
    /// Not `^\d+$`.
    InvalidTimestamp,
    Skew {
        max_skew_secs: u64,
    },
    /// A nonce with a line break (or NUL) would make the canonical string ambiguous. No HTTP
    /// header can carry one; a horizontal tab is legal in a header value and signed as sent.
    NonceControlChars,
    /// The method is not an HTTP token.
    InvalidMethod,
    BodyHashMismatch {
        expected: String,
        received: String,
    },
    ProofEncoding,
    SignatureMismatch,
}

impl PopError {
    /// The SDK's error code.
    pub fn sdk_code(&self) -> &'static str {
        match self {
            PopError::Missing(_) | PopError::NonceControlChars | PopError::InvalidMethod => {
                "HTTP_SIGNATURE_INVALID_INPUT"
            }
            PopError::InvalidTimestamp => "HTTP_SIGNATURE_INVALID_TIMESTAMP",
            PopError::Skew { .. } => "HTTP_SIGNATURE_TIMESTAMP_SKEW",
            PopError::BodyHashMismatch { .. } => "HTTP_SIGNATURE_BODY_HASH_MISMATCH",
            PopError::ProofEncoding | PopError::SignatureMismatch => "HTTP_SIGNATURE_INVALID_PROOF",
        }
    }

    /// The SDK's message; the proxy puts it in `details.reason` for proof failures.
    pub fn message(&self) -> &'static str {
        match self {
            PopError::Missing(_) => "Input must be a non-empty string",
            PopError::InvalidTimestamp => "X-Claw-Timestamp must be a unix seconds integer",
            PopError::Skew { .. } => "X-Claw-Timestamp is outside the allowed skew window",
            PopError::NonceControlChars => "X-Claw-Nonce must not contain a line break",
            PopError::InvalidMethod => "HTTP method is not a valid token",
            PopError::BodyHashMismatch { .. } => {
                "Body hash does not match X-Claw-Body-SHA256 header"
            }
            PopError::ProofEncoding => "X-Claw-Proof is not a valid base64url signature",
            PopError::SignatureMismatch => "X-Claw-Proof verification failed",
        }
    }

    /// The SDK's `details` object, as the vectors record it.
    pub fn sdk_details(&self) -> Option<Value> {
        match self {
            PopError::Missing(h) => Some(json!({ "field": h.name() })),
            PopError::Skew { max_skew_secs } => {
                Some(json!({ "maxTimestampSkewSeconds": max_skew_secs }))
            }
            PopError::BodyHashMismatch { expected, received } => Some(json!({
                "expectedBodyHash": expected,
                "receivedBodyHash": received,
            })),
            PopError::ProofEncoding => Some(json!({
                "header": "X-Claw-Proof",
                "reason": "invalid_base64url_or_signature_length",
            })),
            PopError::SignatureMismatch => Some(json!({ "reason": "signature_mismatch" })),
            PopError::InvalidTimestamp | PopError::NonceControlChars | PopError::InvalidMethod => {
                None
            }
        }
    }
}

/// base64url(SHA-256(body)), the `X-Claw-Body-SHA256` value.
pub fn body_sha256(body: &[u8]) -> String {
    b64::encode(&Sha256::digest(body))
}

/// The six LF-joined fields; the method is uppercased, everything else is verbatim.
pub fn canonical_string(
    method: &str,
    path_with_query: &str,
    timestamp: &str,
    nonce: &str,
    body_sha256: &str,
) -> String {
    let mut s = String::with_capacity(
        PROOF_VERSION.len()
            + method.len()
            + path_with_query.len()
            + timestamp.len()
            + nonce.len()
            + body_sha256.len()
            + 5,
    );
    for (i, field) in [
        PROOF_VERSION,
        method,
        path_with_query,
        timestamp,
        nonce,
        body_sha256,
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            s.push('\n');
        }
        if i == 1 {
            s.extend(field.chars().map(|c| c.to_ascii_uppercase()));
        } else {
            s.push_str(field);
        }
    }
    s
}

/// Verifies a request's proof against the agent's key at `now_ms` (unix milliseconds).
pub fn verify_proof(
    input: &ProofInput<'_>,
    key: &PublicKey,
    now_ms: u64,
    max_skew_secs: u64,
) -> Result<VerifiedProof, PopError> {
    let timestamp = required(input.timestamp, ProofHeader::Timestamp)?;
    let nonce = required(input.nonce, ProofHeader::Nonce)?;
    let body_hash = required(input.body_sha256, ProofHeader::BodySha256)?;
    let proof = required(input.proof, ProofHeader::Proof)?;

    if !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PopError::InvalidTimestamp);
    }
    // An absurdly long digit string cannot be within the window; saturate instead of overflowing.
    let ts = timestamp.parse::<u64>().unwrap_or(u64::MAX);
    let now = now_ms / 1000;
    if ts.abs_diff(now) > max_skew_secs {
        return Err(PopError::Skew { max_skew_secs });
    }
    if nonce.contains(['\n', '\r', '\0']) {
        return Err(PopError::NonceControlChars);
    }
    if input.method.is_empty() || !input.method.bytes().all(is_token_byte) {
        return Err(PopError::InvalidMethod);
    }

    let expected = body_sha256(input.body);
    if expected != body_hash {
        return Err(PopError::BodyHashMismatch {
            expected,
            received: body_hash.to_owned(),
        });
    }
    let canonical = canonical_string(
        input.method,
        input.path_with_query,
        timestamp,
        nonce,
        body_hash,
    );
    let signature = b64::decode_array::<64>(proof).map_err(|_| PopError::ProofEncoding)?;
    if !key.verify(canonical.as_bytes(), &signature) {
        return Err(PopError::SignatureMismatch);
    }
    Ok(VerifiedProof { timestamp: ts })
}

fn required(value: Option<&str>, header: ProofHeader) -> Result<&str, PopError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or(PopError::Missing(header))
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

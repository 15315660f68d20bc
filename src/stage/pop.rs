//! Proof of possession over the exact request, mapped to the proxy's error table.

use crate::crypto::PublicKey;
use crate::denial::Denial;
use crate::protocol::pop::{PopError, ProofHeader, ProofInput, VerifiedProof, verify_proof};
use crate::request::RequestView;

pub(crate) fn verify(
    req: &RequestView,
    path_with_query: &str,
    body: &[u8],
    key: &PublicKey,
    now_ms: u64,
    max_skew_secs: u64,
) -> Result<VerifiedProof, Denial> {
    let input = ProofInput {
        method: &req.method,
        path_with_query,
        timestamp: req.header("x-claw-timestamp"),
        nonce: req.header("x-claw-nonce"),
        body_sha256: req.header("x-claw-body-sha256"),
        proof: req.header("x-claw-proof"),
        body,
    };
    verify_proof(&input, key, now_ms, max_skew_secs).map_err(to_denial)
}

/// `middleware.ts:mapProofVerificationError`.
fn to_denial(e: PopError) -> Denial {
    match e {
        PopError::Missing(ProofHeader::Timestamp) => Denial::MissingTimestamp,
        PopError::InvalidTimestamp => Denial::InvalidTimestamp,
        PopError::Skew { max_skew_secs } => Denial::TimestampSkew { max_skew_secs },
        PopError::Missing(ProofHeader::Nonce) | PopError::NonceControlChars => {
            Denial::InvalidNonce(e.message().to_owned())
        }
        _ => Denial::InvalidProof(e.message().to_owned()),
    }
}

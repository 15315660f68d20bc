//! Replay: record `(agent, nonce)` for the whole window the proof stays valid.

use crate::clock::Every;
use crate::denial::Denial;
use crate::protocol::pop::VerifiedProof;
use crate::store::nonce::{NonceOutcome, NonceStore, record_expiry_ms};

pub(crate) async fn record(
    store: &dyn NonceStore,
    agent: &str,
    nonce: &str,
    proof: VerifiedProof,
    now_ms: u64,
    max_skew_secs: u64,
    margin_ms: u64,
) -> Result<(), Denial> {
    let expires = record_expiry_ms(proof.timestamp, now_ms, max_skew_secs, margin_ms);
    match store.check_and_record(agent, nonce, expires, now_ms).await {
        Ok(NonceOutcome::Fresh) => Ok(()),
        Ok(NonceOutcome::Replay) => Err(Denial::Replay),
        // The agent holds its share of the store: it slows down, the others are unaffected.
        Ok(NonceOutcome::OverQuota) => Err(Denial::RateLimited {
            retry_after_secs: 1,
        }),
        Err(error) => {
            static FAILED: Every = Every::new();
            if let Some(skipped) = FAILED.due(now_ms) {
                tracing::error!(%error, skipped, "nonce store failed");
            }
            Err(Denial::NonceStoreUnavailable)
        }
    }
}

//! Replay: record `(subject, nonce)` for the whole window the proof stays valid.

use crate::clock::Every;
use crate::denial::Denial;
use crate::store::nonce::{NonceOutcome, NonceStore};

/// Records `nonce` for `agent` until `expires_ms` (the end of the proof's window).
pub(crate) async fn record(
    store: &dyn NonceStore,
    agent: &str,
    nonce: &str,
    expires_ms: u64,
    now_ms: u64,
) -> Result<(), Denial> {
    match store
        .check_and_record(agent, nonce, expires_ms, now_ms)
        .await
    {
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

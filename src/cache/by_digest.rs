//! Verified tokens by the SHA-256 of the token, each held until its `exp`: the storage of the
//! AIT and bearer token caches (`ait.rs`, `bearer.rs`), which say when an entry still answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// An entry, and how long it may be held (until the token's `exp`).
struct Held<V> {
    value: Arc<V>,
    lifetime: Duration,
}

impl<V> Clone for Held<V> {
    fn clone(&self) -> Self {
        Held {
            value: self.value.clone(),
            lifetime: self.lifetime,
        }
    }
}

/// Each entry expires when its token does.
struct UntilExp;

impl<V> moka::Expiry<[u8; 32], Held<V>> for UntilExp {
    fn expire_after_create(&self, _: &[u8; 32], held: &Held<V>, _: Instant) -> Option<Duration> {
        Some(held.lifetime)
    }
}

/// A bounded `moka` cache (TinyLFU admission) of verified tokens by digest.
pub(crate) struct ByDigest<V> {
    tokens: moka::sync::Cache<[u8; 32], Held<V>>,
}

impl<V: Send + Sync + 'static> ByDigest<V> {
    /// Holds at most `capacity` tokens.
    pub(crate) fn new(capacity: u64) -> Self {
        ByDigest {
            tokens: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExp)
                .build(),
        }
    }

    pub(crate) fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    pub(crate) fn get(&self, digest: &[u8; 32]) -> Option<Arc<V>> {
        self.tokens.get(digest).map(|held| held.value)
    }

    /// Holds `value` for `left_secs` (its token's time to `exp`); nothing when that is 0.
    pub(crate) fn insert(&self, digest: [u8; 32], value: Arc<V>, left_secs: u64) {
        if left_secs > 0 {
            let lifetime = Duration::from_secs(left_secs);
            self.tokens.insert(digest, Held { value, lifetime });
        }
    }

    /// Tokens held (after pending evictions are applied).
    pub(crate) fn len(&self) -> usize {
        self.tokens.run_pending_tasks();
        usize::try_from(self.tokens.entry_count()).unwrap_or(usize::MAX)
    }
}

//! Shared state at the I/O boundary: the replay (nonce) store and the trust store.
//!
//! Both are traits so that a Redis backend can stand beside the single-replica ones; their
//! methods return boxed futures because a networked store has to await.

pub mod nonce;
pub mod nonce_file;
pub mod nonce_redis;
pub mod redis;
pub mod trust;

/// A store could not answer. The text is for logs only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

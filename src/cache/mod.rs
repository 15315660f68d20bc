//! Every cache, in one place: what the server keeps of slower sources, and for how long.
//!
//! | cache | holds | kind |
//! |---|---|---|
//! | [`keys`] | the registry's signing keys, a bearer issuer's JWKS | one snapshot, swapped whole (`arc-swap`) |
//! | [`crl`] | the registry's CRL | one snapshot, swapped whole (`arc-swap`) |
//! | [`ait`] | verified AITs, until their `exp` | bounded `moka` cache, per-entry expiry |
//! | [`bearer`] | verified bearer tokens, until their `exp` | bounded `moka` cache, per-entry expiry |
//! | [`access`] | the registry's access-token answers | bounded `moka` caches, one registry call per key at a time |
//! | [`trust`] | the trust store's answers, for its TTL and as a fallback | bounded `moka` caches, one store call per agent at a time |
//!
//! The keyed caches are bounded because their keys are chosen by callers. Ages are measured on
//! the injected clock; `moka`'s own expiry (real time) only bounds how long an entry can be held.
//! Revocations (the CRL, pushed events) and nonces never live in an evicting cache: forgetting
//! one would let a revoked agent or a replay through. An evicted *answer* only costs a new
//! lookup, or, when the source is down, a denial.

pub mod access;
pub mod ait;
pub mod bearer;
mod by_digest;
pub mod crl;
pub mod keys;
pub mod trust;

use crate::crypto::PublicKey;

/// A duration `moka` accepts as a time to live: at least a millisecond.
pub(crate) fn held_for(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms.max(1))
}

/// The same public key (one that verified a cached token, and the key set's now).
pub(crate) fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    match (a, b) {
        (PublicKey::Ed25519(a), PublicKey::Ed25519(b)) => a.as_bytes() == b.as_bytes(),
        (PublicKey::P256(a), PublicKey::P256(b)) => a.sec1_uncompressed() == b.sec1_uncompressed(),
        (PublicKey::Rsa(a), PublicKey::Rsa(b)) => a == b,
        _ => false,
    }
}

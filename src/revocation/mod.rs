//! Pushed revocations: registry events (`docs/protocol.md` §8) applied to a revocation overlay
//! that the pipeline checks before the CRL, so a revoked agent is refused within a second.
//!
//! - `overlay`: the revoked agents and token ids (pure state, no I/O).
//! - `consumer`: every replica reads the Redis stream of events into its overlay.
//! - [`publisher`]: the envelopes and the `XADD` that the `revoke` command uses.
//!
//! Without Redis, the admin listener takes the same envelope at `POST /v1/events`.

pub(crate) mod consumer;
pub(crate) mod overlay;
pub mod publisher;

pub use consumer::{StreamSettings, spawn_consumer};
pub use overlay::{Applied, EventCounts, Events, REVOCATION_TTL_MS, TOKEN_REVOKED};
pub use publisher::{publish, revocation_envelope, token_revocation_envelope};

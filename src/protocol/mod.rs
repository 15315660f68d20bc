//! The Clawdentity wire protocol as pure functions over bytes, keys and `now`.
//!
//! Nothing here does I/O or reads a clock: callers pass the time in, which keeps every verdict
//! reproducible from the vectors in `tests/vectors/clawdentity`.

pub mod ait;
pub mod b64;
pub mod bearer;
pub mod crl;
pub mod dpop;
pub mod events;
pub mod ids;
pub mod json;
pub mod jws;
pub mod keys;
pub mod path;
pub mod pop;
pub mod schema;

//! The pipeline's stages, one file each, each one function returning `Result<_, Denial>`.
//! Their order and failure rules live in `pipeline/mod.rs` only.

pub(crate) mod access;
pub(crate) mod bearer;
pub(crate) mod httpsig;
pub(crate) mod mcp;
pub(crate) mod pop;
pub(crate) mod replay;
pub(crate) mod revocation;
pub(crate) mod token;
pub(crate) mod trust;

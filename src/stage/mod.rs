//! The pipeline's stages, one file each, each one function returning `Result<_, Denial>`.
//! Their order and failure rules live in `pipeline.rs` only.

pub mod access;
pub mod bearer;
pub mod pop;
pub mod replay;
pub mod revocation;
pub mod token;
pub mod trust;

//! claw-authz: an Envoy ext_authz server that authenticates Clawdentity AI-agent requests.
//!
//! # Layout
//! - [`protocol`]: the wire formats as pure functions (base64url, DIDs, JWS, AIT, CRL, keys
//!   document, proof of possession, path normalization, registry events).
//! - [`crypto`]: Ed25519 and P-256 verification with the strict rules, on keys parsed once.

#![forbid(unsafe_code)]

pub mod crypto;
pub mod protocol;

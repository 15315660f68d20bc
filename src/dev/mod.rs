//! Tooling, not on the request path: nothing the sidecar runs while serving imports this module.
//!
//! - [`demo`]: `claw-authz demo`, with the registry-outage story in `demo_story.rs`.
//! - [`registry`]: a registry on loopback that mints its own key, AITs and CRL (the demo's, the
//!   bench's), and can hang on demand.
//! - [`sign`]: the client side of the protocol: agent and registry signers (the `sign` command,
//!   the demo, tests).
//! - [`check`]: an Envoy-shaped `CheckRequest` from a method, path, headers and body.
//! - [`cli`]: the `sign` command (headers, a curl command, or a `Check` sent to a sidecar).
//! - [`envoy_process`]: runs a real Envoy in front of claw-authz and an echo upstream.
//! - [`process`]: runs a child process (claw-authz, Redis) and reads its CPU time.
//! - [`memory`]: the memory budget's structures, filled for a counting allocator to measure.

pub mod check;
pub mod cli;
pub mod demo;
mod demo_story;
pub mod envoy_process;
pub mod memory;
pub mod process;
pub mod registry;
pub mod sign;
pub mod tail;

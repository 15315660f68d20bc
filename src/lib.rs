//! claw-authz: an Envoy ext_authz server that authenticates Clawdentity AI-agent requests.
//!
//! # Layout
//! - [`protocol`]: the wire formats as pure functions (base64url, DIDs, JWS, AIT, CRL, keys
//!   document, proof of possession, path normalization, registry events).
//! - [`crypto`]: Ed25519 and P-256 verification with the strict rules, on keys parsed once.
//! - [`request`]: the view of an Envoy `CheckRequest` the pipeline needs.
//! - [`pipeline`]: the stages in order ([`stage`] has one file per stage) under a route
//!   [`policy`]; [`denial`] lists every refusal and [`response`] maps decisions to Envoy.
//! - [`registry`]: the registry trait, its HTTP client behind a timeout and a circuit breaker
//!   per endpoint, and the key, CRL and access-validation caches.
//! - [`store`]: the nonce (replay) stores (memory, file, Redis), the trust stores and the
//!   trust-answer cache. [`revocation`]: pushed revocations (overlay, stream consumer, publisher).
//! - [`config`], [`app`], [`server`]: typed configuration, wiring, and the gRPC/admin servers.
//! - [`clock`]: injected wall-clock time. [`sign`]: the client side (demo, `sign` command, tests).
//! - [`demo`]: the self-contained demo (its registry-outage story in `demo_story.rs`);
//!   [`dev_registry`]: its registry on loopback (also the
//!   bench's); [`envoy`] runs a real Envoy in front
//!   (demo `--envoy`, end-to-end tests). [`bench`]: `claw-authz bench`, the load generator and
//!   benchmark suite.

#![forbid(unsafe_code)]

pub mod app;
pub mod bench;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod demo;
mod demo_story;
pub mod denial;
pub mod dev_registry;
pub mod envoy;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod request;
pub mod response;
pub mod revocation;
pub mod server;
pub mod sign;
pub mod stage;
pub mod store;
pub mod telemetry;

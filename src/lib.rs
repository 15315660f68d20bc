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
//! - [`config`]: configuration, every problem listed at once. [`app`]: wiring (one builder per
//!   concern in `app/wiring.rs`, the observable metrics in `app/observe.rs`). [`server`]: the
//!   gRPC and admin servers. [`telemetry`]: metrics, traces and logs. [`ratelimit`]: limiters.
//! - [`clock`]: injected wall-clock time.
//!
//! Tooling, never imported by the modules above: [`dev`] (the demo, the dev registry, the
//! signers, the check-request builder, the Envoy and child-process runners). The benchmark is a
//! binary of its own, `src/bin/claw-authz-bench/`, built with the `bench` feature.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod app;
pub mod cache;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod denial;
pub mod dev;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub(crate) mod ratelimit;
pub mod registry;
pub mod request;
pub(crate) mod response;
pub mod revocation;
pub mod server;
pub(crate) mod stage;
pub mod store;
pub mod telemetry;

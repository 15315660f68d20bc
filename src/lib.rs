//! claw-authz: an Envoy ext_authz server that authenticates Clawdentity AI-agent requests.
//!
//! # Layout
//! - [`protocol`]: the wire formats as pure functions (base64url, DIDs, JWS, AIT, CRL, keys
//!   document, proof of possession, path normalization, registry events).
//! - [`crypto`]: Ed25519 and P-256 verification with the strict rules, on keys parsed once.
//! - [`httpsig`]: HTTP Message Signatures (RFC 9421): the signature base, `Content-Digest`.
//! - [`request`]: the view of an Envoy `CheckRequest` the pipeline needs.
//! - [`pipeline`]: the table of stages every profile runs, in one order, under a route
//!   [`policy`] (`stage` has one file per stage); [`denial`] lists every refusal and its one
//!   table, `response` maps decisions to Envoy.
//! - [`cache`]: every cache (keys and CRL snapshots; AIT, access and trust answers on `moka`),
//!   returning facts for the stages to judge.
//! - [`registry`]: the registry trait, its HTTP client behind a timeout and a circuit breaker
//!   per endpoint, and a bearer issuer's JWKS source.
//! - [`store`]: the nonce (replay) stores (memory, file, Redis) and the trust stores.
//!   [`revocation`]: pushed revocations (overlay, stream consumer, publisher).
//! - [`config`]: configuration, one reader per section, every problem listed at once.
//!   [`app`]: wiring, one builder per concern. [`server`]: the gRPC and admin servers.
//! - [`metrics`]: the instruments, one method per event, labels from enums; [`telemetry`]: the
//!   exporters, traces and logs. `ratelimit`: limiters.
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
pub mod httpsig;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub(crate) mod ratelimit;
pub mod registry;
pub mod request;
pub(crate) mod response;
pub mod revocation;
pub mod security;
pub mod server;
pub(crate) mod stage;
pub mod store;
pub mod telemetry;

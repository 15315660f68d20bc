//! Conformance runner: every scenario of a middleware vectors file through the real gRPC server.
//!
//! A fake registry on loopback serves each scenario's response lists in order (the last repeats),
//! the trust file is written from the scenario, and an injected clock follows `atMs` (background
//! CRL refreshes that are due by then run before the step's request). Status,
//! `error.code`, `error.message`, `details` (and the exact body bytes) are compared for denials,
//! the identity headers for allows. Scenarios in the table of `docs/deviations.md` are checked against
//! its claw-authz column or skipped where it says "not run".
//!
//! `CLAW_CONFORMANCE_VECTORS` names the file (default `tests/vectors/clawdentity/middleware.json`).
//! Prints one line per scenario and `conformance: N passed, N failed, N skipped`.

mod support;

#[tokio::main]
async fn main() {
    let summary = support::conformance::run(&support::conformance::vectors_path()).await;
    if summary.failed > 0 {
        std::process::exit(1);
    }
}

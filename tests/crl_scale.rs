//! CRLs the size a production registry serves (issue 16): the registry lists every revocation it
//! ever made, about 200 bytes each, so its CRL runs to megabytes. Through the real gRPC server and
//! a real HTTP fake registry on loopback: a revoked agent in the middle of lists of 50, 2,000 and
//! 20,000 revocations is denied `PROXY_AUTH_REVOKED` while another agent is allowed, and a CRL
//! just over `limits.crl_bytes` is a counted refresh failure under the configured stale policy.
//!
//! Prints the time to verify and index each size (`-- --nocapture`).

mod support;

use std::sync::Arc;

use claw_authz::clock::ManualClock;
use claw_authz::dev::sign::random_ulid;
use claw_authz::protocol::crl::{crl_token_from_body, verify_crl};
use claw_authz::protocol::jws::Expectations;
use claw_authz::protocol::keys::parse_keys_document;
use serde_json::json;
use support::registry::Reply;
use support::server::Running;
use support::world::{ISSUER, NOW_MS, World, outcome};

const REVOKED: &str = "401 PROXY_AUTH_REVOKED";

/// A signed `/v1/crl` body revoking `n` agents, alpha's AIT in the middle of the list.
fn crl_body(w: &World, n: usize) -> String {
    let mut revoked: Vec<(String, String)> = (0..n - 1)
        .map(|i| {
            let ulid = random_ulid(NOW_MS - i as u64 * 1000);
            (w.registry.agent_did(&ulid), random_ulid(NOW_MS - i as u64))
        })
        .collect();
    let alpha = (w.registry.agent_did(&w.alpha.ulid), w.alpha.jti.clone());
    revoked.insert(n / 2, alpha);
    let token = w
        .registry
        .sign_crl(&revoked, NOW_MS / 1000 - 10, &random_ulid(NOW_MS));
    json!({ "crl": token }).to_string()
}

async fn serve(w: &World, extra: &str, clock: &ManualClock) -> Running {
    let s = support::server::start(&w.yaml(extra), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    let p = &s.app.pipeline;
    p.crl.refresh_if_due(&p.keys).await;
    s
}

/// What `/readyz` says about the CRL.
async fn readiness(s: &Running) -> serde_json::Value {
    let url = format!("http://{}/readyz", s.admin);
    let body = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["crl"].clone()
}

#[tokio::test]
async fn a_revoked_agent_in_the_middle_of_a_large_crl_is_denied() {
    for n in [50, 2_000, 20_000] {
        let w = World::new(&format!("crl-scale-{n}")).await;
        let body = crl_body(&w, n);
        w.crl.set(vec![Reply::Body(200, body.clone())]);
        let clock = ManualClock::at(NOW_MS);
        let mut s = serve(&w, "", &clock).await;
        assert_eq!(s.app.pipeline.crl.refresh_counts(), (1, 0), "{n}");

        let alpha = w.signed(&w.alpha, "GET", "/v1/x", b"", "n-alpha", &[]);
        assert_eq!(outcome(&s.check(alpha).await), REVOKED, "{n}");
        let beta = w.signed(&w.beta, "GET", "/v1/x", b"", "n-beta", &[]);
        assert_eq!(outcome(&s.check(beta).await), "200", "{n}");
        let crl = readiness(&s).await;
        assert_eq!(crl["state"], "fresh");
        assert_eq!(crl["revocations"], n);

        let (verify_ms, index_ms) = verify_and_index(&w, &body, n);
        println!(
            "figure: CRL of {n} revocations ({} bytes): verify {verify_ms:.2} ms, index \
             {index_ms:.2} ms",
            body.len()
        );
        s.stop().await;
    }
}

/// The time to verify the signed list and to build its lookup set, best of three.
#[allow(clippy::disallowed_methods)] // wall-clock figures, printed; nothing waits on them
fn verify_and_index(w: &World, body: &str, n: usize) -> (f64, f64) {
    let keys = parse_keys_document(w.registry.keys_document().as_bytes()).unwrap();
    let expect = Expectations {
        issuer: Some(ISSUER),
        now_secs: NOW_MS / 1000,
    };
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let token = crl_token_from_body(body.as_bytes()).unwrap();
        let claims = verify_crl(&token, &keys, expect).unwrap();
        let verified = started.elapsed().as_secs_f64() * 1e3;
        let started = std::time::Instant::now();
        let index = claims.revoked_jtis();
        let indexed = started.elapsed().as_secs_f64() * 1e3;
        assert_eq!(index.len(), n);
        best = (best.0.min(verified), best.1.min(indexed));
    }
    best
}

#[tokio::test]
async fn a_crl_just_over_its_size_limit_is_a_failed_refresh_under_the_stale_policy() {
    const LIMIT: usize = 64 * 1024;
    for (behavior, want) in [
        ("fail-open", "200"),
        ("fail-closed", "503 PROXY_AUTH_DEPENDENCY_UNAVAILABLE"),
    ] {
        let w = World::new(&format!("crl-limit-{behavior}")).await;
        // Grow the list until its body is just over the limit; the list one entry shorter fits.
        let mut n = 250;
        let (fits, over) = loop {
            let (a, b) = (crl_body(&w, n), crl_body(&w, n + 1));
            if a.len() <= LIMIT && b.len() > LIMIT {
                break (a, b);
            }
            n = if b.len() <= LIMIT { n + 1 } else { n - 1 };
        };
        assert!(over.len() - LIMIT < 300, "just over: {} bytes", over.len());
        let clock = ManualClock::at(NOW_MS);
        let yaml = format!("limits:\n  crl_bytes: {LIMIT}\ncrl:\n  stale_behavior: {behavior}\n");

        w.crl.set(vec![Reply::Body(200, over)]);
        let mut s = serve(&w, &yaml, &clock).await;
        // Every attempt so far (the start's and the background refresher's, which retries every
        // 5 s while the list is stale) failed; what readiness and the metrics report lies between
        // the counts read before and after them.
        let failures = s.app.pipeline.crl.refresh_counts().1;
        assert!(failures >= 1, "{behavior}");
        let alpha = w.signed(&w.alpha, "GET", "/v1/x", b"", "n-1", &[]);
        assert_eq!(outcome(&s.check(alpha).await), want, "{behavior}");
        assert_eq!(s.app.pipeline.crl.stale_checks(), 1);
        let ready = readiness(&s).await;
        let metrics = s.app.telemetry.prometheus_text();
        let (ok, after) = s.app.pipeline.crl.refresh_counts();
        assert_eq!(ok, 0, "{behavior}");
        assert_eq!(ready["state"], "never-loaded");
        assert_eq!(ready["staleBehavior"], behavior);
        assert_eq!(ready["refreshesOk"], 0);
        let reported = ready["refreshFailures"].as_u64().unwrap();
        assert!((failures..=after).contains(&reported), "{ready}");
        assert_eq!(
            ready["lastFailure"],
            "Registry response is over its size limit"
        );
        let counted = (failures..=after).any(|n| {
            metrics.contains(&format!(
                r#"claw_authz_crl_refreshes_total{{result="failed"}} {n}"#
            ))
        });
        assert!(counted, "{metrics}");

        // The same list one revocation shorter is under the limit and revokes alpha.
        w.crl.set(vec![Reply::Body(200, fits)]);
        clock.advance_ms(5_000);
        let p = &s.app.pipeline;
        p.crl.refresh_if_due(&p.keys).await;
        assert_eq!(p.crl.refresh_counts().0, 1, "{behavior}");
        let alpha = w.signed(&w.alpha, "GET", "/v1/x", b"", "n-2", &[]);
        assert_eq!(outcome(&s.check(alpha).await), REVOKED, "{behavior}");
        assert_eq!(readiness(&s).await["lastFailure"], serde_json::Value::Null);
        s.stop().await;
    }
}

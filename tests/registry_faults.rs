//! The registry is never a single point of failure (`docs/deviations.md` items 1-6): the real gRPC
//! server against a fake registry on loopback that fails on demand, one test per case, with
//! exact outcomes and registry call counts. Time is the injected clock, advanced by hand.
//!
//! The last test prints the closing figures (`-- --nocapture`): registry calls per 1,000 checks
//! of known agents, and check latency for known agents while the registry hangs vs while it is
//! healthy.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use claw_authz::app::Parts;
use claw_authz::clock::{Clock, ManualClock};
use claw_authz::dev::check::check_request;
use claw_authz::dev::sign::{Ed25519Signer, RegistrySigner};
use claw_authz::registry::BoxFuture;
use claw_authz::registry::breaker::State;
use claw_authz::store::StoreError;
use claw_authz::store::trust::TrustStore;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use support::registry::Reply;
use support::server::Running;
use support::world::{Agent, ISSUER, NOW_MS, World, denied, mint, outcome};

const ALLOWED: &str = "200";
const UNAVAILABLE: &str = "503 PROXY_AUTH_DEPENDENCY_UNAVAILABLE";

/// A check on the access-token route, signed at the clock's time.
fn message(agent: &Agent, clock: &ManualClock, nonce: &str, token: &str) -> CheckRequest {
    agent.message(clock.now_ms(), nonce, token)
}

/// Sends every request at once; outcomes in request order.
async fn all_at_once(s: &Running, requests: Vec<CheckRequest>) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for (i, request) in requests.into_iter().enumerate() {
        let mut client = s.client.clone();
        set.spawn(async move {
            (
                i,
                outcome(&client.check(request).await.unwrap().into_inner()),
            )
        });
    }
    let mut out = set.join_all().await;
    out.sort();
    out.into_iter().map(|(_, o)| o).collect()
}

async fn refresh_crl(s: &Running) {
    let p = &s.app.pipeline;
    p.crl.refresh_if_due(&p.keys).await;
}

async fn started(w: &World, extra: &str, clock: &ManualClock) -> Running {
    started_yaml(&w.yaml(extra), clock).await
}

async fn started_yaml(yaml: &str, clock: &ManualClock) -> Running {
    let s = support::server::start(yaml, Arc::new(clock.clone())).await;
    s.wait_ready().await;
    refresh_crl(&s).await;
    s
}

#[tokio::test]
async fn registry_down_for_ten_minutes_keeps_seen_agents_allowed() {
    let (logs, _guard) = support::logs::capture();
    let w = World::new("down").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = started(&w, "", &clock).await;
    let token = "clw_agt_alpha";
    assert_eq!(
        outcome(&s.check(message(&w.alpha, &clock, "n-0", token)).await),
        ALLOWED
    );
    assert_eq!(
        (w.keys.calls(), w.crl.calls(), w.validate.calls()),
        (1, 1, 1)
    );

    for endpoint in [&w.keys, &w.crl, &w.validate] {
        endpoint.go_down().await;
    }
    // Ten minutes in 30 s steps, the CRL refresher running whenever it is due.
    for step in 1..=20 {
        clock.advance_ms(30_000);
        refresh_crl(&s).await;
        let r = s
            .check(message(&w.alpha, &clock, &format!("n-{step}"), token))
            .await;
        assert_eq!(outcome(&r), ALLOWED, "step {step}");
    }
    // Fresh for the first 60 s; past that, every check used the stale valid answer.
    let p = &s.app.pipeline;
    assert_eq!(p.access.stale_used(), 18);
    assert_eq!(
        logs.count("registry validation unavailable; using a stale valid answer"),
        18
    );
    assert_eq!((p.keys.stale_served(), p.crl.stale_checks()), (0, 0));
    assert_eq!(s.app.registry.validate.state(), State::Open);

    // An agent whose token was never validated cannot be vouched for.
    let r = s
        .check(message(&w.beta, &clock, "n-beta", "clw_agt_beta"))
        .await;
    assert_eq!(outcome(&r), UNAVAILABLE);
    assert!(
        denied(&r)
            .2
            .contains(r#""details":{"reason":"Registry circuit breaker is open"}"#)
    );
    s.stop().await;
}

#[tokio::test]
async fn a_registry_answering_500_opens_the_breaker_and_one_probe_per_cooldown_closes_it() {
    let (logs, _guard) = support::logs::capture();
    let w = World::new("breaker").await;
    w.validate.set(vec![Reply::Status(500)]);
    let clock = ManualClock::at(NOW_MS);
    // Hundreds of never-seen tokens from one agent: past the per-agent budget of registry
    // calls (issue 18) they would get 429 before reaching the breaker this test watches.
    let budget = "access:\n  calls_per_agent_per_minute: 100000\n";
    let mut s = started(&w, budget, &clock).await;
    let app = s.app.clone();
    let breaker = &app.registry.validate;
    let mut n = 0;
    let mut fresh = |count: usize| -> Vec<CheckRequest> {
        (0..count)
            .map(|_| {
                n += 1;
                message(&w.alpha, &clock, &format!("n-{n}"), &format!("t-{n}"))
            })
            .collect()
    };

    for request in fresh(5) {
        let r = s.check(request).await;
        assert_eq!(outcome(&r), UNAVAILABLE);
        assert!(denied(&r).2.contains(r#""details":{"status":500}"#));
    }
    assert_eq!(w.validate.calls(), 5);
    assert_eq!(breaker.state(), State::Open);

    // Open: 200 concurrent checks, each with a token never seen, and no call gets through.
    let outcomes = all_at_once(&s, fresh(200)).await;
    assert!(outcomes.iter().all(|o| o == UNAVAILABLE));
    assert_eq!(w.validate.calls(), 5);
    clock.advance_ms(29_999);
    all_at_once(&s, fresh(50)).await;
    assert_eq!(w.validate.calls(), 5);

    // Cooldown over: exactly one probe; it fails, so the breaker opens for another cooldown.
    clock.advance_ms(1);
    let outcomes = all_at_once(&s, fresh(200)).await;
    assert!(outcomes.iter().all(|o| o == UNAVAILABLE));
    assert_eq!(w.validate.calls(), 6);
    assert_eq!(s.app.registry.validate.state(), State::Open);

    // The registry recovers; the next probe succeeds and closes the breaker.
    w.validate.set(vec![Reply::Status(204)]);
    clock.advance_ms(30_000);
    let probe = fresh(1).pop().unwrap();
    assert_eq!(outcome(&s.check(probe).await), ALLOWED);
    assert_eq!(w.validate.calls(), 7);
    assert_eq!(s.app.registry.validate.state(), State::Closed);
    let outcomes = all_at_once(&s, fresh(100)).await;
    assert!(outcomes.iter().all(|o| o == ALLOWED));
    assert_eq!(w.validate.calls(), 107);

    // Each transition logged once: closed -> open -> half-open -> open -> half-open -> closed.
    assert_eq!(logs.count("registry circuit breaker opened"), 2);
    assert_eq!(logs.count("registry circuit breaker half-open"), 2);
    assert_eq!(logs.count("registry circuit breaker closed"), 1);
    assert_eq!(breaker.transitions(), 5);
    s.stop().await;
}

#[tokio::test]
async fn a_registry_answering_after_15_s_fails_the_check_fast_at_its_deadline() {
    let w = World::new("slow").await;
    w.validate.set(vec![Reply::Delay(
        Duration::from_secs(15),
        Box::new(Reply::Status(204)),
    )]);
    let clock = ManualClock::at(NOW_MS);
    // Background calls may take 5 s, request-path calls 2 s; the Check allows 800 ms.
    let s = started_yaml(&w.yaml_with("  request_timeout_ms: 2000\n", ""), &clock).await;
    let timed = |budget: Duration, nonce: &str| {
        let mut call = tonic::Request::new(message(&w.alpha, &clock, nonce, "clw_agt_slow"));
        call.set_timeout(budget);
        let mut client = s.client.clone();
        async move {
            let started = tokio::time::Instant::now();
            // The client enforces grpc-timeout itself: an answer means one within the budget.
            let r = client
                .check(call)
                .await
                .expect("answered within grpc-timeout");
            (r.into_inner(), started.elapsed())
        }
    };

    let (r, took) = timed(Duration::from_millis(800), "n-1").await;
    assert_eq!(outcome(&r), UNAVAILABLE);
    assert!(
        denied(&r)
            .2
            .contains(r#""details":{"reason":"The operation was aborted due to timeout"}"#)
    );
    // It gave up at grpc-timeout less the 25 ms margin, not at 2 s or 5 s.
    assert!(took >= Duration::from_millis(775), "{took:?}");
    assert_eq!(w.validate.calls(), 1);

    // With a generous grpc-timeout, the request-path timeout (2 s) is the bound.
    let (r, took) = timed(Duration::from_secs(10), "n-2").await;
    assert_eq!(outcome(&r), UNAVAILABLE);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(w.validate.calls(), 2);
    s.stop().await;
}

#[tokio::test]
async fn a_rotated_key_is_taken_after_one_refresh_and_random_kids_cost_one_fetch_per_cooldown() {
    let w = World::new("rotation").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = started(&w, "", &clock).await;
    assert_eq!(w.keys.calls(), 1);

    // The registry rotates to k2 (k1 still listed); a token signed with k2 arrives.
    let k2 = RegistrySigner::new("k2", ISSUER, Ed25519Signer::from_seed([9; 32]));
    let mut doc: serde_json::Value = serde_json::from_str(&w.registry.keys_document()).unwrap();
    let k2_doc: serde_json::Value = serde_json::from_str(&k2.keys_document()).unwrap();
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(k2_doc["keys"][0].clone());
    w.keys.set(vec![Reply::Body(200, doc.to_string())]);
    let rotated = Agent {
        ait: mint(
            &k2,
            &w.alpha.key,
            &w.alpha.ulid,
            "01KDVA7EC1AT0000000000000K",
        ),
        key: Ed25519Signer::from_seed([2; 32]),
        ulid: w.alpha.ulid.clone(),
        jti: "01KDVA7EC1AT0000000000000K".into(),
    };
    let r = s
        .check(message(&rotated, &clock, "n-k2", "clw_agt_k2"))
        .await;
    assert_eq!(outcome(&r), ALLOWED);
    assert_eq!(w.keys.calls(), 2, "one refresh picked up k2");

    // 10,000 tokens naming random unknown kids: 5,000 within one cooldown, 5,000 after it.
    let forged = || {
        let kid = format!("rnd-{:032x}", uuid::Uuid::new_v4().as_u128());
        let signer = RegistrySigner::new(&kid, ISSUER, Ed25519Signer::from_seed([7; 32]));
        let ait = mint(&signer, &w.alpha.key, &w.alpha.ulid, &w.alpha.jti);
        check_request(
            "GET",
            "/v1/x",
            &[("authorization", &format!("Claw {ait}"))],
            b"",
        )
    };
    for round in 0..2 {
        for _ in 0..10 {
            let requests = (0..500).map(|_| forged());
            let outcomes = all_at_once(&s, requests.collect()).await;
            assert!(
                outcomes.iter().all(|o| o == "401 PROXY_AUTH_INVALID_AIT"),
                "{:?}",
                &outcomes[..3]
            );
        }
        let fetched = w.keys.calls() - 2;
        assert_eq!(
            fetched,
            round,
            "keys fetches after {} random kids",
            (round + 1) * 5000
        );
        clock.advance_ms(30_000);
    }
    s.stop().await;
}

#[tokio::test]
async fn a_key_the_registry_drops_stops_the_tokens_it_signed_even_once_cached() {
    let w = World::new("dropped-key").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = started(&w, "", &clock).await;
    for n in 0..2 {
        let r = s
            .check(message(&w.alpha, &clock, &format!("n-{n}"), "clw_agt_a"))
            .await;
        assert_eq!(outcome(&r), ALLOWED);
    }
    let app = s.app.clone();
    let aits = || app.pipeline.aits.counts.get();
    assert_eq!(aits(), [1, 0, 1], "verified once, then from the cache");

    // The registry replaces k1 by k2; a token signed with k2 makes claw-authz fetch the keys.
    let k2 = RegistrySigner::new("k2", ISSUER, Ed25519Signer::from_seed([9; 32]));
    w.keys.set(vec![Reply::Body(200, k2.keys_document())]);
    let rotated = Agent {
        ait: mint(
            &k2,
            &w.alpha.key,
            &w.alpha.ulid,
            "01KDVA7EC1AT0000000000000K",
        ),
        key: Ed25519Signer::from_seed([2; 32]),
        ulid: w.alpha.ulid.clone(),
        jti: "01KDVA7EC1AT0000000000000K".into(),
    };
    let r = s
        .check(message(&rotated, &clock, "n-k2", "clw_agt_k2"))
        .await;
    assert_eq!(outcome(&r), ALLOWED);
    assert_eq!(w.keys.calls(), 2);

    // The cached k1 token no longer answers: k1 is gone from the key set.
    let r = s.check(message(&w.alpha, &clock, "n-2", "clw_agt_a")).await;
    assert_eq!(outcome(&r), "401 PROXY_AUTH_INVALID_AIT");
    assert_eq!(aits(), [1, 0, 3]);
    assert_eq!(w.keys.calls(), 2, "refused within the unknown-kid cooldown");
    s.stop().await;
}

#[tokio::test]
async fn a_crl_past_its_max_age_fails_closed_or_open_as_configured() {
    for (behavior, want) in [("fail-closed", UNAVAILABLE), ("fail-open", ALLOWED)] {
        let (logs, _guard) = support::logs::capture();
        let w = World::new(&format!("crl-{behavior}")).await;
        let clock = ManualClock::at(NOW_MS);
        let yaml = format!("crl:\n  stale_behavior: {behavior}\n");
        let mut s = started(&w, &yaml, &clock).await;
        assert_eq!(w.crl.calls(), 1);
        w.crl.set(vec![Reply::Status(500)]);
        clock.set_ms(NOW_MS + 900_001);
        refresh_crl(&s).await;
        assert_eq!(w.crl.calls(), 2);
        let r = s
            .check(
                w.alpha
                    .request(clock_ms(&clock), "GET", "/v1/x", b"", "n-1", &[]),
            )
            .await;
        assert_eq!(outcome(&r), want, "{behavior}");
        assert_eq!(s.app.pipeline.crl.stale_checks(), 1);
        assert_eq!(logs.count("CRL is older than crl.max_age_secs"), 1);
        if behavior == "fail-closed" {
            assert!(
                denied(&r)
                    .2
                    .contains(r#""message":"Registry CRL is unavailable","requestId":"#)
            );
            assert!(
                denied(&r).2.contains(
                    r#""details":{"reason":"CRL cache is stale and cannot be refreshed"}"#
                )
            );
        } else {
            assert_eq!(logs.count("fail-open: allowing on the last good list"), 1);
        }
        s.stop().await;
    }
}

/// Issue 18, finding 4: once a signed CRL with revocations is held, an unsigned 404 does not
/// withdraw them; it is a failed refresh, counted and on `/readyz`.
#[tokio::test]
async fn a_404_after_a_signed_crl_keeps_the_revocations() {
    const REVOKED: &str = "401 PROXY_AUTH_REVOKED";
    let w = World::new("crl-404-after-signed").await;
    let clock = ManualClock::at(NOW_MS);
    let alpha = w.registry.agent_did(&w.alpha.ulid);
    let token = w.registry.sign_crl(
        &[(alpha, w.alpha.jti.clone())],
        NOW_MS / 1000 - 10,
        "01KDVDKFD0CR00000000000404",
    );
    w.crl
        .set(vec![Reply::Body(200, format!(r#"{{"crl":"{token}"}}"#))]);
    let mut s = started(&w, "", &clock).await;
    let get = |clock: &ManualClock, nonce: &str| {
        w.alpha
            .request(clock_ms(clock), "GET", "/v1/x", b"", nonce, &[])
    };
    assert_eq!(outcome(&s.check(get(&clock, "n-1")).await), REVOKED);
    w.crl.set(vec![Reply::json(
        404,
        &serde_json::json!({"error": {"code": "CRL_NOT_FOUND"}}),
    )]);
    clock.advance_ms(300_001);
    refresh_crl(&s).await;
    assert_eq!(w.crl.calls(), 2);
    assert_eq!(outcome(&s.check(get(&clock, "n-2")).await), REVOKED);
    let crl = s.app.pipeline.crl.status();
    assert_eq!((crl.revocations, crl.refresh_failures), (1, 1));
    assert_eq!(
        crl.last_failure.as_deref(),
        Some("a 404 after a signed CRL with revocations was ignored")
    );
    s.stop().await;
}

/// Issue 18, finding 5: Checks sent with `grpc-timeout: 1n` end their registry calls at once,
/// but the registry is not judged by the caller's deadline: the breaker stays closed and the
/// next agent is validated.
#[tokio::test]
async fn a_one_nanosecond_deadline_does_not_open_the_breaker() {
    let w = World::new("deadline-1n").await;
    w.validate.set(vec![Reply::Delay(
        Duration::from_millis(50),
        Box::new(Reply::Status(204)),
    )]);
    let clock = ManualClock::at(NOW_MS);
    let s = started_yaml(&w.yaml_with("  breaker_failures: 2\n", ""), &clock).await;
    for i in 0..10 {
        let mut call = tonic::Request::new(message(&w.alpha, &clock, &format!("n-{i}"), "t-1"));
        call.metadata_mut()
            .insert("grpc-timeout", "1n".parse().unwrap());
        let mut client = s.client.clone();
        // Whatever the answer (the call may be cut off on either side), nothing is judged.
        let _ = client.check(call).await;
    }
    assert_eq!(s.app.registry.validate.state(), State::Closed);
    let mut client = s.client.clone();
    let r = client
        .check(message(&w.beta, &clock, "n-beta", "t-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome(&r), ALLOWED);
    s.stop().await;
}

/// Issue 18, finding 2, as the attack: agent alpha sends 600 requests in a minute, each with a
/// fresh random access token; the registry refuses unknown tokens (401) and throttles past 120
/// calls a minute (429). Alpha costs the registry at most its per-agent budget, beta (a known
/// token) is allowed throughout, and the validate breaker stays closed.
#[tokio::test]
async fn random_access_tokens_from_one_agent_do_not_deny_other_agents() {
    use support::registry::Rule;
    let w = World::new("random-access-tokens").await;
    w.validate
        .set(vec![Reply::By(Rule(Arc::new(|request, call| {
            let token = request
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("x-claw-agent-access"))
                .map(|(_, value)| value.as_str());
            match (call > 120, token) {
                (true, _) => Reply::Status(429),
                (false, Some("clw_agt_beta")) => Reply::Status(204),
                (false, _) => Reply::Status(401),
            }
        })))]);
    let clock = ManualClock::at(NOW_MS);
    let mut s = started(&w, "", &clock).await;
    let (mut refused, mut limited) = (0, 0);
    for i in 0..600 {
        let random = format!("clw_agt_{}", uuid::Uuid::new_v4().simple());
        let r = s
            .check(message(&w.alpha, &clock, &format!("a-{i}"), &random))
            .await;
        match outcome(&r).as_str() {
            "401 PROXY_AGENT_ACCESS_INVALID" => refused += 1,
            "429 PROXY_RATE_LIMIT_EXCEEDED" => limited += 1,
            other => panic!("alpha's request {i}: {other}"),
        }
        if i % 20 == 0 {
            let r = s
                .check(message(&w.beta, &clock, &format!("b-{i}"), "clw_agt_beta"))
                .await;
            assert_eq!(outcome(&r), ALLOWED, "beta during alpha's request {i}");
        }
    }
    // Alpha's budget is 30 registry calls a minute; beta needed one.
    assert_eq!((refused, limited), (30, 570));
    assert_eq!(w.validate.calls(), 31);
    assert_eq!(s.app.registry.validate.state(), State::Closed);
    // A minute later alpha has a new budget.
    clock.advance_ms(60_000);
    let r = s
        .check(message(&w.alpha, &clock, "a-late", "clw_agt_late"))
        .await;
    assert_eq!(outcome(&r), "401 PROXY_AGENT_ACCESS_INVALID");
    s.stop().await;
}

fn clock_ms(clock: &ManualClock) -> u64 {
    clock.now_ms()
}

/// A trust store that knows a fixed set of agents and fails on demand.
struct FlakyTrust {
    known: Vec<String>,
    failing: AtomicBool,
}

impl FlakyTrust {
    fn answer(&self, answer: bool) -> BoxFuture<'_, Result<bool, StoreError>> {
        let out = match self.failing.load(Ordering::SeqCst) {
            true => Err(StoreError("connection refused".into())),
            false => Ok(answer),
        };
        Box::pin(std::future::ready(out))
    }
}

impl TrustStore for FlakyTrust {
    fn is_revoked<'a>(&'a self, _: &'a str, _: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.answer(false)
    }

    fn is_known<'a>(&'a self, agent_did: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.answer(self.known.iter().any(|k| k == agent_did))
    }
}

#[tokio::test]
async fn a_failing_trust_store_uses_cached_decisions_and_denies_403_without_one() {
    let w = World::new("trust").await;
    let clock = ManualClock::at(NOW_MS);
    let did = |a: &Agent| w.registry.agent_did(&a.ulid);
    let store = Arc::new(FlakyTrust {
        known: vec![did(&w.alpha), did(&w.beta)],
        failing: AtomicBool::new(false),
    });
    let parts = Parts {
        trust: Some(store.clone()),
        ..Parts::default()
    };
    let mut s = support::server::start_with(&w.yaml(""), Arc::new(clock.clone()), parts).await;
    s.wait_ready().await;
    let get = |agent: &Agent, nonce: &str| {
        agent.request(clock_ms(&clock), "GET", "/v1/x", b"", nonce, &[])
    };
    assert_eq!(outcome(&s.check(get(&w.alpha, "n-1")).await), ALLOWED);
    assert_eq!(
        outcome(&s.check(get(&w.stranger, "n-2")).await),
        "403 PROXY_AUTH_FORBIDDEN"
    );

    store.failing.store(true, Ordering::SeqCst);
    // Past the 120 s trust TTL, so only the fallback can answer.
    clock.advance_ms(121_000);
    assert_eq!(outcome(&s.check(get(&w.alpha, "n-3")).await), ALLOWED);
    assert_eq!(
        outcome(&s.check(get(&w.stranger, "n-4")).await),
        "403 PROXY_AUTH_FORBIDDEN",
        "a cached 'unknown' stays unknown"
    );
    // Beta is known to the store but was never looked up: no cached decision, so 403.
    let r = s.check(get(&w.beta, "n-5")).await;
    assert_eq!(outcome(&r), "403 PROXY_AUTH_FORBIDDEN");
    assert!(
        denied(&r)
            .2
            .contains(&format!(r#""details":{{"agentDid":"{}"}}"#, did(&w.beta)))
    );
    // Fallbacks: alpha's revocation and known answers, and the same two for the stranger.
    assert_eq!(s.app.pipeline.trust.stale_used(), 4);

    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(outcome(&s.check(get(&w.beta, "n-6")).await), ALLOWED);
    s.stop().await;
}

#[tokio::test]
async fn the_conformance_runner_still_passes_every_scenario() {
    let summary = support::conformance::run(&support::conformance::vectors_path()).await;
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert_eq!(summary.passed + summary.skipped, summary.total);
    assert!(summary.passed >= 34, "{summary:?}");
}

fn calls(w: &World) -> [usize; 3] {
    [w.keys.calls(), w.crl.calls(), w.validate.calls()]
}

/// 1,000 checks by the known agents in turn, `step_ms` of clock apart, the CRL refresher running
/// whenever due; returns the registry calls made (keys, crl, validate).
async fn workload(s: &mut Running, w: &World, clock: &ManualClock, step_ms: u64) -> [usize; 3] {
    let agents = w.known();
    let before = calls(w);
    for i in 0..1000 {
        clock.advance_ms(step_ms);
        refresh_crl(s).await;
        let agent = agents[i % agents.len()];
        let nonce = format!("s-{step_ms}-{i}");
        let token = format!("clw_agt_{}", agent.ulid);
        let r = s.check(message(agent, clock, &nonce, &token)).await;
        assert_eq!(outcome(&r), ALLOWED);
    }
    let after = calls(w);
    [0, 1, 2].map(|e| after[e] - before[e])
}

/// The injected clock following real time from `base_ms`.
struct Following {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl Clock for Following {
    fn now_ms(&self) -> u64 {
        self.base_ms + u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn message_at(agent: &Agent, at_ms: u64, nonce: &str) -> CheckRequest {
    agent.message(at_ms, nonce, &format!("clw_agt_{}", agent.ulid))
}

/// Latency percentiles in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> [u128; 4] {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    [at(0.50), at(0.99), at(0.999), *samples.last().unwrap()].map(|d| d.as_micros())
}

/// The closing figures of issue 5. Run with `-- --nocapture` (and `--release` for realistic
/// latencies); `CLAW_FIGURE_PHASE_MS` sets the length of each latency phase (default 3 s).
#[tokio::test]
async fn figures_registry_calls_per_1000_checks_and_latency_while_the_registry_hangs() {
    let w = World::with_crew("figures", 8).await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = started(&w, "", &clock).await;
    let agents = w.known();
    let token = |a: &Agent| format!("clw_agt_{}", a.ulid);
    for (i, agent) in agents.iter().enumerate() {
        let r = s
            .check(message(agent, &clock, &format!("w-{i}"), &token(agent)))
            .await;
        assert_eq!(outcome(&r), ALLOWED);
    }

    // 1. A steady workload: the 10 known agents in turn, 1,000 checks at 100 checks/s, the CRL
    //    refresher running whenever due.
    let dense = workload(&mut s, &w, &clock, 10).await;
    assert_eq!(
        dense,
        [0, 0, 0],
        "no registry call in 10 s of steady traffic"
    );
    println!(
        "figure: registry calls per 1,000 checks, 10 known agents at 100 checks/s: {} (keys {}, crl {}, validate {})",
        dense.iter().sum::<usize>(),
        dense[0],
        dense[1],
        dense[2]
    );
    // The same 1,000 checks spread over 10 minutes: each agent's validation is renewed (in the
    // background, from 48 s of age) about every 50 s, and the CRL every 5 minutes.
    let sparse = workload(&mut s, &w, &clock, 600).await;
    println!(
        "figure: registry calls per 1,000 checks, 10 known agents at 1.7 checks/s: {} (keys {}, crl {}, validate {})",
        sparse.iter().sum::<usize>(),
        sparse[0],
        sparse[1],
        sparse[2]
    );

    s.stop().await;

    // 2. Latency on a clock that follows real time, the timings scaled down so that phases of a
    //    few seconds cover many validation lifetimes: access TTL 2 s (renewed from 1.6 s),
    //    background timeout 200 ms, breaker open 1 s. Healthy and hanging phases alternate in
    //    one run; every check is a known agent's and must be allowed.
    let phase = Duration::from_millis(
        std::env::var("CLAW_FIGURE_PHASE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3_000),
    );
    let w = World::with_crew("figures-latency", 8).await;
    let clock = Arc::new(Following {
        base_ms: NOW_MS,
        start: tokio::time::Instant::now(),
    });
    let yaml = w.yaml_with(
        "  timeout_ms: 200\n  breaker_open_secs: 1\n",
        "access:\n  ttl_secs: 2\n",
    );
    let mut s = support::server::start(&yaml, clock.clone()).await;
    s.wait_ready().await;
    let agents = w.known();
    let (mut healthy, mut hanging) = (Vec::new(), Vec::new());
    let (mut n, mut slow_hanging, mut hang_calls) = (0, 0, 0);
    for round in 0..4 {
        let hang = round % 2 == 1;
        let replies = |ok: Reply| if hang { vec![Reply::Hang] } else { vec![ok] };
        w.keys
            .set(replies(Reply::Body(200, w.registry.keys_document())));
        w.crl.set(replies(Reply::Status(404)));
        w.validate.set(replies(Reply::Status(204)));
        let (began, calls_before) = (tokio::time::Instant::now(), w.validate.calls());
        while began.elapsed() < phase {
            let agent = agents[n % agents.len()];
            n += 1;
            let request = message_at(agent, clock.now_ms(), &format!("l-{n}"));
            let mut call = tonic::Request::new(request);
            call.set_timeout(Duration::from_millis(500));
            let started = tokio::time::Instant::now();
            let r = s.client.check(call).await.unwrap().into_inner();
            let took = started.elapsed();
            assert_eq!(outcome(&r), ALLOWED);
            if hang {
                slow_hanging += usize::from(took >= Duration::from_millis(400));
                hanging.push(took);
            } else {
                healthy.push(took);
            }
        }
        if hang {
            hang_calls += w.validate.calls() - calls_before;
        }
    }
    // The hanging registry was really asked (background renewals), and expired answers were
    // served from the cache while it hung.
    assert!(hang_calls > 0);
    assert!(s.app.pipeline.access.stale_used() > 0);
    let (hn, xn) = (healthy.len(), hanging.len());
    let (h, x) = (percentiles(healthy), percentiles(hanging));
    println!(
        "figure: check latency, known agents (us): registry healthy ({hn} checks) p50 {} p99 {} p99.9 {} max {}; registry hanging ({xn} checks) p50 {} p99 {} p99.9 {} max {}; p99 ratio {:.2}; checks that waited 400 ms or more while it hung: {slow_hanging}; validate calls that hung: {hang_calls}",
        h[0],
        h[1],
        h[2],
        h[3],
        x[0],
        x[1],
        x[2],
        x[3],
        x[1] as f64 / h[1] as f64
    );
    s.stop().await;
}

/// Issue 19: the registry's calls follow a redirect only within the origin first called. A
/// redirect to another origin (another host or port, or HTTPS to HTTP) is a failed call: the
/// other origin is never asked, and with no keys the check gets 503.
#[tokio::test]
async fn a_registry_redirect_to_another_origin_is_not_followed() {
    use support::registry::FakeEndpoint;
    let w = World::new("redirect").await;
    let elsewhere = FakeEndpoint::start(
        "/.well-known/claw-keys.json",
        vec![Reply::Body(200, w.registry.keys_document())],
    )
    .await;
    w.keys
        .set(vec![Reply::Redirect(302, elsewhere.url.clone())]);
    let clock = ManualClock::at(NOW_MS);
    let mut s = support::server::start(&w.yaml(""), Arc::new(clock.clone())).await;
    let r = s
        .check(w.signed(&w.alpha, "GET", "/v1/x", b"", "n-1", &[]))
        .await;
    assert_eq!(outcome(&r), UNAVAILABLE);
    assert_eq!(elsewhere.calls(), 0, "the other origin was never called");
    assert!(w.keys.calls() >= 1);

    // Within the origin a redirect is followed.
    let moved = w
        .keys
        .url
        .replace("/.well-known/claw-keys.json", "/moved/keys.json");
    w.keys.set(vec![
        Reply::Redirect(307, moved),
        Reply::Body(200, w.registry.keys_document()),
    ]);
    clock.advance_ms(60_000);
    let r = s
        .check(w.signed(&w.alpha, "GET", "/v1/x", b"", "n-2", &[]))
        .await;
    assert_eq!(outcome(&r), ALLOWED);
    let paths: Vec<String> = w.keys.recorded().into_iter().map(|r| r.path).collect();
    assert!(paths.contains(&"/moved/keys.json".to_owned()), "{paths:?}");
    assert_eq!(elsewhere.calls(), 0);
    s.stop().await;
}

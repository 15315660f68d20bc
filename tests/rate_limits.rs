//! Rate limits: per verified agent after authentication, per client address before it, local or
//! shared through a real Redis by two replicas.
//!
//! The last test prints the closing figure (`-- --nocapture`, best with `--release`): the CPU a
//! real sidecar process spends per request refused by a pre-authentication limit.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use claw_authz::clock::{Clock, ManualClock};
use claw_authz::dev::check::check_request;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use support::redis::RedisServer;
use support::server::Running;
use support::world::{Agent, NOW_MS, World, denied, outcome};

const POLICIES: &str = "policies:\n  limited: {rate_limit: {requests: 60, window_secs: 60}}\n  public: {client_rate_limit: {requests: 120, window_secs: 60}}\n  tight: {client_rate_limit: {requests: 120, window_secs: 86400}}\n";

fn on(policy: &str, req: CheckRequest) -> CheckRequest {
    support::world::on_policy(policy, req)
}

fn get(agent: &Agent, clock: &dyn Clock, nonce: &str) -> CheckRequest {
    on(
        "limited",
        agent.request(clock.now_ms(), "GET", "/v1/x", b"", nonce, &[]),
    )
}

/// A request from `address` with a well-formed AIT whose signature is wrong: without a limit it
/// costs a signature verification.
fn forged_from(w: &World, address: &str) -> CheckRequest {
    forged_on("public", w, address)
}

fn forged_on(policy: &str, w: &World, address: &str) -> CheckRequest {
    let mut ait = w.alpha.ait.clone();
    let last = ait.pop().unwrap();
    ait.push(if last == 'A' { 'B' } else { 'A' });
    let mut req = on(
        policy,
        check_request(
            "GET",
            "/v1/x",
            &[("authorization", &format!("Claw {ait}"))],
            b"",
        ),
    );
    req.attributes.as_mut().unwrap().source = Some(Peer {
        address: Some(Address {
            address: Some(AddressKind::SocketAddress(SocketAddress {
                address: address.into(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    });
    req
}

#[tokio::test]
async fn the_61st_request_in_a_minute_is_limited_with_retry_after_and_the_window_recovers() {
    let w = World::new("agent-limit").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = support::server::start(&w.yaml(POLICIES), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    for i in 0..60 {
        assert_eq!(
            outcome(&s.check(get(&w.alpha, &clock, &format!("a-{i}"))).await),
            "200"
        );
    }
    let r = s.check(get(&w.alpha, &clock, "a-60")).await;
    let (status, headers, body) = denied(&r);
    assert_eq!(status, 429);
    assert!(
        headers.contains(&("retry-after".into(), "1".into())),
        "{headers:?}"
    );
    assert!(body.starts_with(
        r#"{"error":{"code":"PROXY_RATE_LIMIT_EXCEEDED","message":"Too many requests","requestId":"#
    ));
    assert!(!body.contains("details"));
    // Another agent has its own budget.
    assert_eq!(outcome(&s.check(get(&w.beta, &clock, "b-0")).await), "200");
    // A minute later the whole budget is back.
    clock.advance_ms(60_000);
    for i in 61..121 {
        assert_eq!(
            outcome(&s.check(get(&w.alpha, &clock, &format!("a-{i}"))).await),
            "200"
        );
    }
    assert_eq!(
        outcome(&s.check(get(&w.alpha, &clock, "a-121")).await),
        "429 PROXY_RATE_LIMIT_EXCEEDED"
    );
    // Issue 17: the denial is the `rate_limit` stage's (it was attributed to `replay`).
    let view = claw_authz::request::RequestView::from_check(get(&w.alpha, &clock, "a-122"));
    match s.app.pipeline.check(&view).await {
        claw_authz::pipeline::Decision::Deny { at, .. } => {
            assert_eq!(at.stage, claw_authz::pipeline::Stage::RateLimit)
        }
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn with_redis_the_limit_holds_across_two_replicas() {
    let redis = RedisServer::start().await;
    let w = World::new("shared-limit").await;
    let clock = ManualClock::at(NOW_MS);
    let extra = format!(
        "{POLICIES}redis:\n  url: {}\n  timeout_ms: 1000\nrate_limit:\n  store: redis\n",
        redis.url()
    );
    let yaml = w.yaml(&extra);
    let start = || support::server::start(&yaml, Arc::new(clock.clone()));
    let (mut a, mut b): (Running, Running) = (start().await, start().await);
    a.wait_ready().await;
    b.wait_ready().await;
    for i in 0..60 {
        let s = if i % 2 == 0 { &mut a } else { &mut b };
        assert_eq!(
            outcome(&s.check(get(&w.alpha, &clock, &format!("r-{i}"))).await),
            "200"
        );
    }
    for (s, nonce) in [(&mut a, "r-60"), (&mut b, "r-61")] {
        assert_eq!(
            outcome(&s.check(get(&w.alpha, &clock, nonce)).await),
            "429 PROXY_RATE_LIMIT_EXCEEDED"
        );
    }
    // One script call per limited check, by its SHA-1: the first finds the fresh server without
    // the script (NOSCRIPT) and goes again with its text, which teaches the server it.
    let calls = |c: &str| redis.calls_ok(c);
    let scripts = (calls("evalsha"), calls("eval"), redis.calls("script|load"));
    assert_eq!(scripts, (61, 1, 0), "one script call per limited check");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_failing_limit_store_fails_open_by_default_and_closed_when_configured() {
    let mut redis = RedisServer::start().await;
    let w = World::new("limit-store-down").await;
    let clock = ManualClock::at(NOW_MS);
    let base = format!(
        "{POLICIES}redis:\n  url: {}\nrate_limit:\n  store: redis\n",
        redis.url()
    );
    let open_yaml = w.yaml(&base);
    let closed_yaml = w.yaml(&format!("{base}  failure: fail-closed\n"));
    let mut open = support::server::start(&open_yaml, Arc::new(clock.clone())).await;
    let mut closed = support::server::start(&closed_yaml, Arc::new(clock.clone())).await;
    open.wait_ready().await;
    closed.wait_ready().await;
    redis.stop();
    let r = open.check(get(&w.alpha, &clock, "o-1")).await;
    assert_eq!(outcome(&r), "200", "fail-open allows");
    let r = closed.check(get(&w.alpha, &clock, "c-1")).await;
    assert_eq!(outcome(&r), "503 PROXY_AUTH_DEPENDENCY_UNAVAILABLE");
    assert!(
        denied(&r)
            .2
            .contains(r#""message":"Rate limiting is unavailable""#)
    );
    open.stop().await;
    closed.stop().await;
}

#[tokio::test]
async fn a_pre_auth_flood_is_refused_before_any_signature_work() {
    let w = World::new("flood").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = support::server::start(&w.yaml(POLICIES), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    let mut counts = std::collections::HashMap::new();
    for _chunk in 0..20 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..500 {
            let (mut client, req) = (s.client.clone(), forged_from(&w, "203.0.113.7"));
            set.spawn(async move { outcome(&client.check(req).await.unwrap().into_inner()) });
        }
        for o in set.join_all().await {
            *counts.entry(o).or_insert(0) += 1;
        }
    }
    assert_eq!(counts["401 PROXY_AUTH_INVALID_AIT"], 120);
    assert_eq!(counts["429 PROXY_PUBLIC_RATE_LIMIT_EXCEEDED"], 9_880);
    let checks = &s.app.pipeline.signature_checks;
    assert_eq!(
        checks.load(Ordering::Relaxed),
        120,
        "limited requests verified nothing"
    );
    // Another address is not affected.
    let r = s.check(forged_from(&w, "198.51.100.9")).await;
    assert_eq!(outcome(&r), "401 PROXY_AUTH_INVALID_AIT");
    s.stop().await;
}

/// The closing figure of issue 10: CPU of a real sidecar per request refused by the
/// pre-authentication limit, next to its CPU per fully verified check, in one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_cpu_per_limited_request() {
    let n: usize = std::env::var("CLAW_FIGURE_CHECKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let w = World::live("flood-cpu", 0).await;
    let extra = format!(
        "{POLICIES}nonce:\n  store: memory\nlisten:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\nlog:\n  format: json\n"
    );
    let path = w.dir.join("rate-limits.yaml");
    std::fs::write(&path, w.yaml(&extra)).unwrap();
    let sidecar = support::process::Sidecar::start(&path).await;
    let client = sidecar.client().await;
    let clock = claw_authz::clock::SystemClock;
    let run = |requests: Vec<CheckRequest>, want: &'static str| {
        let client = client.clone();
        async move { support::world::drain(&client, requests, 8, want).await }
    };
    // Use up the address's budget (120 a day on this route, so the real clock refills nothing
    // meanwhile), then measure refused requests only.
    let budget: Vec<CheckRequest> = (0..120)
        .map(|_| forged_on("tight", &w, "203.0.113.7"))
        .collect();
    run(budget, "401 PROXY_AUTH_INVALID_AIT").await;
    let before = sidecar.cpu();
    let flood: Vec<CheckRequest> = (0..n)
        .map(|_| forged_on("tight", &w, "203.0.113.7"))
        .collect();
    run(flood, "429 PROXY_PUBLIC_RATE_LIMIT_EXCEEDED").await;
    let limited = (sidecar.cpu() - before).as_secs_f64() * 1e6 / n as f64;
    let before = sidecar.cpu();
    let valid: Vec<CheckRequest> = (0..n)
        .map(|i| {
            w.alpha
                .request(clock.now_ms(), "GET", "/v1/x", b"", &format!("v-{i}"), &[])
        })
        .collect();
    run(valid, "200").await;
    let verified = (sidecar.cpu() - before).as_secs_f64() * 1e6 / n as f64;
    println!(
        "figure: sidecar CPU per request: refused by the pre-auth limit {limited:.1} us, fully verified check {verified:.1} us ({n} each)"
    );
}

/// Issue 18, finding 7, as the attack: 3,000 distinct client addresses (the right-most
/// `x-forwarded-for` value) against a local limiter of 160 keys. The limiter never holds more,
/// the addresses it cannot track are limited instead of let through, and a client it tracks keeps
/// exactly its budget; once the flood's schedules drain, newcomers are served again.
#[tokio::test]
async fn a_flood_of_client_addresses_cannot_switch_the_limit_off() {
    let w = World::new("address-flood").await;
    let clock = ManualClock::at(NOW_MS);
    let yaml = w.yaml(
        "policies:\n  public: {client_rate_limit: {requests: 5, window_secs: 60}}\n\
         rate_limit:\n  client_header: x-forwarded-for\n  capacity: 160\n",
    );
    let mut s = support::server::start(&yaml, Arc::new(clock.clone())).await;
    s.wait_ready().await;
    let from = |address: &str| {
        let auth = format!("Claw {}", w.alpha.ait.replace('.', "x"));
        let headers = [
            ("authorization", auth.as_str()),
            ("x-forwarded-for", address),
        ];
        on("public", check_request("GET", "/v1/x", &headers, b""))
    };
    const ALLOWED_BY_LIMIT: &str = "401 PROXY_AUTH_INVALID_AIT";
    const LIMITED: &str = "429 PROXY_PUBLIC_RATE_LIMIT_EXCEEDED";
    let steady = "198.51.100.9";
    let mut steady_outcomes = vec![outcome(&s.check(from(steady)).await)];
    let mut flood = std::collections::HashMap::<String, usize>::new();
    for i in 0..3_000 {
        let address = format!("203.0.113.1, 10.0.{}.{}", i / 256, i % 256);
        *flood
            .entry(outcome(&s.check(from(&address)).await))
            .or_default() += 1;
        if i % 300 == 0 {
            steady_outcomes.push(outcome(&s.check(from(steady)).await));
        }
    }
    assert_eq!(
        (flood[ALLOWED_BY_LIMIT], flood[LIMITED]),
        (159, 2_841),
        "the 160 slots less the steady client's"
    );
    let allowed = steady_outcomes
        .iter()
        .filter(|o| *o == ALLOWED_BY_LIMIT)
        .count();
    assert_eq!((allowed, steady_outcomes.len() - allowed), (5, 6));
    let metrics = reqwest::get(format!("http://{}/metrics", s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("claw_authz_rate_limit_keys 160\n"),
        "{metrics}"
    );
    // 12 s per request on this route: once every flood schedule has drained, a newcomer is
    // tracked again (after a sweep).
    clock.advance_ms(12_001);
    assert_eq!(
        outcome(&s.check(from("192.0.2.77")).await),
        ALLOWED_BY_LIMIT
    );
    s.stop().await;
}

//! Soak and chaos (issue 19): real Envoy (`envoy/sidecar.yaml`, gRPC health checks) in front of
//! two real claw-authz replicas sharing a real Redis (append-only file, so a restart keeps the
//! nonces), a fake registry on loopback, and a steady mixed workload for `CLAW_SOAK_SECS`
//! (default 60) at `CLAW_SOAK_RPS` requests a second (default 100): about 90 % legitimate
//! requests from four agents, about 10 % attacks (replays of requests already allowed, bad
//! proofs, an unknown agent, an agent the CRL revokes).
//!
//! Every minute of the run, on a schedule: at 10 s replica A is rolled (SIGTERM, its drain, then
//! started again on the same ports); from 20 s to 40 s the registry is down (every endpoint
//! resets the connection); at 45 s Redis is killed and restarted.
//!
//! Reported (`-- --nocapture`), and asserted: attacks not denied (0); legitimate requests not
//! allowed outside the Redis restart window (0; inside it, the nonce store fails closed with 503
//! by design, `docs/deviations.md` item 10, and they are counted); the resident set of each
//! replica process at its start and at the end; registry calls per 1,000 checks.
//!
//! `.ci/run` runs it for 60 s (`cargo test --test soak -- --ignored --nocapture`);
//! `CLAW_SOAK_SECS=600 CLAW_SOAK_RPS=500 cargo test --release --test soak -- --ignored
//! --nocapture` is the long run.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use claw_authz::clock::{Clock, SystemClock};
use claw_authz::dev::envoy_process::{
    EchoUpstream, Envoy, find_binary, sidecar_config, with_replicas,
};
use claw_authz::dev::sign::{random_nonce, random_ulid};
use support::process::Sidecar;
use support::redis::RedisServer;
use support::registry::{Reply, Rule};
use support::world::{Agent, World, http_request};
use tokio::time::Instant;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A free loopback port (the replicas keep theirs across a roll, as a pod keeps its address).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Legit,
    Replay,
    BadProof,
    Unknown,
    Revoked,
}

/// One request through Envoy: what it was, when it was sent (since the start), its status.
struct Sent {
    kind: Kind,
    at: Duration,
    status: Result<u16, String>,
}

#[tokio::test]
#[ignore = "a minute long: `.ci/run` runs it (`--ignored`); CLAW_SOAK_SECS sets the length"]
async fn soak_with_rolls_redis_restarts_and_registry_flaps() {
    let secs = setting("CLAW_SOAK_SECS", 60);
    let rps = setting("CLAW_SOAK_RPS", 100).max(1);
    let w = Arc::new(World::live("soak", 3).await);
    // The CRL revokes beta, signed afresh at every fetch.
    let beta = (w.registry.agent_did(&w.beta.ulid), w.beta.jti.clone());
    let crl_world = w.clone();
    let crl = Reply::By(Rule(Arc::new(move |_, _| {
        let token = crl_world.registry.sign_crl(
            std::slice::from_ref(&beta),
            SystemClock.now_secs() - 5,
            &random_ulid(SystemClock.now_ms()),
        );
        Reply::Body(200, serde_json::json!({ "crl": token }).to_string())
    })));
    w.crl.set(vec![crl.clone()]);
    let keys = Reply::Body(200, w.registry.keys_document());

    let mut redis =
        RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let replica_config = |name: &str| {
        let path = w.dir.join(format!("{name}.yaml"));
        let extra = format!(
            "listen:\n  grpc: 127.0.0.1:{}\n  admin: 127.0.0.1:{}\n  drain_secs: 3\n  grace_secs: 2\n\
             log:\n  format: json\nnonce:\n  store: redis\nredis:\n  url: \"{}\"\n  \
             timeout_ms: 500\n",
            free_port(),
            free_port(),
            redis.url()
        );
        std::fs::write(&path, w.yaml(&extra)).unwrap();
        path
    };
    let (a_config, b_config) = (replica_config("a"), replica_config("b"));
    let mut a = Sidecar::start(&a_config).await;
    let b = Sidecar::start(&b_config).await;
    // Each replica process: its resident set once ready, and at its end (KiB).
    let mut rss: Vec<(String, u64, u64)> = Vec::new();
    let (mut a_start, b_start) = (a.rss_kib(), b.rss_kib());
    let upstream = EchoUpstream::start().await.unwrap();
    let bin = find_binary(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect("Envoy");
    let admin = a.admin().unwrap();
    let config = with_replicas(
        &sidecar_config(a.grpc(), admin, upstream.addr),
        a.grpc(),
        &[b.grpc()],
    );
    let envoy = Envoy::start(&bin, &config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://{}", envoy.listener);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    // Envoy sees both replicas healthy before the clock starts.
    let warm = Instant::now();
    loop {
        let r = http
            .execute(http_request(&http, &url, &w.alpha, &random_nonce()))
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            warm.elapsed() < Duration::from_secs(20),
            "the stack comes up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    let until = Duration::from_secs(secs);
    let done = Arc::new(AtomicBool::new(false));
    let allowed: Arc<std::sync::Mutex<Vec<reqwest::Request>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let traffic = {
        let (w, http, url, done, allowed) = (
            w.clone(),
            http.clone(),
            url.clone(),
            done.clone(),
            allowed.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rps as u32);
            let legit: Vec<&Agent> = std::iter::once(&w.alpha).chain(&w.crew).collect();
            let mut n: u64 = 0;
            while !done.load(Ordering::SeqCst) {
                tick.tick().await;
                n += 1;
                let kind = match n % 40 {
                    0 => Kind::Replay,
                    10 => Kind::BadProof,
                    20 => Kind::Unknown,
                    30 => Kind::Revoked,
                    _ => Kind::Legit,
                };
                let req = match kind {
                    Kind::Legit => {
                        let agent = legit[(n as usize) % legit.len()];
                        http_request(&http, &url, agent, &random_nonce())
                    }
                    Kind::Replay => match allowed.lock().unwrap().pop() {
                        Some(r) => r,
                        None => continue,
                    },
                    Kind::BadProof => {
                        let mut r = http_request(&http, &url, &w.alpha, &random_nonce());
                        let proof = r.headers_mut().get_mut("x-claw-proof").unwrap();
                        let mut text = proof.to_str().unwrap().to_owned();
                        let last = if text.ends_with('A') { 'B' } else { 'A' };
                        text.pop();
                        text.push(last);
                        *proof = text.parse().unwrap();
                        r
                    }
                    Kind::Unknown => http_request(&http, &url, &w.stranger, &random_nonce()),
                    Kind::Revoked => http_request(&http, &url, &w.beta, &random_nonce()),
                };
                let keep = (kind == Kind::Legit && n.is_multiple_of(7))
                    .then(|| req.try_clone())
                    .flatten();
                let (http, allowed) = (http.clone(), allowed.clone());
                let at = started.elapsed();
                tasks.spawn(async move {
                    let status = http.execute(req).await.map(|r| r.status().as_u16());
                    if let (Some(copy), Ok(200)) = (keep, &status) {
                        allowed.lock().unwrap().push(copy);
                    }
                    Sent {
                        kind,
                        at,
                        status: status.map_err(|e| e.to_string()),
                    }
                });
            }
            tasks.join_all().await
        })
    };

    // The schedule, every minute.
    let mut redis_windows = Vec::new();
    let (mut rolls, mut flaps, mut restarts) = (0, 0, 0);
    let mut minute = Duration::ZERO;
    while minute < until {
        let at = |s: u64| minute + Duration::from_secs(s);
        let wait_for = |t: Duration| async move {
            if let Some(left) = t.checked_sub(started.elapsed()) {
                tokio::time::sleep(left).await;
            }
        };
        if at(10) < until {
            wait_for(at(10)).await;
            let end = a.rss_kib();
            a.terminate();
            while a.exited().is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            rss.push((format!("a (process {})", rolls + 1), a_start, end));
            a = Sidecar::start(&a_config).await;
            a_start = a.rss_kib();
            rolls += 1;
        }
        if at(20) < until {
            wait_for(at(20)).await;
            for endpoint in [&w.keys, &w.crl, &w.validate] {
                endpoint.set(vec![Reply::Reset]);
            }
            wait_for(at(40).min(until)).await;
            w.keys.set(vec![keys.clone()]);
            w.crl.set(vec![crl.clone()]);
            w.validate.set(vec![Reply::Status(204)]);
            flaps += 1;
        }
        if at(45) < until {
            wait_for(at(45)).await;
            let from = started.elapsed();
            redis.restart().await;
            // The replicas' connections notice and reconnect within a moment.
            redis_windows.push((from, started.elapsed() + Duration::from_secs(2)));
            restarts += 1;
        }
        minute += Duration::from_secs(60);
    }
    if let Some(left) = until.checked_sub(started.elapsed()) {
        tokio::time::sleep(left).await;
    }
    done.store(true, Ordering::SeqCst);
    let sent = traffic.await.unwrap();
    rss.push((format!("a (process {})", rolls + 1), a_start, a.rss_kib()));
    rss.push(("b".to_owned(), b_start, b.rss_kib()));

    let in_redis_window = |t: Duration| redis_windows.iter().any(|(f, u)| *f <= t && t <= *u);
    let legit: Vec<&Sent> = sent.iter().filter(|s| s.kind == Kind::Legit).collect();
    let failed: Vec<&&Sent> = legit.iter().filter(|s| s.status != Ok(200)).collect();
    let (during_redis, elsewhere): (Vec<&&Sent>, Vec<&&Sent>) =
        failed.iter().partition(|s| in_redis_window(s.at));
    let attacks: Vec<&Sent> = sent.iter().filter(|s| s.kind != Kind::Legit).collect();
    let let_through: Vec<&&Sent> = attacks.iter().filter(|s| s.status == Ok(200)).collect();
    let registry_calls = w.keys.calls() + w.crl.calls() + w.validate.calls();
    println!(
        "figure: soak {secs} s at {rps}/s through Envoy, 2 replicas, Redis: {} requests ({} \
         legitimate, {} attacks); legitimate not allowed: {} outside the Redis restart windows, \
         {} inside them; attacks not denied: {}; rolls {rolls}, registry flaps {flaps}, Redis \
         restarts {restarts}; registry calls {registry_calls} ({:.2} per 1,000 checks)",
        sent.len(),
        legit.len(),
        attacks.len(),
        elsewhere.len(),
        during_redis.len(),
        let_through.len(),
        registry_calls as f64 * 1000.0 / sent.len().max(1) as f64,
    );
    for (name, start, end) in &rss {
        println!("figure: replica {name} resident set {start} KiB at start, {end} KiB at the end");
    }
    let sample: Vec<_> = elsewhere
        .iter()
        .take(5)
        .map(|s| (s.at, &s.status))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "legitimate requests not allowed: {sample:?}"
    );
    let sample: Vec<_> = let_through.iter().take(5).map(|s| (s.kind, s.at)).collect();
    assert!(let_through.is_empty(), "attacks allowed: {sample:?}");
    assert!(legit.len() as u64 >= secs * rps * 8 / 10, "the load ran");
    drop(envoy);
}

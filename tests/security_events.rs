//! Issue 23: each detector through the real server, its event delivered to a real HTTP receiver
//! on loopback that verifies the Standard Webhooks signature with PyPI's `standardwebhooks`
//! (`tests/clients/webhook_receiver.py`, installed into `.venv-clients` by `.ci/setup`); a
//! receiver that fails gets retries then a dead-letter record, one that hangs costs the checks
//! nothing (their latency printed beside a healthy receiver's), and a flood of client addresses
//! saturates a detector without harming anyone.

mod support;

use std::sync::Arc;
use std::time::Duration;

use claw_authz::clock::ManualClock;
use claw_authz::security::Kind;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::Value;
use support::registry::Reply;
use support::server::Running;
use support::world::{Agent, NOW_MS, World, outcome};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The Python receiver.
struct Receiver {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    url: String,
}

impl Receiver {
    async fn start(mode: &str) -> Receiver {
        let root = env!("CARGO_MANIFEST_DIR");
        let python = format!("{root}/.venv-clients/bin/python");
        let mut child = tokio::process::Command::new(&python)
            .arg(format!("{root}/tests/clients/webhook_receiver.py"))
            .args([SECRET, mode])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{python}: {e} (run `bash .ci/setup`)"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next_line()
            .await
            .unwrap()
            .expect("the receiver's port");
        let port = first.strip_prefix("PORT ").expect("PORT <n>").to_owned();
        Receiver {
            _child: child,
            lines,
            url: format!("http://127.0.0.1:{port}/events"),
        }
    }

    /// The next request the receiver saw (verified or not), waiting at most 20 s.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("a delivery within 20 s")
            .unwrap()
            .expect("the receiver is running");
        serde_json::from_str(&line).unwrap()
    }

    /// Reads (and drops) everything the receiver prints from now on, so its output pipe never
    /// fills and stalls it; it keeps running until the test ends.
    fn drain(mut self) {
        tokio::spawn(async move {
            while let Ok(Some(_)) = self.lines.next_line().await {}
            drop(self._child);
        });
    }

    /// The next verified event of type `kind` (others are skipped).
    async fn event(&mut self, kind: Kind) -> Value {
        loop {
            let got = self.next().await;
            assert_eq!(got["verified"], true, "{got}");
            if got["event"]["type"] == kind.as_str() {
                return got["event"].clone();
            }
        }
    }
}

struct Bed {
    w: World,
    s: Running,
    clock: Arc<ManualClock>,
}

/// The server with `security_events` sending to `url`, the thresholds low, plus `extra`.
async fn bed(name: &str, url: &str, extra: &str) -> Bed {
    let w = World::new(name).await;
    let secret = w.dir.join("webhook.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let yaml = w.yaml(&format!(
        "security_events:\n  poll_ms: 50\n  replay_threshold: 2\n  invalid_threshold: 5\n  revoked_threshold: 3\n\
         \x20 webhook_timeout_ms: 500\n  webhook_attempts: 3\n  webhook_backoff_ms: 10\n\
         \x20 dead_letter_file: {}\n\
         \x20 webhooks:\n    - {{name: soc, url: \"{url}\", secret_file: {}, insecure_http: true}}\n{extra}",
        w.dir.join("dead-letter.jsonl").display(),
        secret.display()
    ));
    let clock = Arc::new(ManualClock::at(NOW_MS));
    let s = support::server::start(&yaml, clock.clone()).await;
    s.wait_ready().await;
    Bed { w, s, clock }
}

fn did(agent: &Agent) -> String {
    format!("did:cdi:registry.example.com:agent:{}", agent.ulid)
}

/// `req` as coming from `ip` (Envoy's `source.address`).
fn from(ip: &str, mut req: CheckRequest) -> CheckRequest {
    let attributes = req.attributes.as_mut().unwrap();
    let source = attributes.source.get_or_insert_default();
    source.address = Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            ..Default::default()
        })),
    });
    req
}

impl Bed {
    fn signed(&self, agent: &Agent, nonce: &str) -> CheckRequest {
        self.w.signed(agent, "POST", "/v1/echo", b"{}", nonce, &[])
    }

    /// Alpha's request with another body than the one signed: the proof does not verify.
    fn forged(&self, nonce: &str) -> CheckRequest {
        let mut req = self.signed(&self.w.alpha, nonce);
        let attributes = req.attributes.as_mut().unwrap();
        let http = attributes.request.as_mut().unwrap().http.as_mut().unwrap();
        http.raw_body = b"{\"x\":1}".to_vec();
        http.headers.insert("content-length".into(), "7".into());
        req
    }
}

#[tokio::test]
async fn a_replayed_request_is_reported_with_the_agent_and_count() {
    let mut r = Receiver::start("ok").await;
    let mut b = bed("sec-replay", &r.url, "").await;
    let captured = from("192.0.2.10", b.signed(&b.w.alpha, "captured-nonce"));
    let request = || captured.clone();
    assert_eq!(outcome(&b.s.check(request()).await), "200");
    for _ in 0..2 {
        assert_eq!(
            outcome(&b.s.check(request()).await),
            "401 PROXY_AUTH_REPLAY"
        );
    }
    let e = r.event(Kind::ReplayDetected).await;
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["subject"], did(&b.w.alpha));
    assert_eq!(e["data"]["agent"], did(&b.w.alpha));
    assert_eq!(e["data"]["client"], "192.0.2.10");
    assert_eq!(e["data"]["count"], 2);
    assert_eq!(e["data"]["windowSecs"], 300);
    assert_eq!(e["data"]["codes"], serde_json::json!(["PROXY_AUTH_REPLAY"]));
    // No credential in the event: neither the AIT nor the proof.
    let text = e.to_string();
    assert!(!text.contains(&b.w.alpha.ait) && !text.contains("captured-nonce"));
    b.s.stop().await;
}

#[tokio::test]
async fn a_burst_of_invalid_proofs_from_one_address_is_reported() {
    let mut r = Receiver::start("ok").await;
    let mut b = bed("sec-invalid", &r.url, "").await;
    for i in 0..5 {
        let req = b.forged(&format!("n{i}"));
        let got = b.s.check(from("203.0.113.66", req)).await;
        assert_eq!(outcome(&got), "401 PROXY_AUTH_INVALID_PROOF");
    }
    let e = r.event(Kind::InvalidCredentialsBurst).await;
    assert_eq!(e["data"]["client"], "203.0.113.66");
    assert_eq!(e["data"]["count"], 5);
    assert_eq!(
        e["data"]["codes"],
        serde_json::json!(["PROXY_AUTH_INVALID_PROOF"])
    );
    assert!(e.get("subject").is_none() || e["subject"] == did(&b.w.alpha));
    b.s.stop().await;
}

#[tokio::test]
async fn an_unknown_agent_that_keeps_trying_is_reported() {
    let mut r = Receiver::start("ok").await;
    let mut b = bed("sec-revoked", &r.url, "").await;
    for i in 0..3 {
        let req = from("198.51.100.23", b.signed(&b.w.stranger, &format!("s{i}")));
        assert_eq!(outcome(&b.s.check(req).await), "403 PROXY_AUTH_FORBIDDEN");
    }
    let e = r.event(Kind::RevokedAgentRetrying).await;
    assert_eq!(e["data"]["agent"], did(&b.w.stranger));
    assert_eq!(e["data"]["client"], "198.51.100.23");
    assert_eq!(e["data"]["count"], 3);
    assert_eq!(
        e["data"]["codes"],
        serde_json::json!(["PROXY_AUTH_FORBIDDEN"])
    );
    b.s.stop().await;
}

#[tokio::test]
async fn an_agent_on_a_second_network_and_a_drifting_clock_are_reported() {
    let mut r = Receiver::start("ok").await;
    let mut b = bed("sec-network", &r.url, "").await;
    let first = from("192.0.2.10", b.signed(&b.w.alpha, "a1"));
    assert_eq!(outcome(&b.s.check(first).await), "200");
    let second = from("198.51.100.7", b.signed(&b.w.alpha, "a2"));
    assert_eq!(outcome(&b.s.check(second).await), "200");
    let e = r.event(Kind::AgentNetworkChanged).await;
    assert_eq!(e["data"]["agent"], did(&b.w.alpha));
    assert_eq!(e["data"]["previousNetwork"], "192.0.2.0/24");
    assert_eq!(e["data"]["network"], "198.51.100.0/24");
    assert_eq!(e["data"]["client"], "198.51.100.7");

    // A proof 250 s behind the server's clock: accepted (limit 300 s), past the warning (200 s).
    let late =
        b.w.alpha
            .request(NOW_MS - 250_000, "POST", "/v1/echo", b"{}", "a3", &[]);
    assert_eq!(outcome(&b.s.check(from("198.51.100.7", late)).await), "200");
    let e = r.event(Kind::ClockSkewDrift).await;
    assert_eq!(e["data"]["agent"], did(&b.w.alpha));
    assert_eq!(e["data"]["skewSecs"], 250);
    assert_eq!(e["data"]["maxSkewSecs"], 300);
    b.s.stop().await;
}

#[tokio::test]
async fn a_breaker_opening_and_stale_keys_are_reported() {
    let mut r = Receiver::start("ok").await;
    let mut b = bed("sec-breaker", &r.url, "  stale_after_secs: 60\n").await;
    b.w.validate.set(vec![Reply::Status(500)]);
    for i in 0..5 {
        let req =
            b.w.alpha
                .message(b.clock.now_ms(), &format!("m{i}"), &format!("tok-{i}"));
        assert_eq!(
            outcome(&b.s.check(req).await),
            "503 PROXY_AUTH_DEPENDENCY_UNAVAILABLE"
        );
    }
    let e = r.event(Kind::BreakerOpened).await;
    assert_eq!(e["data"]["endpoint"], "validate");
    // Nothing refreshes the keys while the clock moves past their TTL (3,600 s) and 100 s
    // more: held 60 s past their freshness, they are reported.
    b.clock.advance_ms(3_700_000);
    let e = r.event(Kind::StaleDataServed).await;
    assert_eq!(e["data"]["data"], "keys", "{e}");
    assert_eq!(e["data"]["staleForSecs"], 100, "{e}");
    assert_eq!(e["data"]["windowSecs"], 60, "{e}");
    b.s.stop().await;
}

use claw_authz::clock::Clock as _;

#[tokio::test]
async fn a_failing_receiver_gets_retries_then_a_dead_letter_record() {
    let mut r = Receiver::start("fail").await;
    let mut b = bed("sec-dead", &r.url, "").await;
    let once = from("192.0.2.10", b.signed(&b.w.alpha, "once"));
    let request = || once.clone();
    b.s.check(request()).await;
    b.s.check(request()).await;
    b.s.check(request()).await;
    // Three attempts, each verified by the receiver and answered 503.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let got = r.next().await;
        assert_eq!(got["verified"], true, "{got}");
        ids.push(got["id"].as_str().unwrap().to_owned());
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one event, three attempts: {ids:?}"
    );
    let counters = b.s.app.pipeline.security.counters.clone();
    let dead = b.w.dir.join("dead-letter.jsonl");
    let record = wait_for(|| {
        std::fs::read_to_string(&dead)
            .ok()
            .filter(|t| !t.is_empty())
    })
    .await;
    let record: Value = serde_json::from_str(record.lines().next().unwrap()).unwrap();
    assert_eq!(record["webhook"], "soc");
    assert_eq!(record["id"], ids[0].as_str());
    assert_eq!(record["type"], Kind::ReplayDetected.as_str());
    assert_eq!(record["attempts"], 3);
    assert_eq!(record["event"]["data"]["count"], 2);
    assert_eq!(
        counters
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        counters
            .failed_attempts
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    // And on /metrics.
    let metrics = reqwest::get(format!("http://{}/metrics", b.s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"claw_authz_security_deliveries_total{result="dead_letter"} 1"#,
        r#"claw_authz_security_deliveries_total{result="failed_attempt"} 3"#,
        r#"claw_authz_security_events_total{type="claw.security.replay_detected"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(line)),
            "{line} missing"
        );
    }
    b.s.stop().await;
}

/// Polls `f` every 20 ms for up to 20 s.
async fn wait_for<T>(f: impl Fn() -> Option<T>) -> T {
    for _ in 0..1_000 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within 20 s");
}

/// Check latencies (µs), sorted, of `n` allowed checks, each followed by two replays of it: a
/// replay event per check (the window is 1 s and the clock moves 1.1 s each time).
async fn latencies(b: &mut Bed, label: &str, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        b.clock.advance_ms(1_100);
        let nonce = format!("{label}-{i}");
        let signed = || {
            let req =
                b.w.alpha
                    .request(b.clock.now_ms(), "POST", "/v1/echo", b"{}", &nonce, &[]);
            from("192.0.2.10", req)
        };
        let started = tokio::time::Instant::now();
        let got = b.s.check(signed()).await;
        out.push(started.elapsed().as_micros() as u64);
        assert_eq!(outcome(&got), "200");
        for _ in 0..2 {
            assert_eq!(outcome(&b.s.check(signed()).await), "401 PROXY_AUTH_REPLAY");
        }
    }
    out.sort_unstable();
    out
}

#[tokio::test]
async fn a_hanging_receiver_costs_the_checks_nothing() {
    let healthy = Receiver::start("ok").await;
    let hanging = Receiver::start("hang").await;
    let mut ok = bed("sec-latency-ok", &healthy.url, "  replay_window_secs: 1\n").await;
    let mut stuck = bed(
        "sec-latency-hang",
        &hanging.url,
        "  replay_window_secs: 1\n",
    )
    .await;
    healthy.drain();
    hanging.drain();
    let n = 300;
    let healthy_us = latencies(&mut ok, "h", n).await;
    let hanging_us = latencies(&mut stuck, "s", n).await;
    let p = |v: &[u64], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    println!(
        "check latency (µs, {n} allowed checks each, debug build): healthy receiver p50 {} p99 {}, hanging receiver p50 {} p99 {}",
        p(&healthy_us, 0.5),
        p(&healthy_us, 0.99),
        p(&hanging_us, 0.5),
        p(&hanging_us, 0.99)
    );
    // Both servers made an event per check. The healthy receiver got every one; the hanging
    // one holds its worker, and the events wait in that webhook's queue, never on the
    // request path.
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let healthy = ok.s.app.pipeline.security.counters.clone();
    let held = stuck.s.app.pipeline.security.counters.clone();
    let all = n as u64;
    wait_for(|| (healthy.events_of(Kind::ReplayDetected) == all).then_some(())).await;
    wait_for(|| (held.events_of(Kind::ReplayDetected) == all).then_some(())).await;
    wait_for(|| (healthy.delivered.load(relaxed) == all).then_some(())).await;
    assert_eq!(held.delivered.load(relaxed), 0);
    assert_eq!(held.observations_dropped.load(relaxed), 0);
    assert_eq!(healthy.observations_dropped.load(relaxed), 0);
    ok.s.stop().await;
    stuck.s.stop().await;
}

#[tokio::test]
async fn a_flood_of_client_addresses_saturates_a_detector_and_serves_the_agent() {
    let mut r = Receiver::start("ok").await;
    let mut b = bed("sec-flood", &r.url, "  max_tracked: 16\n").await;
    for i in 0..300u32 {
        let req = b.forged(&format!("f{i}"));
        let ip = format!("10.9.{}.{}", i / 256, i % 256);
        assert_eq!(
            outcome(&b.s.check(from(&ip, req)).await),
            "401 PROXY_AUTH_INVALID_PROOF"
        );
        if i % 50 == 0 {
            let ok = from("192.0.2.10", b.signed(&b.w.alpha, &format!("ok{i}")));
            assert_eq!(outcome(&b.s.check(ok).await), "200");
        }
    }
    let e = r.event(Kind::DetectorSaturated).await;
    assert_eq!(e["data"]["detector"], "invalid");
    assert_eq!(e["data"]["count"], 16);
    let c = &b.s.app.pipeline.security.counters;
    assert_eq!(c.events_of(Kind::DetectorSaturated), 1);
    b.s.stop().await;
}

#[tokio::test]
async fn events_tail_shows_an_event_as_it_arrives() {
    let r = Receiver::start("ok").await;
    let mut b = bed(
        "sec-tail",
        &r.url,
        "events:\n  admin_unauthenticated: true\n",
    )
    .await;
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_claw-authz"))
        .args(["events", "tail", "--count", "1", "--admin"])
        .arg(format!("http://{}", b.s.admin))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let monitor = b.s.app.pipeline.security.clone();
    wait_for(|| (monitor.subscribers() > 0).then_some(())).await;
    let captured = from("192.0.2.10", b.signed(&b.w.alpha, "tail-nonce"));
    for _ in 0..3 {
        b.s.check(captured.clone()).await;
    }
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let want = format!(
        "  replay_detected  agent={}  client=192.0.2.10  count=2/300s  risk=80  codes=[\"PROXY_AUTH_REPLAY\"]",
        did(&b.w.alpha)
    );
    assert!(line.ends_with(&want), "{line}");
    assert!(line.starts_with("2026-01-01T00:00:00.000Z"), "{line}");
    assert!(tail.wait().await.unwrap().success());
    b.s.stop().await;
}

#[tokio::test]
async fn events_reach_the_redis_stream() {
    let redis = support::redis::RedisServer::start().await;
    let r = Receiver::start("ok").await;
    // Redis is configured (here for the nonces): events go to its stream too.
    let extra = format!("nonce:\n  store: redis\nredis:\n  url: {}\n", redis.url());
    let mut b = bed("sec-redis", &r.url, &extra).await;
    let captured = from("192.0.2.10", b.signed(&b.w.alpha, "stream-nonce"));
    for _ in 0..3 {
        b.s.check(captured.clone()).await;
    }
    let entries = wait_for(|| Some(redis.entries("claw:security")).filter(|e| !e.is_empty())).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["type"], Kind::ReplayDetected.as_str());
    let event: Value = serde_json::from_str(&entries[0]["event"]).unwrap();
    assert_eq!(event["data"]["agent"], did(&b.w.alpha));
    assert_eq!(event["data"]["count"], 2);
    b.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_exported_as_otlp_log_records() {
    let (sink, endpoint) = support::otlp::Sink::start().await;
    let r = Receiver::start("ok").await;
    let extra = format!("telemetry:\n  otlp_endpoint: {endpoint}\n");
    let mut b = bed("sec-otlp", &r.url, &extra).await;
    let captured = from("192.0.2.10", b.signed(&b.w.alpha, "otlp-nonce"));
    for _ in 0..3 {
        b.s.check(captured.clone()).await;
    }
    // The batch exporter sends on its own schedule; a flush (off the runtime's threads: it
    // blocks until the export is done) hurries it.
    let app = b.s.app.clone();
    tokio::task::spawn_blocking(move || app.telemetry.flush())
        .await
        .unwrap();
    let record = wait_for(|| sink.logs().into_iter().next()).await;
    assert_eq!(record.event_name, Kind::ReplayDetected.as_str());
    assert_eq!(record.severity_text, "WARN");
    let body = match record.body.and_then(|b| b.value) {
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => s,
        other => panic!("a string body, got {other:?}"),
    };
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], Kind::ReplayDetected.as_str());
    assert_eq!(event["data"]["agent"], did(&b.w.alpha));
    let agent = record.attributes.iter().find(|a| a.key == "claw.agent");
    assert!(agent.is_some(), "{:?}", record.attributes);
    b.s.stop().await;
}

#[tokio::test]
async fn an_open_webhook_breaker_sends_events_to_the_dead_letter_without_a_call() {
    let mut r = Receiver::start("fail").await;
    let extra = "  webhook_breaker_failures: 1\n  webhook_breaker_open_secs: 600\n";
    let mut b = bed("sec-breaker-open", &r.url, extra).await;
    // First event (alpha's replays): three attempts, then the breaker opens.
    let captured = from("192.0.2.10", b.signed(&b.w.alpha, "first"));
    for _ in 0..3 {
        b.s.check(captured.clone()).await;
    }
    for _ in 0..3 {
        assert_eq!(r.next().await["verified"], true);
    }
    // Second event (beta's replays): no call, a dead-letter record that says why.
    let captured = from("192.0.2.11", b.signed(&b.w.beta, "second"));
    for _ in 0..3 {
        b.s.check(captured.clone()).await;
    }
    let dead = b.w.dir.join("dead-letter.jsonl");
    let text = wait_for(|| {
        std::fs::read_to_string(&dead)
            .ok()
            .filter(|t| t.lines().count() == 2)
    })
    .await;
    let second: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(second["reason"], "breaker open");
    assert_eq!(second["attempts"], 0);
    assert_eq!(second["event"]["data"]["agent"], did(&b.w.beta));
    let c = &b.s.app.pipeline.security.counters;
    assert_eq!(
        c.failed_attempts.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    // The receiver saw nothing more.
    let more = tokio::time::timeout(Duration::from_millis(300), r.lines.next_line()).await;
    assert!(more.is_err(), "no call while the breaker is open: {more:?}");
    b.s.stop().await;
}

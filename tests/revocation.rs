//! Pushed revocations: a real Redis stream, two real servers, the `revoke` CLI, the dead-letter
//! stream, the CRL safety net, restarts, the event vectors, and the admin endpoint.
//!
//! The last test prints the closing figure (`-- --nocapture`): publish-to-deny latency over 100
//! revocations.

mod support;

use std::sync::Arc;
use std::time::Duration;

use claw_authz::clock::{Clock, ManualClock};
use claw_authz::revocation::{StreamSettings, publish, revocation_envelope};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use support::redis::RedisServer;
use support::registry::Reply;
use support::server::Running;
use support::world::{Agent, NOW_MS, World, outcome};

const ALLOWED: &str = "200";
const REVOKED: &str = "401 PROXY_AUTH_REVOKED";
const STREAM: &str = "claw:events";
const DLQ: &str = "claw:events:dlq";

fn yaml(w: &World, redis: &RedisServer) -> String {
    w.yaml(&format!("redis:\n  url: {}\n", redis.url()))
}

async fn replica(w: &World, redis: &RedisServer, clock: &ManualClock) -> Running {
    let s = support::server::start(&yaml(w, redis), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    s
}

struct Checker {
    n: usize,
}

impl Checker {
    /// One check by `agent`, signed now, with a fresh nonce.
    async fn check(&mut self, s: &mut Running, agent: &Agent, clock: &dyn Clock) -> String {
        self.n += 1;
        let request: CheckRequest = agent.request(
            clock.now_ms(),
            "GET",
            "/v1/x",
            b"",
            &format!("c-{}", self.n),
            &[],
        );
        outcome(&s.check(request).await)
    }

    /// Checks until the answer is `want` (at most `within`); how long that took.
    async fn until(
        &mut self,
        s: &mut Running,
        agent: &Agent,
        clock: &dyn Clock,
        want: &str,
        within: Duration,
    ) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            if self.check(s, agent, clock).await == want {
                return started.elapsed();
            }
            assert!(started.elapsed() < within, "not {want} within {within:?}");
        }
    }
}

/// Polls `done` (no fixed sleeps: yields between looks) for up to 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn settings(redis: &RedisServer) -> StreamSettings {
    StreamSettings {
        target: claw_authz::store::redis::Target {
            url: redis.url(),
            ca: None,
            cluster: false,
        },
        stream: STREAM.into(),
        dlq: DLQ.into(),
        replay_ms: 30 * 86_400_000,
    }
}

#[tokio::test]
async fn a_published_revocation_is_denied_by_every_replica() {
    let redis = RedisServer::start().await;
    let w = World::new("revoke").await;
    let clock = ManualClock::at(NOW_MS);
    let (mut a, mut b) = (
        replica(&w, &redis, &clock).await,
        replica(&w, &redis, &clock).await,
    );
    let mut c = Checker { n: 0 };
    for s in [&mut a, &mut b] {
        assert_eq!(c.check(s, &w.alpha, &clock).await, ALLOWED);
    }
    // The operator's CLI publishes the envelope.
    let alpha = w.registry.agent_did(&w.alpha.ulid);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claw-authz"))
        .args(["revoke", "--agent", &alpha, "--redis-url", &redis.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in [&mut a, &mut b] {
        c.until(s, &w.alpha, &clock, REVOKED, Duration::from_secs(5))
            .await;
        assert_eq!(
            c.check(s, &w.beta, &clock).await,
            ALLOWED,
            "others unaffected"
        );
        assert_eq!(s.app.pipeline.events.counts().revoked, 1);
    }
    let published = redis.entries(STREAM);
    assert_eq!(published.len(), 1);
    assert!(published[0]["envelope"].contains(r#""reason":"agent_revoked""#));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn with_the_stream_down_the_crl_poll_still_revokes_within_its_interval() {
    let mut redis = RedisServer::start().await;
    let w = World::new("stream-down").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = replica(&w, &redis, &clock).await;
    let crl = s.app.pipeline.crl.clone();
    eventually("the stream is read", || crl.push_healthy()).await;
    assert_eq!(
        crl.interval_ms(),
        720_000,
        "lengthened while push is healthy"
    );

    redis.stop();
    eventually("the stream is seen down", || !crl.push_healthy()).await;
    assert_eq!(crl.interval_ms(), 300_000, "back to the normal poll");

    // The registry revokes alpha's AIT; the next poll (5 minutes on) carries it.
    clock.advance_ms(300_000);
    let iat = clock.now_ms() / 1000;
    let alpha = w.registry.agent_did(&w.alpha.ulid);
    let token = w.registry.sign_crl(
        &[(alpha, w.alpha.jti.clone())],
        iat,
        "01KDVDKFD0CR00000000000002",
    );
    w.crl
        .set(vec![Reply::Body(200, format!(r#"{{"crl":"{token}"}}"#))]);
    crl.refresh_if_due(&s.app.pipeline.keys).await;
    let mut c = Checker { n: 0 };
    assert_eq!(c.check(&mut s, &w.alpha, &clock).await, REVOKED);
    assert_eq!(c.check(&mut s, &w.beta, &clock).await, ALLOWED);
    s.stop().await;
}

#[tokio::test]
async fn malformed_entries_go_to_the_dead_letter_stream_and_the_next_one_applies() {
    let redis = RedisServer::start().await;
    let w = World::new("dlq").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = replica(&w, &redis, &clock).await;
    redis.xadd(STREAM, "envelope", b"{not json");
    redis.xadd(STREAM, "payload", b"{}");
    let beta = w.registry.agent_did(&w.beta.ulid);
    publish(
        &settings(&redis),
        &revocation_envelope(&beta, NOW_MS).unwrap(),
        NOW_MS,
    )
    .await
    .unwrap();
    let events = s.app.pipeline.events.clone();
    eventually("three entries read", || events.counts().read == 3).await;
    assert_eq!(events.counts().rejected, 2);
    let mut c = Checker { n: 0 };
    assert_eq!(c.check(&mut s, &w.beta, &clock).await, REVOKED);
    assert_eq!(c.check(&mut s, &w.alpha, &clock).await, ALLOWED);
    let dead = redis.entries(DLQ);
    let reasons: Vec<&str> = dead.iter().map(|e| e["reason"].as_str()).collect();
    assert_eq!(
        reasons,
        [
            "Registry event is not valid JSON",
            "stream entry has no envelope field"
        ]
    );
    assert_eq!(dead[0]["envelope"], "{not json");
    s.stop().await;
}

#[tokio::test]
async fn other_types_and_reasons_are_ignored_and_a_duplicate_changes_nothing() {
    let redis = RedisServer::start().await;
    let w = World::new("ignored").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = replica(&w, &redis, &clock).await;
    let alpha = w.registry.agent_did(&w.alpha.ulid);
    let beta = w.registry.agent_did(&w.beta.ulid);
    let other_reason = revocation_envelope(&alpha, NOW_MS)
        .unwrap()
        .replace("agent_revoked", "owner_auth_revoke");
    let unknown_type = revocation_envelope(&alpha, NOW_MS)
        .unwrap()
        .replace("agent.auth.revoked", "agent.auth.issued");
    let revoke_beta = revocation_envelope(&beta, NOW_MS).unwrap();
    for envelope in [&other_reason, &unknown_type, &revoke_beta, &revoke_beta] {
        redis.xadd(STREAM, "envelope", envelope.as_bytes());
    }
    let events = s.app.pipeline.events.clone();
    eventually("four entries read", || events.counts().read == 4).await;
    let counts = events.counts();
    assert_eq!(
        (
            counts.ignored,
            counts.revoked,
            counts.duplicates,
            counts.rejected
        ),
        (2, 1, 1, 0)
    );
    let mut c = Checker { n: 0 };
    assert_eq!(c.check(&mut s, &w.alpha, &clock).await, ALLOWED);
    assert_eq!(c.check(&mut s, &w.beta, &clock).await, REVOKED);
    assert!(redis.entries(DLQ).is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_replica_started_after_a_revocation_still_denies_the_agent() {
    let redis = RedisServer::start().await;
    let w = World::new("restart").await;
    let clock = ManualClock::at(NOW_MS);
    let first = replica(&w, &redis, &clock).await;
    let alpha = w.registry.agent_did(&w.alpha.ulid);
    publish(
        &settings(&redis),
        &revocation_envelope(&alpha, NOW_MS).unwrap(),
        NOW_MS,
    )
    .await
    .unwrap();
    let events = first.app.pipeline.events.clone();
    eventually("the first replica applied it", || {
        events.counts().revoked == 1
    })
    .await;
    first.stop().await;
    // A replica that was not running when the event was published replays the stream.
    let mut restarted = replica(&w, &redis, &clock).await;
    let events = restarted.app.pipeline.events.clone();
    eventually("the stream replayed", || events.counts().revoked == 1).await;
    let mut c = Checker { n: 0 };
    assert_eq!(c.check(&mut restarted, &w.alpha, &clock).await, REVOKED);
    assert_eq!(c.check(&mut restarted, &w.beta, &clock).await, ALLOWED);
    restarted.stop().await;
}

#[tokio::test]
async fn every_event_vector_gives_the_reference_outcome() {
    let redis = RedisServer::start().await;
    let w = World::new("vectors").await;
    let clock = ManualClock::at(NOW_MS);
    let s = replica(&w, &redis, &clock).await;
    let file = support::load("events.json");
    let vectors = file["vectors"].as_array().unwrap();
    for v in vectors {
        let body = match v.get("queueMessageBody") {
            Some(b) => b.as_str().unwrap().to_owned(),
            None => v["envelope"].to_string(),
        };
        redis.xadd(STREAM, "envelope", body.as_bytes());
    }
    let events = s.app.pipeline.events.clone();
    eventually("every vector read", || {
        events.counts().read == vectors.len() as u64
    })
    .await;
    let mut dead = redis.entries(DLQ).into_iter();
    let (mut revoked, mut ignored) = (0, 0);
    for v in vectors {
        let id = v["id"].as_str().unwrap();
        match v.get("parse").map(|p| p["outcome"].as_str().unwrap()) {
            Some("markAgentRevoked") => {
                let did = v["parse"]["agentDid"].as_str().unwrap();
                assert!(events.is_revoked(did, clock.now_ms()), "{id}");
                revoked += 1;
            }
            Some(o) if o.starts_with("rejected") => {
                let entry = dead
                    .next()
                    .unwrap_or_else(|| panic!("{id}: not dead-lettered"));
                assert_eq!(entry["reason"], v["parse"]["error"]["message"], "{id}");
            }
            // Ignored, and shape-only vectors of other types: acknowledged, nothing done.
            _ => ignored += 1,
        }
    }
    assert!(dead.next().is_none());
    let counts = events.counts();
    assert_eq!((counts.revoked, counts.ignored), (revoked, ignored));
    s.stop().await;
}

#[tokio::test]
async fn without_redis_the_admin_endpoint_takes_the_same_envelope() {
    let w = World::new("admin-events").await;
    let token_file = w.dir.join("events.token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let clock = ManualClock::at(NOW_MS);
    let extra = format!("events:\n  token_file: {}\n", token_file.display());
    let mut s = support::server::start(&w.yaml(&extra), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    let alpha = w.registry.agent_did(&w.alpha.ulid);
    let envelope = revocation_envelope(&alpha, NOW_MS).unwrap();
    let url = format!("http://{}/v1/events", s.admin);
    let http = reqwest::Client::new();
    let post = |token: Option<&str>| {
        let mut r = http.post(&url).body(envelope.clone());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("wrong")).await.unwrap().status(), 401);
    let mut c = Checker { n: 0 };
    assert_eq!(c.check(&mut s, &w.alpha, &clock).await, ALLOWED);
    let answer = post(Some("s3cret-token")).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.text().await.unwrap(),
        format!(r#"{{"agentDid":"{alpha}","new":true,"outcome":"revoked"}}"#)
    );
    assert_eq!(c.check(&mut s, &w.alpha, &clock).await, REVOKED);
    let bad = http
        .post(&url)
        .bearer_auth("s3cret-token")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    s.stop().await;
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// The closing figure of issue 7: 100 revocations, each published to the stream while a
/// replica is polled through the Check API until it denies the agent.
#[tokio::test]
async fn figure_publish_to_deny_latency_over_100_revocations() {
    let redis = RedisServer::start().await;
    let w = World::with_crew("latency", 100).await;
    let clock = ManualClock::at(NOW_MS);
    let (mut a, mut b) = (
        replica(&w, &redis, &clock).await,
        replica(&w, &redis, &clock).await,
    );
    let mut c = Checker { n: 0 };
    let mut took = Vec::new();
    for (i, agent) in w.crew.iter().enumerate() {
        let s = if i % 2 == 0 { &mut a } else { &mut b };
        assert_eq!(c.check(s, agent, &clock).await, ALLOWED);
        let did = w.registry.agent_did(&agent.ulid);
        let started = tokio::time::Instant::now();
        publish(
            &settings(&redis),
            &revocation_envelope(&did, NOW_MS).unwrap(),
            NOW_MS,
        )
        .await
        .unwrap();
        c.until(s, agent, &clock, REVOKED, Duration::from_secs(5))
            .await;
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "figure: publish-to-deny latency over {} revocations: p50 {:?} p99 {:?} max {:?}",
        took.len(),
        percentile(&took, 0.50),
        percentile(&took, 0.99),
        took[took.len() - 1]
    );
    a.stop().await;
    b.stop().await;
}

/// Issue 18, finding 6: a malformed entry whose dead-letter write fails (here the dead-letter key
/// is not a stream) is skipped, and the revocation after it still applies.
#[tokio::test]
async fn a_failing_dead_letter_write_never_stalls_pushed_revocation() {
    let redis = RedisServer::start().await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("SET")
        .arg(DLQ)
        .arg("not a stream")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let w = World::new("dlq-failing").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = replica(&w, &redis, &clock).await;
    redis.xadd(STREAM, "envelope", b"{not json");
    let beta = w.registry.agent_did(&w.beta.ulid);
    let envelope = revocation_envelope(&beta, NOW_MS).unwrap();
    publish(&settings(&redis), &envelope, NOW_MS).await.unwrap();
    let events = s.app.pipeline.events.clone();
    eventually("both entries read", || events.counts().read == 2).await;
    let mut c = Checker { n: 0 };
    assert_eq!(c.check(&mut s, &w.beta, &clock).await, REVOKED);
    s.stop().await;
}

/// Issue 18, finding 6: with no token configured, `POST /v1/events` refuses everyone (in a pod
/// every container shares loopback); `events.admin_unauthenticated: true` is the explicit way
/// back, and only with a loopback admin listener.
#[tokio::test]
async fn the_events_endpoint_needs_a_token_unless_explicitly_opened() {
    let w = World::new("events-no-token").await;
    let clock = ManualClock::at(NOW_MS);
    let alpha = w.registry.agent_did(&w.alpha.ulid);
    let envelope = revocation_envelope(&alpha, NOW_MS).unwrap();
    for (extra, want) in [("", 401), ("events:\n  admin_unauthenticated: true\n", 200)] {
        let s = support::server::start(&w.yaml(extra), Arc::new(clock.clone())).await;
        s.wait_ready().await;
        let answer = reqwest::Client::new()
            .post(format!("http://{}/v1/events", s.admin))
            .body(envelope.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), want, "{extra:?}");
        s.stop().await;
    }
    let exposed = format!(
        "{}listen:\n  admin: 0.0.0.0:0\nevents:\n  admin_unauthenticated: true\n  token_file: {}\n",
        "",
        w.dir.join("trust.yaml").display()
    );
    let errors =
        claw_authz::config::Config::load(&w.yaml(&exposed), &Default::default()).unwrap_err();
    assert!(
        errors.contains(
            &"events.admin_unauthenticated: is only allowed with a loopback listen.admin"
                .to_owned()
        ),
        "{errors:?}"
    );
}

/// Issue 18: with the overlay full (`events.capacity`), a new revocation on the stream is skipped
/// and counted, never dead-lettered and never stalling the stream; the CRL goes back to its own
/// poll interval (the push no longer carries every revocation), and a revocation already held
/// still applies.
#[tokio::test]
async fn a_full_overlay_skips_new_revocations_without_stalling_the_stream() {
    use claw_authz::revocation::publisher::token_revocation_envelope;
    let redis = RedisServer::start().await;
    let w = World::new("overlay-full").await;
    let clock = ManualClock::at(NOW_MS);
    let extra = format!("redis:\n  url: {}\nevents:\n  capacity: 1\n", redis.url());
    let mut s = support::server::start(&w.yaml(&extra), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    let (alpha, beta) = (
        w.registry.agent_did(&w.alpha.ulid),
        w.registry.agent_did(&w.beta.ulid),
    );
    let envelopes = [
        revocation_envelope(&beta, NOW_MS).unwrap(),
        revocation_envelope(&alpha, NOW_MS).unwrap(),
        token_revocation_envelope("01KDVA7EC1TOKEN00000000001", NOW_MS),
        token_revocation_envelope("01KDVA7EC1TOKEN00000000002", NOW_MS),
        revocation_envelope(&beta, NOW_MS).unwrap(),
    ];
    for envelope in &envelopes {
        publish(&settings(&redis), envelope, NOW_MS).await.unwrap();
    }
    let events = s.app.pipeline.events.clone();
    eventually("five entries read", || events.counts().read == 5).await;
    let counts = events.counts();
    // Beta and the first token held; alpha and the second token refused; beta again extends the
    // revocation it holds (published later), so it is applied too.
    assert_eq!((counts.revoked, counts.full, counts.rejected), (3, 2, 0));
    assert_eq!(events.held(), 2);
    assert!(redis.entries(DLQ).is_empty(), "nothing dead-lettered");
    let crl = &s.app.pipeline.crl;
    eventually("the CRL poll back to its interval", || !crl.push_healthy()).await;
    assert_eq!(crl.interval_ms(), 300_000);
    let mut c = Checker { n: 0 };
    assert_eq!(c.check(&mut s, &w.beta, &clock).await, REVOKED);
    assert_eq!(c.check(&mut s, &w.alpha, &clock).await, ALLOWED);
    s.stop().await;
}

//! Memory under attack (issue 18), for the structures the other attack tests do not fill: the
//! AIT, trust and access caches (filled by many registered agents through the Check API) and
//! the pushed-revocation overlay (filled through `POST /v1/events`, its only writer besides the
//! registry's stream). Each is filled past its capacity while a legitimate agent is served, and
//! the bound is read from the cache and from `/metrics`. The nonce store, the access cache under
//! random tokens and the limiter keys have theirs in `replay.rs`, `registry_faults.rs` and
//! `rate_limits.rs`.

mod support;

use std::sync::Arc;

use claw_authz::clock::ManualClock;
use claw_authz::dev::sign::random_ulid;
use claw_authz::revocation::publisher::{revocation_envelope, token_revocation_envelope};
use serde_json::json;
use support::redis::RedisServer;
use support::registry::Reply;
use support::server::Running;
use support::world::{NOW_MS, World, outcome};

const ALLOWED: &str = "200";
const CAPACITY: usize = 50;

async fn metrics_text(s: &Running) -> String {
    let url = format!("http://{}/metrics", s.admin);
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The trust cache stands in front of the Redis trust store (a trust file is read from memory,
/// with nothing cached), so the agents are paired in a real Redis.
#[tokio::test]
async fn many_agents_cannot_grow_the_caches_past_their_bounds() {
    let redis = RedisServer::start().await;
    let w = World::with_crew("many-agents", 200).await;
    let clock = ManualClock::at(NOW_MS);
    // The lines under `trust:` continue the world's own `trust:` section.
    let extra = format!(
        "  cache_capacity: {CAPACITY}\nnonce:\n  store: memory\nlimits:\n  ait_cache_capacity: \
         {CAPACITY}\naccess:\n  capacity: {CAPACITY}\nredis:\n  url: {}\n",
        redis.url()
    );
    let yaml = w.with_trust_in_redis(&w.yaml(&extra), "");
    let store = redis.store();
    let did = |agent: &support::world::Agent| w.registry.agent_did(&agent.ulid);
    for agent in std::iter::once(&w.beta).chain(&w.crew) {
        store.pair(&did(&w.alpha), &did(agent)).await.unwrap();
    }
    let mut s = support::server::start(&yaml, Arc::new(clock.clone())).await;
    s.wait_ready().await;
    let p = &s.app.pipeline;
    p.crl.refresh_if_due(&p.keys).await;

    // 200 agents, each with its own AIT, access token and trust answers; alpha keeps working.
    for (i, agent) in w.crew.iter().enumerate() {
        let token = format!("clw_agt_crew_{i}");
        let r = s
            .check(agent.message(NOW_MS, &format!("c-{i}"), &token))
            .await;
        assert_eq!(outcome(&r), ALLOWED, "crew agent {i}");
        if i % 20 == 0 {
            let r = s
                .check(w.alpha.message(NOW_MS, &format!("a-{i}"), "clw_agt_alpha"))
                .await;
            assert_eq!(outcome(&r), ALLOWED, "alpha after crew agent {i}");
        }
    }
    let p = &s.app.pipeline;
    p.trust.flush().await;
    p.access.flush().await;
    // Full, and no fuller: a known-agent and a revocation answer per agent kept; valid access
    // answers only (no token was refused).
    assert_eq!(p.aits.len(), CAPACITY);
    assert_eq!(p.trust.len(), 2 * CAPACITY);
    assert_eq!(p.access.len(), CAPACITY);
    let page = metrics_text(&s).await;
    assert!(
        page.contains(&format!(
            "claw_authz_cache_entries{{cache=\"ait\"}} {CAPACITY}\n"
        )),
        "{page}"
    );
    // The token alpha keeps using is still cached after 200 one-off ones (TinyLFU).
    let [hits, _, _] = p.aits.counts.get();
    let r = s
        .check(w.alpha.message(NOW_MS, "a-last", "clw_agt_alpha"))
        .await;
    assert_eq!(outcome(&r), ALLOWED);
    assert_eq!(
        s.app.pipeline.aits.counts.get()[0],
        hits + 1,
        "alpha's AIT was a hit"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_flood_of_revocations_cannot_grow_the_overlay_past_its_capacity() {
    let w = World::new("revocation-flood").await;
    // The CRL revokes beta: a revocation the full overlay refuses still applies from the CRL.
    let beta = w.registry.agent_did(&w.beta.ulid);
    let crl = w.registry.sign_crl(
        &[(beta.clone(), w.beta.jti.clone())],
        NOW_MS / 1000 - 10,
        &random_ulid(NOW_MS),
    );
    w.crl
        .set(vec![Reply::Body(200, json!({ "crl": crl }).to_string())]);
    let token_file = w.dir.join("events-token");
    std::fs::write(&token_file, "events-secret\n").unwrap();
    let extra = format!(
        "events:\n  capacity: 20\n  token_file: {}\n",
        token_file.display()
    );
    let clock = ManualClock::at(NOW_MS);
    let mut s = support::server::start(&w.yaml(&extra), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    let p = &s.app.pipeline;
    p.crl.refresh_if_due(&p.keys).await;
    let post = |envelope: String| {
        let url = format!("http://{}/v1/events", s.admin);
        async move {
            let answer = reqwest::Client::new()
                .post(url)
                .bearer_auth("events-secret")
                .body(envelope)
                .send()
                .await
                .unwrap();
            answer.status().as_u16()
        }
    };

    let mut statuses = Vec::new();
    for i in 0..30u64 {
        let did = w.registry.agent_did(&random_ulid(NOW_MS - i));
        statuses.push(post(revocation_envelope(&did, NOW_MS).unwrap()).await);
    }
    assert_eq!(statuses[..20], [200; 20]);
    assert_eq!(statuses[20..], [503; 10]);
    assert_eq!(post(revocation_envelope(&beta, NOW_MS).unwrap()).await, 503);
    // Token ids have a capacity of their own.
    let mut statuses = Vec::new();
    for i in 0..21u64 {
        let jti = random_ulid(NOW_MS - i);
        statuses.push(post(token_revocation_envelope(&jti, NOW_MS)).await);
    }
    assert_eq!(statuses[..20], [200; 20]);
    assert_eq!(statuses[20], 503);
    let events = &s.app.pipeline.events;
    assert_eq!((events.held(), events.counts().full), (40, 12));

    let r = s
        .check(w.signed(&w.alpha, "GET", "/v1/x", b"", "n-a", &[]))
        .await;
    assert_eq!(outcome(&r), ALLOWED, "alpha is served");
    let r = s
        .check(w.signed(&w.beta, "GET", "/v1/x", b"", "n-b", &[]))
        .await;
    assert_eq!(outcome(&r), "401 PROXY_AUTH_REVOKED", "beta, from the CRL");
    let page = metrics_text(&s).await;
    assert!(page.contains("claw_authz_revocations_held 40\n"), "{page}");
    assert!(
        page.contains("claw_authz_revocation_events_total{result=\"full\"} 12\n"),
        "{page}"
    );
    s.stop().await;
}

use super::*;
use crate::config::Config;

fn config(extra: &str) -> SecurityConfig {
    let yaml = format!("registry:\n  url: https://r.example\nsecurity_events:\n{extra}");
    Config::load(&yaml, &Default::default()).unwrap().security
}

fn denied(code: &'static str, agent: &str, client: &str, at_ms: u64) -> Observation {
    Observation::Denied {
        code,
        agent: Some(agent.into()).filter(|a: &String| !a.is_empty()),
        client: Some(client.into()),
        at_ms,
    }
}

#[test]
fn replays_fire_once_per_window_at_the_threshold() {
    let mut d = Detectors::new(&config("  replay_threshold: 3\n  replay_window_secs: 60\n"));
    let replay = |at| denied("PROXY_AUTH_REPLAY", "did:a", "198.51.100.4", at);
    assert_eq!(d.observe(replay(1_000)), None);
    assert_eq!(d.observe(replay(2_000)), None);
    let e = d.observe(replay(3_000)).expect("the third replay");
    assert_eq!(e.kind, Kind::ReplayDetected);
    assert_eq!(
        (
            e.agent.as_deref(),
            e.client.as_deref(),
            e.count,
            e.window_secs
        ),
        (Some("did:a"), Some("198.51.100.4"), 3, 60)
    );
    assert_eq!(d.observe(replay(4_000)), None, "once per window");
    // A new window counts afresh.
    assert_eq!(d.observe(replay(70_000)), None);
    assert_eq!(d.observe(replay(71_000)), None);
    assert!(d.observe(replay(72_000)).is_some());
}

#[test]
fn invalid_credentials_count_per_client_address() {
    let mut d = Detectors::new(&config("  invalid_threshold: 2\n"));
    let bad = |client, at| denied("PROXY_AUTH_INVALID_PROOF", "", client, at);
    assert_eq!(d.observe(bad("203.0.113.1", 1)), None);
    assert_eq!(d.observe(bad("203.0.113.2", 2)), None);
    let e = d
        .observe(denied("PROXY_AUTH_DPOP_INVALID", "", "203.0.113.1", 3))
        .unwrap();
    assert_eq!(e.kind, Kind::InvalidCredentialsBurst);
    assert_eq!(e.client.as_deref(), Some("203.0.113.1"));
    assert_eq!(
        e.detail["codes"],
        json!(["PROXY_AUTH_INVALID_PROOF", "PROXY_AUTH_DPOP_INVALID"])
    );
    // Codes no detector counts are ignored.
    assert!(!counts("PROXY_RATE_LIMIT_EXCEEDED"));
    assert_eq!(
        d.observe(denied("PROXY_RATE_LIMIT_EXCEEDED", "x", "203.0.113.9", 4)),
        None
    );
}

#[test]
fn a_second_network_soon_after_the_first_is_reported() {
    let mut d = Detectors::new(&config("  network_window_secs: 600\n"));
    let allowed = |client: &str, at| Observation::Allowed {
        agent: "did:a".into(),
        client: Some(client.into()),
        at_ms: at,
    };
    assert_eq!(d.observe(allowed("192.0.2.10", 0)), None);
    assert_eq!(d.observe(allowed("192.0.2.99", 1_000)), None, "same /24");
    let e = d.observe(allowed("198.51.100.7", 2_000)).unwrap();
    assert_eq!(e.kind, Kind::AgentNetworkChanged);
    assert_eq!(e.detail["previousNetwork"], json!("192.0.2.0/24"));
    assert_eq!(e.detail["network"], json!("198.51.100.0/24"));
    // Alternating between the two within the window: no further event.
    assert_eq!(d.observe(allowed("192.0.2.10", 3_000)), None);
    assert_eq!(d.observe(allowed("198.51.100.7", 4_000)), None);
    // Back after a quiet window: a move, not a jump.
    assert_eq!(d.observe(allowed("192.0.2.10", 700_000)), None);
    assert_eq!(network("2001:db8:1:2::7"), "2001:db8:1::/48");
    assert_eq!(network("::ffff:192.0.2.10"), "192.0.2.0/24");
}

#[test]
fn a_flood_of_new_keys_is_capped_and_reported_once() {
    let mut d = Detectors::new(&config("  max_tracked: 16\n  invalid_threshold: 5\n"));
    let mut saturated = 0;
    for i in 0..1_000u64 {
        let client = format!("10.{}.{}.{}", i / 65_536, i / 256 % 256, i % 256);
        if let Some(e) = d.observe(denied("PROXY_AUTH_INVALID_PROOF", "", &client, i)) {
            assert_eq!(e.kind, Kind::DetectorSaturated);
            assert_eq!(e.detail["detector"], json!("invalid"));
            saturated += 1;
        }
    }
    assert_eq!(saturated, 1);
    assert_eq!(d.tracked(), 16);
    // A tracked client still fires.
    let mut fired = None;
    for at in 2_000..2_005 {
        fired = fired.or(d.observe(denied("PROXY_AUTH_INVALID_PROOF", "", "10.0.0.0", at)));
    }
    assert_eq!(fired.map(|e| e.kind), Some(Kind::InvalidCredentialsBurst));
}

#[test]
fn breakers_opening_and_data_going_stale_are_read_from_polls() {
    use crate::metrics::Endpoint;
    let mut d = Detectors::new(&config("  stale_after_secs: 60\n"));
    let reading = |opened: u64, closed: u64, state, crl_stale: u64| Reading {
        breakers: vec![BreakerReading {
            endpoint: Endpoint::Crl,
            issuer: None,
            state,
            transitions: [closed, opened, 0],
        }],
        stale_for_ms: vec![(Data::Keys, Some(0)), (Data::Crl, Some(crl_stale))],
    };
    assert!(
        d.poll(&reading(0, 0, BreakerState::Closed, 0), 0)
            .is_empty()
    );
    let events = d.poll(&reading(1, 0, BreakerState::Open, 61_000), 1);
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [Kind::BreakerOpened, Kind::StaleDataServed]);
    assert_eq!(events[0].detail["endpoint"], json!("crl"));
    assert_eq!(events[1].detail["data"], json!("crl"));
    // Still stale, and a failed probe reopened it: the same outage, nothing new.
    assert!(
        d.poll(&reading(2, 0, BreakerState::Open, 62_000), 2)
            .is_empty()
    );
    // Closed and fresh; then open again and gone half-open before the reading, and stale
    // again: both reported.
    assert!(
        d.poll(&reading(2, 1, BreakerState::Closed, 0), 3)
            .is_empty()
    );
    assert_eq!(
        d.poll(&reading(3, 1, BreakerState::HalfOpen, 90_000), 4)
            .len(),
        2
    );
}

#[test]
fn addresses_of_one_ipv6_block_count_together() {
    let mut d = Detectors::new(&config("  invalid_threshold: 3\n"));
    let bad = |client, at| denied("PROXY_AUTH_INVALID_PROOF", "", client, at);
    assert_eq!(d.observe(bad("2001:db8:1:2::1", 1)), None);
    assert_eq!(d.observe(bad("2001:db8:1:2:ffff::9", 2)), None);
    let e = d.observe(bad("2001:db8:1:2:abcd::5", 3)).expect("one /64");
    assert_eq!(e.client.as_deref(), Some("2001:db8:1:2:abcd::5"));
    assert_eq!(client_key("::ffff:192.0.2.7"), "192.0.2.7");
    assert_eq!(client_key(&"é".repeat(100)).len(), 64);
}

//! The second half of `claw-authz demo`: what happens when the registry goes away.
//!
//! After the scripted table, the demo's own registry stops answering (it hangs); known agents go
//! on being allowed from cached keys and access validations while the registry's circuit breakers
//! open; a revocation pushed to the admin endpoint takes effect at once, registry or not; then the
//! registry comes back and the breakers close. Every phase prints its outcome. The demo runs on
//! short timings (see [`DEMO_TIMINGS`]) so the whole story takes seconds, on the real clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::clock::{Clock, SystemClock};
use crate::dev::demo::Transport;
use crate::dev::registry::DevRegistry;
use crate::registry::breaker::State;

/// Config the demo adds so the story fits in seconds: background registry calls give up after
/// 300 ms, two failures open a breaker for 2 s, access validations are renewed every second and
/// keys every 2 s (so the outage is noticed at once), and the CRL is polled every second.
pub(crate) const DEMO_TIMINGS: &str = "  timeout_ms: 300\n  request_timeout_ms: 200\n  breaker_failures: 2\n  breaker_open_secs: 2\n  keys_ttl_secs: 2\naccess:\n  ttl_secs: 1\ncrl:\n  refresh_interval_secs: 1\n";

/// How long a phase may take before the demo reports it did not get there.
const PHASE_LIMIT_MS: u64 = 25_000;

pub(crate) async fn run(
    app: &Arc<App>,
    registry: &DevRegistry,
    admin: SocketAddr,
    transport: &mut Transport,
) -> Result<(), String> {
    // Alpha was seen by the table; beta once now, so the registry's answers about both are
    // cached. Beta stays usable afterwards (the demo's by-hand instructions sign as beta).
    let (alpha, beta) = (registry.agent("alpha"), registry.agent("beta"));
    transport.send_hook(beta).await?;
    println!("\nThe registry goes down (it stops answering):");
    registry.set_hanging(true);
    let (mut sent, mut allowed) = (0, 0);
    let all_open = |states: &[(_, State); 3]| states.iter().all(|(_, s)| *s == State::Open);
    let deadline = SystemClock.now_ms() + PHASE_LIMIT_MS;
    let opened = loop {
        let (status, _) = transport.send_hook(beta).await?;
        sent += 1;
        allowed += usize::from(status == 200);
        if let Some(reached) = settle(app, deadline, all_open).await {
            break reached;
        }
    };
    let p = &app.pipeline;
    println!(
        "  known agent beta: {allowed} of {sent} checks allowed while it was down (cached keys and access validations)"
    );
    println!("  breakers: {}", breakers(app));
    println!(
        "  stale answers used: keys {}, access validations {}{}",
        p.keys.stale_served(),
        p.access.stale_used(),
        if opened {
            ""
        } else {
            "  (not every breaker opened in time)"
        }
    );

    println!("\nA revocation is pushed (POST /v1/events), the registry still down:");
    let (before, _) = transport.send_hook(alpha).await?;
    let token = match &app.events_endpoint {
        crate::app::EventsEndpoint::Token(token) => token.clone(),
        _ => String::new(),
    };
    post_revocation(admin, &alpha.did, &token).await?;
    let (status, code) = transport.send_hook(alpha).await?;
    println!("  agent alpha before: {before}; right after the event: {status} {code}");

    println!("\nThe registry comes back:");
    registry.set_hanging(false);
    let all_closed = |states: &[(_, State); 3]| states.iter().all(|(_, s)| *s == State::Closed);
    let deadline = SystemClock.now_ms() + PHASE_LIMIT_MS;
    let closed = loop {
        transport.send_hook(beta).await?;
        if let Some(reached) = settle(app, deadline, all_closed).await {
            break reached;
        }
    };
    let (status, code) = transport.send_hook(beta).await?;
    println!(
        "  breakers: {}{}",
        breakers(app),
        if closed {
            ""
        } else {
            "  (not every breaker closed in time)"
        }
    );
    println!("  known agent beta: {status} {code}");
    Ok(())
}

/// After a check of the phase: `Some(true)` once `done` holds for the breakers, `Some(false)`
/// when the phase ran past `deadline_ms`, `None` to send another check (after 100 ms).
async fn settle(
    app: &App,
    deadline_ms: u64,
    done: impl Fn(&[(crate::metrics::Endpoint, State); 3]) -> bool,
) -> Option<bool> {
    let p = &app.pipeline;
    p.crl.refresh_if_due(&p.keys).await;
    if done(&app.registry.states()) {
        return Some(true);
    }
    if SystemClock.now_ms() > deadline_ms {
        return Some(false);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    None
}

fn breakers(app: &App) -> String {
    app.registry
        .states()
        .iter()
        .map(|(endpoint, state)| format!("{} {}", endpoint.as_str(), state.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The registry's `agent.auth.revoked` event for `did`, posted to the admin endpoint.
async fn post_revocation(admin: SocketAddr, did: &str, token: &str) -> Result<(), String> {
    let envelope = serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "agent.auth.revoked",
        "version": "v1",
        "timestampUtc": "2026-01-01T00:00:00.000Z",
        "data": {"reason": "agent_revoked", "metadata": {"agentDid": did}},
    });
    let response = reqwest::Client::new()
        .post(format!("http://{admin}/v1/events"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(envelope.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("POST /v1/events answered {}", response.status()));
    }
    Ok(())
}

//! The detectors: counts per agent or client address over fixed windows, each keyed structure
//! capped at `max_tracked` keys (client addresses are the caller's choice), fed one observation
//! at a time by the monitor's task, off the request path.
//!
//! | type | key | fires when |
//! |---|---|---|
//! | `replay_detected` | agent | `replay_threshold` replays within `replay_window_secs` |
//! | `invalid_credentials_burst` | client address | `invalid_threshold` invalid proofs, signatures or tokens within `invalid_window_secs` |
//! | `revoked_agent_retrying` | agent | `revoked_threshold` attempts of a revoked or unknown agent within `revoked_window_secs` |
//! | `agent_network_changed` | agent | an allow from another network (IPv4 /24, IPv6 /48) within `network_window_secs` of the last, once per window |
//! | `clock_skew_drift` | agent | an accepted request at or past `proof.skew_warning_secs`, once per `skew_window_secs` |
//! | `breaker_opened` | breaker | a breaker moved to open (once until it closes again) |
//! | `stale_data_served` | keys, CRL | held `stale_after_secs` past their freshness (the keys' TTL, `crl.max_age_secs`), again only after they were fresh |
//! | `detector_saturated` | detector | a detector held `max_tracked` keys and could not track a new one (once per window) |
//!
//! Each window fires once, at its threshold, so a flood makes one event, not thousands.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::json;

use super::event::{Kind, SecurityEvent};
use crate::config::SecurityConfig;
#[cfg(test)]
use crate::metrics::BreakerState;
use crate::metrics::{BreakerReading, Data};

/// What the request path hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A denial that a detector counts (`Detectors::counts`).
    Denied {
        code: &'static str,
        agent: Option<String>,
        client: Option<String>,
        at_ms: u64,
    },
    /// An allowed request of a verified agent.
    Allowed {
        agent: String,
        client: Option<String>,
        at_ms: u64,
    },
    /// An accepted request whose clock was at or past the warning skew.
    Skew {
        agent: String,
        skew_secs: u64,
        max_skew_secs: u64,
        at_ms: u64,
    },
}

/// Denial codes of invalid credentials (forged, altered or malformed proofs, signatures and
/// tokens).
const INVALID: [&str; 8] = [
    "PROXY_AUTH_INVALID_PROOF",
    "PROXY_AUTH_INVALID_AIT",
    "PROXY_AUTH_SIGNATURE_INVALID",
    "PROXY_AUTH_DPOP_INVALID",
    "PROXY_AUTH_BEARER_SIGNATURE",
    "PROXY_AUTH_BEARER_ALGORITHM",
    "PROXY_AUTH_BEARER_MALFORMED",
    "PROXY_AUTH_BEARER_UNKNOWN_KEY",
];

/// Denial codes of an agent that may no longer authenticate.
const REVOKED: [&str; 3] = [
    "PROXY_AUTH_REVOKED",
    "PROXY_AUTH_TOKEN_REVOKED",
    "PROXY_AUTH_FORBIDDEN",
];

const REPLAY: &str = "PROXY_AUTH_REPLAY";

/// Whether a denial with `code` is one a detector counts (the request path sends no other).
pub fn counts(code: &str) -> bool {
    code == REPLAY || INVALID.contains(&code) || REVOKED.contains(&code)
}

/// What the monitor reads on its own, every `poll_ms`.
pub struct Reading {
    pub breakers: Vec<BreakerReading>,
    /// How long the keys and the CRL have been past their freshness (their TTL, `crl.max_age`):
    /// 0 while fresh, none when never loaded.
    pub stale_for_ms: Vec<(Data, Option<u64>)>,
}

/// A count over a window that starts with its first observation.
#[derive(Debug, Default)]
struct Window {
    start_ms: u64,
    count: u64,
    fired: bool,
    /// The denial codes seen, at most 8.
    codes: Vec<&'static str>,
    last: Option<String>,
}

impl Window {
    /// Counts one at `now_ms`; `true` when this one reaches `threshold` (once per window).
    fn count(&mut self, now_ms: u64, window_ms: u64, threshold: u64) -> bool {
        if self.count == 0 || now_ms.saturating_sub(self.start_ms) >= window_ms {
            *self = Window {
                start_ms: now_ms,
                ..Window::default()
            };
        }
        self.count += 1;
        let reached = self.count >= threshold && !self.fired;
        self.fired |= reached;
        reached
    }
}

/// Per-key state, at most `cap` keys; keys older than `ttl_ms` make room for new ones.
struct Tracked<V> {
    name: &'static str,
    map: HashMap<String, (u64, V)>,
    cap: usize,
    ttl_ms: u64,
    last_prune_ms: u64,
    /// When `detector_saturated` last fired for this detector.
    saturated_ms: Option<u64>,
}

impl<V: Default> Tracked<V> {
    fn new(name: &'static str, cap: usize, ttl_ms: u64) -> Self {
        Tracked {
            name,
            map: HashMap::new(),
            cap,
            ttl_ms,
            last_prune_ms: 0,
            saturated_ms: None,
        }
    }

    /// The state of `key`, made when absent, with when the key was seen before (`None` when it
    /// is new). `Err` with an event when the detector is full (the event at most once per
    /// `ttl_ms`), `Err(None)` when full and already reported.
    #[allow(clippy::type_complexity)]
    fn get(
        &mut self,
        key: &str,
        now_ms: u64,
    ) -> Result<(Option<u64>, &mut V), Option<SecurityEvent>> {
        if !self.map.contains_key(key) && self.map.len() >= self.cap {
            // Expired keys go, at most once a second (a flood of new keys costs no more).
            if now_ms.saturating_sub(self.last_prune_ms) >= 1_000 {
                let ttl = self.ttl_ms;
                self.map
                    .retain(|_, (seen, _)| now_ms.saturating_sub(*seen) < ttl);
                self.last_prune_ms = now_ms;
            }
            if self.map.len() >= self.cap {
                let due = self
                    .saturated_ms
                    .is_none_or(|t| now_ms.saturating_sub(t) >= self.ttl_ms);
                if !due {
                    return Err(None);
                }
                self.saturated_ms = Some(now_ms);
                let mut e = SecurityEvent::new(Kind::DetectorSaturated, now_ms);
                e.count = self.cap as u64;
                e.window_secs = self.ttl_ms / 1000;
                e.detail.insert("detector".into(), json!(self.name));
                return Err(Some(e));
            }
        }
        let mut fresh = false;
        let entry = self.map.entry(key.to_owned()).or_insert_with(|| {
            fresh = true;
            (now_ms, V::default())
        });
        let before = (!fresh).then_some(entry.0);
        entry.0 = now_ms;
        Ok((before, &mut entry.1))
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// An agent's last network and when its last network event fired.
#[derive(Debug, Default)]
struct Seen {
    network: Option<String>,
    reported_ms: Option<u64>,
}

/// Every detector's state.
pub struct Detectors {
    config: SecurityConfig,
    replays: Tracked<Window>,
    invalid: Tracked<Window>,
    revoked: Tracked<Window>,
    networks: Tracked<Seen>,
    skew: Tracked<u64>,
    /// Per breaker: transitions into open seen so far, and into closed when its last event
    /// fired.
    breakers: HashMap<(String, Option<String>), (u64, Option<u64>)>,
    /// Whether keys and the CRL were past the threshold at the last reading.
    stale: HashMap<&'static str, bool>,
}

impl Detectors {
    pub fn new(config: &SecurityConfig) -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let cap = config.max_tracked;
        Detectors {
            replays: Tracked::new("replay", cap, ms(config.replay.window)),
            invalid: Tracked::new("invalid", cap, ms(config.invalid.window)),
            revoked: Tracked::new("revoked", cap, ms(config.revoked.window)),
            networks: Tracked::new("network", cap, ms(config.network_window)),
            skew: Tracked::new("skew", cap, ms(config.skew_window)),
            breakers: HashMap::new(),
            stale: HashMap::new(),
            config: config.clone(),
        }
    }

    /// Keys tracked by all detectors together.
    pub fn tracked(&self) -> usize {
        self.replays.len()
            + self.invalid.len()
            + self.revoked.len()
            + self.networks.len()
            + self.skew.len()
    }

    /// The events `o` completes.
    pub fn observe(&mut self, o: Observation) -> Option<SecurityEvent> {
        match o {
            Observation::Denied {
                code,
                agent,
                client,
                at_ms,
            } => self.denied(code, agent, client, at_ms),
            Observation::Allowed {
                agent,
                client,
                at_ms,
            } => self.allowed(agent, client?, at_ms),
            Observation::Skew {
                agent,
                skew_secs,
                max_skew_secs,
                at_ms,
            } => {
                let window = self.skew.ttl_ms;
                let last = match self.skew.get(&agent, at_ms) {
                    Ok((_, last)) => last,
                    Err(saturated) => return saturated,
                };
                if *last != 0 && at_ms.saturating_sub(*last) < window {
                    return None;
                }
                *last = at_ms.max(1);
                let mut e = SecurityEvent::new(Kind::ClockSkewDrift, at_ms);
                e.agent = Some(agent);
                e.window_secs = window / 1000;
                e.risk = (20 + 30 * skew_secs / max_skew_secs.max(1)).min(50);
                e.detail.insert("skewSecs".into(), json!(skew_secs));
                e.detail.insert("maxSkewSecs".into(), json!(max_skew_secs));
                Some(e)
            }
        }
    }

    fn denied(
        &mut self,
        code: &'static str,
        agent: Option<String>,
        client: Option<String>,
        at_ms: u64,
    ) -> Option<SecurityEvent> {
        let (kind, threshold, key) = if code == REPLAY {
            (Kind::ReplayDetected, self.config.replay, agent.clone()?)
        } else if INVALID.contains(&code) {
            let key = client_key(client.as_deref()?);
            (Kind::InvalidCredentialsBurst, self.config.invalid, key)
        } else if REVOKED.contains(&code) {
            (
                Kind::RevokedAgentRetrying,
                self.config.revoked,
                agent.clone()?,
            )
        } else {
            return None;
        };
        let tracked = match kind {
            Kind::ReplayDetected => &mut self.replays,
            Kind::InvalidCredentialsBurst => &mut self.invalid,
            _ => &mut self.revoked,
        };
        let window_ms = tracked.ttl_ms;
        let w = match tracked.get(&key, at_ms) {
            Ok((_, w)) => w,
            Err(saturated) => return saturated,
        };
        let reached = w.count(at_ms, window_ms, threshold.count);
        if w.codes.len() < 8 && !w.codes.contains(&code) {
            w.codes.push(code);
        }
        // The other side of the key: the last client of an agent, the last agent of a client.
        let other = if kind == Kind::InvalidCredentialsBurst {
            agent.clone()
        } else {
            client.clone()
        };
        if other.is_some() {
            w.last = other;
        }
        if !reached {
            return None;
        }
        let mut e = SecurityEvent::new(kind, at_ms);
        e.count = w.count;
        e.window_secs = window_ms / 1000;
        e.risk = (kind.base_risk() + 5 * (w.count / threshold.count).saturating_sub(1)).min(100);
        e.detail.insert("codes".into(), json!(w.codes));
        match kind {
            Kind::InvalidCredentialsBurst => {
                e.client = client;
                e.agent = w.last.clone();
            }
            _ => {
                e.agent = agent;
                e.client = w.last.clone();
            }
        }
        Some(e)
    }

    fn allowed(&mut self, agent: String, client: String, at_ms: u64) -> Option<SecurityEvent> {
        let net = network(&client);
        let window_ms = self.networks.ttl_ms;
        let (before, seen) = match self.networks.get(&agent, at_ms) {
            Ok(state) => state,
            Err(saturated) => return saturated,
        };
        let previous = seen.network.replace(net.clone());
        let recent = before.is_some_and(|t| at_ms.saturating_sub(t) <= window_ms);
        // Once per window: an agent behind several egress addresses (dual stack, a NAT pool)
        // alternates all day, and that is one fact, not a stream of them.
        let quiet = seen
            .reported_ms
            .is_none_or(|t| at_ms.saturating_sub(t) >= window_ms);
        match previous {
            Some(p) if p != net && recent && quiet => {
                seen.reported_ms = Some(at_ms);
                let mut e = SecurityEvent::new(Kind::AgentNetworkChanged, at_ms);
                e.agent = Some(agent);
                e.client = Some(client);
                e.window_secs = window_ms / 1000;
                e.detail.insert("previousNetwork".into(), json!(p));
                e.detail.insert("network".into(), json!(net));
                Some(e)
            }
            _ => None,
        }
    }

    /// The events of this reading: breakers that opened since the last one, data that went
    /// stale.
    pub fn poll(&mut self, reading: &Reading, now_ms: u64) -> Vec<SecurityEvent> {
        let mut out = Vec::new();
        for b in &reading.breakers {
            // Any opening since the last reading counts, whatever the state now (it may have
            // gone half-open between readings); a failed probe's reopening during the same
            // outage does not, until the breaker has closed.
            let (opened, closed) = (b.transitions[1], b.transitions[0]);
            let key = (b.endpoint.as_str().to_owned(), b.issuer.clone());
            let seen = self.breakers.entry(key).or_insert((0, None));
            let opened_before = std::mem::replace(&mut seen.0, opened);
            // `seen.1`: the closings counted when the last event fired.
            let first_of_outage = seen.1.is_none_or(|closed_then| closed > closed_then);
            if opened > opened_before && first_of_outage {
                seen.1 = Some(closed);
                let mut e = SecurityEvent::new(Kind::BreakerOpened, now_ms);
                e.count = opened - opened_before;
                e.detail
                    .insert("endpoint".into(), json!(b.endpoint.as_str()));
                e.detail.insert("issuer".into(), json!(b.issuer));
                out.push(e);
            }
        }
        let limit = u64::try_from(self.config.stale_after.as_millis()).unwrap_or(u64::MAX);
        for (data, age) in &reading.stale_for_ms {
            let name = match data {
                Data::Keys => "keys",
                Data::Crl => "crl",
                _ => continue,
            };
            let stale = age.is_some_and(|a| a > limit);
            let was = self.stale.insert(name, stale).unwrap_or(false);
            if stale && !was {
                let mut e = SecurityEvent::new(Kind::StaleDataServed, now_ms);
                e.window_secs = limit / 1000;
                e.detail.insert("data".into(), json!(name));
                e.detail
                    .insert("staleForSecs".into(), json!(age.unwrap_or(0) / 1000));
                out.push(e);
            }
        }
        out
    }
}

/// What a client address is counted under: an IPv4 address, an IPv6 /64 (one host's block:
/// spreading attempts over it changes nothing), or at most 64 bytes of anything else (a
/// `client_header` value).
fn client_key(client: &str) -> String {
    match client.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Err(_) => {
            let end = (0..=client.len().min(64))
                .rev()
                .find(|i| client.is_char_boundary(*i))
                .unwrap_or(0);
            client[..end].to_owned()
        }
    }
}

/// The client's network: IPv4 /24, IPv6 /48, or the text itself when it is not an address.
pub(crate) fn network(client: &str) -> String {
    // `::ffff:a.b.c.d` is the IPv4 address it maps (a dual-stack listener's view).
    match client.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        Err(_) => client.to_owned(),
    }
}

#[cfg(test)]
mod tests;

//! Security events as CloudEvents 1.0 JSON (structured mode): the catalogue of types, and what
//! each carries. An event names an agent, a client address, counts and a window, never a
//! credential.

use serde_json::{Value, json};

/// Every event type, under one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Replays of one agent's requests (a captured request sent again).
    ReplayDetected,
    /// Invalid proofs, signatures or tokens from one client address.
    InvalidCredentialsBurst,
    /// A revoked or unknown agent that keeps trying.
    RevokedAgentRetrying,
    /// An agent authenticating from a second client network shortly after another.
    AgentNetworkChanged,
    /// An agent's clock drifting toward the skew limit.
    ClockSkewDrift,
    /// A registry, issuer or directory breaker opened.
    BreakerOpened,
    /// Signing keys or the CRL served past the staleness threshold.
    StaleDataServed,
    /// A detector tracks as many keys as it may; new keys go untracked until some expire.
    DetectorSaturated,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::ReplayDetected,
        Kind::InvalidCredentialsBurst,
        Kind::RevokedAgentRetrying,
        Kind::AgentNetworkChanged,
        Kind::ClockSkewDrift,
        Kind::BreakerOpened,
        Kind::StaleDataServed,
        Kind::DetectorSaturated,
    ];

    /// The CloudEvents `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ReplayDetected => "claw.security.replay_detected",
            Kind::InvalidCredentialsBurst => "claw.security.invalid_credentials_burst",
            Kind::RevokedAgentRetrying => "claw.security.revoked_agent_retrying",
            Kind::AgentNetworkChanged => "claw.security.agent_network_changed",
            Kind::ClockSkewDrift => "claw.security.clock_skew_drift",
            Kind::BreakerOpened => "claw.security.breaker_opened",
            Kind::StaleDataServed => "claw.security.stale_data_served",
            Kind::DetectorSaturated => "claw.security.detector_saturated",
        }
    }

    /// The base risk score (0-100); a detector may raise it with the count.
    pub(crate) fn base_risk(self) -> u64 {
        match self {
            Kind::ReplayDetected => 80,
            Kind::RevokedAgentRetrying => 70,
            Kind::InvalidCredentialsBurst => 60,
            Kind::AgentNetworkChanged => 50,
            Kind::BreakerOpened | Kind::StaleDataServed | Kind::DetectorSaturated => 40,
            Kind::ClockSkewDrift => 20,
        }
    }
}

/// One detected event, before it is given an id and a time.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityEvent {
    pub kind: Kind,
    /// The verified agent, when there is one (the CloudEvents `subject`).
    pub agent: Option<String>,
    pub client: Option<String>,
    pub count: u64,
    pub window_secs: u64,
    pub risk: u64,
    /// What else the type carries (codes, networks, an endpoint, a skew).
    pub detail: serde_json::Map<String, Value>,
    pub at_ms: u64,
}

impl SecurityEvent {
    pub(crate) fn new(kind: Kind, at_ms: u64) -> Self {
        SecurityEvent {
            kind,
            agent: None,
            client: None,
            count: 1,
            window_secs: 0,
            risk: kind.base_risk(),
            detail: serde_json::Map::new(),
            at_ms,
        }
    }

    /// The CloudEvent, with this `id` and `source`.
    pub fn to_cloudevent(&self, id: &str, source: &str) -> Value {
        let mut data = json!({
            "agent": self.agent,
            "client": self.client,
            "count": self.count,
            "windowSecs": self.window_secs,
            "risk": self.risk,
        });
        if let Value::Object(d) = &mut data {
            d.extend(self.detail.clone());
        }
        let mut event = json!({
            "specversion": "1.0",
            "id": id,
            "source": source,
            "type": self.kind.as_str(),
            "time": crate::revocation::publisher::iso_utc(self.at_ms),
            "datacontenttype": "application/json",
            "data": data,
        });
        if let Some(agent) = &self.agent {
            event["subject"] = json!(agent);
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_a_cloudevent_with_its_subject() {
        let mut e = SecurityEvent::new(Kind::ReplayDetected, 1_767_225_600_000);
        e.agent = Some("did:cdi:registry.example.com:agent:01".into());
        e.client = Some("203.0.113.7".into());
        e.count = 3;
        e.window_secs = 300;
        let ce = e.to_cloudevent("id-1", "claw-authz");
        assert_eq!(
            ce,
            json!({
                "specversion": "1.0", "id": "id-1", "source": "claw-authz",
                "type": "claw.security.replay_detected", "time": "2026-01-01T00:00:00.000Z",
                "datacontenttype": "application/json",
                "subject": "did:cdi:registry.example.com:agent:01",
                "data": {"agent": "did:cdi:registry.example.com:agent:01", "client": "203.0.113.7",
                         "count": 3, "windowSecs": 300, "risk": 80},
            })
        );
    }
}

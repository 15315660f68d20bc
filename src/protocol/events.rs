//! Registry events (`docs/protocol.md` §8): the envelope and what the reference does with each.
//!
//! Only `agent.auth.revoked` with reason `agent_revoked` changes state (the agent DID in
//! `data.metadata.agentDid` is revoked). Other types and reasons are acknowledged and ignored, so
//! the consumer stays forward compatible; malformed envelopes are rejected with a reason and
//! never retried.

use super::ids::{invalid_did_message, parse_agent_did};
use super::json::Json;

pub(crate) const AGENT_AUTH_REVOKED: &str = "agent.auth.revoked";
pub(crate) const REASON_AGENT_REVOKED: &str = "agent_revoked";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// Mark this agent DID revoked.
    RevokeAgent {
        event_id: Option<String>,
        agent_did: String,
    },
    /// Well formed, but nothing to do (unknown type or another revocation reason).
    Ignored(IgnoredBecause),
    /// Malformed; the message says why (never retried).
    Rejected(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredBecause {
    UnsupportedEventType,
    UnsupportedReason,
}

pub fn parse_event(body: &[u8]) -> EventOutcome {
    let rejected = |m: &str| EventOutcome::Rejected(m.to_owned());
    // `JSON.parse`, as the reference reads a queue message: a repeated member keeps the last.
    let envelope = match Json::parse_lenient(body) {
        Ok(Json::Object(o)) => o,
        Ok(_) => return rejected("Registry event must be a JSON object"),
        Err(_) => return rejected("Registry event is not valid JSON"),
    };
    let Some(event_type) = envelope.get("type").and_then(Json::as_str) else {
        return rejected("Registry event type must be a string");
    };
    if event_type != AGENT_AUTH_REVOKED {
        return EventOutcome::Ignored(IgnoredBecause::UnsupportedEventType);
    }
    let Some(data) = envelope.get("data").and_then(Json::as_object) else {
        return rejected("Registry revocation event data must be an object");
    };
    if data.get("reason").and_then(Json::as_str) != Some(REASON_AGENT_REVOKED) {
        return EventOutcome::Ignored(IgnoredBecause::UnsupportedReason);
    }
    let Some(metadata) = data.get("metadata").and_then(Json::as_object) else {
        return rejected("Registry revocation event metadata must be an object");
    };
    let Some(raw_did) = metadata.get("agentDid").and_then(Json::as_str) else {
        return rejected("Registry revocation event agentDid must be a string");
    };
    let agent_did = raw_did.trim();
    if parse_agent_did(agent_did).is_none() {
        return EventOutcome::Rejected(invalid_did_message(agent_did));
    }
    EventOutcome::RevokeAgent {
        event_id: envelope.get("id").and_then(Json::as_str).map(str::to_owned),
        agent_did: agent_did.to_owned(),
    }
}

//! The revocation overlay: agents and token ids revoked by registry events, checked by the
//! pipeline before the CRL so a revocation applies within a second. Pure state behind locks; the
//! stream consumer ([`super::consumer`]) and the admin endpoint feed it.
//!
//! Semantics are the reference's: `agent.auth.revoked` with reason `agent_revoked` revokes
//! `data.metadata.agentDid` for 30 days (counted from the entry's id, so replays are
//! idempotent); other reasons and unknown types are acknowledged and ignored. claw-authz's own
//! `claw.token.revoked` revokes a token id.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::clock::Every;
use crate::protocol::events::{EventOutcome, IgnoredBecause, parse_event};
use crate::protocol::json::{Json, Object};

/// The longest envelope id remembered (real ones are UUIDs or ULIDs).
const MAX_ID_LEN: usize = 128;

/// How long an `agent_revoked` event keeps the agent revoked (the reference's TTL).
pub const REVOCATION_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// `new` is false when the agent was already revoked at least that long (a duplicate).
    Revoked {
        agent_did: String,
        new: bool,
    },
    /// A token id (an AIT's or a bearer JWT's `jti`) revoked by a `claw.token.revoked` event.
    RevokedToken {
        jti: String,
        new: bool,
    },
    Ignored(IgnoredBecause),
    Rejected(String),
    /// A new revocation while `events.capacity` revocations of its kind are held: not applied,
    /// counted and logged as an error. An agent revocation the registry made still applies from
    /// its CRL (at the next poll, which a full overlay brings back to `crl.refresh_interval`); a
    /// token revocation (`claw.token.revoked`, `claw-authz revoke --jti`) is lost.
    Full,
}

/// Revoked agents and how they got there; shared by the stream consumer, the admin endpoint
/// and the pipeline. The revocations themselves are never evicted (that would un-revoke), only
/// pruned once they end; past `capacity` of a kind, new ones are refused ([`Applied::Full`]).
/// Envelope ids are remembered to spot duplicates, `capacity` of them; past that the oldest are
/// forgotten (a forgotten id applied again changes nothing: revocations are idempotent).
pub struct Events {
    capacity: usize,
    /// Agent DID -> revoked until (unix ms).
    revoked: Held,
    /// Token id -> revoked until (unix ms).
    revoked_tokens: Held,
    /// Envelope ids already applied; a repeated id is a duplicate.
    seen: moka::sync::Cache<String, ()>,
    revoked_new: AtomicU64,
    duplicates: AtomicU64,
    ignored: AtomicU64,
    pub(super) rejected: AtomicU64,
    /// Stream entries read.
    pub(super) read: AtomicU64,
    /// Rejected entries whose dead-letter write failed (skipped all the same).
    pub(super) dead_letter_failures: AtomicU64,
    /// New revocations refused because `capacity` of their kind were held.
    full: AtomicU64,
    full_log: Every,
}

/// Counters, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventCounts {
    pub revoked: u64,
    pub duplicates: u64,
    pub ignored: u64,
    pub rejected: u64,
    pub read: u64,
    pub full: u64,
}

impl Events {
    /// Holds at most `capacity` revoked agents, as many revoked token ids and as many
    /// envelope ids.
    pub fn new(capacity: usize) -> Self {
        Events {
            capacity,
            revoked: Held::default(),
            revoked_tokens: Held::default(),
            seen: moka::sync::Cache::builder()
                .max_capacity(capacity as u64)
                .time_to_live(std::time::Duration::from_millis(REVOCATION_TTL_MS))
                .build(),
            revoked_new: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            read: AtomicU64::new(0),
            dead_letter_failures: AtomicU64::new(0),
            full: AtomicU64::new(0),
            full_log: Every::new(),
        }
    }

    /// Revocations held now (agents and token ids).
    pub fn held(&self) -> usize {
        self.revoked.len() + self.revoked_tokens.len()
    }

    pub fn is_revoked(&self, agent_did: &str, now_ms: u64) -> bool {
        self.revoked.until(agent_did) > now_ms
    }

    pub(crate) fn is_token_revoked(&self, jti: &str, now_ms: u64) -> bool {
        self.revoked_tokens.until(jti) > now_ms
    }

    pub fn counts(&self) -> EventCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EventCounts {
            revoked: get(&self.revoked_new),
            duplicates: get(&self.duplicates),
            ignored: get(&self.ignored),
            rejected: get(&self.rejected),
            read: get(&self.read),
            full: get(&self.full),
        }
    }

    /// Whether a new revocation of either kind can still be held.
    pub(crate) fn has_room(&self) -> bool {
        self.revoked.len() < self.capacity && self.revoked_tokens.len() < self.capacity
    }

    /// Applies one envelope published at `published_ms`, at `now_ms`. Idempotent.
    pub(crate) fn apply(&self, envelope: &[u8], published_ms: u64, now_ms: u64) -> Applied {
        let until = published_ms.saturating_add(REVOCATION_TTL_MS);
        // The same envelope (by `id`) published again changes nothing.
        // Parsed once here for claw-authz's own fields; the reference's parser reads the rest.
        let object = match Json::parse_lenient(envelope) {
            Ok(Json::Object(o)) => Some(o),
            _ => None,
        };
        let id = object
            .as_ref()
            .and_then(|o| o.get("id"))
            .and_then(Json::as_str);
        // An id longer than any real one (a UUID, a ULID) is not remembered: applying its event
        // again changes nothing, and the ids kept stay small.
        let id = id.filter(|id| id.len() <= MAX_ID_LEN);
        let repeated = id.is_some_and(|id| {
            let entry = self.seen.entry_by_ref(id).or_insert(());
            !entry.is_fresh()
        });
        // Whether the revocation is new; `None` when it is and the map is full.
        let hold = |held: &Held, key: &str| {
            held.change(|map| {
                if repeated && map.contains_key(key) {
                    return Some(false);
                }
                if !map.contains_key(key) && map.len() >= self.capacity {
                    return None;
                }
                let held = map.entry(key.to_owned()).or_insert(0);
                let new = *held < until;
                *held = (*held).max(until);
                Some(new)
            })
        };
        let applied = match object.as_ref().and_then(token_revocation) {
            Some(Ok(jti)) => match hold(&self.revoked_tokens, &jti) {
                Some(new) => Applied::RevokedToken { new, jti },
                None => Applied::Full,
            },
            Some(Err(reason)) => Applied::Rejected(reason.to_owned()),
            None => match parse_event(envelope) {
                EventOutcome::RevokeAgent { agent_did, .. } => {
                    match hold(&self.revoked, &agent_did) {
                        Some(new) => Applied::Revoked { new, agent_did },
                        None => Applied::Full,
                    }
                }
                EventOutcome::Ignored(why) => Applied::Ignored(why),
                EventOutcome::Rejected(reason) => Applied::Rejected(reason),
            },
        };
        let counter = match &applied {
            Applied::Revoked { new: true, .. } | Applied::RevokedToken { new: true, .. } => {
                &self.revoked_new
            }
            Applied::Revoked { new: false, .. } | Applied::RevokedToken { new: false, .. } => {
                &self.duplicates
            }
            Applied::Ignored(_) => &self.ignored,
            Applied::Rejected(_) => &self.rejected,
            Applied::Full => &self.full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match &applied {
            Applied::Revoked { agent_did, new } => {
                tracing::info!(agent_did, new, "registry event: agent revoked")
            }
            Applied::RevokedToken { jti, new } => {
                tracing::info!(jti, new, "registry event: token revoked")
            }
            Applied::Ignored(why) => tracing::debug!(?why, "registry event ignored"),
            Applied::Rejected(reason) => tracing::warn!(reason, "registry event rejected"),
            Applied::Full => {
                if let Some(skipped) = self.full_log.due(now_ms) {
                    tracing::error!(
                        capacity = self.capacity,
                        skipped,
                        "revocation not applied: events.capacity revocations of its kind are \
                         held (an agent revocation still applies from the registry's CRL; a \
                         token revocation is lost)"
                    );
                }
            }
        }
        applied
    }

    /// Drops revocations that have ended.
    pub(crate) fn prune(&self, now_ms: u64) {
        for held in [&self.revoked, &self.revoked_tokens] {
            held.change(|map| map.retain(|_, until| *until > now_ms));
        }
    }
}

/// Revocations of one kind: key -> revoked until (unix ms). Every check looks both kinds up;
/// while none are held (no events configured, or all ended) the lookup reads one counter
/// instead of taking the lock both worker threads share.
#[derive(Default)]
struct Held {
    map: Mutex<HashMap<String, u64>>,
    /// The map's length, written under its lock after every change.
    len: AtomicUsize,
}

impl Held {
    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Until when `key` is revoked (0: it is not).
    fn until(&self, key: &str) -> u64 {
        if self.len() == 0 {
            return 0;
        }
        lock(&self.map).get(key).copied().unwrap_or(0)
    }

    fn change<T>(&self, change: impl FnOnce(&mut HashMap<String, u64>) -> T) -> T {
        let mut map = lock(&self.map);
        let out = change(&mut map);
        self.len.store(map.len(), Ordering::Release);
        out
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// claw-authz's own event type: `{"type":"claw.token.revoked","data":{"jti":"..."}}` revokes a
/// token id (an AIT's `jti` or a bearer JWT's) for 30 days. `None` when the envelope is another
/// type (or not JSON at all: the reference parser reports that).
fn token_revocation(o: &Object) -> Option<Result<String, &'static str>> {
    if o.get("type").and_then(Json::as_str) != Some(TOKEN_REVOKED) {
        return None;
    }
    let jti = o
        .get("data")
        .and_then(Json::as_object)
        .and_then(|d| d.get("jti"))
        .and_then(Json::as_str)
        .map(str::trim)
        .filter(|j| (1..=256).contains(&j.len()));
    Some(
        jti.map(str::to_owned)
            .ok_or("Token revocation event data.jti must be a string"),
    )
}

/// The event type that revokes a token id.
pub const TOKEN_REVOKED: &str = "claw.token.revoked";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::publisher::{revocation_envelope, token_revocation_envelope};

    const AGENT: &str = "did:cdi:registry.example:agent:01HF7YAT00W6W7CM7N3W5FDXT4";

    /// Lookups skip the lock while nothing is held: a revocation applied after every earlier
    /// one was pruned is seen at once, of either kind.
    #[test]
    fn a_revocation_after_the_overlay_emptied_applies_at_once() {
        let events = Events::new(10);
        assert!(!events.is_revoked(AGENT, 0) && !events.is_token_revoked("j-1", 0));
        for round in 0..2u64 {
            let at = round * 2 * REVOCATION_TTL_MS;
            let agent = revocation_envelope(AGENT, at).unwrap();
            let token = token_revocation_envelope("j-1", at);
            assert!(matches!(
                events.apply(agent.as_bytes(), at, at),
                Applied::Revoked { new: true, .. }
            ));
            assert!(matches!(
                events.apply(token.as_bytes(), at, at),
                Applied::RevokedToken { new: true, .. }
            ));
            assert!(events.is_revoked(AGENT, at), "round {round}");
            assert!(events.is_token_revoked("j-1", at), "round {round}");
            assert!(!events.is_revoked("did:cdi:registry.example:agent:other", at));
            assert_eq!(events.held(), 2);
            let ended = at + REVOCATION_TTL_MS;
            events.prune(ended);
            assert_eq!(events.held(), 0);
            assert!(!events.is_revoked(AGENT, ended) && !events.is_token_revoked("j-1", ended));
        }
    }
}

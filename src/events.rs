//! Pushed revocations: registry events (`docs/protocol.md` §8) applied to a revocation overlay that
//! the pipeline checks before the CRL, so a revoked agent is refused within a second.
//!
//! Events arrive on a Redis Stream (`events.stream`, default `claw:events`), each entry holding
//! the envelope JSON in its `envelope` field. Every replica reads the whole stream itself with
//! `XREAD` (no consumer group, which would split events between replicas), remembers the last
//! id, and resumes from it after a reconnect. At start it replays the stream from `replay_days`
//! ago (30, the revocation lifetime), which restores the overlay: nothing else needs to be
//! shared. Producers should trim the stream to that age (`XADD ... MINID ~ <ms>-0`); the CLI
//! does.
//!
//! Semantics are the reference's: `agent.auth.revoked` with reason `agent_revoked` revokes
//! `data.metadata.agentDid` for 30 days (counted from the entry's id, so replays are
//! idempotent); other reasons and unknown types are acknowledged and ignored; a malformed entry
//! goes to the dead-letter stream (`events.dlq`) with its reason, and the consumer carries on.
//!
//! Without Redis, the admin listener takes the same envelope at `POST /v1/events`.
//!
//! While the stream is being read without errors, the CRL poll lengthens
//! ([`CrlCache::set_push_healthy`]); on any error it returns to the normal interval at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::streams::{StreamReadOptions, StreamReadReply};

use crate::clock::Clock;
use crate::protocol::events::{EventOutcome, IgnoredBecause, parse_event};
use crate::protocol::json::{Json, Object};
use crate::registry::crl::CrlCache;

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
}

/// Revoked agents and how they got there; shared by the stream consumer, the admin endpoint
/// and the pipeline.
#[derive(Default)]
pub struct Events {
    /// Agent DID -> revoked until (unix ms).
    revoked: Mutex<HashMap<String, u64>>,
    /// Token id -> revoked until (unix ms).
    revoked_tokens: Mutex<HashMap<String, u64>>,
    /// Envelope ids already applied -> until when they matter; a repeated id is a duplicate.
    seen: Mutex<HashMap<String, u64>>,
    revoked_new: AtomicU64,
    duplicates: AtomicU64,
    ignored: AtomicU64,
    rejected: AtomicU64,
    /// Stream entries read.
    read: AtomicU64,
}

/// Counters, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventCounts {
    pub revoked: u64,
    pub duplicates: u64,
    pub ignored: u64,
    pub rejected: u64,
    pub read: u64,
}

impl Events {
    pub fn is_revoked(&self, agent_did: &str, now_ms: u64) -> bool {
        lock(&self.revoked)
            .get(agent_did)
            .is_some_and(|&until| until > now_ms)
    }

    pub fn is_token_revoked(&self, jti: &str, now_ms: u64) -> bool {
        lock(&self.revoked_tokens)
            .get(jti)
            .is_some_and(|&until| until > now_ms)
    }

    pub fn counts(&self) -> EventCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EventCounts {
            revoked: get(&self.revoked_new),
            duplicates: get(&self.duplicates),
            ignored: get(&self.ignored),
            rejected: get(&self.rejected),
            read: get(&self.read),
        }
    }

    /// Applies one envelope published at `published_ms`. Idempotent.
    pub fn apply(&self, envelope: &[u8], published_ms: u64) -> Applied {
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
        let repeated = id.map(str::to_owned).is_some_and(|id| {
            let mut seen = lock(&self.seen);
            let repeated = seen.contains_key(&id);
            seen.entry(id).or_insert(until);
            repeated
        });
        let hold = |map: &Mutex<HashMap<String, u64>>, key: &str| {
            let mut map = lock(map);
            if repeated && map.contains_key(key) {
                return false;
            }
            let held = map.entry(key.to_owned()).or_insert(0);
            let new = *held < until;
            *held = (*held).max(until);
            new
        };
        let applied = match object.as_ref().and_then(token_revocation) {
            Some(Ok(jti)) => Applied::RevokedToken {
                new: hold(&self.revoked_tokens, &jti),
                jti,
            },
            Some(Err(reason)) => Applied::Rejected(reason.to_owned()),
            None => match parse_event(envelope) {
                EventOutcome::RevokeAgent { agent_did, .. } => Applied::Revoked {
                    new: hold(&self.revoked, &agent_did),
                    agent_did,
                },
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
        }
        applied
    }

    /// Drops revocations that have ended.
    fn prune(&self, now_ms: u64) {
        lock(&self.revoked).retain(|_, until| *until > now_ms);
        lock(&self.revoked_tokens).retain(|_, until| *until > now_ms);
        lock(&self.seen).retain(|_, until| *until > now_ms);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub url: String,
    pub stream: String,
    pub dlq: String,
    pub replay_ms: u64,
}

/// How long one `XREAD` blocks waiting for entries.
const BLOCK_MS: usize = 1_000;

/// Reads the stream until `events` is dropped, reconnecting after any error.
pub fn spawn_consumer(
    events: &Arc<Events>,
    settings: StreamSettings,
    clock: Arc<dyn Clock>,
    crl: Arc<CrlCache>,
) {
    let weak = Arc::downgrade(events);
    tokio::spawn(async move {
        let client = match redis::Client::open(settings.url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "events: invalid redis URL; not consuming");
                return;
            }
        };
        let start = clock.now_ms().saturating_sub(settings.replay_ms);
        let mut last_id = format!("{start}-0");
        let mut backoff = Duration::from_millis(100);
        loop {
            if weak.strong_count() == 0 {
                return;
            }
            match consume(&client, &settings, &weak, &mut last_id, &crl, &*clock).await {
                Ok(()) => return,
                Err(e) => {
                    crl.set_push_healthy(false);
                    tracing::warn!(error = %e, stream = settings.stream, "events: stream unavailable; retrying");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    });
}

/// One connection's worth of reading; returns `Ok` when `events` is gone.
async fn consume(
    client: &redis::Client,
    settings: &StreamSettings,
    events: &std::sync::Weak<Events>,
    last_id: &mut String,
    crl: &CrlCache,
    clock: &dyn Clock,
) -> Result<(), String> {
    let bound = Duration::from_millis(BLOCK_MS as u64 + 2_000);
    // No response timeout of the driver's own: XREAD blocks on purpose; `bound` limits it.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let connect = client.get_multiplexed_async_connection_with_config(&config);
    let mut conn = tokio::time::timeout(bound, connect)
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let options = StreamReadOptions::default().block(BLOCK_MS).count(500);
    loop {
        // `None`: the block ended with nothing new.
        let reply: Option<StreamReadReply> = tokio::time::timeout(
            bound,
            redis::AsyncCommands::xread_options(
                &mut conn,
                &[&settings.stream],
                &[last_id.as_str()],
                &options,
            ),
        )
        .await
        .map_err(|_| "XREAD timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        crl.set_push_healthy(true);
        let Some(events) = events.upgrade() else {
            return Ok(());
        };
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                let published_ms = entry
                    .id
                    .split('-')
                    .next()
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or_else(|| clock.now_ms());
                let envelope = match entry.map.get("envelope") {
                    Some(redis::Value::BulkString(bytes)) => Some(bytes.as_slice()),
                    Some(redis::Value::SimpleString(s)) => Some(s.as_bytes()),
                    _ => None,
                };
                let rejected = match envelope {
                    None => {
                        events.rejected.fetch_add(1, Ordering::Relaxed);
                        Some("stream entry has no envelope field".to_owned())
                    }
                    Some(body) => match events.apply(body, published_ms) {
                        Applied::Rejected(reason) => Some(reason),
                        _ => None,
                    },
                };
                if let Some(reason) = rejected {
                    dead_letter(&mut conn, settings, &entry.id, &reason, envelope).await?;
                }
                *last_id = entry.id;
                // Counted once fully handled, so a reader of the count sees its effects.
                events.read.fetch_add(1, Ordering::Relaxed);
            }
        }
        events.prune(clock.now_ms());
    }
}

async fn dead_letter(
    conn: &mut redis::aio::MultiplexedConnection,
    settings: &StreamSettings,
    id: &str,
    reason: &str,
    envelope: Option<&[u8]>,
) -> Result<(), String> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&settings.dlq)
        .arg("MAXLEN")
        .arg("~")
        .arg(10_000)
        .arg("*")
        .arg("reason")
        .arg(reason)
        .arg("source_id")
        .arg(id)
        .arg("envelope")
        .arg(envelope.unwrap_or_default());
    tokio::time::timeout(Duration::from_secs(2), cmd.query_async::<String>(conn))
        .await
        .map_err(|_| "XADD to the dead-letter stream timed out".to_owned())?
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A well-formed `agent.auth.revoked` / `agent_revoked` envelope for `agent_did` (which must be
/// an agent DID), as the registry would publish it.
pub fn revocation_envelope(agent_did: &str, now_ms: u64) -> Result<String, String> {
    let did = crate::protocol::ids::parse_agent_did(agent_did)
        .ok_or_else(|| format!("not an agent DID: {agent_did}"))?;
    Ok(serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": crate::protocol::events::AGENT_AUTH_REVOKED,
        "version": "v1",
        "timestampUtc": iso_utc(now_ms),
        "initiatedByAccountId": null,
        "data": {
            "agentId": did.ulid,
            "sessionId": crate::sign::random_ulid(now_ms),
            "reason": crate::protocol::events::REASON_AGENT_REVOKED,
            "metadata": { "agentDid": agent_did },
        },
    })
    .to_string())
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

/// A `claw.token.revoked` envelope for `jti`.
pub fn token_revocation_envelope(jti: &str, now_ms: u64) -> String {
    serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": TOKEN_REVOKED,
        "version": "v1",
        "timestampUtc": iso_utc(now_ms),
        "data": { "jti": jti },
    })
    .to_string()
}

/// Appends `envelope` to the stream (trimmed to `replay_ms` of history); returns the entry id.
pub async fn publish(
    settings: &StreamSettings,
    envelope: &str,
    now_ms: u64,
) -> Result<String, String> {
    let client = redis::Client::open(settings.url.as_str()).map_err(|e| e.to_string())?;
    let bound = Duration::from_secs(5);
    let mut conn = tokio::time::timeout(bound, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| "connecting to redis timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let min_id = format!("{}-0", now_ms.saturating_sub(settings.replay_ms));
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&settings.stream)
        .arg("MINID")
        .arg("~")
        .arg(min_id)
        .arg("*")
        .arg("envelope")
        .arg(envelope);
    tokio::time::timeout(bound, cmd.query_async::<String>(&mut conn))
        .await
        .map_err(|_| "XADD timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// `2026-01-01T00:00:00.000Z`.
fn iso_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DID: &str = "did:cdi:registry.example.com:agent:01KDVA7EC0AGENTA0000000001";

    #[test]
    fn iso_timestamps_match_the_reference_format() {
        assert_eq!(iso_utc(1_767_225_600_000), "2026-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn our_envelope_revokes_and_is_idempotent() {
        let events = Events::default();
        let envelope = revocation_envelope(DID, 1_000).unwrap();
        let revoked = |new| Applied::Revoked {
            agent_did: DID.into(),
            new,
        };
        assert_eq!(events.apply(envelope.as_bytes(), 1_000), revoked(true));
        assert_eq!(events.apply(envelope.as_bytes(), 1_000), revoked(false));
        assert!(events.is_revoked(DID, 1_000 + REVOCATION_TTL_MS - 1));
        assert!(!events.is_revoked(DID, 1_000 + REVOCATION_TTL_MS));
        assert_eq!(
            events.counts(),
            EventCounts {
                revoked: 1,
                duplicates: 1,
                ..EventCounts::default()
            }
        );
        assert!(revocation_envelope("did:cdi:x:human:01KDVA7EC0AGENTA0000000001", 0).is_err());
    }
}

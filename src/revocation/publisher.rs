//! Publishing revocations (the `revoke` command, tests): the envelopes the registry would send,
//! appended to the stream every replica reads. Producers trim the stream to the replay window
//! (`XADD ... MINID ~ <ms>-0`).

use std::process::ExitCode;
use std::time::Duration;

use super::consumer::StreamSettings;
use super::overlay::TOKEN_REVOKED;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Defaults, EXIT_CONFIG};
use crate::protocol::ids::encode_ulid;

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
            "sessionId": encode_ulid(now_ms, uuid::Uuid::new_v4().as_u128()),
            "reason": crate::protocol::events::REASON_AGENT_REVOKED,
            "metadata": { "agentDid": agent_did },
        },
    })
    .to_string())
}

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
    let bound = Duration::from_secs(5);
    let mut conn = settings.target.lazy(Some(bound))?;
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
pub(crate) fn iso_utc(ms: u64) -> String {
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

/// What the `revoke` command revokes: an agent DID, or else a token id.
pub struct Target {
    pub agent: Option<String>,
    pub jti: Option<String>,
}

/// The `revoke` command: publishes the revocation of `target` to the stream (Redis and stream
/// from the flags, else from `loaded`, the config); prints the entry id. Exit 64 for a bad
/// target or no Redis, 1 when publishing fails.
pub async fn revoke(
    target: Target,
    redis_url: Option<String>,
    stream: Option<String>,
    loaded: Option<Config>,
) -> ExitCode {
    let Some(url) = redis_url.or_else(|| loaded.as_ref().and_then(|c| c.redis.url.clone())) else {
        eprintln!("error: no Redis: pass --redis-url or set redis.url in the config");
        return ExitCode::from(EXIT_CONFIG);
    };
    let settings = StreamSettings {
        target: crate::store::redis::Target {
            url,
            ca: loaded.as_ref().and_then(|c| c.redis.ca.clone()),
            cluster: loaded.as_ref().is_some_and(|c| c.redis.cluster),
        },
        stream: stream
            .or_else(|| loaded.as_ref().map(|c| c.events.stream.clone()))
            .unwrap_or_else(|| Defaults::EVENTS_STREAM.to_owned()),
        dlq: String::new(),
        replay_ms: loaded
            .as_ref()
            .map_or(Defaults::EVENTS_REPLAY_DAYS * 86_400_000, |c| {
                u64::try_from(c.events.replay.as_millis()).unwrap_or(u64::MAX)
            }),
    };
    let now = SystemClock.now_ms();
    let envelope = match (target.agent, target.jti) {
        (Some(agent), _) => match revocation_envelope(agent.trim(), now) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (None, Some(jti)) if !jti.trim().is_empty() => token_revocation_envelope(jti.trim(), now),
        _ => {
            eprintln!("error: pass --agent <did> or --jti <id>");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match publish(&settings, &envelope, now).await {
        Ok(id) => {
            println!("published {id} to {}: {envelope}", settings.stream);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot publish to {}: {e}", settings.stream);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::{Applied, EventCounts, Events, REVOCATION_TTL_MS};

    const DID: &str = "did:cdi:registry.example.com:agent:01KDVA7EC0AGENTA0000000001";

    #[test]
    fn iso_timestamps_match_the_reference_format() {
        assert_eq!(iso_utc(1_767_225_600_000), "2026-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn our_envelope_revokes_and_is_idempotent() {
        let events = Events::new(16);
        let envelope = revocation_envelope(DID, 1_000).unwrap();
        let revoked = |new| Applied::Revoked {
            agent_did: DID.into(),
            new,
        };
        assert_eq!(
            events.apply(envelope.as_bytes(), 1_000, 1_000),
            revoked(true)
        );
        assert_eq!(
            events.apply(envelope.as_bytes(), 1_000, 1_000),
            revoked(false)
        );
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

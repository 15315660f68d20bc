//! Reading registry events from a Redis Stream (`events.stream`, default `claw:events`), each
//! entry holding the envelope JSON in its `envelope` field. Every replica reads the whole stream
//! itself with `XREAD` (no consumer group, which would split events between replicas), remembers
//! the last id, and resumes from it after a reconnect. At start it replays the stream from
//! `replay_days` ago (30, the revocation lifetime), which restores the overlay: nothing else
//! needs to be shared. A malformed entry goes to the dead-letter stream (`events.dlq`) with its
//! reason, and the consumer carries on.
//!
//! While the stream is being read without errors, the CRL poll lengthens
//! (`CrlCache::set_push_healthy`); on any error it returns to the normal interval at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::streams::{StreamReadOptions, StreamReadReply};

use super::overlay::{Applied, Events};
use crate::cache::crl::CrlCache;
use crate::clock::Clock;

#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Redis (`redis.url`, `redis.ca_file`, `redis.cluster`).
    pub target: crate::store::redis::Target,
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
        let start = clock.now_ms().saturating_sub(settings.replay_ms);
        let mut last_id = format!("{start}-0");
        let mut backoff = Duration::from_millis(100);
        loop {
            if weak.strong_count() == 0 {
                return;
            }
            match consume(&settings, &weak, &mut last_id, &crl, &*clock).await {
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
    settings: &StreamSettings,
    events: &std::sync::Weak<Events>,
    last_id: &mut String,
    crl: &CrlCache,
    clock: &dyn Clock,
) -> Result<(), String> {
    let bound = Duration::from_millis(BLOCK_MS as u64 + 2_000);
    // No response timeout of the driver's own: XREAD blocks on purpose; `bound` limits it.
    let mut conn = settings.target.lazy(None)?;
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
        let Some(events) = events.upgrade() else {
            return Ok(());
        };
        // A full overlay drops new revocations, so the CRL is polled at its own interval again.
        crl.set_push_healthy(events.has_room());
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
                    Some(body) => match events.apply(body, published_ms, clock.now_ms()) {
                        Applied::Rejected(reason) => Some(reason),
                        _ => None,
                    },
                };
                // A dead-letter write that fails is logged and counted; the entry is skipped
                // either way, so one bad entry never stalls pushed revocation.
                if let Some(reason) = rejected
                    && let Err(error) =
                        dead_letter(&mut conn, settings, &entry.id, &reason, envelope).await
                {
                    events.dead_letter_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        error,
                        id = entry.id,
                        "events: dead-letter write failed; entry skipped"
                    );
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
    conn: &mut crate::store::redis::Connection,
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

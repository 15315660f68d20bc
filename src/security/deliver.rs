//! The sinks events go to, each with a bounded queue and a worker of its own: HTTP webhooks
//! signed as Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">`), retried with exponential backoff and full jitter,
//! behind a breaker per webhook, with a dead-letter record when delivery keeps failing; and
//! the Redis stream when Redis is configured.
//!
//! The breaker is a count of consecutive failed events kept by the webhook's one worker: it
//! needs no shared state, so `failsafe` (the registry's breakers) would add nothing here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use tokio::sync::mpsc;

use super::Counters;
use super::event::Kind;
use crate::clock::Clock as _;
use crate::config::{DeliveryConfig, SecurityConfig, WebhookConfig};
use crate::store::redis::Redis;

/// One event on its way: its id, type and CloudEvent text.
#[derive(Debug)]
pub struct Delivery {
    pub id: String,
    pub kind: Kind,
    pub body: Arc<str>,
}

/// The queues of every sink.
pub(super) struct Sinks {
    queues: Vec<mpsc::Sender<Arc<Delivery>>>,
    counters: Arc<Counters>,
}

impl Sinks {
    pub(super) fn start(
        config: &SecurityConfig,
        redis: Option<Redis>,
        counters: Arc<Counters>,
    ) -> Sinks {
        let mut queues = Vec::new();
        for webhook in &config.webhooks {
            let (tx, rx) = mpsc::channel(config.webhook.queue);
            let worker = Worker {
                webhook: webhook.clone(),
                delivery: config.webhook,
                dead_letter: config.dead_letter_file.clone(),
                counters: counters.clone(),
            };
            tokio::spawn(worker.run(rx));
            queues.push(tx);
        }
        if let Some(redis) = redis {
            let (tx, rx) = mpsc::channel(config.webhook.queue);
            tokio::spawn(stream(
                redis,
                config.redis_stream.clone(),
                rx,
                counters.clone(),
            ));
            queues.push(tx);
        }
        Sinks { queues, counters }
    }

    /// Hands `d` to every sink that has room.
    pub(super) fn offer(&self, d: &Delivery) {
        let shared = Arc::new(Delivery {
            id: d.id.clone(),
            kind: d.kind,
            body: d.body.clone(),
        });
        for q in &self.queues {
            if q.try_send(shared.clone()).is_err() {
                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The Standard Webhooks signature of `body` sent as `id` at `timestamp`.
pub fn signature(secret: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let signed = format!("{id}.{timestamp}.{body}");
    let tag = hmac::sign(&key, signed.as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Delivered,
    /// Worth another attempt (no answer, 5xx, 408, 429).
    Failed,
    /// The receiver refused the event itself (a 4xx): no retry.
    Refused,
}

/// The dead-letter file stops growing here (64 MiB); later records go to the log only.
const DEAD_LETTER_MAX_BYTES: u64 = 64 << 20;

struct Worker {
    webhook: WebhookConfig,
    delivery: DeliveryConfig,
    dead_letter: Option<std::path::PathBuf>,
    counters: Arc<Counters>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Arc<Delivery>>) {
        let client = reqwest::Client::builder()
            .timeout(self.delivery.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build();
        let Ok(client) = client else {
            tracing::error!(webhook = %self.webhook.name, "cannot build the webhook client");
            return;
        };
        let mut failed_in_a_row = 0u32;
        let mut open_until: Option<tokio::time::Instant> = None;
        while let Some(d) = rx.recv().await {
            if open_until.is_some_and(|t| tokio::time::Instant::now() < t) {
                self.dead_letter(&d, 0, "breaker open").await;
                continue;
            }
            let mut attempts = 0;
            let mut outcome = Attempt::Failed;
            while attempts < self.delivery.attempts && outcome == Attempt::Failed {
                if attempts > 0 {
                    tokio::time::sleep(self.backoff(attempts)).await;
                }
                attempts += 1;
                outcome = self.send(&client, &d).await;
                if outcome != Attempt::Delivered {
                    self.counters
                        .failed_attempts
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            let delivered = outcome == Attempt::Delivered;
            if delivered {
                failed_in_a_row = 0;
                open_until = None;
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            failed_in_a_row += 1;
            if failed_in_a_row >= self.delivery.breaker_failures {
                open_until = Some(tokio::time::Instant::now() + self.delivery.breaker_open);
                tracing::warn!(
                    webhook = %self.webhook.name,
                    open_secs = self.delivery.breaker_open.as_secs(),
                    "webhook breaker opened: events go to the dead letter without a call"
                );
            }
            let reason = match outcome {
                Attempt::Refused => "refused by the receiver",
                _ => "attempts exhausted",
            };
            self.dead_letter(&d, attempts, reason).await;
        }
    }

    /// The delay before attempt `n` (from 1): full jitter over `backoff * 2^(n-1)`, at most a
    /// minute.
    fn backoff(&self, n: u32) -> Duration {
        let ceiling = self
            .delivery
            .backoff
            .saturating_mul(1 << (n - 1).min(16))
            .min(Duration::from_secs(60));
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(60_000);
        Duration::from_millis(rand::random::<u64>() % (ms + 1))
    }

    /// One attempt: any 2xx is delivered; a 4xx other than 408 and 429 is the receiver
    /// refusing this event, which retries cannot change.
    async fn send(&self, client: &reqwest::Client, d: &Delivery) -> Attempt {
        // The wall clock, not the injected one: receivers compare it with their own to refuse
        // replayed deliveries.
        let timestamp = crate::clock::SystemClock.now_secs();
        let signed = signature(&self.webhook.secret, &d.id, timestamp, &d.body);
        let answer = client
            .post(&self.webhook.url)
            .header("content-type", "application/cloudevents+json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signed)
            .body(d.body.to_string())
            .send()
            .await;
        match answer {
            Ok(a) if a.status().is_success() => Attempt::Delivered,
            Ok(a) => {
                let status = a.status().as_u16();
                tracing::debug!(webhook = %self.webhook.name, status, "webhook refused an event");
                match (400..500).contains(&status) && status != 408 && status != 429 {
                    true => Attempt::Refused,
                    false => Attempt::Failed,
                }
            }
            Err(error) => {
                // The kind only (timeout, connect, ...): the error's text may hold the URL.
                let kind = if error.is_timeout() {
                    "timeout"
                } else if error.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                tracing::debug!(webhook = %self.webhook.name, kind, "webhook attempt failed");
                Attempt::Failed
            }
        }
    }

    /// The record of an event that was not delivered: the log, and a line in the dead-letter
    /// file when one is configured.
    async fn dead_letter(&self, d: &Delivery, attempts: u32, reason: &str) {
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: "claw_authz::security",
            webhook = %self.webhook.name,
            event = d.kind.as_str(),
            id = %d.id,
            attempts,
            reason,
            "security event not delivered (dead letter)"
        );
        let Some(path) = &self.dead_letter else {
            return;
        };
        let event: serde_json::Value = serde_json::from_str(&d.body).unwrap_or_default();
        let line = serde_json::json!({
            "webhook": self.webhook.name, "id": d.id, "type": d.kind.as_str(),
            "attempts": attempts, "reason": reason, "event": event,
        });
        let write = async {
            use tokio::io::AsyncWriteExt as _;
            // Agent ids and client addresses: readable by this user only. Bounded, so an event
            // storm with a dead receiver cannot fill the disk.
            let full = tokio::fs::metadata(path)
                .await
                .is_ok_and(|m| m.len() >= DEAD_LETTER_MAX_BYTES);
            if full {
                return Err(std::io::Error::other("the dead-letter file is full"));
            }
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .await?;
            file.write_all(format!("{line}\n").as_bytes()).await
        };
        if let Err(error) = write.await {
            tracing::error!(%error, path = %path.display(), "cannot write the security dead letter");
        }
    }
}

/// Adds each event to the Redis stream `name` (trimmed to about 100,000 entries).
async fn stream(
    redis: Redis,
    name: String,
    mut rx: mpsc::Receiver<Arc<Delivery>>,
    counters: Arc<Counters>,
) {
    while let Some(d) = rx.recv().await {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&name)
            .arg("MAXLEN")
            .arg("~")
            .arg(100_000)
            .arg("*")
            .arg("type")
            .arg(d.kind.as_str())
            .arg("event")
            .arg(&*d.body);
        match redis.run::<String>(&cmd).await {
            Ok(_) => {
                counters.streamed.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(%error, event = d.kind.as_str(), "security event not added to the Redis stream");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's example: secret
    /// `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`, id `msg_p5jXN8AQM9LWM0D4loKWxJek`, timestamp
    /// 1614265330, payload `{"test": 2432232314}`.
    #[test]
    fn the_standard_webhooks_example_signature() {
        let secret =
            crate::config::decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}

//! `security_events`: the detectors' thresholds and where their events go.

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::fields::{Reader, yaml_text};

/// The `security_events` section.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Detection on (it costs the request path one push onto a queue per check).
    pub enabled: bool,
    /// Observations waiting for the detectors; beyond this, dropped and counted.
    pub queue: usize,
    /// Keys (agents, client addresses) each detector tracks at once.
    pub max_tracked: usize,
    /// Replays of one agent's requests within the window that make an event.
    pub replay: Threshold,
    /// Invalid proofs, signatures or tokens from one client address.
    pub invalid: Threshold,
    /// Attempts by one revoked or unknown agent.
    pub revoked: Threshold,
    /// An agent seen from a second client network within this time of the first.
    pub network_window: Duration,
    /// At most one skew-drift event per agent per this time.
    pub skew_window: Duration,
    /// Keys or CRL older than this (served stale) make an event.
    pub stale_after: Duration,
    /// How often breakers and data ages are read.
    pub poll: Duration,
    pub webhooks: Vec<WebhookConfig>,
    pub webhook: DeliveryConfig,
    /// Events that could not be delivered, one JSON line each.
    pub dead_letter_file: Option<PathBuf>,
    /// The Redis stream events are added to, when Redis is configured.
    pub redis_stream: String,
}

/// `count` events within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub count: u64,
    pub window: Duration,
}

/// One receiver of events.
#[derive(Clone)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    /// The Standard Webhooks signing key (`whsec_` and base64 in the file), decoded.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// How every webhook is delivered to.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryConfig {
    pub timeout: Duration,
    /// Attempts per event before its dead-letter record.
    pub attempts: u32,
    /// The first retry's delay; each next one doubles, with full jitter.
    pub backoff: Duration,
    /// Events waiting per webhook; beyond this, dropped and counted.
    pub queue: usize,
    /// Consecutive failed events that open the webhook's breaker...
    pub breaker_failures: u32,
    /// ...for this long: events then go to the dead letter without a call.
    pub breaker_open: Duration,
}

impl SecurityConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> SecurityConfig {
        let r = r.section("security_events");
        let threshold = |r: &mut Reader<'_>, name: &str, count: u64, window: u64| Threshold {
            count: r.u64(&format!("{name}_threshold"), count, 1, 1_000_000),
            window: r.secs(&format!("{name}_window_secs"), window, 1, 86_400),
        };
        let replay = threshold(r, "replay", 2, 300);
        let invalid = threshold(r, "invalid", 20, 60);
        let revoked = threshold(r, "revoked", 5, 300);
        let webhooks = read_webhooks(r);
        SecurityConfig {
            enabled: r.bool("enabled", true),
            queue: r.u64("queue", 4_096, 16, 1 << 20) as usize,
            max_tracked: r.u64("max_tracked", 10_000, 16, 1 << 22) as usize,
            replay,
            invalid,
            revoked,
            network_window: r.secs("network_window_secs", 600, 1, 86_400),
            skew_window: r.secs("skew_window_secs", 3_600, 1, 86_400),
            stale_after: r.secs("stale_after_secs", 600, 1, 7 * 86_400),
            poll: r.millis("poll_ms", 1_000, 10, 60_000),
            webhooks,
            webhook: DeliveryConfig {
                timeout: r.millis("webhook_timeout_ms", 2_000, 10, 60_000),
                attempts: r.u64("webhook_attempts", 5, 1, 20) as u32,
                backoff: r.millis("webhook_backoff_ms", 500, 1, 60_000),
                queue: r.u64("webhook_queue", 1_024, 1, 1 << 20) as usize,
                breaker_failures: r.u64("webhook_breaker_failures", 3, 1, 1_000) as u32,
                breaker_open: r.secs("webhook_breaker_open_secs", 30, 1, 3_600),
            },
            dead_letter_file: r.opt_string("dead_letter_file").map(PathBuf::from),
            redis_stream: r.string("redis_stream", "claw:security"),
        }
    }
}

/// The most webhooks one configuration may list (each has a worker and a queue).
const MAX_WEBHOOKS: usize = 16;

fn read_webhooks(r: &mut Reader<'_>) -> Vec<WebhookConfig> {
    let mut out = Vec::new();
    let value = r.get("webhooks").cloned();
    // Printed by check-config without secrets: the files' paths are what was read, and a URL's
    // user info and query (where receivers often put a token) are left out.
    let shown = match &value {
        Some(Value::Sequence(items)) => Value::Sequence(
            items
                .iter()
                .map(|item| {
                    let mut item = item.clone();
                    if let Value::Mapping(m) = &mut item
                        && let Some(Value::String(url)) = m.get_mut("url")
                    {
                        *url = without_secrets(url);
                    }
                    item
                })
                .collect(),
        ),
        Some(other) => other.clone(),
        None => Value::Sequence(Vec::new()),
    };
    r.note("webhooks", shown);
    let Some(value) = value else {
        return out;
    };
    let Value::Sequence(items) = value else {
        r.error("webhooks", "must be a list of {url, secret_file, name}");
        return out;
    };
    if items.len() > MAX_WEBHOOKS {
        r.error(
            "webhooks",
            &format!("lists more than {MAX_WEBHOOKS} receivers"),
        );
    }
    for (i, item) in items.iter().enumerate().take(MAX_WEBHOOKS) {
        let at = format!("webhooks[{i}]");
        let Value::Mapping(m) = item else {
            r.error(&at, "must be a mapping");
            continue;
        };
        for k in m.keys() {
            if !matches!(
                k.as_str(),
                Some("url" | "secret_file" | "name" | "insecure_http")
            ) {
                r.error(&at, &format!("unknown key {}", yaml_text(k)));
            }
        }
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let insecure = m.get("insecure_http").and_then(Value::as_bool) == Some(true);
        let url = text("url").filter(|u| u.starts_with("https://") || u.starts_with("http://"));
        let Some(url) = url else {
            r.error(&at, "needs an http(s) url");
            continue;
        };
        if !insecure && super::registry::is_plain_http(&url) {
            r.error(&format!("{at}.url"), super::registry::PLAIN_HTTP);
        }
        let secret = match text("secret_file") {
            None => {
                r.error(&at, "needs a secret_file");
                continue;
            }
            Some(file) => match std::fs::read_to_string(&file) {
                Ok(text) => match decode_secret(text.trim()) {
                    Some(secret) => secret,
                    None => {
                        r.error(
                            &format!("{at}.secret_file"),
                            &format!("{file} must hold whsec_ and the base64 of 24 to 64 bytes"),
                        );
                        continue;
                    }
                },
                Err(e) => {
                    r.error(
                        &format!("{at}.secret_file"),
                        &format!("cannot read {file}: {e}"),
                    );
                    continue;
                }
            },
        };
        out.push(WebhookConfig {
            name: text("name").unwrap_or_else(|| format!("webhook-{i}")),
            url,
            secret,
        });
    }
    out
}

/// A Standard Webhooks secret: `whsec_` and standard base64.
pub(crate) fn decode_secret(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let encoded = text.strip_prefix("whsec_")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    (24..=64).contains(&bytes.len()).then_some(bytes)
}

/// `url` without user info, query or fragment.
fn without_secrets(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

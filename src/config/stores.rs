//! The `nonce`, `redis`, `trust`, `rate_limit` and `events` sections: where state is kept.

use std::path::PathBuf;
use std::time::Duration;

use super::fields::Reader;
use super::{Defaults, FsyncMode, LimitStoreKind, NonceStoreKind, TrustStoreKind};

#[derive(Debug, Clone)]
pub struct NonceConfig {
    /// `memory` (this replica, forgotten on restart), `file` (this replica, kept across
    /// restarts) or `redis` (shared by every replica).
    pub store: NonceStoreKind,
    pub capacity: u64,
    /// Live records one agent may hold (in every store), so no agent fills it for the others.
    pub per_agent_capacity: u64,
    /// Kept past the proof's window, for clocks that disagree a little.
    pub margin: Duration,
    /// The `file` store's log directory.
    pub dir: PathBuf,
    /// When the `file` store flushes to disk.
    pub fsync: FsyncMode,
    pub(crate) fsync_interval: Duration,
}

impl NonceConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> NonceConfig {
        let r = r.section("nonce");
        NonceConfig {
            store: r.pick("store", NonceStoreKind::File),
            capacity: r.u64("capacity", 1_000_000, 1, 1 << 32),
            per_agent_capacity: r.u64("per_agent_capacity", 50_000, 1, 1 << 32),
            margin: r.secs("margin_secs", 5, 1, 3_600),
            dir: PathBuf::from(r.string("dir", "/var/lib/claw-authz/nonces")),
            fsync: r.pick("fsync", FsyncMode::Interval),
            fsync_interval: r.millis("fsync_interval_ms", 1_000, 1, 60_000),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Option<String>,
    /// The CA bundle (PEM) a `rediss://` server's certificate must chain to, read at load;
    /// without it, the system's roots.
    pub ca: Option<Vec<u8>>,
    /// `url` is a seed node of a Redis Cluster.
    pub cluster: bool,
    pub timeout: Duration,
    pub prefix: String,
}

impl RedisConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> RedisConfig {
        let r = r.section("redis");
        let url = r.opt_string("url");
        // What check-config prints never carries the password.
        r.note(
            "url",
            url.as_deref()
                .map_or(serde_yaml_ng::Value::Null, |u| redacted(u).into()),
        );
        if let Some(u) = &url
            && !["redis://", "rediss://", "valkey://"]
                .iter()
                .any(|scheme| u.starts_with(scheme))
        {
            r.error("url", "must be a redis:// or rediss:// URL");
        }
        let ca = r
            .opt_string("ca_file")
            .and_then(|f| match std::fs::read(&f) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    r.error("ca_file", &format!("cannot read {f}: {e}"));
                    None
                }
            });
        if ca.is_some() && !url.as_deref().is_some_and(|u| u.starts_with("rediss://")) {
            r.error("ca_file", "applies to a rediss:// url (TLS) only");
        }
        let cluster = r.bool("cluster", false);
        let prefix = r.string("prefix", "claw-authz:");
        if cluster && prefix.contains(['{', '}']) {
            r.error(
                "prefix",
                "cannot hold { or } with redis.cluster: the keys' hash tags would break",
            );
        }
        RedisConfig {
            url,
            ca,
            cluster,
            timeout: r.millis("timeout_ms", 50, 1, 10_000),
            prefix,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrustConfig {
    pub store: TrustStoreKind,
    pub file: Option<PathBuf>,
    pub(crate) reload_interval: Duration,
    /// Trust answers are reused this long.
    pub(crate) cache_ttl: Duration,
    /// When the store fails, an answer up to this old is used instead.
    pub(crate) stale_if_error: Duration,
    /// Known-agent answers held, and as many revocation answers.
    pub cache_capacity: u64,
}

impl TrustConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> TrustConfig {
        let r = r.section("trust");
        let store = r.pick("store", TrustStoreKind::File);
        let file = r.opt_string("file").map(PathBuf::from);
        if file.is_some() && store == TrustStoreKind::Redis {
            r.error("file", "applies to trust.store: file only");
        }
        if let Some(f) = &file
            && let Err(e) = std::fs::metadata(f)
        {
            r.error("file", &format!("cannot read {}: {e}", f.display()));
        }
        TrustConfig {
            store,
            file,
            reload_interval: r.secs("reload_interval_secs", 2, 1, 3_600),
            cache_ttl: r.secs("cache_ttl_secs", 120, 0, 86_400),
            stale_if_error: r.secs("stale_if_error_secs", 3_600, 0, 86_400 * 7),
            cache_capacity: r.u64("cache_capacity", 16_000, 1, 1 << 32),
        }
    }
}

/// Where the limits of route policies (`rate_limit`, `client_rate_limit`) are kept.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// `local` (this replica) or `redis` (shared by every replica).
    pub store: LimitStoreKind,
    /// When the store fails: `fail-open` (allow, counted and logged) or `fail-closed` (503).
    pub(crate) fail_closed: bool,
    /// Take the client address from the right-most value of this header (set by a proxy you
    /// trust) instead of Envoy's `source.address`.
    pub(crate) client_header: Option<String>,
    /// Keys the local store holds at most.
    pub capacity: u64,
}

impl RateLimitConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> RateLimitConfig {
        let r = r.section("rate_limit");
        let words = ["fail-open", "fail-closed"];
        RateLimitConfig {
            store: r.pick("store", LimitStoreKind::Local),
            fail_closed: r.choice("failure", "fail-open", &words) == Some("fail-closed"),
            client_header: r
                .opt_string("client_header")
                .map(|h| h.to_ascii_lowercase()),
            capacity: r.u64("capacity", 250_000, 1, 1 << 32),
        }
    }
}

/// Pushed revocations (registry events).
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Read the Redis stream (needs `redis.url`).
    pub(crate) consume: bool,
    pub stream: String,
    pub dlq: String,
    /// How far back the stream is replayed at start.
    pub replay: Duration,
    /// `POST /v1/events` on the admin listener.
    pub(crate) admin_endpoint: bool,
    /// Accept `POST /v1/events` without a token (only with a loopback admin listener). Off by
    /// default: in a pod, every container shares the loopback interface.
    pub(crate) admin_unauthenticated: bool,
    /// The bearer token for `POST /v1/events`, read from this file.
    pub token_file: Option<PathBuf>,
    /// The token itself (never printed: `check-config` prints what was read, the file's path).
    pub token: Option<String>,
    /// Revoked agents held, as many revoked token ids and as many envelope ids.
    pub capacity: u64,
}

impl EventsConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> EventsConfig {
        let r = r.section("events");
        let token_file = r.opt_string("token_file").map(PathBuf::from);
        let token = match &token_file {
            Some(f) => match std::fs::read_to_string(f) {
                Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
                Ok(_) => {
                    r.error("token_file", &format!("{} is empty", f.display()));
                    None
                }
                Err(e) => {
                    r.error("token_file", &format!("cannot read {}: {e}", f.display()));
                    None
                }
            },
            None => None,
        };
        EventsConfig {
            consume: r.bool("consume", true),
            stream: r.string("stream", Defaults::EVENTS_STREAM),
            dlq: r.string("dlq", "claw:events:dlq"),
            replay: r.days("replay_days", Defaults::EVENTS_REPLAY_DAYS, 0, 365),
            admin_endpoint: r.bool("admin_endpoint", true),
            admin_unauthenticated: r.bool("admin_unauthenticated", false),
            capacity: r.u64("capacity", 16_000, 1, 1 << 32),
            token_file,
            token,
        }
    }
}

/// A URL with its password (if any) replaced, for printing.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

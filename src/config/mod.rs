//! Configuration: one YAML file plus `CLAW_AUTHZ_*` environment overrides, typed and validated.
//!
//! Environment variables name a key path with `__` between sections:
//! `CLAW_AUTHZ_REGISTRY__URL` sets `registry.url`, `CLAW_AUTHZ_CRL__STALE_BEHAVIOR` sets
//! `crl.stale_behavior`. Values are read as YAML scalars. Loading reports every problem at once
//! (unknown keys included, so a typo never silently falls back to a default); `main` prints them
//! and exits 64. Every default lives in [`Defaults`] below.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

use crate::policy::{Policy, Rule};

mod choices;
mod fields;
mod read;
mod routes;

use crate::registry::crl::StaleBehavior;
pub use choices::{
    Choice, FsyncMode, LimitStoreKind, LogFormat, LogLevel, NonceStoreKind, TrustStoreKind,
};
use fields::{Reader, check_unknown, set_path};
use read::read;

pub const ENV_PREFIX: &str = "CLAW_AUTHZ_";

/// The exit code for a bad configuration or bad arguments (sysexits `EX_USAGE`, 64).
pub const EXIT_CONFIG: u8 = 64;

/// Every default, in one place.
pub struct Defaults;

impl Defaults {
    pub const GRPC_LISTEN: &str = "0.0.0.0:9001";
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9901";
    pub const REGISTRY_TIMEOUT_MS: u64 = 5_000;
    pub const KEYS_TTL_SECS: u64 = 3_600;
    pub const KEYS_MAX_STALE_SECS: u64 = 86_400;
    pub const KID_MISS_COOLDOWN_SECS: u64 = 30;
    pub const DEADLINE_MARGIN_MS: u64 = 25;
    pub const REQUEST_TIMEOUT_MS: u64 = 1_000;
    pub const BREAKER_FAILURES: u64 = 5;
    pub const BREAKER_OPEN_SECS: u64 = 30;
    pub const CRL_REFRESH_INTERVAL_SECS: u64 = 300;
    pub const CRL_MAX_AGE_SECS: u64 = 900;
    pub const CRL_PUSH_REFRESH_INTERVAL_SECS: u64 = 900;
    pub const MAX_SKEW_SECS: u64 = 300;
    pub const SKEW_WARNING_SECS: u64 = 200;
    pub const EXPORT_INTERVAL_MS: u64 = 10_000;
    pub const ACCESS_TTL_SECS: u64 = 60;
    pub const ACCESS_NEGATIVE_TTL_SECS: u64 = 10;
    pub const ACCESS_STALE_IF_ERROR_SECS: u64 = 600;
    pub const NONCE_CAPACITY: u64 = 1_000_000;
    pub const NONCE_MARGIN_SECS: u64 = 5;
    pub const NONCE_DIR: &str = "/var/lib/claw-authz/nonces";
    pub const NONCE_FSYNC_INTERVAL_MS: u64 = 1_000;
    pub const REDIS_TIMEOUT_MS: u64 = 50;
    pub const REDIS_PREFIX: &str = "claw-authz:";
    pub const EVENTS_STREAM: &str = "claw:events";
    pub const EVENTS_DLQ: &str = "claw:events:dlq";
    pub const EVENTS_REPLAY_DAYS: u64 = 30;
    pub const TRUST_RELOAD_SECS: u64 = 2;
    pub const TRUST_CACHE_TTL_SECS: u64 = 120;
    pub const TRUST_STALE_IF_ERROR_SECS: u64 = 3_600;
    pub const TOKEN_BYTES: u64 = crate::protocol::jws::DEFAULT_TOKEN_LEN as u64;
    /// A CRL lists every revocation ever made, about 200 bytes each: 16 MiB holds ~80,000.
    pub const CRL_BYTES: u64 = 16 * 1024 * 1024;
    pub const KEYS_BYTES: u64 = 1024 * 1024;
    pub const JWKS_BYTES: u64 = 1024 * 1024;
    pub const REMOVE_HEADERS: [&str; 3] = ["authorization", "x-claw-proof", "x-claw-agent-access"];
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub listen: Listen,
    pub registry: RegistryConfig,
    pub crl: CrlConfig,
    pub proof: ProofConfig,
    pub access: AccessConfig,
    pub nonce: NonceConfig,
    pub redis: RedisConfig,
    pub events: EventsConfig,
    pub rate_limit: RateLimitConfig,
    pub telemetry: TelemetryConfig,
    pub trust: TrustConfig,
    pub routes: Vec<Rule>,
    pub policies: BTreeMap<String, Policy>,
    /// Issuers of bearer JWTs (the `bearer` route profile).
    pub bearer: Vec<BearerIssuer>,
    pub headers: HeadersConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
}

/// Size limits per document kind, each checked before any parsing: what a caller sends stays
/// small, what the registry serves may be large (its CRL grows with every revocation).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LimitsConfig {
    /// An AIT or a bearer token longer than this is refused (401) before any decoding.
    pub token_bytes: u64,
    /// The registry's `/v1/crl` response body.
    pub crl_bytes: u64,
    /// The registry's keys document.
    pub keys_bytes: u64,
    /// A bearer issuer's JWKS.
    pub jwks_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listen {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistryConfig {
    pub url: String,
    /// The AIT/CRL issuer to accept (`docs/deviations.md` item 13); default: the registry origin.
    pub issuer: String,
    pub keys_url: String,
    pub crl_url: String,
    pub validate_url: String,
    /// Background calls (key and CRL refreshes) time out after this long.
    pub timeout_ms: u64,
    /// Calls on a Check's path time out after this long, or sooner at the Check's deadline.
    pub request_timeout_ms: u64,
    /// Consecutive failures that open an endpoint's circuit breaker.
    pub breaker_failures: u64,
    /// How long an open breaker refuses calls before one probe.
    pub breaker_open_secs: u64,
    pub keys_ttl_secs: u64,
    /// Past `keys_ttl_secs`, cached keys are served (while refreshing) for up to this long.
    pub keys_max_stale_secs: u64,
    /// A token with an unknown `kid` refetches the keys at most once per this many seconds.
    pub kid_miss_cooldown_secs: u64,
    /// Request-path registry calls end this long before Envoy's deadline for the Check.
    pub deadline_margin_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrlConfig {
    pub refresh_interval_secs: u64,
    pub max_age_secs: u64,
    #[serde(serialize_with = "ser_stale")]
    pub stale_behavior: StaleBehavior,
    /// The poll interval while pushed revocation events are flowing.
    pub push_refresh_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProofConfig {
    pub max_skew_secs: u64,
    /// An accepted request skewed at least this much logs a warning and is counted.
    pub skew_warning_secs: u64,
}

/// Caching of the registry's access-token validation (`docs/deviations.md` item 4).
#[derive(Debug, Clone, Serialize)]
pub struct AccessConfig {
    pub ttl_secs: u64,
    pub negative_ttl_secs: u64,
    pub stale_if_error_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NonceConfig {
    /// `memory` (this replica, forgotten on restart), `file` (this replica, kept across
    /// restarts) or `redis` (shared by every replica).
    pub store: NonceStoreKind,
    pub capacity: u64,
    pub margin_secs: u64,
    /// The `file` store's log directory.
    pub dir: PathBuf,
    /// `interval` or `always`: when the `file` store flushes to disk.
    pub fsync: FsyncMode,
    pub fsync_interval_ms: u64,
}

/// One issuer of bearer JWTs: its JWKS and what its tokens must say.
#[derive(Debug, Clone, Serialize)]
pub struct BearerIssuer {
    pub issuer: String,
    /// This service's id, required in `aud`.
    pub audience: String,
    pub jwks_url: String,
    /// How far in the future `iat` may be (default 60 s).
    pub max_iat_skew_secs: u64,
}

/// Where the limits of route policies (`rate_limit`, `client_rate_limit`) are kept.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimitConfig {
    /// `local` (this replica) or `redis` (shared by every replica).
    pub store: LimitStoreKind,
    /// When the store fails: `fail-open` (allow, counted and logged) or `fail-closed` (503).
    pub fail_closed: bool,
    /// Take the client address from the right-most value of this header (set by a proxy you
    /// trust) instead of Envoy's `source.address`.
    pub client_header: Option<String>,
    /// Keys the local store holds at most.
    pub capacity: u64,
}

/// Metrics and traces (`src/telemetry.rs`).
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`; none: no OTLP export.
    pub otlp_endpoint: Option<String>,
    pub export_interval_ms: u64,
    /// Share of traces sampled when Envoy sent no sampling decision.
    pub trace_sample_percent: u64,
    pub service_name: String,
}

/// Pushed revocations (registry events).
#[derive(Debug, Clone, Serialize)]
pub struct EventsConfig {
    /// Read the Redis stream (needs `redis.url`).
    pub consume: bool,
    pub stream: String,
    pub dlq: String,
    /// How far back the stream is replayed at start.
    pub replay_days: u64,
    /// `POST /v1/events` on the admin listener.
    pub admin_endpoint: bool,
    /// The bearer token for `POST /v1/events`, read from this file.
    pub token_file: Option<PathBuf>,
    /// The token itself (not printed by `check-config`).
    #[serde(skip)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RedisConfig {
    pub url: Option<String>,
    pub timeout_ms: u64,
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrustConfig {
    /// `file` or `redis`.
    pub store: TrustStoreKind,
    pub file: Option<PathBuf>,
    pub reload_interval_secs: u64,
    /// Trust answers are reused this long.
    pub cache_ttl_secs: u64,
    /// When the store fails, an answer up to this old is used instead.
    pub stale_if_error_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeadersConfig {
    /// Credentials removed from allowed requests before they reach the upstream.
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

fn ser_stale<S: serde::Serializer>(v: &StaleBehavior, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

/// The keys a config file may have; `routes` and `policies` are checked by their readers.
const KNOWN: &[&str] = &[
    "listen.grpc",
    "listen.admin",
    "registry.url",
    "registry.issuer",
    "registry.keys_url",
    "registry.crl_url",
    "registry.validate_url",
    "registry.timeout_ms",
    "registry.keys_ttl_secs",
    "registry.keys_max_stale_secs",
    "registry.kid_miss_cooldown_secs",
    "registry.deadline_margin_ms",
    "registry.request_timeout_ms",
    "registry.breaker_failures",
    "registry.breaker_open_secs",
    "crl.refresh_interval_secs",
    "crl.max_age_secs",
    "crl.stale_behavior",
    "crl.push_refresh_interval_secs",
    "proof.max_skew_secs",
    "access.ttl_secs",
    "access.negative_ttl_secs",
    "access.stale_if_error_secs",
    "nonce.store",
    "nonce.capacity",
    "nonce.margin_secs",
    "nonce.dir",
    "nonce.fsync",
    "nonce.fsync_interval_ms",
    "redis.url",
    "redis.timeout_ms",
    "redis.prefix",
    "trust.store",
    "telemetry.otlp_endpoint",
    "telemetry.export_interval_ms",
    "telemetry.trace_sample_percent",
    "telemetry.service_name",
    "proof.skew_warning_secs",
    "rate_limit.store",
    "rate_limit.failure",
    "rate_limit.client_header",
    "rate_limit.capacity",
    "events.consume",
    "events.stream",
    "events.dlq",
    "events.replay_days",
    "events.admin_endpoint",
    "events.token_file",
    "trust.file",
    "trust.reload_interval_secs",
    "trust.cache_ttl_secs",
    "trust.stale_if_error_secs",
    "headers.remove",
    "limits.token_bytes",
    "limits.crl_bytes",
    "limits.keys_bytes",
    "limits.jwks_bytes",
    "log.level",
    "log.format",
];

impl Config {
    /// Reads `yaml` (may be empty) with `env` overrides; every problem is returned at once.
    pub fn load(yaml: &str, env: &HashMap<String, String>) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let mut root = match serde_yaml_ng::from_str::<Value>(yaml) {
            Ok(Value::Null) => Value::Mapping(Mapping::new()),
            Ok(v @ Value::Mapping(_)) => v,
            Ok(_) => return Err(vec!["the config file must be a YAML mapping".into()]),
            Err(e) => return Err(vec![format!("the config file is not valid YAML: {e}")]),
        };
        let mut overrides: Vec<_> = env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort();
        for (name, value) in overrides {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            if path.iter().any(String::is_empty) || path[0] == "config" {
                continue;
            }
            let scalar = serde_yaml_ng::from_str::<Value>(value)
                .ok()
                .filter(|v| !matches!(v, Value::Mapping(_)))
                .unwrap_or_else(|| Value::String(value.clone()));
            set_path(&mut root, &path, scalar);
        }
        check_unknown(&root, "", &mut errors);

        let mut r = Reader::new(&root, &mut errors);
        let config = read(&mut r);
        if errors.is_empty() {
            Ok(config.expect("a config without errors"))
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests;

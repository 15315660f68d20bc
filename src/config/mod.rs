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

mod fields;
mod routes;

use crate::registry::crl::StaleBehavior;
use fields::{Reader, check_unknown, set_path};
use routes::{read_bearer, read_policies, read_routes};

pub const ENV_PREFIX: &str = "CLAW_AUTHZ_";

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
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listen {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistryConfig {
    pub url: String,
    /// The AIT/CRL issuer to accept (`deviations.md` item 13); default: the registry origin.
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

/// Caching of the registry's access-token validation (`deviations.md` item 4).
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
    pub store: String,
    pub capacity: u64,
    pub margin_secs: u64,
    /// The `file` store's log directory.
    pub dir: PathBuf,
    /// `interval` or `always`: when the `file` store flushes to disk.
    pub fsync: String,
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
    pub store: String,
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
    pub store: String,
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
    pub level: String,
    pub format: String,
}

fn ser_stale<S: serde::Serializer>(v: &StaleBehavior, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match v {
        StaleBehavior::FailOpen => "fail-open",
        StaleBehavior::FailClosed => "fail-closed",
    })
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

fn read(r: &mut Reader<'_>) -> Option<Config> {
    let grpc = r.addr("listen.grpc", Defaults::GRPC_LISTEN);
    let admin = r.addr("listen.admin", Defaults::ADMIN_LISTEN);
    let url = r.opt_string("registry.url");
    let origin = url.as_deref().and_then(|u| r.origin("registry.url", u));
    let issuer = r.opt_string("registry.issuer").or_else(|| origin.clone());
    if let Some(i) = &issuer
        && crate::protocol::ids::issuer_authority(i).is_none()
    {
        r.error("registry.issuer", "must be an http(s) URL with a hostname");
    }
    // An explicit endpoint URL is checked on its own; a derived one is as good as `url`.
    let endpoint = |r: &mut Reader<'_>, key: &str, path: &str| match r.opt_string(key) {
        Some(explicit) => r.origin(key, &explicit).map(|_| explicit),
        None => origin
            .as_ref()
            .and(url.as_ref())
            .map(|u| format!("{}{path}", u.trim_end_matches('/'))),
    };
    let keys_url = endpoint(r, "registry.keys_url", "/.well-known/claw-keys.json");
    let crl_url = endpoint(r, "registry.crl_url", "/v1/crl");
    let validate_url = endpoint(r, "registry.validate_url", "/v1/agents/auth/validate");
    let timeout_ms = r.u64(
        "registry.timeout_ms",
        Defaults::REGISTRY_TIMEOUT_MS,
        1,
        600_000,
    );
    let request_timeout_ms = r.u64(
        "registry.request_timeout_ms",
        Defaults::REQUEST_TIMEOUT_MS,
        1,
        60_000,
    );
    let breaker_failures = r.u64(
        "registry.breaker_failures",
        Defaults::BREAKER_FAILURES,
        1,
        1_000,
    );
    let breaker_open_secs = r.u64(
        "registry.breaker_open_secs",
        Defaults::BREAKER_OPEN_SECS,
        1,
        3_600,
    );
    let keys_ttl_secs = r.u64(
        "registry.keys_ttl_secs",
        Defaults::KEYS_TTL_SECS,
        1,
        86_400 * 7,
    );
    let keys_max_stale_secs = r.u64(
        "registry.keys_max_stale_secs",
        Defaults::KEYS_MAX_STALE_SECS,
        0,
        86_400 * 30,
    );
    let deadline_margin_ms = r.u64(
        "registry.deadline_margin_ms",
        Defaults::DEADLINE_MARGIN_MS,
        0,
        10_000,
    );
    let kid_miss_cooldown_secs = r.u64(
        "registry.kid_miss_cooldown_secs",
        Defaults::KID_MISS_COOLDOWN_SECS,
        0,
        3_600,
    );
    let refresh = r.u64(
        "crl.refresh_interval_secs",
        Defaults::CRL_REFRESH_INTERVAL_SECS,
        1,
        86_400,
    );
    let max_age = r.u64(
        "crl.max_age_secs",
        Defaults::CRL_MAX_AGE_SECS,
        1,
        86_400 * 7,
    );
    let stale_behavior = match r.choice(
        "crl.stale_behavior",
        "fail-open",
        &["fail-open", "fail-closed"],
    ) {
        Some("fail-closed") => StaleBehavior::FailClosed,
        _ => StaleBehavior::FailOpen,
    };
    let push_refresh = r.u64(
        "crl.push_refresh_interval_secs",
        Defaults::CRL_PUSH_REFRESH_INTERVAL_SECS,
        1,
        86_400,
    );
    let max_skew_secs = r.u64("proof.max_skew_secs", Defaults::MAX_SKEW_SECS, 1, 3_600);
    let skew_warning_secs = r.u64(
        "proof.skew_warning_secs",
        Defaults::SKEW_WARNING_SECS,
        1,
        3_600,
    );
    let otlp_endpoint = r.opt_string("telemetry.otlp_endpoint");
    if let Some(e) = &otlp_endpoint
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        r.error(
            "telemetry.otlp_endpoint",
            "must be an http:// or https:// URL",
        );
    }
    let export_interval_ms = r.u64(
        "telemetry.export_interval_ms",
        Defaults::EXPORT_INTERVAL_MS,
        100,
        3_600_000,
    );
    let trace_sample_percent = r.u64("telemetry.trace_sample_percent", 100, 0, 100);
    let service_name = r
        .opt_string("telemetry.service_name")
        .unwrap_or_else(|| "claw-authz".to_owned());
    let access_ttl = r.u64("access.ttl_secs", Defaults::ACCESS_TTL_SECS, 0, 3_600);
    let access_negative = r.u64(
        "access.negative_ttl_secs",
        Defaults::ACCESS_NEGATIVE_TTL_SECS,
        0,
        3_600,
    );
    let access_stale = r.u64(
        "access.stale_if_error_secs",
        Defaults::ACCESS_STALE_IF_ERROR_SECS,
        0,
        86_400,
    );
    let store = r
        .choice("nonce.store", "file", &["memory", "file", "redis"])
        .unwrap_or("file")
        .to_owned();
    let nonce_dir = PathBuf::from(
        r.opt_string("nonce.dir")
            .unwrap_or_else(|| Defaults::NONCE_DIR.to_owned()),
    );
    let fsync = r
        .choice("nonce.fsync", "interval", &["interval", "always"])
        .unwrap_or("interval")
        .to_owned();
    let fsync_interval_ms = r.u64(
        "nonce.fsync_interval_ms",
        Defaults::NONCE_FSYNC_INTERVAL_MS,
        1,
        60_000,
    );
    let redis_url = r.opt_string("redis.url");
    if let Some(u) = &redis_url
        && !(u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("valkey://"))
    {
        r.error("redis.url", "must be a redis:// or rediss:// URL");
    }
    let redis_timeout_ms = r.u64("redis.timeout_ms", Defaults::REDIS_TIMEOUT_MS, 1, 10_000);
    let redis_prefix = r
        .opt_string("redis.prefix")
        .unwrap_or_else(|| Defaults::REDIS_PREFIX.to_owned());
    let trust_store = r
        .choice("trust.store", "file", &["file", "redis"])
        .unwrap_or("file")
        .to_owned();
    for (key, chosen) in [("nonce.store", &store), ("trust.store", &trust_store)] {
        if chosen == "redis" && redis_url.is_none() {
            r.error(key, "is redis, so redis.url is required");
        }
    }
    let capacity = r.u64("nonce.capacity", Defaults::NONCE_CAPACITY, 1, 1 << 32);
    let margin_secs = r.u64("nonce.margin_secs", Defaults::NONCE_MARGIN_SECS, 0, 3_600);
    let consume = r.bool("events.consume", true);
    let stream = r
        .opt_string("events.stream")
        .unwrap_or_else(|| Defaults::EVENTS_STREAM.to_owned());
    let dlq = r
        .opt_string("events.dlq")
        .unwrap_or_else(|| Defaults::EVENTS_DLQ.to_owned());
    let replay_days = r.u64("events.replay_days", Defaults::EVENTS_REPLAY_DAYS, 0, 365);
    let admin_endpoint = r.bool("events.admin_endpoint", true);
    let token_file = r.opt_string("events.token_file").map(PathBuf::from);
    let token = match &token_file {
        Some(f) => match std::fs::read_to_string(f) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            Ok(_) => {
                r.error("events.token_file", &format!("{} is empty", f.display()));
                None
            }
            Err(e) => {
                r.error(
                    "events.token_file",
                    &format!("cannot read {}: {e}", f.display()),
                );
                None
            }
        },
        None => None,
    };
    if let Some(admin) = admin
        && admin_endpoint
        && token_file.is_none()
        && !admin.ip().is_loopback()
    {
        r.error(
            "events.token_file",
            "is required when listen.admin is not a loopback address (or set events.admin_endpoint: false)",
        );
    }
    let limit_store = r
        .choice("rate_limit.store", "local", &["local", "redis"])
        .unwrap_or("local")
        .to_owned();
    if limit_store == "redis" && redis_url.is_none() {
        r.error("rate_limit.store", "is redis, so redis.url is required");
    }
    let fail_closed = r.choice(
        "rate_limit.failure",
        "fail-open",
        &["fail-open", "fail-closed"],
    ) == Some("fail-closed");
    let client_header = r
        .opt_string("rate_limit.client_header")
        .map(|h| h.to_ascii_lowercase());
    let limit_capacity = r.u64("rate_limit.capacity", 1_000_000, 1, 1 << 32);
    let trust_file = r.opt_string("trust.file").map(PathBuf::from);
    if trust_file.is_some() && trust_store == "redis" {
        r.error("trust.file", "applies to trust.store: file only");
    }
    if let Some(f) = &trust_file
        && let Err(e) = std::fs::metadata(f)
    {
        r.error("trust.file", &format!("cannot read {}: {e}", f.display()));
    }
    let reload = r.u64(
        "trust.reload_interval_secs",
        Defaults::TRUST_RELOAD_SECS,
        1,
        3_600,
    );
    let trust_ttl = r.u64(
        "trust.cache_ttl_secs",
        Defaults::TRUST_CACHE_TTL_SECS,
        0,
        86_400,
    );
    let trust_stale = r.u64(
        "trust.stale_if_error_secs",
        Defaults::TRUST_STALE_IF_ERROR_SECS,
        0,
        86_400 * 7,
    );
    let remove = r.string_list("headers.remove", &Defaults::REMOVE_HEADERS);
    let level = r
        .choice(
            "log.level",
            "info",
            &["error", "warn", "info", "debug", "trace"],
        )
        .unwrap_or("info")
        .to_owned();
    let format = r
        .choice("log.format", "json", &["json", "text"])
        .unwrap_or("json")
        .to_owned();
    let routes = read_routes(r);
    let policies = read_policies(r);
    let bearer = read_bearer(r);
    if url.is_none() {
        r.error("registry.url", "is required");
    }

    Some(Config {
        listen: Listen {
            grpc: grpc?,
            admin: admin?,
        },
        registry: RegistryConfig {
            url: url?,
            issuer: issuer?,
            keys_url: keys_url?,
            crl_url: crl_url?,
            validate_url: validate_url?,
            timeout_ms,
            request_timeout_ms,
            breaker_failures,
            breaker_open_secs,
            keys_ttl_secs,
            keys_max_stale_secs,
            kid_miss_cooldown_secs,
            deadline_margin_ms,
        },
        crl: CrlConfig {
            refresh_interval_secs: refresh,
            max_age_secs: max_age,
            stale_behavior,
            push_refresh_interval_secs: push_refresh,
        },
        proof: ProofConfig {
            max_skew_secs,
            skew_warning_secs,
        },
        telemetry: TelemetryConfig {
            otlp_endpoint,
            export_interval_ms,
            trace_sample_percent,
            service_name,
        },
        access: AccessConfig {
            ttl_secs: access_ttl,
            negative_ttl_secs: access_negative,
            stale_if_error_secs: access_stale,
        },
        nonce: NonceConfig {
            store,
            capacity,
            margin_secs,
            dir: nonce_dir,
            fsync,
            fsync_interval_ms,
        },
        rate_limit: RateLimitConfig {
            store: limit_store,
            fail_closed,
            client_header,
            capacity: limit_capacity,
        },
        events: EventsConfig {
            consume,
            stream,
            dlq,
            replay_days,
            admin_endpoint,
            token_file,
            token,
        },
        redis: RedisConfig {
            url: redis_url,
            timeout_ms: redis_timeout_ms,
            prefix: redis_prefix,
        },
        trust: TrustConfig {
            store: trust_store,
            file: trust_file,
            reload_interval_secs: reload,
            cache_ttl_secs: trust_ttl,
            stale_if_error_secs: trust_stale,
        },
        routes,
        policies,
        bearer,
        headers: HeadersConfig {
            remove: remove.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        },
        log: LogConfig { level, format },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::reference_rules;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn defaults_and_derived_issuer() {
        let c = Config::load(
            "registry:\n  url: https://Registry.Example.com:443/\n",
            &env(&[]),
        )
        .unwrap();
        assert_eq!(c.registry.issuer, "https://registry.example.com");
        assert_eq!(
            c.registry.keys_url,
            "https://Registry.Example.com:443/.well-known/claw-keys.json"
        );
        assert_eq!(c.crl.stale_behavior, StaleBehavior::FailOpen);
        assert_eq!(c.routes, reference_rules());
        assert_eq!(c.headers.remove, Defaults::REMOVE_HEADERS);
    }

    #[test]
    fn env_overrides_win() {
        let c = Config::load(
            "registry:\n  url: https://a.example\ncrl:\n  max_age_secs: 60\n",
            &env(&[
                ("CLAW_AUTHZ_CRL__MAX_AGE_SECS", "120"),
                ("CLAW_AUTHZ_CRL__STALE_BEHAVIOR", "fail-closed"),
            ]),
        )
        .unwrap();
        assert_eq!(c.crl.max_age_secs, 120);
        assert_eq!(c.crl.stale_behavior, StaleBehavior::FailClosed);
    }

    #[test]
    fn every_problem_is_listed() {
        let errors = Config::load(
            "registry:\n  ulr: x\ncrl:\n  max_age_secs: -3\n  stale_behavior: maybe\nlisten:\n  grpc: nowhere\nroutes:\n  - {path: nope}\n",
            &env(&[("CLAW_AUTHZ_PROOF__MAX_SKEW_SECS", "lots")]),
        )
        .unwrap_err();
        let text = errors.join("\n");
        for needle in [
            "registry.ulr: unknown setting",
            "crl.max_age_secs: must be an integer",
            "crl.stale_behavior: must be one of fail-open, fail-closed, got maybe",
            "listen.grpc: must be an ip:port address",
            "routes[0]: needs exactly one of",
            "proof.max_skew_secs: must be an integer",
            "registry.url: is required",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(errors.len(), 7, "{text}");
    }

    #[test]
    fn an_exposed_events_endpoint_needs_a_token_and_redis_stores_need_a_url() {
        let errors = Config::load(
            "registry:\n  url: https://a.example\nlisten:\n  admin: 0.0.0.0:9901\nnonce:\n  store: redis\n",
            &env(&[]),
        )
        .unwrap_err();
        let text = errors.join("\n");
        assert!(
            text.contains(
                "events.token_file: is required when listen.admin is not a loopback address"
            ),
            "{text}"
        );
        assert!(
            text.contains("nonce.store: is redis, so redis.url is required"),
            "{text}"
        );
        assert_eq!(errors.len(), 2, "{text}");
        let c = Config::load(
            "registry:\n  url: https://a.example\nlisten:\n  admin: 0.0.0.0:9901\nevents:\n  admin_endpoint: false\n",
            &env(&[]),
        )
        .unwrap();
        assert_eq!(c.nonce.store, "file");
        assert!(c.events.consume && c.events.stream == "claw:events");
    }

    #[test]
    fn bearer_issuers_and_policy_grants_are_read_and_checked() {
        let c = Config::load(
            "registry:\n  url: https://a.example\nbearer:\n  issuers:\n    - {issuer: https://auth.example, audience: svc, jwks_url: https://auth.example/jwks}\npolicies:\n  p: {profile: bearer, require_roles: [r], require_permissions: [x, y], min_trust_score: 0.5}\n",
            &env(&[]),
        )
        .unwrap();
        assert_eq!(c.bearer[0].max_iat_skew_secs, 60);
        let p = &c.policies["p"];
        assert_eq!(p.profile, crate::policy::Profile::Bearer);
        assert_eq!((p.require_roles.len(), p.require_permissions.len()), (1, 2));
        assert_eq!(p.min_trust_score, Some(0.5));
        let errors = Config::load(
            "registry:\n  url: https://a.example\nbearer:\n  issuers:\n    - {issuer: x, audience: svc, jwks_url: ftp://x, colour: red}\npolicies:\n  p: {profile: jwt, require_roles: admin}\n",
            &env(&[]),
        )
        .unwrap_err();
        let text = errors.join("\n");
        for needle in [
            "bearer.issuers[0]: unknown key colour",
            "bearer.issuers[0]: needs issuer, audience, an http(s) jwks_url",
            "policies.p.profile: must be claw, bearer or any",
            "policies.p.require_roles: must be a list of strings",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(errors.len(), 4, "{text}");
    }
}

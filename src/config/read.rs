//! Reading the scalar sections of the config into typed settings, every problem recorded on the
//! [`Reader`] (the `routes`, `policies` and `bearer` lists are read in `routes.rs`).

use std::path::PathBuf;

use super::fields::Reader;
use super::routes::{read_bearer, read_policies, read_routes};
use super::*;

pub(super) fn read(r: &mut Reader<'_>) -> Option<Config> {
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
    let store = r.pick("nonce.store", NonceStoreKind::File);
    let nonce_dir = PathBuf::from(
        r.opt_string("nonce.dir")
            .unwrap_or_else(|| Defaults::NONCE_DIR.to_owned()),
    );
    let fsync = r.pick("nonce.fsync", FsyncMode::Interval);
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
    let trust_store = r.pick("trust.store", TrustStoreKind::File);
    let redis_stores = [
        ("nonce.store", store == NonceStoreKind::Redis),
        ("trust.store", trust_store == TrustStoreKind::Redis),
    ];
    for (key, redis) in redis_stores {
        if redis && redis_url.is_none() {
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
    let limit_store = r.pick("rate_limit.store", LimitStoreKind::Local);
    if limit_store == LimitStoreKind::Redis && redis_url.is_none() {
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
    if trust_file.is_some() && trust_store == TrustStoreKind::Redis {
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
    const KIB: u64 = 1024;
    let max_token = crate::protocol::jws::MAX_TOKEN_LEN as u64;
    let limits = LimitsConfig {
        token_bytes: r.u64("limits.token_bytes", Defaults::TOKEN_BYTES, KIB, max_token),
        crl_bytes: r.u64("limits.crl_bytes", Defaults::CRL_BYTES, 64 * KIB, 1 << 30),
        keys_bytes: r.u64("limits.keys_bytes", Defaults::KEYS_BYTES, 16 * KIB, 1 << 30),
        jwks_bytes: r.u64("limits.jwks_bytes", Defaults::JWKS_BYTES, 16 * KIB, 1 << 30),
    };
    let level = r.pick("log.level", LogLevel::Info);
    let format = r.pick("log.format", LogFormat::Json);
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
        limits,
        log: LogConfig { level, format },
    })
}

//! Configuration: one YAML file plus `CLAW_AUTHZ_*` environment overrides, typed and validated.
//!
//! Environment variables name a key path with `__` between sections:
//! `CLAW_AUTHZ_REGISTRY__URL` sets `registry.url`, `CLAW_AUTHZ_CRL__STALE_BEHAVIOR` sets
//! `crl.stale_behavior`. Values are read as YAML scalars. Loading reports every problem at once
//! (unknown keys included, so a typo never silently falls back to a default); `main` prints them
//! and exits 64. Every default lives in `Defaults` below.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use crate::policy::{Policy, Profile, Rule};

mod choices;
mod dpop;
mod fields;
mod httpsig;
mod registry;
mod routes;
mod security;
mod service;
mod stores;

pub use choices::{
    Choice, FsyncMode, LimitStoreKind, LogFormat, LogLevel, NonceStoreKind, TrustStoreKind,
};
pub use dpop::DpopConfig;
use fields::{Reader, set_path};
pub use httpsig::{AgentConfig, DIRECTORY_PATH, HttpSigConfig, origin_of};
pub use registry::{AccessConfig, CrlConfig, RegistryConfig};
use routes::{read_bearer, read_policies, read_routes};
#[cfg(test)]
pub(crate) use security::decode_secret;
pub use security::{DeliveryConfig, SecurityConfig, Threshold, WebhookConfig};
pub use service::{
    HEADERS_BUDGET, HeadersConfig, LimitsConfig, Listen, ListenAddr, LogConfig, ProofConfig,
    TelemetryConfig, TlsConfig,
};
pub use stores::{EventsConfig, NonceConfig, RateLimitConfig, RedisConfig, TrustConfig};

pub(crate) const ENV_PREFIX: &str = "CLAW_AUTHZ_";

/// The exit code for a bad configuration or bad arguments (sysexits `EX_USAGE`, 64).
pub const EXIT_CONFIG: u8 = 64;

/// Defaults other parts of the program use too (every other default is written beside its key,
/// in the section's reader).
pub(crate) struct Defaults;

impl Defaults {
    pub(crate) const EVENTS_STREAM: &str = "claw:events";
    pub(crate) const EVENTS_REPLAY_DAYS: u64 = 30;
    pub(crate) const REMOVE_HEADERS: [&str; 4] = [
        "authorization",
        "x-claw-proof",
        "x-claw-agent-access",
        "dpop",
    ];
}

/// The whole configuration, one typed struct per section; each section's reader sits beside
/// its struct (`registry.rs`, `stores.rs`, `service.rs`, `routes.rs`).
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub tls: TlsConfig,
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
    /// Keys and rules of the HTTP Message Signatures profile.
    pub httpsig: HttpSigConfig,
    /// DPoP proofs on the bearer profile.
    pub dpop: DpopConfig,
    /// Anomaly detection and where its events go.
    pub security: SecurityConfig,
    pub headers: HeadersConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    /// Every setting with its effective value (the default where the file has none), keyed as
    /// in the file: what `check-config` prints.
    pub effective: Value,
}

/// One issuer of bearer JWTs: its JWKS and what its tokens must say.
#[derive(Debug, Clone)]
pub struct BearerIssuer {
    pub issuer: String,
    /// This service's id, required in `aud` (a route's `resource` takes its place there).
    pub audience: Option<String>,
    pub jwks_url: String,
    /// How far in the future `iat` may be (default 60 s).
    pub(crate) max_iat_skew: Duration,
}

/// Reads every section, then the rules that span sections.
fn read(r: &mut Reader<'_>) -> Option<Config> {
    let listen = Listen::read(r);
    let tls = TlsConfig::read(r);
    let registry = RegistryConfig::read(r);
    let crl = CrlConfig::read(r);
    let proof = ProofConfig::read(r);
    let telemetry = TelemetryConfig::read(r);
    let access = AccessConfig::read(r);
    let nonce = NonceConfig::read(r);
    let redis = RedisConfig::read(r);
    let trust = TrustConfig::read(r);
    let events = EventsConfig::read(r);
    let rate_limit = RateLimitConfig::read(r);
    let headers = HeadersConfig::read(r);
    let limits = LimitsConfig::read(r);
    let log = LogConfig::read(r);
    let httpsig = HttpSigConfig::read(r);
    let dpop = DpopConfig::read(r);
    let security = SecurityConfig::read(r);
    let r = r.section("");
    let routes = read_routes(r);
    let policies = read_policies(r);
    let bearer = read_bearer(r);
    let typed = |v: Result<Value, _>| v.unwrap_or(Value::Null);
    r.note("routes", typed(serde_yaml_ng::to_value(&routes)));
    r.note("policies", typed(serde_yaml_ng::to_value(&policies)));
    let issuers = r.get("bearer.issuers").cloned();
    r.note(
        "bearer.issuers",
        issuers.unwrap_or(Value::Sequence(Vec::new())),
    );
    let unix = listen
        .as_ref()
        .is_some_and(|l| matches!(l.grpc, ListenAddr::Unix(_)));
    if unix && tls.cert_file.is_some() {
        // The socket's file permissions decide who may connect; TLS on it would add nothing.
        r.error(
            "tls.cert_file",
            "applies to a TCP listen.grpc, not a unix: socket",
        );
    }
    // A bearer route needs an audience for every issuer: its own `resource`, or the issuer's.
    if let Some(issuer) = bearer.iter().find(|i| i.audience.is_none()) {
        let takes_bearer = |p: &&Policy| matches!(p.profile, Profile::Bearer | Profile::Any);
        for p in policies.values().filter(takes_bearer) {
            if p.resource.is_none() {
                r.error(
                    &format!("policies.{}", p.name),
                    &format!(
                        "accepts bearer tokens but has no resource, and issuer {} has no audience",
                        issuer.issuer
                    ),
                );
            }
        }
    }
    let redis_stores = [
        ("nonce.store", nonce.store == NonceStoreKind::Redis),
        ("trust.store", trust.store == TrustStoreKind::Redis),
        (
            "rate_limit.store",
            rate_limit.store == LimitStoreKind::Redis,
        ),
    ];
    for (key, uses_redis) in redis_stores {
        if uses_redis && redis.url.is_none() {
            r.error(key, "is redis, so redis.url is required");
        }
    }
    if let Some(listen) = &listen
        && events.admin_unauthenticated
        && !listen.admin.ip().is_loopback()
    {
        r.error(
            "events.admin_unauthenticated",
            "is only allowed with a loopback listen.admin",
        );
    }
    if let Some(listen) = &listen
        && events.admin_endpoint
        && events.token_file.is_none()
        && !listen.admin.ip().is_loopback()
    {
        r.error(
            "events.token_file",
            "is required when listen.admin is not a loopback address (or set events.admin_endpoint: false)",
        );
    }
    Some(Config {
        listen: listen?,
        tls,
        registry: registry?,
        crl,
        proof,
        access,
        nonce,
        redis,
        events,
        rate_limit,
        telemetry,
        trust,
        routes,
        policies,
        bearer,
        httpsig,
        dpop,
        security,
        headers,
        limits,
        log,
        effective: Value::Null,
    })
}

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
        let mut r = Reader::new(&root, &mut errors);
        let config = read(&mut r);
        let effective = r.finish();
        match (config, errors.is_empty()) {
            (Some(config), true) => Ok(Config {
                effective,
                ..config
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests;

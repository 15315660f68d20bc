//! The `listen`, `tls`, `proof`, `telemetry`, `headers`, `limits` and `log` sections: how the
//! server itself behaves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::fields::Reader;
use super::{Defaults, LogFormat, LogLevel};

/// Where the gRPC listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// `unix:/path`: a Unix domain socket, for Envoy in the same pod (a `pipe` address in its
    /// cluster): no TCP stack on the hop. A file left by an earlier run is replaced.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub grpc: ListenAddr,
    pub admin: SocketAddr,
    /// After SIGTERM, health reports NOT_SERVING and checks are still answered this long, so
    /// Envoy and Kubernetes move traffic away before the listener closes.
    pub drain: Duration,
    /// Then in-flight checks have this long to finish before the connections close.
    pub grace: Duration,
}

impl Listen {
    pub(super) fn read(r: &mut Reader<'_>) -> Option<Listen> {
        let r = r.section("listen");
        let grpc = r.listen_addr("grpc", "0.0.0.0:9001");
        let admin = r.addr("admin", "127.0.0.1:9901");
        let drain = r.secs("drain_secs", 5, 0, 300);
        let grace = r.secs("grace_secs", 10, 0, 600);
        Some(Listen {
            grpc: grpc?,
            admin: admin?,
            drain,
            grace,
        })
    }
}

/// TLS on the gRPC listener (`src/server/tls.rs`); off without `cert_file`.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// The server certificate chain and its key (PEM), reread when they change.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// With it, every client must present a certificate this CA bundle (PEM) verifies.
    pub client_ca_file: Option<PathBuf>,
    /// With a client CA: the identities accepted, as a DNS or URI subject alternative name of
    /// the client certificate (a SPIFFE ID such as `spiffe://cluster.local/ns/x/sa/envoy`);
    /// empty: any certificate the CA verifies.
    pub allowed_clients: Vec<String>,
    /// How often the certificate and key files are read again (a changed pair is taken for new
    /// handshakes; open connections keep theirs).
    pub reload_interval: Duration,
}

impl TlsConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> TlsConfig {
        let r = r.section("tls");
        let file = |r: &mut Reader<'_>, key: &str| {
            let path = r.opt_string(key).map(PathBuf::from)?;
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => Some(path),
                Ok(_) => {
                    r.error(key, &format!("{} is not a file", path.display()));
                    None
                }
                Err(e) => {
                    r.error(key, &format!("cannot read {}: {e}", path.display()));
                    None
                }
            }
        };
        let cert_file = file(r, "cert_file");
        let key_file = file(r, "key_file");
        let client_ca_file = file(r, "client_ca_file");
        let allowed_clients = r.string_list("allowed_clients", &[]);
        let reload_interval = r.secs("reload_interval_secs", 10, 1, 3_600);
        let given = |r: &Reader<'_>, key: &str| r.get(key).is_some();
        if given(r, "cert_file") != given(r, "key_file") {
            r.error("cert_file", "and key_file go together");
        }
        if given(r, "client_ca_file") && !given(r, "cert_file") {
            r.error(
                "client_ca_file",
                "needs cert_file and key_file (mutual TLS is TLS first)",
            );
        }
        if !allowed_clients.is_empty() && !given(r, "client_ca_file") {
            r.error(
                "allowed_clients",
                "needs client_ca_file (identities come from verified client certificates)",
            );
        }
        TlsConfig {
            cert_file,
            key_file,
            client_ca_file,
            allowed_clients,
            reload_interval,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProofConfig {
    pub(crate) max_skew: Duration,
    /// An accepted request skewed at least this much logs a warning and is counted.
    pub(crate) skew_warning: Duration,
}

impl ProofConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> ProofConfig {
        let r = r.section("proof");
        ProofConfig {
            max_skew: r.secs("max_skew_secs", 300, 1, 3_600),
            skew_warning: r.secs("skew_warning_secs", 200, 1, 3_600),
        }
    }
}

/// Metrics and traces (`src/telemetry.rs`, `src/metrics/`).
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`; none: no OTLP export.
    pub otlp_endpoint: Option<String>,
    pub export_interval: Duration,
    /// Share of traces sampled when Envoy sent no sampling decision.
    pub trace_sample_percent: u64,
    pub service_name: String,
}

impl TelemetryConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> TelemetryConfig {
        let r = r.section("telemetry");
        let otlp_endpoint = r.opt_string("otlp_endpoint");
        if let Some(e) = &otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            r.error("otlp_endpoint", "must be an http:// or https:// URL");
        }
        TelemetryConfig {
            otlp_endpoint,
            export_interval: r.millis("export_interval_ms", 10_000, 100, 3_600_000),
            trace_sample_percent: r.u64("trace_sample_percent", 100, 0, 100),
            service_name: r.string("service_name", "claw-authz"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HeadersConfig {
    /// Credentials removed from allowed requests before they reach the upstream.
    pub remove: Vec<String>,
}

impl HeadersConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> HeadersConfig {
        let remove = r
            .section("headers")
            .string_list("remove", &Defaults::REMOVE_HEADERS);
        HeadersConfig {
            remove: remove.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }
}

/// Size limits per document kind, each checked before any parsing: what a caller sends stays
/// small, what the registry serves may be large (its CRL grows with every revocation).
#[derive(Debug, Clone, Copy)]
pub struct LimitsConfig {
    /// An AIT or a bearer token longer than this is refused (401) before any decoding.
    pub token_bytes: u64,
    /// Verified AITs held (one per agent token in use).
    pub ait_cache_capacity: u64,
    /// Verified bearer tokens held (one per access token in use); 0 verifies every token on
    /// every request.
    pub bearer_cache_capacity: u64,
    /// The request body a Check may carry; with [`HEADERS_BUDGET`], the largest gRPC message
    /// accepted (a larger one gets `RESOURCE_EXHAUSTED` unread).
    pub body_bytes: u64,
    /// Checks answered at once; past it a Check is refused at once, unread (503, counted).
    pub concurrent_checks: u64,
    /// Bytes of Check messages read and not yet answered; a message that would pass it gets
    /// `RESOURCE_EXHAUSTED` (counted).
    pub in_flight_bytes: u64,
    /// gRPC connections held at once; past it a new connection is closed at once (counted).
    pub connections: u64,
    /// The registry's `/v1/crl` response body; 16 MiB holds about 93,000 revocations of about
    /// 180 bytes each, and a refresh of one takes about 4 times its size in memory at its peak.
    pub crl_bytes: u64,
    /// The registry's keys document.
    pub keys_bytes: u64,
    /// A bearer issuer's JWKS.
    pub(crate) jwks_bytes: u64,
}

impl LimitsConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> LimitsConfig {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let token = crate::protocol::jws::DEFAULT_TOKEN_LEN as u64;
        let max_token = crate::protocol::jws::MAX_TOKEN_LEN as u64;
        let r = r.section("limits");
        let limits = LimitsConfig {
            token_bytes: r.u64("token_bytes", token, KIB, max_token),
            ait_cache_capacity: r.u64("ait_cache_capacity", 16_000, 1, 1 << 32),
            bearer_cache_capacity: r.u64("bearer_cache_capacity", 2_048, 0, 1 << 32),
            body_bytes: r.u64("body_bytes", MIB, 0, 64 * MIB),
            concurrent_checks: r.u64("concurrent_checks", 1_024, 1, 100_000),
            in_flight_bytes: r.u64("in_flight_bytes", 32 * MIB, 64 * KIB, 1 << 34),
            connections: r.u64("connections", 256, 1, 100_000),
            crl_bytes: r.u64("crl_bytes", 16 * MIB, 64 * KIB, 1 << 30),
            keys_bytes: r.u64("keys_bytes", MIB, 16 * KIB, 1 << 30),
            jwks_bytes: r.u64("jwks_bytes", MIB, 16 * KIB, 1 << 30),
        };
        if limits.in_flight_bytes < limits.body_bytes + HEADERS_BUDGET {
            let least = limits.body_bytes + HEADERS_BUDGET;
            r.error(
                "in_flight_bytes",
                &format!(
                    "must hold one whole message: at least body_bytes + {HEADERS_BUDGET} ({least})"
                ),
            );
        }
        limits
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

impl LogConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> LogConfig {
        let r = r.section("log");
        LogConfig {
            level: r.pick("level", LogLevel::Info),
            format: r.pick("format", LogFormat::Json),
        }
    }
}

/// What a Check carries besides the body: headers, path, addresses and attributes (Envoy's
/// default limit on request headers is 60 KiB).
pub const HEADERS_BUDGET: u64 = 96 * 1024;

//! The servers: gRPC (`envoy.service.auth.v3.Authorization`, `grpc.health.v1`, reflection) and
//! the admin HTTP listener (`admin.rs`: `/healthz`, `/readyz`, `/v1/time`, `/metrics`, events).
//!
//! `serve` takes bound listeners and a shutdown future, so tests bind `127.0.0.1:0` and stop
//! the server when they are done. `Check` answers `Ok(CheckResponse)` for every request: a
//! denial is data, never a gRPC error.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tokio::net::TcpListener;
use tonic::Request;
use tonic_health::ServingStatus;

use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::app::App;
use crate::metrics::Outcome;
use crate::pipeline::Decision;
use crate::request::RequestView;
use crate::response;
use crate::telemetry::MetadataExtractor;

mod admin;
mod check;
mod limits;
mod resource;
pub(crate) mod tls;

pub use check::Answer;

/// The reflection data built from `envoy-types`' descriptor set (see `build.rs`).
const EXT_AUTHZ_DESCRIPTOR: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ext_authz_descriptor.bin"));
pub(crate) const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// `envoy.service.auth.v3.Authorization/Check` over an [`App`] (the bench's instruction corpus
/// calls it in-process, without the gRPC transport).
pub struct CheckService {
    app: Arc<App>,
}

impl CheckService {
    pub fn new(app: Arc<App>) -> Self {
        CheckService { app }
    }
}

impl CheckService {
    /// `Check`: the pipeline's decision, as Envoy receives it.
    pub async fn answer(&self, request: Request<RequestView>) -> Answer {
        // Registry calls on this path end at the configured request timeout, or sooner when
        // Envoy's `grpc-timeout` (less a margin for the answer to get back) is nearer.
        let now = tokio::time::Instant::now();
        let mut deadline = now + self.app.request_timeout;
        if let Some(t) = grpc_timeout(request.metadata()) {
            deadline = deadline.min(now + t.saturating_sub(self.app.deadline_margin));
        }
        // One span per sampled Check, in the trace Envoy started (W3C `traceparent` in the
        // metadata); the sampling is decided before the span exists (see `CheckSampling`).
        let sampling = &self.app.telemetry.spans;
        let span = if sampling.enabled() {
            // W3C trace context, the propagator `telemetry` installs globally; asked directly
            // and from an empty context: the global one sits behind a lock every check would
            // take, and a Check has no context of its own to extend.
            let parent = TraceContextPropagator::new().extract_with_context(
                &opentelemetry::Context::new(),
                &MetadataExtractor(request.metadata()),
            );
            if sampling.sampled(&parent) {
                // The name is `telemetry::CHECK_SPAN`, which the sampler recognises.
                let span = tracing::info_span!(
                    "check",
                    otel.kind = "server",
                    decision = tracing::field::Empty
                );
                let _ = span.set_parent(parent);
                span
            } else {
                tracing::Span::none()
            }
        } else {
            tracing::Span::none()
        };
        let view = request.into_inner();
        let checked =
            crate::registry::with_deadline(Some(deadline), self.app.pipeline.check(&view));
        let decision = checked.instrument(span.clone()).await;
        let label = record(&self.app, &decision, now.elapsed());
        span.record("decision", label);
        // A denial's answer and log line carry the request id (the incoming one, or a new one),
        // and so does a shadow allow's log line; an allow needs none.
        let request_id = match decision {
            Decision::Allow { .. } => None,
            _ => Some(
                view.request_id()
                    .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
            ),
        };
        let answer = response::encoded(&decision, &self.app.remove_headers, || {
            response::Particulars {
                request_id: request_id.as_deref().unwrap_or_default(),
                server_time_secs: self.app.pipeline.clock.now_secs(),
                scheme: crate::stage::bearer::Scheme::of(&view),
            }
        });
        log_decision(&decision, &view, request_id.as_deref().unwrap_or("-"));
        answer
    }
}

/// The `grpc-timeout` Envoy sends with the call (`<digits><H|M|S|m|u|n>`).
pub(crate) fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok().filter(|_| digits.len() <= 8)?;
    Some(match unit {
        "H" => std::time::Duration::from_secs(n.checked_mul(3600)?),
        "M" => std::time::Duration::from_secs(n.checked_mul(60)?),
        "S" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_millis(n),
        "u" => std::time::Duration::from_micros(n),
        "n" => std::time::Duration::from_nanos(n),
        _ => return None,
    })
}

/// Counts the decision and its duration; returns its label.
fn record(app: &App, decision: &Decision, spent: std::time::Duration) -> &'static str {
    let (outcome, code, policy) = match decision {
        Decision::Allow { policy, .. } => (Outcome::Allow, "none", policy.name.as_str()),
        Decision::Deny { denial, policy, .. } => (
            Outcome::Deny,
            denial.code(),
            policy.as_ref().map_or("none", |p| p.name.as_str()),
        ),
        Decision::ShadowAllow { denial, policy, .. } => {
            (Outcome::ShadowAllow, denial.code(), policy.name.as_str())
        }
    };
    app.pipeline.metrics.decision(outcome, code, policy, spent);
    outcome.as_str()
}

/// One line per denial: code, stage, agent DID (once known) and request id; never a credential.
fn log_decision(decision: &Decision, view: &RequestView, request_id: &str) {
    match decision {
        Decision::Allow { .. } => {}
        Decision::Deny { denial, policy, at } => tracing::info!(
            code = denial.code(),
            status = denial.status(),
            stage = at.stage.as_str(),
            agent_did = at.agent_did.as_deref().unwrap_or("-"),
            policy = policy.as_ref().map_or("none", |p| p.name.as_str()),
            method = %view.method,
            request_id,
            "denied"
        ),
        Decision::ShadowAllow { denial, policy, at } => tracing::warn!(
            code = denial.code(),
            stage = at.stage.as_str(),
            agent_did = at.agent_did.as_deref().unwrap_or("-"),
            policy = %policy.name,
            request_id,
            "shadow: would have denied"
        ),
    }
}

/// Serves until `shutdown` completes, then drains: gRPC health and `/readyz` report NOT_SERVING
/// at once while checks are still answered for `listen.drain_secs` (Envoy's health checks and
/// Kubernetes' endpoints move traffic away meanwhile), then no new streams are taken and
/// in-flight checks have `listen.grace_secs` to finish.
pub async fn serve(
    grpc: impl Into<GrpcListener>,
    admin: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let (reporter, health) = health_service(&app).await;
    app.warm_up();
    let draining = app.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.draining.store(true, Ordering::SeqCst);
        set_health(&reporter, ServingStatus::NotServing).await;
        let drain = draining.drain;
        tracing::info!(
            drain_secs = drain.as_secs(),
            "shutting down: NOT_SERVING, still answering checks until the drain ends"
        );
        tokio::time::sleep(drain).await;
        let _ = stop_tx.send(true);
    });

    // Both reflection versions: grpcurl before 1.9 only speaks v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(EXT_AUTHZ_DESCRIPTOR)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(std::io::Error::other)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(std::io::Error::other)?;
    let shedding = limits::Shedding::new(app.pipeline.metrics.clone(), app.pipeline.clock.clone());
    let tls = app.tls.as_ref().map(|t| {
        t.watch();
        t.config.clone()
    });
    let grpc: GrpcListener = grpc.into();
    let tcp = match &grpc {
        GrpcListener::Tcp(listener) => Some(listener.local_addr()?),
        GrpcListener::Unix(_) => None,
    };
    if let Some(address) = tcp.filter(|a| tls.is_none() && !a.ip().is_loopback()) {
        tracing::warn!(
            %address,
            "the gRPC listener is plaintext on a non-loopback address: checks carry tokens and \
             bodies; set tls.cert_file and tls.key_file (and tls.client_ca_file) unless a mesh \
             encrypts the hop"
        );
    }
    let check =
        check::CheckServer::new(CheckService { app: app.clone() }, app.limits.message_bytes);
    let grpc_server = tonic::transport::Server::builder()
        // Past this many Checks in flight on one connection the client queues (Envoy opens
        // another connection): an overloaded server otherwise falls behind reading requests
        // until h2's small-frame protection answers GOAWAY and every pending Check fails.
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // A peer that went away gives its connection back by TCP keepalive (`limits::tuned`).
        .layer(limits::Checks::new(app.limits, shedding.clone()))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(check)
        .serve_with_incoming_shutdown(
            limits::connections(grpc, app.limits.connections, tls, shedding),
            stopped(stop_rx.clone()),
        );

    let admin_router = admin::admin_routes(app.clone());
    let drain_rx = stop_rx.clone();
    let admin_server = axum::serve(admin, admin_router).with_graceful_shutdown(stopped(stop_rx));

    // In-flight checks get the grace period, never longer: long-lived streams (a health `Watch`)
    // would otherwise hold shutdown open forever.
    let servers = async {
        let (g, a) = tokio::join!(grpc_server, admin_server);
        g.map_err(std::io::Error::other)?;
        a
    };
    let grace = app.grace;
    let deadline = async {
        stopped(drain_rx).await;
        tokio::time::sleep(grace).await;
        tracing::warn!("grace period over; closing remaining connections");
    };
    tokio::select! {
        result = servers => result,
        () = deadline => Ok(()),
    }
}

type Reporter = tonic_health::server::HealthReporter;

async fn set_health(reporter: &Reporter, status: ServingStatus) {
    for service in [AUTHORIZATION_SERVICE, ""] {
        reporter.set_service_status(service, status).await;
    }
}

/// gRPC health, `NotServing` until the signing keys have loaded and the CRL has been tried once,
/// then `Serving` (for the Authorization service and the server as a whole) until shutdown
/// begins.
async fn health_service(
    app: &Arc<App>,
) -> (
    Reporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::NotServing).await;
    let (mut ready, mut crl) = (app.ready(), app.pipeline.crl.attempted());
    let (app, serving) = (app.clone(), reporter.clone());
    tokio::spawn(async move {
        // Keys loaded, and the CRL tried once: a replica that served before its first CRL
        // would let revoked agents through for that moment.
        let loaded = ready.wait_for(|r| *r).await.is_ok() && crl.wait_for(|a| *a).await.is_ok();
        if loaded && !app.draining.load(Ordering::SeqCst) {
            set_health(&serving, ServingStatus::Serving).await;
            // Shutdown may have begun meanwhile: it must win.
            if app.draining.load(Ordering::SeqCst) {
                set_health(&serving, ServingStatus::NotServing).await;
            } else {
                tracing::info!("signing keys loaded; serving");
            }
        }
    });
    (reporter, health)
}

/// See `serve`.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// The gRPC listener: TCP, or a Unix domain socket for Envoy in the same pod.
pub enum GrpcListener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener),
}

/// One accepted gRPC connection, before its first byte (or TLS handshake).
pub(crate) enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl From<TcpListener> for GrpcListener {
    fn from(listener: TcpListener) -> Self {
        GrpcListener::Tcp(listener)
    }
}

impl GrpcListener {
    /// Binds `addr`. A Unix socket file left by an earlier run is removed first (binding
    /// fails on an existing path) unless a server still listens on it, and the socket is made
    /// readable and writable by the owner and group only: they are who may send checks.
    pub async fn bind(addr: &crate::config::ListenAddr) -> std::io::Result<GrpcListener> {
        use crate::config::ListenAddr;
        match addr {
            ListenAddr::Tcp(addr) => Ok(GrpcListener::Tcp(TcpListener::bind(addr).await?)),
            ListenAddr::Unix(path) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                let socket = std::fs::symlink_metadata(path);
                if socket.is_ok_and(|m| m.file_type().is_socket()) {
                    // A server still listening there keeps it; only a dead one's file goes.
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        let taken = format!("{} is in use by a listening server", path.display());
                        return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, taken));
                    }
                    std::fs::remove_file(path)?;
                }
                let listener = tokio::net::UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Ok(GrpcListener::Unix(listener))
            }
        }
    }

    /// `ip:port`, or `unix:<path>`.
    pub fn describe(&self) -> String {
        match self {
            GrpcListener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            GrpcListener::Unix(l) => {
                let path = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(Into::into));
                let path: Option<std::path::PathBuf> = path;
                format!("unix:{}", path.unwrap_or_default().display())
            }
        }
    }

    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            GrpcListener::Tcp(l) => l.accept().await.map(|(s, _)| Accepted::Tcp(s)),
            GrpcListener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }
}

/// Accepted gRPC connections with `TCP_NODELAY`: without it, Nagle's algorithm and delayed ACKs
/// hold small HTTP/2 frames back for tens of milliseconds. (The bench's servers use it too.)
pub fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let parse = |v: &str| {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(parse("500m"), Some(std::time::Duration::from_millis(500)));
        assert_eq!(parse("2S"), Some(std::time::Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(std::time::Duration::from_secs(3600)));
        assert_eq!(
            parse("250000u"),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(parse("123456789m"), None, "at most 8 digits");
        assert_eq!(parse("5x"), None);
        assert_eq!(parse("m"), None);
    }
}

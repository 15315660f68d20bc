//! `claw-authz-bench --instructions N`: a fixed in-process corpus of `N` checks of the default
//! configuration (the file nonce store, metrics, spans exported over OTLP at 10 % sampling), for
//! counting instructions under callgrind (`.ci/instructions`).
//!
//! Everything before the corpus (the registry, the server's start, signing every request) runs
//! before [`corpus_begins`] and everything after it after [`corpus_ends`]: callgrind is told to
//! zero its counters on entering the first and to dump them on entering the second, so the dump
//! holds exactly the corpus, on every thread (the nonce log's writer and the span exporter
//! included). Each check is decoded from its protobuf bytes, answered by the server's
//! `Authorization` service, and its answer encoded, as the gRPC layer would; the transport
//! itself (HTTP/2 and the socket) is the same for every server and is left out.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prost::Message;

use super::bed::{self, BODY, PATH};
use super::sink::CountingSink;
use claw_authz::app::App;
use claw_authz::clock::{Clock, SystemClock};
use claw_authz::dev::registry::DevRegistry;
use claw_authz::dev::sign::{AgentSigner, Ed25519Signer, random_nonce};
use claw_authz::request::RequestView;
use claw_authz::server::CheckService;

/// Checks in flight at once (the file store's group commit sees them together).
const IN_FLIGHT: usize = 8;
/// Checks before the corpus: the caches fill, the first span batch goes out.
const WARM_UP: usize = 200;

/// Runs the corpus; prints `{"checks": N, "allowed": N}` on stdout.
pub fn run(checks: usize) -> Result<(), String> {
    // One thread runs every task: the order of work is the same on every run, so the counts are.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(corpus(checks))
}

async fn corpus(checks: usize) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let registry = DevRegistry::start_with(&bed::AGENTS, |_| {
        AgentSigner::Ed25519(Ed25519Signer::random())
    })
    .await
    .map_err(io)?;
    let dir = std::env::temp_dir().join(format!("claw-instructions-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let sink = CountingSink::default();
    let otlp = sink.start().await.map_err(io)?;
    let result = serve_corpus(&registry, &dir, otlp, checks).await;
    let _ = std::fs::remove_dir_all(&dir);
    let allowed = result?;
    let spans = sink.spans.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "checks": checks,
            "allowed": allowed,
            "spans_exported": spans,
        })
    );
    if allowed != checks {
        return Err(format!(
            "{} of {checks} checks were not allowed",
            checks - allowed
        ));
    }
    if spans == 0 {
        return Err("no span was exported".into());
    }
    Ok(())
}

/// The default configuration, with this run's registry, trust file, nonce directory and OTLP
/// receiver. Metrics are exported once an hour: a periodic export is work per second, not per
/// check, and its count would follow how long the corpus took under callgrind.
fn config(registry: &DevRegistry, dir: &std::path::Path, otlp: std::net::SocketAddr) -> String {
    format!(
        "listen: {{grpc: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registry: {{url: {}, insecure_http: true}}\n\
         trust: {{file: {}}}\n\
         nonce: {{store: file, dir: {}}}\n\
         log: {{format: json, level: info}}\n\
         telemetry: {{otlp_endpoint: \"http://{otlp}\", trace_sample_percent: 10, export_interval_ms: 3600000}}\n",
        registry.url,
        dir.join("trust.yaml").display(),
        dir.join("nonces").display(),
    )
}

async fn serve_corpus(
    registry: &DevRegistry,
    dir: &std::path::Path,
    otlp: std::net::SocketAddr,
    checks: usize,
) -> Result<usize, String> {
    std::fs::write(dir.join("trust.yaml"), bed::trust_yaml(registry)).map_err(|e| e.to_string())?;
    let yaml = config(registry, dir, otlp);
    let config = claw_authz::config::Config::load(&yaml, &Default::default())
        .map_err(|errors| errors.join("; "))?;
    let tracer = claw_authz::telemetry::init_tracing(&config.log, &config.telemetry)?;
    let app = Arc::new(App::from_config(&config, Arc::new(SystemClock))?);
    app.warm_up();
    let mut ready = app.ready();
    let mut crl = app.pipeline.crl.attempted();
    let waited =
        async { ready.wait_for(|r| *r).await.is_ok() && crl.wait_for(|a| *a).await.is_ok() };
    if !tokio::time::timeout(std::time::Duration::from_secs(60), waited)
        .await
        .unwrap_or(false)
    {
        return Err("the server did not load the registry's keys and CRL within 60 s".into());
    }
    let service = Arc::new(CheckService::new(app.clone()));
    let timestamp = SystemClock.now_secs();
    let warm = signed(registry, timestamp, WARM_UP);
    let corpus = signed(registry, timestamp, checks);
    let warmed = answer_all(&service, warm).await;
    if warmed != WARM_UP {
        return Err(format!(
            "{} of {WARM_UP} warm-up checks were not allowed",
            WARM_UP - warmed
        ));
    }
    corpus_begins();
    let allowed = answer_all(&service, corpus).await;
    corpus_ends();
    if let Some(provider) = tracer {
        // Off the runtime's one thread, which the exporter's connection needs meanwhile.
        let flushed = tokio::task::spawn_blocking(move || provider.force_flush());
        let _ = flushed.await;
    }
    Ok(allowed)
}

/// `n` encoded checks, a fresh nonce and proof each, the agents in turn.
fn signed(registry: &DevRegistry, timestamp: u64, n: usize) -> Vec<Vec<u8>> {
    let templates = bed::templates(registry, timestamp);
    (0..n)
        .map(|i| {
            let agent = i % templates.len();
            let nonce = random_nonce();
            let proof = registry.agents[agent]
                .signer
                .sign_request("POST", PATH, BODY, timestamp, &nonce);
            let mut request = (*templates[agent]).clone();
            if let Some(http) = request
                .attributes
                .as_mut()
                .and_then(|a| a.request.as_mut())
                .and_then(|r| r.http.as_mut())
            {
                http.headers.insert("x-claw-nonce".into(), nonce);
                http.headers.insert("x-claw-proof".into(), proof.proof);
            }
            request.encode_to_vec()
        })
        .collect()
}

/// Answers every encoded check, `IN_FLIGHT` at a time; returns how many were allowed.
async fn answer_all(service: &Arc<CheckService>, requests: Vec<Vec<u8>>) -> usize {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let allowed = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (service, requests) = (service.clone(), requests.clone());
        let (next, allowed) = (next.clone(), allowed.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(bytes) = requests.get(i) else { return };
                let Ok(request) = RequestView::decode(bytes) else {
                    continue;
                };
                let answer = service.answer(tonic::Request::new(request)).await;
                if answer.is_ok() {
                    allowed.fetch_add(1, Ordering::Relaxed);
                }
                std::hint::black_box(answer.encode_to_vec());
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    allowed.load(Ordering::Relaxed)
}

/// Callgrind zeroes its counters on entering this (`--zero-before`).
#[inline(never)]
fn corpus_begins() {
    std::hint::black_box(0u8);
}

/// Callgrind dumps its counters on entering this (`--dump-before`).
#[inline(never)]
fn corpus_ends() {
    std::hint::black_box(1u8);
}

//! `claw-authz-bench`: a load generator and the benchmark suite (see `BENCHMARKS.md`), built
//! only with the `bench` feature (`cargo build --release --features bench`); the product binary
//! and image carry none of it.
//!
//! Requests are signed before the clock starts (a fresh nonce and signature each), then sent to
//! `Check` over gRPC, open loop at a fixed rate or closed loop at maximum throughput. The server
//! is a child process, so its CPU time per check comes from `/proc` alone; the same run measures
//! the CPU time of one raw signature verification, and the key figure is their ratio.

mod arm;
mod bed;
mod envoy_compare;
mod floor;
mod instructions;
mod load;
mod plot;
mod report;
mod sink;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::Channel;

pub use bed::Scenario;
use bed::{Bed, SCENARIOS};
use report::{Report, print_report, table};

#[derive(Parser)]
#[command(
    name = "claw-authz-bench",
    version,
    about = "Benchmarks claw-authz: pre-signed requests against a server it starts"
)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
    /// The claw-authz binary to measure (default: `claw-authz` beside this binary).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Serve as the floor server for this Ed25519 key (the bench starts itself this way).
    #[arg(long, hide = true)]
    floor_key: Option<String>,
    /// Serve as the P-256 floor server for this bearer issuer key (`x.y`).
    #[arg(long, hide = true)]
    floor_p256_key: Option<String>,
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    floor_listen: SocketAddr,
    /// The floor server answers a check that passes with this allow answer (an encoded
    /// `CheckResponse`, in base64url) instead of a bare OK.
    #[arg(long, hide = true)]
    floor_answer: Option<String>,
    /// Answer this many checks of the default configuration in-process and exit: the corpus
    /// `.ci/instructions` counts under callgrind.
    #[arg(long, value_name = "CHECKS")]
    instructions: Option<usize>,
}

/// mimalloc, for both servers alike (see `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(checks) = cli.instructions {
        return match instructions::run(checks) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let floor = match (&cli.floor_key, &cli.floor_p256_key) {
        (Some(key), _) => Some(floor::proof(key)),
        (None, Some(key)) => Some(floor::bearer(key)),
        (None, None) => None,
    };
    let allow = cli
        .floor_answer
        .as_deref()
        .map(floor::allow_answer)
        .transpose();
    let result = match (floor, allow) {
        (Some(Ok(floor)), Ok(allow)) => {
            runtime.block_on(floor::serve(cli.floor_listen, floor, allow))
        }
        (Some(Err(e)), _) | (_, Err(e)) => Err(e),
        (None, Ok(Some(_))) => Err("--floor-answer is for a floor server (--floor-key)".into()),
        (None, Ok(None)) => runtime.block_on(run(cli.args, cli.server)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure, in turns with its floor server (one second each, until each has had
    /// --duration).
    #[arg(long, value_enum, default_value = "default")]
    pub scenario: Scenario,
    /// Requests per second, open loop; 0: maximum throughput (closed loop).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Seconds of measurement (after a warm-up).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Requests in flight in the closed loop.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// gRPC connections to the server (requests are spread over them).
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Runtime worker threads of the servers measured, claw-authz and the floor server alike
    /// (`TOKIO_WORKER_THREADS`); 0: one per CPU, tokio's default. Under a CPU limit, as the Helm
    /// chart sets (one CPU), tokio's default is the limit: one.
    #[arg(long, default_value_t = 0)]
    pub server_workers: usize,
    /// Print one JSON object per result, the main one last.
    #[arg(long)]
    pub json: bool,
    /// Run every scenario (each for --duration) and print a Markdown table.
    #[arg(long)]
    pub all: bool,
    /// The end-to-end comparison through Envoy 1.40 (ENVOY_BIN, or `.venv-envoy`), at --rate
    /// (default 1000) for --duration per setup, setups rotated each repetition.
    #[arg(long)]
    pub envoy: bool,
    #[arg(long, default_value_t = 3)]
    pub repetitions: u32,
    /// Sweep open-loop rates against claw-authz and the floor server and write the latency
    /// plot (SVG) here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Runs what `args` asks for against `server` (default: `claw-authz` beside this binary).
async fn run(args: BenchArgs, server: Option<PathBuf>) -> Result<(), String> {
    let binary = match server {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("claw-authz"),
    };
    if !binary.is_file() {
        return Err(format!(
            "no server binary at {} (build it, or pass --server)",
            binary.display()
        ));
    }
    if args.server_workers > 0 {
        println!(
            "servers measured with {} runtime worker thread(s) each (TOKIO_WORKER_THREADS)",
            args.server_workers
        );
    }
    if args.envoy {
        return envoy_compare::compare(&binary, &args).await;
    }
    if let Some(path) = &args.plot {
        return plot::sweep(&binary, &args, path).await;
    }
    let requested: Vec<Scenario> = if args.all {
        SCENARIOS.to_vec()
    } else {
        vec![args.scenario]
    };
    let mut reports: Vec<Report> = Vec::new();
    for scenario in requested {
        if scenario.is_floor() {
            // In a table every row carries its own floor, measured in turns with it.
            if !args.all {
                let report = arm::single(&binary, scenario, &args, args.rate).await?;
                print_report(&report, args.json);
            }
            continue;
        }
        let (floor, report) = arm::pair(&binary, scenario, &args, args.rate).await?;
        print_report(&floor, args.json);
        print_report(&report, args.json);
        reports.push(report);
    }
    if args.all {
        println!("\n{}", table(&reports));
    }
    Ok(())
}

async fn connect(
    addr: std::net::SocketAddr,
    n: usize,
) -> Result<Vec<AuthorizationClient<Channel>>, String> {
    let mut clients = Vec::new();
    for _ in 0..n.max(1) {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        clients.push(AuthorizationClient::new(channel));
    }
    Ok(clients)
}

static REPORTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `send(i)` sends pre-signed request `offset + i` and answers whether it was allowed.
fn sender(
    bed: std::sync::Arc<Bed>,
    signed: std::sync::Arc<Vec<bed::Signed>>,
    clients: Vec<AuthorizationClient<Channel>>,
    offset: usize,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync + 'static
{
    move |i| {
        let request = signed.get(offset + i).map(|s| bed.request(s));
        let mut client = clients[i % clients.len()].clone();
        Box::pin(async move {
            let Some(request) = request else {
                return false;
            };
            let failure = match client.check(request).await {
                Ok(r) => match r.get_ref().status.as_ref().filter(|s| s.code != 0) {
                    None => return true,
                    Some(s) => format!("denied, code {}: {:?}", s.code, r.get_ref().http_response),
                },
                Err(e) => format!("gRPC error: {e}"),
            };
            // The first few failures are printed: a count alone does not say what went wrong.
            if REPORTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                eprintln!("bench: request {i} failed: {failure}");
            }
            false
        })
    }
}

/// Breaker-open scenario: the registry starts hanging; checks keep coming (slowly) until the
/// server's `/metrics` shows the validate and CRL breakers open, at most 60 s.
async fn open_breakers(bed: &std::sync::Arc<Bed>) -> Result<String, String> {
    bed.registry.set_hanging(true);
    let clients = connect(bed.server.grpc, 1).await?;
    let extra = std::sync::Arc::new(bed.sign(600));
    for round in 0..60 {
        let send = sender(bed.clone(), extra.clone(), clients.clone(), round * 10);
        let _ = load::closed_loop(1, Duration::from_secs(5), 10, send).await;
        let states = breaker_states(bed).await;
        if states.contains("validate=open") && states.contains("crl=open") {
            return Ok(format!("before: {states}"));
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    Err(format!(
        "the breakers did not open within 60 s: {}",
        breaker_states(bed).await
    ))
}

/// `endpoint=state` for each breaker, from the server's `/metrics`.
async fn breaker_states(bed: &Bed) -> String {
    let text = bed.server.metrics().await;
    let mut states = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("claw_authz_breaker_state{") {
            let endpoint = rest
                .split("endpoint=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?");
            let state = match rest.rsplit(' ').next() {
                Some("0") => "closed",
                Some("1") => "open",
                Some("2") => "half-open",
                _ => "?",
            };
            states.push(format!("{endpoint}={state}"));
        }
    }
    states.sort();
    states.join(" ")
}

//! The `claw-authz` command: `serve`, `demo`, `sign`, `revoke`, `events tail`, `check-config`. (The benchmark
//! is its own binary, `claw-authz-bench`, behind the `bench` feature.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use claw_authz::app::App;
use claw_authz::clock::SystemClock;
use claw_authz::config::{Config, LogConfig, LogFormat, LogLevel};

use claw_authz::config::EXIT_CONFIG;

#[derive(Parser)]
#[command(
    name = "claw-authz",
    version,
    about = "Envoy ext_authz server for Clawdentity agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the ext_authz gRPC server and the admin listener.
    Serve {
        #[arg(long, env = "CLAW_AUTHZ_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Start a dev registry, agents and the sidecar on loopback, and run scripted requests.
    Demo {
        /// Print the table and exit.
        #[arg(long)]
        once: bool,
        /// Send the requests as plain HTTP through a real Envoy (ENVOY_BIN, or `.venv-envoy`).
        #[arg(long)]
        envoy: bool,
    },
    /// Sign a request as an agent: print its headers, a curl command, or send it to a sidecar.
    Sign(claw_authz::dev::cli::SignArgs),
    /// Publish a revocation to the registry-event stream that every replica reads: an agent
    /// (`agent.auth.revoked`, reason `agent_revoked`) or a token id (`claw.token.revoked`).
    Revoke {
        /// The agent DID to revoke.
        #[arg(long, conflicts_with = "jti", required_unless_present = "jti")]
        agent: Option<String>,
        /// A token id to revoke: an AIT's `jti` or a bearer JWT's.
        #[arg(long)]
        jti: Option<String>,
        /// Redis URL (default: `redis.url` of the config).
        #[arg(long)]
        redis_url: Option<String>,
        /// Stream name (default: `events.stream` of the config, else `claw:events`).
        #[arg(long)]
        stream: Option<String>,
        #[arg(long, env = "CLAW_AUTHZ_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Security events of a running server.
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Validate a config file (and CLAW_AUTHZ_* variables) and print the effective config.
    CheckConfig {
        #[arg(long, env = "CLAW_AUTHZ_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum EventsAction {
    /// Show security events as they arrive (from `GET /v1/security/events` on the admin
    /// listener).
    Tail {
        /// The admin listener.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
        /// The events token (`events.token_file`), when the listener needs one.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the CloudEvents as JSON lines.
        #[arg(long)]
        json: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

/// mimalloc, for both servers alike (see `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve { config } => match load_config(config.as_ref()) {
            Ok(c) => runtime.block_on(serve(c)),
            Err(code) => code,
        },
        Command::CheckConfig { config } => match load_config(config.as_ref()) {
            Ok(c) => {
                print!(
                    "{}",
                    serde_yaml_ng::to_string(&c.effective).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Demo { once, envoy } => {
            // The outage story would print a warning per stale answer; it prints the counts.
            init_logging(&LogConfig {
                level: LogLevel::Error,
                format: LogFormat::Text,
            });
            report(runtime.block_on(claw_authz::dev::demo::run(once, envoy)))
        }
        Command::Sign(args) => runtime.block_on(claw_authz::dev::cli::sign(args)),
        Command::Events {
            action:
                EventsAction::Tail {
                    admin,
                    token_file,
                    json,
                    count,
                },
        } => {
            let token = match token_file.map(std::fs::read_to_string) {
                None => None,
                Some(Ok(t)) => Some(t.trim().to_owned()),
                Some(Err(e)) => {
                    eprintln!("error: cannot read the token file: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let tail = claw_authz::dev::tail::tail(&admin, token.as_deref(), json, count);
            ExitCode::from(runtime.block_on(tail))
        }
        Command::Revoke {
            agent,
            jti,
            redis_url,
            stream,
            config,
        } => {
            // The config is only consulted for what the flags leave out.
            let loaded = match (&redis_url, &config) {
                (Some(_), None) => None,
                _ => match load_config(config.as_ref()) {
                    Ok(c) => Some(c),
                    Err(code) => return code,
                },
            };
            let target = claw_authz::revocation::publisher::Target { agent, jti };
            runtime.block_on(claw_authz::revocation::publisher::revoke(
                target, redis_url, stream, loaded,
            ))
        }
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads and validates; prints every problem and returns exit code 64 on failure.
fn load_config(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let text = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("config error: cannot read {}: {e}", p.display());
                return Err(ExitCode::from(EXIT_CONFIG));
            }
        },
        None => String::new(),
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    Config::load(&text, &env).map_err(|errors| {
        eprintln!("config error: {} problem(s):", errors.len());
        for e in errors {
            eprintln!("  - {e}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn init_logging(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.format == LogFormat::Json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn serve(config: Config) -> ExitCode {
    let tracer = match claw_authz::telemetry::init_tracing(&config.log, &config.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let code = serve_app(config).await;
    if let Some(t) = tracer {
        let _ = t.shutdown();
    }
    code
}

async fn serve_app(config: Config) -> ExitCode {
    let app = match App::from_config(&config, Arc::new(SystemClock)) {
        Ok(app) => Arc::new(app),
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (grpc, admin) = match (
        claw_authz::server::GrpcListener::bind(&config.listen.grpc).await,
        tokio::net::TcpListener::bind(config.listen.admin).await,
    ) {
        (Ok(g), Ok(a)) => (g, a),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: cannot bind a listener: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        grpc = %grpc.describe(),
        admin = %admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        registry = %config.registry.url,
        "claw-authz listening"
    );
    match claw_authz::server::serve(grpc, admin, app, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

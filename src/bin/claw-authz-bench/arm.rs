//! Measuring a server: started, warmed up and its requests signed ([`Arm::start`]), then loaded
//! for a while ([`Arm::slice`]) as often as asked, and reported ([`Arm::finish`]).
//!
//! A scenario and its floor server are measured as a pair ([`pair`]): both are started, then
//! loaded in turns of [`SLICE`] until each has had `--duration`. This shared machine's speed
//! drifts by 10-30 % within minutes; measured one after the other, that drift fell on one server
//! and not the other, and moved the ratio by as much. In turns, it weighs on both alike.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::Channel;

use super::bed::{Bed, Scenario, Signed};
use super::load::{self, Sample};
use super::report::{Report, report, round};
use super::{BenchArgs, breaker_states, connect, open_breakers, sender};

/// How long one server is loaded before the other's turn.
pub const SLICE: Duration = Duration::from_secs(1);

/// One server under measurement.
pub struct Arm {
    scenario: Scenario,
    bed: Arc<Bed>,
    rate: u32,
    signed: Arc<Vec<Signed>>,
    clients: Vec<AuthorizationClient<Channel>>,
    /// Requests sent so far (each is signed once, with its own nonce).
    used: usize,
    turns: u32,
    sample: Sample,
    /// The server's CPU time during the slices: while the other server has its turn, this one
    /// is idle, and its timers' work then (a CRL poll, a metrics export) is not the checks'.
    cpu: Duration,
    rss_before: u64,
    verify_before: Duration,
    notes: String,
}

impl Arm {
    /// Starts a bed for `scenario`, warms it up and signs enough requests for `--duration` at
    /// `rate` (0: maximum).
    pub async fn start(
        binary: &std::path::Path,
        scenario: Scenario,
        args: &BenchArgs,
        rate: u32,
    ) -> Result<Arm, String> {
        let bed = Arc::new(Bed::start(binary, scenario, args.server_workers).await?);
        let duration = Duration::from_secs(args.duration.max(1));
        let warmup = 2_000usize;
        let clients = connect(bed.server.grpc, args.connections).await?;
        let warm_signed = Arc::new(bed.sign(warmup));
        let send = sender(bed.clone(), warm_signed, clients, 0);
        let warm = load::closed_loop(args.concurrency, Duration::from_secs(60), warmup, send).await;
        if warm.errors > 0 {
            return Err(format!(
                "{scenario:?}: {} of {warmup} warm-up requests were not allowed",
                warm.errors
            ));
        }
        // Enough for the run: the rate times the duration, or for a closed loop twice what the
        // warm-up reached (a run that uses them all ends early, and says so).
        let per_sec = if rate > 0 {
            f64::from(rate)
        } else {
            (warm.rate() * 2.0).clamp(5_000.0, 50_000.0)
        };
        let timed = (per_sec * duration.as_secs_f64()) as usize + 1;
        let signed = Arc::new(bed.sign(timed));
        let mut notes = String::new();
        if scenario == Scenario::BreakerOpen {
            notes = open_breakers(&bed).await?;
        }
        let verify_before = tokio::task::block_in_place(|| bed.cpu_per_verify(SLICE));
        let clients = connect(bed.server.grpc, args.connections).await?;
        Ok(Arm {
            scenario,
            rss_before: bed.server.rss_kib(),
            cpu: Duration::ZERO,
            bed,
            rate,
            signed,
            clients,
            used: 0,
            turns: 0,
            sample: Sample::default(),
            verify_before,
            notes,
        })
    }

    /// Whether the arm has had `duration` of load, or used up its requests.
    fn done(&self, duration: Duration) -> bool {
        self.sample.elapsed >= duration || self.used >= self.signed.len()
    }

    /// Loads the server for `length` (less when its requests run out).
    pub async fn slice(&mut self, concurrency: usize, length: Duration) {
        let available = self.signed.len().saturating_sub(self.used);
        let send = sender(
            self.bed.clone(),
            self.signed.clone(),
            self.clients.clone(),
            self.used,
        );
        let cpu_before = self.bed.server.cpu();
        let part = if self.rate > 0 {
            load::open_loop(self.rate, length, available, send).await
        } else {
            load::closed_loop(concurrency, length, available, send).await
        };
        self.cpu += self.bed.server.cpu() - cpu_before;
        self.turns += 1;
        self.used += self.sample.add_turn(part, length, available);
    }

    /// The report: CPU during the slices, over the checks answered.
    pub async fn finish(mut self) -> Report {
        let cpu = self.cpu;
        let rss_after = self.bed.server.rss_kib();
        // The baseline is measured before and after the run: this shared machine's speed drifts.
        let verify_after = tokio::task::block_in_place(|| self.bed.cpu_per_verify(SLICE));
        let verify = (self.verify_before + verify_after) / 2;
        if let Some(sink) = &self.bed.sink {
            self.notes = format!(
                "{} spans exported over OTLP",
                sink.spans.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        if self.scenario == Scenario::BreakerOpen {
            self.notes = format!("{}; after: {}", self.notes, breaker_states(&self.bed).await);
        }
        let mut report = report(
            self.scenario,
            self.rate,
            &mut self.sample,
            cpu,
            verify,
            self.rss_before,
            rss_after,
            self.notes,
        );
        report.turns = self.turns;
        report
    }
}

/// Measures `scenario` alone for `--duration`.
pub async fn single(
    binary: &std::path::Path,
    scenario: Scenario,
    args: &BenchArgs,
    rate: u32,
) -> Result<Report, String> {
    let mut arm = Arm::start(binary, scenario, args, rate).await?;
    arm.slice(args.concurrency, Duration::from_secs(args.duration.max(1)))
        .await;
    Ok(arm.finish().await)
}

/// Measures `scenario` and its floor server in turns (the module's documentation says why):
/// the floor's report, then the scenario's with its ratio over that floor.
pub async fn pair(
    binary: &std::path::Path,
    scenario: Scenario,
    args: &BenchArgs,
    rate: u32,
) -> Result<(Report, Report), String> {
    let duration = Duration::from_secs(args.duration.max(1));
    let mut floor = Arm::start(binary, scenario.floor(), args, rate).await?;
    let mut arm = Arm::start(binary, scenario, args, rate).await?;
    // Turns in the order floor, scenario, scenario, floor, ...: a steady drift then adds as
    // much to one as to the other.
    let mut turn = 0usize;
    while !(floor.done(duration) && arm.done(duration)) {
        let order = match turn % 2 {
            0 => [&mut floor, &mut arm],
            _ => [&mut arm, &mut floor],
        };
        for a in order {
            if !a.done(duration) {
                let left = duration.saturating_sub(a.sample.elapsed);
                a.slice(args.concurrency, left.min(SLICE)).await;
            }
        }
        turn += 1;
    }
    let floor = floor.finish().await;
    let mut measured = arm.finish().await;
    measured.floor_cpu_us_per_check = floor.cpu_us_per_check;
    measured.vs_floor = round(
        measured.cpu_us_per_check / floor.cpu_us_per_check.max(1e-9),
        2,
    );
    Ok((floor, measured))
}

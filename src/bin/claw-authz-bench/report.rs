//! What a run measured: the report, printed as a line, as JSON, or as a Markdown table.

use std::time::Duration;

use crate::Scenario;
use crate::load::{Percentiles, Sample};

/// One measured run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub scenario: String,
    /// `max` (closed loop) or `open` (fixed rate).
    pub mode: &'static str,
    pub target_rate: u32,
    pub rate: f64,
    pub completed: u64,
    pub errors: u64,
    pub p50_us: u32,
    pub p90_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
    pub max_us: u32,
    pub cpu_us_per_check: f64,
    pub cpu_us_per_verify: f64,
    pub ratio: f64,
    /// The floor server's CPU per check in the same run, and this run's over it.
    pub floor_cpu_us_per_check: f64,
    pub vs_floor: f64,
    pub rss_kib: u64,
    pub rss_kib_per_1000_nonces: f64,
    /// Scenario facts checked during the run (breaker states, spans exported).
    pub notes: String,
    /// The slices of load this server had: one alone, or one a second in turns with its
    /// floor server (`arm.rs`).
    pub turns: u32,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn report(
    scenario: Scenario,
    rate: u32,
    sample: &mut Sample,
    cpu: Duration,
    verify: Duration,
    rss_before: u64,
    rss_after: u64,
    notes: String,
) -> Report {
    let handled = (sample.completed() + sample.errors).max(1);
    let p = Percentiles::of(&mut sample.latencies_us);
    let cpu_us_per_check = cpu.as_secs_f64() * 1e6 / handled as f64;
    let cpu_us_per_verify = verify.as_secs_f64() * 1e6;
    let nonces = !scenario.is_floor();
    Report {
        scenario: scenario.name(),
        mode: if rate > 0 { "open" } else { "max" },
        target_rate: rate,
        rate: round(sample.rate(), 1),
        completed: sample.completed(),
        errors: sample.errors,
        p50_us: p.p50_us,
        p90_us: p.p90_us,
        p99_us: p.p99_us,
        p999_us: p.p999_us,
        max_us: p.max_us,
        cpu_us_per_check: round(cpu_us_per_check, 1),
        cpu_us_per_verify: round(cpu_us_per_verify, 1),
        ratio: round(cpu_us_per_check / cpu_us_per_verify.max(1e-9), 2),
        floor_cpu_us_per_check: if scenario.is_floor() {
            round(cpu_us_per_check, 1)
        } else {
            0.0
        },
        vs_floor: if scenario.is_floor() { 1.0 } else { 0.0 },
        rss_kib: rss_after,
        rss_kib_per_1000_nonces: if nonces {
            round(
                (rss_after as f64 - rss_before as f64) * 1000.0 / handled as f64,
                1,
            )
        } else {
            0.0
        },
        notes,
        turns: 1,
    }
}

pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

pub(crate) fn print_report(r: &Report, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    let target = if r.mode == "open" {
        format!("{} rps target", r.target_rate)
    } else {
        "maximum throughput".into()
    };
    println!(
        "{} ({target}): {} checks/s, {} errors; latency p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us; \
         server CPU {} us/check ({} x the floor server's {} us), raw verify {} us, ratio {}; RSS {} KiB ({} KiB per 1,000 nonces){}",
        r.scenario,
        r.rate,
        r.errors,
        r.p50_us,
        r.p90_us,
        r.p99_us,
        r.p999_us,
        r.max_us,
        r.cpu_us_per_check,
        r.vs_floor,
        r.floor_cpu_us_per_check,
        r.cpu_us_per_verify,
        r.ratio,
        r.rss_kib,
        r.rss_kib_per_1000_nonces,
        if r.notes.is_empty() {
            String::new()
        } else {
            format!("; {}", r.notes)
        }
    );
}

pub(crate) fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| scenario | checks/s | errors | p50 µs | p99 µs | p99.9 µs | CPU µs/check | floor µs/check | / floor | verify µs | ratio | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.rate,
            r.errors,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.cpu_us_per_check,
            r.floor_cpu_us_per_check,
            r.vs_floor,
            r.cpu_us_per_verify,
            r.ratio,
            r.notes
        ));
    }
    out
}

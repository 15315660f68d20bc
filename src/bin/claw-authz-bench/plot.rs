//! Latency versus offered rate, claw-authz (hot) beside the floor server, drawn as an SVG.

use std::path::Path;

use super::bed::Scenario;
use super::{BenchArgs, Report, arm};

const RATES: [u32; 7] = [1_000, 2_000, 4_000, 6_000, 8_000, 10_000, 12_000];

/// Runs every rate of `RATES` against both servers (each run its own fresh server), prints the
/// table and writes the plot.
pub async fn sweep(binary: &Path, args: &BenchArgs, out: &Path) -> Result<(), String> {
    let mut series: Vec<(Scenario, Vec<Report>)> = Vec::new();
    for scenario in [Scenario::Default, Scenario::Floor] {
        let mut reports = Vec::new();
        for rate in RATES {
            let report = arm::single(binary, scenario, args, rate).await?;
            super::print_report(&report, args.json);
            reports.push(report);
        }
        series.push((scenario, reports));
    }
    std::fs::write(out, svg(&series)).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn svg(series: &[(Scenario, Vec<Report>)]) -> String {
    let max_latency = series
        .iter()
        .flat_map(|(_, r)| r.iter().map(|r| r.p99_us))
        .max()
        .unwrap_or(1)
        .max(1);
    let f = Frame::new(f64::from(max_latency));
    let (w, h, left) = (f.w, f.h, f.left);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">Check latency vs offered rate (open loop, gRPC, this 2-core machine)</text>\n"
    );
    f.axes(&mut out);
    f.latency_ticks(&mut out);
    f.lines(&mut out, series);
    out.push_str("</svg>\n");
    out
}

/// The plot's geometry: rate on a linear x axis, latency on a log y axis (p50 and p99 differ by
/// orders of magnitude near saturation).
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    bottom: f64,
    top: f64,
    right: f64,
    max_rate: f64,
    /// ln of the lowest and highest latency shown (µs).
    lo: f64,
    hi: f64,
}

impl Frame {
    fn new(max_latency_us: f64) -> Self {
        Frame {
            w: 720.0,
            h: 420.0,
            left: 70.0,
            bottom: 50.0,
            top: 30.0,
            right: 170.0,
            max_rate: f64::from(RATES[RATES.len() - 1]),
            lo: 100f64.ln(),
            hi: (max_latency_us * 1.2).max(1_000.0).ln(),
        }
    }

    fn x(&self, rate: f64) -> f64 {
        self.left + (self.w - self.left - self.right) * rate / self.max_rate
    }

    fn y(&self, us: u32) -> f64 {
        let v = f64::from(us.max(100)).ln();
        self.h
            - self.bottom
            - (self.h - self.bottom - self.top) * (v - self.lo) / (self.hi - self.lo)
    }

    /// Both axes, the rate ticks and the rate label.
    fn axes(&self, out: &mut String) {
        let (w, h, left, bottom, top, right) =
            (self.w, self.h, self.left, self.bottom, self.top, self.right);
        out.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
            h - bottom,
            w - right,
            h - bottom,
            h - bottom
        ));
        for rate in RATES {
            let px = self.x(f64::from(rate));
            out.push_str(&format!(
                "<text x=\"{px}\" y=\"{}\" text-anchor=\"middle\">{rate}</text>\n",
                h - bottom + 16.0
            ));
        }
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">offered rate (checks/s)</text>\n",
            left + (w - left - right) / 2.0,
            h - 12.0
        ));
    }

    /// Latency grid lines: powers of ten and their doubles and halves.
    fn latency_ticks(&self, out: &mut String) {
        let mut tick = 100u32;
        while f64::from(tick).ln() <= self.hi {
            for t in [tick, tick * 2, tick * 5] {
                if f64::from(t).ln() > self.hi {
                    break;
                }
                let py = self.y(t);
                let label = if t >= 1_000 {
                    format!("{} ms", f64::from(t) / 1_000.0)
                } else {
                    format!("{t} µs")
                };
                out.push_str(&format!(
                    "<line x1=\"{}\" y1=\"{py}\" x2=\"{}\" y2=\"{py}\" stroke=\"#ddd\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text>\n",
                    self.left,
                    self.w - self.right,
                    self.left - 6.0,
                    py + 4.0
                ));
            }
            tick = tick.saturating_mul(10);
        }
    }

    /// p50 and p99 per series, with the legend.
    fn lines(&self, out: &mut String, series: &[(Scenario, Vec<Report>)]) {
        let colors = ["#c0392b", "#2c3e50"];
        let legend_x = self.w - self.right;
        let mut legend_y = self.top + 10.0;
        for ((scenario, reports), color) in series.iter().zip(colors) {
            let name = match scenario {
                Scenario::Floor => "floor server",
                _ => "claw-authz",
            };
            for (label, dash, pick) in [
                ("p50", "", (|r: &Report| r.p50_us) as fn(&Report) -> u32),
                ("p99", " stroke-dasharray=\"6 4\"", |r: &Report| r.p99_us),
            ] {
                let points: Vec<String> = reports
                    .iter()
                    .map(|r| {
                        format!(
                            "{:.1},{:.1}",
                            self.x(f64::from(r.target_rate)),
                            self.y(pick(r))
                        )
                    })
                    .collect();
                out.push_str(&format!(
                    "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
                    points.join(" ")
                ));
                out.push_str(&format!(
                    "<line x1=\"{}\" y1=\"{legend_y}\" x2=\"{}\" y2=\"{legend_y}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\n<text x=\"{}\" y=\"{}\">{name} {label}</text>\n",
                    legend_x + 10.0,
                    legend_x + 40.0,
                    legend_x + 46.0,
                    legend_y + 4.0
                ));
                legend_y += 20.0;
            }
        }
    }
}

//! `claw-authz-bench` (the `bench` feature) end to end (debug build, one second each): the JSON
//! it prints, that every pre-signed request is allowed, and that each scenario ran in the state
//! it names.

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_claw-authz-bench"))
        .args(["--server", env!("CARGO_BIN_EXE_claw-authz")])
        .args(["--json", "--duration", "1", "--concurrency", "8"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn assert_measured(r: &serde_json::Value, scenario: &str) {
    assert_eq!(r["scenario"], scenario);
    assert_eq!(r["errors"], 0, "every pre-signed request is allowed: {r}");
    assert!(r["completed"].as_u64().unwrap() > 0, "{r}");
    for key in ["rate", "cpu_us_per_check", "cpu_us_per_verify", "ratio"] {
        assert!(r[key].as_f64().unwrap() > 0.0, "{key} in {r}");
    }
    for key in ["p50_us", "p99_us", "p999_us"] {
        assert!(r[key].as_u64().is_some(), "{key} in {r}");
    }
}

#[test]
fn the_main_figure_reports_every_field_with_no_errors() {
    let r = bench(&[]);
    assert_measured(&r, "hot");
    assert_eq!(r["mode"], "max");
}

#[test]
fn an_open_loop_run_holds_its_rate_against_the_floor_server() {
    let r = bench(&["--scenario", "floor", "--rate", "200"]);
    assert_measured(&r, "floor");
    assert_eq!(r["mode"], "open");
    assert_eq!(r["completed"], 200);
}

#[test]
fn the_breaker_scenario_measures_with_the_registry_hanging_and_breakers_open() {
    let r = bench(&["--scenario", "breaker-open"]);
    assert_measured(&r, "breaker-open");
    let notes = r["notes"].as_str().unwrap();
    assert!(
        notes.contains("after: crl=open keys=closed validate=open"),
        "{notes}"
    );
}

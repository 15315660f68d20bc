//! `claw-authz-bench` (the `bench` feature) end to end (debug build, one second each): the JSON
//! it prints, that every pre-signed request is allowed, and that each scenario ran in the state
//! it names.

use std::process::Command;

/// The last report of a one-second run.
fn bench(args: &[&str]) -> serde_json::Value {
    bench_for(1, args).pop().unwrap()
}

/// Every report of a run of `seconds`, in order.
fn bench_for(seconds: u32, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_claw-authz-bench"))
        .args(["--server", env!("CARGO_BIN_EXE_claw-authz")])
        .args([
            "--json",
            "--concurrency",
            "8",
            "--duration",
            &seconds.to_string(),
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
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

/// A scenario's CPU per check is compared with its floor server's, measured in the same run.
fn assert_beside_floor(r: &serde_json::Value) {
    let (cpu, floor) = (
        r["cpu_us_per_check"].as_f64(),
        r["floor_cpu_us_per_check"].as_f64(),
    );
    let (cpu, floor) = (cpu.unwrap(), floor.unwrap());
    assert!(floor > 0.0, "{r}");
    let expected = (cpu / floor * 100.0).round() / 100.0;
    assert_eq!(r["vs_floor"].as_f64().unwrap(), expected, "{r}");
}

#[test]
fn the_main_figure_is_the_default_configuration_beside_the_floor() {
    let r = bench(&[]);
    assert_measured(&r, "default");
    assert_eq!(r["mode"], "max");
    assert_beside_floor(&r);
    // The default configuration exports spans (10 % sampled) to the bench's OTLP receiver.
    let notes = r["notes"].as_str().unwrap();
    assert!(notes.ends_with("spans exported over OTLP"), "{notes}");
}

#[test]
fn a_scenario_and_its_floor_are_loaded_in_turns() {
    let lines = bench_for(2, &["--scenario", "hot"]);
    let [floor, hot] = &lines[..] else {
        panic!("the floor's report, then the scenario's: {lines:?}");
    };
    assert_measured(floor, "floor");
    assert_measured(hot, "hot");
    // One-second turns, two each: a drift of the machine's speed weighs on both alike.
    assert_eq!(
        (floor["turns"].as_u64(), hot["turns"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(hot["floor_cpu_us_per_check"], floor["cpu_us_per_check"]);
    assert_beside_floor(hot);
}

#[test]
fn the_bearer_scenario_is_compared_with_the_p256_floor() {
    let r = bench(&["--scenario", "bearer"]);
    assert_measured(&r, "bearer");
    assert_beside_floor(&r);
}

/// Issue 21: every request freshly signed with RFC 9421 by a configured key, all allowed,
/// compared with the Ed25519 floor.
#[test]
fn the_httpsig_scenario_is_compared_with_the_ed25519_floor() {
    let r = bench(&["--scenario", "httpsig"]);
    assert_measured(&r, "httpsig");
    assert_beside_floor(&r);
}

#[test]
fn the_instruction_corpus_allows_every_check_and_exports_spans() {
    let out = Command::new(env!("CARGO_BIN_EXE_claw-authz-bench"))
        .args(["--instructions", "300"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "corpus failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (r["checks"].as_u64(), r["allowed"].as_u64()),
        (Some(300), Some(300))
    );
    assert!(r["spans_exported"].as_u64().unwrap() > 0, "{r}");
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

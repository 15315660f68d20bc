//! The conformance runner's engine, shared by `tests/conformance.rs` (the runner itself) and
//! `tests/registry_faults.rs` (which checks that resilience changed no scenario).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use claw_authz::clock::ManualClock;
use claw_authz::dev::check::check_request;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use serde_json::Value;

use super::registry::{FakeEndpoint, Reply};

enum Expected {
    Reference,
    Status(u16),
    NotRun,
}

/// Reads the "Vectors whose expected outcome changes" table of `docs/deviations.md`.
fn deviations() -> HashMap<String, Expected> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deviations.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out = HashMap::new();
    let Some(start) = text.find("## Vectors whose expected outcome changes") else {
        return out;
    };
    for line in text[start..].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(id), Some(ours)) = (cells.get(1), cells.get(3)) else {
            continue;
        };
        let id = id.trim_matches('`').to_owned();
        let expected = match ours.parse::<u16>() {
            Ok(status) => Expected::Status(status),
            Err(_) if ours.contains("not run") => Expected::NotRun,
            Err(_) => Expected::Reference,
        };
        out.insert(id, expected);
    }
    out
}

fn replies(list: &Value) -> (Vec<Reply>, bool) {
    let items = list.as_array().cloned().unwrap_or_default();
    let all_throw = !items.is_empty() && items.iter().all(|r| r.get("throw").is_some());
    let replies = items
        .iter()
        .map(|r| {
            if r.get("throw").is_some() {
                return Reply::Reset;
            }
            let status = r["status"].as_u64().unwrap_or(200) as u16;
            match (r.get("body"), r.get("text")) {
                (Some(b), _) => Reply::json(status, b),
                (None, Some(t)) => Reply::Body(status, t.as_str().unwrap_or("").to_owned()),
                _ => Reply::Status(status),
            }
        })
        .collect();
    (replies, all_throw)
}

async fn endpoint(path: &str, list: &Value) -> FakeEndpoint {
    let (replies, all_throw) = replies(list);
    if all_throw {
        FakeEndpoint::refused(path).await
    } else {
        FakeEndpoint::start(path, replies).await
    }
}

fn origin(url: &str) -> String {
    let u = reqwest::Url::parse(url).unwrap();
    u.origin().ascii_serialization()
}

/// The reference's `JSON.stringify` of an error body, members in its order.
fn reference_body(expected: &Value) -> String {
    let e = &expected["error"];
    let mut s = format!(
        "{{\"error\":{{\"code\":{},\"message\":{},\"requestId\":{}",
        e["code"], e["message"], e["requestId"]
    );
    if let Some(d) = e.get("details") {
        s.push_str(&format!(",\"details\":{d}"));
    }
    s.push_str("}}");
    s
}

fn header_value(response: &CheckResponse, name: &str) -> Option<String> {
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        return None;
    };
    ok.headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == name)
        .map(|h| h.value.clone())
}

async fn run_scenario(scenario: &Value, expected_override: &Expected) -> Result<(), String> {
    let env = &scenario["environment"];
    let cfg = &env["config"];
    let responses = &env["registryResponses"];
    let keys = endpoint("/.well-known/claw-keys.json", &responses["keys"]).await;
    let crl = endpoint("/v1/crl", &responses["crl"]).await;
    let validate = endpoint("/v1/agents/auth/validate", &responses["validate"]).await;

    let dir = std::env::temp_dir().join(format!(
        "claw-conformance-{}-{}",
        std::process::id(),
        scenario["id"].as_str().unwrap_or("x")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let trust = &env["trustStore"];
    let trust_yaml = serde_json::json!({
        "pairs": trust["pairs"],
        "revoked_agents": trust["revokedAgents"],
    });
    let trust_path = dir.join("trust.yaml");
    std::fs::write(&trust_path, trust_yaml.to_string()).unwrap();

    let registry_url = cfg["registryUrl"].as_str().unwrap();
    let secs = |k: &str, default: u64| cfg[k].as_u64().map_or(default, |ms| ms / 1000);
    let yaml = format!(
        "registry:\n  url: {registry_url}\n  insecure_http: true\n  issuer: {issuer}\n  keys_url: {}\n  crl_url: {}\n  validate_url: {}\n  keys_ttl_secs: {}\n\
         crl:\n  refresh_interval_secs: {}\n  max_age_secs: {}\n  stale_behavior: {}\n\
         proof:\n  max_skew_secs: {}\ntrust:\n  file: {}\nnonce:\n  store: memory\n",
        keys.url,
        crl.url,
        validate.url,
        secs("registryKeysCacheTtlMs", 3600),
        secs("crlRefreshIntervalMs", 300),
        secs("crlMaxAgeMs", 900),
        cfg["crlStaleBehavior"].as_str().unwrap_or("fail-open"),
        cfg["maxTimestampSkewSeconds"].as_u64().unwrap_or(300),
        trust_path.display(),
        issuer = origin(registry_url),
    );
    let clock = ManualClock::at(env["nowMs"].as_u64().unwrap());
    let mut server = super::server::start(&yaml, Arc::new(clock.clone())).await;

    let mut result = Ok(());
    for step in scenario["steps"].as_array().unwrap() {
        clock.set_ms(step["atMs"].as_u64().unwrap());
        // The CRL refreshes in the background, on the injected clock: whatever the refresher
        // would have done by `atMs` is done before the request.
        let pipeline = &server.app.pipeline;
        pipeline.crl.refresh_if_due(&pipeline.keys).await;
        let req = &step["request"];
        let url = req["url"].as_str().unwrap();
        let path = &url[origin(url).len()..];
        let headers: Vec<(String, String)> = req["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or("").to_owned()))
            .collect();
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = req["bodyUtf8"].as_str().unwrap_or("").as_bytes();
        let method = req["method"].as_str().unwrap();
        let response = server
            .check(check_request(method, path, &pairs, body))
            .await;
        let want = &step["expected"];
        let step_no = &step["step"];
        if let Err(e) = compare(&response, want, expected_override) {
            result = Err(format!("step {step_no}: {e}"));
            break;
        }
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn compare(response: &CheckResponse, want: &Value, expected: &Expected) -> Result<(), String> {
    let want_status = match expected {
        Expected::Status(s) => *s,
        _ => want["status"].as_u64().unwrap() as u16,
    };
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            let status = d.status.as_ref().map_or(0, |s| s.code) as u16;
            if status != want_status {
                return Err(format!(
                    "status {status}, want {want_status}; body {}",
                    d.body
                ));
            }
            if matches!(expected, Expected::Status(_)) {
                return Ok(());
            }
            let want_body = reference_body(&want["body"]);
            if d.body != want_body {
                return Err(format!("body\n  got  {}\n  want {want_body}", d.body));
            }
            Ok(())
        }
        Some(HttpResponse::OkResponse(_)) => {
            if want_status != 200 {
                return Err(format!("allowed, want {want_status} {}", want["body"]));
            }
            let auth = &want["body"]["auth"];
            if matches!(expected, Expected::Status(_)) {
                // The reference denied; claw-authz allows an authenticated agent here.
                return match header_value(response, "x-claw-agent-did") {
                    Some(_) => Ok(()),
                    None => Err("allowed without an identity".into()),
                };
            }
            if auth.is_null() {
                return match header_value(response, "x-claw-agent-did") {
                    Some(_) => Err("identity headers on an unauthenticated allow".into()),
                    None => Ok(()),
                };
            }
            for (field, header) in [
                ("agentDid", "x-claw-agent-did"),
                ("ownerDid", "x-claw-owner-did"),
                ("aitJti", "x-claw-ait-jti"),
                ("issuer", "x-claw-issuer"),
                ("cnfPublicKey", "x-claw-agent-public-key"),
            ] {
                let got = header_value(response, header);
                if got.as_deref() != auth[field].as_str() {
                    return Err(format!("{header} = {got:?}, want {}", auth[field]));
                }
            }
            Ok(())
        }
        _ => Err("no denied or ok response".into()),
    }
}

/// What a run found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Every scenario in the file.
    pub total: usize,
}

/// The default vectors file, or `CLAW_CONFORMANCE_VECTORS`.
pub fn vectors_path() -> std::path::PathBuf {
    std::env::var("CLAW_CONFORMANCE_VECTORS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| super::vectors_dir().join("middleware.json"))
}

/// Runs every scenario of `path`, printing a line each and the summary.
pub async fn run(path: &Path) -> Summary {
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    let deviations = deviations();
    let mut summary = Summary::default();
    for scenario in file["scenarios"].as_array().unwrap() {
        summary.total += 1;
        let id = scenario["id"].as_str().unwrap();
        let expected = deviations.get(id).unwrap_or(&Expected::Reference);
        if matches!(expected, Expected::NotRun) {
            println!("SKIP {id} (docs/deviations.md: not run)");
            summary.skipped += 1;
            continue;
        }
        match run_scenario(scenario, expected).await {
            Ok(()) => {
                let note = if matches!(expected, Expected::Status(_)) {
                    " (docs/deviations.md column)"
                } else {
                    ""
                };
                println!("PASS {id}{note}");
                summary.passed += 1;
            }
            Err(e) => {
                println!("FAIL {id}: {e}");
                summary.failed += 1;
            }
        }
    }
    println!(
        "conformance: {} passed, {} failed, {} skipped",
        summary.passed, summary.failed, summary.skipped
    );
    summary
}

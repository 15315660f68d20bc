//! What operators see: OTLP metrics and spans (an in-process receiver), Prometheus scraping the
//! real `/metrics` (Debian's `prometheus`), the alert rules (`promtool`), the dashboard's
//! queries, clock-skew warnings and `x-claw-server-time`.
//!
//! The last test prints the closing figure (`-- --nocapture`, best with `--release`): CPU per
//! check of two real sidecar processes, telemetry fully on vs off, in one run.

mod support;

use std::sync::Arc;
use std::time::Duration;

use claw_authz::clock::{Clock, ManualClock};
use claw_authz::config::TelemetryConfig;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use support::otlp::Sink;
use support::registry::Reply;
use support::server::Running;
use support::world::{Agent, NOW_MS, World, denied, outcome};
use tracing_subscriber::layer::SubscriberExt;

const ALLOWED: &str = "200";
const UNAVAILABLE: &str = "503 PROXY_AUTH_DEPENDENCY_UNAVAILABLE";

fn message(agent: &Agent, clock: &dyn Clock, nonce: &str, token: &str) -> CheckRequest {
    agent.message(clock.now_ms(), nonce, token)
}

/// Opens the validate breaker: five checks with fresh tokens against a registry answering 500.
async fn open_validate_breaker(s: &mut Running, w: &World, clock: &ManualClock) {
    w.validate.set(vec![Reply::Status(500)]);
    for i in 0..5 {
        let r = s
            .check(message(
                &w.alpha,
                clock,
                &format!("o-{i}"),
                &format!("t-o-{i}"),
            ))
            .await;
        assert_eq!(outcome(&r), UNAVAILABLE);
    }
}

/// The value of the one sample of `name` whose labels hold every piece of `labels`.
fn sample(page: &str, name: &str, labels: &[&str]) -> f64 {
    let mut found = page.lines().filter(|line| {
        let series = line.split(' ').next().unwrap_or("");
        let base = series.split('{').next().unwrap_or("");
        base == name && labels.iter().all(|l| series.contains(l))
    });
    let line = found
        .next()
        .unwrap_or_else(|| panic!("no {name} {labels:?}:\n{page}"));
    assert!(found.next().is_none(), "one {name} {labels:?}");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn metrics_text(s: &Running) -> String {
    reqwest::get(format!("http://{}/metrics", s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A span's attributes as (key, string value) pairs, in order.
fn attributes(span: &Span) -> Vec<(String, String)> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An in-process OTLP receiver, and the tracer provider and layer exporting spans to it with
/// `percent` of root traces sampled (as the server's `telemetry` section configures them).
async fn span_export(
    percent: u64,
) -> (
    Sink,
    String,
    opentelemetry_sdk::trace::SdkTracerProvider,
    impl tracing_subscriber::Layer<tracing_subscriber::Registry>,
) {
    let (sink, endpoint) = Sink::start().await;
    let telemetry = TelemetryConfig {
        otlp_endpoint: Some(endpoint.clone()),
        export_interval: std::time::Duration::from_secs(3_600),
        trace_sample_percent: percent,
        service_name: "claw-authz-test".into(),
    };
    let tracer = claw_authz::telemetry::tracer_provider(&telemetry)
        .unwrap()
        .unwrap();
    let layer = {
        use opentelemetry::trace::TracerProvider;
        claw_authz::telemetry::span_layer(tracer.tracer("claw-authz"))
    };
    (sink, endpoint, tracer, layer)
}

#[tokio::test]
async fn otlp_gets_the_metrics_and_spans_of_a_breaker_opening_and_closing() {
    let (sink, endpoint, tracer, layer) = span_export(100).await;
    // `#[tokio::test]` runs every task on this thread, so a thread default sees them all.
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let w = World::new("otlp").await;
    let clock = ManualClock::at(NOW_MS);
    let extra = format!("telemetry:\n  otlp_endpoint: {endpoint}\n  export_interval_ms: 3600000\n");
    let mut s = support::server::start(&w.yaml(&extra), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    open_validate_breaker(&mut s, &w, &clock).await;
    let r = s.check(message(&w.alpha, &clock, "o-open", "t-open")).await;
    assert_eq!(outcome(&r), UNAVAILABLE);
    clock.advance_ms(30_000);
    w.validate.set(vec![Reply::Status(204)]);
    // The probe, in a trace Envoy started.
    let mut call = tonic::Request::new(message(&w.alpha, &clock, "o-probe", "t-probe"));
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let parent_id = "b7ad6b7169203331";
    call.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    let r = s.client.check(call).await.unwrap().into_inner();
    assert_eq!(outcome(&r), ALLOWED);

    // Flushing blocks until the export is done; the export needs this thread's runtime.
    let app = s.app.clone();
    tokio::task::spawn_blocking(move || app.telemetry.flush())
        .await
        .unwrap();
    let t = tracer.clone();
    tokio::task::spawn_blocking(move || t.force_flush())
        .await
        .unwrap()
        .unwrap();

    let v = |metric: &str, labels: &[(&str, &str)]| sink.value(metric, labels);
    let validate = ("endpoint", "validate");
    assert_eq!(
        v(
            "claw_authz_breaker_transitions",
            &[validate, ("to", "open")]
        ),
        Some(1.0)
    );
    assert_eq!(
        v(
            "claw_authz_breaker_transitions",
            &[validate, ("to", "half_open")]
        ),
        Some(1.0)
    );
    assert_eq!(
        v(
            "claw_authz_breaker_transitions",
            &[validate, ("to", "closed")]
        ),
        Some(1.0)
    );
    assert_eq!(v("claw_authz_breaker_state", &[validate]), Some(0.0));
    assert_eq!(
        v("claw_authz_breaker_state", &[("endpoint", "keys")]),
        Some(0.0)
    );
    let requests = |o: &str| v("claw_authz_registry_requests", &[validate, ("outcome", o)]);
    assert_eq!(requests("error_status"), Some(5.0));
    assert_eq!(requests("circuit_open"), Some(1.0));
    assert_eq!(requests("ok"), Some(1.0));
    let decisions = |d: &str, c: &str| v("claw_authz_decisions", &[("decision", d), ("code", c)]);
    assert_eq!(
        decisions("deny", "PROXY_AUTH_DEPENDENCY_UNAVAILABLE"),
        Some(6.0)
    );
    assert_eq!(decisions("allow", "none"), Some(1.0));
    assert_eq!(
        v(
            "claw_authz_cache_results",
            &[("cache", "access"), ("result", "miss")]
        ),
        Some(7.0)
    );
    for name in [
        "claw_authz_check_duration",
        "claw_authz_stage_duration",
        "claw_authz_registry_request_duration",
        "claw_authz_nonce_operations",
        "claw_authz_clock_skew",
        "claw_authz_data_age",
    ] {
        assert!(sink.metric_names().iter().any(|n| n == name), "{name}");
    }

    let spans = sink.spans();
    let check = spans
        .iter()
        .find(|s| s.name == "check" && hex(&s.trace_id) == trace_id)
        .expect("a check span in Envoy's trace");
    assert_eq!(hex(&check.parent_span_id), parent_id);
    // A server span with its decision, and nothing that is the same on every Check (source
    // location, thread, target, busy/idle times: issue 20).
    assert_eq!(check.kind, SpanKind::Server as i32);
    assert_eq!(
        attributes(check),
        [("decision".to_owned(), "allow".to_owned())]
    );
    let registry = spans
        .iter()
        .find(|s| s.name == "registry" && s.parent_span_id == check.span_id)
        .expect("the validate call as a child span");
    assert_eq!(hex(&registry.trace_id), trace_id);
    assert_eq!(registry.kind, SpanKind::Client as i32);
    assert_eq!(
        attributes(registry),
        [("endpoint".to_owned(), "validate".to_owned())]
    );
    s.stop().await;
}

/// Counts the spans `tracing` opens, by name (what tracing-opentelemetry would have to build).
#[derive(Clone, Default)]
struct Opened(Arc<std::sync::Mutex<Vec<&'static str>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Opened {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.lock().unwrap().push(attrs.metadata().name());
    }
}

impl Opened {
    fn count(&self, name: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|n| **n == name)
            .count()
    }
}

/// Issue 20: a Check that is not sampled opens no span at all (an unsampled span cost almost
/// what an exported one does), and neither do its registry calls; a Check in a sampled trace
/// Envoy started is exported with its registry call as a child, whatever the percentage.
#[tokio::test]
async fn a_check_not_sampled_opens_no_span_and_a_sampled_parent_is_followed() {
    let (sink, endpoint, tracer, layer) = span_export(0).await;
    let opened = Opened::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(layer)
            .with(opened.clone()),
    );

    let w = World::new("sampling").await;
    let clock = ManualClock::at(NOW_MS);
    let extra = format!(
        "telemetry:\n  otlp_endpoint: {endpoint}\n  export_interval_ms: 3600000\n  trace_sample_percent: 0\n"
    );
    let mut s = support::server::start(&w.yaml(&extra), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    let registry_spans_at_start = opened.count("registry");
    // Fresh tokens: every check calls the registry's validate endpoint.
    for i in 0..3 {
        let r = s
            .check(message(
                &w.alpha,
                &clock,
                &format!("s-{i}"),
                &format!("t-s-{i}"),
            ))
            .await;
        assert_eq!(outcome(&r), ALLOWED);
    }
    let traced = |nonce: &str, token: &str, trace_id: &str, flags: &str| {
        let mut call = tonic::Request::new(message(&w.alpha, &clock, nonce, token));
        call.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-b7ad6b7169203331-{flags}")
                .parse()
                .unwrap(),
        );
        call
    };
    let unsampled = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = s
        .client
        .check(traced("s-off", "t-s-off", unsampled, "00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome(&r), ALLOWED);
    assert_eq!(opened.count("check"), 0, "no span for an unsampled check");
    assert_eq!(
        opened.count("registry"),
        registry_spans_at_start,
        "no span for the registry calls of unsampled checks"
    );
    assert_eq!(w.validate.calls(), 4);

    let sampled = "0af7651916cd43dd8448eb211c80319c";
    let r = s
        .client
        .check(traced("s-on", "t-s-on", sampled, "01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome(&r), ALLOWED);
    assert_eq!(opened.count("check"), 1);

    let t = tracer.clone();
    tokio::task::spawn_blocking(move || t.force_flush())
        .await
        .unwrap()
        .unwrap();
    let spans = sink.spans();
    let checks: Vec<_> = spans.iter().filter(|s| s.name == "check").collect();
    assert_eq!(checks.len(), 1, "only the check in the sampled trace");
    assert_eq!(hex(&checks[0].trace_id), sampled);
    let registry: Vec<_> = spans.iter().filter(|s| s.name == "registry").collect();
    assert_eq!(registry.len(), 1, "only that check's validate call");
    assert_eq!(registry[0].parent_span_id, checks[0].span_id);
    s.stop().await;
}

#[tokio::test]
async fn prometheus_scrapes_an_open_validate_breaker() {
    let w = World::new("prometheus").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = support::server::start(&w.yaml(""), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    open_validate_breaker(&mut s, &w, &clock).await;
    assert!(
        metrics_text(&s)
            .await
            .contains(r#"claw_authz_breaker_state{endpoint="validate"} 1"#)
    );

    let dir = w.dir.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: claw-authz\n    static_configs:\n      - targets: ['{}']\n",
            s.admin
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus (Debian's package; `bash .ci/setup` installs it)");
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        "claw_authz_breaker_state%7Bendpoint%3D%22validate%22%7D"
    );
    let started = tokio::time::Instant::now();
    let value = loop {
        if let Ok(r) = reqwest::get(&query).await
            && let Ok(text) = r.text().await
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(value) = v["data"]["result"][0]["value"][1].as_str()
        {
            break value.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no scrape");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(value, "1");
    s.stop().await;
}

/// Metric names a PromQL text refers to.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("claw_authz_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names.sort();
    names.dedup();
    names
}

#[tokio::test]
async fn the_alert_rules_pass_promtool_and_every_dashboard_metric_is_exported() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("k8s/alerts.yaml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian's prometheus package)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Every series the dashboard and the rules query exists in a live /metrics page.
    let w = World::new("dashboard").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = support::server::start(&w.yaml(""), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    let r = s.check(message(&w.alpha, &clock, "d-1", "t-d")).await;
    assert_eq!(outcome(&r), ALLOWED);
    s.app
        .pipeline
        .crl
        .refresh_if_due(&s.app.pipeline.keys)
        .await;
    let page = metrics_text(&s).await;
    let exported = |name: &str| {
        page.lines()
            .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
    };
    let dashboard = std::fs::read_to_string(root.join("k8s/grafana-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    let rules = std::fs::read_to_string(&rules).unwrap();
    for name in metric_names(&dashboard)
        .into_iter()
        .chain(metric_names(&rules))
    {
        // Panels query histograms by their buckets.
        let series = name
            .strip_suffix("_bucket")
            .map_or(name.clone(), |b| format!("{b}_bucket"));
        assert!(exported(&series), "{series} is not exported:\n{page}");
    }
    s.stop().await;
}

#[tokio::test]
async fn skew_is_warned_before_it_denies_and_a_skew_denial_tells_the_server_time() {
    let (logs, _guard) = support::logs::capture();
    let w = World::new("skew").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = support::server::start(&w.yaml(""), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    let at = |offset_secs: i64| NOW_MS.checked_add_signed(offset_secs * 1000).unwrap();
    let get = |ms: u64, nonce: &str| w.alpha.request(ms, "GET", "/v1/x", b"", nonce, &[]);

    assert_eq!(outcome(&s.check(get(at(-30), "k-1")).await), ALLOWED);
    assert_eq!(logs.count("agent clock skew is close to the limit"), 0);
    assert_eq!(outcome(&s.check(get(at(-250), "k-2")).await), ALLOWED);
    assert_eq!(logs.count("agent clock skew is close to the limit"), 1);
    let page = metrics_text(&s).await;
    assert!(page.contains("claw_authz_clock_skew_warnings_total 1\n"));
    // The skews of both allowed requests (30 s and 250 s), and each stage both passed, once
    // per check, under its own label.
    assert_eq!(
        sample(&page, "claw_authz_clock_skew_seconds_sum", &[]),
        280.0
    );
    let skew_bucket = |le: &str| {
        let le = format!("le=\"{le}\"");
        sample(&page, "claw_authz_clock_skew_seconds_bucket", &[&le])
    };
    assert_eq!((skew_bucket("30"), skew_bucket("250")), (1.0, 2.0));
    // Fewer values than a run: each thread's held values were taken in for the scrape, by a
    // callback whose own instrument is never exported.
    assert!(!page.contains("runs_taken_in"), "{page}");
    for stage in ["policy", "token", "body", "proof", "revocation", "replay"] {
        let label = format!("stage=\"{stage}\"");
        let count = sample(&page, "claw_authz_stage_duration_seconds_count", &[&label]);
        assert_eq!(count, 2.0, "{stage}:\n{page}");
    }

    let r = s.check(get(at(301), "k-3")).await;
    let (status, headers, body) = denied(&r);
    assert_eq!(status, 401);
    assert!(
        headers.contains(&("x-claw-server-time".into(), (NOW_MS / 1000).to_string())),
        "{headers:?}"
    );
    assert!(body.starts_with(
        r#"{"error":{"code":"PROXY_AUTH_TIMESTAMP_SKEW","message":"X-Claw-Timestamp is outside the allowed skew window","requestId":"#
    ));
    assert!(
        body.ends_with(r#""details":{"maxSkewSeconds":300}}}"#),
        "{body}"
    );
    // Other denials do not carry it.
    let r = s.check(get(at(0), "k-2")).await;
    assert!(matches!(
        r.http_response,
        Some(HttpResponse::DeniedResponse(_))
    ));
    assert!(!denied(&r).1.iter().any(|(k, _)| k == "x-claw-server-time"));
    s.stop().await;
}

/// The closing figure of issue 8: CPU per check of two real sidecar processes on one workload,
/// one with telemetry fully on (OTLP metrics every second and every span exported, to an
/// in-process receiver; Prometheus scraped), one with it off. `CLAW_FIGURE_CHECKS` per sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_cpu_per_check_with_telemetry_on_vs_off() {
    let checks: usize = std::env::var("CLAW_FIGURE_CHECKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let (sink, endpoint) = Sink::start().await;
    let w = World::live("cpu", 0).await;
    let base = "nonce:\n  store: memory\nlisten:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\nlog:\n  format: json\n";
    let on = format!(
        "{base}telemetry:\n  otlp_endpoint: {endpoint}\n  export_interval_ms: 1000\n  trace_sample_percent: 100\n"
    );
    let mut sidecars = Vec::new();
    for (name, extra) in [("off", base.to_owned()), ("on", on)] {
        let path = w.dir.join(format!("telemetry-{name}.yaml"));
        std::fs::write(&path, w.yaml(&extra)).unwrap();
        let sidecar = support::process::Sidecar::start(&path).await;
        let client = sidecar.client().await;
        sidecars.push((name, sidecar, client, Duration::ZERO));
    }
    let clock = claw_authz::clock::SystemClock;
    // Rounds of 200 checks, alternating between the two, 8 in flight.
    let mut n = 0;
    for _round in 0..checks / 200 {
        for (name, sidecar, client, cpu) in sidecars.iter_mut() {
            let requests: Vec<CheckRequest> = (0..200)
                .map(|i| {
                    w.alpha.request(
                        clock.now_ms(),
                        "GET",
                        "/v1/x",
                        b"",
                        &format!("{name}-{n}-{i}"),
                        &[],
                    )
                })
                .collect();
            n += 1;
            let before = sidecar.cpu();
            support::world::drain(client, requests, 8, ALLOWED).await;
            *cpu += sidecar.cpu() - before;
        }
    }
    let per_check = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (checks as f64);
    let (off, on) = (per_check(sidecars[0].3), per_check(sidecars[1].3));
    assert!(!sink.spans().is_empty(), "spans were exported");
    println!(
        "figure: CPU per check, {checks} checks each: telemetry off {off:.1} us, fully on {on:.1} us, ratio {:.3}",
        on / off
    );
}

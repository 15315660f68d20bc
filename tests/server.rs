//! The real server on loopback: allow headers, removed headers, exact deny bodies, health
//! transitions, shadow mode, the admin endpoints, body handling, and config errors.

mod support;

use std::sync::Arc;

use claw_authz::clock::ManualClock;
use claw_authz::dev::check::check_request;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use serde_json::json;
use support::registry::Reply;
use support::world::{ISSUER, NOW_MS, World, denied, ok_headers};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn allow_overwrites_identity_headers_and_removes_credentials() {
    let w = World::new("allow").await;
    let mut s = support::server::start(&w.yaml(""), Arc::new(ManualClock::at(NOW_MS))).await;
    let body = br#"{"message":"hi"}"#;
    let req = w.signed(
        &w.alpha,
        "POST",
        "/hooks/message",
        body,
        "n-1",
        &[
            ("x-claw-agent-access", "clw_agt_token"),
            ("x-claw-agent-did", "spoofed"),
        ],
    );
    let r = s.check(req).await;
    assert_eq!(r.status.as_ref().unwrap().code, 0);
    let (headers, removed) = ok_headers(&r);
    let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
    let alpha_did = w.registry.agent_did("01KDVA7EC0AGENTA0000000001");
    assert_eq!(
        headers,
        vec![
            ("x-claw-agent-did".into(), alpha_did, overwrite, false),
            (
                "x-claw-owner-did".into(),
                w.registry.human_did("01KDRQTQC0HVMAN00000000001"),
                overwrite,
                false
            ),
            (
                "x-claw-ait-jti".into(),
                "01KDVA7EC1AT00000000000001".into(),
                overwrite,
                false
            ),
            ("x-claw-issuer".into(), ISSUER.into(), overwrite, false),
            (
                "x-claw-agent-public-key".into(),
                w.alpha.key.public_b64(),
                overwrite,
                false
            ),
        ]
    );
    // The credentials, and the other profiles' identity headers (so a client cannot send them).
    assert_eq!(
        removed,
        [
            "authorization",
            "x-claw-proof",
            "x-claw-agent-access",
            "dpop",
            "x-claw-agent-id",
            "x-claw-agent-roles",
            "x-claw-agent-permissions",
            "x-claw-token-id",
            "x-claw-trust-score",
            "x-claw-signature-agent",
            "x-claw-signature-keyid",
            "x-claw-signature-components"
        ]
    );
    // The registry saw the exact validate call.
    let call = &w.validate.recorded()[0];
    assert_eq!(call.method, "POST");
    assert!(
        call.headers
            .contains(&("x-claw-agent-access".into(), "clw_agt_token".into()))
    );
    assert_eq!(
        call.body,
        format!(
            r#"{{"agentDid":"{}","aitJti":"01KDVA7EC1AT00000000000001"}}"#,
            w.registry.agent_did("01KDVA7EC0AGENTA0000000001")
        )
    );
    let meta = r.dynamic_metadata.unwrap().fields;
    assert_eq!(
        meta["decision"].kind,
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
            "allow".into()
        ))
    );
    s.stop().await;
}

#[tokio::test]
async fn padded_header_values_are_trimmed_so_a_padded_replay_is_still_a_replay() {
    let w = World::new("padded").await;
    let mut s = support::server::start(&w.yaml(""), Arc::new(ManualClock::at(NOW_MS))).await;
    let first = w.signed(&w.alpha, "GET", "/v1/x", b"", "nonce-7", &[]);
    assert!(matches!(
        s.check(first).await.http_response,
        Some(HttpResponse::OkResponse(_))
    ));
    // The same proof with the nonce and timestamp padded: it verifies (values are trimmed before
    // the canonical string) and is refused as a replay (trimmed before the replay key too).
    let mut again = w.signed(&w.alpha, "GET", "/v1/x", b"", "nonce-7", &[]);
    let headers = &mut again
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap()
        .headers;
    let nonce = headers["x-claw-nonce"].clone();
    headers.insert("x-claw-nonce".into(), format!("  {nonce}\t"));
    let ts = headers["x-claw-timestamp"].clone();
    headers.insert("x-claw-timestamp".into(), format!(" {ts} "));
    let (status, _, body) = denied(&s.check(again).await);
    assert_eq!(status, 401);
    assert!(body.contains("PROXY_AUTH_REPLAY"), "{body}");
    s.stop().await;
}

#[tokio::test]
async fn deny_is_the_exact_envelope_with_headers() {
    let w = World::new("deny").await;
    let mut s = support::server::start(&w.yaml(""), Arc::new(ManualClock::at(NOW_MS))).await;
    let req = w.signed(
        &w.stranger,
        "POST",
        "/v1/x",
        b"",
        "n-2",
        &[("x-request-id", "req-abcdefgh")],
    );
    let r = s.check(req).await;
    assert_eq!(r.status.as_ref().unwrap().code, 7);
    let (status, headers, body) = denied(&r);
    assert_eq!(status, 403);
    let stranger = w.registry.agent_did("01KDVA7EC0AGENTS0000000001");
    assert_eq!(
        body,
        format!(
            r#"{{"error":{{"code":"PROXY_AUTH_FORBIDDEN","message":"Verified caller is not trusted","requestId":"req-abcdefgh","details":{{"agentDid":"{stranger}"}}}}}}"#
        )
    );
    assert_eq!(
        headers,
        vec![
            ("content-type".into(), "application/json".into()),
            ("x-request-id".into(), "req-abcdefgh".into()),
        ]
    );
    // 401s challenge with `www-authenticate: Claw`; a malformed request id is replaced.
    let r = s
        .check(check_request(
            "GET",
            "/v1/x",
            &[("x-request-id", "bad id!")],
            b"",
        ))
        .await;
    let (status, headers, body) = denied(&r);
    assert_eq!(status, 401);
    assert_eq!(headers[2], ("www-authenticate".into(), "Claw".into()));
    let rid = &headers[1].1;
    assert_eq!(rid.len(), 36, "a UUID replaces the malformed id");
    assert_eq!(
        body,
        format!(
            r#"{{"error":{{"code":"PROXY_AUTH_MISSING_TOKEN","message":"Authorization header is required","requestId":"{rid}"}}}}"#
        )
    );
    s.stop().await;
}

#[tokio::test]
async fn health_is_not_serving_until_keys_load() {
    let w = World::new("health").await;
    w.keys.set(vec![Reply::Status(503)]);
    let s = support::server::start(&w.yaml(""), Arc::new(ManualClock::at(NOW_MS))).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let probe = health.clone();
    let serving = |want: ServingStatus| {
        let mut health = probe.clone();
        let admin = s.admin;
        async move {
            let request = tonic_health::pb::HealthCheckRequest {
                service: "envoy.service.auth.v3.Authorization".into(),
            };
            let got = health.check(request).await.unwrap().into_inner();
            assert_eq!(got.status, want as i32);
            let readyz = reqwest::get(format!("http://{admin}/readyz"))
                .await
                .unwrap();
            let ready = want == ServingStatus::Serving;
            assert_eq!(readyz.status(), if ready { 200 } else { 503 });
        }
    };
    serving(ServingStatus::NotServing).await;
    let healthz = reqwest::get(format!("http://{}/healthz", s.admin))
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);

    // The registry recovers; the warm-up retries and the service turns SERVING.
    w.keys
        .set(vec![Reply::Body(200, w.registry.keys_document())]);
    s.wait_ready().await;
    let watch = tonic_health::pb::HealthCheckRequest { service: "".into() };
    let mut stream = health.watch(watch).await.unwrap().into_inner();
    loop {
        let msg = stream.message().await.unwrap().unwrap();
        if msg.status == ServingStatus::Serving as i32 {
            break;
        }
    }
    drop(stream);
    serving(ServingStatus::Serving).await;
    s.stop().await;
}

/// Issue 19: a replica is not ready until its first CRL refresh has ended: one that served
/// before it would let a revoked agent through for that moment (its stale policy has nothing to
/// keep yet). With the CRL endpoint answering only after a pause, health stays NOT_SERVING and
/// `/readyz` 503 while the keys are already loaded, then both turn ready, and the revoked agent
/// is denied from the first check.
#[tokio::test]
async fn a_replica_is_not_ready_before_its_first_crl() {
    let w = World::new("crl-first").await;
    let alpha = (w.registry.agent_did(&w.alpha.ulid), w.alpha.jti.clone());
    let crl = w
        .registry
        .sign_crl(&[alpha], NOW_MS / 1000 - 10, "01KDVA7EC1CRL0000000000001");
    let body = serde_json::json!({ "crl": crl }).to_string();
    // A slow registry: the CRL comes 800 ms after it is asked for.
    let slow = Reply::Delay(
        std::time::Duration::from_millis(800),
        Box::new(Reply::Body(200, body)),
    );
    w.crl.set(vec![slow]);
    let s = support::server::start(&w.yaml(""), Arc::new(ManualClock::at(NOW_MS))).await;
    s.wait_ready().await;
    let readyz = reqwest::get(format!("http://{}/readyz", s.admin))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503, "keys loaded, CRL not yet tried");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let watch = tonic_health::pb::HealthCheckRequest { service: "".into() };
    let mut stream = health.watch(watch).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::NotServing as i32);
    let next = stream.message().await.unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::Serving as i32);
    drop(stream);
    assert_eq!(s.app.pipeline.crl.refresh_counts(), (1, 0));
    let readyz = reqwest::get(format!("http://{}/readyz", s.admin))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    let mut s = s;
    let r = s
        .check(w.signed(&w.alpha, "GET", "/v1/x", b"", "n-1", &[]))
        .await;
    assert_eq!(support::world::outcome(&r), "401 PROXY_AUTH_REVOKED");
    s.stop().await;
}

#[tokio::test]
async fn time_endpoint_answers_the_server_clock() {
    let w = World::new("time").await;
    let s = support::server::start(&w.yaml(""), Arc::new(ManualClock::at(NOW_MS + 1234))).await;
    let text = reqwest::get(format!("http://{}/v1/time", s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({"unixSeconds": 1_767_225_601u64, "unixMillis": NOW_MS + 1234})
    );
    s.stop().await;
}

#[tokio::test]
async fn shadow_allows_and_reports_the_would_be_denial() {
    let w = World::new("shadow").await;
    let routes =
        "routes:\n  - {prefix: /canary/, mode: shadow}\n  - {path: /health, mode: bypass}\n";
    let mut s = support::server::start(&w.yaml(routes), Arc::new(ManualClock::at(NOW_MS))).await;
    let r = s
        .check(check_request(
            "GET",
            "/canary/x",
            &[("x-claw-agent-did", "spoofed")],
            b"",
        ))
        .await;
    let (headers, removed) = ok_headers(&r);
    assert_eq!(headers.len(), 1);
    assert_eq!(
        (headers[0].0.as_str(), headers[0].1.as_str()),
        ("x-claw-authz-shadow-denial", "PROXY_AUTH_MISSING_TOKEN")
    );
    assert!(
        removed.contains(&"x-claw-agent-did".to_owned()),
        "unauthenticated allows strip identity headers"
    );
    // A valid request on a shadow route is an ordinary authenticated allow.
    let req = w.signed(&w.alpha, "GET", "/canary/x", b"", "n-3", &[]);
    let (headers, _) = ok_headers(&s.check(req).await);
    assert_eq!(headers[0].0, "x-claw-agent-did");
    // The same bad request on an enforced route is denied.
    let r = s.check(check_request("GET", "/other", &[], b"")).await;
    assert_eq!(denied(&r).0, 401);
    s.stop().await;
}

#[tokio::test]
async fn context_extensions_select_a_named_policy() {
    let w = World::new("ctx").await;
    let policies = "policies:\n  open:\n    mode: bypass\n";
    let mut s = support::server::start(&w.yaml(policies), Arc::new(ManualClock::at(NOW_MS))).await;
    let mut req = check_request("GET", "/private", &[], b"");
    let attrs = req.attributes.as_mut().unwrap();
    attrs
        .context_extensions
        .insert("claw_policy".into(), "open".into());
    assert!(matches!(
        s.check(req.clone()).await.http_response,
        Some(HttpResponse::OkResponse(_))
    ));
    req.attributes
        .as_mut()
        .unwrap()
        .context_extensions
        .insert("claw_policy".into(), "missing".into());
    let (status, _, body) = denied(&s.check(req).await);
    assert_eq!(status, 500);
    assert!(body.contains("PROXY_AUTH_POLICY_UNKNOWN"));
    s.stop().await;
}

#[tokio::test]
async fn partial_or_missing_bodies_are_denied_never_guessed() {
    let w = World::new("body").await;
    let mut s = support::server::start(&w.yaml(""), Arc::new(ManualClock::at(NOW_MS))).await;
    let body = b"0123456789";
    let mut req = w.signed(
        &w.alpha,
        "POST",
        "/v1/x",
        body,
        "n-4",
        &[("x-envoy-auth-partial-body", "true")],
    );
    let (status, _, text) = denied(&s.check(req.clone()).await);
    assert_eq!(
        (status, text.contains("PROXY_AUTH_BODY_INCOMPLETE")),
        (413, true)
    );
    // The body announced by content-length never arrived (with_request_body is off).
    let http = req
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.headers.remove("x-envoy-auth-partial-body");
    http.raw_body.clear();
    let (status, _, text) = denied(&s.check(req).await);
    assert_eq!(
        (status, text.contains("PROXY_AUTH_BODY_NOT_FORWARDED")),
        (500, true)
    );
    s.stop().await;
}

#[test]
fn config_errors_are_all_listed_and_exit_64() {
    let dir = std::env::temp_dir().join(format!("claw-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "registry:\n  url: ftp://nope\n  timeout_ms: 0\ncrl:\n  stale_behavior: sometimes\nnonce:\n  capacity: lots\nlistne:\n  grpc: x\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claw-authz"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env("CLAW_AUTHZ_PROOF__MAX_SKEW_SECS", "-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "config error: 6 problem(s):",
        "registry.url: must be an http(s) URL",
        "registry.timeout_ms: must be an integer from 1 to 600000, got 0",
        "crl.stale_behavior: must be one of fail-open, fail-closed, got sometimes",
        "nonce.capacity: must be an integer",
        "listne: unknown setting",
        "proof.max_skew_secs: must be an integer from 1 to 3600, got -1",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // serve refuses the same file the same way, before binding anything.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claw-authz"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    std::fs::write(&path, "registry:\n  url: https://registry.example.com\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claw-authz"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("issuer: https://registry.example.com"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_once_prints_every_listed_outcome() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claw-authz"))
        .args(["demo", "--once"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for row in [
        ("valid request", "allow", "200", "-"),
        ("replayed request", "deny", "401", "PROXY_AUTH_REPLAY"),
        ("tampered body", "deny", "401", "PROXY_AUTH_INVALID_PROOF"),
        (
            "skewed clock (-400 s)",
            "deny",
            "401",
            "PROXY_AUTH_TIMESTAMP_SKEW",
        ),
        ("unknown agent", "deny", "403", "PROXY_AUTH_FORBIDDEN"),
        ("revoked agent", "deny", "401", "PROXY_AUTH_REVOKED"),
        (
            "missing access token",
            "deny",
            "401",
            "PROXY_AGENT_ACCESS_REQUIRED",
        ),
        ("health check (bypass)", "allow", "200", "-"),
        ("signed (RFC 9421)", "allow", "200", "-"),
    ] {
        let line = table
            .lines()
            .find(|l| l.starts_with(row.0))
            .unwrap_or_else(|| panic!("no row {:?} in:\n{table}", row.0));
        let cells: Vec<&str> = line[24..].split_whitespace().collect();
        assert_eq!(cells, [row.1, row.2, row.3], "{line}");
    }
    // The outage story: the registry hangs, the breakers open and a known agent is allowed on
    // every check; a pushed revocation applies at once; the registry returns, the breakers close.
    let story: Vec<&str> = table.lines().map(str::trim).collect();
    let down = story
        .iter()
        .find_map(|l| l.strip_prefix("known agent beta: "))
        .and_then(|l| l.split_once(" checks allowed"))
        .map(|(counts, _)| counts.split(" of ").collect::<Vec<_>>())
        .unwrap_or_else(|| panic!("no outage line in:\n{table}"));
    assert_eq!(down[0], down[1], "every check allowed while down: {table}");
    for line in [
        "breakers: keys open, crl open, validate open",
        "agent alpha before: 200; right after the event: 401 PROXY_AUTH_REVOKED",
        "breakers: keys closed, crl closed, validate closed",
        "known agent beta: 200 -",
    ] {
        assert!(story.contains(&line), "no {line:?} in:\n{table}");
    }
}

#[tokio::test]
async fn a_hanging_registry_never_outlives_envoys_deadline() {
    let w = World::new("deadline").await;
    w.validate.set(vec![Reply::Hang]);
    // The configured registry timeout (5 s) is far longer than the Check's budget.
    let mut s = support::server::start(&w.yaml(""), Arc::new(ManualClock::at(NOW_MS))).await;
    let req = w.signed(
        &w.alpha,
        "POST",
        "/hooks/message",
        b"{}",
        "n-deadline",
        &[("x-claw-agent-access", "clw_agt_t")],
    );
    let mut call = tonic::Request::new(req);
    call.set_timeout(std::time::Duration::from_millis(400));
    // The client enforces grpc-timeout itself: an Ok here means claw-authz answered within it.
    let response = s
        .client
        .check(call)
        .await
        .expect("answered before the deadline")
        .into_inner();
    let (status, _, body) = denied(&response);
    assert_eq!(status, 503);
    assert!(
        body.contains(r#""details":{"reason":"The operation was aborted due to timeout"}"#),
        "{body}"
    );
    assert_eq!(w.validate.calls(), 1);
    s.stop().await;
}

#[tokio::test]
async fn concurrent_identical_validations_share_one_registry_call() {
    let w = World::new("single-flight").await;
    w.validate.set(vec![Reply::Delay(
        std::time::Duration::from_millis(300),
        Box::new(Reply::Status(204)),
    )]);
    let s = support::server::start(&w.yaml(""), Arc::new(ManualClock::at(NOW_MS))).await;
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let req = w.signed(
                &w.alpha,
                "POST",
                "/hooks/message",
                b"{}",
                &format!("n-flight-{i}"),
                &[("x-claw-agent-access", "clw_agt_shared")],
            );
            let mut client = s.client.clone();
            tokio::spawn(async move { client.check(req).await.unwrap().into_inner() })
        })
        .collect();
    for call in calls {
        let response = call.await.unwrap();
        assert!(matches!(
            response.http_response,
            Some(HttpResponse::OkResponse(_))
        ));
    }
    assert_eq!(
        w.validate.calls(),
        1,
        "one registry call for twenty identical validations"
    );
    s.stop().await;
}

/// An allowed agent's answer is encoded once per policy and then shared by its checks: each
/// answer still names its own agent and its own policy, whatever was answered before it.
#[tokio::test]
async fn shared_allow_answers_carry_each_agents_identity_and_each_policys_name() {
    use envoy_types::pb::google::protobuf::value::Kind;
    let w = World::new("shared").await;
    let policies = "policies:\n  partners:\n    mode: enforce\n";
    let mut s = support::server::start(&w.yaml(policies), Arc::new(ManualClock::at(NOW_MS))).await;
    let mut n = 0;
    for _round in 0..3 {
        for agent in [&w.alpha, &w.beta] {
            // The route's own rule, and a named policy chosen by Envoy's context extensions.
            for policy in ["/hooks/message", "partners"] {
                n += 1;
                let access = [("x-claw-agent-access", "clw_agt_token")];
                let nonce = format!("n-{n}");
                let mut req = w.signed(agent, "POST", "/hooks/message", b"{}", &nonce, &access);
                if policy == "partners" {
                    req.attributes
                        .as_mut()
                        .unwrap()
                        .context_extensions
                        .insert("claw_policy".into(), policy.into());
                }
                let r = s.check(req).await;
                assert_eq!(r.status.as_ref().unwrap().code, 0, "check {n}");
                let (headers, removed) = ok_headers(&r);
                assert_eq!(headers[0].0, "x-claw-agent-did");
                assert_eq!(headers[0].1, w.registry.agent_did(&agent.ulid), "check {n}");
                assert_eq!(headers[4].1, agent.key.public_b64(), "check {n}");
                assert_eq!(removed[..2], ["authorization", "x-claw-proof"]);
                let meta = r.dynamic_metadata.unwrap().fields;
                let text = |k: &str| match &meta[k].kind {
                    Some(Kind::StringValue(v)) => v.clone(),
                    other => panic!("{k}: {other:?}"),
                };
                assert_eq!(text("policy"), policy, "check {n}");
                assert_eq!(text("agent_did"), headers[0].1, "check {n}");
            }
        }
    }
    s.stop().await;
}

//! The gRPC listener under load and at shutdown (issue 19): the message size follows
//! `limits.body_bytes`, checks past `limits.concurrent_checks` and connections past
//! `limits.connections` are answered at once and counted, and a shutdown reports NOT_SERVING at
//! once while checks are still answered through `listen.drain_secs`. Through the real server; the
//! connection flood against the real binary, whose resident set it reads. Issue 20: the listener
//! on a Unix domain socket.

mod support;

use std::sync::Arc;
use std::time::Duration;

use claw_authz::clock::ManualClock;
use claw_authz::dev::check::check_request;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use support::registry::Reply;
use support::server::Running;
use support::world::{NOW_MS, World, denied, outcome};
use tokio::io::AsyncWriteExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const ALLOWED: &str = "200";
const OVERLOADED: &str = "503 PROXY_AUTH_DEPENDENCY_UNAVAILABLE";

async fn metrics_text(admin: std::net::SocketAddr) -> String {
    let url = format!("http://{admin}/metrics");
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

async fn started(w: &World, extra: &str, clock: &ManualClock) -> Running {
    let s = support::server::start(&w.yaml(extra), Arc::new(clock.clone())).await;
    s.wait_ready().await;
    s
}

/// Polls `done` (yielding between looks) for up to 10 s.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_oversized_check_gets_resource_exhausted_and_the_server_stays_healthy() {
    let w = World::new("oversized").await;
    let clock = ManualClock::at(NOW_MS);
    // 64 KiB of body, plus 96 KiB for the rest of the message.
    let mut s = started(&w, "limits:\n  body_bytes: 65536\n", &clock).await;
    let over = check_request("POST", "/v1/x", &[], &vec![b'x'; 200 * 1024]);
    let refused = s.client.check(over).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    let within = w.signed(
        &w.alpha,
        "POST",
        "/v1/x",
        &vec![b'y'; 64 * 1024],
        "n-1",
        &[],
    );
    assert_eq!(outcome(&s.check(within).await), ALLOWED);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = health.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(status.into_inner().status(), ServingStatus::Serving);
    let page = metrics_text(s.admin).await;
    assert!(
        page.contains("claw_authz_load_shed_total{limit=\"message_size\"} 1\n"),
        "{page}"
    );
    s.stop().await;
}

#[tokio::test]
async fn checks_past_the_concurrency_limit_are_answered_at_once_with_503() {
    let w = World::new("shed-checks").await;
    // The access-token route waits on the registry's validate call, which hangs.
    w.validate.set(vec![Reply::Hang]);
    let clock = ManualClock::at(NOW_MS);
    let extra = "limits:\n  concurrent_checks: 2\n";
    let s = support::server::start(
        &w.yaml_with("  request_timeout_ms: 60000\n", extra),
        Arc::new(clock.clone()),
    )
    .await;
    s.wait_ready().await;
    let mut hanging = Vec::new();
    for i in 0..2 {
        let mut client = s.client.clone();
        let request = w
            .alpha
            .message(NOW_MS, &format!("h-{i}"), &format!("clw_agt_{i}"));
        hanging.push(tokio::spawn(async move { client.check(request).await }));
    }
    eventually("two checks waiting on the registry", async || {
        w.validate.calls() == 2
    })
    .await;

    let mut client = s.client.clone();
    let third = w.signed(&w.beta, "GET", "/v1/x", b"", "n-3", &[]);
    let answer = client.check(third).await.unwrap().into_inner();
    assert_eq!(outcome(&answer), OVERLOADED);
    let (_, headers, body) = denied(&answer);
    assert!(
        headers.contains(&("retry-after".to_owned(), "1".to_owned())),
        "{headers:?}"
    );
    assert!(
        body.contains("\"message\":\"Authorization is overloaded\""),
        "{body}"
    );
    let page = metrics_text(s.admin).await;
    assert!(
        page.contains("claw_authz_load_shed_total{limit=\"checks\"} 1\n"),
        "{page}"
    );

    // The two hanging checks end; the limit frees up.
    for h in hanging {
        h.abort();
    }
    w.validate.set(vec![Reply::Status(204)]);
    let fourth = w.signed(&w.beta, "GET", "/v1/x", b"", "n-4", &[]);
    let mut answered = String::new();
    eventually("a permit free again", async || {
        let mut client = s.client.clone();
        answered = outcome(&client.check(fourth.clone()).await.unwrap().into_inner());
        answered != OVERLOADED
    })
    .await;
    assert_eq!(answered, ALLOWED);
    s.stop().await;
}

/// Bytes of checks being read or answered are bounded by `limits.in_flight_bytes`: with one
/// 100 KiB check waiting on the registry, a 170 KiB one (within the 224 KiB message limit) would
/// pass 256 KiB and is refused `RESOURCE_EXHAUSTED`, while a small one is still answered.
#[tokio::test]
async fn checks_past_the_in_flight_bytes_get_resource_exhausted() {
    let w = World::new("in-flight-bytes").await;
    w.validate.set(vec![Reply::Hang]);
    let clock = ManualClock::at(NOW_MS);
    let extra = "limits:\n  body_bytes: 131072\n  in_flight_bytes: 262144\n";
    let mut s = support::server::start(
        &w.yaml_with("  request_timeout_ms: 60000\n", extra),
        Arc::new(clock.clone()),
    )
    .await;
    s.wait_ready().await;
    let access = [("x-claw-agent-access", "clw_agt_wait")];
    let body = vec![b'a'; 100 * 1024];
    let waiting = w
        .alpha
        .request(NOW_MS, "POST", "/hooks/message", &body, "w-1", &access);
    let mut client = s.client.clone();
    let hanging = tokio::spawn(async move { client.check(waiting).await });
    eventually("the first check waiting on the registry", async || {
        w.validate.calls() == 1
    })
    .await;

    let larger = w.signed(
        &w.beta,
        "POST",
        "/v1/x",
        &vec![b'b'; 170 * 1024],
        "b-1",
        &[],
    );
    let refused = s.client.check(larger).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    let small = w.signed(&w.beta, "POST", "/v1/x", b"{}", "b-2", &[]);
    assert_eq!(outcome(&s.check(small).await), ALLOWED);
    let page = metrics_text(s.admin).await;
    assert!(
        page.contains("claw_authz_load_shed_total{limit=\"in_flight_bytes\"} 1\n"),
        "{page}"
    );
    // Once the first is answered, its bytes are given back.
    w.validate.set(vec![Reply::Status(204)]);
    hanging.abort();
    let larger = w.signed(
        &w.beta,
        "POST",
        "/v1/x",
        &vec![b'c'; 170 * 1024],
        "b-3",
        &[],
    );
    let mut answered = None;
    eventually("the bytes given back", async || {
        let mut client = s.client.clone();
        answered = Some(
            client
                .check(larger.clone())
                .await
                .map(|r| outcome(&r.into_inner())),
        );
        answered.as_ref().is_some_and(|a| a.is_ok())
    })
    .await;
    assert_eq!(answered.unwrap().unwrap(), ALLOWED);
    s.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_and_open_ones_keep_working() {
    let w = World::new("shed-connections").await;
    let clock = ManualClock::at(NOW_MS);
    // The test's own client holds the first connection.
    let mut s = started(&w, "limits:\n  connections: 2\n", &clock).await;
    let url = format!("http://{}", s.grpc);
    let mut second = AuthorizationClient::connect(url.clone()).await.unwrap();
    let r = second
        .check(w.signed(&w.alpha, "GET", "/v1/x", b"", "n-2", &[]))
        .await;
    assert_eq!(outcome(&r.unwrap().into_inner()), ALLOWED);
    let third = match AuthorizationClient::connect(url).await {
        Err(_) => None,
        Ok(mut c) => Some(
            c.check(w.signed(&w.alpha, "GET", "/v1/x", b"", "n-3", &[]))
                .await,
        ),
    };
    assert!(
        third.as_ref().is_none_or(|r| r.is_err()),
        "the third connection was closed: {third:?}"
    );
    let r = s
        .check(w.signed(&w.alpha, "GET", "/v1/x", b"", "n-4", &[]))
        .await;
    assert_eq!(outcome(&r), ALLOWED, "the open connections keep working");
    let page = metrics_text(s.admin).await;
    assert!(
        page.lines()
            .any(|l| l.starts_with("claw_authz_load_shed_total{limit=\"connections\"}")),
        "{page}"
    );
    s.stop().await;
}

/// A connection that never speaks gives its place back: it is closed after 3 s of silence, and
/// a new client then gets in under `limits.connections`.
#[tokio::test]
async fn a_silent_connection_gives_its_place_back() {
    use tokio::io::AsyncReadExt;
    let w = World::new("silent").await;
    let clock = ManualClock::at(NOW_MS);
    // The test's own client holds one of the two places, the silent socket the other.
    let s = started(&w, "limits:\n  connections: 2\n", &clock).await;
    let mut silent = tokio::net::TcpStream::connect(s.grpc).await.unwrap();
    let opened = tokio::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut [0u8; 1])).await;
    assert!(matches!(read, Ok(Ok(0))), "closed by the server: {read:?}");
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(2_900),
        "after its 3 s: {after:?}"
    );
    let mut client = AuthorizationClient::connect(format!("http://{}", s.grpc))
        .await
        .unwrap();
    let r = client
        .check(w.signed(&w.alpha, "GET", "/v1/x", b"", "n-1", &[]))
        .await;
    assert_eq!(outcome(&r.unwrap().into_inner()), ALLOWED);
    s.stop().await;
}

/// A flood of 2,000 connections, each sending the HTTP/2 preface, against the real binary with
/// `limits.connections: 256`: the resident set grows by a bounded amount, the connections past
/// the limit are counted, and a client connected before the flood is still answered.
#[tokio::test]
async fn a_flood_of_connections_does_not_raise_rss_past_its_bound() {
    const FLOOD: usize = 2_000;
    const BOUND_KIB: u64 = 16 * 1024;
    let w = World::live("connection-flood", 0).await;
    let config = w.dir.join("claw-authz.yaml");
    let extra = "listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\nlog:\n  format: json\n\
                 limits:\n  connections: 256\n";
    std::fs::write(&config, w.yaml(extra)).unwrap();
    let sidecar = support::process::Sidecar::start(&config).await;
    let mut client = sidecar.client().await;
    let clock = claw_authz::clock::SystemClock;
    let get = |nonce: &str| {
        use claw_authz::clock::Clock;
        w.alpha
            .request(clock.now_ms(), "GET", "/v1/x", b"", nonce, &[])
    };
    let r = client.check(get("f-0")).await.unwrap().into_inner();
    assert_eq!(outcome(&r), ALLOWED);
    let before = sidecar.rss_kib();

    let mut held = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let Ok(mut stream) = tokio::net::TcpStream::connect(sidecar.grpc()).await else {
            continue;
        };
        // The client preface and an empty SETTINGS frame: the server sets up its HTTP/2 state.
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let _ = stream.write_all(&preface).await;
        held.push(stream);
    }
    let r = client.check(get("f-1")).await.unwrap().into_inner();
    assert_eq!(
        outcome(&r),
        ALLOWED,
        "the client connected before the flood"
    );
    let grown = sidecar.rss_kib().saturating_sub(before);
    let page = sidecar.metrics().await;
    let shed: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("claw_authz_load_shed_total{limit=\"connections\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    println!(
        "figure: {FLOOD} connections against limits.connections 256: resident set +{grown} KiB, \
         {shed} closed at once"
    );
    assert!(grown <= BOUND_KIB, "resident set grew by {grown} KiB");
    assert!(shed >= (FLOOD - 256) as u64, "{shed} connections shed");
    drop(held);
}

#[tokio::test]
async fn shutdown_reports_not_serving_at_once_and_answers_checks_through_the_drain() {
    let w = World::new("drain").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = started(&w, "listen:\n  drain_secs: 2\n  grace_secs: 1\n", &clock).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: "envoy.service.auth.v3.Authorization".into(),
    };
    let mut watch = health.watch(request).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let started = tokio::time::Instant::now();
    s.begin_stop();
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    let ready = reqwest::get(format!("http://{}/readyz", s.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = serde_json::from_str(&ready.text().await.unwrap()).unwrap();
    assert_eq!(body["draining"], true);
    // Still answering: Envoy moves its traffic away meanwhile.
    let r = s
        .check(w.signed(&w.alpha, "GET", "/v1/x", b"", "n-d", &[]))
        .await;
    assert_eq!(outcome(&r), ALLOWED);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered within the drain"
    );
    s.stop().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "stopped after the drain: {took:?}"
    );
}

#[tokio::test]
async fn checks_and_health_are_answered_over_a_unix_domain_socket() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new("unix-socket").await;
    let path = w.dir.join("grpc.sock");
    // A socket another server listens on is not taken over; one an earlier run left behind is
    // replaced.
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let addr = claw_authz::config::ListenAddr::Unix(path.clone());
    let refused = claw_authz::server::GrpcListener::bind(&addr).await.err();
    assert_eq!(
        refused.map(|e| e.kind()),
        Some(std::io::ErrorKind::AddrInUse)
    );
    drop(live);
    let listen = format!(
        "listen: {{grpc: \"unix:{}\", admin: 127.0.0.1:0, drain_secs: 0}}\n",
        path.display()
    );
    let config = claw_authz::config::Config::load(&w.yaml(&listen), &Default::default()).unwrap();
    let clock = Arc::new(ManualClock::at(NOW_MS));
    let app = claw_authz::app::App::build(&config, clock, Default::default()).unwrap();
    let app = Arc::new(app);
    let grpc = claw_authz::server::GrpcListener::bind(&config.listen.grpc)
        .await
        .unwrap();
    assert_eq!(grpc.describe(), format!("unix:{}", path.display()));
    // Owner and group only: they are who may send checks.
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = claw_authz::server::serve(grpc, admin, app.clone(), async {
        let _ = stopped.await;
    });
    let task = tokio::spawn(server);

    let channel = support::server::unix_channel(&path).await;
    let mut health = HealthClient::new(channel.clone());
    let service = "envoy.service.auth.v3.Authorization".to_owned();
    eventually("SERVING over the socket", async || {
        let request = HealthCheckRequest {
            service: service.clone(),
        };
        let status = health.check(request).await.map(|r| r.into_inner().status);
        status.is_ok_and(|s| s == ServingStatus::Serving as i32)
    })
    .await;
    let mut client = AuthorizationClient::new(channel);
    let request = w.signed(&w.alpha, "POST", "/v1/agents/x", b"{}", "uds-1", &[]);
    let allowed = client.check(request.clone()).await.unwrap().into_inner();
    assert_eq!(outcome(&allowed), ALLOWED);
    let replayed = client.check(request).await.unwrap().into_inner();
    assert_eq!(outcome(&replayed), "401 PROXY_AUTH_REPLAY");

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// The timers of the server's established TCP connections on `port`, from `/proc/net/tcp`:
/// (timer kind, clock ticks left). Kind 2 is the keepalive timer, armed on an idle connection
/// only when `SO_KEEPALIVE` is set.
fn server_side_timers(port: u16) -> Vec<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let established = fields.get(3) == Some(&"01");
            let ours = fields.get(1).is_some_and(|a| a.ends_with(&local));
            let (kind, left) = fields.get(5)?.split_once(':')?;
            let timer = (
                u8::from_str_radix(kind, 16).ok()?,
                u64::from_str_radix(left, 16).ok()?,
            );
            (established && ours).then_some(timer)
        })
        .collect()
}

/// A connection whose peer went away gives its place back: the server sets TCP keepalive on
/// every gRPC connection (idle 30 s, then probes), so the kernel probes an idle one and closes
/// it when the peer stops answering. Seen from outside: the connection's keepalive timer.
#[tokio::test]
async fn an_idle_connection_is_probed_by_tcp_keepalive() {
    let w = World::new("keepalive").await;
    let clock = ManualClock::at(NOW_MS);
    let mut s = started(&w, "", &clock).await;
    let r = s
        .check(w.signed(&w.alpha, "GET", "/v1/x", b"", "ka-1", &[]))
        .await;
    assert_eq!(outcome(&r), ALLOWED);
    let port = s.grpc.port();
    // Once the answer is acknowledged, the idle connection's only timer is the keepalive's.
    let mut timers = Vec::new();
    eventually("the keepalive timer armed", async || {
        timers = server_side_timers(port);
        !timers.is_empty() && timers.iter().all(|(kind, _)| *kind == 2)
    })
    .await;
    for (_, left) in &timers {
        // USER_HZ is 100: at most 30 s, and armed moments ago.
        assert!((2_500..=3_000).contains(left), "{timers:?}");
    }
    s.stop().await;
}

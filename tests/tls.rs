//! TLS and mutual TLS on the gRPC listener (issue 19), with certificates Debian's `openssl` makes
//! for each test: a CA, a server certificate for `localhost` and 127.0.0.1, and client
//! certificates whose URI names are SPIFFE IDs. Through the real server: a listed client is
//! served (checks and health on the same listener), a client without a certificate, with one the
//! allowlist does not name, or speaking plaintext is refused at the handshake; a rotated server
//! certificate is served to new connections without a restart while an open connection keeps
//! answering.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use claw_authz::clock::ManualClock;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::certs::{ENVOY_ID, certificates, issue};
use support::server::Running;
use support::world::{NOW_MS, World, outcome};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const ALLOWED: &str = "200";

fn tls_yaml(certs: &Path, allowed: &str) -> String {
    format!(
        "tls:\n  cert_file: {0}/server.crt\n  key_file: {0}/server.key\n  client_ca_file: {0}/ca.crt\n  \
         allowed_clients: [{allowed}]\n  reload_interval_secs: 1\n",
        certs.display()
    )
}

/// A gRPC channel over TLS to `s`, presenting `client`'s certificate (none with `None`).
async fn channel(s: &Running, certs: &Path, client: Option<&str>) -> Result<Channel, String> {
    let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .domain_name("localhost");
    if let Some(name) = client {
        let identity =
            Identity::from_pem(read(&format!("{name}.crt")), read(&format!("{name}.key")));
        tls = tls.identity(identity);
    }
    let url = format!("https://localhost:{}", s.grpc.port());
    let endpoint = Endpoint::from_shared(url)
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?;
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// One check from alpha over `channel`: its outcome, or the transport's error.
async fn check(w: &World, channel: Channel, nonce: &str) -> Result<String, String> {
    let request = w.signed(&w.alpha, "GET", "/v1/x", b"", nonce, &[]);
    let mut client = AuthorizationClient::new(channel);
    match client.check(request).await {
        Ok(r) => Ok(outcome(&r.into_inner())),
        Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
    }
}

#[tokio::test]
async fn mutual_tls_serves_listed_clients_and_refuses_the_rest() {
    let certs = certificates("mtls");
    let w = World::new("mtls").await;
    let clock = ManualClock::at(NOW_MS);
    let yaml = w.yaml(&tls_yaml(&certs, &format!("\"{ENVOY_ID}\"")));
    let s = support::server::start_tls(&yaml, Arc::new(clock)).await;
    s.wait_ready().await;

    let envoy = channel(&s, &certs, Some("envoy")).await.unwrap();
    assert_eq!(check(&w, envoy.clone(), "n-1").await.unwrap(), ALLOWED);
    let mut health = HealthClient::new(envoy);
    let status = health.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(status.into_inner().status(), ServingStatus::Serving);

    // Without a certificate, with one the allowlist does not name, or in plaintext: refused.
    for client in [None, Some("other")] {
        let refused = match channel(&s, &certs, client).await {
            Err(e) => Err(e),
            Ok(c) => check(&w, c, "n-2").await,
        };
        assert!(refused.is_err(), "{client:?}: {refused:?}");
    }
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{}", s.grpc.port()))
        .unwrap()
        .connect()
        .await;
    let plain = match plain {
        Err(e) => Err(e.to_string()),
        Ok(c) => check(&w, c, "n-3").await,
    };
    assert!(plain.is_err(), "plaintext: {plain:?}");

    let page = reqwest::get(format!("http://{}/metrics", s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |result: &str| -> u64 {
        let prefix = format!("claw_authz_tls_handshakes_total{{result=\"{result}\"}} ");
        page.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(count("ok") >= 1 && count("failed") >= 3, "{page}");
    s.stop().await;
}

/// The server certificate the listener presents to a new connection.
async fn presented(s: &Running, certs: &Path) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(certs.join("envoy.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(certs.join("envoy.key")).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(s.grpc).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart_or_a_failed_check() {
    let certs = certificates("rotate");
    let w = Arc::new(World::new("tls-rotate").await);
    let clock = ManualClock::at(NOW_MS);
    let s = support::server::start_tls(&w.yaml(&tls_yaml(&certs, "")), Arc::new(clock)).await;
    s.wait_ready().await;
    let open = channel(&s, &certs, Some("envoy")).await.unwrap();
    let first = presented(&s, &certs).await;
    let file = |f: &str| CertificateDer::from_pem_file(certs.join(f)).unwrap();
    assert_eq!(first, file("server.crt"));

    // Checks keep flowing on the open connection while the certificate is replaced.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flowing = {
        let (open, stop, w) = (open.clone(), stop.clone(), w.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                outcomes.push(check(&w, open.clone(), &format!("f-{n}")).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            outcomes
        })
    };
    issue(&certs, "server", support::certs::SERVER_NAMES, "serverAuth");
    let rotated = file("server.crt");
    assert_ne!(rotated, first);
    let started = tokio::time::Instant::now();
    while presented(&s, &certs).await != rotated {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the new certificate is served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let outcomes = flowing.await.unwrap();
    assert!(!outcomes.is_empty());
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| **o != Ok(ALLOWED.into()))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(check(&w, open, "after").await.unwrap(), ALLOWED);
    s.stop().await;
}

/// Redis over TLS with an ACL user limited to claw-authz's keys (issue 19): two replicas share
/// the trust store, replay protection and the agents' rate limit through `rediss://` (verified against
/// `redis.ca_file`), a revocation published on the stream over TLS reaches both, and a wrong
/// password fails closed.
#[tokio::test]
async fn redis_over_tls_with_an_acl_user_shares_replay_limits_and_events() {
    use claw_authz::revocation::{StreamSettings, publish, revocation_envelope};
    use support::redis::RedisServer;
    let certs = certificates("redis-tls");
    let redis = RedisServer::start_tls(&certs).await;
    let w = World::new("redis-tls").await;
    let clock = ManualClock::at(NOW_MS);
    let redis_yaml = |url: &str| {
        format!(
            "nonce:\n  store: redis\nrate_limit:\n  store: redis\nredis:\n  url: \"{url}\"\n  \
             ca_file: {}\n  timeout_ms: 1000\npolicies:\n  limited: {{rate_limit: {{requests: 3, \
             window_secs: 60}}}}\n",
            certs.join("ca.crt").display()
        )
    };
    // Trust in Redis too: the test pairs alpha and beta over TLS as the ACL user.
    let trust_line = format!("  file: {}\n", w.dir.join("trust.yaml").display());
    let redis_trust =
        |yaml: String| yaml.replace(&trust_line, "  store: redis\n  cache_ttl_secs: 0\n");
    let yaml = redis_trust(w.yaml(&redis_yaml(&redis.tls_url())));
    let mut a = support::server::start(&yaml, Arc::new(clock.clone())).await;
    let mut b = support::server::start(&yaml, Arc::new(clock.clone())).await;
    a.wait_ready().await;
    b.wait_ready().await;
    let target = claw_authz::store::redis::Target {
        url: redis.tls_url(),
        ca: Some(std::fs::read(certs.join("ca.crt")).unwrap()),
        cluster: false,
    };
    let store =
        claw_authz::store::redis::Redis::connect(&target, Duration::from_secs(1), "claw-authz:")
            .unwrap();
    let unknown = w.signed(&w.alpha, "GET", "/v1/x", b"", "tls-0", &[]);
    assert_eq!(outcome(&a.check(unknown).await), "403 PROXY_AUTH_FORBIDDEN");
    let (alpha, beta) = (
        w.registry.agent_did(&w.alpha.ulid),
        w.registry.agent_did(&w.beta.ulid),
    );
    store.pair(&alpha, &beta).await.unwrap();

    let request = w.signed(&w.alpha, "GET", "/v1/x", b"", "tls-1", &[]);
    assert_eq!(outcome(&a.check(request.clone()).await), ALLOWED);
    assert_eq!(outcome(&b.check(request).await), "401 PROXY_AUTH_REPLAY");

    // The limit of 3 a minute is shared: two on a, the third on b, the fourth refused on a.
    let limited = |n: &str| {
        support::world::on_policy("limited", w.signed(&w.alpha, "GET", "/v1/y", b"", n, &[]))
    };
    let outcomes = [
        outcome(&a.check(limited("l-1")).await),
        outcome(&a.check(limited("l-2")).await),
        outcome(&b.check(limited("l-3")).await),
        outcome(&a.check(limited("l-4")).await),
    ];
    assert_eq!(outcomes[..3], [ALLOWED; 3]);
    assert_eq!(outcomes[3], "429 PROXY_RATE_LIMIT_EXCEEDED");

    let settings = StreamSettings {
        target,
        stream: "claw:events".into(),
        dlq: "claw:events:dlq".into(),
        replay_ms: 30 * 86_400_000,
    };
    let envelope = revocation_envelope(&beta, NOW_MS).unwrap();
    publish(&settings, &envelope, NOW_MS).await.unwrap();
    for (s, name) in [(&mut a, "a"), (&mut b, "b")] {
        let events = s.app.pipeline.events.clone();
        let started = tokio::time::Instant::now();
        while !events.is_revoked(&beta, NOW_MS) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "replica {name} revoked beta"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = s
            .check(w.signed(&w.beta, "GET", "/v1/x", b"", &format!("rb-{name}"), &[]))
            .await;
        assert_eq!(outcome(&r), "401 PROXY_AUTH_REVOKED");
    }

    let wrong = redis
        .tls_url()
        .replace(support::redis::ACL_PASSWORD, "wrong");
    let wrong_yaml = redis_trust(w.yaml(&redis_yaml(&wrong)));
    let mut c = support::server::start(&wrong_yaml, Arc::new(clock.clone())).await;
    c.wait_ready().await;
    let r = c
        .check(w.signed(&w.alpha, "GET", "/v1/x", b"", "tls-wrong", &[]))
        .await;
    // The trust store is asked first: with no cached answer it fails closed (403, item 6).
    assert_eq!(outcome(&r), "403 PROXY_AUTH_FORBIDDEN");
    for s in [a, b, c] {
        s.stop().await;
    }
}

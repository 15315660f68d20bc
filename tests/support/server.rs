//! Starts the real servers on loopback port 0 for a test, with an injected clock.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use claw_authz::app::{App, Parts};
use claw_authz::clock::Clock;
use claw_authz::config::Config;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub struct Running {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub app: Arc<App>,
    pub client: AuthorizationClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Loads `yaml` and serves it on loopback port 0.
pub async fn start(yaml: &str, clock: Arc<dyn Clock>) -> Running {
    start_with(yaml, clock, Parts::default()).await
}

/// Like [`start`], for a config with TLS on the gRPC listener: `client` is a plaintext channel
/// that is never connected (tests make their own TLS channels).
pub async fn start_tls(yaml: &str, clock: Arc<dyn Clock>) -> Running {
    serve_on_loopback(yaml, clock, Parts::default(), false).await
}

/// Like [`start`], with some parts given instead of built from the config.
pub async fn start_with(yaml: &str, clock: Arc<dyn Clock>, parts: Parts) -> Running {
    serve_on_loopback(yaml, clock, parts, true).await
}

/// Like [`start`], with the gRPC listener on the Unix domain socket at `path`: `client` speaks
/// over it, and `grpc` is unset.
pub async fn start_unix(yaml: &str, clock: Arc<dyn Clock>, path: &std::path::Path) -> Running {
    let app = app(yaml, clock, Parts::default());
    let addr = claw_authz::config::ListenAddr::Unix(path.to_owned());
    let grpc = claw_authz::server::GrpcListener::bind(&addr).await.unwrap();
    let mut running = serving(grpc, app).await;
    running.client = AuthorizationClient::new(unix_channel(path).await);
    running
}

/// A gRPC channel over the Unix domain socket at `path`.
pub async fn unix_channel(path: &std::path::Path) -> Channel {
    let path = path.to_owned();
    let connect = tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    tonic::transport::Endpoint::from_static("http://claw-authz.sock")
        .connect_with_connector(connect)
        .await
        .unwrap()
}

/// The app of `yaml`; a test's server stops at once unless the test is about the drain.
fn app(yaml: &str, clock: Arc<dyn Clock>, parts: Parts) -> Arc<App> {
    let mut env = HashMap::new();
    if !yaml.contains("drain_secs") {
        env.insert("CLAW_AUTHZ_LISTEN__DRAIN_SECS".to_owned(), "0".to_owned());
    }
    let config = Config::load(yaml, &env).unwrap_or_else(|e| panic!("config: {e:?}"));
    Arc::new(App::build(&config, clock, parts).unwrap())
}

/// Serves `app` on `grpc` and an admin listener on loopback; `client` is never connected.
async fn serving(grpc: claw_authz::server::GrpcListener, app: Arc<App>) -> Running {
    let grpc_addr = match &grpc {
        claw_authz::server::GrpcListener::Tcp(l) => l.local_addr().unwrap(),
        claw_authz::server::GrpcListener::Unix(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(claw_authz::server::serve(grpc, admin, app.clone(), async {
        let _ = stopped.await;
    }));
    let lazy = tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}")).unwrap();
    Running {
        grpc: grpc_addr,
        admin: admin_addr,
        app,
        client: AuthorizationClient::new(lazy.connect_lazy()),
        stop: Some(stop),
        task: Some(task),
    }
}

async fn serve_on_loopback(
    yaml: &str,
    clock: Arc<dyn Clock>,
    parts: Parts,
    plaintext: bool,
) -> Running {
    let app = app(yaml, clock, parts);
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut running = serving(grpc.into(), app).await;
    if plaintext {
        let url = format!("http://{}", running.grpc);
        running.client = AuthorizationClient::connect(url).await.unwrap();
    }
    running
}

impl Running {
    pub async fn check(&mut self, request: CheckRequest) -> CheckResponse {
        self.client.check(request).await.unwrap().into_inner()
    }

    /// Waits (polling readiness, not sleeping a fixed time) until the keys have loaded.
    pub async fn wait_ready(&self) {
        let mut ready = self.app.ready();
        tokio::time::timeout(std::time::Duration::from_secs(10), ready.wait_for(|r| *r))
            .await
            .expect("keys loaded within 10 s")
            .unwrap();
    }

    /// Sends the shutdown signal (as SIGTERM does) without waiting for the server to end.
    pub fn begin_stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

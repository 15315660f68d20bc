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

async fn serve_on_loopback(
    yaml: &str,
    clock: Arc<dyn Clock>,
    parts: Parts,
    plaintext: bool,
) -> Running {
    // A test's server stops at once unless the test is about the drain.
    let mut env = HashMap::new();
    if !yaml.contains("drain_secs") {
        env.insert("CLAW_AUTHZ_LISTEN__DRAIN_SECS".to_owned(), "0".to_owned());
    }
    let config = Config::load(yaml, &env).unwrap_or_else(|e| panic!("config: {e:?}"));
    let app = Arc::new(App::build(&config, clock, parts).unwrap());
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(claw_authz::server::serve(grpc, admin, app.clone(), async {
        let _ = stopped.await;
    }));
    let url = format!("http://{grpc_addr}");
    let client = if plaintext {
        AuthorizationClient::connect(url).await.unwrap()
    } else {
        let lazy = tonic::transport::Endpoint::from_shared(url).unwrap();
        AuthorizationClient::new(lazy.connect_lazy())
    };
    Running {
        grpc: grpc_addr,
        admin: admin_addr,
        app,
        client,
        stop: Some(stop),
        task: Some(task),
    }
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

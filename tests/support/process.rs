//! The real `claw-authz serve` binary as a child process (for what only a process can show, such
//! as surviving `kill -9`), on the bench's process runner.
#![allow(dead_code)]

use std::path::Path;

use claw_authz::dev::process::Process;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::Channel;

pub struct Sidecar(Process);

impl Sidecar {
    /// Runs `serve --config path` (the config must log JSON at info and listen on port 0),
    /// learns its addresses from the "claw-authz listening" line, and waits until `/readyz`
    /// answers 200.
    pub async fn start(config: &Path) -> Sidecar {
        let config = config.to_str().unwrap();
        let process = Process::start_server(
            Path::new(env!("CARGO_BIN_EXE_claw-authz")),
            &["serve", "--config", config],
        )
        .await
        .expect("the sidecar starts and becomes ready");
        Sidecar(process)
    }

    pub async fn client(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::connect(format!("http://{}", self.0.grpc))
            .await
            .unwrap()
    }

    pub fn grpc(&self) -> std::net::SocketAddr {
        self.0.grpc
    }

    pub fn admin(&self) -> Option<std::net::SocketAddr> {
        self.0.admin
    }

    /// The resident set, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.0.rss_kib()
    }

    pub async fn metrics(&self) -> String {
        self.0.metrics().await
    }

    /// CPU time the process has used so far (user + system).
    pub fn cpu(&self) -> std::time::Duration {
        self.0.cpu()
    }

    /// SIGTERM: the server drains and exits.
    pub fn terminate(&self) {
        self.0.terminate().unwrap();
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.exited()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.0.kill9();
    }
}

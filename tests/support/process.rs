//! The real `claw-authz serve` binary as a child process (for what only a process can show, such
//! as surviving `kill -9`).
#![allow(dead_code)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::Channel;

pub struct Sidecar {
    child: Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

impl Sidecar {
    /// Runs `serve --config path` (the config must log JSON and listen on port 0), learns its
    /// addresses from the "claw-authz listening" line, and waits until `/readyz` answers 200.
    pub async fn start(config: &Path) -> Sidecar {
        let mut child = Command::new(env!("CARGO_BIN_EXE_claw-authz"))
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent && line.contains("claw-authz listening") {
                    let _ = tx.send(line);
                    sent = true;
                }
            }
        });
        let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("the sidecar reports its listeners");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = |k: &str| v[k].as_str().unwrap().parse::<SocketAddr>().unwrap();
        let sidecar = Sidecar {
            child,
            grpc: addr("grpc"),
            admin: addr("admin"),
        };
        let ready = format!("http://{}/readyz", sidecar.admin);
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(&ready).await
                && r.status() == 200
            {
                return sidecar;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the sidecar did not become ready");
    }

    pub async fn client(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the process has used so far (user + system), from `/proc/<pid>/stat`.
    pub fn cpu(&self) -> std::time::Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesized command name: state is 3rd, utime 14th, stime 15th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<u64> = rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect();
        let ticks = fields[11] + fields[12];
        // USER_HZ is 100 on Linux.
        std::time::Duration::from_millis(ticks * 10)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

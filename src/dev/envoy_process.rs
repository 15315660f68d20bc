//! Running a real Envoy in front of claw-authz: the demo's `--envoy` mode and the end-to-end
//! tests use this. The configuration is `envoy/sidecar.yaml` itself (embedded), with every port
//! pointed at loopback ones; Envoy's own listener and admin bind port 0 and report back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};

/// The sidecar configuration operators copy.
pub(crate) const SIDECAR_YAML: &str = include_str!("../../envoy/sidecar.yaml");

/// `ENVOY_BIN`, else the `.venv-envoy` that `.ci/setup` creates under `root`, else `envoy` on
/// `PATH`.
pub fn find_binary(root: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return Some(PathBuf::from(p));
    }
    let venv = std::fs::read_dir(root.join(".venv-envoy/lib"))
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
                .find(|p| p.exists())
        });
    venv.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("envoy"))
                .find(|p| p.is_file())
        })
    })
}

/// `envoy/sidecar.yaml` with its ports pointed at these servers (listener and admin on port 0).
pub fn sidecar_config(claw_grpc: SocketAddr, claw_admin: SocketAddr, app: SocketAddr) -> String {
    local_ports(SIDECAR_YAML, claw_grpc, claw_admin, app)
}

/// `yaml` with Envoy's own ports on 0 and the others pointed at these servers.
fn local_ports(
    yaml: &str,
    claw_grpc: SocketAddr,
    claw_admin: SocketAddr,
    app: SocketAddr,
) -> String {
    yaml.replace(
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

/// Like [`sidecar_config`], with Envoy reaching claw-authz over the Unix domain socket at
/// `socket` (a `pipe` address; claw-authz listening on `unix:<socket>`), as the comment in
/// `envoy/sidecar.yaml` shows.
pub fn sidecar_unix_config(socket: &Path, claw_admin: SocketAddr, app: SocketAddr) -> String {
    let yaml = SIDECAR_YAML.replacen(
        SIDECAR_GRPC_ADDRESS,
        &format!("pipe: {{ path: {} }}", socket.display()),
        1,
    );
    let unused = SocketAddr::from(([127, 0, 0, 1], 0));
    local_ports(&yaml, unused, claw_admin, app)
}

/// `config` (the sidecar's) with a `/signed/` route that selects claw-authz's named policy
/// `signed` (the way a route picks a profile: `context_extensions`), before the catch-all.
pub fn with_signed_route(config: &str) -> String {
    let catch_all = "                        - match: { prefix: / }\n";
    let signed = "                        - match: { prefix: /signed/ }\n                          route: { cluster: app }\n                          typed_per_filter_config:\n                            envoy.filters.http.ext_authz:\n                              \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                              check_settings:\n                                context_extensions: { claw_policy: signed }\n";
    config.replacen(catch_all, &format!("{signed}{catch_all}"), 1)
}

/// The claw-authz endpoint's address in `envoy/sidecar.yaml`.
pub const SIDECAR_GRPC_ADDRESS: &str = "socket_address: { address: 127.0.0.1, port_value: 9001 }";

/// `config` (a [`sidecar_config`]) with more claw-authz replicas beside the one it names at
/// `first`: Envoy balances checks over them and health-checks each over gRPC.
pub fn with_replicas(config: &str, first: SocketAddr, others: &[SocketAddr]) -> String {
    let endpoint = |addr: SocketAddr| {
        format!(
            "              - endpoint:\n                  address:\n                    \
             socket_address: {{ address: 127.0.0.1, port_value: {} }}\n",
            addr.port()
        )
    };
    let named = endpoint(first);
    let all: String = std::iter::once(first)
        .chain(others.iter().copied())
        .map(endpoint)
        .collect();
    config.replacen(&named, &all, 1)
}

/// The mutual-TLS variant operators copy (`envoy/sidecar-mtls.yaml`).
pub(crate) const SIDECAR_MTLS_YAML: &str = include_str!("../../envoy/sidecar-mtls.yaml");

/// `envoy/sidecar-mtls.yaml` with its ports pointed at these servers, reading Envoy's
/// certificate, key and CA (`tls.crt`, `tls.key`, `ca.crt`) from `tls_dir`.
pub fn sidecar_mtls_config(
    claw_grpc: SocketAddr,
    claw_admin: SocketAddr,
    app: SocketAddr,
    tls_dir: &Path,
) -> String {
    local_ports(SIDECAR_MTLS_YAML, claw_grpc, claw_admin, app)
        .replace("/etc/envoy/tls/", &format!("{}/", tls_dir.display()))
}

/// A running Envoy, killed on drop.
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

impl Envoy {
    /// Starts `binary` with `config` and waits (polling, at most 15 s) until it is ready.
    pub async fn start(binary: &Path, config: &str) -> Result<Envoy, String> {
        let dir = std::env::temp_dir().join(format!("claw-envoy-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let config_path = dir.join("envoy.yaml");
        let admin_path = dir.join("admin-address");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("envoy.log")).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
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
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut envoy = Envoy {
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            dir,
        };
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(format!("envoy exited ({status}): {}", envoy.log()));
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
                    return Ok(envoy);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("envoy not ready within 15 s: {}", envoy.log()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// A small upstream that answers `200 upstream ok` and records every request.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl EchoUpstream {
    pub async fn start() -> std::io::Result<EchoUpstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let record = record.clone();
                async move {
                    let seen = Seen {
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
                    };
                    record.lock().unwrap_or_else(|p| p.into_inner()).push(seen);
                    "upstream ok"
                }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(EchoUpstream { addr, seen })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

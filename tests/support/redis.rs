//! A real `redis-server` for one test: a free loopback port, no persistence, stopped on drop.
//! (`.ci/setup` installs it from Debian.)
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// With TLS: the TLS port, and the directory of `support::certs` certificates it serves.
    tls: Option<(u16, PathBuf)>,
    /// Extra arguments to `redis-server`.
    args: Vec<String>,
}

/// The ACL user a TLS server knows besides `default`, limited to claw-authz's keys.
pub const ACL_USER: &str = "claw";
pub const ACL_PASSWORD: &str = "s3cret-for-tests";

fn binary() -> String {
    for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    "redis-server".into()
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer::start_with(None, &[]).await
    }

    /// Also listening with TLS (the server certificate of `certs`, a `support::certs`
    /// directory) on a second port, where the ACL user [`ACL_USER`] may touch only
    /// claw-authz's keys (`claw-authz:*`, `claw:*`). The plain port stays for the test's own
    /// look at the server.
    pub async fn start_tls(certs: &std::path::Path) -> RedisServer {
        RedisServer::start_with(Some(certs), &[]).await
    }

    /// With extra `redis-server` arguments (the cluster's nodes).
    pub async fn start_with_args(args: &[&str]) -> RedisServer {
        RedisServer::start_with(None, args).await
    }

    /// `CLUSTER INFO` says the cluster is up.
    pub fn cluster_ok(&self) -> bool {
        self.connection()
            .and_then(|mut c| {
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query::<String>(&mut c)
                    .ok()
            })
            .is_some_and(|info| info.contains("cluster_state:ok"))
    }

    async fn start_with(certs: Option<&std::path::Path>, args: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "claw-redis-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // redis-server cannot bind port 0; take a free port from the kernel and hand it over
        // (retrying if another process grabs it first).
        // Other tests in the process bind ports too: a port can be taken between the probe and
        // redis binding it, so try a few.
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        for _ in 0..20 {
            let port = free();
            let mut server = RedisServer {
                port,
                child: None,
                dir: dir.clone(),
                tls: certs.map(|c| (free(), c.to_owned())),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
            };
            if server.spawn().await {
                return server;
            }
        }
        let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
        let last: Vec<&str> = log.lines().rev().take(5).collect();
        panic!(
            "redis-server did not start (is it installed? `bash .ci/setup` installs it); its last log lines: {last:?}"
        );
    }

    /// Starts the process on `self.port` and waits (polling PING) until it answers.
    async fn spawn(&mut self) -> bool {
        let mut command = Command::new(binary());
        if let Some((port, certs)) = &self.tls {
            let file = |f: &str| certs.join(f).display().to_string();
            command
                .args(["--tls-port", &port.to_string()])
                .args(["--tls-cert-file", &file("server.crt")])
                .args(["--tls-key-file", &file("server.key")])
                .args(["--tls-ca-cert-file", &file("ca.crt")])
                .args(["--tls-auth-clients", "no"])
                .args(["--user", ACL_USER, "on", &format!(">{ACL_PASSWORD}")])
                .args(["~claw-authz:*", "~claw:*", "&*", "+@all"]);
        }
        let child = command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            // Last, so they override the defaults above.
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}); `bash .ci/setup` installs it")
            });
        self.child = Some(child);
        for _ in 0..200 {
            if self.ping() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server as claw-authz's own client sees it (its default key prefix), for a test to
    /// write what an operator's tooling would (`pair`, `revoke`).
    pub fn store(&self) -> claw_authz::store::redis::Redis {
        store_at(&self.url(), false)
    }

    /// The TLS port's URL for the ACL user (`start_tls` only), by the certificate's name.
    pub fn tls_url(&self) -> String {
        let (port, _) = self.tls.as_ref().expect("started with start_tls");
        format!("rediss://{ACL_USER}:{ACL_PASSWORD}@localhost:{port}/0")
    }

    fn connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        client
            .get_connection_with_timeout(Duration::from_millis(200))
            .ok()
    }

    pub fn ping(&self) -> bool {
        self.connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
            .is_some_and(|p| p == "PONG")
    }

    /// Calls of `command` (lowercase, e.g. `set`) the server has processed.
    pub fn calls(&self, command: &str) -> u64 {
        self.command_stat(command, "calls")
    }

    /// Calls of `command` that did not end in an error (a NOSCRIPT answer, say).
    pub fn calls_ok(&self, command: &str) -> u64 {
        self.command_stat(command, "calls") - self.command_stat(command, "failed_calls")
    }

    /// One field of `command`'s line in `INFO commandstats` (0 when the command never ran).
    fn command_stat(&self, command: &str, field: &str) -> u64 {
        let mut c = self.connection().expect("redis answers");
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut c)
            .unwrap();
        let prefix = format!("cmdstat_{command}:");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|stats| {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(field)?.strip_prefix('='))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Every command the server has processed (INFO itself included).
    pub fn commands(&self) -> u64 {
        let mut c = self.connection().expect("redis answers");
        let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `XADD stream * field value`.
    pub fn xadd(&self, stream: &str, field: &str, value: &[u8]) -> String {
        let mut c = self.connection().expect("redis answers");
        redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(field)
            .arg(value)
            .query(&mut c)
            .unwrap()
    }

    /// Every entry of `stream`, as field -> value maps, oldest first.
    pub fn entries(&self, stream: &str) -> Vec<std::collections::HashMap<String, String>> {
        let mut c = self.connection().expect("redis answers");
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query(&mut c)
            .unwrap();
        reply
            .ids
            .into_iter()
            .map(|entry| {
                entry
                    .map
                    .into_iter()
                    .map(|(k, v)| {
                        let text = match v {
                            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                            other => format!("{other:?}"),
                        };
                        (k, text)
                    })
                    .collect()
            })
            .collect()
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        assert!(self.spawn().await, "redis-server restarted");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGSTOP: the process keeps its connections but answers nothing.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real Redis Cluster of three masters (no replicas), made with `redis-cli --cluster create`,
/// stopped on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_with_args(&["--cluster-enabled", "yes"]).await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (Debian's redis-tools, with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        for _ in 0..500 {
            if cluster.nodes.iter().all(|n| n.cluster_ok()) {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the cluster did not reach cluster_state:ok");
    }

    /// A seed node's URL.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }
}

/// claw-authz's client for the server (or cluster) at `url`, with its default key prefix.
pub fn store_at(url: &str, cluster: bool) -> claw_authz::store::redis::Redis {
    let target = claw_authz::store::redis::Target {
        url: url.to_owned(),
        ca: None,
        cluster,
    };
    claw_authz::store::redis::Redis::connect(&target, Duration::from_secs(1), "claw-authz:")
        .unwrap()
}

//! Child processes of a benchmark and what `/proc` says about them: CPU time and RSS.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server the bench started (`claw-authz serve`, the floor server, Redis), killed on drop.
pub struct Process {
    child: Child,
    pub grpc: SocketAddr,
    /// The gRPC listener's socket path, when it listens on `unix:` (then `grpc` is unset).
    pub grpc_unix: Option<std::path::PathBuf>,
    pub admin: Option<SocketAddr>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Runs `binary args...`, and reads its stderr until a JSON line with a `grpc` address (the
    /// `claw-authz listening` line of `log.format: json`); then, if it reported an admin
    /// listener, polls `/readyz` until it answers 200.
    pub async fn start_server(binary: &Path, args: &[&str]) -> Result<Process, String> {
        Process::start_server_with(binary, args, &[]).await
    }

    /// [`Process::start_server`] with `env` added to the child's environment.
    pub async fn start_server_with(
        binary: &Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Result<Process, String> {
        let mut child = Command::new(binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok);
            let mut tail = Vec::new();
            for line in lines.by_ref() {
                let parsed = serde_json::from_str::<serde_json::Value>(&line).ok();
                if let Some(v) = parsed.filter(|v| v["grpc"].is_string()) {
                    let _ = tx.send(Ok(v));
                    break;
                }
                tail.push(line);
            }
            let _ = tx.send(Err(tail.join("\n")));
            lines.for_each(drop); // keep draining so the child never blocks on a full pipe
        });
        let first = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .map_err(|e| e.to_string())?;
        let mut process = Process {
            child,
            grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_unix: None,
            admin: None,
        };
        let v = match first {
            Ok(Ok(v)) => v,
            Ok(Err(output)) => return Err(format!("the server exited: {output}")),
            Err(_) => return Err("the server did not report its listeners within 60 s".into()),
        };
        let addr = |k: &str| v[k].as_str().and_then(|s| s.parse::<SocketAddr>().ok());
        match v["grpc"].as_str().and_then(|g| g.strip_prefix("unix:")) {
            Some(path) => process.grpc_unix = Some(path.into()),
            None => process.grpc = addr("grpc").ok_or("bad grpc address")?,
        }
        process.admin = addr("admin");
        if let Some(admin) = process.admin {
            let http = reqwest::Client::new();
            let ready = format!("http://{admin}/readyz");
            let mut ok = false;
            for _ in 0..600 {
                if http
                    .get(&ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
                {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !ok {
                return Err("the server did not become ready within 30 s".into());
            }
        }
        Ok(process)
    }

    /// Wraps a child that is already running (its addresses known to the caller).
    pub(crate) fn adopt(child: Child, grpc: SocketAddr) -> Process {
        Process {
            child,
            grpc,
            grpc_unix: None,
            admin: None,
        }
    }

    /// SIGKILL, and reap it: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (through `kill`, the one way without `unsafe`): the server drains and exits.
    pub fn terminate(&self) -> Result<(), String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        status.success().then_some(()).ok_or("kill failed".into())
    }

    /// The exit status, once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu(&self) -> Duration {
        process_cpu(self.pid())
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// The admin listener's `/metrics` text (empty when there is none or it fails).
    pub async fn metrics(&self) -> String {
        let Some(admin) = self.admin else {
            return String::new();
        };
        match reqwest::get(format!("http://{admin}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

/// User + system CPU time of a process, its exited threads included (`/proc/<pid>/stat`).
pub fn process_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // After the parenthesized command name: state is field 3, utime 14 and stime 15.
    let Some(close) = stat.rfind(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<u64> = stat[close + 1..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of the calling thread, in nanoseconds of run time (`/proc/thread-self/schedstat`).
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .map(Duration::from_nanos)
        .unwrap_or(Duration::ZERO)
}

/// `redis-server` on a free loopback port with no persistence, for the Redis scenario.
pub async fn start_redis(dir: &Path) -> Result<(Process, u16), String> {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start redis-server (`bash .ci/setup` installs it): {e}")
            })?;
        let process = Process::adopt(child, SocketAddr::from(([127, 0, 0, 1], port)));
        for _ in 0..100 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(process.grpc).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").await.is_ok()
                    && s.read_exact(&mut buf).await.is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return Ok((process, port));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Err("redis-server did not start".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variables given reach the child (the bench sets the servers' runtime workers so).
    #[tokio::test]
    async fn a_server_is_started_with_the_environment_given() {
        // The shell itself stays (no `exec`): read while a process replaces its image,
        // `/proc/<pid>/environ` can come back empty.
        let script = r#"echo '{"grpc":"127.0.0.1:9"}' >&2; while :; do sleep 1; done"#;
        let env = [("TOKIO_WORKER_THREADS", "1".to_owned())];
        let process = Process::start_server_with(Path::new("/bin/sh"), &["-c", script], &env)
            .await
            .unwrap();
        assert_eq!(process.grpc, SocketAddr::from(([127, 0, 0, 1], 9)));
        let environ = std::fs::read(format!("/proc/{}/environ", process.pid())).unwrap();
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        assert!(vars.contains(&&b"TOKIO_WORKER_THREADS=1"[..]));
    }
}

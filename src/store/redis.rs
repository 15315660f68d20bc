//! Shared state in Redis (or Valkey): the nonce store and the trust store for many replicas.
//!
//! One multiplexed connection per process ([`redis::aio::ConnectionManager`], reconnecting on its
//! own). Every operation is bounded by `timeout` (default 50 ms); an error or a timeout is a
//! [`StoreError`], which the pipeline turns into a fail-closed 503 for nonces (`docs/deviations.md`
//! item 10) and into the cached-answer-or-403 policy for trust (item 6).
//!
//! Keys, under `prefix` (default `claw-authz:`):
//! - `nonce:…` and `nonces:…`: the replay records and each agent's set of them
//!   ([`super::nonce_redis`]);
//! - `peers:<agentDid>`: a set of the agent's peers; an agent is known while it exists;
//! - `revoked:<agentDid>`: `never`, or the unix ms until which the agent is revoked (the key
//!   also expires, a minute later, so Redis drops it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::StoreError;
use super::trust::TrustStore;
use crate::registry::BoxFuture;

/// Where Redis is: `url` (`rediss://` is TLS, verified against `ca`, PEM, when given, else the
/// system's roots; a user and password in the URL authenticate with Redis ACLs), one server or
/// a seed node of a Redis Cluster.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub ca: Option<Vec<u8>>,
    pub cluster: bool,
}

impl Target {
    /// A connection made on first use, whose every answer is bounded by `timeout` (`None`:
    /// unbounded, for blocking reads).
    pub(crate) fn lazy(&self, timeout: Option<Duration>) -> Result<Connection, String> {
        if self.cluster {
            let mut builder = redis::cluster::ClusterClient::builder([self.url.as_str()]);
            if let Some(pem) = &self.ca {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                });
            }
            let client = builder
                .build()
                .map_err(|e| format!("invalid redis URL: {e}"))?;
            let mut config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(timeout.unwrap_or(CONNECT).max(CONNECT));
            if let Some(t) = timeout {
                config = config.set_response_timeout(t);
            }
            return Ok(Connection::Cluster(
                client.get_pending_async_connection_with_config(config),
            ));
        }
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(timeout)
            .set_connection_timeout(Some(timeout.unwrap_or(CONNECT).max(CONNECT)))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(3);
        let client = client(&self.url, self.ca.as_deref())?;
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the redis connection: {e}"))?;
        Ok(Connection::Single(manager))
    }
}

/// The shortest time a connection attempt is given.
const CONNECT: Duration = Duration::from_millis(250);

/// A connection to one server (reconnecting on its own) or to a cluster (routing each command
/// to the node that holds its key's slot).
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// A client for one server at `url` (see [`Target`]).
pub fn client(url: &str, ca: Option<&[u8]>) -> Result<redis::Client, String> {
    // The driver's TLS takes the process's rustls provider: the aws-lc-rs one, as everywhere
    // else here (installing it again is a no-op).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = match ca {
        None => redis::Client::open(url),
        Some(pem) => {
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            };
            redis::Client::build_with_tls(url, certs)
        }
    };
    client.map_err(|e| format!("invalid redis URL: {e}"))
}

#[derive(Clone)]
pub struct Redis {
    conn: Connection,
    pub(super) timeout: Duration,
    pub(super) prefix: String,
    ops: std::sync::Arc<AtomicU64>,
}

impl Redis {
    /// Prepares the connection; it is made on first use, so the process starts (and fails
    /// closed) while Redis is unreachable.
    pub fn connect(target: &Target, timeout: Duration, prefix: &str) -> Result<Self, String> {
        let conn = target.lazy(Some(timeout))?;
        Ok(Redis {
            conn,
            timeout,
            prefix: prefix.to_owned(),
            ops: std::sync::Arc::new(AtomicU64::new(0)),
        })
    }

    /// Whether this is a Redis Cluster, where one script may touch only keys of one slot.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.conn, Connection::Cluster(_))
    }

    /// Operations sent so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError(format!("redis: {e}"))),
            Err(_) => Err(StoreError(format!(
                "redis: no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Runs `script` by its SHA-1 (`EVALSHA`, 40 bytes instead of the script's text). A server
    /// that does not know it yet (new, restarted, a promoted replica) answers NOSCRIPT, and the
    /// call goes again as `EVAL` with the text, which also teaches that server the script. The
    /// retry is keyed like the call, so in a cluster it reaches the same node and depends on no
    /// other (redis's own `Script` loads on every node at once). Both fit in one timeout.
    pub(crate) async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        keys: &[&str],
        args: &[u64],
    ) -> Result<T, StoreError> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        // Sized up front: this runs on every check, and growing the buffers cost more than
        // the command's own encoding.
        let bytes = keys.iter().map(|k| k.len()).sum::<usize>() + 20 * (args.len() + 1);
        let call = |command: &str, body: &str| {
            let mut cmd = redis::Cmd::with_capacity(
                3 + keys.len() + args.len(),
                command.len() + body.len() + bytes,
            );
            cmd.arg(command)
                .arg(body)
                .arg(keys.len())
                .arg(keys)
                .arg(args);
            cmd
        };
        let answered = async {
            let mut conn = self.conn.clone();
            let by_hash = call("EVALSHA", script.sha())
                .query_async::<T>(&mut conn)
                .await;
            match by_hash {
                Err(e) if e.code() == Some("NOSCRIPT") => {
                    call("EVAL", script.text).query_async::<T>(&mut conn).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, answered).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError(format!("redis: {e}"))),
            Err(_) => Err(StoreError(format!(
                "redis: no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    pub(crate) fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.prefix)
    }

    /// Pairs two agents (both become known). Two writes, not one transaction: the agents' keys
    /// may live on two cluster nodes. Pairing again after a failure is harmless.
    pub async fn pair(&self, a: &str, b: &str) -> Result<(), StoreError> {
        for (agent, peer) in [(a, b), (b, a)] {
            let mut cmd = redis::cmd("SADD");
            cmd.arg(self.key("peers", agent)).arg(peer);
            self.run::<()>(&cmd).await?;
        }
        Ok(())
    }

    /// Revokes an agent until `until_ms` (unix ms, compared with the checking replica's clock),
    /// or for good. A timed entry is dropped by Redis a minute after it ends (relative to
    /// `now_ms`, so a skew between this clock and Redis's does not matter).
    pub async fn revoke(
        &self,
        agent_did: &str,
        until_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("revoked", agent_did));
        match until_ms {
            Some(ms) => cmd
                .arg(ms)
                .arg("PX")
                .arg(ms.saturating_sub(now_ms).saturating_add(60_000)),
            None => cmd.arg("never"),
        };
        self.run::<()>(&cmd).await
    }
}

/// A Lua script and its SHA-1, computed once.
pub(crate) struct LuaScript {
    pub(super) text: &'static str,
    sha: std::sync::OnceLock<String>,
}

impl LuaScript {
    pub(crate) const fn new(text: &'static str) -> Self {
        LuaScript {
            text,
            sha: std::sync::OnceLock::new(),
        }
    }

    fn sha(&self) -> &str {
        self.sha
            .get_or_init(|| redis::Script::new(self.text).get_hash().to_owned())
    }
}

pub(crate) struct RedisTrustStore(pub Redis);

impl TrustStore for RedisTrustStore {
    fn is_revoked<'a>(
        &'a self,
        agent_did: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let r = &self.0;
            let mut cmd = redis::cmd("GET");
            cmd.arg(r.key("revoked", agent_did));
            Ok(match r.run::<Option<String>>(&cmd).await? {
                None => false,
                Some(v) if v == "never" => true,
                // A value that is not a time is treated as revoked for good (fail safe).
                Some(v) => v.parse::<u64>().map_or(true, |until| until > now_ms),
            })
        })
    }

    fn is_known<'a>(&'a self, agent_did: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let r = &self.0;
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(r.key("peers", agent_did));
            Ok(r.run::<u64>(&cmd).await? > 0)
        })
    }
}

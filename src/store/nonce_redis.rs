//! The replay store in Redis, shared by every replica.
//!
//! Keys, under the Redis prefix:
//! - `nonce:{<hex sha256(agentDid)>}:<hex sha256(agentDid "|" nonce)>`: set with a TTL covering
//!   the whole acceptance window (`docs/deviations.md` item 9), by a script that also keeps
//! - `nonces:{<hex sha256(agentDid)>}`: the agent's live records, a sorted set by expiry, so one
//!   agent holds at most `nonce.per_agent_capacity` of them (issue 18). The `{…}` hash tag keeps
//!   both in one slot of a Redis Cluster (`redis.cluster`).
//!
//! On one server, the nonces of every check waiting at a moment go to Redis in one script call:
//! a gatherer task takes all the checks queued while the previous call was out, so under load
//! one round trip (one write, one read, one reply parsed) serves many checks, and a lone check
//! goes at once, waiting for nothing. The script records them in queue order, exactly as one
//! call each would, so two checks of the same nonce in one call are one fresh and one replay.
//! In a cluster the keys of two agents may sit on two nodes, so each check there sends its own
//! call.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::nonce::{NonceOutcome, NonceStore};
use super::redis::{LuaScript, Redis};
use crate::registry::BoxFuture;

/// Checks one script call carries at most.
const BATCH: usize = 64;
/// Checks that may wait for the gatherer; past this a check waits to queue (its timeout runs).
const QUEUE: usize = 1024;

pub(crate) struct RedisNonceStore {
    redis: Redis,
    /// Live records one agent may hold.
    per_agent: u64,
    /// The gatherer's queue, started by the first check (one server only).
    queue: OnceLock<mpsc::Sender<Pending>>,
}

/// A check waiting for its nonce's answer.
struct Pending {
    record: String,
    agent: String,
    /// ttl ms, now ms, expiry ms, quota (the script's four arguments per check).
    args: [u64; 4],
    answer: oneshot::Sender<Result<i64, StoreError>>,
}

impl RedisNonceStore {
    pub(crate) fn new(redis: Redis, per_agent: u64) -> Self {
        RedisNonceStore {
            redis,
            per_agent,
            queue: OnceLock::new(),
        }
    }

    /// The gatherer's queue, or `None` in a cluster (or outside a runtime).
    fn queue(&self) -> Option<&mpsc::Sender<Pending>> {
        if self.redis.is_cluster() {
            return None;
        }
        if let Some(queue) = self.queue.get() {
            return Some(queue);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(self.queue.get_or_init(|| {
            let (queue, taken) = mpsc::channel(QUEUE);
            runtime.spawn(gather(self.redis.clone(), taken));
            queue
        }))
    }

    /// One check's nonce through the gatherer, within the Redis timeout; its own call when
    /// there is no gatherer (or it has stopped with its runtime).
    async fn record(
        &self,
        record: String,
        agent: String,
        args: [u64; 4],
    ) -> Result<i64, StoreError> {
        let Some(queue) = self.queue() else {
            return one(&self.redis, &record, &agent, &args).await;
        };
        let timeout = self.redis.timeout;
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            record,
            agent,
            args,
            answer,
        };
        let waited = tokio::time::timeout(timeout, async {
            match queue.send(pending).await {
                Ok(()) => answered.await.ok(),
                Err(mpsc::error::SendError(p)) => {
                    Some(one(&self.redis, &p.record, &p.agent, &p.args).await)
                }
            }
        });
        match waited.await {
            Ok(Some(answer)) => answer,
            // The gatherer dropped the check unanswered: only when its runtime stops.
            Ok(None) => Err(StoreError("redis: the nonce gatherer stopped".into())),
            Err(_) => Err(StoreError(format!(
                "redis: no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

/// Takes every check queued, sends their nonces in one call, answers each, and goes again.
/// Ends when the store (the queue's sender) is dropped.
async fn gather(redis: Redis, mut queue: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        // A check that already gave up (its timeout, while Redis was slow) is not recorded.
        batch.retain(|p| !p.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        let mut keys = Vec::with_capacity(2 * batch.len());
        let mut args = Vec::with_capacity(4 * batch.len());
        for p in &batch {
            keys.extend([p.record.as_str(), p.agent.as_str()]);
            args.extend(p.args);
        }
        let answers = redis
            .run_script::<Vec<i64>>(&RECORD_NONCES, &keys, &args)
            .await;
        let answers = match answers {
            Ok(all) if all.len() == batch.len() => all.into_iter().map(Ok).collect(),
            Ok(all) => vec![
                Err(StoreError(format!(
                    "redis: {} answers for {} nonces",
                    all.len(),
                    batch.len()
                )));
                batch.len()
            ],
            Err(e) => vec![Err(e); batch.len()],
        };
        for (p, answer) in batch.drain(..).zip(answers) {
            // A check that timed out no longer listens.
            let _ = p.answer.send(answer);
        }
    }
}

/// One check's nonce in a call of its own.
async fn one(redis: &Redis, record: &str, agent: &str, args: &[u64; 4]) -> Result<i64, StoreError> {
    let answers = redis
        .run_script::<Vec<i64>>(&RECORD_NONCES, &[record, agent], args)
        .await?;
    match answers.as_slice() {
        [answer] => Ok(*answer),
        other => Err(StoreError(format!(
            "redis: {} answers for one nonce",
            other.len()
        ))),
    }
}

/// For each check in turn, records its nonce unless it is live (0) or the agent holds its
/// quota (2); 1 when recorded. KEYS: per check, the nonce and the agent's set. ARGV: per check,
/// ttl ms, now ms, expiry ms, quota.
static RECORD_NONCES: LuaScript = LuaScript::new(
    r"
local answers = {}
for i = 1, #KEYS / 2 do
  local record, agent, a = KEYS[2 * i - 1], KEYS[2 * i], 4 * (i - 1)
  local ttl, now, expiry, quota = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
  redis.call('ZREMRANGEBYSCORE', agent, '-inf', now)
  if redis.call('EXISTS', record) == 1 then
    answers[i] = 0
  elseif redis.call('ZCARD', agent) >= quota then
    answers[i] = 2
  else
    redis.call('SET', record, 1, 'PX', ttl)
    redis.call('ZADD', agent, expiry, record)
    if redis.call('PTTL', agent) < tonumber(ttl) then
      redis.call('PEXPIRE', agent, ttl)
    end
    answers[i] = 1
  end
end
return answers
",
);

impl NonceStore for RedisNonceStore {
    fn check_and_record<'a>(
        &'a self,
        agent_did: &'a str,
        nonce: &'a str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<NonceOutcome, StoreError>> {
        Box::pin(async move {
            let ttl = expires_at_ms.saturating_sub(now_ms).max(1);
            let (record, agent) = nonce_keys(&self.redis, agent_did, nonce);
            let args = [ttl, now_ms, expires_at_ms, self.per_agent];
            match self.record(record, agent, args).await? {
                1 => Ok(NonceOutcome::Fresh),
                2 => Ok(NonceOutcome::OverQuota),
                _ => Ok(NonceOutcome::Replay),
            }
        })
    }

    fn forget<'a>(&'a self, agent_did: &'a str, nonce: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let r = &self.redis;
            let (record, agent) = nonce_keys(r, agent_did, nonce);
            let keys = [&*record, &*agent];
            if let Err(error) = r.run_script::<i64>(&FORGET_NONCE, &keys, &[]).await {
                tracing::debug!(%error, "a refused request's nonce was not dropped; it expires");
            }
        })
    }
}

/// Drops a nonce and its place in the agent's set. KEYS: the nonce, the agent's set.
static FORGET_NONCE: LuaScript = LuaScript::new(
    r"
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return 1
",
);

/// A nonce's record key and its agent's set, both tagged with the agent (`{<hex>}`), so a
/// cluster keeps them in one slot and one script can touch both.
fn nonce_keys(r: &Redis, agent_did: &str, nonce: &str) -> (String, String) {
    // `<prefix><kind>:{<agent hex>}`, built in place (the agent hashed once): this runs on
    // every check.
    let mut tag = String::with_capacity(66);
    tag.push('{');
    push_hex(&mut tag, &Sha256::digest(agent_did.as_bytes()));
    tag.push('}');
    let tagged = |kind: &str, extra: usize| {
        let mut key = String::with_capacity(r.prefix.len() + kind.len() + 1 + tag.len() + extra);
        key.push_str(&r.prefix);
        key.push_str(kind);
        key.push(':');
        key.push_str(&tag);
        key
    };
    let mut record = tagged("nonce", 65);
    record.push(':');
    push_hex(&mut record, &nonce_digest(agent_did, nonce));
    (record, tagged("nonces", 0))
}

/// `sha256(agentDid "|" nonce)`: a DID cannot contain `|`, so the pair is unambiguous.
fn nonce_digest(agent_did: &str, nonce: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(agent_did.as_bytes())
        .chain_update(b"|")
        .chain_update(nonce.as_bytes())
        .finalize()
        .into()
}

/// Appends `bytes` as lowercase hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::Target;
    use std::time::Duration;

    #[test]
    fn nonce_keys_are_the_hex_sha256_of_did_bar_nonce() {
        // printf 'did:cdi:a:agent:X|n-1' | sha256sum
        let mut hex = String::new();
        push_hex(&mut hex, &nonce_digest("did:cdi:a:agent:X", "n-1"));
        assert_eq!(
            hex,
            "d943fa7217d801028b92eef405cabd703930fdba4c212884ba27edb8f77f34ce"
        );
    }

    #[tokio::test]
    async fn nonce_keys_share_the_agents_hash_tag() {
        let redis = Redis::connect(
            &Target {
                url: "redis://127.0.0.1:1/0".into(),
                ca: None,
                cluster: false,
            },
            Duration::from_millis(50),
            "p:",
        )
        .unwrap();
        let (record, agent) = nonce_keys(&redis, "did:cdi:a:agent:X", "n-1");
        // printf 'did:cdi:a:agent:X' | sha256sum
        let tag = "{daa5cc4ae97db80d526cd14b4c3809e307d09dfbe74d2f2113d890105ed9b0c0}";
        assert_eq!(agent, format!("p:nonces:{tag}"));
        assert_eq!(
            record,
            format!(
                "p:nonce:{tag}:d943fa7217d801028b92eef405cabd703930fdba4c212884ba27edb8f77f34ce"
            )
        );
    }
}

//! Rate limits: GCRA (the generic cell rate algorithm), per key, in this process or in Redis.
//!
//! A limit of `requests` per `window` with `burst` lets `burst` requests through at once and then
//! one every `window / requests`; a refused request learns when the next would pass
//! (`retry-after`). The local limiter keeps one timestamp per hashed key in bounded shards (see
//! [`LocalLimiter`] for what a full one does); the Redis limiter runs the same arithmetic in one script per check,
//! so every replica shares the limit. Times come from the injected clock.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::registry::BoxFuture;
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limit {
    pub requests: u64,
    pub(crate) window_ms: u64,
    /// Requests allowed at once (default: `requests`).
    pub burst: u64,
}

impl Limit {
    /// Microseconds between two requests at the sustained rate.
    fn interval_us(&self) -> u64 {
        (self.window_ms * 1000 / self.requests.max(1)).max(1)
    }

    /// How far ahead of now the schedule may run (`burst - 1` intervals).
    fn tolerance_us(&self) -> u64 {
        self.interval_us() * self.burst.max(1).saturating_sub(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Refused; the next request passes after this long.
    Limited {
        retry_after_ms: u64,
    },
}

pub(crate) trait Limiter: Send + Sync + 'static {
    fn check<'a>(
        &'a self,
        key: &'a str,
        limit: &'a Limit,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Verdict, StoreError>>;

    /// Keys held by this process (`None` for a shared store).
    fn tracked(&self) -> Option<usize> {
        None
    }
}

/// The GCRA step: the key's theoretical arrival time `tat` (µs) becomes the returned one.
fn gcra(tat: Option<u64>, limit: &Limit, now_us: u64) -> (Verdict, Option<u64>) {
    let tat = tat.unwrap_or(now_us).max(now_us);
    let ahead = tat - now_us;
    if ahead > limit.tolerance_us() {
        let wait_us = ahead - limit.tolerance_us();
        return (
            Verdict::Limited {
                retry_after_ms: wait_us.div_ceil(1000),
            },
            None,
        );
    }
    (Verdict::Allow, Some(tat + limit.interval_us()))
}

/// This process only: per key, its theoretical arrival time, in shards of a fixed size.
///
/// Keys are hashed (a per-process random seed, so a caller cannot aim at another's slot), so a
/// long client address costs nothing to keep. A full shard is swept of drained keys (their
/// schedule is in the past, they hold no state) at most every [`SWEEP_EVERY_US`]; if it is still
/// full of live keys, a key it is not tracking is refused (limited for a second) rather than
/// let through unlimited: a flood of addresses cannot switch the limit off for newcomers.
pub(crate) struct LocalLimiter {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
}

#[derive(Default)]
struct Shard {
    tats: HashMap<u64, u64>,
    swept_us: u64,
}

const SHARDS: usize = 16;

/// A full shard is swept at most this often.
const SWEEP_EVERY_US: u64 = 100_000;

impl LocalLimiter {
    /// Tracks about `capacity` keys in all.
    pub(crate) fn new(capacity: usize) -> Self {
        LocalLimiter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The verdict for `key` at `now_us`, and its new schedule recorded.
    fn step(&self, key: &str, limit: &Limit, now_us: u64) -> Verdict {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[(hash as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let held = shard.tats.get(&hash).copied();
        if held.is_none() && shard.tats.len() >= self.per_shard {
            if now_us.saturating_sub(shard.swept_us) >= SWEEP_EVERY_US {
                shard.swept_us = now_us;
                shard.tats.retain(|_, tat| *tat > now_us);
            }
            if shard.tats.len() >= self.per_shard {
                return Verdict::Limited {
                    retry_after_ms: 1_000,
                };
            }
        }
        let (verdict, next) = gcra(held, limit, now_us);
        if let Some(next) = next {
            shard.tats.insert(hash, next);
        }
        verdict
    }

    /// Keys tracked now.
    pub(crate) fn len(&self) -> usize {
        let lock = |s: &Mutex<Shard>| s.lock().unwrap_or_else(|p| p.into_inner()).tats.len();
        self.shards.iter().map(lock).sum()
    }
}

impl Limiter for LocalLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        limit: &'a Limit,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Verdict, StoreError>> {
        let verdict = self.step(key, limit, now_ms.saturating_mul(1000));
        Box::pin(std::future::ready(Ok(verdict)))
    }

    fn tracked(&self) -> Option<usize> {
        Some(self.len())
    }
}

/// Shared by every replica: one `EVALSHA` per check.
pub(crate) struct RedisLimiter(pub crate::store::redis::Redis);

/// KEYS[1] = key; ARGV = now (µs), interval (µs), tolerance (µs). Returns -1 when allowed, else
/// the wait in µs.
static GCRA: crate::store::redis::LuaScript = crate::store::redis::LuaScript::new(
    r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then return tat - now - tolerance end
local next = tat + interval
redis.call('SET', KEYS[1], next, 'PX', math.ceil((next - now) / 1000) + 1)
return -1
",
);

impl Limiter for RedisLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        limit: &'a Limit,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Verdict, StoreError>> {
        Box::pin(async move {
            let key = self.0.key("rate", key);
            let now_us = now_ms.saturating_mul(1000);
            let args = [now_us, limit.interval_us(), limit.tolerance_us()];
            let wait: i64 = self.0.run_script(&GCRA, &[&key], &args).await?;
            Ok(match u64::try_from(wait) {
                Ok(us) => Verdict::Limited {
                    retry_after_ms: us.div_ceil(1000),
                },
                Err(_) => Verdict::Allow,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_MINUTE: Limit = Limit {
        requests: 60,
        window_ms: 60_000,
        burst: 60,
    };

    async fn run(l: &LocalLimiter, key: &str, now_ms: u64) -> Verdict {
        l.check(key, &PER_MINUTE, now_ms).await.unwrap()
    }

    #[tokio::test]
    async fn sixty_a_minute_then_one_a_second() {
        let l = LocalLimiter::new(100);
        for _ in 0..60 {
            assert_eq!(run(&l, "a", 1_000_000).await, Verdict::Allow);
        }
        assert_eq!(
            run(&l, "a", 1_000_000).await,
            Verdict::Limited {
                retry_after_ms: 1_000
            }
        );
        assert_eq!(run(&l, "b", 1_000_000).await, Verdict::Allow, "per key");
        assert_eq!(run(&l, "a", 1_001_000).await, Verdict::Allow);
        assert!(matches!(
            run(&l, "a", 1_001_000).await,
            Verdict::Limited { .. }
        ));
        // A quiet minute refills the burst.
        for _ in 0..60 {
            assert_eq!(run(&l, "a", 1_061_000).await, Verdict::Allow);
        }
    }

    /// A full limiter refuses keys it cannot track (never lets them through unlimited), keeps
    /// limiting the keys it tracks, and takes newcomers again once schedules have drained.
    #[tokio::test]
    async fn a_full_limiter_limits_new_keys_and_recovers_when_schedules_drain() {
        let l = LocalLimiter::new(SHARDS);
        let mut refused = 0;
        for i in 0..1_000 {
            if run(&l, &format!("k{i}"), 1_000_000).await != Verdict::Allow {
                refused += 1;
            }
        }
        assert_eq!(l.len(), SHARDS, "one key per shard");
        assert_eq!(refused, 1_000 - SHARDS);
        // Each held schedule is a second ahead; two seconds on, a sweep makes room.
        assert_eq!(run(&l, "new", 1_002_000).await, Verdict::Allow);
        assert!(l.len() <= SHARDS);
    }
}

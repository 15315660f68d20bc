//! Rate limits: GCRA (the generic cell rate algorithm), per key, in this process or in Redis.
//!
//! A limit of `requests` per `window` with `burst` lets `burst` requests through at once and then
//! one every `window / requests`; a refused request learns when the next would pass
//! (`retry-after`). The local limiter keeps one timestamp per key (bounded: keys whose state has
//! fully drained are dropped); the Redis limiter runs the same arithmetic in one script per check,
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

/// This process only.
#[derive(Debug)]
pub(crate) struct LocalLimiter {
    tats: Mutex<HashMap<String, u64>>,
    capacity: usize,
}

impl LocalLimiter {
    pub(crate) fn new(capacity: usize) -> Self {
        LocalLimiter {
            tats: Mutex::new(HashMap::new()),
            capacity,
        }
    }
}

impl Limiter for LocalLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        limit: &'a Limit,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Verdict, StoreError>> {
        let now_us = now_ms.saturating_mul(1000);
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let (verdict, next) = gcra(tats.get(key).copied(), limit, now_us);
        if let Some(next) = next {
            if tats.len() >= self.capacity && !tats.contains_key(key) {
                // Keys whose schedule is in the past hold no state worth keeping.
                tats.retain(|_, t| *t > now_us);
            }
            if tats.len() < self.capacity || tats.contains_key(key) {
                tats.insert(key.to_owned(), next);
            }
        }
        Box::pin(std::future::ready(Ok(verdict)))
    }
}

/// Shared by every replica: one `EVAL` per check.
pub(crate) struct RedisLimiter(pub crate::store::redis::Redis);

/// KEYS[1] = key; ARGV = now (µs), interval (µs), tolerance (µs). Returns -1 when allowed, else
/// the wait in µs.
const GCRA_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then return tat - now - tolerance end
local next = tat + interval
redis.call('SET', KEYS[1], next, 'PX', math.ceil((next - now) / 1000) + 1)
return -1
";

impl Limiter for RedisLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        limit: &'a Limit,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Verdict, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(GCRA_SCRIPT)
                .arg(1)
                .arg(self.0.key("rate", key))
                .arg(now_ms.saturating_mul(1000))
                .arg(limit.interval_us())
                .arg(limit.tolerance_us());
            let wait: i64 = self.0.run(&cmd).await?;
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
}

//! Load shapes: open loop at a fixed rate (latency counted from each request's scheduled start,
//! so a stalled server cannot hide its queue: no coordinated omission) or closed loop at maximum
//! throughput.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What a run measured.
#[derive(Debug, Default)]
pub struct Sample {
    /// Per completed request, microseconds.
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Sample {
    pub fn completed(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub fn rate(&self) -> f64 {
        self.completed() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds one turn of load, `part`, given `slice` with `available` requests left; answers how
    /// many it sent. Every request handed out was sent and answered (a worker past the deadline
    /// takes an index but sends nothing, and that request stays unused). A turn counts at least
    /// its slice (the next one's length is what is left of the duration), unless the requests
    /// ran out: it then ended early, and its own time counts.
    pub fn add_turn(&mut self, part: Sample, slice: Duration, available: usize) -> usize {
        let sent = (part.completed() + part.errors) as usize;
        self.latencies_us.extend(part.latencies_us);
        self.errors += part.errors;
        self.elapsed += match sent < available {
            true => part.elapsed.max(slice),
            false => part.elapsed,
        };
        sent
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50_us: u32,
    pub p90_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
    pub max_us: u32,
}

impl Percentiles {
    pub fn of(latencies: &mut [u32]) -> Percentiles {
        if latencies.is_empty() {
            return Percentiles::default();
        }
        latencies.sort_unstable();
        let at = |q: f64| {
            let rank = ((latencies.len() as f64) * q).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1]
        };
        Percentiles {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: at(1.0),
        }
    }
}

/// Sends request `i` (0, 1, 2, ...) at `start + i / rate` for `duration`, or until `available`
/// requests are used up; `send(i)` answers whether the request got the expected outcome.
/// A dedicated thread dispatches on time (the runtime's timers tick in milliseconds, which at
/// 1,000 rps would add up to a millisecond of the loader's own lag to every latency).
pub async fn open_loop<F, Fut>(rate: u32, duration: Duration, available: usize, send: F) -> Sample
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let send = Arc::new(send);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u32, bool)>();
    let rate = f64::from(rate.max(1));
    let total = ((duration.as_secs_f64() * rate) as usize).min(available);
    let runtime = tokio::runtime::Handle::current();
    let start = Instant::now();
    std::thread::spawn(move || {
        for i in 0..total {
            let intended = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            let (send, tx) = (send.clone(), tx.clone());
            runtime.spawn(async move {
                let ok = send(i).await;
                let us = u32::try_from(intended.elapsed().as_micros()).unwrap_or(u32::MAX);
                let _ = tx.send((us, ok));
            });
        }
    });
    let mut sample = Sample::default();
    while let Some((us, ok)) = rx.recv().await {
        record(&mut sample, us, ok);
    }
    sample.elapsed = start
        .elapsed()
        .max(Duration::from_secs_f64(total as f64 / rate));
    sample
}

/// `concurrency` workers each send their next request as soon as the previous one answered,
/// for `duration` or until `available` requests are used up.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    available: usize,
    send: F,
) -> Sample
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let send = Arc::new(send);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (send, next) = (send.clone(), next.clone());
        workers.spawn(async move {
            let mut sample = Sample::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= available || Instant::now() >= deadline {
                    return sample;
                }
                let began = Instant::now();
                let ok = send(i).await;
                let us = u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX);
                record(&mut sample, us, ok);
            }
        });
    }
    let mut sample = Sample::default();
    while let Some(Ok(part)) = workers.join_next().await {
        sample.latencies_us.extend(part.latencies_us);
        sample.errors += part.errors;
    }
    sample.elapsed = start.elapsed();
    sample
}

fn record(sample: &mut Sample, us: u32, ok: bool) {
    if ok {
        sample.latencies_us.push(us);
    } else {
        sample.errors += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut v: Vec<u32> = (1..=1000).rev().collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(
            (p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us),
            (500, 900, 990, 999, 1000)
        );
        assert_eq!(Percentiles::of(&mut []).p50_us, 0);
    }

    // Real time: the dispatcher is an OS thread on the wall clock, as in a real run.
    #[tokio::test]
    async fn open_loop_counts_from_the_schedule_not_from_the_send() {
        // The "server" answers one request at a time, 10 ms each, while requests are due every
        // 5 ms: the queue grows and the latency must show it (a closed loop would report 10 ms).
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let sample = open_loop(200, Duration::from_millis(100), 1000, move |_| {
            let lock = lock.clone();
            async move {
                let _one = lock.lock().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                true
            }
        })
        .await;
        assert_eq!(sample.completed(), 20);
        assert_eq!(sample.errors, 0);
        let mut l = sample.latencies_us.clone();
        let p = Percentiles::of(&mut l);
        // The last request, scheduled at 95 ms, finishes at 200 ms or later.
        assert!(p.max_us >= 105_000, "max {} us", p.max_us);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_stops_when_the_requests_run_out() {
        let sample = closed_loop(
            4,
            Duration::from_secs(60),
            10,
            |i| async move { i % 5 != 0 },
        )
        .await;
        assert_eq!(sample.completed(), 8);
        assert_eq!(sample.errors, 2);
    }
}

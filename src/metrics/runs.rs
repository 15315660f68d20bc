//! Measurements held per thread and handed to the SDK in runs.
//!
//! Every check records about nine histogram values (each stage, the check, the clock skew). The
//! SDK takes a lock per value, and with both worker threads recording into the same series the
//! lock's cache line moved between them on nearly every value. Here a value goes into its
//! thread's own buffer; a full buffer is recorded as one run on that thread (the SDK's lines
//! stay in its cache for the run), and every collection first takes in every buffer (a callback
//! of `Metrics::new`: the SDK runs callbacks before it reads any instrument), so an export or
//! a scrape sees every value recorded before it began, as before.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Values a buffer holds before its thread records them.
const RUN: usize = 64;

/// Buffers: more than the threads that record, so two rarely share one.
const SHARDS: usize = 16;

/// Buffers of `T`, one per thread (by a number each thread draws once).
pub(super) struct Runs<T> {
    shards: Box<[Shard<T>]>,
}

/// One buffer, alone on its cache lines.
#[repr(align(128))]
struct Shard<T>(Mutex<Vec<T>>);

impl<T> Runs<T> {
    pub(super) fn new() -> Self {
        Runs {
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(Vec::with_capacity(RUN))))
                .collect(),
        }
    }

    /// Holds `value` in this thread's buffer; when it is full, `record`s the whole run.
    pub(super) fn push(&self, value: T, record: impl FnMut(T)) {
        let Some(shard) = self.shards.get(this_thread() % SHARDS) else {
            return;
        };
        let mut held = shard.0.lock().unwrap_or_else(|p| p.into_inner());
        held.push(value);
        if held.len() >= RUN {
            held.drain(..).for_each(record);
        }
    }

    /// `record`s every value held, of every thread.
    pub(super) fn drain(&self, mut record: impl FnMut(T)) {
        for shard in &self.shards {
            let mut held = shard.0.lock().unwrap_or_else(|p| p.into_inner());
            held.drain(..).for_each(&mut record);
        }
    }
}

/// The calling thread's number, drawn on its first measurement.
fn this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: Cell<Option<usize>> = const { Cell::new(None) };
    }
    NUMBER.with(|n| {
        n.get().unwrap_or_else(|| {
            let drawn = NEXT.fetch_add(1, Ordering::Relaxed);
            n.set(Some(drawn));
            drawn
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values are recorded once each: in runs of `RUN` by the thread that pushed them, the rest
    /// when drained, from any thread.
    #[test]
    fn every_value_is_recorded_once_in_runs_or_when_drained() {
        let runs = std::sync::Arc::new(Runs::new());
        let recorded = std::sync::Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let (runs, recorded) = (runs.clone(), recorded.clone());
                std::thread::spawn(move || {
                    for i in 0..1_000u32 {
                        runs.push(t * 1_000 + i, |v| recorded.lock().unwrap().push(v));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let before_drain = recorded.lock().unwrap().len();
        // 1,000 = 15 runs of 64 and 40 held, per thread.
        assert_eq!(before_drain, 4 * 15 * RUN);
        runs.drain(|v| recorded.lock().unwrap().push(v));
        let mut all = std::mem::take(&mut *recorded.lock().unwrap());
        all.sort_unstable();
        assert_eq!(all, (0..4_000).collect::<Vec<_>>());
        runs.drain(|v| recorded.lock().unwrap().push(v));
        assert!(recorded.lock().unwrap().is_empty(), "drained once");
    }
}

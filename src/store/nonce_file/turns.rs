//! `fsync: interval`: the checks write their records to the log themselves, in turns (the
//! module's documentation, `nonce_file.rs`, says how).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{RECORD, Segments, encode};

/// `interval`'s log: records written by the checks, in turns.
pub(super) struct Direct {
    pub(super) segments: Arc<Mutex<Segments>>,
    pub(super) batch: Mutex<Batch>,
    failures: Arc<AtomicU64>,
    /// `write(2)` calls made, one per turn.
    pub(super) writes: AtomicU64,
}

/// Records waiting for the next write.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) records: Vec<u8>,
    now_ms: u64,
    max_expiry: u64,
    /// The checks whose records wait here, but the one whose turn it is.
    waiting: std::collections::VecDeque<tokio::sync::oneshot::Sender<Turn>>,
    /// A check has the turn: new records wait for it.
    pub(super) taken: bool,
    /// When the last write ended.
    last_write: Option<tokio::time::Instant>,
}

/// A turn taken this soon after the last write yields first (see `Direct::append`).
pub(super) const BUSY: std::time::Duration = std::time::Duration::from_micros(100);

/// What a waiting check is told.
pub(super) enum Turn {
    /// Its record was written (or the write failed).
    Written(Result<(), String>),
    /// Its record is still waiting, and it writes next.
    Yours,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Direct {
    pub(super) fn new(segments: Arc<Mutex<Segments>>, failures: Arc<AtomicU64>) -> Self {
        Direct {
            segments,
            batch: Mutex::default(),
            failures,
            writes: AtomicU64::new(0),
        }
    }

    /// Answers once the record is in the kernel's hands.
    pub(super) async fn append(
        &self,
        key: u128,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), String> {
        let waiting = {
            let mut batch = lock(&self.batch);
            encode(key, expires_at_ms, &mut batch.records);
            batch.now_ms = batch.now_ms.max(now_ms);
            batch.max_expiry = batch.max_expiry.max(expires_at_ms);
            match std::mem::replace(&mut batch.taken, true) {
                true => {
                    let (tell, told) = tokio::sync::oneshot::channel();
                    batch.waiting.push_back(tell);
                    Err(told)
                }
                false => Ok(batch.last_write.is_some_and(|t| t.elapsed() < BUSY)),
            }
        };
        let mut turn = match waiting {
            Ok(busy) => {
                let turn = WriteTurn {
                    log: self,
                    done: false,
                };
                // Under load, the checks already running on this thread add their records
                // first. Alone, the check writes at once: a yield would cost more than the
                // write (an idle worker woken, then parked again).
                if busy {
                    tokio::task::yield_now().await;
                }
                turn
            }
            Err(told) => {
                let mut waiting = Waiting { log: self, told };
                match (&mut waiting.told).await {
                    Ok(Turn::Written(result)) => return result,
                    Ok(Turn::Yours) => WriteTurn {
                        log: self,
                        done: false,
                    },
                    Err(_) => return Err("nonce log writer stopped".into()),
                }
            }
        };
        turn.take()
    }
}

/// A check waiting for its record to be written. Dropped (Envoy gave up on it) after it was
/// handed the turn but before it saw so, it takes the turn all the same.
pub(super) struct Waiting<'a> {
    pub(super) log: &'a Direct,
    pub(super) told: tokio::sync::oneshot::Receiver<Turn>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // Closed first: a turn handed on from here fails to send (and goes to the next check),
        // or was sent before and is read here. Read first, a turn sent between the read and
        // the receiver's drop would be lost with it, and every later check would wait forever.
        self.told.close();
        if let Ok(Turn::Yours) = self.told.try_recv() {
            let _ = WriteTurn {
                log: self.log,
                done: false,
            }
            .take();
        }
    }
}

/// A check's turn to write. Taken even when the check is dropped (Envoy gave up on it): the
/// records of the checks waiting for it are written all the same.
struct WriteTurn<'a> {
    log: &'a Direct,
    done: bool,
}

impl WriteTurn<'_> {
    /// Writes every waiting record, answers their checks, and hands on the turn.
    fn take(&mut self) -> Result<(), String> {
        self.done = true;
        let mut own = None;
        loop {
            let (records, now, max_expiry, waiting) = {
                let mut batch = lock(&self.log.batch);
                let records = std::mem::take(&mut batch.records);
                let waiting = std::mem::take(&mut batch.waiting);
                (records, batch.now_ms, batch.max_expiry, waiting)
            };
            let result = self.write(&records, now, max_expiry);
            for tell in waiting {
                let _ = tell.send(Turn::Written(result.clone()));
            }
            let own = own.get_or_insert(result).clone();
            // The checks that arrived during the write wait for the next turn: the first one
            // still waiting takes it. None left (all dropped): their records are written here.
            let mut batch = lock(&self.log.batch);
            batch.last_write = Some(tokio::time::Instant::now());
            if batch.records.is_empty() {
                batch.taken = false;
                return own;
            }
            while let Some(next) = batch.waiting.pop_front() {
                if next.send(Turn::Yours).is_ok() {
                    return own;
                }
            }
        }
    }

    fn write(&self, records: &[u8], now: u64, max_expiry: u64) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        self.log.writes.fetch_add(1, Ordering::Relaxed);
        let mut segments = lock(&self.log.segments);
        let written = segments.append(records, now, max_expiry);
        if let Err(e) = &written {
            segments.close_segment();
            drop(segments);
            let failed = (records.len() / RECORD) as u64;
            self.log.failures.fetch_add(failed, Ordering::Relaxed);
            tracing::error!(error = %e, "nonce log write failed");
        }
        written
    }
}

impl Drop for WriteTurn<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.take();
        }
    }
}

//! The embedded persistent nonce store: the memory store for lookups, in front of an append-only
//! log on local disk, so a nonce accepted before a restart (a crash or `kill -9` included) is
//! still a replay after it.
//!
//! A check is answered only after its record has been handed to the kernel (`write(2)`): from then
//! on it survives the process dying, whatever the signal. Surviving a machine crash or power loss
//! also needs the page cache flushed, and `nonce.fsync` chooses how:
//!
//! - `interval` (default): the checks write their records themselves, in turns, with no writer
//!   thread (handing every record to one cost more CPU per check than the rest of the store,
//!   BENCHMARKS.md). A check that finds no write under way takes the turn: under load (the last
//!   write ended less than 100 us before) it lets the checks already running on its thread add
//!   their records (one `yield`), then it writes every record waiting in one `write(2)`, answers
//!   their checks, and hands the next turn to the first check that arrived meanwhile. Under load
//!   one write serves several checks; alone, a check writes its own record at once. A syncer thread calls `fdatasync` every `fsync_interval_ms` when
//!   something was written, and flushes the directory after a new segment (a machine crash can
//!   forget up to that much, plus the flush's own duration).
//! - `always`: records go to a writer thread, and every record queued while it is writing goes out
//!   in the next single write and `fdatasync` (group commit), before the checks are answered.
//!
//! The log is a directory of segments `nonces-<sequence>.log`, each a run of 28-byte records:
//! a 16-byte key (see `record_key`), the expiry in unix ms (u64 LE), and the first 4 bytes of
//! SHA-256 over those 24 bytes. At startup every segment is read back into memory (records with a
//! bad checksum, such as a torn last one, are skipped; expired ones are dropped), and a new
//! segment is started. A segment is deleted once every record in it has expired; a new one is
//! started every `SEGMENT_MS` of writes or after a write error.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use sha2::{Digest, Sha256};

use super::StoreError;
use super::nonce::{MemoryNonceStore, NonceOutcome, NonceStore, agent_key, record_key};
use crate::registry::BoxFuture;

mod turns;

use turns::{Direct, lock};

const RECORD: usize = 28;
/// A segment takes writes for this long (by the records' clock) before the next one starts.
const SEGMENT_MS: u64 = 60_000;
/// At most this many records per write.
const MAX_BATCH: usize = 8_192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fsync {
    /// `fdatasync` before answering.
    Always,
    /// `fdatasync` at most this often (ms), after a write.
    Interval(u64),
}

struct Pending {
    key: u128,
    expires_at_ms: u64,
    now_ms: u64,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

pub struct FileNonceStore {
    memory: MemoryNonceStore,
    log: Log,
    restored: u64,
    write_failures: Arc<AtomicU64>,
}

/// Where a fresh record goes, by `nonce.fsync`.
enum Log {
    /// `interval`: written by the checks in turns; the syncer thread flushes.
    Direct(Direct),
    /// `always`: queued for the writer thread's group commit.
    Queued(mpsc::Sender<Pending>),
}

impl FileNonceStore {
    /// Reads back the log in `dir` (created if missing) and starts the writer.
    pub(crate) fn open(
        dir: &Path,
        capacity: usize,
        per_agent: usize,
        fsync: Fsync,
        now_ms: u64,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let memory = MemoryNonceStore::new(capacity, per_agent);
        let mut next_sequence = 0;
        let mut live = Vec::new();
        let mut restored = 0;
        for (sequence, path) in segments(dir)? {
            next_sequence = next_sequence.max(sequence + 1);
            let bytes =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut max_expiry = 0;
            for record in bytes.chunks_exact(RECORD) {
                let Some((key, expiry)) = decode(record) else {
                    continue;
                };
                max_expiry = max_expiry.max(expiry);
                if expiry > now_ms {
                    memory.restore(key, expiry, now_ms);
                    restored += 1;
                }
            }
            if max_expiry <= now_ms {
                let _ = std::fs::remove_file(&path);
            } else {
                live.push((path, max_expiry));
            }
        }
        let segments = Segments {
            dir: dir.to_owned(),
            sequence: next_sequence,
            file: None,
            segment_started_ms: 0,
            segment_max_expiry: 0,
            closed: live,
            unsynced: Vec::new(),
            dirty: false,
            defer_dir_sync: matches!(fsync, Fsync::Interval(_)),
            dir_unsynced: false,
        };
        let write_failures = Arc::new(AtomicU64::new(0));
        let log = match fsync {
            Fsync::Interval(every) => {
                let segments = Arc::new(Mutex::new(segments));
                let weak = Arc::downgrade(&segments);
                let every = std::time::Duration::from_millis(every.max(1));
                std::thread::Builder::new()
                    .name("nonce-log-sync".into())
                    .spawn(move || sync_every(&weak, every))
                    .map_err(|e| format!("cannot start the nonce log syncer: {e}"))?;
                Log::Direct(Direct::new(segments, write_failures.clone()))
            }
            Fsync::Always => {
                let (queue, rx) = mpsc::channel();
                let failures = write_failures.clone();
                std::thread::Builder::new()
                    .name("nonce-log".into())
                    .spawn(move || group_commit(segments, &rx, &failures))
                    .map_err(|e| format!("cannot start the nonce log writer: {e}"))?;
                Log::Queued(queue)
            }
        };
        tracing::info!(dir = %dir.display(), restored, "nonce log opened");
        Ok(FileNonceStore {
            memory,
            log,
            restored,
            write_failures,
        })
    }

    /// Live records read back at startup.
    pub fn restored(&self) -> u64 {
        self.restored
    }

    /// Writes that failed (each answered 503).
    pub fn write_failures(&self) -> u64 {
        self.write_failures.load(Ordering::Relaxed)
    }

    async fn record(
        &self,
        agent_did: &str,
        nonce: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<NonceOutcome, StoreError> {
        let key = record_key(agent_did, nonce);
        let agent = agent_key(agent_did);
        match self.memory.check_key(key, agent, expires_at_ms, now_ms)? {
            NonceOutcome::Fresh => {}
            refused @ (NonceOutcome::Replay | NonceOutcome::OverQuota) => return Ok(refused),
        }
        // Recorded in memory first, so a concurrent duplicate is already a replay; the answer
        // waits until the record is in the log. If the write fails, the nonce stays burned.
        let written = match &self.log {
            Log::Direct(direct) => direct.append(key, expires_at_ms, now_ms).await,
            Log::Queued(queue) => {
                let (done, written) = tokio::sync::oneshot::channel();
                let pending = Pending {
                    key,
                    expires_at_ms,
                    now_ms,
                    done,
                };
                queue
                    .send(pending)
                    .map_err(|_| StoreError("nonce log writer stopped".into()))?;
                written
                    .await
                    .map_err(|_| "nonce log writer stopped".to_owned())
                    .and_then(|r| r)
            }
        };
        match written {
            Ok(()) => Ok(NonceOutcome::Fresh),
            Err(e) => Err(StoreError(format!("nonce log write failed: {e}"))),
        }
    }
}

impl Drop for FileNonceStore {
    /// The last records are flushed (`interval`; the writer thread does it for `always`).
    fn drop(&mut self) {
        if let Log::Direct(direct) = &self.log {
            let mut segments = lock(&direct.segments);
            segments.sync();
        }
    }
}

impl NonceStore for FileNonceStore {
    fn check_and_record<'a>(
        &'a self,
        agent_did: &'a str,
        nonce: &'a str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<NonceOutcome, StoreError>> {
        Box::pin(self.record(agent_did, nonce, expires_at_ms, now_ms))
    }

    /// From memory only: the log keeps the record, so after a restart it is live again until it
    /// expires (the request it belonged to was refused; it can only be sent again later).
    fn forget<'a>(&'a self, agent_did: &'a str, nonce: &'a str) -> BoxFuture<'a, ()> {
        self.memory.forget_key(record_key(agent_did, nonce));
        Box::pin(std::future::ready(()))
    }

    fn refused_full(&self) -> u64 {
        self.memory.refused_full()
    }

    fn live_records(&self) -> Option<u64> {
        Some(self.memory.len() as u64)
    }
}

/// `(sequence, path)` of every segment in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let sequence = name
                .strip_prefix("nonces-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((sequence, entry.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn encode(key: u128, expiry: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&expiry.to_le_bytes());
    let sum = Sha256::digest(&out[start..]);
    out.extend_from_slice(&sum[..4]);
}

fn decode(record: &[u8]) -> Option<(u128, u64)> {
    let (body, sum) = record.split_at(24);
    if Sha256::digest(body)[..4] != *sum {
        return None;
    }
    let key = u128::from_le_bytes(body[..16].try_into().ok()?);
    let expiry = u64::from_le_bytes(body[16..].try_into().ok()?);
    Some((key, expiry))
}

/// The log's segments: the one taking writes and the earlier ones still holding live records.
struct Segments {
    dir: PathBuf,
    sequence: u64,
    file: Option<Arc<File>>,
    segment_started_ms: u64,
    segment_max_expiry: u64,
    /// Earlier segments still holding live records, with their latest expiry.
    closed: Vec<(PathBuf, u64)>,
    /// Closed segments the syncer has not flushed yet.
    unsynced: Vec<Arc<File>>,
    /// Written to since the syncer last flushed.
    dirty: bool,
    /// `interval`: a new segment's directory entry is flushed by the syncer, so a check that
    /// starts a segment does not wait for the disk; `always`: at once.
    defer_dir_sync: bool,
    /// A segment was created since the directory was last flushed.
    dir_unsynced: bool,
}

/// `fsync: interval`: flushes what was written every `every`, until the store is dropped.
fn sync_every(segments: &std::sync::Weak<Mutex<Segments>>, every: std::time::Duration) {
    loop {
        std::thread::sleep(every);
        let Some(segments) = segments.upgrade() else {
            return;
        };
        let (current, closed, dir) = {
            let mut s = segments.lock().unwrap_or_else(|p| p.into_inner());
            let current = s.file.clone().filter(|_| std::mem::take(&mut s.dirty));
            let dir = std::mem::take(&mut s.dir_unsynced).then(|| s.dir.clone());
            (current, std::mem::take(&mut s.unsynced), dir)
        };
        drop(segments);
        // Flushed outside the lock: checks keep writing meanwhile.
        for file in current.iter().chain(&closed) {
            if let Err(e) = file.sync_data() {
                tracing::error!(error = %e, "nonce log fdatasync failed");
            }
        }
        if let Some(dir) = dir {
            sync_dir(&dir);
        }
    }
}

/// Flushes `dir`'s entries (a new segment's name) to the disk.
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::error!(error = %e, "nonce log directory fsync failed");
    }
}

/// `fsync: always`: writes every queued record in one write and `fdatasync`, then answers them.
fn group_commit(mut segments: Segments, queue: &mpsc::Receiver<Pending>, failures: &AtomicU64) {
    let mut buf = Vec::with_capacity(RECORD * 64);
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let now = batch.iter().map(|p| p.now_ms).max().unwrap_or(0);
        buf.clear();
        for p in &batch {
            encode(p.key, p.expires_at_ms, &mut buf);
        }
        let max_expiry = batch.iter().map(|p| p.expires_at_ms).max().unwrap_or(0);
        let result = segments
            .append(&buf, now, max_expiry)
            .and_then(|()| segments.sync_current());
        if let Err(e) = &result {
            failures.fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::error!(error = %e, dir = %segments.dir.display(), "nonce log write failed");
            segments.close_segment();
        }
        for p in batch {
            let _ = p.done.send(result.clone());
        }
        // Every write was flushed before it was answered, closed segments included.
        segments.unsynced.clear();
    }
    segments.sync();
}

impl Segments {
    /// Appends `buf` (whole records) to the current segment, starting a new one when it is due.
    fn append(&mut self, buf: &[u8], now: u64, max_expiry: u64) -> Result<(), String> {
        if self.file.is_some() && now.saturating_sub(self.segment_started_ms) >= SEGMENT_MS {
            self.close_segment();
        }
        if self.file.is_none() {
            self.open_segment(now)?;
        }
        let file = self.file.as_ref().ok_or("no segment")?;
        (&**file).write_all(buf).map_err(|e| e.to_string())?;
        self.dirty = true;
        self.segment_max_expiry = self.segment_max_expiry.max(max_expiry);
        Ok(())
    }

    fn sync_current(&self) -> Result<(), String> {
        match &self.file {
            Some(file) => file.sync_data().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Flushes the current segment, the closed ones not flushed yet, and the directory.
    fn sync(&mut self) {
        for file in self.file.iter().chain(&self.unsynced) {
            let _ = file.sync_data();
        }
        if std::mem::take(&mut self.dir_unsynced) {
            sync_dir(&self.dir);
        }
        self.unsynced.clear();
        self.dirty = false;
    }

    fn open_segment(&mut self, now: u64) -> Result<(), String> {
        // Segments whose every record has expired are no longer needed.
        self.closed.retain(|(path, max_expiry)| {
            let keep = *max_expiry > now;
            if !keep {
                let _ = std::fs::remove_file(path);
            }
            keep
        });
        let path = self.path(self.sequence);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        // The new file's directory entry must survive a crash too.
        match self.defer_dir_sync {
            true => self.dir_unsynced = true,
            false => sync_dir(&self.dir),
        }
        self.sequence += 1;
        self.file = Some(Arc::new(file));
        self.segment_started_ms = now;
        self.segment_max_expiry = 0;
        Ok(())
    }

    /// Stops writing to the current segment; it is flushed by the syncer (`interval`) or at once.
    fn close_segment(&mut self) {
        if let Some(f) = self.file.take() {
            self.unsynced.push(f);
            let path = self.path(self.sequence.saturating_sub(1));
            self.closed.push((path, self.segment_max_expiry));
        }
    }

    fn path(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("nonces-{sequence:012}.log"))
    }
}

#[cfg(test)]
mod tests;

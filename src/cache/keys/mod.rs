//! The registry's signing keys, cached.
//!
//! Reference behaviour (docs/protocol.md §2): keys are fetched before a token is even parsed, kept
//! for `keys_ttl`, refetched when stale, and force-refetched when a token names an unknown `kid`.
//! A failed fetch is not cached. The first successful load marks the sidecar ready.
//!
//! Unlike the reference (`docs/deviations.md` item 1), keys past `keys_ttl` keep being served while a
//! background refresh runs, for up to `keys_max_stale` (a warning is logged and counted each time);
//! only then is a missing key set a 503. A `kid` miss refetches at most once per
//! `kid_miss_cooldown` and one caller at a time: a flood of tokens with random `kid`s costs the
//! registry one fetch per cooldown, not one per request, while a genuinely rotated key is picked
//! up by the first token that names it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use tokio::sync::watch;

use crate::clock::{Clock, Every};
use crate::protocol::keys::{KeySet, KeysDocError, parse_keys_document};
use crate::registry::{KeySource, TransportError};

/// How long keys stay fresh, how long they may be served stale, how often a `kid` miss may fetch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyTiming {
    pub(crate) ttl_ms: u64,
    pub(crate) max_stale_ms: u64,
    pub(crate) kid_miss_cooldown_ms: u64,
}

/// A failed background refresh of stale keys is retried at most this often.
const STALE_RETRY_MS: u64 = 10_000;

/// With no keys held, a failed fetch is retried by a check at most this often.
const COLD_RETRY_MS: u64 = 1_000;

/// Turns a fetched key document into keys: the registry's `claw-keys.json`, or a JWKS.
pub(crate) type KeyParser = fn(&[u8]) -> Result<KeySet, KeysDocError>;

pub struct KeyCache {
    source: Arc<dyn KeySource>,
    parser: KeyParser,
    clock: Arc<dyn Clock>,
    timing: KeyTiming,
    /// The held key set, read by every check without a lock.
    state: ArcSwapOption<Loaded>,
    /// A background refresh is running.
    refreshing: AtomicBool,
    last_background_attempt_ms: AtomicU64,
    stale_served: AtomicU64,
    /// The stale-keys warning, at most every 10 s.
    stale_log: Every,
    pub counts: crate::metrics::CacheCounts,
    /// When a `kid` miss last caused a fetch.
    last_miss_fetch_ms: Mutex<Option<u64>>,
    /// Serializes `kid`-miss refreshes (single flight).
    miss_gate: tokio::sync::Mutex<()>,
    /// The cold path's single flight, and its last failure (when, what).
    cold_gate: tokio::sync::Mutex<Option<(u64, KeysError)>>,
    ready: watch::Sender<bool>,
}

#[derive(Clone)]
struct Loaded {
    keys: KeySet,
    fetched_at_ms: u64,
}

impl KeyCache {
    pub(crate) fn new(
        source: Arc<dyn KeySource>,
        clock: Arc<dyn Clock>,
        timing: KeyTiming,
    ) -> Self {
        KeyCache::with_parser(source, clock, timing, parse_keys_document)
    }

    /// A cache of keys in another format (the bearer profile's JWKS).
    pub(crate) fn with_parser(
        source: Arc<dyn KeySource>,
        clock: Arc<dyn Clock>,
        timing: KeyTiming,
        parser: KeyParser,
    ) -> Self {
        KeyCache {
            source,
            parser,
            clock,
            timing,
            state: ArcSwapOption::empty(),
            refreshing: AtomicBool::new(false),
            last_background_attempt_ms: AtomicU64::new(0),
            stale_served: AtomicU64::new(0),
            stale_log: Every::new(),
            counts: Default::default(),
            last_miss_fetch_ms: Mutex::new(None),
            miss_gate: tokio::sync::Mutex::new(()),
            cold_gate: tokio::sync::Mutex::new(None),
            ready: watch::channel(false).0,
        }
    }

    /// A token named `kid`, which the cached set lacks. Refetches unless a `kid` miss already
    /// did within the cooldown; concurrent callers wait for the one fetch and share its result.
    pub(crate) async fn refresh_for_unknown_kid(&self, kid: &str) -> Result<KeySet, KeysError> {
        let _one = self.miss_gate.lock().await;
        let cached = self.state.load_full();
        if let Some(l) = &cached
            && l.keys.get(kid).is_some()
        {
            return Ok(l.keys.clone()); // another caller's refresh brought it
        }
        let now = self.clock.now_ms();
        let cooling = {
            let mut last = self
                .last_miss_fetch_ms
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let cooling =
                last.is_some_and(|t| now.saturating_sub(t) < self.timing.kid_miss_cooldown_ms);
            if !cooling {
                *last = Some(now);
            }
            cooling
        };
        match cached {
            Some(l) if cooling => Ok(l.keys.clone()),
            _ => self.refresh().await,
        }
    }

    /// With no usable keys held: one fetch at a time, and after a failed one the next waits
    /// [`COLD_RETRY_MS`]; checks arriving meanwhile share the last answer instead of calling.
    async fn load_cold(&self, now: u64) -> Result<KeySet, KeysError> {
        let mut last_failure = self.cold_gate.lock().await;
        if let Some(l) = self.state.load_full()
            && self.clock.now_ms().saturating_sub(l.fetched_at_ms) <= self.timing.max_stale_ms
        {
            return Ok(l.keys.clone()); // loaded while this check waited
        }
        if let Some((at, error)) = *last_failure
            && now.saturating_sub(at) < COLD_RETRY_MS
        {
            return Err(error);
        }
        let loaded = self.refresh().await;
        // Stamped when the fetch ended, so a slow failing fetch still holds the others back.
        let ended = self.clock.now_ms();
        *last_failure = loaded.as_ref().err().map(|e| (ended, *e));
        loaded
    }

    /// Whether a usable key set is held (a check may then verify without any fetch).
    pub(crate) fn loaded(&self) -> bool {
        let now = self.clock.now_ms();
        self.state
            .load()
            .as_ref()
            .is_some_and(|l| now.saturating_sub(l.fetched_at_ms) <= self.timing.max_stale_ms)
    }

    /// Becomes `true` once keys have loaded, and stays so.
    pub(crate) fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// How many checks were answered with stale keys.
    pub fn stale_served(&self) -> u64 {
        self.stale_served.load(Ordering::Relaxed)
    }

    /// The cached keys while fresh (`now - fetched_at <= ttl`); stale ones up to `max_stale`
    /// while a background refresh runs; else a fetch now.
    pub(crate) async fn current(self: &Arc<Self>) -> Result<KeySet, KeysError> {
        let now = self.clock.now_ms();
        let cached = self.state.load_full();
        match cached {
            Some(l) if now.saturating_sub(l.fetched_at_ms) <= self.timing.ttl_ms => {
                self.counts.hit();
                Ok(l.keys.clone())
            }
            Some(l) if now.saturating_sub(l.fetched_at_ms) <= self.timing.max_stale_ms => {
                self.counts.stale();
                self.stale_served.fetch_add(1, Ordering::Relaxed);
                if let Some(skipped) = self.stale_log.due(now) {
                    tracing::warn!(
                        age_secs = now.saturating_sub(l.fetched_at_ms) / 1000,
                        skipped,
                        "serving stale registry signing keys while refreshing"
                    );
                }
                self.refresh_in_background(now);
                Ok(l.keys.clone())
            }
            _ => {
                self.counts.miss();
                self.load_cold(now).await
            }
        }
    }

    /// Age of the held key set, if any.
    /// How long the held keys have been past their TTL (0 while fresh; `None` before any load).
    pub(crate) fn stale_for_ms(&self, now_ms: u64) -> Option<u64> {
        self.age_ms(now_ms)
            .map(|age| age.saturating_sub(self.timing.ttl_ms))
    }

    pub(crate) fn age_ms(&self, now_ms: u64) -> Option<u64> {
        self.state
            .load()
            .as_ref()
            .map(|l| now_ms.saturating_sub(l.fetched_at_ms))
    }

    /// Starts one background refresh unless one is running or one failed within the retry delay.
    fn refresh_in_background(self: &Arc<Self>, now: u64) {
        let last = self.last_background_attempt_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < STALE_RETRY_MS {
            return;
        }
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.last_background_attempt_ms
            .store(now, Ordering::Relaxed);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(error) = this.refresh().await {
                tracing::warn!(%error, "background refresh of signing keys failed");
            }
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Fetches the document now and replaces the cache on success.
    pub(crate) async fn refresh(&self) -> Result<KeySet, KeysError> {
        let keys = match self.source.fetch_keys().await {
            Err(e) => return Err(KeysError::Transport(e)),
            Ok(r) if !(200..300).contains(&r.status) => {
                tracing::warn!(status = r.status, "registry keys fetch answered non-2xx");
                return Err(KeysError::Status(r.status));
            }
            Ok(r) => (self.parser)(&r.body).map_err(|e| {
                tracing::warn!(error = ?e, "registry keys document refused");
                KeysError::Document(e)
            })?,
        };
        self.state.store(Some(Arc::new(Loaded {
            keys: keys.clone(),
            fetched_at_ms: self.clock.now_ms(),
        })));
        self.ready.send_replace(true);
        Ok(keys)
    }
}

/// Why no key set could be had: a fact about the source; the stages decide the denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeysError {
    /// No HTTP answer.
    Transport(TransportError),
    /// A non-2xx answer.
    Status(u16),
    /// An answer that is not a usable key document.
    Document(KeysDocError),
}

impl std::fmt::Display for KeysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeysError::Transport(e) => write!(f, "keys unavailable: {}", e.reason()),
            KeysError::Status(status) => write!(f, "keys unavailable: status {status}"),
            KeysError::Document(e) => write!(f, "keys document refused: {e:?}"),
        }
    }
}

#[cfg(test)]
mod tests;

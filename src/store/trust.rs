//! The trust store: which agents are known (paired with at least one peer) and which are
//! revoked by the overlay that registry events write.
//!
//! The file store reads a YAML (or JSON) file and keeps an immutable snapshot; a background task
//! reloads it when its modification time changes. A file that fails to parse leaves the last good
//! snapshot in place and is logged, so a bad edit never opens or closes the door by accident.
//!
//! ```yaml
//! pairs:
//!   - [did:cdi:registry.example.com:agent:01..., did:cdi:registry.example.com:agent:01...]
//! revoked_agents:
//!   - did:cdi:registry.example.com:agent:01...          # revoked until removed
//!   - { did: "did:cdi:...", expires_at_ms: 1769817600000 }
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::StoreError;
use crate::registry::BoxFuture;

pub trait TrustStore: Send + Sync + 'static {
    fn is_revoked<'a>(
        &'a self,
        agent_did: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// An agent is known when it has at least one peer.
    fn is_known<'a>(&'a self, agent_did: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The answers at once, from a store that holds them in memory and cannot fail (the file):
    /// asked directly, with nothing cached in front (`cache::trust`). `None`: a store to ask
    /// with `is_revoked` and `is_known`.
    fn in_memory(&self) -> Option<arc_swap::Guard<Arc<TrustSnapshot>>> {
        None
    }
}

/// Agent DIDs come from the trust file; the per-process seed keeps the lookups DoS-resistant
/// at a third of SipHash's cost.
type Hasher = foldhash::fast::RandomState;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrustSnapshot {
    known: HashSet<String, Hasher>,
    /// Revoked agent -> expiry in unix ms (`u64::MAX` for never).
    revoked: HashMap<String, u64, Hasher>,
}

impl TrustSnapshot {
    pub(crate) fn new(pairs: &[(String, String)], revoked: &[(String, u64)]) -> Self {
        let mut known = HashSet::default();
        for (a, b) in pairs {
            known.insert(a.clone());
            known.insert(b.clone());
        }
        TrustSnapshot {
            known,
            revoked: revoked.iter().cloned().collect(),
        }
    }

    pub(crate) fn is_known(&self, agent_did: &str) -> bool {
        self.known.contains(agent_did)
    }

    pub(crate) fn is_revoked(&self, agent_did: &str, now_ms: u64) -> bool {
        self.revoked.get(agent_did).is_some_and(|&exp| exp > now_ms)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    #[serde(default)]
    pairs: Vec<(String, String)>,
    #[serde(default)]
    revoked_agents: Vec<RevokedEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RevokedEntry {
    Did(String),
    WithExpiry { did: String, expires_at_ms: u64 },
}

pub(crate) fn parse_trust_file(text: &str) -> Result<TrustSnapshot, String> {
    let file: TrustFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let revoked: Vec<(String, u64)> = file
        .revoked_agents
        .into_iter()
        .map(|e| match e {
            RevokedEntry::Did(d) => (d, u64::MAX),
            RevokedEntry::WithExpiry { did, expires_at_ms } => (did, expires_at_ms),
        })
        .collect();
    Ok(TrustSnapshot::new(&file.pairs, &revoked))
}

/// A trust store read from a file and reloaded when the file changes.
#[derive(Debug)]
pub(crate) struct FileTrustStore {
    path: Option<PathBuf>,
    snapshot: ArcSwap<TrustSnapshot>,
    modified: RwLock<Option<SystemTime>>,
}

impl FileTrustStore {
    /// Loads the file now; a missing or invalid file at start is an error (config problem).
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let snapshot = parse_trust_file(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(FileTrustStore {
            path: Some(path.to_owned()),
            snapshot: ArcSwap::from_pointee(snapshot),
            modified: RwLock::new(modified(path)),
        })
    }

    /// A store with no file: nobody is known, nobody is revoked.
    pub(crate) fn empty() -> Self {
        FileTrustStore {
            path: None,
            snapshot: ArcSwap::from_pointee(TrustSnapshot::default()),
            modified: RwLock::new(None),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<TrustSnapshot> {
        self.snapshot.load_full()
    }

    /// Reloads if the file's modification time changed; returns whether it did.
    pub(crate) fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let now = modified(path);
        if now == *self.modified.read().unwrap_or_else(|p| p.into_inner()) {
            return false;
        }
        *self.modified.write().unwrap_or_else(|p| p.into_inner()) = now;
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_trust_file(&t))
        {
            Ok(snapshot) => {
                self.snapshot.store(Arc::new(snapshot));
                tracing::info!(path = %path.display(), "trust file reloaded");
                true
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "trust file invalid; keeping the last good one");
                false
            }
        }
    }

    /// Polls the file every `every` until the store is dropped.
    pub(crate) fn watch(self: &Arc<Self>, every: Duration) {
        if self.path.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { break };
                store.reload_if_changed();
            }
        });
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl TrustStore for FileTrustStore {
    fn is_revoked<'a>(
        &'a self,
        agent_did: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let answer = self.snapshot().is_revoked(agent_did, now_ms);
        Box::pin(std::future::ready(Ok(answer)))
    }

    fn is_known<'a>(&'a self, agent_did: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let answer = self.snapshot().is_known(agent_did);
        Box::pin(std::future::ready(Ok(answer)))
    }

    fn in_memory(&self) -> Option<arc_swap::Guard<Arc<TrustSnapshot>>> {
        Some(self.snapshot.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_revocations() {
        let s = parse_trust_file(
            "pairs:\n  - [a, b]\nrevoked_agents:\n  - c\n  - {did: d, expires_at_ms: 10}\n",
        )
        .unwrap();
        assert!(s.is_known("a") && s.is_known("b") && !s.is_known("c"));
        assert!(s.is_revoked("c", u64::MAX - 1));
        assert!(s.is_revoked("d", 9) && !s.is_revoked("d", 10));
        assert!(parse_trust_file("pairs: [[a]]\n").is_err());
        assert!(parse_trust_file("peers: []\n").is_err());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // file modification times are wall-clock times
    fn reload_keeps_last_good_snapshot() {
        let dir = std::env::temp_dir().join(format!("claw-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trust.yaml");
        std::fs::write(&path, "pairs: [[a, b]]\n").unwrap();
        let store = FileTrustStore::load(&path).unwrap();
        assert!(store.snapshot().is_known("a"));
        std::fs::write(&path, "pairs: [[c, d]]\n").unwrap();
        let t = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(t)
            .unwrap();
        assert!(store.reload_if_changed());
        assert!(store.snapshot().is_known("c") && !store.snapshot().is_known("a"));
        std::fs::write(&path, "pairs: nonsense: [\n").unwrap();
        let t = t + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(t)
            .unwrap();
        assert!(!store.reload_if_changed());
        assert!(store.snapshot().is_known("c"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

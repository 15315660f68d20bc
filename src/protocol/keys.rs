//! The registry's `/.well-known/claw-keys.json` document and the key set verifiers use.
//!
//! The reference's rules: the body is `{"keys":[...]}`; every entry must be well formed or the
//! whole document is refused; `kid`s are unique; only `active` keys verify. Beyond the reference,
//! an entry may be a P-256 key (`alg ES256`, `crv P-256`, `x`, `y`), and Ed25519 keys must not be
//! weak points, and an entry that declares a `use` other than `sig` is malformed. Keys are parsed here once; the [`KeySet`] is what callers cache.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::b64;
use super::json::{Json, Object};
use crate::crypto::{Ed25519Key, P256Key, PublicKey};

/// The active keys of one document, by `kid`: a lookup is one hash probe however large the
/// document (a JWKS may hold thousands of keys), and a clone is a reference count.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Arc<[(String, PublicKey)]>,
    by_kid: Arc<HashMap<String, usize>>,
}

impl KeySet {
    /// The first key of each `kid` wins (documents are refused for repeats before this).
    pub fn new(keys: Vec<(String, PublicKey)>) -> Self {
        let mut by_kid = HashMap::with_capacity(keys.len());
        for (i, (kid, _)) in keys.iter().enumerate() {
            by_kid.entry(kid.clone()).or_insert(i);
        }
        KeySet {
            keys: keys.into(),
            by_kid: Arc::new(by_kid),
        }
    }

    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.by_kid.get(kid).map(|&i| &self.keys[i].1)
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, _)| k.as_str())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why a keys document is unusable; each maps to a 503 with the reference's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysDocError {
    /// Not `{"keys":[...]}`.
    PayloadInvalid,
    /// Some entry is malformed, weak or duplicated.
    Invalid,
    /// Well formed, but no active key.
    NoActiveKey,
}

impl KeysDocError {
    pub fn message(self) -> &'static str {
        match self {
            KeysDocError::PayloadInvalid => "Registry signing keys payload is invalid",
            KeysDocError::Invalid => "Registry signing keys are invalid",
            KeysDocError::NoActiveKey => "Registry signing keys are unavailable",
        }
    }

    /// The reference's `details.reason`, where it sets one.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            KeysDocError::Invalid => Some("Registry configuration is invalid"),
            _ => None,
        }
    }
}

pub fn parse_keys_document(body: &[u8]) -> Result<KeySet, KeysDocError> {
    // Read as the reference's `response.json()` reads it (a repeated member keeps the last).
    let doc = Json::parse_lenient(body).map_err(|_| KeysDocError::PayloadInvalid)?;
    let Some(Json::Array(entries)) = doc.as_object().and_then(|o| o.get("keys")) else {
        return Err(KeysDocError::PayloadInvalid);
    };
    let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
    let mut active = Vec::new();
    for entry in entries {
        let entry = entry.as_object().ok_or(KeysDocError::Invalid)?;
        let kid = match entry.get("kid").and_then(Json::as_str) {
            Some(k) if !k.is_empty() && seen.insert(k) => k,
            _ => return Err(KeysDocError::Invalid),
        };
        let key = parse_entry_key(entry).ok_or(KeysDocError::Invalid)?;
        match entry.get("status").and_then(Json::as_str) {
            Some("active") => active.push((kid.to_owned(), key)),
            Some("revoked") => {}
            _ => return Err(KeysDocError::Invalid),
        }
    }
    if active.is_empty() {
        return Err(KeysDocError::NoActiveKey);
    }
    Ok(KeySet::new(active))
}

fn parse_entry_key(entry: &Object) -> Option<PublicKey> {
    let text = |name| entry.get(name).and_then(Json::as_str);
    // Extra members are ignored as in the reference, except a declared non-signature use.
    if entry.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return None;
    }
    match (text("alg")?, text("crv")?) {
        ("EdDSA", "Ed25519") => {
            let x = b64::decode_array::<32>(text("x")?).ok()?;
            Ed25519Key::from_bytes(&x).ok().map(PublicKey::Ed25519)
        }
        ("ES256", "P-256") => {
            let x = b64::decode_array::<32>(text("x")?).ok()?;
            let y = b64::decode_array::<32>(text("y")?).ok()?;
            P256Key::from_coordinates(&x, &y).ok().map(PublicKey::P256)
        }
        _ => None,
    }
}

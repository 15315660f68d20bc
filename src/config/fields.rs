//! Reading typed values out of the YAML tree while collecting every problem.

use std::net::SocketAddr;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::choices::Choice;
use super::service::ListenAddr;

/// Reads settings out of the YAML tree, one section at a time: every method takes a key
/// relative to the current section ([`Reader::section`]), records every problem instead of
/// stopping, and notes each key it reads with its effective value (the default when absent).
/// The keys read are the known keys: whatever else the file holds is an unknown setting
/// ([`Reader::finish`]), so each key is written once, in its reader.
pub(super) struct Reader<'a> {
    root: &'a Value,
    errors: &'a mut Vec<String>,
    section: &'static str,
    /// Every key read (full path) and its effective value, in reading order.
    read: Vec<(String, Value)>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(root: &'a Value, errors: &'a mut Vec<String>) -> Self {
        Reader {
            root,
            errors,
            section: "",
            read: Vec::new(),
        }
    }

    /// Reads `name`'s keys from here on (`""`: keys are full paths).
    pub(super) fn section(&mut self, name: &'static str) -> &mut Self {
        self.section = name;
        self
    }

    fn full(&self, key: &str) -> String {
        match self.section {
            "" => key.to_owned(),
            section => format!("{section}.{key}"),
        }
    }

    /// Notes `key` (relative) as read, with its effective value.
    pub(super) fn note(&mut self, key: &str, value: Value) {
        let full = self.full(key);
        self.read.push((full, value));
    }

    pub(super) fn error(&mut self, key: &str, problem: &str) {
        let full = self.full(key);
        self.errors.push(format!("{full}: {problem}"));
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        let mut v: &'a Value = self.root;
        for part in self.section.split('.').chain(key.split('.')) {
            if !part.is_empty() {
                v = v.as_mapping()?.get(part)?;
            }
        }
        Some(v).filter(|v| !v.is_null())
    }

    /// Refuses every setting of the file no reader asked for, and returns the effective
    /// configuration: every key read, with its value.
    pub(super) fn finish(self) -> Value {
        let read: std::collections::HashSet<&str> =
            self.read.iter().map(|(k, _)| k.as_str()).collect();
        check_unknown(self.root, "", &read, self.errors);
        let mut effective = Value::Mapping(Mapping::new());
        for (key, value) in self.read {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set_path(&mut effective, &path, value);
        }
        effective
    }

    pub(super) fn opt_string(&mut self, key: &str) -> Option<String> {
        let found = match self.get(key) {
            None => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(other) => {
                let text = yaml_text(other);
                self.error(key, &format!("must be a non-empty string, got {text}"));
                None
            }
        };
        self.note(key, found.clone().map_or(Value::Null, Value::String));
        found
    }

    /// A string with a default.
    pub(super) fn string(&mut self, key: &str, default: &str) -> String {
        let found = self.opt_string(key).unwrap_or_else(|| default.to_owned());
        self.note(key, Value::String(found.clone()));
        found
    }

    pub(super) fn u64(&mut self, key: &str, default: u64, min: u64, max: u64) -> u64 {
        let n = self.integer(key, default, min, max);
        self.note(key, Value::from(n));
        n
    }

    /// A time given in seconds.
    pub(super) fn secs(&mut self, key: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_secs(self.u64(key, default, min, max))
    }

    /// A time given in milliseconds.
    pub(super) fn millis(&mut self, key: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.u64(key, default, min, max))
    }

    /// A time given in days.
    pub(super) fn days(&mut self, key: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_secs(self.u64(key, default, min, max) * 86_400)
    }

    fn integer(&mut self, key: &str, default: u64, min: u64, max: u64) -> u64 {
        match self.get(key) {
            None => default,
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => n,
                _ => {
                    let text = yaml_text(v);
                    self.error(
                        key,
                        &format!("must be an integer from {min} to {max}, got {text}"),
                    );
                    default
                }
            },
        }
    }

    pub(super) fn bool(&mut self, key: &str, default: bool) -> bool {
        let found = match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                let text = yaml_text(v);
                self.error(key, &format!("must be true or false, got {text}"));
                default
            }
        };
        self.note(key, Value::Bool(found));
        found
    }

    pub(super) fn choice(
        &mut self,
        key: &str,
        default: &'static str,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        let found = self.one_of(key, default, allowed);
        self.note(key, Value::String(found.unwrap_or(default).to_owned()));
        found
    }

    fn one_of(
        &mut self,
        key: &str,
        default: &'static str,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        match self.get(key) {
            None => Some(default),
            Some(v) => {
                let found = v
                    .as_str()
                    .and_then(|s| allowed.iter().find(|a| **a == s).copied());
                if found.is_none() {
                    let text = yaml_text(v);
                    self.error(
                        key,
                        &format!("must be one of {}, got {text}", allowed.join(", ")),
                    );
                }
                found
            }
        }
    }

    /// One of a closed setting's words, as its enum; the default when absent or wrong (a wrong
    /// word is recorded as a problem).
    pub(super) fn pick<T: Choice>(&mut self, key: &str, default: T) -> T {
        let words: Vec<&'static str> = T::ALL.iter().map(|c| c.as_str()).collect();
        let chosen = self.choice(key, default.as_str(), &words);
        T::ALL
            .iter()
            .copied()
            .find(|c| Some(c.as_str()) == chosen)
            .unwrap_or(default)
    }

    pub(super) fn addr(&mut self, key: &str, default: &str) -> Option<SocketAddr> {
        let text = match self.get(key) {
            None => default.to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => yaml_text(other),
        };
        let parsed = text.parse().ok();
        if parsed.is_none() {
            self.error(key, &format!("must be an ip:port address, got {text}"));
        }
        self.note(key, Value::String(text));
        parsed
    }

    /// An `ip:port` address, or `unix:<absolute path>` for a Unix domain socket.
    pub(super) fn listen_addr(&mut self, key: &str, default: &str) -> Option<ListenAddr> {
        let text = match self.get(key) {
            None => default.to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => yaml_text(other),
        };
        let parsed = match text.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Some(ListenAddr::Unix(path.into())),
            Some(_) => None,
            None => text.parse().ok().map(ListenAddr::Tcp),
        };
        if parsed.is_none() {
            let expected = "an ip:port address or unix:/absolute/path";
            self.error(key, &format!("must be {expected}, got {text}"));
        }
        self.note(key, Value::String(text));
        parsed
    }

    pub(super) fn string_list(&mut self, key: &str, default: &[&str]) -> Vec<String> {
        let found = self.strings(key, default);
        let items = found.iter().cloned().map(Value::String).collect();
        self.note(key, Value::Sequence(items));
        found
    }

    fn strings(&mut self, key: &str, default: &[&str]) -> Vec<String> {
        match self.get(key) {
            None => default.iter().map(|s| (*s).to_owned()).collect(),
            Some(Value::Sequence(items)) if items.iter().all(|i| i.as_str().is_some()) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            Some(_) => {
                self.error(key, "must be a list of strings");
                Vec::new()
            }
        }
    }

    /// Checks an http(s) URL and returns its origin.
    pub(super) fn origin(&mut self, key: &str, url: &str) -> Option<String> {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Some(u.origin().ascii_serialization())
            }
            _ => {
                self.error(key, &format!("must be an http(s) URL, got {url:?}"));
                None
            }
        }
    }
}

pub(super) fn yaml_text(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

pub(super) fn set_path(root: &mut Value, path: &[String], value: Value) {
    let mut node = root;
    for (i, part) in path.iter().enumerate() {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("just made a mapping");
        let key = Value::String(part.clone());
        if i + 1 == path.len() {
            map.insert(key, value);
            return;
        }
        node = map.entry(key).or_insert(Value::Null);
    }
}

fn check_unknown(
    v: &Value,
    prefix: &str,
    read: &std::collections::HashSet<&str>,
    errors: &mut Vec<String>,
) {
    let Value::Mapping(m) = v else { return };
    for (k, child) in m {
        let Some(k) = k.as_str() else {
            errors.push(format!("{prefix}: keys must be strings"));
            continue;
        };
        let path = match prefix {
            "" => k.to_owned(),
            _ => format!("{prefix}.{k}"),
        };
        if read.contains(path.as_str()) {
            continue;
        }
        let below = format!("{path}.");
        if read.iter().any(|key| key.starts_with(&below)) {
            check_unknown(child, &path, read, errors);
        } else {
            errors.push(format!("{path}: unknown setting"));
        }
    }
}

//! Reading typed values out of the YAML tree while collecting every problem.

use std::net::SocketAddr;

use serde_yaml_ng::{Mapping, Value};

use super::KNOWN;
use super::choices::Choice;

pub(super) struct Reader<'a> {
    root: &'a Value,
    errors: &'a mut Vec<String>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(root: &'a Value, errors: &'a mut Vec<String>) -> Self {
        Reader { root, errors }
    }

    pub(super) fn error(&mut self, key: &str, problem: &str) {
        self.errors.push(format!("{key}: {problem}"));
    }

    pub(super) fn get(&self, dotted: &str) -> Option<&'a Value> {
        let mut v: &'a Value = self.root;
        for part in dotted.split('.') {
            v = v.as_mapping()?.get(part)?;
        }
        Some(v).filter(|v| !v.is_null())
    }

    pub(super) fn opt_string(&mut self, key: &str) -> Option<String> {
        match self.get(key) {
            None => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(other) => {
                let text = yaml_text(other);
                self.error(key, &format!("must be a non-empty string, got {text}"));
                None
            }
        }
    }

    pub(super) fn u64(&mut self, key: &str, default: u64, min: u64, max: u64) -> u64 {
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
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                let text = yaml_text(v);
                self.error(key, &format!("must be true or false, got {text}"));
                default
            }
        }
    }

    pub(super) fn choice(
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
        parsed
    }

    pub(super) fn string_list(&mut self, key: &str, default: &[&str]) -> Vec<String> {
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

pub(super) fn check_unknown(v: &Value, prefix: &str, errors: &mut Vec<String>) {
    let Value::Mapping(m) = v else { return };
    for (k, child) in m {
        let Some(k) = k.as_str() else {
            errors.push(format!("{prefix}: keys must be strings"));
            continue;
        };
        let path = if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        };
        if path == "routes" || path == "policies" || path == "bearer" {
            continue;
        }
        if KNOWN.contains(&path.as_str()) {
            continue;
        }
        if KNOWN
            .iter()
            .any(|known| known.starts_with(&format!("{path}.")))
        {
            check_unknown(child, &path, errors);
        } else {
            errors.push(format!("{path}: unknown setting"));
        }
    }
}

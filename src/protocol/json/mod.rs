//! A JSON value that keeps member order, read the way the reference's JavaScript reads JSON.
//!
//! The bytes are decoded as `TextDecoder` decodes them (one leading byte-order mark dropped,
//! invalid UTF-8 replaced by U+FFFD) and a lone UTF-16 surrogate escape such as `\ud83e` stands
//! for U+FFFD, which is what the reference emits when it writes that string back out as UTF-8:
//! whatever the reference's decoder accepts is accepted here too (issue 16).
//!
//! Two ways to treat a repeated member name. [`Json::parse`] refuses it at every depth:
//! `serde_json::Value` silently keeps the last of two members, which would let a forged token
//! header say `{"alg":"none","alg":"EdDSA"}` (`docs/deviations.md` item 7). `Json::parse_lenient`
//! keeps the last, as `JSON.parse` does, for registry documents whose refusal would only make
//! revocation fragile. Both are linear in the input: members are checked against a hash index
//! once an object grows past a few members, never against each other.
//!
//! Keeping the raw shape (rather than deserializing straight into structs) also lets the schema
//! checks report every problem with the reference's wording, in the reference's order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    Object(Object),
}

/// Object members in document order; names are unique.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object(pub Vec<(String, Json)>);

/// Why bytes were not accepted as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    Syntax,
    DuplicateMember,
}

/// What a repeated member name does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Duplicates {
    Refuse,
    KeepLast,
}

/// How bytes become text: as the reference's JavaScript decodes them, or as RFC 8259 says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    JavaScript,
    Standard,
}

impl Json {
    /// Strict: a repeated member name anywhere is [`JsonError::DuplicateMember`]; the text is
    /// decoded as the reference decodes it (Clawdentity tokens).
    pub fn parse(bytes: &[u8]) -> Result<Json, JsonError> {
        parse(bytes, Duplicates::Refuse, Text::JavaScript)
    }

    /// As `JSON.parse`: a repeated member keeps its first position and its last value.
    pub(crate) fn parse_lenient(bytes: &[u8]) -> Result<Json, JsonError> {
        parse(bytes, Duplicates::KeepLast, Text::JavaScript)
    }

    /// Strict, and only valid UTF-8 without a byte-order mark or lone surrogates (RFC 8259), for
    /// documents no reference reads (bearer JWTs and JWKS): two subjects that differ only in
    /// undecodable text must not become one.
    pub(crate) fn parse_standard(bytes: &[u8]) -> Result<Json, JsonError> {
        parse(bytes, Duplicates::Refuse, Text::Standard)
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as JavaScript would see it (every JSON number is an f64).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// The name zod uses for this value's type in "received ..." messages.
    pub(crate) fn zod_type(value: Option<&Json>) -> &'static str {
        match value {
            None => "undefined",
            Some(Json::Null) => "null",
            Some(Json::Bool(_)) => "boolean",
            Some(Json::Number(_)) => "number",
            Some(Json::String(_)) => "string",
            Some(Json::Array(_)) => "array",
            Some(Json::Object(_)) => "object",
        }
    }
}

impl Object {
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

const DUPLICATE: &str = "duplicate member";
/// Objects up to this size are checked for repeats by a scan; larger ones through a hash map.
const SCAN_MEMBERS: usize = 16;

fn parse(bytes: &[u8], duplicates: Duplicates, text: Text) -> Result<Json, JsonError> {
    let text = match text {
        Text::JavaScript => js_text(bytes),
        Text::Standard => Cow::Borrowed(std::str::from_utf8(bytes).map_err(|_| JsonError::Syntax)?),
    };
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    let value = Seed(duplicates)
        .deserialize(&mut deserializer)
        .and_then(|v| deserializer.end().map(|()| v));
    value.map_err(|e| {
        if e.to_string().starts_with(DUPLICATE) {
            JsonError::DuplicateMember
        } else {
            JsonError::Syntax
        }
    })
}

/// The text `TextDecoder` would give (one BOM dropped, invalid UTF-8 as U+FFFD), with every
/// lone surrogate escape rewritten to `\uFFFD`, which serde_json would otherwise refuse.
fn js_text(bytes: &[u8]) -> Cow<'_, str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = String::from_utf8_lossy(bytes);
    let lone = lone_surrogates(text.as_bytes());
    if lone.is_empty() {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for at in lone {
        out.push_str(&text[from..at]);
        out.push_str("\\uFFFD");
        from = at + 6;
    }
    out.push_str(&text[from..]);
    Cow::Owned(out)
}

/// Offsets of the `\uXXXX` escapes that name a surrogate without its other half.
fn lone_surrogates(b: &[u8]) -> Vec<usize> {
    let escape = |at: usize| -> Option<u16> {
        if b.get(at) != Some(&b'\\') || b.get(at + 1) != Some(&b'u') {
            return None;
        }
        let hex = std::str::from_utf8(b.get(at + 2..at + 6)?).ok()?;
        u16::from_str_radix(hex, 16).ok()
    };
    let high = |u: u16| (0xD800..0xDC00).contains(&u);
    let low = |u: u16| (0xDC00..0xE000).contains(&u);
    let mut lone = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        match escape(i) {
            Some(u) if high(u) && escape(i + 6).is_some_and(low) => i += 12,
            Some(u) if high(u) || low(u) => {
                lone.push(i);
                i += 6;
            }
            // Any other escape is two bytes or more; skipping two keeps `\\u` from being read
            // as an escape.
            _ => i += 2,
        }
    }
    lone
}

/// Deserializes one value, carrying the duplicate rule into nested values.
#[derive(Clone, Copy)]
struct Seed(Duplicates);

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members: Vec<(String, Json)> = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            members.push((name, value));
        }
        let repeats = repeats(&members);
        if repeats.is_empty() {
            return Ok(Json::Object(Object(members)));
        }
        if self.0 == Duplicates::Refuse {
            return Err(de::Error::custom(DUPLICATE));
        }
        // `JSON.parse`: the first position, the last value.
        let mut dropped = vec![false; members.len()];
        for (first, later) in repeats {
            members[first].1 = std::mem::replace(&mut members[later].1, Json::Null);
            dropped[later] = true;
        }
        let mut keep = dropped.iter().map(|d| !d);
        members.retain(|_| keep.next().unwrap_or(true));
        Ok(Json::Object(Object(members)))
    }
}

/// Each repeated member as (index of the name's first occurrence, index of the repeat), in
/// document order: a scan for small objects, one hash lookup per member for large ones, never
/// a comparison of every pair.
fn repeats(members: &[(String, Json)]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if members.len() <= SCAN_MEMBERS {
        for (later, (name, _)) in members.iter().enumerate() {
            if let Some(first) = members[..later].iter().position(|(k, _)| k == name) {
                out.push((first, later));
            }
        }
        return out;
    }
    // foldhash: a per-process random seed keeps it DoS-resistant, at a third of SipHash's cost,
    // which is most of the work on a large object.
    let mut first: HashMap<&str, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(members.len(), Default::default());
    for (i, (name, _)) in members.iter().enumerate() {
        match first.entry(name) {
            Entry::Occupied(seen) => out.push((*seen.get(), i)),
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;

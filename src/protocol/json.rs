//! A JSON value that keeps member order and refuses duplicate members.
//!
//! `serde_json::Value` silently keeps the last of two members with the same name, which lets a
//! forged header say `{"alg":"none","alg":"EdDSA"}`. Token headers, claims and documents are read
//! through [`Json`] instead, which rejects duplicates at every depth. Keeping the raw shape (rather
//! than deserializing straight into structs) also lets the schema checks report every problem
//! with the reference's wording, in the reference's order.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
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

/// Why bytes were not accepted as strict JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    Syntax,
    DuplicateMember,
}

impl Json {
    pub fn parse(bytes: &[u8]) -> Result<Json, JsonError> {
        serde_json::from_slice(bytes).map_err(|e| {
            if e.to_string().starts_with(DUPLICATE) {
                JsonError::DuplicateMember
            } else {
                JsonError::Syntax
            }
        })
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
    pub fn zod_type(value: Option<&Json>) -> &'static str {
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

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

const DUPLICATE: &str = "duplicate member";

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
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
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members: Vec<(String, Json)> = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.iter().any(|(k, _)| *k == name) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let value = map.next_value()?;
            members.push((name, value));
        }
        Ok(Json::Object(Object(members)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_members_are_rejected_at_any_depth() {
        assert_eq!(
            Json::parse(br#"{"alg":"none","alg":"EdDSA"}"#),
            Err(JsonError::DuplicateMember)
        );
        assert_eq!(
            Json::parse(br#"{"a":[{"b":1,"b":2}]}"#),
            Err(JsonError::DuplicateMember)
        );
    }

    #[test]
    fn keeps_member_order_and_types() {
        let v = Json::parse(br#"{"b":1.5,"a":[null,true,"x"]}"#).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(o.names().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(o.get("b").and_then(Json::as_f64), Some(1.5));
        assert_eq!(Json::zod_type(o.get("a")), "array");
        assert_eq!(Json::zod_type(o.get("zz")), "undefined");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert_eq!(Json::parse(deep.as_bytes()), Err(JsonError::Syntax));
    }
}

//! zod-style schema checks over a [`Json`] value, reporting problems with the reference's words.
//!
//! The reference validates claims with zod and joins every issue's message with `"; "`. The
//! vectors pin those messages, so checks here collect issues in the same order (fields in schema
//! order, then unrecognized members, then cross-field rules) and render them the same way.
//!
//! zod runs an object's cross-field rules (`superRefine`) after a field's own problems unless one
//! of them leaves the value's shape in doubt: a wrong type, a wrong literal, a non-integer where
//! an integer belongs, an unrecognized member. Those *abort*; a string too short or too long, a
//! number out of range or a failed field refinement does not, so `sub: ""` reports both
//! "sub is required" and the DID rule. `Issues::aborted` tells the caller which case it is in.

use super::json::{Json, Object};

/// JavaScript's `Number.MAX_SAFE_INTEGER`, the bound zod puts on `.int()`.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

#[derive(Debug, Default)]
pub struct Issues {
    messages: Vec<String>,
    aborted: bool,
}

impl Issues {
    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn count(&self) -> usize {
        self.messages.len()
    }

    /// A problem after which zod still runs the cross-field rules (a refinement, a length).
    pub(crate) fn push(&mut self, message: impl Into<String>) {
        self.messages.push(message.into());
    }

    /// A problem after which zod skips the cross-field rules (a type or shape problem).
    pub(crate) fn abort(&mut self, message: impl Into<String>) {
        self.messages.push(message.into());
        self.aborted = true;
    }

    /// Appends the problems of a nested value, in order.
    pub(crate) fn merge(&mut self, nested: Issues) {
        self.messages.extend(nested.messages);
        self.aborted |= nested.aborted;
    }

    /// Whether a recorded problem stops the cross-field rules.
    pub(crate) fn aborted(&self) -> bool {
        self.aborted
    }

    /// All messages joined as the reference joins them.
    pub(crate) fn message(&self) -> String {
        self.messages.join("; ")
    }

    /// A required string member; records a type issue and returns `None` when it is not one.
    pub(crate) fn string<'a>(&mut self, obj: &'a Object, name: &str) -> Option<&'a str> {
        match obj.get(name) {
            Some(Json::String(s)) => Some(s),
            other => {
                self.invalid_type("string", other);
                None
            }
        }
    }

    /// An optional string member: absent is fine, any other type is an issue.
    pub(crate) fn optional_string<'a>(&mut self, obj: &'a Object, name: &str) -> Option<&'a str> {
        if obj.contains(name) {
            self.string(obj, name)
        } else {
            None
        }
    }

    /// `z.string().min(1, message)`; lengths are UTF-16 code units, as in JavaScript.
    pub(crate) fn non_empty(&mut self, value: &str, message: &str) {
        if value.is_empty() {
            self.push(message);
        }
    }

    pub(crate) fn max_len(&mut self, value: &str, max: usize) {
        if value.encode_utf16().count() > max {
            self.push(format!(
                "Too big: expected string to have <={max} characters"
            ));
        }
    }

    /// `z.number().int().nonnegative()`: the number, unless it is not an integer at all (which
    /// aborts). Out of range is recorded and the number still returned, as the cross-field rules
    /// compare it; [`as_int`] converts it once every problem is known to be absent.
    pub(crate) fn non_negative_int(&mut self, obj: &Object, name: &str) -> Option<f64> {
        let value = obj.get(name);
        let Some(n) = value.and_then(Json::as_f64) else {
            self.invalid_type("number", value);
            return None;
        };
        if n.fract() != 0.0 {
            self.abort("Invalid input: expected int, received number");
            return None;
        }
        if n > MAX_SAFE_INTEGER {
            self.push("Too big: expected int to be <=9007199254740991");
        }
        if n < 0.0 {
            self.push("Too small: expected number to be >=0");
        }
        Some(n)
    }

    /// `z.literal(expected)`.
    pub(crate) fn literal(&mut self, obj: &Object, name: &str, expected: &str) -> bool {
        let ok = obj.get(name).and_then(Json::as_str) == Some(expected);
        if !ok {
            self.abort(format!("Invalid input: expected \"{expected}\""));
        }
        ok
    }

    /// A nested `.strict()` object member; records a type issue when it is not an object.
    pub(crate) fn object<'a>(&mut self, obj: &'a Object, name: &str) -> Option<&'a Object> {
        match obj.get(name) {
            Some(Json::Object(o)) => Some(o),
            other => {
                self.invalid_type("object", other);
                None
            }
        }
    }

    /// `.strict()`: one issue naming every member outside `allowed`.
    pub(crate) fn strict(&mut self, obj: &Object, allowed: &[&str]) {
        let unknown: Vec<String> = obj
            .names()
            .filter(|n| !allowed.contains(n))
            .map(|n| format!("\"{n}\""))
            .collect();
        match unknown.len() {
            0 => {}
            1 => self.abort(format!("Unrecognized key: {}", unknown[0])),
            _ => self.abort(format!("Unrecognized keys: {}", unknown.join(", "))),
        }
    }

    pub(crate) fn invalid_type(&mut self, expected: &str, received: Option<&Json>) {
        self.abort(format!(
            "Invalid input: expected {expected}, received {}",
            Json::zod_type(received)
        ));
    }
}

/// A number [`Issues::non_negative_int`] returned, once no problem was recorded: it is then an
/// integer in `[0, 2^53)`, so the conversion is exact.
pub(crate) fn as_int(n: f64) -> u64 {
    n as u64
}

/// True if the string holds U+0000..U+001F or U+007F (the reference's `hasControlChars`).
pub(crate) fn has_control_chars(value: &str) -> bool {
    value.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Object {
        Json::parse(text.as_bytes())
            .unwrap()
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn messages_match_zod_wording() {
        let o = obj(r#"{"a":1.5,"b":-1,"c":"x","d":1e300,"e":3}"#);
        let mut issues = Issues::default();
        assert_eq!(issues.non_negative_int(&o, "b"), Some(-1.0));
        assert_eq!(issues.non_negative_int(&o, "d"), Some(1e300));
        assert_eq!(issues.non_negative_int(&o, "e"), Some(3.0));
        assert!(
            !issues.aborted(),
            "out of range does not stop the cross-field rules"
        );
        assert_eq!(issues.non_negative_int(&o, "a"), None);
        assert!(issues.aborted(), "a non-integer does");
        assert_eq!(issues.non_negative_int(&o, "c"), None);
        assert_eq!(issues.string(&o, "zz"), None);
        issues.strict(&o, &["a", "b", "c"]);
        assert_eq!(
            issues.message(),
            "Too small: expected number to be >=0; \
             Too big: expected int to be <=9007199254740991; \
             Invalid input: expected int, received number; \
             Invalid input: expected number, received string; \
             Invalid input: expected string, received undefined; \
             Unrecognized keys: \"d\", \"e\""
        );
    }

    #[test]
    fn lengths_count_utf16_units() {
        let mut issues = Issues::default();
        issues.max_len(&"é".repeat(32), 32);
        assert!(issues.is_empty());
        issues.max_len(&"😀".repeat(17), 32);
        assert_eq!(
            issues.message(),
            "Too big: expected string to have <=32 characters"
        );
        assert!(has_control_chars("a\u{7f}"));
        assert!(!has_control_chars("a b"));
    }
}

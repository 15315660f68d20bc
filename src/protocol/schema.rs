//! zod-style schema checks over a [`Json`] value, reporting problems with the reference's words.
//!
//! The reference validates claims with zod and joins every issue's message with `"; "`. The
//! vectors pin those messages, so checks here collect issues in the same order (fields in schema
//! order, then unrecognized members, then cross-field rules) and render them the same way.

use super::json::{Json, Object};

/// JavaScript's `Number.MAX_SAFE_INTEGER`, the bound zod puts on `.int()`.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

#[derive(Debug, Default)]
pub struct Issues(Vec<String>);

impl Issues {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn count(&self) -> usize {
        self.0.len()
    }

    pub fn push(&mut self, message: impl Into<String>) {
        self.0.push(message.into());
    }

    /// All messages joined as the reference joins them.
    pub fn message(&self) -> String {
        self.0.join("; ")
    }

    /// A required string member; records a type issue and returns `None` when it is not one.
    pub fn string<'a>(&mut self, obj: &'a Object, name: &str) -> Option<&'a str> {
        match obj.get(name) {
            Some(Json::String(s)) => Some(s),
            other => {
                self.invalid_type("string", other);
                None
            }
        }
    }

    /// An optional string member: absent is fine, any other type is an issue.
    pub fn optional_string<'a>(&mut self, obj: &'a Object, name: &str) -> Option<&'a str> {
        if obj.contains(name) {
            self.string(obj, name)
        } else {
            None
        }
    }

    /// `z.string().min(1, message)`; lengths are UTF-16 code units, as in JavaScript.
    pub fn non_empty(&mut self, value: &str, message: &str) {
        if value.is_empty() {
            self.push(message);
        }
    }

    pub fn max_len(&mut self, value: &str, max: usize) {
        if value.encode_utf16().count() > max {
            self.push(format!(
                "Too big: expected string to have <={max} characters"
            ));
        }
    }

    /// `z.number().int().nonnegative()`: returns the integer when every check passes.
    pub fn non_negative_int(&mut self, obj: &Object, name: &str) -> Option<u64> {
        let value = obj.get(name);
        let Some(n) = value.and_then(Json::as_f64) else {
            self.invalid_type("number", value);
            return None;
        };
        let mut ok = true;
        if n.fract() != 0.0 {
            self.push("Invalid input: expected int, received number");
            ok = false;
        } else if n > MAX_SAFE_INTEGER {
            self.push("Too big: expected int to be <=9007199254740991");
            ok = false;
        }
        if n < 0.0 {
            self.push("Too small: expected number to be >=0");
            ok = false;
        }
        // The checks above bound n to [0, 2^53), so the conversion is exact.
        ok.then_some(n as u64)
    }

    /// `z.literal(expected)`.
    pub fn literal(&mut self, obj: &Object, name: &str, expected: &str) -> bool {
        let ok = obj.get(name).and_then(Json::as_str) == Some(expected);
        if !ok {
            self.push(format!("Invalid input: expected \"{expected}\""));
        }
        ok
    }

    /// A nested `.strict()` object member; records a type issue when it is not an object.
    pub fn object<'a>(&mut self, obj: &'a Object, name: &str) -> Option<&'a Object> {
        match obj.get(name) {
            Some(Json::Object(o)) => Some(o),
            other => {
                self.invalid_type("object", other);
                None
            }
        }
    }

    /// `.strict()`: one issue naming every member outside `allowed`.
    pub fn strict(&mut self, obj: &Object, allowed: &[&str]) {
        let unknown: Vec<String> = obj
            .names()
            .filter(|n| !allowed.contains(n))
            .map(|n| format!("\"{n}\""))
            .collect();
        match unknown.len() {
            0 => {}
            1 => self.push(format!("Unrecognized key: {}", unknown[0])),
            _ => self.push(format!("Unrecognized keys: {}", unknown.join(", "))),
        }
    }

    pub fn invalid_type(&mut self, expected: &str, received: Option<&Json>) {
        self.push(format!(
            "Invalid input: expected {expected}, received {}",
            Json::zod_type(received)
        ));
    }
}

/// True if the string holds U+0000..U+001F or U+007F (the reference's `hasControlChars`).
pub fn has_control_chars(value: &str) -> bool {
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
        assert_eq!(issues.non_negative_int(&o, "a"), None);
        assert_eq!(issues.non_negative_int(&o, "b"), None);
        assert_eq!(issues.non_negative_int(&o, "c"), None);
        assert_eq!(issues.non_negative_int(&o, "d"), None);
        assert_eq!(issues.non_negative_int(&o, "e"), Some(3));
        assert_eq!(issues.string(&o, "zz"), None);
        issues.strict(&o, &["a", "b", "c"]);
        assert_eq!(
            issues.message(),
            "Invalid input: expected int, received number; \
             Too small: expected number to be >=0; \
             Invalid input: expected number, received string; \
             Too big: expected int to be <=9007199254740991; \
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

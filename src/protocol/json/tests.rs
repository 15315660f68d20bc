//! Unit tests of `src/protocol/json/mod.rs`.

use super::*;

#[test]
fn a_bom_lone_surrogates_and_bad_utf8_read_as_javascript_reads_them() {
    let text = |bytes: &[u8]| match Json::parse(bytes) {
        Ok(Json::String(s)) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(text(b"\xEF\xBB\xBF\"x\""), "x");
    assert_eq!(
        Json::parse(b"\xEF\xBB\xBF\xEF\xBB\xBF1"),
        Err(JsonError::Syntax)
    );
    assert_eq!(text(br#""gen\ud83e""#), "gen\u{FFFD}");
    assert_eq!(text(br#""\udd16x""#), "\u{FFFD}x");
    assert_eq!(text(br#""\ud83e\udd16""#), "\u{1F916}");
    assert_eq!(text(br#""\ud83e\ud83e\udd16""#), "\u{FFFD}\u{1F916}");
    assert_eq!(text(br#""\\ud83e""#), "\\ud83e");
    assert_eq!(text(b"\"a\xFFb\""), "a\u{FFFD}b");
}

#[test]
fn standard_parsing_takes_only_rfc_8259_text() {
    assert_eq!(
        Json::parse_standard(b"\xEF\xBB\xBF1"),
        Err(JsonError::Syntax)
    );
    assert_eq!(Json::parse_standard(br#""\ud83e""#), Err(JsonError::Syntax));
    assert_eq!(Json::parse_standard(b"\"a\xFF\""), Err(JsonError::Syntax));
    assert_eq!(
        Json::parse_standard(br#"{"a":1,"a":2}"#),
        Err(JsonError::DuplicateMember)
    );
    assert_eq!(
        Json::parse_standard(br#""\ud83e\udd16""#),
        Ok(Json::String("\u{1F916}".into()))
    );
}

#[test]
fn lenient_parsing_keeps_the_last_duplicate_in_the_first_place() {
    let v = Json::parse_lenient(br#"{"a":1,"b":2,"a":3}"#).unwrap();
    let o = v.as_object().unwrap();
    assert_eq!(o.names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(o.get("a").and_then(Json::as_f64), Some(3.0));
    let many: Vec<String> = (0..40).map(|i| format!("\"m{i}\":{i}")).collect();
    let doc = format!("{{{},\"m7\":\"last\"}}", many.join(","));
    let v = Json::parse_lenient(doc.as_bytes()).unwrap();
    assert_eq!(v.as_object().unwrap().0.len(), 40);
    assert_eq!(
        v.as_object().unwrap().get("m7").and_then(Json::as_str),
        Some("last")
    );
    assert_eq!(Json::parse(doc.as_bytes()), Err(JsonError::DuplicateMember));
}

/// Issue 16: no quadratic work at a document's limit. A 4 MiB object of 100,000 members is
/// timed against a 4 MiB string, and objects of 25,000, 50,000 and 100,000 members against
/// each other (the time per member stays flat). Printed, not asserted: timings are noisy.
#[test]
#[allow(clippy::disallowed_methods)] // wall-clock figures, printed; nothing waits on them
fn a_large_object_parses_in_linear_time() {
    const SIZE: usize = 4 * 1024 * 1024;
    // `"k000001":"vvv…",` is 13 bytes of framing around each value.
    let object = |members: usize| {
        let value = "v".repeat(SIZE / 100_000 - 13);
        let mut text = String::with_capacity(members * (value.len() + 13) + 2);
        text.push('{');
        for i in 0..members {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("\"k{i:06}\":\"{value}\""));
        }
        text.push('}');
        text
    };
    // The parse alone, best of five: each value is dropped after the clock stops.
    let time = |text: &str| {
        (0..5)
            .map(|_| {
                let start = std::time::Instant::now();
                let parsed = Json::parse(text.as_bytes());
                let took = start.elapsed();
                assert!(parsed.is_ok());
                took.as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let full = object(100_000);
    let string = format!("\"{}\"", "s".repeat(full.len() - 2));
    let (t_object, t_string) = (time(&full), time(&string));
    println!(
        "json: object of 100000 members ({} bytes) {:.2} ms, string of {} bytes {:.2} ms, \
         ratio {:.2}",
        full.len(),
        t_object * 1e3,
        string.len(),
        t_string * 1e3,
        t_object / t_string
    );
    let per_member: Vec<String> = [25_000, 50_000, 100_000]
        .into_iter()
        .map(|n| format!("{n}: {:.0} ns", time(&object(n)) / n as f64 * 1e9))
        .collect();
    println!("json: time per member, {}", per_member.join(", "));
    let parsed = Json::parse(full.as_bytes()).unwrap();
    assert_eq!(parsed.as_object().unwrap().0.len(), 100_000);
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = "[".repeat(100_000);
    assert_eq!(Json::parse(deep.as_bytes()), Err(JsonError::Syntax));
}

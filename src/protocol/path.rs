//! Envoy's raw `:path` to the two paths the pipeline needs.
//!
//! * [`path_with_query`]: the WHATWG URL serialization (`pathname + search`) the reference signs
//!   over. Envoy hands over the raw request target, so dot segments, `\`, percent-encoding, the
//!   empty `?` and the fragment are handled here exactly as a WHATWG parser does for an `https:`
//!   URL (as Node 20 does: `^` stays as it is).
//! * [`route_path`]: what an upstream router matches on (`docs/deviations.md` item 14): the normalized
//!   path, percent-decoded the way `decodeURI` does (reserved characters such as `%2F` stay
//!   encoded, undecodable runs stay as they are), without the query.

/// Why a request target cannot be normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotOriginForm;

/// A normalized request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    pub path_with_query: String,
    pub route_path: String,
}

pub fn normalize(raw_target: &str) -> Result<NormalizedPath, NotOriginForm> {
    let path_with_query = path_with_query(raw_target)?;
    let path_end = path_with_query.find('?').unwrap_or(path_with_query.len());
    let route_path = route_path(&path_with_query[..path_end]);
    Ok(NormalizedPath {
        path_with_query,
        route_path,
    })
}

/// WHATWG `pathname + search` of `https://host` + `raw_target`.
pub fn path_with_query(raw_target: &str) -> Result<String, NotOriginForm> {
    let trimmed = raw_target.trim_matches(|c: char| c <= ' ');
    let cleaned: String = trimmed
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let rest = cleaned.strip_prefix(['/', '\\']).ok_or(NotOriginForm)?;

    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (path, tail) = rest.split_at(path_end);
    let query = match tail.strip_prefix('?') {
        Some(q) => &q[..q.find('#').unwrap_or(q.len())],
        None => "",
    };

    let mut segments: Vec<String> = Vec::new();
    let mut parts = path.split(['/', '\\']).peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        if is_double_dot(part) {
            segments.pop();
            if last {
                segments.push(String::new());
            }
        } else if is_single_dot(part) {
            if last {
                segments.push(String::new());
            }
        } else {
            segments.push(percent_encode(part, in_path_set));
        }
    }

    let mut out = String::with_capacity(raw_target.len() + 8);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if segments.is_empty() {
        out.push('/');
    }
    if !query.is_empty() {
        out.push('?');
        out.push_str(&percent_encode(query, in_special_query_set));
    }
    Ok(out)
}

fn is_single_dot(s: &str) -> bool {
    s == "." || s.eq_ignore_ascii_case("%2e")
}

fn is_double_dot(s: &str) -> bool {
    matches!(s.len(), 2 | 4 | 6)
        && (s == ".."
            || s.eq_ignore_ascii_case(".%2e")
            || s.eq_ignore_ascii_case("%2e.")
            || s.eq_ignore_ascii_case("%2e%2e"))
}

/// C0 controls, everything above `~`, and the query set's extras.
fn in_special_query_set(c: char) -> bool {
    !(' '..='~').contains(&c) || matches!(c, ' ' | '"' | '#' | '<' | '>' | '\'')
}

fn in_path_set(c: char) -> bool {
    !(' '..='~').contains(&c) || matches!(c, ' ' | '"' | '#' | '<' | '>' | '?' | '`' | '{' | '}')
}

fn percent_encode(input: &str, in_set: fn(char) -> bool) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        if in_set(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push('%');
                out.push(hex_digit(b >> 4));
                out.push(hex_digit(b & 0xf));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(n)])
}

/// `decodeURI` over each run of `%XX` escapes; a run that is not valid UTF-8 stays encoded, and
/// escapes of reserved characters stay encoded as `decodeURI` leaves them.
pub fn route_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let run_start = i;
        let mut decoded = Vec::new();
        while i + 2 < bytes.len() && bytes[i] == b'%' {
            match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    decoded.push(h << 4 | l);
                    i += 3;
                }
                _ => break,
            }
        }
        if i == run_start {
            // Not an escape: copy one character.
            let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&path[i..i + ch_len]);
            i += ch_len;
            continue;
        }
        let run = &path[run_start..i];
        match std::str::from_utf8(&decoded) {
            Ok(text) => push_decoded(&mut out, text, run),
            Err(_) => out.push_str(run),
        }
    }
    out
}

/// Appends decoded text, re-using the original escape for reserved characters.
fn push_decoded(out: &mut String, text: &str, run: &str) {
    let mut escapes = run.as_bytes().chunks(3);
    for c in text.chars() {
        let own: Vec<&[u8]> = escapes.by_ref().take(c.len_utf8()).collect();
        if c.is_ascii() && ";/?:@&=+$,#".contains(c) {
            for e in own {
                out.push_str(std::str::from_utf8(e).unwrap_or_default());
            }
        } else {
            out.push(c);
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_odd_targets() {
        assert_eq!(path_with_query("/").unwrap(), "/");
        assert_eq!(path_with_query("/..").unwrap(), "/");
        assert_eq!(path_with_query("/a/..").unwrap(), "/");
        assert_eq!(path_with_query("/a/.").unwrap(), "/a/");
        assert_eq!(path_with_query("/a?#").unwrap(), "/a");
        assert_eq!(path_with_query("/a?b#c?d").unwrap(), "/a?b");
        assert_eq!(path_with_query("/a\tb\n").unwrap(), "/ab");
        assert_eq!(path_with_query("/{x}`").unwrap(), "/%7Bx%7D%60");
        assert_eq!(path_with_query("/?{x}`").unwrap(), "/?{x}`");
        assert_eq!(path_with_query("*"), Err(NotOriginForm));
        assert_eq!(path_with_query("http://h/x"), Err(NotOriginForm));
    }

    #[test]
    fn route_path_decodes_like_decode_uri() {
        assert_eq!(route_path("/%7euser/%2Fx"), "/~user/%2Fx");
        assert_eq!(route_path("/caf%C3%A9"), "/café");
        assert_eq!(route_path("/a%ZZ%"), "/a%ZZ%");
        assert_eq!(route_path("/%C3"), "/%C3");
        assert_eq!(route_path("/hooks%2fmessage"), "/hooks%2fmessage");
        assert_eq!(route_path("/%68ooks/message"), "/hooks/message");
    }
}

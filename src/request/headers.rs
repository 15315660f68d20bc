//! A request's header fields, built once per Check with two allocations: every name and value
//! back to back in one string, and their places in it.
//!
//! The map held two `String`s per header, each allocated, hashed in and freed again (about
//! 2 us of a check's 80, issue 20). Lookups are a binary search over a dozen names.

use std::borrow::Cow;
use std::ops::Range;

/// Header entries as a map sends them, read one after another: a later entry replaces an
/// earlier one of the same name. Duplicates are folded away whenever the entries double, so a
/// message of a million copies of one entry holds one, as prost's map does.
#[derive(Debug, Default)]
pub(crate) struct Entries<'m> {
    sent: Vec<(&'m str, &'m str)>,
    /// The length at which duplicates are folded next.
    fold_at: usize,
}

/// Folding starts at this many entries: more headers than Envoy sends by default (100).
const FIRST_FOLD: usize = 128;

impl<'m> Entries<'m> {
    pub(crate) fn push(&mut self, name: &'m str, value: &'m str) {
        self.sent.push((name, value));
        if self.sent.len() >= self.fold_at.max(FIRST_FOLD) {
            self.fold();
            self.fold_at = 2 * self.sent.len();
        }
    }

    /// Keeps the last entry sent of each name (their order is not kept: names are unique
    /// after this, and the map's order never mattered).
    fn fold(&mut self) {
        // Stable: of entries of one name, the one sent last stays last.
        self.sent.sort_by(|a, b| a.0.cmp(b.0));
        let mut kept: Vec<(&str, &str)> = Vec::with_capacity(self.sent.len());
        for entry in self.sent.drain(..) {
            match kept.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => kept.push(entry),
            }
        }
        self.sent = kept;
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.sent.capacity()
    }
}

impl<'m> FromIterator<(&'m str, &'m str)> for Entries<'m> {
    fn from_iter<I: IntoIterator<Item = (&'m str, &'m str)>>(entries: I) -> Self {
        let mut all = Entries::default();
        for (name, value) in entries {
            all.push(name, value);
        }
        all
    }
}

/// The header set of a request: names lowercased, values trimmed, one value per name.
#[derive(Clone, Default)]
pub(crate) struct Headers {
    text: String,
    /// By name, names unique.
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// Every field line as sent (lowercased names, untrimmed values), when Envoy sent
    /// `header_map`.
    lines: Option<Vec<(Range<usize>, Range<usize>)>>,
}

impl Headers {
    /// From a map's entries: names that differ only in case become one, the greatest of them
    /// (in byte order: the one sent in lowercase, if one was) giving the value, so the same
    /// whatever order the map was in.
    pub(crate) fn from_entries(entries: Entries<'_>) -> Headers {
        let mut sent = entries.sent;
        // Stable, by the lowercased name and then the name: of one lowercased name, the
        // greatest name is last, and of entries of one name, the one sent last. Envoy sends
        // lowercase names, which sort by name alone.
        let lowercase = sent
            .iter()
            .all(|(name, _)| !name.bytes().any(|b| b.is_ascii_uppercase()));
        match lowercase {
            true => sent.sort_by(|a, b| a.0.cmp(b.0)),
            false => sent.sort_by(|a, b| lowercase_cmp(a.0, b.0).then_with(|| a.0.cmp(b.0))),
        }
        let mut headers = Headers::with_capacity(sent.iter().map(|(n, v)| n.len() + v.len()));
        headers.fields.reserve(sent.len());
        let mut rest = &sent[..];
        while let Some((first, _)) = rest.first() {
            let same = |name: &str| match lowercase {
                true => name == *first,
                false => name.eq_ignore_ascii_case(first),
            };
            let group = rest.iter().take_while(|(name, _)| same(name)).count();
            let (name, value) = rest[group - 1];
            let name = headers.push_lowercase(name);
            let value = headers.push(value.trim());
            headers.fields.push((name, value));
            rest = &rest[group..];
        }
        headers
    }

    /// From `header_map`'s field lines (name, value): the lines of a name are joined with
    /// "," as Envoy's map would, and the joined value trimmed.
    pub(crate) fn from_lines<'a>(
        lines: impl ExactSizeIterator<Item = (&'a str, Cow<'a, str>)>,
    ) -> Self {
        let mut headers = Headers::with_capacity(std::iter::empty());
        let mut kept = Vec::with_capacity(lines.len());
        for (name, value) in lines {
            let name = headers.push_lowercase(name);
            let value = headers.push(&value);
            kept.push((name, value));
        }
        let mut order: Vec<usize> = (0..kept.len()).collect();
        // Stable: a name's lines stay in the order sent.
        order.sort_by(|&a, &b| headers.at(&kept[a].0).cmp(headers.at(&kept[b].0)));
        let mut rest = &order[..];
        while let Some(&first) = rest.first() {
            let name = kept[first].0.clone();
            let group = rest
                .iter()
                .take_while(|&&i| headers.at(&kept[i].0) == headers.at(&name))
                .count();
            let value = match group {
                1 => kept[first].1.clone(),
                _ => {
                    let start = headers.text.len();
                    for (n, &i) in rest[..group].iter().enumerate() {
                        if n > 0 {
                            headers.text.push(',');
                        }
                        let line = kept[i].1.clone();
                        headers.text.extend_from_within(line);
                    }
                    start..headers.text.len()
                }
            };
            let value = headers.trimmed(value);
            headers.fields.push((name, value));
            rest = &rest[group..];
        }
        headers.lines = Some(kept);
        headers
    }

    fn with_capacity(sizes: impl Iterator<Item = usize>) -> Headers {
        Headers {
            text: String::with_capacity(sizes.sum()),
            ..Headers::default()
        }
    }

    fn push(&mut self, s: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(s);
        start..self.text.len()
    }

    fn push_lowercase(&mut self, s: &str) -> Range<usize> {
        let range = self.push(s);
        self.text[range.clone()].make_ascii_lowercase();
        range
    }

    fn trimmed(&self, range: Range<usize>) -> Range<usize> {
        let s = self.at(&range);
        let start = range.start + (s.len() - s.trim_start().len());
        start..start + s.trim().len()
    }

    fn at(&self, range: &Range<usize>) -> &str {
        &self.text[range.clone()]
    }

    /// The value of the header `name` (lowercase).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        let i = self
            .fields
            .binary_search_by(|(n, _)| self.at(n).cmp(name))
            .ok()?;
        Some(self.at(&self.fields[i].1))
    }

    /// The field lines of `name` (lowercase) as sent, when Envoy sent them.
    pub(crate) fn lines(&self, name: &str) -> Option<Vec<&str>> {
        let lines = self.lines.as_ref()?;
        let of_name = lines.iter().filter(|(n, _)| self.at(n) == name);
        Some(of_name.map(|(_, v)| self.at(v)).collect())
    }

    fn pairs<'a>(
        &'a self,
        ranges: &'a [(Range<usize>, Range<usize>)],
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        ranges.iter().map(|(n, v)| (self.at(n), self.at(v)))
    }
}

fn lowercase_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let lower = u8::to_ascii_lowercase;
    a.bytes()
        .map(|b| lower(&b))
        .cmp(b.bytes().map(|b| lower(&b)))
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        let lines = match (&self.lines, &other.lines) {
            (Some(a), Some(b)) => self.pairs(a).eq(other.pairs(b)),
            (a, b) => a.is_none() && b.is_none(),
        };
        self.pairs(&self.fields).eq(other.pairs(&other.fields)) && lines
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        map.entries(self.pairs(&self.fields));
        map.finish()?;
        if let Some(lines) = &self.lines {
            write!(f, " lines ")?;
            f.debug_list().entries(self.pairs(lines)).finish()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// The header map as it was built before (a `HashMap` per view), as the model.
    fn model_of_entries(entries: &[(String, String)]) -> HashMap<String, String> {
        let map: HashMap<String, String> = entries.iter().cloned().collect();
        let mut sorted: Vec<_> = map.into_iter().collect();
        sorted.sort();
        sorted
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
            .collect()
    }

    fn model_of_lines(lines: &[(String, String)]) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = HashMap::new();
        for (name, value) in lines {
            map.entry(name.to_ascii_lowercase())
                .and_modify(|joined| {
                    joined.push(',');
                    joined.push_str(value);
                })
                .or_insert_with(|| value.clone());
        }
        map.into_iter()
            .map(|(k, v)| (k, v.trim().to_owned()))
            .collect()
    }

    fn same(headers: &Headers, model: &HashMap<String, String>) -> Result<(), TestCaseError> {
        prop_assert_eq!(headers.fields.len(), model.len());
        for (name, value) in model {
            prop_assert_eq!(headers.get(name), Some(value.as_str()), "{}", name);
        }
        let names: Vec<_> = headers.fields.iter().map(|(n, _)| headers.at(n)).collect();
        prop_assert!(names.windows(2).all(|w| w[0] < w[1]), "{:?}", names);
        Ok(())
    }

    fn entries(max: usize) -> impl Strategy<Value = Vec<(String, String)>> {
        let name = prop_oneof![
            Just("content-length".to_owned()),
            Just("Content-Length".to_owned()),
            Just("CONTENT-length".to_owned()),
            Just("x-claw-nonce".to_owned()),
            Just(String::new()),
            "[a-cA-C-]{1,3}",
        ];
        let value = prop_oneof![
            Just(String::new()),
            Just(" padded\t".to_owned()),
            // Unicode whitespace, which `str::trim` removes and `trim_ascii` would not.
            Just("\u{a0}x\u{3000}".to_owned()),
            "[a-z0-9 ]{1,6}",
            Just("é €".to_owned()),
        ];
        prop::collection::vec((name, value), 0..max)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn entries_give_the_map_they_gave(entries in entries(400)) {
            let headers = Headers::from_entries(
                entries.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
            );
            same(&headers, &model_of_entries(&entries))?;
            prop_assert!(headers.lines(" any").is_none());
        }

        #[test]
        fn lines_give_the_map_they_gave_and_stay_as_sent(lines in entries(40)) {
            let headers = Headers::from_lines(
                lines.iter().map(|(n, v)| (n.as_str(), Cow::Borrowed(v.as_str()))),
            );
            same(&headers, &model_of_lines(&lines))?;
            for (name, _) in &lines {
                let lower = name.to_ascii_lowercase();
                let sent: Vec<&str> = lines
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(&lower))
                    .map(|(_, v)| v.as_str())
                    .collect();
                prop_assert_eq!(headers.lines(&lower), Some(sent));
            }
        }
    }

    /// Folding keeps the entry sent last of each name, across folds.
    #[test]
    fn the_entry_sent_last_wins_across_folds() {
        let values: Vec<String> = (0..1_000).map(|i| i.to_string()).collect();
        let mut entries = Entries::default();
        for (i, value) in values.iter().enumerate() {
            entries.push(["a", "b", "c"][i % 3], value);
        }
        assert!(entries.capacity() <= 2 * FIRST_FOLD);
        let headers = Headers::from_entries(entries);
        assert_eq!(headers.get("a"), Some("999"));
        assert_eq!(headers.get("b"), Some("997"));
        assert_eq!(headers.get("c"), Some("998"));
        assert_eq!(headers.fields.len(), 3);
    }
}

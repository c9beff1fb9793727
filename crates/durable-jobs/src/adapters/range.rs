//! Range reads: which keys a [`ListOptions`] selects, and how to answer one from a sorted
//! map.

use std::collections::BTreeMap;
use std::ops::Bound;

/// A range read: keys with `prefix`, from `start` (inclusive) to `end` (exclusive), in
/// ascending byte order, at most `limit` of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListOptions<'a> {
    /// Only keys starting with this.
    pub prefix: &'a str,
    /// First key to return (inclusive).
    pub start: Option<&'a str>,
    /// Key to stop before (exclusive).
    pub end: Option<&'a str>,
    /// At most this many entries.
    pub limit: Option<usize>,
}

impl<'a> ListOptions<'a> {
    /// Every key with `prefix`.
    pub fn prefix(prefix: &'a str) -> Self {
        ListOptions {
            prefix,
            ..Default::default()
        }
    }

    /// Sets the first key (inclusive).
    pub fn start(mut self, start: &'a str) -> Self {
        self.start = Some(start);
        self
    }

    /// Sets the key to stop before.
    pub fn end(mut self, end: &'a str) -> Self {
        self.end = Some(end);
        self
    }

    /// Sets the maximum count.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether `key` falls inside the range (ignoring the limit).
    pub fn contains(&self, key: &str) -> bool {
        key.starts_with(self.prefix)
            && self.start.is_none_or(|s| key >= s)
            && self.end.is_none_or(|e| key < e)
    }
}

/// The first key that no longer starts with `prefix` (`None` when every key after it
/// does, which only the empty prefix and prefixes of `char::MAX` reach): the end of a
/// prefix's range, for runtimes that turn a [`ListOptions`] into a range scan.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next character, stepping over the surrogates, which are no characters.
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Answers a [`ListOptions`] range read from rows held in a sorted map (for runtimes that
/// keep an instance's rows in memory): a seek to the range's start, then a walk that stops
/// at its end, so the cost follows the rows returned, not the rows stored.
pub fn list_sorted(
    rows: &BTreeMap<String, Vec<u8>>,
    options: ListOptions<'_>,
) -> Vec<(String, Vec<u8>)> {
    let from = match options.start {
        Some(s) if s > options.prefix => s,
        _ => options.prefix,
    };
    rows.range::<str, _>((Bound::Included(from), Bound::Unbounded))
        .take_while(|(k, _)| {
            k.starts_with(options.prefix) && options.end.is_none_or(|e| k.as_str() < e)
        })
        .take(options.limit.unwrap_or(usize::MAX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end("q:").as_deref(), Some("q;"));
        assert_eq!(prefix_end("").as_deref(), None);
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
    }
}

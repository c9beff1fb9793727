//! How instance ids and keys are stored, and the advisory lock of an instance.
//!
//! PostgreSQL `text` cannot hold the NUL character, and instance keys and event ids (which
//! become keys such as `idem:{id}`) may contain it. Ids and keys are stored escaped: NUL
//! becomes `\x01\x01` and `\x01` becomes `\x01\x02`; every other character is stored as
//! it is. The escape keeps byte order (what the `"C"` collation compares) and prefixes: a
//! key starts with a prefix exactly when its stored form starts with the prefix's stored
//! form, so range reads translate bound for bound. Only ids and keys holding `\x00` or
//! `\x01` look different in the tables.

use std::borrow::Cow;

use durable_jobs::adapters::{prefix_end, ListOptions};
use durable_jobs::StorageError;

/// The escape character; what follows it says which character was escaped.
const ESCAPE: char = '\u{1}';

/// The stored form of an id or key.
pub(crate) fn encode(key: &str) -> Cow<'_, str> {
    if !key.contains(['\0', ESCAPE]) {
        return Cow::Borrowed(key);
    }
    let mut stored = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        match c {
            '\0' => stored.push_str("\u{1}\u{1}"),
            ESCAPE => stored.push_str("\u{1}\u{2}"),
            c => stored.push(c),
        }
    }
    Cow::Owned(stored)
}

/// [`encode`] for an owned key, without a copy when nothing needs escaping.
pub(crate) fn encode_owned(key: String) -> String {
    match encode(&key) {
        Cow::Borrowed(_) => key,
        Cow::Owned(stored) => stored,
    }
}

/// The id or key a stored form stands for.
pub(crate) fn decode(stored: &str) -> Result<Cow<'_, str>, StorageError> {
    if !stored.contains(ESCAPE) {
        return Ok(Cow::Borrowed(stored));
    }
    let mut key = String::with_capacity(stored.len());
    let mut chars = stored.chars();
    while let Some(c) = chars.next() {
        if c != ESCAPE {
            key.push(c);
            continue;
        }
        match chars.next() {
            Some('\u{1}') => key.push('\0'),
            Some('\u{2}') => key.push(ESCAPE),
            _ => {
                return Err(StorageError::new(format!(
                    "stored key {stored:?} is not escaped the way this runtime writes keys"
                )))
            }
        }
    }
    Ok(Cow::Owned(key))
}

/// A range read in stored form: `start <= key < end`, at most `limit` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRange {
    /// The first stored key (inclusive).
    pub start: String,
    /// The stored key to stop before; `None` reads to the instance's last key.
    pub end: Option<String>,
    /// At most this many rows; `None` for all (PostgreSQL's `LIMIT NULL`).
    pub limit: Option<i64>,
}

impl StoredRange {
    /// The stored range a [`ListOptions`] selects: the prefix becomes a start and an end,
    /// so the read is one index range scan that stops at the range's end, whatever the
    /// instance holds beyond it.
    pub fn of(options: &ListOptions<'_>) -> Self {
        let start = match options.start {
            Some(s) if s > options.prefix => s,
            _ => options.prefix,
        };
        let prefix_end = prefix_end(&encode(options.prefix));
        let end = options.end.map(|e| encode(e).into_owned());
        let end = match (prefix_end, end) {
            (Some(p), Some(e)) => Some(p.min(e)),
            (p, e) => p.or(e),
        };
        StoredRange {
            start: encode(start).into_owned(),
            end,
            limit: options.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
        }
    }
}

/// The key of the transaction-scoped advisory lock that every step of `id` holds in
/// schema `schema`: a fixed 64-bit FNV-1a hash, the same in every build and on every
/// platform, since every process must take the same lock for the same instance. Two
/// instances whose keys collide only take turns; nothing else is shared.
pub(crate) fn instance_lock_key(schema: &str, id: &str) -> i64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = b"durable_jobs.instance:"
        .iter()
        .chain(schema.as_bytes())
        .chain(b":")
        .chain(id.as_bytes());
    let mut hash = OFFSET_BASIS;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    i64::from_le_bytes(hash.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of up to `len` characters from a small alphabet that holds the
    /// escaped characters, the character after them and an ordinary one.
    fn strings(len: usize) -> Vec<String> {
        let alphabet = ['\0', '\u{1}', '\u{2}', 'a'];
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..len {
            let next: Vec<String> = last
                .iter()
                .flat_map(|s| {
                    alphabet.iter().map(move |c| {
                        let mut t = s.clone();
                        t.push(*c);
                        t
                    })
                })
                .collect();
            all.extend(next.iter().cloned());
            last = next;
        }
        all
    }

    #[test]
    fn plain_keys_are_stored_as_they_are() {
        for key in ["meta", "q:0000000001:00000000000000000042", "idem:é€", ""] {
            assert!(matches!(encode(key), Cow::Borrowed(k) if k == key));
            assert!(matches!(decode(key), Ok(Cow::Borrowed(k)) if k == key));
        }
    }

    #[test]
    fn escaping_round_trips_and_keeps_order_and_prefixes() {
        let all = strings(4);
        for a in &all {
            let stored_a = encode(a);
            assert!(!stored_a.contains('\0'), "{a:?}");
            assert_eq!(decode(&stored_a).unwrap(), a.as_str());
            for b in &all {
                let stored_b = encode(b);
                assert_eq!(a.cmp(b), stored_a.cmp(&stored_b), "{a:?} vs {b:?}");
                assert_eq!(
                    a.starts_with(b.as_str()),
                    stored_a.starts_with(stored_b.as_ref()),
                    "{a:?} starts with {b:?}"
                );
            }
        }
    }

    #[test]
    fn a_stray_escape_is_refused() {
        assert!(decode("a\u{1}").is_err());
        assert!(decode("a\u{1}b").is_err());
    }

    #[test]
    fn ranges_select_the_same_keys_in_stored_form() {
        let all = strings(3);
        let bounds = ["", "\0", "\u{1}", "a", "a\0", "\u{1}a"];
        for prefix in bounds {
            for end in [None, Some("a"), Some("\u{1}\0")] {
                for start in [None, Some("\0a"), Some("a\u{1}")] {
                    let options = ListOptions {
                        prefix,
                        start,
                        end,
                        limit: None,
                    };
                    let range = StoredRange::of(&options);
                    for key in &all {
                        let stored = encode(key);
                        let inside = stored.as_ref() >= range.start.as_str()
                            && range.end.as_deref().is_none_or(|e| stored.as_ref() < e);
                        assert_eq!(inside, options.contains(key), "{key:?} in {options:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end("q:").as_deref(), Some("q;"));
        assert_eq!(prefix_end("").as_deref(), None);
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
    }

    #[test]
    fn the_lock_key_never_changes() {
        // Processes of different builds must take the same lock for an instance.
        assert_eq!(
            instance_lock_key("durable_jobs", "workerPool:mail:0"),
            instance_lock_key("durable_jobs", "workerPool:mail:0")
        );
        assert_ne!(
            instance_lock_key("durable_jobs", "workerPool:mail:0"),
            instance_lock_key("other", "workerPool:mail:0")
        );
        assert_eq!(instance_lock_key("s", "i"), LOCK_KEY_OF_S_I);
    }

    const LOCK_KEY_OF_S_I: i64 = 7_143_061_005_336_082_476;
}

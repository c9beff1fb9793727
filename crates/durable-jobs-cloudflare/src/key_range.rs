//! SQL for the storage adapter's range reads, kept free of platform types so that it is
//! tested on every target.
//!
//! Keys are `TEXT` compared with SQLite's default `BINARY` collation, which compares the
//! UTF-8 bytes: the same order as Rust's `str`, which is the order the core expects of
//! `list`.

use durable_jobs::adapters::ListOptions;

/// The table holding every key of one instance.
pub(crate) const TABLE: &str = "jobs_kv";

/// Creates the table on first use. `WITHOUT ROWID` stores rows in key order, so a range
/// read is one ordered scan of the primary key.
pub(crate) const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS jobs_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID";

/// Inserts or replaces one value; an upsert writes one row where `INSERT OR REPLACE` would
/// delete and insert.
pub(crate) const UPSERT: &str = "INSERT INTO jobs_kv (key, value) VALUES (?, ?) \
     ON CONFLICT(key) DO UPDATE SET value = excluded.value";

/// Deletes one key.
pub(crate) const DELETE_ONE: &str = "DELETE FROM jobs_kv WHERE key = ?";

/// Deletes every key.
pub(crate) const DELETE_ALL: &str = "DELETE FROM jobs_kv";

/// Durable Objects accept at most 100 bound parameters per statement.
pub(crate) const MAX_BINDINGS: usize = 100;

/// A value bound to a statement parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Text(String),
    Integer(i64),
    Blob(Vec<u8>),
}

/// A statement and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// `SELECT key, value` for a batch of keys (at most [`MAX_BINDINGS`]).
pub(crate) fn select_keys(keys: &[&str]) -> Query {
    let placeholders = vec!["?"; keys.len()].join(", ");
    Query {
        sql: format!("SELECT key, value FROM {TABLE} WHERE key IN ({placeholders})"),
        binds: keys.iter().map(|k| Bind::Text(k.to_string())).collect(),
    }
}

/// `SELECT key, value` for a range, in key order; `None` when the range is empty.
pub(crate) fn select_range(options: &ListOptions<'_>) -> Option<Query> {
    if options.limit == Some(0) {
        return None;
    }
    let low = match options.start {
        Some(start) if start > options.prefix => start,
        _ => options.prefix,
    };
    let high = match (options.end, prefix_successor(options.prefix)) {
        (Some(end), Some(after)) => Some(if end < after.as_str() {
            end.to_string()
        } else {
            after
        }),
        (Some(end), None) => Some(end.to_string()),
        (None, after) => after,
    };
    if high.as_deref().is_some_and(|h| h <= low) {
        return None;
    }
    let mut sql = format!("SELECT key, value FROM {TABLE} WHERE key >= ?");
    let mut binds = vec![Bind::Text(low.to_string())];
    if let Some(high) = high {
        sql.push_str(" AND key < ?");
        binds.push(Bind::Text(high));
    }
    sql.push_str(" ORDER BY key");
    if let Some(limit) = options.limit.and_then(|l| i64::try_from(l).ok()) {
        sql.push_str(" LIMIT ?");
        binds.push(Bind::Integer(limit));
    }
    Some(Query { sql, binds })
}

/// The smallest string greater than every string starting with `prefix`, or `None` when
/// there is none (an empty prefix, or one made only of `U+10FFFF`).
///
/// The last character that can be incremented is replaced by the next Unicode scalar value;
/// UTF-8 preserves code point order, so this is also the bound in byte order.
pub(crate) fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = next_char(last) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn next_char(c: char) -> Option<char> {
    let next = match c as u32 + 1 {
        0xD800 => 0xE000, // skip the surrogate range
        n => n,
    };
    char::from_u32(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_bounds_every_key_with_the_prefix() {
        assert_eq!(prefix_successor("idx:").as_deref(), Some("idx;"));
        assert_eq!(prefix_successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
        let after = prefix_successor("q:é").unwrap();
        for key in ["q:é", "q:é\u{10FFFF}\u{10FFFF}", "q:é~"] {
            assert!(key.starts_with("q:é") && key < after.as_str(), "{key}");
        }
        assert!("q:ê" >= after.as_str());
    }

    #[test]
    fn ranges_combine_prefix_start_end_and_limit() {
        let q = select_range(&ListOptions::prefix("q:").start("q:5").limit(3)).unwrap();
        assert_eq!(
            q.sql,
            "SELECT key, value FROM jobs_kv WHERE key >= ? AND key < ? ORDER BY key LIMIT ?"
        );
        assert_eq!(
            q.binds,
            vec![
                Bind::Text("q:5".into()),
                Bind::Text("q;".into()),
                Bind::Integer(3)
            ]
        );
        let q = select_range(&ListOptions::prefix("idx:").end("idx:0005")).unwrap();
        assert_eq!(
            q.binds,
            vec![Bind::Text("idx:".into()), Bind::Text("idx:0005".into())]
        );
        let q = select_range(&ListOptions::prefix("")).unwrap();
        assert_eq!(
            q.sql,
            "SELECT key, value FROM jobs_kv WHERE key >= ? ORDER BY key"
        );
        // A start before the prefix is clamped to it; an end past it is clamped too.
        let q = select_range(&ListOptions::prefix("b").start("a").end("z")).unwrap();
        assert_eq!(
            q.binds,
            vec![Bind::Text("b".into()), Bind::Text("c".into())]
        );
    }

    #[test]
    fn empty_ranges_need_no_query() {
        assert_eq!(select_range(&ListOptions::prefix("a").limit(0)), None);
        assert_eq!(select_range(&ListOptions::prefix("a").start("b")), None);
        assert_eq!(
            select_range(&ListOptions::prefix("").start("m").end("c")),
            None
        );
    }

    #[test]
    fn key_batches_use_one_placeholder_per_key() {
        let q = select_keys(&["meta", "rec"]);
        assert_eq!(q.sql, "SELECT key, value FROM jobs_kv WHERE key IN (?, ?)");
        assert_eq!(q.binds.len(), 2);
    }
}

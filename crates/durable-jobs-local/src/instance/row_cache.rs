//! The part of one instance's rows held in memory.
//!
//! The cache answers a read only where it knows it mirrors the file: inside its
//! [`KnownRanges`]. Everything else is read from the store, and what a read returns
//! becomes known. So a small instance lives wholly in memory after one read, while a big
//! one keeps only what its steps touch: its point records (metadata, the kind's record)
//! and the first rows of each key family (the head of a queue, the next records to
//! expire). Writes inside known ranges update the cache; writes outside it (a queue's
//! tail) go to the file only.
//!
//! Rows are grouped into families by the key up to its first `:` (`q:…`, `dead:…`); a
//! key without one is a point record. When the cache grows past its trim mark it keeps
//! the first [`KEPT_PER_FAMILY`] rows of each family, in key order, and forgets the rest
//! along with the knowledge of that range, so its size does not follow the backlog.

use std::collections::BTreeMap;
use std::ops::Bound;

use durable_jobs::adapters::{ListOptions, WriteBatch, WriteOp};

use durable_jobs::adapters::prefix_end;

use super::known_ranges::{before, successor, KnownRanges};
use crate::store::RowRange;

/// Rows of one key family kept when the cache is trimmed.
pub(crate) const KEPT_PER_FAMILY: usize = 2 * 128;
/// The cache is never trimmed below this many rows.
const MIN_TRIM_MARK: usize = 4 * KEPT_PER_FAMILY;
/// Known ranges held at most: reads of absent keys (ids never seen) each add one, with no
/// row for the trim to find, so past this many the cache forgets all it knows of families.
const MAX_KNOWN_RANGES: usize = 4 * MIN_TRIM_MARK;
/// Bytes a cached row costs beyond its key and value (map node, string and vector
/// headers), for the byte count.
const ROW_OVERHEAD: usize = 64;

/// The range a [`ListOptions`] selects.
pub(crate) fn range_of(options: &ListOptions<'_>) -> RowRange {
    let start = match options.start {
        Some(s) if s > options.prefix => s,
        _ => options.prefix,
    };
    let end = match (prefix_end(options.prefix), options.end) {
        (Some(p), Some(e)) => Some(p.min(e.to_string())),
        (p, e) => p.or(e.map(str::to_string)),
    };
    RowRange {
        start: start.to_string(),
        end,
        limit: options.limit,
    }
}

/// The cached rows of one instance.
#[derive(Debug)]
pub(crate) struct RowCache {
    /// Cached rows; each lies inside a known range.
    rows: BTreeMap<String, Vec<u8>>,
    /// Where `rows` holds exactly what the file holds.
    known: KnownRanges,
    /// Keys, values and overhead of `rows`, in bytes.
    bytes: usize,
    /// Trim once `rows` holds more than this.
    trim_mark: usize,
    /// Bumped by every write, so a read that raced a write does not teach the cache.
    version: u64,
}

fn row_bytes(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ROW_OVERHEAD
}

/// The family of a key: up to and including its first `:`.
fn family(key: &str) -> Option<&str> {
    key.find(':').map(|i| &key[..=i])
}

impl RowCache {
    /// A cache that knows nothing yet.
    pub fn empty() -> Self {
        RowCache {
            rows: BTreeMap::new(),
            known: KnownRanges::default(),
            bytes: 0,
            trim_mark: MIN_TRIM_MARK,
            version: 0,
        }
    }

    /// A cache of an instance's first rows, in key order: all of them if `complete`.
    pub fn with_first_rows(rows: Vec<(String, Vec<u8>)>, complete: bool) -> Self {
        let mut cache = RowCache::empty();
        let end = match (complete, rows.last()) {
            (true, _) => None,
            (false, Some((last, _))) => Some(successor(last)),
            (false, None) => return cache,
        };
        cache.known.insert("", end.as_deref());
        for (key, value) in rows {
            cache.bytes += row_bytes(&key, &value);
            cache.rows.insert(key, value);
        }
        cache.trim();
        cache
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Bytes held, overhead included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The write count, to hand back to `learn_*` with what a read returned.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A row's value if the cache knows it (`Some(None)`: known to be absent).
    pub fn get(&self, key: &str) -> Option<Option<Vec<u8>>> {
        self.known
            .contains(key)
            .then(|| self.rows.get(key).cloned())
    }

    /// A range read, if the cache can answer it whole.
    pub fn list(&self, range: &RowRange) -> Option<Vec<(String, Vec<u8>)>> {
        let end = range.end.as_deref();
        if !before(&range.start, end) {
            return Some(Vec::new());
        }
        let known_end = self.known.end_of(&range.start)?;
        let limit = range.limit.unwrap_or(usize::MAX);
        let mut found = Vec::new();
        for (key, value) in self
            .rows
            .range::<str, _>((Bound::Included(range.start.as_str()), Bound::Unbounded))
        {
            if found.len() == limit || !before(key, end) || !before(key, known_end) {
                break;
            }
            found.push((key.clone(), value.clone()));
        }
        // Past the last row taken, the answer is whole only if the known range reaches
        // the read's end: a row cached beyond a gap proves nothing about the gap.
        let covered = match (known_end, end) {
            (None, _) => true,
            (Some(k), Some(e)) => e <= k,
            (Some(_), None) => false,
        };
        (covered || found.len() == limit).then_some(found)
    }

    /// Learns a row read from the store at cache version `version`.
    pub fn learn_row(&mut self, version: u64, key: &str, value: Option<Vec<u8>>) {
        if version != self.version {
            return;
        }
        // Trimmed first, so that what was just read stays known for the step that asked.
        self.trim();
        self.remove_row(key);
        if let Some(value) = value {
            self.insert_row(key.to_string(), value);
        }
        self.known.insert(key, Some(&successor(key)));
    }

    /// Learns the rows a range read returned from the store at cache version `version`,
    /// read with `fetch_limit`: if fewer came back, the whole range is known.
    pub fn learn_range(
        &mut self,
        version: u64,
        range: &RowRange,
        fetch_limit: Option<usize>,
        rows: &[(String, Vec<u8>)],
    ) {
        if version != self.version {
            return;
        }
        let whole = fetch_limit.is_none_or(|limit| rows.len() < limit);
        let end = match rows.last() {
            Some((last, _)) if !whole => Some(successor(last)),
            _ => range.end.clone(),
        };
        let stale: Vec<String> = self
            .rows
            .range::<str, _>((Bound::Included(range.start.as_str()), Bound::Unbounded))
            .take_while(|(k, _)| before(k, end.as_deref()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.remove_row(&key);
        }
        for (key, value) in rows {
            self.insert_row(key.clone(), value.clone());
        }
        self.known.insert(&range.start, end.as_deref());
        self.trim();
    }

    /// Where to read ahead of a walk along `range`, just answered from the cache: the end
    /// of the known range it starts in, when fewer than `low` cached rows remain before
    /// that end and the range goes on past it.
    pub fn read_ahead_start(&self, range: &RowRange, low: usize) -> Option<String> {
        let known_end = self.known.end_of(&range.start)??;
        if !before(known_end, range.end.as_deref()) {
            return None;
        }
        let left = self
            .rows
            .range::<str, _>((
                Bound::Included(range.start.as_str()),
                Bound::Excluded(known_end),
            ))
            .take(low)
            .count();
        (left < low).then(|| known_end.to_string())
    }

    /// Learns what a read ahead returned, read with `fetch_limit` over `range`, with the
    /// `writes` made to that range since it was sent (the read does not hold them).
    pub fn learn_ahead(
        &mut self,
        range: &RowRange,
        fetch_limit: usize,
        rows: Vec<(String, Vec<u8>)>,
        writes: &[WriteOp],
    ) {
        let end = match rows.last() {
            Some((last, _)) if rows.len() >= fetch_limit => Some(successor(last)),
            _ => range.end.clone(),
        };
        let mut fetched: BTreeMap<String, Vec<u8>> = rows.into_iter().collect();
        for op in writes {
            match op {
                WriteOp::Put(key, value)
                    if key.as_str() >= range.start.as_str() && before(key, end.as_deref()) =>
                {
                    fetched.insert(key.clone(), value.clone());
                }
                WriteOp::Delete(key) => {
                    fetched.remove(key);
                }
                WriteOp::Put(..) => {}
            }
        }
        let stale: Vec<String> = self
            .rows
            .range::<str, _>((Bound::Included(range.start.as_str()), Bound::Unbounded))
            .take_while(|(k, _)| before(k, end.as_deref()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.remove_row(&key);
        }
        for (key, value) in fetched {
            self.insert_row(key, value);
        }
        self.known.insert(&range.start, end.as_deref());
        self.trim();
    }

    /// Applies a committed batch: rows inside known ranges change, others stay on disk.
    pub fn apply(&mut self, batch: &WriteBatch) {
        self.version += 1;
        if batch.deletes_all() {
            // The instance holds nothing but this batch's puts now: all of it is known.
            self.rows.clear();
            self.bytes = 0;
            self.known = KnownRanges::everything();
        }
        for op in batch.ops() {
            match op {
                WriteOp::Put(key, value) if self.known.contains(key) => {
                    self.remove_row(key);
                    self.insert_row(key.clone(), value.clone());
                }
                WriteOp::Put(..) => {}
                WriteOp::Delete(key) => self.remove_row(key),
            }
        }
        self.trim();
    }

    /// Forgets every family: what is left is the point records and the knowledge of them.
    fn keep_point_records_only(&mut self) {
        let rows = std::mem::take(&mut self.rows);
        self.known = KnownRanges::default();
        self.bytes = 0;
        for (key, value) in rows.into_iter().filter(|(k, _)| family(k).is_none()) {
            self.known.insert(&key, Some(&successor(&key)));
            self.insert_row(key, value);
        }
    }

    fn insert_row(&mut self, key: String, value: Vec<u8>) {
        self.bytes += row_bytes(&key, &value);
        if let Some(old) = self.rows.insert(key, value) {
            self.bytes -= old.len() + ROW_OVERHEAD;
        }
    }

    fn remove_row(&mut self, key: &str) {
        if let Some(old) = self.rows.remove(key) {
            self.bytes -= row_bytes(key, &old);
        }
    }

    /// Past the trim mark, keeps the first rows of each family and forgets the others.
    fn trim(&mut self) {
        if self.known.len() > MAX_KNOWN_RANGES {
            self.keep_point_records_only();
        }
        if self.rows.len() <= self.trim_mark {
            return;
        }
        let mut cuts: Vec<String> = Vec::new();
        let mut current: Option<(&str, usize)> = None;
        for key in self.rows.keys() {
            let Some(fam) = family(key) else {
                current = None;
                continue;
            };
            match &mut current {
                Some((f, seen)) if *f == fam => {
                    *seen += 1;
                    if *seen == KEPT_PER_FAMILY + 1 {
                        cuts.push(key.clone());
                    }
                }
                _ => current = Some((fam, 1)),
            }
        }
        for cut in cuts {
            let end = family(&cut).and_then(prefix_end);
            let dropped: Vec<String> = self
                .rows
                .range::<str, _>((Bound::Included(cut.as_str()), Bound::Unbounded))
                .take_while(|(k, _)| before(k, end.as_deref()))
                .map(|(k, _)| k.clone())
                .collect();
            for key in dropped {
                self.remove_row(&key);
            }
            self.known.remove(&cut, end.as_deref());
        }
        self.trim_mark = MIN_TRIM_MARK.max(2 * self.rows.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_jobs::adapters::list_sorted;
    use proptest::prelude::*;

    /// One thing that happens to an instance's rows.
    #[derive(Debug, Clone)]
    enum Op {
        Put(String, u8),
        Delete(String),
        DeleteAll,
        Get(String),
        List {
            prefix: String,
            start: Option<String>,
            limit: Option<usize>,
            settle: bool,
        },
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("meta".to_string()),
            Just("pool".to_string()),
            (0..300u32).prop_map(|i| format!("q:{i:05}")),
            (0..40u32).prop_map(|i| format!("dead:{i:03}")),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (key(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            3 => key().prop_map(Op::Delete),
            1 => Just(Op::DeleteAll),
            3 => key().prop_map(Op::Get),
            4 => (
                prop_oneof![Just("q:"), Just("dead:"), Just("")],
                prop::option::of(key()),
                prop::option::of(1..80usize),
                any::<bool>(),
            )
                .prop_map(|(p, start, limit, settle)| Op::List {
                    prefix: p.to_string(),
                    start,
                    limit,
                    settle,
                }),
        ]
    }

    /// Reads through the cache the way the instance storage does, with `store` as the file.
    fn read_get(
        cache: &mut RowCache,
        store: &BTreeMap<String, Vec<u8>>,
        key: &str,
    ) -> Option<Vec<u8>> {
        if let Some(known) = cache.get(key) {
            return known;
        }
        let value = store.get(key).cloned();
        cache.learn_row(cache.version(), key, value.clone());
        value
    }

    /// A read ahead under way, as the instance storage keeps it: what the store returned
    /// when it was sent, and the writes made to its range since.
    struct Ahead {
        range: RowRange,
        rows: Vec<(String, Vec<u8>)>,
        writes: Vec<WriteOp>,
    }

    const AHEAD_ROWS: usize = 16;

    fn learn(cache: &mut RowCache, ahead: &mut Option<Ahead>) -> bool {
        let Some(a) = ahead.take() else { return false };
        cache.learn_ahead(&a.range, AHEAD_ROWS, a.rows, &a.writes);
        true
    }

    fn record(ahead: &mut Option<Ahead>, op: WriteOp) {
        if let Some(a) = ahead.as_mut() {
            let key = match &op {
                WriteOp::Put(k, _) | WriteOp::Delete(k) => k,
            };
            if key.as_str() >= a.range.start.as_str()
                && a.range.end.as_deref().is_none_or(|e| key.as_str() < e)
            {
                a.writes.push(op);
            }
        }
    }

    fn read_list(
        cache: &mut RowCache,
        store: &BTreeMap<String, Vec<u8>>,
        options: ListOptions<'_>,
        ahead: &mut Option<Ahead>,
        settle: bool,
    ) -> Vec<(String, Vec<u8>)> {
        let range = range_of(&options);
        if settle {
            learn(cache, ahead);
        }
        if let Some(rows) = cache.list(&range) {
            if ahead.is_none() {
                if let Some(start) = cache.read_ahead_start(&range, AHEAD_ROWS / 2) {
                    let a = RowRange {
                        start,
                        end: range.end.clone(),
                        limit: Some(AHEAD_ROWS),
                    };
                    let opts = ListOptions {
                        prefix: "",
                        start: Some(&a.start),
                        end: a.end.as_deref(),
                        limit: a.limit,
                    };
                    let rows = list_sorted(store, opts);
                    *ahead = Some(Ahead {
                        range: a,
                        rows,
                        writes: Vec::new(),
                    });
                }
            }
            return rows;
        }
        if learn(cache, ahead) {
            if let Some(rows) = cache.list(&range) {
                return rows;
            }
        }
        let fetch = range.limit.map(|l| l.max(16));
        let rows = list_sorted(
            store,
            ListOptions {
                limit: fetch,
                ..options
            },
        );
        cache.learn_range(cache.version(), &range, fetch, &rows);
        rows.into_iter()
            .take(range.limit.unwrap_or(usize::MAX))
            .collect()
    }

    proptest! {
        #[test]
        fn answers_like_the_file(
            initial in prop::collection::btree_map(key(), any::<u8>(), 0..200),
            first_rows in 0..120usize,
            ops in prop::collection::vec(op(), 0..400),
        ) {
            let mut store: BTreeMap<String, Vec<u8>> =
                initial.into_iter().map(|(k, v)| (k, vec![v])).collect();
            let first: Vec<_> = store.iter().take(first_rows).map(|(k, v)| (k.clone(), v.clone())).collect();
            let mut cache = RowCache::with_first_rows(first, first_rows >= store.len());
            let mut ahead: Option<Ahead> = None;
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        let mut batch = WriteBatch::new();
                        batch.put(k.clone(), vec![v]);
                        store.insert(k.clone(), vec![v]);
                        cache.apply(&batch);
                        record(&mut ahead, WriteOp::Put(k, vec![v]));
                    }
                    Op::Delete(k) => {
                        let mut batch = WriteBatch::new();
                        batch.delete(k.clone());
                        store.remove(&k);
                        cache.apply(&batch);
                        record(&mut ahead, WriteOp::Delete(k));
                    }
                    Op::DeleteAll => {
                        let mut batch = WriteBatch::new();
                        batch.delete_all();
                        store.clear();
                        cache.apply(&batch);
                        ahead = None;
                    }
                    Op::Get(k) => {
                        prop_assert_eq!(read_get(&mut cache, &store, &k), store.get(&k).cloned());
                    }
                    Op::List { prefix, start, limit, settle } => {
                        let options = ListOptions { prefix: &prefix, start: start.as_deref(), end: None, limit };
                        let expected = list_sorted(&store, options);
                        prop_assert_eq!(read_list(&mut cache, &store, options, &mut ahead, settle), expected);
                    }
                }
                // Every cached row is the file's, and the cache stays small.
                for (k, v) in &cache.rows {
                    prop_assert_eq!(store.get(k), Some(v));
                    prop_assert!(cache.known.contains(k));
                }
                prop_assert!(cache.len() <= MIN_TRIM_MARK.max(2 * (2 + 2 * KEPT_PER_FAMILY)));
                let bytes: usize = cache.rows.iter().map(|(k, v)| row_bytes(k, v)).sum();
                prop_assert_eq!(cache.bytes(), bytes);
            }
        }
    }

    #[test]
    fn lookups_of_absent_ids_do_not_pile_up() {
        let mut cache = RowCache::with_first_rows(Vec::new(), false);
        cache.learn_row(cache.version(), "meta", Some(vec![1]));
        for i in 0..10_000 {
            let key = format!("idem:{i}");
            assert_eq!(cache.get(&key), None, "{key} is not known yet");
            cache.learn_row(cache.version(), &key, None);
            assert_eq!(cache.get(&key), Some(None), "{key} is known to be absent");
            assert!(
                cache.known.len() <= MAX_KNOWN_RANGES + 1,
                "{} ranges",
                cache.known.len()
            );
        }
        assert_eq!(cache.get("meta"), Some(Some(vec![1])));
    }

    #[test]
    fn a_long_queue_keeps_only_its_head() {
        let mut cache = RowCache::with_first_rows(Vec::new(), true);
        for i in 0..10_000 {
            let mut batch = WriteBatch::new();
            batch.put(format!("q:{i:06}"), vec![0; 100]);
            cache.apply(&batch);
        }
        assert!(cache.len() <= MIN_TRIM_MARK, "{} rows cached", cache.len());
        let head = cache.list(&range_of(&ListOptions::prefix("q:").limit(1)));
        assert_eq!(head.map(|r| r[0].0.clone()).as_deref(), Some("q:000000"));
        // The tail is unknown, so it is read from the file rather than answered wrongly.
        assert_eq!(cache.get("q:009999"), None);
    }
}

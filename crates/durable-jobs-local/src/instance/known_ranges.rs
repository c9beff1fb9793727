//! The key ranges in which an instance's row cache mirrors the file exactly.
//!
//! A range is `[start, end)` in byte order; `end = None` is unbounded. Ranges are kept
//! disjoint and never adjacent (touching ranges are merged), so the range that contains a
//! key tells at once how far the cache can answer a scan from it.

use std::collections::BTreeMap;
use std::ops::Bound;

/// A set of disjoint key ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KnownRanges {
    /// Each range's end by its start.
    ranges: BTreeMap<String, Option<String>>,
}

/// Whether `key` lies before `end` (`None`: no end).
pub(crate) fn before(key: &str, end: Option<&str>) -> bool {
    end.is_none_or(|e| key < e)
}

/// The smallest key after `key`: nothing sorts between the two.
pub(crate) fn successor(key: &str) -> String {
    let mut next = String::with_capacity(key.len() + 1);
    next.push_str(key);
    next.push('\0');
    next
}

/// The later of two range ends (`None` is unbounded).
fn later<'a>(a: Option<&'a str>, b: Option<&'a str>) -> Option<&'a str> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

impl KnownRanges {
    /// Every key.
    pub fn everything() -> Self {
        let mut ranges = BTreeMap::new();
        ranges.insert(String::new(), None);
        KnownRanges { ranges }
    }

    /// The end of the range that contains `key`: `None` if no range does, `Some(None)` if
    /// that range is unbounded.
    pub fn end_of(&self, key: &str) -> Option<Option<&str>> {
        let (_, end) = self
            .ranges
            .range::<str, _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let end = end.as_deref();
        before(key, end).then_some(end)
    }

    /// How many disjoint ranges the set holds.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether a range contains `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.end_of(key).is_some()
    }

    /// Adds `[start, end)`, merging it with the ranges it overlaps or touches.
    pub fn insert(&mut self, start: &str, end: Option<&str>) {
        if !before(start, end) {
            return;
        }
        let mut merged_start = start.to_string();
        let mut merged_end = end.map(str::to_string);
        // A range starting before `start` that reaches it.
        if let Some((s, e)) = self
            .ranges
            .range::<str, _>((Bound::Unbounded, Bound::Excluded(start)))
            .next_back()
        {
            if e.as_deref().is_none_or(|e| e >= start) {
                merged_start = s.clone();
                merged_end = later(merged_end.as_deref(), e.as_deref()).map(str::to_string);
            }
        }
        // Ranges starting inside `[start, end]` (touching at `end` included).
        let upper = match &merged_end {
            Some(e) => Bound::Included(e.as_str()),
            None => Bound::Unbounded,
        };
        let swallowed: Vec<(String, Option<String>)> = self
            .ranges
            .range::<str, _>((Bound::Included(merged_start.as_str()), upper))
            .map(|(s, e)| (s.clone(), e.clone()))
            .collect();
        for (s, e) in swallowed {
            self.ranges.remove(&s);
            merged_end = later(merged_end.as_deref(), e.as_deref()).map(str::to_string);
        }
        self.ranges.insert(merged_start, merged_end);
    }

    /// Removes `[start, end)`, splitting the ranges it cuts through.
    pub fn remove(&mut self, start: &str, end: Option<&str>) {
        if !before(start, end) {
            return;
        }
        let upper = match end {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        let mut cut: Vec<(String, Option<String>)> = self
            .ranges
            .range::<str, _>((Bound::Included(start), upper))
            .map(|(s, e)| (s.clone(), e.clone()))
            .collect();
        if let Some((s, e)) = self
            .ranges
            .range::<str, _>((Bound::Unbounded, Bound::Excluded(start)))
            .next_back()
        {
            if before(start, e.as_deref()) {
                cut.push((s.clone(), e.clone()));
            }
        }
        for (s, e) in cut {
            self.ranges.remove(&s);
            if s.as_str() < start {
                self.ranges.insert(s, Some(start.to_string()));
            }
            if let Some(end) = end {
                if before(end, e.as_deref()) {
                    self.ranges.insert(end.to_string(), e);
                }
            }
        }
    }

    /// The ranges, in order (for tests and checks).
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.ranges.iter().map(|(s, e)| (s.as_str(), e.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A model: which of a small alphabet's keys are known.
    fn model_contains(ops: &[(bool, String, Option<String>)], key: &str) -> bool {
        let mut known = false;
        for (add, start, end) in ops {
            if key >= start.as_str() && before(key, end.as_deref()) {
                known = *add;
            }
        }
        known
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-d]{0,3}"
    }

    proptest! {
        #[test]
        fn agrees_with_a_model(
            ops in prop::collection::vec(
                (any::<bool>(), key(), prop::option::of(key())),
                0..24,
            ),
            probes in prop::collection::vec(key(), 0..32),
        ) {
            let mut ranges = KnownRanges::default();
            for (add, start, end) in &ops {
                if *add {
                    ranges.insert(start, end.as_deref());
                } else {
                    ranges.remove(start, end.as_deref());
                }
            }
            for probe in &probes {
                prop_assert_eq!(ranges.contains(probe), model_contains(&ops, probe), "{}", probe);
                let probe_next = successor(probe);
                prop_assert_eq!(
                    ranges.contains(&probe_next),
                    model_contains(&ops, &probe_next)
                );
            }
            // Disjoint, ordered, never touching.
            let all: Vec<_> = ranges.iter().collect();
            for pair in all.windows(2) {
                let (end, next_start) = (pair[0].1, pair[1].0);
                prop_assert!(end.is_some_and(|e| e < next_start), "{:?}", all);
            }
            // The end a range reports is the first unknown key after the probe.
            for probe in &probes {
                if let Some(Some(end)) = ranges.end_of(probe) {
                    prop_assert!(!model_contains(&ops, end), "{} ends at {}", probe, end);
                }
            }
        }
    }
}

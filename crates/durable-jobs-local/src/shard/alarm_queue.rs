//! A shard's window of upcoming alarms.
//!
//! The alarm index lives in SQLite; a shard keeps in memory only the alarms of its
//! instances due before its *horizon* (a short window ahead), so idle instances cost no
//! memory. The window is refilled from the index in pages. While a refill is in flight,
//! alarm changes committed meanwhile are logged and replayed over its result, so a refill
//! that read older rows never hides a newer alarm.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// The alarms of one shard due before its horizon, earliest first.
pub(crate) struct AlarmQueue {
    /// (time, generation, instance); entries whose generation is not current are stale.
    /// Stale entries are skipped when they reach the top rather than searched out when an
    /// alarm changes.
    heap: BinaryHeap<Reverse<(i64, u64, Arc<str>)>>,
    /// Each instance's live alarm with its generation: the one heap entry that counts.
    current: HashMap<Arc<str>, (i64, u64)>,
    /// The generation the next alarm gets, so that an alarm set again, even to the same
    /// time, supersedes its earlier entry.
    next_gen: u64,
    /// The queue holds every alarm before this time; later ones are left to the index,
    /// except retries (see [`retry`](Self::retry)).
    horizon: i64,
    /// While a refill reads the index: the alarm changes committed meanwhile, to replay
    /// over its older rows.
    refilling: Option<Vec<(Arc<str>, Option<i64>)>>,
}

impl AlarmQueue {
    /// An empty queue that holds nothing yet: every alarm is still in the index.
    pub fn new() -> Self {
        AlarmQueue {
            heap: BinaryHeap::new(),
            current: HashMap::new(),
            next_gen: 0,
            horizon: i64::MIN,
            refilling: None,
        }
    }

    /// The time up to which the queue is complete.
    pub fn horizon(&self) -> i64 {
        self.horizon
    }

    /// Whether a refill is reading the index, which may bring in alarms already due.
    pub fn is_refilling(&self) -> bool {
        self.refilling.is_some()
    }

    /// Records the alarm an instance's committed step left (even if unchanged in value:
    /// an alarm set again to the same time must fire again).
    pub fn set(&mut self, instance: &Arc<str>, at: Option<i64>) {
        if let Some(log) = &mut self.refilling {
            log.push((instance.clone(), at));
        }
        self.apply(instance, at);
    }

    /// Makes `at` the instance's live alarm if it falls before the horizon; a later alarm,
    /// or none, leaves the instance out of the queue.
    fn apply(&mut self, instance: &Arc<str>, at: Option<i64>) {
        match at {
            Some(t) if t < self.horizon => self.push(instance, t),
            _ => {
                self.current.remove(instance);
            }
        }
    }

    /// Makes `at` the instance's live alarm, whatever the horizon.
    fn push(&mut self, instance: &Arc<str>, at: i64) {
        let gen = self.next_gen;
        self.next_gen += 1;
        self.current.insert(instance.clone(), (at, gen));
        self.heap.push(Reverse((at, gen, instance.clone())));
    }

    /// Sets a retry time for an alarm whose handler failed, unless a newer alarm exists.
    /// The retry is kept even beyond the horizon: the index still holds the time that
    /// failed, which lies behind the horizon, so no refill would ever bring it back.
    pub fn retry(&mut self, instance: &Arc<str>, at: i64) {
        if !self.current.contains_key(instance) {
            self.push(instance, at);
        }
    }

    /// Starts logging alarm changes, for a refill about to read the index.
    pub fn begin_refill(&mut self) {
        self.refilling = Some(Vec::new());
    }

    /// Applies a refill: `rows` are this shard's alarms, complete up to `horizon`.
    pub fn finish_refill(&mut self, rows: Vec<(Arc<str>, i64)>, horizon: i64) {
        self.horizon = self.horizon.max(horizon);
        for (instance, at) in rows {
            if !self.current.contains_key(&instance) {
                self.apply(&instance, Some(at));
            }
        }
        for (instance, at) in self.refilling.take().unwrap_or_default() {
            self.apply(&instance, at);
        }
    }

    /// Abandons a failed refill.
    pub fn abort_refill(&mut self) {
        self.refilling = None;
    }

    /// The earliest live alarm.
    pub fn peek(&mut self) -> Option<i64> {
        while let Some(Reverse((t, gen, id))) = self.heap.peek() {
            if self.current.get(id) == Some(&(*t, *gen)) {
                return Some(*t);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes the next alarm due by `now`; it is consumed in memory as it fires.
    pub fn pop_due(&mut self, now: i64) -> Option<(Arc<str>, i64)> {
        let t = self.peek()?;
        if t > now {
            return None;
        }
        let Reverse((t, _, id)) = self.heap.pop()?;
        self.current.remove(&id);
        Some((id, t))
    }

    /// Alarms held in memory.
    pub fn len(&self) -> usize {
        self.current.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn orders_and_skips_stale_entries() {
        let mut q = AlarmQueue::new();
        q.finish_refill(vec![], 1_000);
        q.set(&id("a"), Some(50));
        q.set(&id("b"), Some(20));
        q.set(&id("a"), Some(10));
        q.set(&id("c"), Some(5_000)); // beyond the horizon: left to the index
        assert_eq!(q.pop_due(100), Some((id("a"), 10)));
        assert_eq!(q.pop_due(100), Some((id("b"), 20)));
        assert_eq!(q.pop_due(100), None, "a's stale 50 is skipped");
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn an_alarm_set_again_to_the_same_time_fires_again() {
        let mut q = AlarmQueue::new();
        q.finish_refill(vec![], 1_000);
        q.set(&id("a"), Some(0));
        assert_eq!(q.pop_due(5), Some((id("a"), 0)));
        q.set(&id("a"), Some(0));
        assert_eq!(q.pop_due(5), Some((id("a"), 0)));
        q.retry(&id("a"), 7);
        assert_eq!(q.pop_due(6), None);
        assert_eq!(q.pop_due(7), Some((id("a"), 7)));
    }

    #[test]
    fn a_retry_beyond_the_horizon_is_kept() {
        let mut q = AlarmQueue::new();
        q.finish_refill(vec![(id("a"), 10)], 100);
        assert_eq!(q.pop_due(10), Some((id("a"), 10)));
        q.retry(&id("a"), 500);
        q.finish_refill(vec![], 200);
        assert_eq!(q.pop_due(499), None);
        q.finish_refill(vec![], 600);
        assert_eq!(q.pop_due(500), Some((id("a"), 500)));
    }

    #[test]
    fn commits_during_a_refill_win_over_its_rows() {
        let mut q = AlarmQueue::new();
        q.finish_refill(vec![], 100);
        q.begin_refill();
        q.set(&id("a"), Some(150)); // committed after the refill's read
        q.set(&id("b"), None);
        q.finish_refill(vec![(id("a"), 120), (id("b"), 130), (id("c"), 140)], 200);
        assert_eq!(q.pop_due(1_000), Some((id("c"), 140)));
        assert_eq!(q.pop_due(1_000), Some((id("a"), 150)));
        assert_eq!(q.pop_due(1_000), None);
    }
}

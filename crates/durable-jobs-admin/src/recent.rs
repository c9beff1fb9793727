//! The last lifecycle events of each instance, kept in memory for the admin API.
//!
//! Bounded twice: a few events per instance, and a few thousand instances, the one whose
//! latest event is the oldest leaving first. These are the events of the work done in this
//! process; with several processes (PostgreSQL), each sees its own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use durable_jobs::services::tracker::EventTracker;
use durable_jobs::JobEvent;

/// Events kept per instance by default.
pub const DEFAULT_EVENTS_PER_INSTANCE: usize = 50;

/// Instances kept by default.
pub const DEFAULT_INSTANCES: usize = 10_000;

/// An event tracker that keeps each instance's latest events: pass it to the runtime's
/// builder (with others through `FanoutTracker`) and to [`crate::Admin::with_recent_events`].
#[derive(Debug)]
pub struct RecentEvents {
    per_instance: usize,
    instances: usize,
    inner: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    /// Instance id → its events, oldest first, and the tick of the newest.
    by_instance: HashMap<String, (VecDeque<JobEvent>, u64)>,
    /// Tick of each instance's newest event → the instance: the first is evicted first.
    by_age: BTreeMap<u64, String>,
    tick: u64,
}

impl Default for RecentEvents {
    fn default() -> Self {
        Self::new(DEFAULT_EVENTS_PER_INSTANCE, DEFAULT_INSTANCES)
    }
}

impl RecentEvents {
    /// Keeps up to `per_instance` events of up to `instances` instances (each at least 1).
    pub fn new(per_instance: usize, instances: usize) -> Self {
        RecentEvents {
            per_instance: per_instance.max(1),
            instances: instances.max(1),
            inner: Mutex::new(Kept::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A panic while holding the lock leaves the maps consistent: every change to them
        // is a single insert or remove.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events kept of `instance_id` (`{kind}:{name}:{key}`), oldest first.
    pub fn of(&self, instance_id: &str) -> Vec<JobEvent> {
        self.lock()
            .by_instance
            .get(instance_id)
            .map(|(events, _)| events.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many instances have events kept.
    pub fn instances(&self) -> usize {
        self.lock().by_instance.len()
    }
}

impl EventTracker for RecentEvents {
    fn emit(&self, event: JobEvent) {
        let mut kept = self.lock();
        let kept = &mut *kept;
        kept.tick += 1;
        let tick = kept.tick;
        let id = event.instance_id.clone();
        let (events, newest) = kept
            .by_instance
            .entry(id.clone())
            .or_insert_with(|| (VecDeque::new(), tick));
        kept.by_age.remove(newest);
        *newest = tick;
        events.push_back(event);
        if events.len() > self.per_instance {
            events.pop_front();
        }
        kept.by_age.insert(tick, id);
        while kept.by_instance.len() > self.instances {
            let Some((_, oldest)) = kept.by_age.pop_first() else {
                break;
            };
            kept.by_instance.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_jobs::EventKind;

    fn event(instance: &str, n: i64) -> JobEvent {
        JobEvent {
            timestamp: n,
            job_name: "tasks".into(),
            instance_id: instance.into(),
            kind: EventKind::WorkerPoolResumed,
        }
    }

    #[test]
    fn keeps_the_latest_events_of_the_latest_instances() {
        let recent = RecentEvents::new(2, 2);
        for (instance, n) in [("a", 1), ("a", 2), ("a", 3), ("b", 4), ("c", 5)] {
            recent.emit(event(instance, n));
        }
        assert!(recent.of("a").is_empty(), "the oldest instance left first");
        assert_eq!(recent.of("b").len(), 1);
        recent.emit(event("b", 6));
        recent.emit(event("d", 7));
        let times = |id| {
            recent
                .of(id)
                .iter()
                .map(|e| e.timestamp)
                .collect::<Vec<_>>()
        };
        assert_eq!(times("b"), [4, 6], "b was refreshed, so c left");
        assert!(times("c").is_empty());
        assert_eq!(times("d"), [7]);
        assert_eq!(recent.instances(), 2);
        for n in 8..20 {
            recent.emit(event("d", n));
        }
        assert_eq!(times("d"), [18, 19], "two per instance");
    }
}

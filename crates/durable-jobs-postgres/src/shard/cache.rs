//! The shard's engines: one per instance in use, made on first use and dropped once idle.
//!
//! An engine holds no rows (every step reads the database), only what orders the
//! instance's work in this process: its lock, and whether it executes. Dropping an unused
//! one loses nothing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::services::tracker::EventTracker;
use durable_jobs::{Engine, Registry};

use crate::instance::InstanceStorage;
use crate::shared::Shared;

/// An instance's engine, shared by the requests and passes running on it.
pub(crate) type LiveEngine = Rc<Engine<InstanceStorage>>;

struct Entry {
    engine: LiveEngine,
    /// When a request or pass last asked for it.
    last_used: Cell<Instant>,
}

/// The engines of one shard.
pub(crate) struct EngineCache {
    registry: Registry,
    tracker: Arc<dyn EventTracker>,
    shared: Arc<Shared>,
    evict_after: Duration,
    entries: RefCell<HashMap<Arc<str>, Entry>>,
}

impl EngineCache {
    /// An empty cache.
    pub fn new(
        registry: Registry,
        tracker: Arc<dyn EventTracker>,
        shared: Arc<Shared>,
        evict_after: Duration,
    ) -> Self {
        EngineCache {
            registry,
            tracker,
            shared,
            evict_after,
            entries: RefCell::default(),
        }
    }

    /// The engine of `id`, made if needed.
    pub fn engine(&self, id: &Arc<str>) -> LiveEngine {
        let mut entries = self.entries.borrow_mut();
        let entry = entries.entry(id.clone()).or_insert_with(|| Entry {
            engine: Rc::new(self.make(id)),
            last_used: Cell::new(Instant::now()),
        });
        entry.last_used.set(Instant::now());
        entry.engine.clone()
    }

    fn make(&self, id: &Arc<str>) -> Engine<InstanceStorage> {
        let storage = InstanceStorage::new(id.clone(), self.shared.clone());
        // An execution cut short by a crash, or fenced off, leaves no outcome: counting it
        // when it starts makes a job that keeps dying use up its attempts.
        Engine::new(self.registry.clone(), storage)
            .with_tracker(self.tracker.clone())
            .with_attempts_recorded_at_start()
            .with_claim_size(self.shared.claim_size)
    }

    /// Drops the engines idle for `evict_after` that nothing uses.
    pub fn evict_idle(&self) {
        let evict_after = self.evict_after;
        self.entries.borrow_mut().retain(|_, entry| {
            let unused = Rc::strong_count(&entry.engine) == 1 && !entry.engine.is_executing();
            !(unused && entry.last_used.get().elapsed() >= evict_after)
        });
    }
}

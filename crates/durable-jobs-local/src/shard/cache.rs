//! The shard's instance cache: the live engines of its instances, loaded from the store on
//! first use and dropped again once idle, so idle instances cost no memory.
//!
//! An engine that lost a commit is replaced by one loaded afresh from the file, with a
//! higher generation. If the old one is still executing user code, it is kept as
//! *retired* until that execution ends, so that the alarm driver can hold the new one
//! back: one instance never runs two executions at once.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::adapters::UserCodeRunner;
use durable_jobs::services::tracker::EventTracker;
use durable_jobs::{Engine, JobError, Registry};
use tokio::sync::{Notify, OnceCell};

use super::alarm_queue::AlarmQueue;
use super::ShardConfig;
use crate::clock::Clock;
use crate::instance::{InstanceStorage, FIRST_ROWS};
use crate::store::StoreHandle;

/// An instance's engine, shared by the requests and alarms running on it.
pub(crate) type LiveEngine = Rc<Engine<InstanceStorage>>;

/// One cached instance. Its engine is built once, by whichever caller comes first; the
/// others wait for that load instead of reading the rows twice.
struct Slot {
    /// Which load of the instance this slot holds: its engine's fencing token in the store.
    generation: u64,
    /// The engine, once its rows are loaded.
    engine: OnceCell<LiveEngine>,
    /// When a request or alarm last asked for it, to evict it once idle.
    last_used: Cell<Instant>,
}

impl Slot {
    fn empty(generation: u64) -> Rc<Self> {
        Rc::new(Slot {
            generation,
            engine: OnceCell::new(),
            last_used: Cell::new(Instant::now()),
        })
    }

    /// Whether a commit of its engine was lost, so its rows in memory run ahead of the file.
    fn is_broken(&self) -> bool {
        self.engine.get().is_some_and(|e| e.backend().is_broken())
    }

    /// Whether nothing holds or runs it any more, so dropping it loses nothing.
    fn is_unused(self: &Rc<Self>) -> bool {
        Rc::strong_count(self) == 1
            && self
                .engine
                .get()
                .is_none_or(|e| Rc::strong_count(e) == 1 && !e.is_executing())
    }
}

/// The live instances of one shard.
pub(crate) struct InstanceCache {
    /// The job kinds an engine runs.
    registry: Registry,
    /// Where engines report lifecycle events.
    tracker: Arc<dyn EventTracker>,
    /// The runtime's clock, handed to each instance's storage.
    clock: Clock,
    /// Where instances load their rows and commit.
    store: StoreHandle,
    /// The shard's alarm window, which an instance's commits keep current.
    alarms: Rc<RefCell<AlarmQueue>>,
    /// Wakes the shard's loop when an instance commits a new alarm.
    wake: Rc<Notify>,
    /// How long an instance stays cached after its last use.
    evict_after: Duration,
    /// Bytes of rows the cached instances may hold before unused ones go early.
    budget: usize,
    /// Where instances run user code; `None` runs it on the shard.
    runner: Option<Arc<dyn UserCodeRunner>>,
    /// Whether engines record each attempt before its user code runs.
    attempts_recorded_at_start: bool,
    /// How many queued events one WorkerPool claim takes.
    claim_size: usize,
    /// The cached instances by id.
    slots: RefCell<HashMap<Arc<str>, Rc<Slot>>>,
    /// Engines replaced after a lost commit while they were executing, by instance; each
    /// is dropped from here once its execution has ended.
    retired: RefCell<HashMap<Arc<str>, Vec<LiveEngine>>>,
    /// The generation of the last slot made. One counter for the whole shard, so that each
    /// instance's loads get ever higher generations, even across evictions.
    generations: Cell<u64>,
}

impl InstanceCache {
    /// An empty cache whose instances report their alarms to `alarms` and `wake`.
    pub fn new(cfg: &ShardConfig, alarms: Rc<RefCell<AlarmQueue>>, wake: Rc<Notify>) -> Self {
        InstanceCache {
            registry: cfg.registry.clone(),
            tracker: cfg.tracker.clone(),
            clock: cfg.clock.clone(),
            store: cfg.store.clone(),
            alarms,
            wake,
            evict_after: cfg.evict_after,
            budget: cfg.cache_budget,
            runner: cfg.runner.clone(),
            attempts_recorded_at_start: cfg.attempts_recorded_at_start,
            claim_size: cfg.claim_size,
            slots: RefCell::default(),
            retired: RefCell::default(),
            generations: Cell::new(0),
        }
    }

    /// Instances held in memory.
    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Rows and bytes the cached instances hold.
    pub fn cached(&self) -> (usize, usize) {
        self.slots
            .borrow()
            .values()
            .filter_map(|slot| slot.engine.get())
            .map(|engine| engine.backend().cached())
            .fold((0, 0), |(r, b), (rows, bytes)| (r + rows, b + bytes))
    }

    /// The live engine of an instance, loading it from the store if needed.
    pub async fn engine(&self, id: &Arc<str>) -> Result<LiveEngine, JobError> {
        let slot = self.slot(id);
        slot.last_used.set(Instant::now());
        let engine = slot
            .engine
            .get_or_try_init(|| self.load(id, slot.generation))
            .await?;
        Ok(engine.clone())
    }

    /// The slot of an instance, a fresh one if it has none or its engine lost a commit.
    fn slot(&self, id: &Arc<str>) -> Rc<Slot> {
        let mut slots = self.slots.borrow_mut();
        let slot = slots
            .entry(id.clone())
            .or_insert_with(|| Slot::empty(self.next_generation()));
        // The in-memory view of a broken engine cannot be trusted: reload from the file.
        if slot.is_broken() {
            let broken = std::mem::replace(slot, Slot::empty(self.next_generation()));
            self.retire(id, &broken);
        }
        slot.clone()
    }

    /// Keeps the engine of a replaced slot while it still executes, for the fence.
    fn retire(&self, id: &Arc<str>, slot: &Slot) {
        if let Some(engine) = slot.engine.get().filter(|e| e.is_executing()) {
            self.retired
                .borrow_mut()
                .entry(id.clone())
                .or_default()
                .push(engine.clone());
        }
    }

    /// Whether an engine of `id` older than `generation` still runs an execution; an
    /// engine of that generation must then not start one of its own.
    pub fn older_engine_executing(&self, id: &Arc<str>, generation: u64) -> bool {
        let mut retired = self.retired.borrow_mut();
        let Some(engines) = retired.get_mut(id) else {
            return false;
        };
        engines.retain(|e| e.is_executing());
        let executing = engines
            .iter()
            .any(|e| e.backend().generation() < generation);
        if engines.is_empty() {
            retired.remove(id);
        }
        executing
    }

    fn next_generation(&self) -> u64 {
        let generation = self.generations.get() + 1;
        self.generations.set(generation);
        generation
    }

    /// Reads an instance's rows and builds its engine.
    async fn load(&self, id: &Arc<str>, generation: u64) -> Result<LiveEngine, JobError> {
        let loaded = self.store.load(id.clone(), FIRST_ROWS).await?;
        let storage = InstanceStorage::new(
            id.clone(),
            generation,
            loaded,
            self.store.clone(),
            self.clock.clone(),
            self.alarms.clone(),
            self.wake.clone(),
        );
        let mut engine =
            Engine::new(self.registry.clone(), storage).with_tracker(self.tracker.clone());
        if let Some(runner) = &self.runner {
            engine = engine.with_runner(runner.clone());
        }
        if self.attempts_recorded_at_start {
            engine = engine.with_attempts_recorded_at_start();
        }
        engine = engine.with_claim_size(self.claim_size);
        Ok(Rc::new(engine))
    }

    /// Drops the instances idle for `evict_after` that nothing uses, and more of the
    /// unused ones, least recently used first, while the cache is over its budget; their
    /// rows stay in the store and load again on their next request or alarm.
    pub fn evict_idle(&self) {
        let evict_after = self.evict_after;
        self.slots.borrow_mut().retain(|_, slot| {
            let idle = slot.last_used.get().elapsed() >= evict_after;
            !(idle && slot.is_unused())
        });
        self.evict_over_budget();
        self.retired.borrow_mut().retain(|_, engines| {
            engines.retain(|e| e.is_executing());
            !engines.is_empty()
        });
    }

    fn evict_over_budget(&self) {
        let (_, mut bytes) = self.cached();
        if bytes <= self.budget {
            return;
        }
        let mut slots = self.slots.borrow_mut();
        let mut unused: Vec<(Instant, Arc<str>, usize)> = slots
            .iter()
            .filter(|(_, slot)| slot.is_unused())
            .map(|(id, slot)| {
                let held = slot.engine.get().map_or(0, |e| e.backend().cached().1);
                (slot.last_used.get(), id.clone(), held)
            })
            .collect();
        unused.sort_unstable_by_key(|(last_used, ..)| *last_used);
        for (_, id, held) in unused {
            if bytes <= self.budget {
                break;
            }
            slots.remove(&id);
            bytes -= held;
        }
    }
}

//! The test harness: every instance in memory, a virtual clock, and the same
//! typed client as production.
//!
//! ```
//! use std::time::Duration;
//! use durable_jobs::{Debounce, DebounceContext, Registry, testing::TestJobs};
//!
//! struct Latest;
//! impl Debounce for Latest {
//!     type Event = u32;
//!     type State = u32;
//!     type Error = String;
//!     fn flush_after(&self) -> Duration { Duration::from_secs(5) }
//!     async fn execute(&self, ctx: &DebounceContext<u32>) -> Result<(), String> {
//!         assert_eq!(*ctx.state(), 2);
//!         Ok(())
//!     }
//! }
//!
//! # futures::executor::block_on(async {
//! let jobs = TestJobs::new(Registry::builder().debounce("latest", Latest).build().unwrap());
//! let client = jobs.client();
//! client.debounce::<Latest>().add("k", &1).await.unwrap();
//! client.debounce::<Latest>().add("k", &2).await.unwrap();
//! jobs.advance(Duration::from_secs(5)).await;          // fires the flush
//! assert_eq!(jobs.events_of("debounce:latest:k").last(), Some(&"debounce.flushed"));
//! # });
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::adapters::memory::MemoryStorage;
use crate::adapters::{Clock, VirtualClock};
use crate::client::{JobsClient, Transport};
use crate::engine::Engine;
use crate::errors::JobError;
use crate::events::JobEvent;
use crate::ids::InstanceId;
use crate::registry::Registry;
use crate::retry::millis;
use crate::services::tracker::MemoryTracker;
use crate::wire::{Request, Response};

/// The virtual clock's starting time: 2026-01-01T00:00:00Z.
pub const DEFAULT_START: i64 = 1_767_225_600_000;

/// Alarms one `advance` or `run_until_idle` fires at most before it decides the instances
/// keep waking each other forever.
const MAX_ALARMS_PER_CALL: usize = 1_000_000;

struct Inner {
    registry: Registry,
    clock: VirtualClock,
    tracker: Arc<MemoryTracker>,
    engines: RefCell<BTreeMap<String, Rc<Engine<MemoryStorage>>>>,
    alarm_failures: RefCell<HashMap<String, u32>>,
}

impl Inner {
    fn engine(&self, id: &str) -> Rc<Engine<MemoryStorage>> {
        let mut engines = self.engines.borrow_mut();
        engines
            .entry(id.to_string())
            .or_insert_with(|| self.new_engine(MemoryStorage::new(self.clock.clone())))
            .clone()
    }

    fn new_engine(&self, storage: MemoryStorage) -> Rc<Engine<MemoryStorage>> {
        Rc::new(Engine::new(self.registry.clone(), storage).with_tracker(self.tracker.clone()))
    }
}

/// Many job instances in memory on a virtual clock. Not `Send`: drive it from one task.
#[derive(Clone)]
pub struct TestJobs {
    inner: Rc<Inner>,
}

/// The harness's in-process transport.
#[derive(Clone)]
pub struct TestTransport {
    inner: Rc<Inner>,
}

impl Transport for TestTransport {
    async fn send(&self, request: Request) -> Result<Response, JobError> {
        // Round-trip through JSON, as a remote transport would, so tests see wire effects.
        let request = Request::from_json(&request.to_json())?;
        let engine = self.inner.engine(&request.instance.to_string());
        engine.handle(request).await
    }
}

impl TestJobs {
    /// A harness for the jobs of `registry`, its clock at [`DEFAULT_START`].
    pub fn new(registry: Registry) -> Self {
        Self::starting_at(registry, DEFAULT_START)
    }

    /// A harness whose clock starts at `start` (ms since the epoch).
    pub fn starting_at(registry: Registry, start: i64) -> Self {
        TestJobs {
            inner: Rc::new(Inner {
                registry,
                clock: VirtualClock::new(start),
                tracker: Arc::new(MemoryTracker::new()),
                engines: RefCell::default(),
                alarm_failures: RefCell::default(),
            }),
        }
    }

    /// A typed client, the same API as in production.
    pub fn client(&self) -> JobsClient<TestTransport> {
        JobsClient::new(
            self.inner.registry.clone(),
            TestTransport {
                inner: self.inner.clone(),
            },
        )
    }

    /// The virtual time (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// The virtual clock.
    pub fn clock(&self) -> &VirtualClock {
        &self.inner.clock
    }

    /// Every lifecycle event so far.
    pub fn events(&self) -> Vec<JobEvent> {
        self.inner.tracker.events()
    }

    /// The `type` names of one instance's events, in order.
    pub fn events_of(&self, instance_id: &str) -> Vec<&'static str> {
        self.inner.tracker.types_for(instance_id)
    }

    /// The event recorder.
    pub fn tracker(&self) -> &MemoryTracker {
        &self.inner.tracker
    }

    /// Replaces every instance's engine with a new one over the same storage, as a
    /// restart of the process would: what the engines held in memory is gone, while
    /// storage and alarms stay. Call it between two calls, not while one runs.
    pub fn restart(&self) {
        let mut engines = self.inner.engines.borrow_mut();
        for engine in engines.values_mut() {
            *engine = self.inner.new_engine(engine.backend().clone());
        }
    }

    /// A handle on one instance's storage, for inspection and failure injection.
    pub fn storage(&self, instance: &InstanceId) -> MemoryStorage {
        self.inner.engine(&instance.to_string()).backend().clone()
    }

    /// The ids of every instance touched so far.
    pub fn instances(&self) -> Vec<String> {
        self.inner.engines.borrow().keys().cloned().collect()
    }

    /// The earliest alarm of all instances, as (instance id, time).
    pub fn next_alarm(&self) -> Option<(String, i64)> {
        self.inner
            .engines
            .borrow()
            .iter()
            .filter_map(|(id, e)| e.backend().alarm().map(|t| (id.clone(), t)))
            .min_by_key(|(id, t)| (*t, id.clone()))
    }

    /// Moves the clock forward by `by`, firing every alarm that falls due on the way in
    /// time order (the clock reads each alarm's time as it fires). Returns the alarms fired.
    ///
    /// # Panics
    /// If instances keep setting alarms that are already due, without end.
    pub async fn advance(&self, by: Duration) -> usize {
        let target = self.now().saturating_add(millis(by));
        self.run_until(target).await
    }

    /// Fires every alarm already due, and those they make due, without moving the clock.
    ///
    /// # Panics
    /// As [`advance`](Self::advance).
    pub async fn run_until_idle(&self) -> usize {
        self.run_until(self.now()).await
    }

    /// Fires alarms in time order up to `target`, then sets the clock to `target`.
    ///
    /// # Panics
    /// As [`advance`](Self::advance).
    pub async fn run_until(&self, target: i64) -> usize {
        let mut fired = 0;
        while let Some((id, at)) = self.next_alarm().filter(|(_, t)| *t <= target) {
            assert!(
                fired < MAX_ALARMS_PER_CALL,
                "alarms keep firing without end (last: {id} at {at})"
            );
            self.inner.clock.set(at);
            self.fire(&id, at).await;
            fired += 1;
        }
        self.inner.clock.set(target);
        fired
    }

    /// Fires one instance's alarm now, as the platform would: the alarm is consumed, and if
    /// the engine fails it is set again with exponential backoff (1 s, 2 s ... 5 min).
    async fn fire(&self, id: &str, at: i64) {
        let engine = self.inner.engine(id);
        let storage = engine.backend().clone();
        if storage.alarm() == Some(at) {
            storage.set_alarm(None);
        }
        match engine.alarm().await {
            Ok(()) => {
                self.inner.alarm_failures.borrow_mut().remove(id);
            }
            Err(_) => {
                let failures = {
                    let mut map = self.inner.alarm_failures.borrow_mut();
                    let n = map.entry(id.to_string()).or_insert(0);
                    *n += 1;
                    *n
                };
                let backoff = 1000i64.saturating_mul(1 << failures.min(9)).min(300_000) / 2;
                if storage.alarm().is_none() {
                    storage.set_alarm(Some(self.now() + backoff));
                }
            }
        }
    }
}

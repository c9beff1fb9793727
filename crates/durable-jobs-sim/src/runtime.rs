//! A simulated runtime: one engine per instance over [`SimStorage`], and the futures in
//! flight (requests and alarm calls), which the simulator polls one at a time in the order
//! it chooses. It fires alarms and handles their failures as a platform does, and crashes.

use std::any::Any;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use durable_jobs::adapters::memory::MemoryStorage;
use durable_jobs::adapters::{Clock, Storage, VirtualClock};
use durable_jobs::wire::{Request, Response};
use durable_jobs::{Engine, InstanceId, JobError, Registry};

use crate::storage::{Latency, SimStorage};
use crate::world::World;

/// Names a future in flight: the number of the operation that created it.
pub type TaskId = u64;

/// What a finished future returned.
#[derive(Debug, Clone)]
pub enum Done {
    /// A request's answer.
    Request(Result<Response, JobError>),
    /// An alarm call's result.
    Alarm(Result<(), JobError>),
}

/// What a dropped or finished future was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskInfo {
    /// Its id.
    pub id: TaskId,
    /// The instance slot it ran on.
    pub slot: usize,
    /// A request (else an alarm call).
    pub is_request: bool,
}

/// What an alarm call did with the alarm that fired, decided when it is first polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consumption {
    /// Not polled yet.
    Unpolled,
    /// It found no execution running: the alarm is consumed (once the call succeeds). The
    /// number is the runtime's alarm change it made (see [`Slot::runtime_changes`]).
    Consumed(u64),
    /// An execution was running: the call only asks it to look again; the alarm stays.
    Left,
}

struct Task {
    info: TaskInfo,
    /// For alarm calls.
    consumption: Rc<Cell<Consumption>>,
    future: Pin<Box<dyn Future<Output = Done>>>,
}

/// One instance as the runtime holds it.
pub struct Slot {
    /// The instance.
    pub id: InstanceId,
    /// Its id as text.
    pub name: String,
    /// Its storage (what a crash leaves included).
    pub storage: MemoryStorage,
    /// Bumped whenever its storage or alarm may have changed.
    pub version: Rc<Cell<u64>>,
    engine: Option<Rc<Engine<SimStorage>>>,
    /// Alarm calls that failed in a row (for the retry backoff).
    failures: u32,
    /// The runtime set the alarm itself after a failure, and no step has set it since: it
    /// may be later than due work. Cleared by the first commit that writes the alarm.
    pub backoff: Rc<Cell<bool>>,
    /// Counts the runtime's own changes to the alarm (consuming it, setting a retry): a
    /// call's consumption is confirmed only if no change came after it.
    runtime_changes: Rc<Cell<u64>>,
    /// The alarm time fired while an execution ran (not consumed, so not fired twice).
    fired_while_running: Option<i64>,
}

impl Slot {
    /// Forgets the engine and everything in memory, keeping what storage made durable.
    fn restart(&mut self) {
        self.engine = None;
        self.storage.crash();
        self.failures = 0;
        self.backoff.set(false);
        self.fired_while_running = None;
        self.bump();
    }

    fn bump(&self) {
        self.version.set(self.version.get() + 1);
    }
}

/// The result of one poll.
#[derive(Debug, Default)]
pub struct Polled {
    /// The future finished with this.
    pub done: Option<(TaskInfo, Done)>,
    /// Futures dropped because their instance had to be reloaded after a failed sync.
    pub dropped: Vec<TaskInfo>,
    /// The future panicked (in user code or in the engine), with this message; it was
    /// dropped.
    pub panicked: Option<String>,
}

/// The simulated runtime.
pub struct Runtime {
    registry: Registry,
    clock: VirtualClock,
    latency: Rc<Latency>,
    world: Arc<World>,
    /// Every instance touched so far.
    pub slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    tasks: BTreeMap<TaskId, Task>,
    /// Engines record each attempt before its user code runs (as on hosts where user code
    /// can take the process down).
    attempts_recorded_at_start: bool,
    /// How many queued events one WorkerPool claim takes.
    claim_size: usize,
}

impl Runtime {
    /// A runtime for `registry` on `clock`, with storage latency from `latency`.
    pub fn new(
        registry: Registry,
        clock: VirtualClock,
        latency: Rc<Latency>,
        world: Arc<World>,
    ) -> Self {
        Runtime {
            registry,
            clock,
            latency,
            world,
            slots: Vec::new(),
            by_name: HashMap::new(),
            attempts_recorded_at_start: false,
            claim_size: 1,
            tasks: BTreeMap::new(),
        }
    }

    /// The virtual time.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: i64) {
        self.clock.set(self.clock.now().saturating_add(ms.max(0)));
    }

    /// The slot of `instance`, created on first use.
    pub fn slot_of(&mut self, instance: &InstanceId) -> usize {
        let name = instance.to_string();
        if let Some(i) = self.by_name.get(&name) {
            return *i;
        }
        let storage = MemoryStorage::durable_on_sync(self.clock.clone());
        self.world.register(&name, storage.clone());
        self.slots.push(Slot {
            id: instance.clone(),
            name: name.clone(),
            storage,
            version: Rc::new(Cell::new(0)),
            engine: None,
            failures: 0,
            backoff: Rc::new(Cell::new(false)),
            runtime_changes: Rc::new(Cell::new(0)),
            fired_while_running: None,
        });
        self.by_name.insert(name, self.slots.len() - 1);
        self.slots.len() - 1
    }

    fn engine(&mut self, slot: usize) -> Rc<Engine<SimStorage>> {
        let s = &mut self.slots[slot];
        if let Some(engine) = &s.engine {
            return engine.clone();
        }
        let storage = SimStorage::new(
            s.storage.clone(),
            self.latency.clone(),
            s.version.clone(),
            s.backoff.clone(),
        );
        let mut engine = Engine::new(self.registry.clone(), storage);
        if self.attempts_recorded_at_start {
            engine = engine.with_attempts_recorded_at_start();
        }
        engine = engine.with_claim_size(self.claim_size);
        let engine = Rc::new(engine);
        s.engine = Some(engine.clone());
        engine
    }

    /// Makes engines record each attempt before its user code runs, from the next one
    /// made.
    pub fn record_attempts_at_start(&mut self, record: bool) {
        self.attempts_recorded_at_start = record;
    }

    /// Makes WorkerPool claims take up to `size` queued events, from the next engine made.
    pub fn claim_events(&mut self, size: usize) {
        self.claim_size = size;
    }

    /// Sends a request; it runs as the scheduler polls it.
    pub fn submit(&mut self, id: TaskId, request: Request) -> usize {
        let slot = self.slot_of(&request.instance);
        let engine = self.engine(slot);
        let future = Box::pin(async move { Done::Request(engine.handle(request).await) });
        let info = TaskInfo {
            id,
            slot,
            is_request: true,
        };
        let consumption = Rc::new(Cell::new(Consumption::Left));
        self.tasks.insert(
            id,
            Task {
                info,
                consumption,
                future,
            },
        );
        slot
    }

    /// Whether `slot`'s alarm is due and may fire now: not while an alarm call fired
    /// before has not started, not twice while an execution that it already asked to look
    /// again runs, and not while the instance must be reloaded.
    pub fn fireable(&self, slot: usize) -> bool {
        let s = &self.slots[slot];
        let Some(at) = s.storage.alarm() else {
            return false;
        };
        if at > self.now() || s.storage.needs_reload() {
            return false;
        }
        let unstarted = self
            .tasks
            .values()
            .any(|t| t.info.slot == slot && t.consumption.get() == Consumption::Unpolled);
        let executing = s.engine.as_ref().is_some_and(|e| e.is_executing());
        let asked_already = executing && s.fired_while_running == Some(at);
        !unstarted && !asked_already
    }

    /// Every slot whose alarm may fire now.
    pub fn due_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|s| self.fireable(*s))
            .collect()
    }

    /// Fires `slot`'s alarm, as a platform would. When the call starts, it consumes the
    /// alarm if no execution runs; otherwise it only makes the running execution look again,
    /// and the alarm stays set until that execution sets it.
    pub fn fire(&mut self, id: TaskId, slot: usize) -> bool {
        if !self.fireable(slot) {
            return false;
        }
        let engine = self.engine(slot);
        let s = &mut self.slots[slot];
        let at = s.storage.alarm();
        if engine.is_executing() {
            s.fired_while_running = at;
        }
        s.bump();
        let consumption = Rc::new(Cell::new(Consumption::Unpolled));
        let decided = consumption.clone();
        let storage = s.storage.clone();
        let changes = s.runtime_changes.clone();
        let future = Box::pin(async move {
            // Decided on the first poll, where the engine decides whether it executes.
            let consume = !engine.is_executing() && storage.alarm() == at;
            decided.set(if consume {
                storage.set_alarm(None);
                changes.set(changes.get() + 1);
                Consumption::Consumed(changes.get())
            } else {
                Consumption::Left
            });
            Done::Alarm(engine.alarm().await)
        });
        let info = TaskInfo {
            id,
            slot,
            is_request: false,
        };
        self.tasks.insert(
            id,
            Task {
                info,
                consumption,
                future,
            },
        );
        true
    }

    /// The futures in flight.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        self.tasks.values().map(|t| t.info).collect()
    }

    /// Whether a future is in flight.
    pub fn has_task(&self, id: TaskId) -> bool {
        self.tasks.contains_key(&id)
    }

    /// Alarm calls in flight on `slot`.
    pub fn alarm_calls(&self, slot: usize) -> usize {
        self.tasks
            .values()
            .filter(|t| t.info.slot == slot && !t.info.is_request)
            .count()
    }

    /// Polls one future once.
    pub fn poll(&mut self, id: TaskId) -> Polled {
        let Some(task) = self.tasks.get_mut(&id) else {
            return Polled::default();
        };
        let info = task.info;
        let before = task.consumption.get();
        self.world.set_in_request(info.is_request);
        self.latency.polling(id);
        let mut cx = Context::from_waker(Waker::noop());
        let poll = catch_unwind(AssertUnwindSafe(|| task.future.as_mut().poll(&mut cx)));
        self.world.set_in_request(false);
        let poll = match poll {
            Ok(poll) => poll,
            Err(panic) => {
                self.drop_tasks(|t| t.info.id == id);
                return Polled {
                    panicked: Some(panic_message(panic.as_ref())),
                    ..Polled::default()
                };
            }
        };
        let consumed = match task.consumption.get() {
            Consumption::Consumed(change) => Some(change),
            _ => None,
        };
        if task.consumption.get() != before {
            self.slots[info.slot].bump();
        }
        let mut polled = Polled::default();
        if let Poll::Ready(done) = poll {
            self.tasks.remove(&id);
            self.latency.ended(id);
            if let Done::Alarm(result) = &done {
                self.alarm_finished(consumed, info.slot, result.is_ok());
            }
            polled.done = Some((info, done));
        }
        if self.slots[info.slot].storage.needs_reload() {
            polled.dropped = self.reload(info.slot);
        }
        polled
    }

    /// After an alarm call: a success confirms that the alarm it consumed is gone, unless
    /// the runtime changed the alarm since (another call consumed it, a retry was set); a
    /// failure is retried with exponential backoff (1 s doubling, at most 5 min), as the
    /// platforms do.
    fn alarm_finished(&mut self, consumed: Option<u64>, slot: usize, ok: bool) {
        let now = self.now();
        let s = &mut self.slots[slot];
        if consumed.is_some() {
            // The execution ended: an alarm firing now finds the instance free.
            s.fired_while_running = None;
        }
        s.bump();
        if ok {
            s.failures = 0;
            if consumed.is_some() && consumed == Some(s.runtime_changes.get()) {
                s.storage.alarm_handled();
            }
            return;
        }
        s.failures += 1;
        if s.storage.needs_reload() {
            return;
        }
        if s.storage.alarm().is_none() {
            let backoff = (1_000i64 << s.failures.min(9)).min(300_000) / 2;
            s.storage.set_alarm(Some(now + backoff));
            s.runtime_changes.set(s.runtime_changes.get() + 1);
            s.backoff.set(true);
        }
    }

    /// Drops `slot`'s engine and futures and reads its storage again from what is durable,
    /// as a runtime must after a failed sync. Returns the futures dropped.
    fn reload(&mut self, slot: usize) -> Vec<TaskInfo> {
        let dropped = self.drop_tasks(|t| t.info.slot == slot);
        self.slots[slot].restart();
        dropped
    }

    /// Makes `slot`'s commits durable, as the platform does in the background. Returns the
    /// futures dropped if that failed and the instance had to be reloaded.
    pub fn persist(&mut self, slot: usize) -> Vec<TaskInfo> {
        let storage = self.slots[slot].storage.clone();
        let mut cx = Context::from_waker(Waker::noop());
        // In-memory storage answers at once.
        let _ = std::pin::pin!(storage.sync()).poll(&mut cx);
        self.slots[slot].bump();
        if storage.needs_reload() {
            return self.reload(slot);
        }
        Vec::new()
    }

    /// A crash of the whole process: every future and engine is dropped, and each instance
    /// keeps only what was durable. Returns the futures dropped.
    pub fn crash(&mut self) -> Vec<TaskInfo> {
        let dropped = self.drop_tasks(|_| true);
        self.slots.iter_mut().for_each(Slot::restart);
        dropped
    }

    fn drop_tasks(&mut self, which: impl Fn(&Task) -> bool) -> Vec<TaskInfo> {
        let ids: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| which(t))
            .map(|t| t.info.id)
            .collect();
        // Dropped in order, outside the map, so that user code's guards run one at a time.
        ids.into_iter()
            .filter_map(|id| self.tasks.remove(&id))
            .map(|task| {
                let info = task.info;
                self.latency.ended(info.id);
                drop(task);
                info
            })
            .collect()
    }

    /// The earliest alarm of all instances.
    pub fn next_alarm(&self) -> Option<i64> {
        self.slots.iter().filter_map(|s| s.storage.alarm()).min()
    }

    /// The earliest alarm of all instances that is later than `now`.
    pub fn next_alarm_after(&self, now: i64) -> Option<i64> {
        self.slots
            .iter()
            .filter_map(|s| s.storage.alarm())
            .filter(|t| *t > now)
            .min()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // User code's guards report to the world as their futures drop: keep that orderly.
        self.drop_tasks(|_| true);
    }
}

/// The text a panic carries.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

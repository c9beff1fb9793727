//! The storage the simulated engines run on: [`MemoryStorage`] (which keeps what a crash
//! would leave) behind random latency, so that every storage call may suspend and let the
//! scheduler run another future of the same instance there, as on a real platform.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use durable_jobs::adapters::memory::MemoryStorage;
use durable_jobs::adapters::{Clock, ListOptions, Storage, WriteBatch};
use durable_jobs::StorageError;

use crate::rng::{mix, SimRng};
use crate::runtime::TaskId;

/// How often storage calls suspend. Each decision is drawn from the seed, the future that
/// makes the call and how many calls it made before, so that a future's storage calls
/// suspend alike whatever else runs (a shortened operation list keeps its interleavings).
pub struct Latency {
    seed: u64,
    per_mille: u32,
    /// The future being polled.
    current: Cell<TaskId>,
    /// Storage calls made so far, per future.
    calls: RefCell<HashMap<TaskId, u64>>,
}

impl Latency {
    /// Latency seeded with `seed`: a call suspends with probability `per_mille / 1000`.
    pub fn new(seed: u64, per_mille: u32) -> Rc<Self> {
        Rc::new(Latency {
            seed,
            per_mille,
            current: Cell::new(0),
            calls: RefCell::new(HashMap::new()),
        })
    }

    /// Notes which future the scheduler polls now.
    pub fn polling(&self, task: TaskId) {
        self.current.set(task);
    }

    /// Forgets a future that ended.
    pub fn ended(&self, task: TaskId) {
        self.calls.borrow_mut().remove(&task);
    }

    /// How many polls the next storage call waits.
    fn draw(&self) -> u32 {
        let task = self.current.get();
        let n = {
            let mut calls = self.calls.borrow_mut();
            let n = calls.entry(task).or_insert(0);
            *n += 1;
            *n
        };
        let mut rng = SimRng::new(mix(self.seed, &[task, n], "latency"));
        if !rng.chance(self.per_mille) {
            return 0;
        }
        rng.between(1, 3) as u32
    }
}

/// Pending for a number of polls.
struct Suspend(u32);

impl Future for Suspend {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        Poll::Pending
    }
}

/// One instance's storage as its engine sees it.
pub struct SimStorage {
    mem: MemoryStorage,
    latency: Rc<Latency>,
    /// Bumped by every commit and sync, so checks look again only at what changed.
    version: Rc<Cell<u64>>,
    /// Set while the alarm is a retry the runtime chose; a step that writes the alarm
    /// clears it.
    backoff: Rc<Cell<bool>>,
}

impl SimStorage {
    /// Storage over `mem`, suspending as `latency` draws, counting changes in `version`
    /// and clearing `backoff` when a step writes the alarm.
    pub fn new(
        mem: MemoryStorage,
        latency: Rc<Latency>,
        version: Rc<Cell<u64>>,
        backoff: Rc<Cell<bool>>,
    ) -> Self {
        SimStorage {
            mem,
            latency,
            version,
            backoff,
        }
    }

    async fn pause(&self) {
        Suspend(self.latency.draw()).await;
    }

    fn changed(&self) {
        self.version.set(self.version.get() + 1);
    }
}

impl Storage for SimStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.pause().await;
        self.mem.get(key).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.pause().await;
        self.mem.get_many(keys).await
    }

    async fn list(&self, options: ListOptions<'_>) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.pause().await;
        self.mem.list(options).await
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.pause().await;
        let writes_alarm = batch.alarm().is_some();
        let result = self.mem.commit(batch).await;
        if result.is_ok() && writes_alarm {
            self.backoff.set(false);
        }
        self.changed();
        result
    }

    async fn sync(&self) -> Result<(), StorageError> {
        self.pause().await;
        let result = self.mem.sync().await;
        self.changed();
        result
    }
}

impl Clock for SimStorage {
    fn now(&self) -> i64 {
        self.mem.now()
    }
}

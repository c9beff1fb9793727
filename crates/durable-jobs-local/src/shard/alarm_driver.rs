//! The shard's alarm driver: keeps the in-memory window of upcoming alarms filled from the
//! store's alarm index, fires the alarms that fall due, and removes from the index those
//! that ran and were not set again. A failed alarm is tried again later, with no limit:
//! the runtime never gives an alarm up.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use durable_jobs::adapters::Clock as _;
use durable_jobs::{Backoff, JobError, RetryPolicy, StorageError};
use tokio::sync::Notify;

use super::alarm_queue::AlarmQueue;
use super::cache::{InstanceCache, LiveEngine};
use super::{shard_of, ShardConfig};
use crate::clock::Clock;
use crate::store::{AlarmPage, StoreHandle};

/// Alarm index rows read per page.
const ALARM_PAGE: usize = 10_000;

/// Delays between attempts of a failing alarm: 1 s after the first failure, doubling up to
/// 5 min, without jitter. Only the delays are consulted, never `max_attempts`: giving an
/// alarm up would strand its instance's pending work with nothing left to run it.
const ALARM_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    backoff: Backoff::Exponential {
        initial: Duration::from_secs(1),
        factor: 2.0,
        max: Duration::from_secs(300),
    },
    jitter: 0.0,
    max_duration: None,
};

/// How soon an alarm held back by the fence is tried again. The end of the older
/// execution it waits for is not signalled; one cache lookup per try costs little.
const FENCED_RETRY: Duration = Duration::from_millis(50);

/// Drives one shard's alarms.
pub(crate) struct AlarmDriver {
    /// This shard's number, to pick its own alarms out of the shared index.
    shard: usize,
    /// How many shards share the index.
    shards: usize,
    /// The runtime's clock, against which alarms fall due.
    clock: Clock,
    /// Holds the alarm index.
    store: StoreHandle,
    /// How far ahead of the clock the window reaches after a refill.
    window: Duration,
    /// The alarms due before the window's horizon; instances' commits update it too.
    queue: Rc<RefCell<AlarmQueue>>,
    /// Wakes the shard's loop when a refill brings alarms in.
    wake: Rc<Notify>,
    /// Consecutive failures of each instance's alarm, which set its next retry delay.
    failures: RefCell<HashMap<Arc<str>, u32>>,
    /// Keeps refills one at a time, so each starts from the horizon the last one reached.
    refill_lock: futures::lock::Mutex<()>,
}

impl AlarmDriver {
    /// A driver with an empty window; the first refill reads the index.
    pub fn new(cfg: &ShardConfig, wake: Rc<Notify>) -> Self {
        AlarmDriver {
            shard: cfg.index,
            shards: cfg.count,
            clock: cfg.clock.clone(),
            store: cfg.store.clone(),
            window: cfg.window,
            queue: Rc::new(RefCell::new(AlarmQueue::new())),
            wake,
            failures: RefCell::default(),
            refill_lock: futures::lock::Mutex::new(()),
        }
    }

    /// The window, shared with the instance cache so that commits re-arm alarms in it.
    pub fn queue(&self) -> Rc<RefCell<AlarmQueue>> {
        self.queue.clone()
    }

    /// Alarms in the window.
    pub fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether no alarm is due and no refill is running (a refill may still bring in due
    /// alarms).
    pub fn is_quiet(&self) -> bool {
        let due = self
            .queue
            .borrow_mut()
            .peek()
            .is_some_and(|t| t <= self.clock.now());
        !due && !self.queue.borrow().is_refilling()
    }

    /// How long until the earliest alarm in the window is due. Only the system clock needs
    /// a timer: a virtual clock wakes the shard itself whenever it is moved.
    pub fn time_to_next(&self) -> Option<Duration> {
        if self.clock.is_virtual() {
            return None;
        }
        let at = self.queue.borrow_mut().peek()?;
        let wait = at.saturating_sub(self.clock.now()).max(0);
        Some(Duration::from_millis(wait as u64))
    }

    /// Takes the alarms due now out of the window, for the shard to fire each.
    pub fn take_due(&self) -> Vec<(Arc<str>, i64)> {
        let now = self.clock.now();
        let mut queue = self.queue.borrow_mut();
        std::iter::from_fn(|| queue.pop_due(now)).collect()
    }

    /// Whether the clock has come within half a window of the horizon, so a refill should
    /// start before alarms beyond it fall due. A virtual clock only refills on demand.
    pub fn runs_low(&self, now: i64) -> bool {
        !self.clock.is_virtual()
            && now.saturating_add(self.window_ms() / 2) >= self.queue.borrow().horizon()
    }

    /// Extends the window to a full window ahead of `now`.
    pub async fn fill_from(&self, now: i64) -> Result<(), JobError> {
        self.refill(now.saturating_add(self.window_ms())).await
    }

    /// The earliest alarm of the shard, with the window extended past `up_to` first (and
    /// to at least a full window ahead of the clock).
    pub async fn next_alarm(&self, up_to: i64) -> Result<Option<i64>, JobError> {
        let target = up_to
            .saturating_add(1)
            .max(self.clock.now().saturating_add(self.window_ms()));
        self.refill(target).await?;
        Ok(self.queue.borrow_mut().peek())
    }

    /// Extends the in-memory window to `target` from the index.
    async fn refill(&self, target: i64) -> Result<(), JobError> {
        let _one_at_a_time = self.refill_lock.lock().await;
        let from = self.queue.borrow().horizon();
        if target <= from {
            return Ok(());
        }
        self.queue.borrow_mut().begin_refill();
        match self.read_index(from, target).await {
            Ok(mine) => {
                self.queue.borrow_mut().finish_refill(mine, target);
                self.wake.notify_one();
                Ok(())
            }
            Err(e) => {
                self.queue.borrow_mut().abort_refill();
                Err(e.into())
            }
        }
    }

    /// This shard's alarms in the index from `from` until `target`, read page by page.
    async fn read_index(&self, from: i64, target: i64) -> Result<AlarmPage, StorageError> {
        // The window already holds everything before `from`; an empty id sorts before
        // every instance, so the first page starts at `from` itself.
        let mut after = (from > i64::MIN).then(|| (from, Arc::<str>::from("")));
        let mut mine = Vec::new();
        loop {
            let page = self.store.alarms(after.take(), target, ALARM_PAGE).await?;
            let full = page.len() == ALARM_PAGE;
            after = page.last().cloned().map(|(id, at)| (at, id));
            mine.extend(
                page.into_iter()
                    .filter(|(id, _)| shard_of(id, self.shards) == self.shard),
            );
            if !full {
                return Ok(mine);
            }
        }
    }

    /// Runs one alarm that fell due at `at`. On success an alarm not set again is removed
    /// from the index; on failure it fires again after a growing delay, as a Durable
    /// Object's alarm does.
    pub async fn fire(&self, cache: &InstanceCache, id: Arc<str>, at: i64) {
        let engine = match cache.engine(&id).await {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(instance = %id, %error, "cannot load an instance for its alarm");
                self.retry_later(&id);
                return;
            }
        };
        // The fence: an engine replaced after a lost commit may still run user code of this
        // instance, and a second execution must not start beside it. The alarm stays in
        // the index (a crash meanwhile still finds the work scheduled) and comes back
        // shortly. No await from here to the start of `alarm`, so the check still holds
        // when the execution begins.
        if cache.older_engine_executing(&id, engine.backend().generation()) {
            tracing::debug!(instance = %id, "alarm held back: an older engine still executes");
            self.hold_back(&id);
            return;
        }
        // A busy instance only notes the alarm (its running execution looks again and sets
        // the alarm when done): its row must stay, or a crash before then would leave
        // pending work with no alarm.
        let busy = engine.is_executing();
        let writes = engine.backend().alarm_writes();
        match engine.alarm().await {
            Ok(()) => {
                self.failures.borrow_mut().remove(&id);
                if !busy && engine.backend().alarm_writes() == writes {
                    self.consume(&engine, id, at).await;
                }
            }
            Err(error) => {
                tracing::warn!(instance = %id, %error, "alarm failed; retrying with backoff");
                self.retry_later(&id);
            }
        }
    }

    /// Forgets an alarm that ran and was not set again, in memory and in the index.
    async fn consume(&self, engine: &LiveEngine, id: Arc<str>, at: i64) {
        engine.backend().consume_alarm(at);
        self.store.consume_alarm(id, at).await;
    }

    /// Wakes an instance that lost a commit now, unless an alarm of it is already in the
    /// window: the alarm step of its engine reloaded from the file sets the alarm the
    /// stored records imply, in the file and in the window.
    pub fn recheck(&self, id: &Arc<str>) {
        self.queue.borrow_mut().retry(id, self.clock.now());
        self.wake.notify_one();
    }

    /// Sets an alarm held back by the fence to fire again shortly, unless a newer alarm
    /// of the instance is already in the window.
    fn hold_back(&self, id: &Arc<str>) {
        let delay = i64::try_from(FENCED_RETRY.as_millis()).unwrap_or(i64::MAX);
        let at = self.clock.now().saturating_add(delay);
        self.queue.borrow_mut().retry(id, at);
    }

    /// Sets the failed alarm of `id` to fire again after a delay growing with its
    /// consecutive failures.
    fn retry_later(&self, id: &Arc<str>) {
        let failures = {
            let mut map = self.failures.borrow_mut();
            let n = map.entry(id.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        // Without jitter the seed changes nothing.
        let delay = ALARM_RETRY.delay(failures, 0);
        let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let at = self.clock.now().saturating_add(delay);
        self.queue.borrow_mut().retry(id, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_from_one_second_up_to_five_minutes() {
        for failures in (1..=40).chain([u32::MAX]) {
            let expected = Duration::from_millis((500u64 << failures.min(10)).min(300_000));
            assert_eq!(ALARM_RETRY.delay(failures, 0), expected, "after {failures}");
        }
    }
}

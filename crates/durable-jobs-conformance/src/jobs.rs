//! Job definitions the suite drives. They record what they see in a shared [`Log`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, EmptyContext, Rejected, RetryPolicy,
    Schedule, WorkerPool, WorkerPoolContext,
};
use futures::channel::oneshot;
use serde::{Deserialize, Serialize};

/// Lines written by jobs as they run, shared with the test.
#[derive(Clone, Default, Debug)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    /// Appends a line.
    pub fn push(&self, line: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line.into());
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Lines starting with `prefix`.
    pub fn matching(&self, prefix: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }
}

/// Makes one execution wait until the test releases it, and tells the test it started.
#[derive(Clone, Default)]
pub struct Gate {
    started: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

/// The test's side of a [`Gate`].
pub struct GateControl {
    /// Resolves when the gated execution has started.
    pub started: oneshot::Receiver<()>,
    /// Send (or drop) to let it finish.
    pub release: oneshot::Sender<()>,
}

impl Gate {
    /// A closed gate and its control.
    pub fn closed() -> (Gate, GateControl) {
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        let gate = Gate {
            started: Arc::new(Mutex::new(Some(started_tx))),
            release: Arc::new(Mutex::new(Some(release_rx))),
        };
        (
            gate,
            GateControl {
                started: started_rx,
                release: release_tx,
            },
        )
    }

    /// Waits at the gate the first time; passes freely afterwards.
    pub async fn pass(&self) {
        let started = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tx) = started {
            let _ = tx.send(());
        }
        let release = self
            .release
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rx) = release {
            let _ = rx.await;
        }
    }
}

/// Up to 10 attempts 10 s apart, but no retry later than 25 s after the first attempt:
/// attempts at 0 s, 10 s and 20 s, as the one at 30 s would come too late.
pub fn ten_attempts_within_25_seconds() -> RetryPolicy {
    RetryPolicy::fixed(10, Duration::from_secs(10)).with_max_duration(Duration::from_secs(25))
}

/// Counts down failures: `fail()` is true while the counter is above zero.
#[derive(Clone, Default)]
pub struct Failures(Arc<AtomicU32>);

impl Failures {
    /// Fails the next `n` calls.
    pub fn next(n: u32) -> Self {
        Failures(Arc::new(AtomicU32::new(n)))
    }

    /// Sets the remaining failures.
    pub fn set(&self, n: u32) {
        self.0.store(n, Ordering::SeqCst);
    }

    /// Whether this call fails.
    pub fn fail(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A Continuous job's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Runs that changed it.
    pub n: u64,
}

/// A configurable Continuous job.
#[derive(Clone)]
pub struct Ticker {
    /// Where runs are written: `run {n} at {now} attempt {attempt}`.
    pub log: Log,
    /// The schedule.
    pub schedule: Schedule,
    /// Whether to run on start.
    pub immediately: bool,
    /// Failures to produce.
    pub failures: Failures,
    /// Panics to produce.
    pub panics: Failures,
    /// Stop itself after the run that brings `n` to this.
    pub terminate_at: Option<u64>,
    /// Wait here during runs.
    pub gate: Option<Gate>,
    /// How failing runs are retried (3 attempts, 10 s apart, by default).
    pub retry: RetryPolicy,
}

impl Ticker {
    /// Every `period`, starting immediately.
    pub fn every(log: &Log, period: Duration) -> Self {
        Ticker {
            log: log.clone(),
            schedule: Schedule::every(period),
            immediately: true,
            failures: Failures::default(),
            panics: Failures::default(),
            terminate_at: None,
            gate: None,
            retry: RetryPolicy::fixed(3, Duration::from_secs(10)),
        }
    }
}

impl Continuous for Ticker {
    type State = Count;
    type Error = String;

    fn schedule(&self) -> Schedule {
        self.schedule.clone()
    }

    fn start_immediately(&self) -> bool {
        self.immediately
    }

    fn retry(&self) -> RetryPolicy {
        self.retry
    }

    fn retention(&self) -> Duration {
        Duration::from_secs(3600)
    }

    async fn execute(&self, ctx: &mut ContinuousContext<Count>) -> Result<(), String> {
        self.log.push(format!(
            "run {} at {} attempt {}",
            ctx.state().n,
            ctx.now(),
            ctx.attempt()
        ));
        if let Some(gate) = &self.gate {
            gate.pass().await;
        }
        if self.panics.fail() {
            panic!("ticker panics at attempt {}", ctx.attempt());
        }
        if self.failures.fail() {
            return Err(format!("failure at attempt {}", ctx.attempt()));
        }
        ctx.state_mut().n += 1;
        if self.terminate_at == Some(ctx.state().n) {
            ctx.terminate_with("done");
        }
        Ok(())
    }

    async fn on_error(&self, error: &String, ctx: &ContinuousContext<Count>) {
        self.log
            .push(format!("on_error {error} after {}", ctx.attempt()));
    }
}

/// A Debounce event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// Its number.
    pub n: u32,
}

/// A Debounce job collecting event numbers.
#[derive(Clone)]
pub struct Collector {
    /// Where flushes are written: `flush {state:?} count {c} {reason:?} attempt {a}`.
    pub log: Log,
    /// Failures to produce.
    pub failures: Failures,
    /// Panics to produce in `execute`.
    pub panics: Failures,
    /// Wait here during flushes.
    pub gate: Option<Gate>,
    /// How failing flushes are retried (3 attempts, 10 s apart, by default).
    pub retry: RetryPolicy,
}

/// The event number that makes [`Collector`]'s reducer panic.
pub const PANICKING_EVENT: u32 = 666;

impl Collector {
    /// A collector writing to `log`.
    pub fn new(log: &Log) -> Self {
        Collector {
            log: log.clone(),
            failures: Failures::default(),
            panics: Failures::default(),
            gate: None,
            retry: RetryPolicy::fixed(3, Duration::from_secs(10)),
        }
    }
}

impl Debounce for Collector {
    type Event = Hook;
    type State = Vec<u32>;
    type Error = String;

    fn flush_after(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn max_events(&self) -> Option<u32> {
        Some(3)
    }

    fn retry(&self) -> RetryPolicy {
        self.retry
    }

    fn on_event(&self, state: Option<Vec<u32>>, event: Hook) -> Result<Vec<u32>, Rejected> {
        assert_ne!(event.n, PANICKING_EVENT, "the reducer panics on purpose");
        let mut all = state.unwrap_or_default();
        all.push(event.n);
        Ok(all)
    }

    async fn execute(&self, ctx: &DebounceContext<Vec<u32>>) -> Result<(), String> {
        self.log.push(format!(
            "flush {:?} count {} {:?} attempt {}",
            ctx.state(),
            ctx.event_count(),
            ctx.flush_reason(),
            ctx.attempt()
        ));
        if let Some(gate) = &self.gate {
            gate.pass().await;
        }
        if self.panics.fail() {
            panic!("collector panics");
        }
        if self.failures.fail() {
            return Err("collector down".into());
        }
        Ok(())
    }

    async fn on_error(&self, error: &String, ctx: &DebounceContext<Vec<u32>>) {
        self.log.push(format!("on_error {error} {:?}", ctx.state()));
    }
}

/// A Debounce job with the default reducer (the state is the latest event).
#[derive(Clone)]
pub struct Latest {
    /// Where flushes are written: `latest {n}`.
    pub log: Log,
}

impl Debounce for Latest {
    type Event = Hook;
    type State = Hook;
    type Error = String;

    fn flush_after(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn execute(&self, ctx: &DebounceContext<Hook>) -> Result<(), String> {
        self.log
            .push(format!("latest {} of {}", ctx.state().n, ctx.event_count()));
        Ok(())
    }
}

/// A WorkerPool event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Its name, written to the log.
    pub name: String,
}

impl Task {
    /// A task named `name`.
    pub fn named(name: &str) -> Self {
        Task { name: name.into() }
    }
}

/// A WorkerPool job.
#[derive(Clone)]
pub struct Worker {
    /// Where it writes: `exec {name} on {index} attempt {a}`, `dead {name}`, `empty {index}`.
    /// A task whose name starts with `panic` panics in `execute`; one whose name starts
    /// with `hook` makes `on_dead_letter` panic.
    pub log: Log,
    /// Instances.
    pub concurrency: u32,
    /// Tasks that fail, with how many more failures each.
    pub failing: Arc<Mutex<HashMap<String, u32>>>,
    /// Wait here during executions.
    pub gate: Option<Gate>,
    /// How failing events are retried (3 attempts, 10 s apart, by default).
    pub retry: RetryPolicy,
}

impl Worker {
    /// A pool of `concurrency` writing to `log`.
    pub fn new(log: &Log, concurrency: u32) -> Self {
        Worker {
            log: log.clone(),
            concurrency,
            failing: Arc::default(),
            gate: None,
            retry: RetryPolicy::fixed(3, Duration::from_secs(10)),
        }
    }

    /// Makes task `name` fail its next `times` executions.
    pub fn fail(&self, name: &str, times: u32) {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), times);
    }
}

impl WorkerPool for Worker {
    type Event = Task;
    type Error = String;

    fn concurrency(&self) -> u32 {
        self.concurrency
    }

    fn retry(&self) -> RetryPolicy {
        self.retry
    }

    async fn execute(&self, ctx: &WorkerPoolContext<Task>) -> Result<(), String> {
        let name = &ctx.event().name;
        self.log.push(format!(
            "exec {name} on {} attempt {}",
            ctx.instance_index(),
            ctx.attempt()
        ));
        if let Some(gate) = &self.gate {
            gate.pass().await;
        }
        if name.starts_with("panic") {
            panic!("{name} panics");
        }
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = failing.get_mut(name) {
            if *n > 0 {
                *n -= 1;
                return Err(format!("{name} failed"));
            }
        }
        Ok(())
    }

    async fn on_dead_letter(&self, error: &String, ctx: &WorkerPoolContext<Task>) {
        let name = &ctx.event().name;
        self.log.push(format!("dead {name} ({error})"));
        if name.starts_with("hook") {
            panic!("on_dead_letter panics for {name}");
        }
    }

    async fn on_empty(&self, ctx: &EmptyContext) {
        self.log.push(format!("empty {}", ctx.instance_index()));
    }
}

/// What happens to an order, as its payment reminder hears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// The order exists: remind in a day.
    Created,
    /// Paid: no reminder any more.
    Paid,
    /// Keep the order but stop reminding.
    Snooze,
    /// Refused by `on_event`.
    Invalid,
    /// Makes `on_event` panic.
    Explode,
}

/// A payment reminder's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Reminders sent.
    pub reminders: u32,
}

/// A Task: reminds of an unpaid order a day after it is created, then daily, and gives up
/// after three reminders; a payment ends it.
#[derive(Clone)]
pub struct Reminder {
    /// Where it writes what it does.
    pub log: Log,
    /// Failing reminders.
    pub failures: Failures,
    /// What `on_error` sets the timer to, from the failure, if anything.
    pub retry_later: Option<Duration>,
    /// Whether `on_idle` sets a timer an hour on (once per task, while no reminder was
    /// sent).
    pub wake_when_idle: bool,
    /// Holds the first reminder until the test releases it.
    pub gate: Option<Gate>,
    /// Sends one reminder only: `execute` sets no timer.
    pub once: bool,
    /// How failing reminders are retried.
    pub retry: RetryPolicy,
}

impl Reminder {
    /// The day between reminders.
    pub const DAY: Duration = Duration::from_secs(24 * 3600);

    /// A reminder that never fails.
    pub fn new(log: &Log) -> Self {
        Reminder {
            log: log.clone(),
            failures: Failures::default(),
            retry_later: None,
            wake_when_idle: false,
            gate: None,
            once: false,
            retry: RetryPolicy::fixed(2, Duration::from_secs(10)),
        }
    }
}

impl durable_jobs::Task for Reminder {
    type State = Order;
    type Event = OrderEvent;
    type Error = String;

    fn retry(&self) -> RetryPolicy {
        self.retry
    }

    fn retention(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn on_event(
        &self,
        ctx: &mut durable_jobs::TaskContext<Order>,
        event: OrderEvent,
    ) -> Result<(), Rejected> {
        self.log.push(format!("event {} {event:?}", ctx.id()));
        match event {
            OrderEvent::Created => {
                ctx.set_state(Order { reminders: 0 });
                ctx.schedule_in(Self::DAY);
            }
            OrderEvent::Paid => ctx.terminate(),
            OrderEvent::Snooze => ctx.cancel_schedule(),
            OrderEvent::Invalid => return Err(Rejected("not an order event".into())),
            OrderEvent::Explode => panic!("on_event exploded"),
        }
        Ok(())
    }

    async fn execute(&self, ctx: &mut durable_jobs::TaskContext<Order>) -> Result<(), String> {
        if let Some(gate) = &self.gate {
            gate.pass().await;
        }
        let sent = ctx.state().map_or(0, |o| o.reminders) + 1;
        self.log.push(format!(
            "remind {} #{sent} at {} attempt {}",
            ctx.id(),
            ctx.now(),
            ctx.attempt()
        ));
        if self.failures.fail() {
            return Err("mail server down".into());
        }
        if sent == 3 {
            ctx.terminate();
        } else if self.once {
            ctx.set_state(Order { reminders: sent });
        } else {
            ctx.set_state(Order { reminders: sent });
            ctx.schedule_in(Self::DAY);
        }
        Ok(())
    }

    fn on_idle(&self, ctx: &mut durable_jobs::TaskContext<Order>) {
        self.log.push(format!("idle {}", ctx.id()));
        let untouched = ctx.state().is_none_or(|o| o.reminders == 0);
        if self.wake_when_idle && untouched {
            ctx.set_state(Order { reminders: 1 });
            ctx.schedule_in(Duration::from_secs(3600));
        }
    }

    async fn on_error(&self, error: &String, ctx: &mut durable_jobs::TaskContext<Order>) {
        self.log.push(format!("on_error {} {error}", ctx.id()));
        if let Some(later) = self.retry_later {
            ctx.schedule_in(later);
        }
    }
}

/// A transport that counts the events of each request of several events it carries
/// (`add_many`, `enqueue_many`), by instance key, and fails the request numbered `fail_at`
/// (from 0) of key `failing`, as a lost connection would.
pub struct Counting<'t, T> {
    inner: &'t T,
    sent: Mutex<Vec<(String, usize)>>,
    failing: String,
    fail_at: usize,
}

impl<'t, T: durable_jobs::Transport> Counting<'t, T> {
    /// Over `inner`, failing request `fail_at` of instance key `failing`.
    pub fn new(inner: &'t T, failing: impl Into<String>, fail_at: usize) -> Self {
        Counting {
            inner,
            sent: Mutex::default(),
            failing: failing.into(),
            fail_at,
        }
    }

    /// The sizes of the requests of several events sent to instance key `key`, in order.
    pub fn sizes(&self, key: &str) -> Vec<usize> {
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, n)| *n)
            .collect()
    }
}

impl<T: durable_jobs::Transport> durable_jobs::Transport for Counting<'_, T> {
    async fn send(
        &self,
        request: durable_jobs::wire::Request,
    ) -> Result<durable_jobs::wire::Response, durable_jobs::JobError> {
        use durable_jobs::wire::Operation;
        let size = match &request.op {
            Operation::DebounceAddMany { events } => Some(events.len()),
            Operation::WorkerPoolEnqueueMany { events } => Some(events.len()),
            _ => None,
        };
        if let Some(size) = size {
            let key = request.instance.key.clone();
            let earlier = self.sizes(&key).len();
            self.sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((key.clone(), size));
            if key == self.failing && earlier == self.fail_at {
                return Err(durable_jobs::JobError::Storage {
                    message: "the transport lost this one".into(),
                });
            }
        }
        self.inner.send(request).await
    }
}

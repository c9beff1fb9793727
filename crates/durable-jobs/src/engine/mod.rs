//! One job instance's engine: `handle(request)` and `alarm()`.
//!
//! A runtime creates one [`Engine`] per live instance, over that instance's storage, and
//! sends it every request and alarm of the instance. The engine keeps two promises on every
//! runtime (G2 in docs/ARCHITECTURE.md):
//!
//! - storage transitions are serialised by an async lock, and each commits atomically;
//! - user code (`execute` and the hooks) runs *between* two transitions, without the lock,
//!   so requests are answered while a long execution runs; at most one execution runs at a
//!   time.
//!
//! Requests never run user code other than the Debounce reducer; executions happen only in
//! `alarm`, which a request asks for by setting the alarm to "now".

mod dispatch;

pub use dispatch::MAX_EVENTS_PER_REQUEST;
mod step;

pub(crate) use step::{KindRecord, Step};

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{select, AbortHandle, Abortable, Either, LocalBoxFuture};
use futures::lock::Mutex;

use crate::adapters::{Clock, Storage, UserCodeRunner, UserTask, WriteBatch};
use crate::errors::JobError;
use crate::events::{EventKind, JobEvent};
use crate::ids::InstanceId;
use crate::jobs::unwind;
use crate::registry::Registry;
use crate::services::tracker::{EventTracker, NoopTracker};

/// How many executions one `alarm` call performs at most before handing back to the
/// runtime (it sets the alarm to now so the rest follows at once).
pub(crate) const EXECUTIONS_PER_ALARM: usize = 64;

/// How long the events of one WorkerPool claim run, in total, before the claim records
/// their outcomes and stops taking more (see [`Engine::with_claim_size`]).
pub const CLAIM_RUN_MS: i64 = 50;

/// How long an execution past its timeout has to stop once cancelled: async code stops at
/// its next `await` at once, so only code that does not yield (blocking, CPU-bound) runs
/// past this, and is then reported as overdue.
const CANCEL_GRACE: Duration = Duration::from_millis(250);

/// One run of user code, as the engine starts it.
pub(crate) struct UserRun<'a> {
    /// The instance it runs for.
    instance: &'a InstanceId,
    /// How long it may run, where the runtime can cancel it.
    timeout: Option<Duration>,
}

impl<'a> UserRun<'a> {
    /// A run for `instance`, limited to `timeout` where the runtime can cancel it.
    pub fn new(instance: &'a InstanceId, timeout: Option<Duration>) -> Self {
        UserRun { instance, timeout }
    }
}

/// The engine of one job instance, over its storage `B`.
pub struct Engine<B> {
    /// The jobs this engine can run.
    registry: Registry,
    /// The instance's storage, alarm and clock.
    backend: B,
    /// Where lifecycle events go once their step is durable.
    tracker: Arc<dyn EventTracker>,
    /// Serialises the instance's steps (see [`Step`]).
    lock: Mutex<()>,
    /// An `alarm` call is running (claims, user code, completions).
    executing: Cell<bool>,
    /// An alarm arrived while an execution ran: the running `alarm` call looks again.
    rerun: Cell<bool>,
    /// The storage keys of what user code works on now (WorkerPool events), so that a
    /// request does not remove them under the execution. Set by the claim, under the lock;
    /// cleared by the step that records the outcomes.
    running: RefCell<Vec<String>>,
    /// A request asked the running claim to stop before its next event (a pause).
    claim_interrupted: Cell<bool>,
    /// Steps committed so far (tags events with the step they wait for).
    commits: Cell<u64>,
    /// Events waiting for their step to be durable, in commit order.
    pending_events: RefCell<VecDeque<(u64, JobEvent)>>,
    /// Whether the tracker wants events (they are not built otherwise).
    tracking: bool,
    /// Requests between their first read and their durable answer.
    requests_in_flight: Cell<usize>,
    /// Where user code runs; `None` runs it on the engine's own task.
    runner: Option<Arc<dyn UserCodeRunner>>,
    /// Since when the running execution is past its timeout and did not stop.
    overdue_since: Cell<Option<i64>>,
    /// Record each attempt in storage before its user code runs.
    attempts_recorded_at_start: bool,
    /// How many queued events one WorkerPool claim may take.
    claim_size: usize,
}

impl<B: Storage + Clock> Engine<B> {
    /// An engine for the instance stored in `backend`, running the jobs of `registry`.
    pub fn new(registry: Registry, backend: B) -> Self {
        Engine {
            registry,
            backend,
            tracker: Arc::new(NoopTracker),
            lock: Mutex::new(()),
            executing: Cell::new(false),
            rerun: Cell::new(false),
            running: RefCell::new(Vec::new()),
            claim_interrupted: Cell::new(false),
            commits: Cell::new(0),
            pending_events: RefCell::new(VecDeque::new()),
            tracking: false,
            requests_in_flight: Cell::new(0),
            runner: None,
            overdue_since: Cell::new(None),
            attempts_recorded_at_start: false,
            claim_size: 1,
        }
    }

    /// Records each attempt in storage before its user code runs, at the cost of one more
    /// commit per execution. For hosts where an execution can die without an outcome (a
    /// panic that aborts the wasm isolate, a killed process): a run that keeps dying then
    /// uses up its attempts and ends as a dead letter, a failed batch or an `Error`
    /// status, instead of running again forever.
    pub fn with_attempts_recorded_at_start(mut self) -> Self {
        self.attempts_recorded_at_start = true;
        self
    }

    /// Whether each attempt is recorded before its user code runs.
    pub(crate) fn records_attempts_at_start(&self) -> bool {
        self.attempts_recorded_at_start
    }

    /// Lets one claim of a WorkerPool instance take up to `size` queued events (1 by
    /// default), run them in order, and record all their outcomes in one step: two commits
    /// for the lot instead of one or two per event, which pays where a commit is costly (a
    /// database server). A claim stops early at a failure, at a pause, or once its events
    /// have run for [`CLAIM_RUN_MS`]; the events it did not reach stay queued.
    ///
    /// The price: until their outcomes are recorded, `cancel` refuses the claimed events
    /// as running, and a crash runs again every event of the claim instead of one. After
    /// such a crash the instance takes its events one at a time until it is past the
    /// claim, so an event that kills its process still uses up its attempts.
    pub fn with_claim_size(mut self, size: usize) -> Self {
        self.claim_size = size.max(1);
        self
    }

    /// How many queued events one WorkerPool claim may take.
    pub(crate) fn claim_size(&self) -> usize {
        self.claim_size
    }

    /// Runs user code on `runner` instead of the engine's own task, which also enforces
    /// the jobs' timeouts.
    pub fn with_runner(mut self, runner: Arc<dyn UserCodeRunner>) -> Self {
        self.runner = Some(runner);
        self
    }

    /// Sends lifecycle events to `tracker`.
    pub fn with_tracker(mut self, tracker: Arc<dyn EventTracker>) -> Self {
        self.tracking = tracker.is_enabled();
        self.tracker = tracker;
        self
    }

    /// The instance's storage.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Whether user code of this instance is running now.
    pub fn is_executing(&self) -> bool {
        self.executing.get()
    }

    pub(crate) fn now(&self) -> i64 {
        self.backend.now()
    }

    /// Commits a step. Its events are reported once the step is durable (see
    /// [`make_durable`](Self::make_durable)), so a tracker never reports a lost step.
    pub(crate) async fn commit(
        &self,
        batch: WriteBatch,
        events: Vec<JobEvent>,
    ) -> Result<(), JobError> {
        if !batch.is_empty() {
            self.backend.commit(batch).await?;
            self.commits.set(self.commits.get() + 1);
        }
        self.report_when_durable(events);
        Ok(())
    }

    /// Queues events to report once every step committed so far is durable.
    pub(crate) fn report_when_durable(&self, events: Vec<JobEvent>) {
        if !self.tracking {
            return;
        }
        let tag = self.commits.get();
        self.pending_events
            .borrow_mut()
            .extend(events.into_iter().map(|e| (tag, e)));
    }

    /// Waits until every step committed so far is durable, then reports their events.
    pub(crate) async fn make_durable(&self) -> Result<(), JobError> {
        let upto = self.commits.get();
        let result = self.backend.sync().await;
        let ready: Vec<JobEvent> = {
            let mut pending = self.pending_events.borrow_mut();
            let split = pending.partition_point(|(tag, _)| *tag <= upto);
            let ready = pending.drain(..split).map(|(_, e)| e);
            if result.is_ok() {
                ready.collect()
            } else {
                // Lost steps are not reported.
                ready.for_each(drop);
                Vec::new()
            }
        };
        for event in ready {
            self.tracker.emit(event);
        }
        result.map_err(JobError::from)
    }

    /// Runs user code between a claim and its completion, without the lock. What it is
    /// given must not depend on a request's writes that could still be lost, so it first
    /// waits for them when requests are in flight, and for the claim when it recorded the
    /// attempt.
    ///
    /// `build` makes the user code's future; with a runner it is called on the runner's
    /// thread. The inner `Err` is a panic or a timeout of the user code, with its message:
    /// the caller records it as a failed attempt. The outer `Err` is the engine's own
    /// failure (the run was abandoned: the alarm is tried again later).
    async fn run_user_code<T, F>(
        &self,
        run: UserRun<'_>,
        build: F,
    ) -> Result<Result<T, String>, JobError>
    where
        T: Send + 'static,
        F: FnOnce() -> LocalBoxFuture<'static, T> + Send + 'static,
    {
        // An attempt recorded at its start counts only once durable: a run that kills its
        // host must find it after the restart.
        if self.requests_in_flight.get() > 0 || self.attempts_recorded_at_start {
            self.make_durable().await?;
        }
        match self.runner.clone() {
            None => Ok(unwind::catch(build()).await),
            Some(runner) => self.run_on(runner.as_ref(), &run, build).await,
        }
    }

    /// Runs `call` on a shared job between a claim and its completion (see
    /// [`run_user_code`](Self::run_user_code)); the job travels to wherever user code runs.
    pub(crate) async fn run_job<J, T, F>(
        &self,
        run: UserRun<'_>,
        job: &Arc<J>,
        call: F,
    ) -> Result<Result<T, String>, JobError>
    where
        J: ?Sized + Send + Sync + 'static,
        T: Send + 'static,
        F: for<'j> FnOnce(&'j J) -> LocalBoxFuture<'j, T> + Send + 'static,
    {
        let job = Arc::clone(job);
        self.run_user_code(run, move || Box::pin(async move { call(&*job).await }))
            .await
    }

    /// Runs user code on `runner`, cancelling it at its timeout.
    async fn run_on<T, F>(
        &self,
        runner: &dyn UserCodeRunner,
        run: &UserRun<'_>,
        build: F,
    ) -> Result<Result<T, String>, JobError>
    where
        T: Send + 'static,
        F: FnOnce() -> LocalBoxFuture<'static, T> + Send + 'static,
    {
        let (sender, outcome) = oneshot::channel();
        let (abort, registration) = AbortHandle::new_pair();
        runner.spawn(UserTask::new(Box::new(move || {
            Box::pin(async move {
                let result = Abortable::new(unwind::catch(build()), registration).await;
                let _ = sender.send(result);
            })
        })));
        let result = match run.timeout {
            None => outcome.await,
            Some(limit) => {
                self.await_with_timeout(runner, run.instance, limit, outcome, abort)
                    .await
            }
        };
        self.overdue_since.set(None);
        match result {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_aborted)) => Ok(Err(format!(
                "timed out after {}",
                humantime::format_duration(run.timeout.unwrap_or_default())
            ))),
            // The runner dropped the run (it is shutting down): nothing was recorded, so
            // the alarm runs it again later.
            Err(_canceled) => Err(JobError::ShutDown),
        }
    }

    /// Waits for a run's outcome; at `limit` it aborts the run, and if it still has not
    /// stopped after a grace, reports it overdue and keeps waiting (one execution per
    /// instance: the next cannot start before this one returns).
    async fn await_with_timeout<T>(
        &self,
        runner: &dyn UserCodeRunner,
        instance: &InstanceId,
        limit: Duration,
        mut outcome: oneshot::Receiver<T>,
        abort: AbortHandle,
    ) -> Result<T, oneshot::Canceled> {
        match select(&mut outcome, runner.sleep(limit)).await {
            Either::Left((result, _)) => return result,
            Either::Right(((), _)) => abort.abort(),
        }
        match select(&mut outcome, runner.sleep(CANCEL_GRACE)).await {
            Either::Left((result, _)) => return result,
            Either::Right(((), _)) => self.report_overdue(instance, limit),
        }
        outcome.await
    }

    /// The execution did not stop at its timeout (code that does not yield cannot be
    /// cancelled): it keeps its instance until it returns, and says so.
    fn report_overdue(&self, instance: &InstanceId, timeout: Duration) {
        let now = self.now();
        self.overdue_since.set(Some(now));
        tracing::warn!(%instance, timeout = ?timeout, "an execution is past its timeout and does not stop; the instance waits for it");
        if self.tracking {
            let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
            self.tracker
                .emit(self.event(instance, EventKind::ExecutionOverdue { timeout_ms }));
        }
    }

    /// Since when the running execution is past its timeout and has not stopped.
    pub fn overdue_since(&self) -> Option<i64> {
        self.overdue_since.get()
    }

    /// Whether user code works on the record under `key` now, or will before the running
    /// claim records its outcomes.
    pub(crate) fn is_running(&self, key: &str) -> bool {
        self.running.borrow().iter().any(|k| k == key)
    }

    /// Asks the running claim to stop before its next event.
    pub(crate) fn interrupt_claim(&self) {
        self.claim_interrupted.set(true);
    }

    /// Whether a request asked the running claim to stop; asking again needs a new request.
    pub(crate) fn take_claim_interrupt(&self) -> bool {
        self.claim_interrupted.replace(false)
    }

    pub(crate) fn event(&self, instance: &InstanceId, kind: EventKind) -> JobEvent {
        if !self.tracking {
            // Dropped unreported: skip the allocations.
            return JobEvent {
                timestamp: 0,
                job_name: String::new(),
                instance_id: String::new(),
                kind,
            };
        }
        JobEvent {
            timestamp: self.now(),
            job_name: instance.name.clone(),
            instance_id: instance.to_string(),
            kind,
        }
    }

    /// Marks the instance as executing user code until the guard drops; `None` if an
    /// execution is already running.
    pub(crate) fn begin_execution(&self) -> Option<ExecutionGuard<'_>> {
        if self.executing.replace(true) {
            None
        } else {
            Some(ExecutionGuard(&self.executing))
        }
    }
}

/// Counts a request in flight until dropped.
pub(crate) struct RequestGuard<'a>(&'a Cell<usize>);

impl<'a> RequestGuard<'a> {
    pub(crate) fn new(count: &'a Cell<usize>) -> Self {
        count.set(count.get() + 1);
        RequestGuard(count)
    }
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Clears the executing flag when dropped, even if the execution's future is dropped.
pub(crate) struct ExecutionGuard<'a>(&'a Cell<bool>);

impl Drop for ExecutionGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

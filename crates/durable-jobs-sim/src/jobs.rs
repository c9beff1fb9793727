//! The simulated jobs, one of each kind. What each execution does is drawn from the seed
//! by the [`World`]; the jobs only report what they are given and check what they can see.

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, EmptyContext, InstanceId, JobKind,
    Registry, RegistryBuilder, Rejected, RetryPolicy, Schedule, Task, TaskContext, WorkerPool,
    WorkerPoolContext,
};
use serde::{Deserialize, Serialize};

use crate::config::JobsConfig;
use crate::violation::{class, Violation};
use crate::world::{Work, World};

/// The Continuous job's name.
pub const TICK: &str = "tick";
/// The Debounce job's name.
pub const BATCH: &str = "batch";
/// The WorkerPool's name.
pub const WORK: &str = "work";
/// The Task job's name.
pub const TASK: &str = "task";
/// How far ahead `on_idle` sets the timer when the last event asked it to wake the task.
pub const IDLE_WAKE_MS: i64 = 2_000;
/// How far ahead `on_error` sets the timer when it tries again later.
pub const RETRY_LATER_MS: i64 = 4_000;
/// The reason a Continuous run gives when it stops its own instance.
pub const TERMINATED: &str = "terminated by its run";

/// An event sent to the Debounce job or the WorkerPool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Unique per request the simulator sends, so every stored event can be traced back.
    pub serial: u64,
    /// Makes the Debounce reducer refuse the event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reject: bool,
    /// Filler that makes a request oversized.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pad: String,
}

/// The Continuous job's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickState {
    /// Unique per `start` the simulator sends.
    pub token: u64,
    /// Successful runs, counted by the runs themselves.
    pub runs: u64,
}

/// What a simulated Task event makes `on_event` decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Then {
    /// Set the timer this far ahead.
    #[serde(rename_all = "camelCase")]
    Schedule {
        /// From the time `on_event` runs (ms).
        delay_ms: i64,
    },
    /// Remove the timer.
    Cancel,
    /// End the task.
    Terminate,
    /// Refuse the event.
    Reject,
}

impl Then {
    /// Whether an accepted event of this kind keeps its serial in the task's state.
    pub fn is_kept(self) -> bool {
        matches!(self, Then::Schedule { .. } | Then::Cancel)
    }
}

/// An event sent to the Task job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// Unique per request the simulator sends, as for [`Item`].
    pub serial: u64,
    /// What `on_event` decides.
    pub then: Then,
    /// Lets `on_idle` set a timer once, the next time the task is idle.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wake: bool,
    /// Filler that makes a request oversized.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pad: String,
}

/// The Task job's state. Only the synchronous hooks (`on_event`, `on_idle`) write it: they
/// run in the step that applies them, so what they write is never stale, while a state
/// written by `execute` would replace what events added during the execution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskState {
    /// The serials of the events accepted, in order.
    pub serials: Vec<u64>,
    /// The time the timer was set for by the last hook that wrote the state (`None`: that
    /// hook cancelled it).
    pub timer_at: Option<i64>,
    /// `on_idle` wrote the state last (else the last event's `on_event`).
    #[serde(default)]
    pub by_idle: bool,
    /// `on_idle` may still set a timer once.
    #[serde(default)]
    pub wake: bool,
}

/// The registry of the four simulated jobs for one seed.
pub fn registry(world: &Arc<World>, cfg: &JobsConfig) -> Registry {
    let builder: RegistryBuilder = Registry::builder()
        .continuous(TICK, Tick::new(world, cfg))
        .debounce(BATCH, Batcher::new(world, cfg))
        .worker_pool(WORK, Workers::new(world, cfg))
        .task(TASK, Timer::new(world, cfg))
        .limits(cfg.limits);
    // The configuration comes from a fixed table of valid settings.
    builder.build().unwrap()
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// Reports a hook called on an attempt that was not the last one: the last allowed,
/// or, under a time limit, possibly an earlier one.
fn check_final_attempt(world: &World, what: &str, attempt: u32, retry: &RetryPolicy) {
    let possible = match retry.max_duration {
        None => attempt == retry.max_attempts,
        Some(_) => (1..=retry.max_attempts).contains(&attempt),
    };
    if !possible {
        world.report(Violation::new(
            class::RESPONSE,
            format!(
                "{what} called on attempt {attempt} of {}",
                retry.max_attempts
            ),
        ));
    }
}

/// The Continuous job.
pub struct Tick {
    world: Arc<World>,
    cfg: JobsConfig,
}

impl Tick {
    fn new(world: &Arc<World>, cfg: &JobsConfig) -> Self {
        Tick {
            world: world.clone(),
            cfg: cfg.clone(),
        }
    }
}

impl Continuous for Tick {
    type State = TickState;
    type Error = String;

    fn schedule(&self) -> Schedule {
        Schedule::every(millis(self.cfg.tick_every_ms))
    }

    fn start_immediately(&self) -> bool {
        self.cfg.tick_start_immediately
    }

    fn retry(&self) -> RetryPolicy {
        self.cfg.tick_retry
    }

    fn retention(&self) -> Duration {
        millis(self.cfg.tick_retention_ms)
    }

    async fn execute(&self, ctx: &mut ContinuousContext<TickState>) -> Result<(), String> {
        let work = Work::Run {
            token: ctx.state().token,
            run_count: ctx.run_count(),
        };
        if ctx.state().runs != ctx.run_count() {
            self.world.report(Violation::new(
                class::LAYOUT,
                format!(
                    "{}: a run sees {} runs in its state but a run count of {}",
                    ctx.instance_id(),
                    ctx.state().runs,
                    ctx.run_count()
                ),
            ));
        }
        let mut run = self.world.begin(ctx.instance_id(), work, ctx.attempt());
        let result = run.perform().await;
        let terminate = result.is_ok() && run.terminates();
        if result.is_ok() {
            ctx.state_mut().runs += 1;
            if terminate {
                ctx.terminate_with(TERMINATED);
            }
        }
        run.finish(&result, terminate);
        result
    }

    async fn on_error(&self, _error: &String, ctx: &ContinuousContext<TickState>) {
        let _hook = self.world.hook(ctx.instance_id(), "on_error");
        check_final_attempt(&self.world, "on_error", ctx.attempt(), &self.cfg.tick_retry);
    }
}

/// The Debounce job: its state is the list of the batch's serials.
pub struct Batcher {
    world: Arc<World>,
    cfg: JobsConfig,
}

impl Batcher {
    fn new(world: &Arc<World>, cfg: &JobsConfig) -> Self {
        Batcher {
            world: world.clone(),
            cfg: cfg.clone(),
        }
    }

    fn check_batch(&self, ctx: &DebounceContext<Vec<u64>>) {
        let (count, held) = (ctx.event_count(), ctx.state().len());
        if count as usize != held {
            self.world.report(Violation::new(
                class::LAYOUT,
                format!(
                    "{}: a flush of {count} events holds {held}",
                    ctx.instance_id()
                ),
            ));
        }
        if let Some(max) = self.cfg.batch_max_events {
            if count > max || held > max as usize {
                self.world.report(Violation::new(
                    class::BATCH_TOO_LARGE,
                    format!(
                        "{}: a flush of {held} events, max_events is {max}",
                        ctx.instance_id()
                    ),
                ));
            }
        }
    }
}

impl Debounce for Batcher {
    type Event = Item;
    type State = Vec<u64>;
    type Error = String;

    fn flush_after(&self) -> Duration {
        millis(self.cfg.batch_flush_after_ms)
    }

    fn max_events(&self) -> Option<u32> {
        self.cfg.batch_max_events
    }

    fn retry(&self) -> RetryPolicy {
        self.cfg.batch_retry
    }

    fn retention(&self) -> Duration {
        millis(self.cfg.batch_retention_ms)
    }

    fn on_event(&self, state: Option<Vec<u64>>, event: Item) -> Result<Vec<u64>, Rejected> {
        if event.reject {
            return Err(Rejected("refused by the reducer".into()));
        }
        let mut serials = state.unwrap_or_default();
        serials.push(event.serial);
        Ok(serials)
    }

    async fn execute(&self, ctx: &DebounceContext<Vec<u64>>) -> Result<(), String> {
        self.check_batch(ctx);
        let work = Work::Flush {
            serials: ctx.state().clone(),
        };
        let mut run = self.world.begin(ctx.instance_id(), work, ctx.attempt());
        let result = run.perform().await;
        run.finish(&result, false);
        result
    }

    async fn on_error(&self, _error: &String, ctx: &DebounceContext<Vec<u64>>) {
        let _hook = self.world.hook(ctx.instance_id(), "on_error");
        check_final_attempt(
            &self.world,
            "on_error",
            ctx.attempt(),
            &self.cfg.batch_retry,
        );
    }
}

/// A pool instance's id: its context lends its index, not its id, since a pool instance
/// has no user key.
fn pool_instance(job_name: &str, index: u32) -> InstanceId {
    InstanceId::new(JobKind::WorkerPool, job_name, index.to_string())
}

/// The WorkerPool.
pub struct Workers {
    world: Arc<World>,
    cfg: JobsConfig,
}

impl Workers {
    fn new(world: &Arc<World>, cfg: &JobsConfig) -> Self {
        Workers {
            world: world.clone(),
            cfg: cfg.clone(),
        }
    }
}

impl WorkerPool for Workers {
    type Event = Item;
    type Error = String;

    fn concurrency(&self) -> u32 {
        self.cfg.pool_concurrency
    }

    fn retry(&self) -> RetryPolicy {
        self.cfg.pool_retry
    }

    fn retention(&self) -> Duration {
        millis(self.cfg.pool_retention_ms)
    }

    async fn execute(&self, ctx: &WorkerPoolContext<Item>) -> Result<(), String> {
        let work = Work::Event {
            serial: ctx.event().serial,
            seq: ctx.sequence(),
        };
        let instance = pool_instance(ctx.job_name(), ctx.instance_index());
        let mut run = self.world.begin(&instance, work, ctx.attempt());
        let result = run.perform().await;
        run.finish(&result, false);
        result
    }

    async fn on_dead_letter(&self, _error: &String, ctx: &WorkerPoolContext<Item>) {
        let instance = pool_instance(ctx.job_name(), ctx.instance_index());
        let _hook = self.world.hook(&instance, "on_dead_letter");
        check_final_attempt(
            &self.world,
            "on_dead_letter",
            ctx.attempt(),
            &self.cfg.pool_retry,
        );
    }

    async fn on_empty(&self, ctx: &EmptyContext) {
        let instance = pool_instance(ctx.job_name(), ctx.instance_index());
        let _hook = self.world.hook(&instance, "on_empty");
    }
}

/// The Task job: events decide the timer ([`Then`]); executions may set the next one or
/// end the task, as the world draws.
pub struct Timer {
    world: Arc<World>,
    cfg: JobsConfig,
}

impl Timer {
    fn new(world: &Arc<World>, cfg: &JobsConfig) -> Self {
        Timer {
            world: world.clone(),
            cfg: cfg.clone(),
        }
    }
}

impl Task for Timer {
    type State = TaskState;
    type Event = TaskEvent;
    type Error = String;

    fn on_event(&self, ctx: &mut TaskContext<TaskState>, event: TaskEvent) -> Result<(), Rejected> {
        match event.then {
            Then::Reject => return Err(Rejected("refused by on_event".into())),
            Then::Terminate => {
                ctx.terminate();
                return Ok(());
            }
            Then::Schedule { .. } | Then::Cancel => {}
        }
        let mut state = ctx.state().cloned().unwrap_or_default();
        state.serials.push(event.serial);
        state.wake = event.wake;
        state.by_idle = false;
        match event.then {
            Then::Schedule { delay_ms } => ctx.schedule_in(millis(delay_ms)),
            _ => ctx.cancel_schedule(),
        }
        state.timer_at = ctx.next_run_at();
        ctx.set_state(state);
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<TaskState>) -> Result<(), String> {
        let state = ctx.state().cloned().unwrap_or_default();
        let work = Work::Task {
            serials: state.serials,
            timer_at: state.timer_at,
            by_idle: state.by_idle,
        };
        let mut run = self.world.begin(ctx.instance_id(), work, ctx.attempt());
        let result = run.perform().await;
        let terminate = result.is_ok() && run.terminates();
        if result.is_ok() {
            if terminate {
                ctx.terminate();
            } else if let Some(delay) = run.next_timer() {
                ctx.schedule_in(millis(delay));
            }
        }
        run.finish(&result, terminate);
        result
    }

    fn on_idle(&self, ctx: &mut TaskContext<TaskState>) {
        // Synchronous, and called inside requests too: it is no execution, so it does not go
        // through the world.
        let Some(mut state) = ctx.state().cloned().filter(|s| s.wake) else {
            return;
        };
        ctx.schedule_in(millis(IDLE_WAKE_MS));
        state.wake = false;
        state.by_idle = true;
        state.timer_at = ctx.next_run_at();
        ctx.set_state(state);
    }

    async fn on_error(&self, _error: &String, ctx: &mut TaskContext<TaskState>) {
        let _hook = self.world.hook(ctx.instance_id(), "on_error");
        check_final_attempt(&self.world, "on_error", ctx.attempt(), &self.cfg.task_retry);
        // Half the tasks try again later; the others become idle.
        if ctx.state().is_some_and(|s| s.serials.len() % 2 == 1) {
            ctx.schedule_in(millis(RETRY_LATER_MS));
        }
    }

    fn retry(&self) -> RetryPolicy {
        self.cfg.task_retry
    }

    fn retention(&self) -> Duration {
        millis(self.cfg.task_retention_ms)
    }
}

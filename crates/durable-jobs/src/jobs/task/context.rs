//! What a task's code sees, and the decisions it makes.

use std::time::Duration;

use crate::ids::InstanceId;
use crate::retry::millis;

/// A change of the timer, decided by the task's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerChange {
    /// Fire at this time (ms since the epoch).
    At(i64),
    /// No timer.
    Cancel,
}

/// What the task's code decided, applied when it returns.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Decisions<S> {
    /// The new state, if it changed.
    pub state: Option<S>,
    /// The timer's change, if any: the last one asked for.
    pub timer: Option<TimerChange>,
    pub terminate: bool,
}

/// The context of a task's hooks: its state, its timer, and the power to change both or
/// to end the task.
///
/// `on_event` and `on_idle` get one inside the request or step that calls them; `execute`
/// and `on_error` inside an execution. What they decide is applied when they return: by
/// `on_event` and `on_idle` at once, by `execute` when it succeeds (a failed attempt
/// changes nothing), by `on_error` when the execution failed all its attempts.
#[derive(Debug)]
pub struct TaskContext<S> {
    instance: InstanceId,
    state: Option<S>,
    next_run_at: Option<i64>,
    decisions: Decisions<()>,
    state_changed: bool,
    attempt: u32,
    now: i64,
}

impl<S> TaskContext<S> {
    pub(crate) fn new(
        instance: InstanceId,
        state: Option<S>,
        next_run_at: Option<i64>,
        attempt: u32,
        now: i64,
    ) -> Self {
        TaskContext {
            instance,
            state,
            next_run_at,
            decisions: Decisions::default(),
            state_changed: false,
            attempt,
            now,
        }
    }

    /// The state, `None` until one is set (before the first event decides it).
    pub fn state(&self) -> Option<&S> {
        self.state.as_ref()
    }

    /// The state, to change in place.
    pub fn state_mut(&mut self) -> Option<&mut S> {
        self.state_changed = true;
        self.state.as_mut()
    }

    /// Replaces the state.
    pub fn set_state(&mut self, state: S) {
        self.state_changed = true;
        self.state = Some(state);
    }

    /// When the timer fires (ms since the epoch), as decided so far; `None` when none is
    /// set. Inside `execute`, the timer that started it is already spent.
    pub fn next_run_at(&self) -> Option<i64> {
        self.next_run_at
    }

    /// Sets the timer to fire `delay` from now, replacing any timer set before.
    pub fn schedule_in(&mut self, delay: Duration) {
        self.schedule_at(self.now.saturating_add(millis(delay)));
    }

    /// Sets the timer to fire at `at` (ms since the epoch, on the runtime's clock, as
    /// [`now`](Self::now) reads it), replacing any timer set before. A time in the past
    /// fires at once.
    pub fn schedule_at(&mut self, at: i64) {
        self.next_run_at = Some(at);
        self.decisions.timer = Some(TimerChange::At(at));
    }

    /// Removes the timer: nothing runs until an event or a trigger sets one again.
    pub fn cancel_schedule(&mut self) {
        self.next_run_at = None;
        self.decisions.timer = Some(TimerChange::Cancel);
    }

    /// Ends the task once this hook returns: its timer, state and counters are deleted.
    pub fn terminate(&mut self) {
        self.decisions.terminate = true;
    }

    /// Whether [`terminate`](Self::terminate) was called.
    pub fn is_terminating(&self) -> bool {
        self.decisions.terminate
    }

    /// The attempt of the execution this context belongs to, from 1; `0` in `on_event`
    /// and `on_idle`, which are not executions.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The task's id.
    pub fn id(&self) -> &str {
        &self.instance.key
    }

    /// The full instance id.
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance
    }

    /// The registered job name.
    pub fn job_name(&self) -> &str {
        &self.instance.name
    }

    /// The runtime's time when the hook was called (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// What the hook decided.
    pub(crate) fn into_decisions(self) -> Decisions<S> {
        Decisions {
            state: if self.state_changed { self.state } else { None },
            timer: self.decisions.timer,
            terminate: self.decisions.terminate,
        }
    }
}

//! What a Continuous run sees.

use crate::jobs::execution::{execution_accessors, Execution};

/// The context of one Continuous run: the state, and facts about the run.
#[derive(Debug)]
pub struct ContinuousContext<S> {
    state: S,
    changed: bool,
    terminate: Option<Option<String>>,
    execution: Execution,
    run_count: u64,
    now: i64,
}

impl<S> ContinuousContext<S> {
    pub(crate) fn new(state: S, execution: Execution, run_count: u64, now: i64) -> Self {
        ContinuousContext {
            state,
            changed: false,
            terminate: None,
            execution,
            run_count,
            now,
        }
    }

    /// The current state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The state, to change in place (saved when the run succeeds).
    pub fn state_mut(&mut self) -> &mut S {
        self.changed = true;
        &mut self.state
    }

    /// Replaces the state (saved when the run succeeds).
    pub fn set_state(&mut self, state: S) {
        self.changed = true;
        self.state = state;
    }

    /// Changes the state with a function (saved when the run succeeds).
    pub fn update(&mut self, f: impl FnOnce(&mut S)) {
        self.changed = true;
        f(&mut self.state);
    }

    /// Stops the instance once this run returns `Ok`; no further run is scheduled.
    pub fn terminate(&mut self) {
        self.terminate = Some(None);
    }

    /// Like [`terminate`](Self::terminate), recording a reason.
    pub fn terminate_with(&mut self, reason: impl Into<String>) {
        self.terminate = Some(Some(reason.into()));
    }

    /// Successful runs before this one.
    pub fn run_count(&self) -> u64 {
        self.run_count
    }

    execution_accessors!(unit = "run"; attempt, is_retry, id, instance_id, job_name);

    /// The runtime's time when the run started (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.now
    }

    pub(crate) fn into_parts(self) -> (S, bool, Option<Option<String>>) {
        (self.state, self.changed, self.terminate)
    }
}

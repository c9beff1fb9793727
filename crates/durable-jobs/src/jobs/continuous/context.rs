//! What a Continuous run sees.

use crate::ids::InstanceId;

/// The context of one Continuous run: the state, and facts about the run.
#[derive(Debug)]
pub struct ContinuousContext<S> {
    state: S,
    changed: bool,
    terminate: Option<Option<String>>,
    instance: InstanceId,
    run_count: u64,
    attempt: u32,
    now: i64,
}

impl<S> ContinuousContext<S> {
    pub(crate) fn new(
        state: S,
        instance: InstanceId,
        run_count: u64,
        attempt: u32,
        now: i64,
    ) -> Self {
        ContinuousContext {
            state,
            changed: false,
            terminate: None,
            instance,
            run_count,
            attempt,
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

    /// This run's attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this is a retry of a failed attempt.
    pub fn is_retry(&self) -> bool {
        self.attempt > 1
    }

    /// The user's id of this instance.
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

    /// The runtime's time when the run started (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.now
    }

    pub(crate) fn into_parts(self) -> (S, bool, Option<Option<String>>) {
        (self.state, self.changed, self.terminate)
    }
}

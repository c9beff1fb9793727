//! What a Debounce flush sees.

use crate::events::FlushReason;
use crate::ids::InstanceId;

/// The context of one flush: the reduced state and facts about the batch.
#[derive(Debug)]
pub struct DebounceContext<S> {
    pub(crate) state: S,
    pub(crate) event_count: u32,
    pub(crate) flush_reason: FlushReason,
    pub(crate) started_at: i64,
    pub(crate) attempt: u32,
    pub(crate) instance: InstanceId,
}

impl<S> DebounceContext<S> {
    /// The batch's reduced state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Events in the batch.
    pub fn event_count(&self) -> u32 {
        self.event_count
    }

    /// Why it is flushing.
    pub fn flush_reason(&self) -> FlushReason {
        self.flush_reason
    }

    /// When the batch's first event arrived (ms since the epoch).
    pub fn started_at(&self) -> i64 {
        self.started_at
    }

    /// This flush's attempt number, from 1.
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
}

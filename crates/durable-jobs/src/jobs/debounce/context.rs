//! What a Debounce flush sees.

use crate::events::FlushReason;
use crate::jobs::execution::{execution_accessors, Execution};

/// The context of one flush: the reduced state and facts about the batch.
#[derive(Debug)]
pub struct DebounceContext<S> {
    pub(crate) state: S,
    pub(crate) event_count: u32,
    pub(crate) flush_reason: FlushReason,
    pub(crate) started_at: i64,
    pub(crate) execution: Execution,
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

    execution_accessors!(unit = "flush"; attempt, is_retry, id, instance_id, job_name);
}

//! What a WorkerPool execution sees.

use crate::ids::InstanceId;
use crate::jobs::execution::{execution_accessors, Execution};

/// The context of processing one event.
#[derive(Debug)]
pub struct WorkerPoolContext<E> {
    pub(crate) event: E,
    pub(crate) event_id: String,
    pub(crate) sequence: u64,
    pub(crate) enqueued_at: i64,
    pub(crate) priority: i32,
    pub(crate) execution: Execution,
}

impl<E> WorkerPoolContext<E> {
    /// The event.
    pub fn event(&self) -> &E {
        &self.event
    }

    /// The event's id (given at enqueue, or generated).
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// The event's sequence number on its instance (enqueue order).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    execution_accessors!(unit = "event"; attempt, is_retry, job_name);

    /// When the event was enqueued (ms since the epoch).
    pub fn enqueued_at(&self) -> i64 {
        self.enqueued_at
    }

    /// The event's priority.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// The index of the instance processing it.
    pub fn instance_index(&self) -> u32 {
        self.execution.instance_id().pool_index().unwrap_or(0)
    }
}

/// The context of `on_empty`.
#[derive(Debug)]
pub struct EmptyContext {
    pub(crate) instance: InstanceId,
    pub(crate) processed: u64,
}

impl EmptyContext {
    /// The index of the instance that drained.
    pub fn instance_index(&self) -> u32 {
        self.instance.pool_index().unwrap_or(0)
    }

    /// Events this instance has processed successfully in all.
    pub fn processed(&self) -> u64 {
        self.processed
    }

    /// The registered job name.
    pub fn job_name(&self) -> &str {
        &self.instance.name
    }
}

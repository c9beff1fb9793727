//! Lifecycle events, one serde enum on the wire.

use serde::{Deserialize, Serialize};

/// Why a Debounce batch is flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FlushReason {
    /// `flush_after` elapsed since the batch's first event.
    FlushAfter,
    /// The batch reached `max_events`.
    MaxEvents,
    /// A client asked for it.
    Manual,
}

/// What set a task's timer, as `task.scheduled` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScheduledBy {
    /// `on_event`, for an event sent to the task.
    Event,
    /// `execute`, for the next run.
    Execution,
    /// `on_error`, after an execution failed all its attempts.
    Error,
    /// `on_idle`, when no timer was left.
    Idle,
    /// A client's `trigger`: the task runs now.
    Trigger,
}

/// One lifecycle event of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    /// When it happened (ms since the epoch, on the runtime's clock).
    pub timestamp: i64,
    /// The registered job name.
    pub job_name: String,
    /// The instance id, `{kind}:{name}:{key}`.
    pub instance_id: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened, tagged on the wire by its `type` name (`workerPool.enqueued`...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    /// A Continuous instance was started.
    #[serde(rename = "continuous.started")]
    ContinuousStarted,
    /// A Continuous run completed.
    #[serde(rename = "continuous.executed", rename_all = "camelCase")]
    ContinuousExecuted {
        /// Successful runs so far, this one included.
        run_count: u64,
        /// How long `execute` took.
        duration_ms: i64,
    },
    /// The next regular run was scheduled.
    #[serde(rename = "continuous.scheduled", rename_all = "camelCase")]
    ContinuousScheduled {
        /// When it will run.
        next_run_at: i64,
    },
    /// The instance was stopped.
    #[serde(rename = "continuous.stopped", rename_all = "camelCase")]
    ContinuousStopped {
        /// Why, if given.
        reason: Option<String>,
    },
    /// A run failed.
    #[serde(rename = "continuous.error", rename_all = "camelCase")]
    ContinuousError {
        /// The error's text.
        error: String,
        /// The attempt that failed (1-based).
        attempt: u32,
    },
    /// An event was added to a Debounce batch.
    #[serde(rename = "debounce.eventReceived", rename_all = "camelCase")]
    DebounceEventReceived {
        /// The event's id, if it had one.
        event_id: Option<String>,
        /// Events in the batch now.
        event_count: u32,
    },
    /// A batch is being flushed.
    #[serde(rename = "debounce.flushing", rename_all = "camelCase")]
    DebounceFlushing {
        /// Events in the batch.
        event_count: u32,
        /// Why.
        reason: FlushReason,
    },
    /// A batch was flushed successfully.
    #[serde(rename = "debounce.flushed", rename_all = "camelCase")]
    DebounceFlushed {
        /// Events in the batch.
        event_count: u32,
        /// How long `execute` took.
        duration_ms: i64,
    },
    /// Pending events were discarded.
    #[serde(rename = "debounce.cleared", rename_all = "camelCase")]
    DebounceCleared {
        /// How many.
        discarded_events: u32,
    },
    /// A flush failed.
    #[serde(rename = "debounce.error", rename_all = "camelCase")]
    DebounceError {
        /// The error's text.
        error: String,
        /// The attempt that failed (1-based).
        attempt: u32,
    },
    /// An event joined a WorkerPool queue.
    #[serde(rename = "workerPool.enqueued", rename_all = "camelCase")]
    WorkerPoolEnqueued {
        /// The event's id.
        event_id: String,
        /// Events waiting on the instance (queued and delayed), this one included.
        position: u64,
    },
    /// An event is being processed.
    #[serde(rename = "workerPool.processing", rename_all = "camelCase")]
    WorkerPoolProcessing {
        /// The event's id.
        event_id: String,
        /// The attempt (1-based).
        attempt: u32,
    },
    /// An event was processed successfully.
    #[serde(rename = "workerPool.completed", rename_all = "camelCase")]
    WorkerPoolCompleted {
        /// The event's id.
        event_id: String,
        /// How long `execute` took.
        duration_ms: i64,
    },
    /// An attempt failed.
    #[serde(rename = "workerPool.failed", rename_all = "camelCase")]
    WorkerPoolFailed {
        /// The event's id.
        event_id: String,
        /// The error's text.
        error: String,
        /// The attempt that failed (1-based).
        attempt: u32,
    },
    /// An event exhausted its attempts and moved to the dead-letter list.
    #[serde(rename = "workerPool.deadLettered", rename_all = "camelCase")]
    WorkerPoolDeadLettered {
        /// The event's id.
        event_id: String,
        /// The last error's text.
        error: String,
    },
    /// A pending event was cancelled.
    #[serde(rename = "workerPool.cancelled", rename_all = "camelCase")]
    WorkerPoolCancelled {
        /// The event's id.
        event_id: String,
    },
    /// The instance was paused.
    #[serde(rename = "workerPool.paused")]
    WorkerPoolPaused,
    /// The instance was resumed.
    #[serde(rename = "workerPool.resumed")]
    WorkerPoolResumed,
    /// An event was sent to a Task.
    #[serde(rename = "task.eventReceived", rename_all = "camelCase")]
    TaskEventReceived {
        /// The event's id, if it had one.
        event_id: Option<String>,
        /// Events the task has accepted, this one included.
        event_count: u64,
    },
    /// A Task's timer was set.
    #[serde(rename = "task.scheduled", rename_all = "camelCase")]
    TaskScheduled {
        /// When it fires.
        at: i64,
        /// What set it.
        by: ScheduledBy,
    },
    /// A Task's execution succeeded.
    #[serde(rename = "task.executed", rename_all = "camelCase")]
    TaskExecuted {
        /// Successful executions so far, this one included.
        execution_count: u64,
        /// How long `execute` took.
        duration_ms: i64,
    },
    /// A Task's execution failed.
    #[serde(rename = "task.failed", rename_all = "camelCase")]
    TaskFailed {
        /// The error's text.
        error: String,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// Whether another attempt follows.
        will_retry: bool,
    },
    /// A Task has no timer left.
    #[serde(rename = "task.idle")]
    TaskIdle,
    /// A Task ended: terminated by a client or by its own code.
    #[serde(rename = "task.terminated")]
    TaskTerminated,
    /// An execution passed its timeout and did not stop (code that blocks or does not
    /// yield cannot be cancelled); its instance waits for it to return.
    #[serde(rename = "execution.overdue", rename_all = "camelCase")]
    ExecutionOverdue {
        /// The timeout it passed.
        timeout_ms: i64,
    },
}

impl EventKind {
    /// The wire `type` name, e.g. `workerPool.enqueued`.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::ContinuousStarted => "continuous.started",
            EventKind::ContinuousExecuted { .. } => "continuous.executed",
            EventKind::ContinuousScheduled { .. } => "continuous.scheduled",
            EventKind::ContinuousStopped { .. } => "continuous.stopped",
            EventKind::ContinuousError { .. } => "continuous.error",
            EventKind::DebounceEventReceived { .. } => "debounce.eventReceived",
            EventKind::DebounceFlushing { .. } => "debounce.flushing",
            EventKind::DebounceFlushed { .. } => "debounce.flushed",
            EventKind::DebounceCleared { .. } => "debounce.cleared",
            EventKind::DebounceError { .. } => "debounce.error",
            EventKind::WorkerPoolEnqueued { .. } => "workerPool.enqueued",
            EventKind::WorkerPoolProcessing { .. } => "workerPool.processing",
            EventKind::WorkerPoolCompleted { .. } => "workerPool.completed",
            EventKind::WorkerPoolFailed { .. } => "workerPool.failed",
            EventKind::WorkerPoolDeadLettered { .. } => "workerPool.deadLettered",
            EventKind::WorkerPoolCancelled { .. } => "workerPool.cancelled",
            EventKind::WorkerPoolPaused => "workerPool.paused",
            EventKind::WorkerPoolResumed => "workerPool.resumed",
            EventKind::TaskEventReceived { .. } => "task.eventReceived",
            EventKind::TaskScheduled { .. } => "task.scheduled",
            EventKind::TaskExecuted { .. } => "task.executed",
            EventKind::TaskFailed { .. } => "task.failed",
            EventKind::TaskIdle => "task.idle",
            EventKind::TaskTerminated => "task.terminated",
            EventKind::ExecutionOverdue { .. } => "execution.overdue",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_kind_dot_event() {
        let e = JobEvent {
            timestamp: 5,
            job_name: "mail".into(),
            instance_id: "workerPool:mail:0".into(),
            kind: EventKind::WorkerPoolEnqueued {
                event_id: "e1".into(),
                position: 1,
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "workerPool.enqueued");
        assert_eq!(v["eventId"], "e1");
        assert_eq!(v["jobName"], "mail");
        let back: JobEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(e.kind.type_name(), "workerPool.enqueued");
    }
}

//! The wire format: one [`Request`] and one [`Response`] enum, the same on every transport.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::errors::JobError;
use crate::ids::{InstanceId, JobKind};
use crate::jobs::continuous::ContinuousStatus;
use crate::jobs::debounce::{AddItem, AddOutcome, DebounceStatus, FailedBatch};
use crate::jobs::task::TaskStatus;
use crate::jobs::worker_pool::{
    DeadLetter, EnqueueItem, EnqueueOutcome, PoolInstanceStatus, QueuedEvent,
};

/// A request to one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The instance addressed.
    pub instance: InstanceId,
    /// What to do.
    #[serde(flatten)]
    pub op: Operation,
}

impl Request {
    /// Decodes a request from JSON bytes, with a typed error for malformed input.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JobError> {
        serde_json::from_slice(bytes)
            .map_err(|e| JobError::bad_request(format!("malformed request: {e}")))
    }

    /// Encodes the request as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Requests hold only strings, numbers and JSON values: encoding cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Every operation, tagged by `op`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Operation {
    /// Start a Continuous instance with an initial state.
    ContinuousStart {
        /// The initial state.
        state: Value,
    },
    /// Stop a Continuous instance.
    ContinuousStop {
        /// Why, recorded in the status.
        reason: Option<String>,
    },
    /// Run a Continuous instance now, keeping its schedule.
    ContinuousTrigger,
    /// Read a Continuous instance's status.
    ContinuousStatus,
    /// Read a Continuous instance's state.
    ContinuousGetState,
    /// Add an event to a Debounce batch.
    #[serde(rename_all = "camelCase")]
    DebounceAdd {
        /// The event.
        event: Value,
        /// An id for deduplication.
        event_id: Option<String>,
    },
    /// Add several events to this Debounce instance, in one step.
    DebounceAddMany {
        /// The events, in order.
        events: Vec<AddItem>,
    },
    /// Flush now (and retry failed batches).
    DebounceFlush,
    /// Discard the pending batch and failed batches.
    DebounceClear,
    /// Drop the failed batches only; the open batch and any flush stay.
    DebounceDiscardFailed,
    /// Read a Debounce instance's status.
    DebounceStatus,
    /// Read the pending batch's reduced state.
    DebounceGetState,
    /// List the batches whose flush failed, the oldest first (at most 1,000).
    DebounceFailedBatches,
    /// Add an event to a WorkerPool instance's queue.
    #[serde(rename_all = "camelCase")]
    WorkerPoolEnqueue {
        /// The event.
        event: Value,
        /// An id for deduplication and cancelling.
        event_id: Option<String>,
        /// Higher runs first.
        priority: i32,
        /// Run it no sooner than this time (ms since the epoch); a time already past runs
        /// it at once. Not together with `delay_ms`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_at: Option<i64>,
        /// Run it no sooner than this long after the instance receives it (ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
    },
    /// Enqueue several events on this instance, in one step.
    WorkerPoolEnqueueMany {
        /// The events, in order.
        events: Vec<EnqueueItem>,
    },
    /// Stop processing (pending events are kept).
    WorkerPoolPause,
    /// Resume processing.
    WorkerPoolResume,
    /// Remove a pending event.
    #[serde(rename_all = "camelCase")]
    WorkerPoolCancel {
        /// The event's id.
        event_id: String,
    },
    /// Read one instance's status.
    WorkerPoolStatus,
    /// List dead letters, oldest first.
    WorkerPoolDeadLetters {
        /// Start after this dead-letter sequence number.
        after: Option<u64>,
        /// At most this many.
        limit: u32,
    },
    /// List queued events in queue order (priority, then enqueue order), then delayed
    /// events by run time.
    WorkerPoolPending {
        /// Start after this cursor (a page's `next`).
        after: Option<String>,
        /// At most this many.
        limit: u32,
    },
    /// Put dead letters back in the queue (all when `event_ids` is absent).
    #[serde(rename_all = "camelCase")]
    WorkerPoolReplay {
        /// Which ones.
        event_ids: Option<Vec<String>>,
    },
    /// Delete dead letters (all when `event_ids` is absent).
    #[serde(rename_all = "camelCase")]
    WorkerPoolDiscard {
        /// Which ones.
        event_ids: Option<Vec<String>>,
    },
    /// Send an event to a Task, creating it on its first event.
    #[serde(rename_all = "camelCase")]
    TaskSend {
        /// The event.
        event: Value,
        /// An id for deduplication.
        event_id: Option<String>,
    },
    /// Run a Task now.
    TaskTrigger,
    /// End a Task: cancel its timer and delete its data.
    TaskTerminate,
    /// Read a Task's status.
    TaskStatus,
    /// Read a Task's state.
    TaskGetState,
}

impl Operation {
    /// The job kind the operation belongs to.
    pub fn kind(&self) -> JobKind {
        use Operation::*;
        match self {
            ContinuousStart { .. }
            | ContinuousStop { .. }
            | ContinuousTrigger
            | ContinuousStatus
            | ContinuousGetState => JobKind::Continuous,
            DebounceAdd { .. }
            | DebounceAddMany { .. }
            | DebounceFlush
            | DebounceClear
            | DebounceDiscardFailed
            | DebounceStatus
            | DebounceGetState
            | DebounceFailedBatches => JobKind::Debounce,
            WorkerPoolEnqueue { .. }
            | WorkerPoolEnqueueMany { .. }
            | WorkerPoolPause
            | WorkerPoolResume
            | WorkerPoolCancel { .. }
            | WorkerPoolStatus
            | WorkerPoolDeadLetters { .. }
            | WorkerPoolPending { .. }
            | WorkerPoolReplay { .. }
            | WorkerPoolDiscard { .. } => JobKind::WorkerPool,
            TaskSend { .. } | TaskTrigger | TaskTerminate | TaskStatus | TaskGetState => {
                JobKind::Task
            }
        }
    }
}

/// Every answer, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Response {
    /// Answer to `continuousStart`.
    Started {
        /// False when an active instance already existed (nothing changed).
        created: bool,
    },
    /// Answer to `continuousStop`.
    Stopped {
        /// False when there was nothing to stop.
        stopped: bool,
    },
    /// Answer to `continuousTrigger` and `taskTrigger`: a run is due now.
    Triggered,
    /// Answer to `continuousStatus`.
    ContinuousStatus {
        /// `None` when the instance does not exist.
        status: Option<ContinuousStatus>,
    },
    /// Answer to the `getState` operations.
    State {
        /// `None` when there is no state.
        state: Option<Value>,
    },
    /// Answer to `debounceAdd`.
    #[serde(rename_all = "camelCase")]
    Added {
        /// Events in the pending batch now.
        event_count: u32,
        /// True when the event id was seen before; nothing changed.
        duplicate: bool,
        /// When the batch will flush.
        flush_at: Option<i64>,
    },
    /// Answer to `debounceAddMany`: one outcome per event, in order.
    AddedMany {
        /// What became of each event.
        outcomes: Vec<AddOutcome>,
    },
    /// Answer to `debounceFlush`.
    #[serde(rename_all = "camelCase")]
    FlushRequested {
        /// Events in the batch that will flush.
        event_count: u32,
        /// Failed batches queued for another attempt.
        retried_batches: u32,
    },
    /// Answer to `debounceClear`.
    Cleared {
        /// Events discarded (pending and failed batches).
        discarded: u32,
    },
    /// Answer to `debounceStatus`.
    DebounceStatus {
        /// `None` when the instance does not exist.
        status: Option<DebounceStatus>,
    },
    /// Answer to `debounceFailedBatches`.
    FailedBatches {
        /// Oldest first, at most 1,000.
        batches: Vec<FailedBatch>,
    },
    /// Answer to `workerPoolEnqueue`.
    #[serde(rename_all = "camelCase")]
    Enqueued {
        /// The event's id (generated when none was given).
        event_id: String,
        /// The instance it went to.
        instance_index: u32,
        /// Events waiting on that instance (queued and delayed), this one included.
        position: u64,
        /// True when the event id was seen before; nothing changed.
        duplicate: bool,
    },
    /// Answer to `workerPoolPause`.
    Paused,
    /// Answer to `workerPoolResume`.
    Resumed,
    /// Answer to `workerPoolCancel`.
    Cancelled {
        /// False when the event was not pending (unknown, done, or running now).
        cancelled: bool,
    },
    /// Answer to `workerPoolStatus`.
    WorkerPoolStatus {
        /// The instance's status.
        status: PoolInstanceStatus,
    },
    /// Answer to `workerPoolDeadLetters`.
    DeadLetters {
        /// Oldest first.
        items: Vec<DeadLetter>,
    },
    /// Answer to `workerPoolEnqueueMany`: one outcome per event, in order.
    EnqueuedMany {
        /// The instance index.
        instance_index: u32,
        /// What became of each event.
        outcomes: Vec<EnqueueOutcome>,
    },
    /// Answer to `workerPoolPending`.
    PendingEvents {
        /// In queue order.
        items: Vec<QueuedEvent>,
        /// The cursor of the next page, if there may be more.
        next: Option<String>,
    },
    /// Answer to `workerPoolReplay` and `workerPoolDiscard`.
    DeadLettersChanged {
        /// How many dead letters were replayed or discarded.
        count: u32,
    },
    /// Answer to `taskSend`.
    #[serde(rename_all = "camelCase")]
    TaskSent {
        /// The event created the task.
        created: bool,
        /// True when the event id was seen before; nothing changed.
        duplicate: bool,
        /// When the task runs next, if it has a timer.
        next_run_at: Option<i64>,
    },
    /// Answer to `taskTerminate`.
    Terminated {
        /// False when there was no task to end.
        terminated: bool,
    },
    /// Answer to `taskStatus`.
    TaskStatus {
        /// `None` when the task does not exist.
        status: Option<TaskStatus>,
    },
}

/// A response or an error, as a remote transport carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reply {
    /// The request succeeded.
    Ok(Response),
    /// The request failed.
    Err(JobError),
}

impl From<Result<Response, JobError>> for Reply {
    fn from(r: Result<Response, JobError>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Err(e),
        }
    }
}

impl From<Reply> for Result<Response, JobError> {
    fn from(r: Reply) -> Self {
        match r {
            Reply::Ok(v) => Ok(v),
            Reply::Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json() {
        let r = Request {
            instance: InstanceId::new(JobKind::WorkerPool, "mail", "3"),
            op: Operation::WorkerPoolEnqueue {
                event: serde_json::json!({"to": "a@b"}),
                event_id: Some("e:1".into()),
                priority: 5,
                run_at: None,
                delay_ms: Some(1500),
            },
        };
        let bytes = r.to_json();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"op\":\"workerPoolEnqueue\""), "{text}");
        assert_eq!(Request::from_json(&bytes).unwrap(), r);
        assert!(matches!(
            Request::from_json(b"{\"op\":\"nope\"}"),
            Err(JobError::BadRequest { .. })
        ));
    }

    #[test]
    fn floats_round_trip_bit_for_bit() {
        // Values that a best-effort float parser reads back one bit off.
        for x in [
            -7.337215782349096e242,
            -2.1602870924985646e166,
            2.638344616030823e-256,
        ] {
            let r = Request {
                instance: InstanceId::new(JobKind::Continuous, "c", "k"),
                op: Operation::ContinuousStart {
                    state: serde_json::json!({ "x": x }),
                },
            };
            let back = Request::from_json(&r.to_json()).unwrap();
            assert_eq!(back, r, "{x:e}");
        }
    }
}

//! Task: a per-id state machine driven by events, with a timer of its own.
//!
//! Events reach `on_event` in the request, which decides (state, timer, termination)
//! without I/O; the timer's alarm runs the async `execute`, with the same powers. One
//! record holds the counters and the timer; the user's state has a key of its own, so
//! that requests which do not need it do not decode it.

mod client;
mod context;
mod decide;
mod definition;
pub(crate) mod erased;
mod executor;
mod handler;

pub use crate::events::ScheduledBy;
pub use client::{Sent, TaskClient};
pub use context::TaskContext;
pub use definition::Task;
pub(crate) use executor::alarm;
pub(crate) use handler::handle;

use serde::{Deserialize, Serialize};

use crate::engine::KindRecord;
use crate::jobs::lifecycle::ErrorInfo;
use crate::services::metadata::{Metadata, Status};

/// The user's state, apart from the record.
pub(crate) const STATE_KEY: &str = "state";

/// The reason a terminated task's status records.
pub(crate) const TERMINATED: &str = "terminated";

/// The record of a Task instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    /// Events accepted.
    pub event_count: u64,
    /// Executions that succeeded.
    pub execution_count: u64,
    /// When the timer fires, if one is set.
    pub next_run_at: Option<i64>,
    /// Failed attempts of the current execution.
    pub attempt: u32,
    /// The attempt started last, while its outcome is not recorded (only where attempts
    /// are recorded at their start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u32>,
    /// When a failed attempt is tried again; it takes the timer's place.
    pub retry_at: Option<i64>,
    /// When the first attempt of the current execution started, while it is retried: a
    /// retry policy's `max_duration` counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<i64>,
    /// When the last successful execution ended.
    pub last_run_at: Option<i64>,
    /// The last execution that failed all its attempts.
    pub last_error: Option<ErrorInfo>,
}

impl Record {
    /// When the next attempt is due: a pending retry, else the timer.
    pub fn due_at(&self) -> Option<i64> {
        self.retry_at.or(self.next_run_at)
    }

    /// Whether neither a timer nor a retry is set.
    pub fn is_idle(&self) -> bool {
        self.due_at().is_none()
    }
}

impl KindRecord for Record {
    const KEY: &'static str = "task";

    /// The next attempt; else the purge of an idle or terminated task.
    fn alarm(&self, meta: Option<&Metadata>) -> Option<i64> {
        let meta = meta?;
        if meta.status.is_stopped() {
            return meta.purge_at;
        }
        self.due_at().or(meta.purge_at)
    }
}

/// Whether a task has a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskPhase {
    /// A timer (or a retry) is set: the task will run.
    Scheduled,
    /// No timer is left: the task waits for an event, and is purged after its retention
    /// period if none comes.
    Idle,
}

/// What `status` reports of a Task instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// Whether a timer is set.
    pub phase: TaskPhase,
    /// `Error` after an execution failed all its attempts, until one succeeds.
    pub status: Status,
    /// Events accepted.
    pub event_count: u64,
    /// Executions that succeeded.
    pub execution_count: u64,
    /// When the timer fires.
    pub next_run_at: Option<i64>,
    /// When a failed attempt is tried again.
    pub retry_at: Option<i64>,
    /// When the last successful execution ended.
    pub last_run_at: Option<i64>,
    /// The last execution that failed all its attempts.
    pub last_error: Option<ErrorInfo>,
    /// When the task was created.
    pub created_at: i64,
    /// When an idle task's data will be purged.
    pub purge_at: Option<i64>,
    /// Since when the running execution is past its timeout without stopping (code
    /// that blocks cannot be cancelled); the task runs nothing else until it returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_since: Option<i64>,
}

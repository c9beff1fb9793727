//! Continuous: per-id recurring work with persistent state (spec §7.1).

mod client;
mod context;
mod definition;
pub(crate) mod erased;
mod executor;
mod handler;
mod schedule;

pub use client::ContinuousClient;
pub use context::ContinuousContext;
pub use definition::{Continuous, DEFAULT_RETENTION};
pub(crate) use executor::alarm;
pub(crate) use handler::handle;
pub use schedule::Schedule;

use serde::{Deserialize, Serialize};

use crate::services::metadata::{Metadata, Status};
use crate::services::schedule::earliest;

pub(crate) const STATE_KEY: &str = "state";
pub(crate) const RECORD_KEY: &str = "continuous";

/// A failure recorded in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// The error's text.
    pub message: String,
    /// When the last attempt failed.
    pub at: i64,
    /// Attempts made.
    pub attempts: u32,
}

/// The scheduling record of a Continuous instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    pub run_count: u64,
    pub next_run_at: Option<i64>,
    pub last_run_at: Option<i64>,
    /// A `trigger` asked for a run at this time.
    pub trigger_at: Option<i64>,
    /// Failed attempts of the current run.
    pub attempt: u32,
    pub retry_at: Option<i64>,
    pub last_error: Option<ErrorInfo>,
}

impl Record {
    /// The instance's alarm: a pending retry, else the next run or a trigger.
    pub fn alarm(&self) -> Option<i64> {
        match self.retry_at {
            Some(t) => Some(t),
            None => earliest([self.next_run_at, self.trigger_at]),
        }
    }

    pub fn is_due(&self, now: i64) -> bool {
        match self.retry_at {
            Some(t) => t <= now,
            None => self.trigger_at.is_some() || self.next_run_at.is_some_and(|t| t <= now),
        }
    }
}

/// The alarm implied by the stored records.
pub(crate) fn alarm_time(meta: Option<&Metadata>, rec: Option<&Record>) -> Option<i64> {
    match meta {
        None => None,
        Some(m) if m.status.is_stopped() => m.purge_at,
        Some(_) => rec.and_then(Record::alarm),
    }
}

/// What `status` reports of a Continuous instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContinuousStatus {
    /// Lifecycle status; `Error` after a run failed all its attempts, until one succeeds.
    pub status: Status,
    /// Successful runs.
    pub run_count: u64,
    /// When the next regular run is due.
    pub next_run_at: Option<i64>,
    /// When the last successful run ended.
    pub last_run_at: Option<i64>,
    /// When a failed attempt is retried.
    pub retry_at: Option<i64>,
    /// The last run that failed all its attempts.
    pub last_error: Option<ErrorInfo>,
    /// When the instance was created.
    pub created_at: i64,
    /// When its status last changed.
    pub updated_at: i64,
    /// When a stopped instance will be purged.
    pub purge_at: Option<i64>,
}

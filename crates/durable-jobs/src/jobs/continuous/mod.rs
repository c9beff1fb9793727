//! Continuous: per-id recurring work with persistent state.

mod client;
mod context;
mod definition;
pub(crate) mod erased;
mod executor;
mod handler;
mod schedule;

pub use client::ContinuousClient;
pub use context::ContinuousContext;
pub use definition::Continuous;
pub(crate) use executor::alarm;
pub(crate) use handler::handle;
pub use schedule::Schedule;

use serde::{Deserialize, Serialize};

use crate::engine::KindRecord;
use crate::jobs::lifecycle::ErrorInfo;
use crate::services::alarm::earliest;
use crate::services::metadata::{Metadata, Status};

/// The user's state, apart from the record: requests that do not need it do not decode it.
pub(crate) const STATE_KEY: &str = "state";

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
    /// The attempt of the current run started last, while its outcome is not recorded
    /// (only where attempts are recorded at their start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u32>,
    pub retry_at: Option<i64>,
    pub last_error: Option<ErrorInfo>,
    /// When the first attempt of the failing run started, while it waits for a retry: the
    /// retry policy's `max_duration` counts from it. Absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<i64>,
}

impl Record {
    /// When the next attempt is due: a pending retry, else the next run or a trigger.
    pub fn due_at(&self) -> Option<i64> {
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

impl KindRecord for Record {
    const KEY: &'static str = "continuous";

    /// A stopped instance wakes to be purged; an active one for its next run or retry.
    fn alarm(&self, meta: Option<&Metadata>) -> Option<i64> {
        match meta {
            None => None,
            Some(m) if m.status.is_stopped() => m.purge_at,
            Some(_) => self.due_at(),
        }
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
    /// Since when the running execution is past its timeout without stopping (code
    /// that blocks cannot be cancelled); the instance runs nothing else until it returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_since: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_without_the_first_attempt_time_still_decodes() {
        // A run waiting for its retry, as versions before `firstAttemptAt` stored it.
        let old = br#"{"runCount":4,"nextRunAt":3600000,"lastRunAt":1000,"triggerAt":null,
            "attempt":1,"retryAt":10000,"lastError":null}"#;
        let rec: Record = serde_json::from_slice(old).unwrap();
        assert_eq!((rec.attempt, rec.retry_at), (1, Some(10_000)));
        assert_eq!(rec.first_attempt_at, None);
        // Without one, nothing new is written: older versions read the record as before.
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains("firstAttemptAt"), "{json}");
        let waiting = Record {
            first_attempt_at: Some(0),
            ..rec
        };
        let json = serde_json::to_string(&waiting).unwrap();
        assert!(json.contains(r#""firstAttemptAt":0"#), "{json}");
    }
}

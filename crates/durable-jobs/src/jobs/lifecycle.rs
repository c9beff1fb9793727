//! What the instances of every kind share: how long a finished instance is kept, how a
//! failure that used up its attempts is recorded, and how an instance stops.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;
use crate::services::metadata::{Metadata, Status};
use crate::services::purge;

/// How long stopped instances, drained instances and seen event ids are kept, by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

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

/// Records a run or flush that failed all its `attempts`: the instance's status becomes
/// `Error` with the message, and the returned record goes into the kind's status.
pub(crate) fn record_final_failure(
    meta: &mut Metadata,
    error: &str,
    attempts: u32,
    now: i64,
) -> ErrorInfo {
    let status = Status::Error {
        error_at: now,
        error: error.to_string(),
    };
    meta.set_status(status, now);
    ErrorInfo {
        message: error.to_string(),
        at: now,
        attempts,
    }
}

/// After a success: an instance in `Error` becomes `Active` again. Says whether it changed.
pub(crate) fn recover(meta: &mut Metadata, now: i64) -> bool {
    let failed = matches!(meta.status, Status::Error { .. });
    if failed {
        meta.set_status(Status::Active, now);
    }
    failed
}

/// Stops the instance: status `Stopped`, and its data purged `retention_ms` from now.
pub(crate) fn stop(meta: &mut Metadata, reason: Option<String>, now: i64, retention_ms: i64) {
    let status = Status::Stopped {
        stopped_at: now,
        reason,
    };
    meta.set_status(status, now);
    purge::schedule(meta, now, retention_ms);
}

/// A job's timeout, refused when zero (every execution would fail at once).
pub(crate) fn checked_timeout(timeout: Option<Duration>) -> Result<Option<Duration>, String> {
    match timeout {
        Some(t) if t.is_zero() => Err("timeout must be longer than zero".into()),
        other => Ok(other),
    }
}

/// The error of an attempt that ended without an outcome, counted when the next one
/// would exceed the retry policy.
pub(crate) const ABANDONED: &str = "abandoned: the execution ended without an outcome \
     on every attempt (its process or isolate stopped: a crash, or a panic that aborts)";

/// The number of the attempt about to start: one after the last failure recorded or the
/// last start recorded, whichever is later (a start with no outcome is an attempt that
/// died with its host).
pub(crate) fn next_attempt(failed: u32, started: u32) -> u32 {
    failed.max(started).saturating_add(1)
}

/// Whether `attempt` would go past what `retry` allows: the earlier attempts, some of
/// which never reported back, used them all up.
pub(crate) fn is_beyond(retry: &RetryPolicy, attempt: u32) -> bool {
    attempt > 1 && !retry.retries_after(attempt - 1)
}

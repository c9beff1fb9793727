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

/// When the first attempt of a failing run, flush or event started, which a retry policy's
/// `max_duration` counts from: attempt 1 is its own first; a later one goes by the time
/// recorded with the first failure or, where none was (the earlier attempts ended without
/// an outcome, or the record was written by a version that did not keep the time), by its
/// own start.
pub(crate) fn first_attempt_at(attempt: u32, recorded: Option<i64>, started: i64) -> i64 {
    match recorded {
        Some(t) if attempt > 1 => t,
        _ => started,
    }
}

/// Whether `attempt` would go past what `retry` allows: the earlier attempts, some of
/// which never reported back, used them all up.
pub(crate) fn is_beyond(retry: &RetryPolicy, attempt: u32) -> bool {
    attempt > 1 && !retry.retries_after(attempt - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_attempt_is_its_own_start_or_the_recorded_time() {
        assert_eq!(first_attempt_at(1, None, 50), 50);
        // A first attempt starting again (its outcome was lost) starts the clock anew.
        assert_eq!(first_attempt_at(1, Some(10), 50), 50);
        assert_eq!(first_attempt_at(3, Some(10), 50), 10);
        // A record of an older version, mid-retry: counted from this attempt.
        assert_eq!(first_attempt_at(3, None, 50), 50);
    }
}

/// The attempt an execution's claim is about to make, from what the kind's record keeps of
/// the earlier ones: the same bookkeeping for every kind whose record holds one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NextAttempt {
    /// Its number, from 1; when `abandoned`, the last one made, which never reported back.
    pub number: u32,
    /// Earlier attempts died without an outcome and used up the retries: the final failure
    /// is recorded without running again.
    pub abandoned: bool,
    /// When the execution's first attempt started, if an earlier one failed.
    pub first_attempt_at: Option<i64>,
}

impl NextAttempt {
    /// After `failed` failed attempts and the last start recorded (`started`), under
    /// `retry`.
    pub fn after(
        retry: &RetryPolicy,
        failed: u32,
        started: Option<u32>,
        first_attempt_at: Option<i64>,
    ) -> Self {
        let number = next_attempt(failed, started.unwrap_or(0));
        let abandoned = is_beyond(retry, number);
        NextAttempt {
            number: if abandoned { number - 1 } else { number },
            abandoned,
            first_attempt_at,
        }
    }

    /// When the execution's first attempt started, this one starting at `started`.
    pub fn first_started(&self, started: i64) -> i64 {
        first_attempt_at(self.number, self.first_attempt_at, started)
    }

    /// Whether this attempt, starting at `started`, is known to be the last (`seed` spreads
    /// the retry jitter).
    pub fn is_last(&self, retry: &RetryPolicy, seed: &str, started: i64) -> bool {
        retry.is_last(self.number, seed, started, self.first_started(started))
    }
}

//! Debounce: per-id event coalescing.
//!
//! Events come in one at a time (`add`, `add_with_id`) or many at once (`add_many`, one
//! step per instance involved); either way each event is taken as a single add would take
//! it at its turn, so the reducer, `max_events` and duplicate ids behave the same.

mod client;
mod context;
mod definition;
pub(crate) mod erased;
mod executor;
mod handler;

pub use crate::errors::Rejected;
pub use client::{Added, DebounceClient};
pub use context::DebounceContext;
pub use definition::{keep_latest, Debounce};
pub(crate) use executor::alarm;
pub(crate) use handler::handle;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::KindRecord;
use crate::errors::JobError;
use crate::events::FlushReason;
use crate::jobs::lifecycle::ErrorInfo;
use crate::services::alarm::earliest;
use crate::services::metadata::{Metadata, Status};

pub(crate) const FAILED_PREFIX: &str = "failed:";
/// Full batches waiting for their flush, in the order they filled up.
pub(crate) const FULL_PREFIX: &str = "full:";

pub(crate) fn failed_key(seq: u64) -> String {
    format!("{FAILED_PREFIX}{seq:020}")
}

pub(crate) fn full_key(seq: u64) -> String {
    format!("{FULL_PREFIX}{seq:020}")
}

/// Events gathered and not yet flushed: the open batch, or a full one waiting its turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PendingBatch {
    pub state: Value,
    pub event_count: u32,
    pub started_at: i64,
    pub flush_at: i64,
    /// Flush at once, for this reason (max events reached, or a manual flush).
    pub forced: Option<FlushReason>,
}

/// A batch taken out for flushing: running now, or waiting for its retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Inflight {
    pub batch: PendingBatch,
    pub reason: FlushReason,
    /// Failed attempts so far.
    pub attempt: u32,
    /// The attempt started last, while its outcome is not recorded (only where attempts
    /// are recorded at their start).
    #[serde(default)]
    pub started: u32,
    pub claimed_at: i64,
    pub retry_at: Option<i64>,
}

/// The Debounce record: everything of an instance except failed and full batches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    /// The open batch, which takes new events; never full (a full batch is closed).
    pub batch: Option<PendingBatch>,
    /// The batch being flushed, or waiting for its retry.
    pub inflight: Option<Inflight>,
    pub failed_count: u32,
    /// A manual flush asked for the failed batches to be tried again.
    pub retry_failed: bool,
    /// How many failed batches that flush still has to try: each is tried once, even if it
    /// fails again and goes back among the failed batches.
    #[serde(default)]
    pub retry_left: u32,
    /// The sequence number of the next failed batch.
    pub next_seq: u64,
    pub last_error: Option<ErrorInfo>,
    /// Full batches waiting under `full:{seq}`.
    #[serde(default)]
    pub full_batches: u32,
    /// The sequence number of the next full batch.
    #[serde(default)]
    pub next_full_seq: u64,
}

impl Record {
    pub fn is_idle(&self) -> bool {
        self.batch.is_none()
            && self.inflight.is_none()
            && self.failed_count == 0
            && self.full_batches == 0
    }

    /// When the next flush is due. Batches flush one at a time, in order: while one is in
    /// flight (running, or waiting for its retry) nothing else is due; then failed batches
    /// a flush asked to retry, full batches, and the open batch.
    fn flush_due_at(&self) -> Option<i64> {
        if let Some(inflight) = &self.inflight {
            return Some(inflight.retry_at.unwrap_or(inflight.claimed_at).max(0));
        }
        let retry_failed = (self.retry_failed && self.failed_count > 0).then_some(0);
        let full = (self.full_batches > 0).then_some(0);
        let open = self.batch.as_ref().map(|b| match b.forced {
            Some(_) => b.started_at.min(b.flush_at),
            None => b.flush_at,
        });
        earliest([retry_failed, full, open]).map(|t| t.max(0))
    }
}

impl KindRecord for Record {
    const KEY: &'static str = "debounce";

    /// The next flush, else the purge of an idle instance (one that still holds work,
    /// such as a kept failed batch, is not purged, so its purge time is no reason to wake).
    fn alarm(&self, meta: Option<&Metadata>) -> Option<i64> {
        let meta = meta?;
        let purge_at = meta.purge_at.filter(|_| self.is_idle());
        self.flush_due_at().or(purge_at)
    }
}

/// One event of an add of several, as the wire carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddItem {
    /// The event (JSON).
    pub event: Value,
    /// Its id, for deduplication.
    #[serde(default)]
    pub event_id: Option<String>,
}

/// What became of one event of an add of several: what an `add` of that event alone,
/// made at its turn, would have answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddOutcome {
    /// Events in the open batch once the event was taken; for a duplicate or a refused
    /// event, as the batch stood.
    pub event_count: u32,
    /// The id was seen before within the retention period, by an earlier call or earlier
    /// in the same request: nothing changed.
    pub duplicate: bool,
    /// When the open batch flushes.
    pub flush_at: Option<i64>,
    /// The error an `add` of the event would have failed with (it does not decode as the
    /// job's event type, or the reducer refused it or panicked): nothing of it is stored,
    /// and the other events are taken all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<JobError>,
}

/// A batch whose flush failed all its attempts. It stays until a flush retries it or a
/// clear drops it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedBatch {
    /// Its order among failed batches.
    pub seq: u64,
    /// The reduced state (JSON).
    pub state: Value,
    /// Events in it.
    pub event_count: u32,
    /// When its first event arrived.
    pub started_at: i64,
    /// The last error's text.
    pub error: String,
    /// When it failed.
    pub failed_at: i64,
    /// Attempts made.
    pub attempts: u32,
}

/// What `status` reports of a Debounce instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebounceStatus {
    /// `Error` while failed batches are kept.
    pub status: Status,
    /// Events in the open batch.
    pub event_count: u32,
    /// Full batches waiting for their flush (each holds `max_events` events).
    #[serde(default)]
    pub full_batches: u32,
    /// When the open batch's first event arrived.
    pub started_at: Option<i64>,
    /// When the open batch flushes.
    pub flush_at: Option<i64>,
    /// Whether a batch is being flushed or waits for a retry.
    pub flushing: bool,
    /// When a failed flush attempt is retried.
    pub retry_at: Option<i64>,
    /// Batches whose flush failed all attempts.
    pub failed_batches: u32,
    /// The last flush that failed all its attempts.
    pub last_error: Option<ErrorInfo>,
    /// When the instance was created.
    pub created_at: i64,
    /// When an idle instance's data will be purged.
    pub purge_at: Option<i64>,
    /// Since when the running execution is past its timeout without stopping (code
    /// that blocks cannot be cancelled); the instance runs nothing else until it returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_since: Option<i64>,
}

//! WorkerPool: partitioned work queues served by N sequential instances.

mod client;
mod context;
mod definition;
pub(crate) mod erased;
mod executor;
mod handler;
mod routing;

pub use client::{EnqueueRequest, Enqueued, PoolStatus, RunAt, WorkerPoolClient};
pub use context::{EmptyContext, WorkerPoolContext};
pub use definition::WorkerPool;
pub use erased::MAX_CONCURRENCY;
pub(crate) use executor::alarm;
pub(crate) use handler::{handle, run_time};
pub use routing::jump_hash;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::KindRecord;
use crate::services::alarm::earliest;
use crate::services::metadata::{Metadata, Status};

/// Ids the runtime makes up for events enqueued without one begin with this; callers may
/// not use it, so a made-up id never meets one of theirs.
pub const GENERATED_ID_PREFIX: &str = "auto-";

pub(crate) const QUEUE_PREFIX: &str = "q:";
pub(crate) const DELAYED_PREFIX: &str = "d:";
pub(crate) const DEAD_PREFIX: &str = "dead:";

/// How far ahead an event may be delayed: ten years of 365 days. Further is refused at
/// enqueue, as a time that far out is almost always a unit mistake (seconds for
/// milliseconds, say).
pub const MAX_DELAY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// [`MAX_DELAY`] in milliseconds.
pub(crate) const MAX_DELAY_MS: i64 = 10 * 365 * 24 * 60 * 60 * 1000;

/// Orders the queue: higher priority first, then enqueue order.
pub(crate) fn queue_key(priority: i32, seq: u64) -> String {
    let rank = i64::from(i32::MAX) - i64::from(priority);
    format!("{QUEUE_PREFIX}{rank:010}:{seq:020}")
}

/// Orders the delayed events: earliest run time first, then enqueue order. Only times
/// ahead of the clock are stored here, so the clamp at zero only matters for a clock set
/// before 1970.
pub(crate) fn delayed_key(run_at: i64, seq: u64) -> String {
    format!("{DELAYED_PREFIX}{:020}:{seq:020}", run_at.max(0))
}

pub(crate) fn dead_key(seq: u64) -> String {
    format!("{DEAD_PREFIX}{seq:020}")
}

/// Counters and flags of one pool instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PoolRecord {
    pub paused: bool,
    pub pending: u64,
    pub processed: u64,
    pub dead: u64,
    pub next_seq: u64,
    pub next_dead_seq: u64,
    /// The head event waiting for its retry: it stays first whatever arrives meanwhile.
    pub current: Option<String>,
    pub retry_at: Option<i64>,
    /// `on_empty` has run since the queue last had events.
    pub drained: bool,
    /// The event whose attempt started last, while its outcome is not recorded (only
    /// where attempts are recorded at their start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<StartedAttempt>,
    /// The events a claim of several took, while their outcomes are not recorded (only
    /// where attempts are recorded at their start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<ClaimedEvents>,
    /// Events waiting for their run time under `d:` keys, not counted in `pending`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delayed: u64,
    /// The earliest run time among them: the alarm covers it, and a claim from then on
    /// moves the events that are due into the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_delayed_at: Option<i64>,
}

/// The queue keys a claim of several events took, first and last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClaimedEvents {
    /// The first claimed event's key.
    pub first: String,
    /// The last claimed event's key.
    pub last: String,
}

impl ClaimedEvents {
    /// Whether the event under `key` may be one the claim took.
    pub fn covers(&self, key: &str) -> bool {
        self.first.as_str() <= key && key <= self.last.as_str()
    }
}

/// An attempt recorded at its start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StartedAttempt {
    /// The queue key of the event.
    pub key: String,
    /// Its attempt number.
    pub attempt: u32,
}

impl Default for PoolRecord {
    /// A new instance: nothing queued, and nothing for `on_empty` to report.
    fn default() -> Self {
        PoolRecord {
            paused: false,
            pending: 0,
            processed: 0,
            dead: 0,
            next_seq: 0,
            next_dead_seq: 0,
            current: None,
            retry_at: None,
            drained: true,
            started: None,
            claimed: None,
            delayed: 0,
            next_delayed_at: None,
        }
    }
}

impl PoolRecord {
    /// Events waiting on the instance: queued (the running one included) and delayed.
    pub fn waiting(&self) -> u64 {
        self.pending.saturating_add(self.delayed)
    }

    /// Whether delayed events are due at `now`, to be moved into the queue first.
    pub fn delayed_due(&self, now: i64) -> bool {
        self.next_delayed_at.is_some_and(|t| t <= now)
    }
}

impl KindRecord for PoolRecord {
    const KEY: &'static str = "pool";

    /// Due at once while there is work (or `on_empty` to run), at the retry time while the
    /// head waits, none while paused or done; and no later than the first delayed event.
    /// `on_empty` waits for the delayed events. Delayed events of unknown time (a record
    /// that disagrees with its rows) make it due at once: a claim that finds the queue
    /// empty looks them up again.
    fn alarm(&self, meta: Option<&Metadata>) -> Option<i64> {
        meta?;
        if self.paused {
            return None;
        }
        let unknown_delayed = self.delayed > 0 && self.next_delayed_at.is_none();
        let queue = if self.current.is_some() {
            self.retry_at.or(Some(0))
        } else if self.pending > 0 || unknown_delayed || (!self.drained && self.delayed == 0) {
            Some(0)
        } else {
            None
        };
        earliest([queue, self.next_delayed_at])
    }
}

/// A queued event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Pending {
    pub event_id: String,
    pub event: Value,
    pub priority: i32,
    pub seq: u64,
    pub enqueued_at: i64,
    /// Failed attempts so far.
    pub attempt: u32,
    pub last_error: Option<String>,
    /// The id was made up at enqueue: once the event is done, nobody can ask for it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub generated_id: bool,
    /// When its first attempt started, once one failed: the retry policy's `max_duration`
    /// counts from it. Absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<i64>,
    /// The time it was enqueued to run at, if it was given one (a delay is resolved
    /// against the instance's clock at enqueue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<i64>,
}

fn is_false(value: &bool) -> bool {
    !value
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// What an event id refers to on its instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "camelCase")]
pub(crate) enum IdRecord {
    /// Queued under this key.
    Queued { key: String },
    /// Processed (or discarded); remembered until it expires.
    Done { expires: i64 },
    /// In the dead-letter list under this key.
    Dead { key: String },
}

impl IdRecord {
    /// When the record expires: only a finished event's record does.
    pub fn expires(&self) -> Option<i64> {
        match self {
            IdRecord::Done { expires } => Some(*expires),
            IdRecord::Queued { .. } | IdRecord::Dead { .. } => None,
        }
    }

    /// Whether the record still counts at `now`: an expired one reads as absent, swept or not.
    pub fn is_live(&self, now: i64) -> bool {
        self.expires().is_none_or(|t| t > now)
    }
}

/// An event that failed all its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Its order in the dead-letter list.
    pub seq: u64,
    /// The event's id.
    pub event_id: String,
    /// The event (JSON).
    pub event: Value,
    /// Its priority.
    pub priority: i32,
    /// The last error's text.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was first enqueued.
    pub enqueued_at: i64,
    /// When it was dead-lettered.
    pub dead_at: i64,
    /// Whether its id was made up at enqueue (the event came without one).
    #[serde(default)]
    pub generated_id: bool,
}

/// One event of an enqueue of several, as the wire carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnqueueItem {
    /// The event (JSON).
    pub event: Value,
    /// Its id, for deduplication; made up when absent.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Its priority (higher first).
    #[serde(default)]
    pub priority: i32,
    /// Run it no sooner than this time (ms since the epoch); a time already past runs it
    /// at once. Not together with `delay_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<i64>,
    /// Run it no sooner than this long after the instance receives it (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// What became of one event of an enqueue of several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnqueueOutcome {
    /// Its id (given or made up); `None` when it was rejected.
    pub event_id: Option<String>,
    /// Events waiting on the instance (queued and delayed), this one included, once it
    /// was queued.
    pub position: u64,
    /// The id was seen before (or earlier in the same request): nothing changed.
    pub duplicate: bool,
    /// Why the event was refused (it does not match the job's event type, or its run time
    /// is out of bounds); the others are queued all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// A queued event, as `pending` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedEvent {
    /// Its id.
    pub event_id: String,
    /// The event (JSON).
    pub event: Value,
    /// Its priority.
    pub priority: i32,
    /// Its enqueue order on the instance.
    pub seq: u64,
    /// When it was enqueued.
    pub enqueued_at: i64,
    /// Failed attempts so far.
    pub failed_attempts: u32,
    /// The last failure's text.
    pub last_error: Option<String>,
    /// The time it was enqueued to run at, if it was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<i64>,
    /// It waits for its run time, apart from the queue: `pending` lists such events after
    /// the queued ones, by run time. The first claim from its run time on moves it into
    /// the queue.
    #[serde(default, skip_serializing_if = "is_false")]
    pub delayed: bool,
}

impl QueuedEvent {
    /// A stored event as `pending` lists it; `delayed` if it waits under a `d:` key.
    pub(crate) fn new(p: Pending, delayed: bool) -> Self {
        QueuedEvent {
            event_id: p.event_id,
            event: p.event,
            priority: p.priority,
            seq: p.seq,
            enqueued_at: p.enqueued_at,
            failed_attempts: p.attempt,
            last_error: p.last_error,
            run_at: p.run_at,
            delayed,
        }
    }
}

/// What `status` reports of one pool instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolInstanceStatus {
    /// The instance index.
    pub index: u32,
    /// `Paused` while paused.
    pub status: Status,
    /// Events queued to run (the running one included), delayed events not counted.
    pub pending: u64,
    /// Events waiting for their run time.
    #[serde(default)]
    pub delayed: u64,
    /// The earliest run time among the delayed events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_delayed_at: Option<i64>,
    /// Events processed successfully.
    pub processed: u64,
    /// Events in the dead-letter list.
    pub dead_letters: u64,
    /// The event whose retry is awaited, if any.
    pub retrying: Option<String>,
    /// When it is retried.
    pub retry_at: Option<i64>,
    /// Since when the running execution is past its timeout without stopping (code
    /// that blocks cannot be cancelled); the instance runs nothing else until it returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_since: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_event_without_the_first_attempt_time_still_decodes() {
        // An event waiting for its retry, as versions before `firstAttemptAt` stored it.
        let old = br#"{"eventId":"e1","event":{"n":1},"priority":0,"seq":7,"enqueuedAt":5,
            "attempt":2,"lastError":"down"}"#;
        let pending: Pending = serde_json::from_slice(old).unwrap();
        assert_eq!(pending.attempt, 2);
        assert_eq!(pending.first_attempt_at, None);
        let json = serde_json::to_string(&pending).unwrap();
        assert!(!json.contains("firstAttemptAt"), "{json}");
    }
}

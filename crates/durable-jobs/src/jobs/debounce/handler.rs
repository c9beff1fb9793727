//! Debounce requests: add, flush, clear, status, get_state, failed_batches. Only `add`
//! runs user code: the reducer, which is synchronous and does no I/O.

use serde_json::Value;

use super::erased::ErasedDebounce;
use super::{
    full_key, DebounceStatus, FailedBatch, PendingBatch, Record, FAILED_PREFIX, FULL_PREFIX,
};
use crate::adapters::{Clock, ListOptions, Storage};
use crate::engine::{Engine, Step};
use crate::errors::JobError;
use crate::events::{EventKind, FlushReason};
use crate::ids::{InstanceId, JobKind};
use crate::services::{idempotency, purge};
use crate::wire::{Operation, Response};

type DebounceStep<'a, B> = Step<'a, B, Record>;

/// What the idempotency record of a debounce event id holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Seen {
    at: i64,
    /// Absent in records written before expiries were stored: they expire one retention
    /// period after `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
}

impl Seen {
    fn expires_at(&self, retention_ms: i64) -> i64 {
        self.expires
            .unwrap_or_else(|| self.at.saturating_add(retention_ms))
    }
}

pub(crate) async fn handle<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedDebounce,
    instance: &InstanceId,
    op: Operation,
) -> Result<Response, JobError> {
    match op {
        Operation::DebounceAdd { event, event_id } => {
            let id_key = event_id.as_deref().map(idempotency::record_key);
            let extra: Vec<&str> = id_key.iter().map(String::as_str).collect();
            let step = engine.step(instance, &extra).await?;
            add(step, job, &event, event_id).await
        }
        op => {
            let step = engine.step(instance, &[]).await?;
            match op {
                Operation::DebounceFlush => flush(step).await,
                Operation::DebounceClear => clear(step, job).await,
                Operation::DebounceStatus => Ok(status(&step)),
                Operation::DebounceGetState => Ok(Response::State {
                    state: step.record().batch.as_ref().map(|b| b.state.clone()),
                }),
                Operation::DebounceFailedBatches => failed_batches(&step).await,
                other => Err(JobError::wrong_kind(&other, JobKind::Debounce)),
            }
        }
    }
}

/// Folds an event into the open batch, opening one if needed. A batch that reached
/// `max_events` flushes at once; if it is still waiting when the next event arrives, it is
/// closed and the event opens the next batch, so no flush ever sees more than `max_events`.
async fn add<B: Storage + Clock>(
    mut step: DebounceStep<'_, B>,
    job: &dyn ErasedDebounce,
    event: &Value,
    event_id: Option<String>,
) -> Result<Response, JobError> {
    let config = job.config();
    let now = step.now();
    let seen_until = seen_until(&step, event_id.as_deref(), config.retention_ms)?;
    if seen_until.is_some_and(|t| t > now) {
        let batch = step.record().batch.as_ref();
        return Ok(Response::Added {
            event_count: batch.map_or(0, |b| b.event_count),
            duplicate: true,
            flush_at: batch.map(|b| b.flush_at),
        });
    }
    close_full_batch(&mut step, config.max_events)?;
    let open_state = step.record().batch.as_ref().map(|b| &b.state);
    let state = job.reduce(step.instance(), open_state, event)?;
    step.create_meta();
    step.change_meta(purge::cancel);
    let (event_count, flush_at) = fold(&mut step, job, state);
    if let Some(id) = &event_id {
        let expires = now.saturating_add(config.retention_ms);
        let seen = Seen {
            at: now,
            expires: Some(expires),
        };
        step.remember_id(id, &seen, expires, seen_until)?;
    }
    step.emit(EventKind::DebounceEventReceived {
        event_id,
        event_count,
    });
    step.finish().await?;
    Ok(Response::Added {
        event_count,
        duplicate: false,
        flush_at: Some(flush_at),
    })
}

/// Until when `event_id` was remembered, if it ever was (expired or not).
fn seen_until<B: Storage + Clock>(
    step: &DebounceStep<'_, B>,
    event_id: Option<&str>,
    retention_ms: i64,
) -> Result<Option<i64>, JobError> {
    let Some(id) = event_id else {
        return Ok(None);
    };
    let seen = step.extra::<Seen>(0, &idempotency::record_key(id))?;
    Ok(seen.map(|seen| seen.expires_at(retention_ms)))
}

/// Puts the reduced `state` into the open batch, opening one if needed; a batch that
/// becomes full is due at once. Returns its event count and flush time.
fn fold<B: Storage + Clock>(
    step: &mut DebounceStep<'_, B>,
    job: &dyn ErasedDebounce,
    state: Value,
) -> (u32, i64) {
    let config = job.config();
    let now = step.now();
    let open = step.record_mut().batch.get_or_insert_with(|| PendingBatch {
        state: Value::Null,
        event_count: 0,
        started_at: now,
        flush_at: now.saturating_add(config.flush_after_ms),
        forced: None,
    });
    open.state = state;
    open.event_count = open.event_count.saturating_add(1);
    if is_full(open, config.max_events) && open.forced.is_none() {
        open.forced = Some(FlushReason::MaxEvents);
    }
    (open.event_count, open.flush_at)
}

fn is_full(batch: &PendingBatch, max_events: Option<u32>) -> bool {
    max_events.is_some_and(|max| batch.event_count >= max)
}

/// Moves a full open batch to the queue of full batches, where it waits its turn.
fn close_full_batch<B: Storage + Clock>(
    step: &mut DebounceStep<'_, B>,
    max_events: Option<u32>,
) -> Result<(), JobError> {
    let full = step
        .record()
        .batch
        .as_ref()
        .is_some_and(|b| is_full(b, max_events));
    if !full {
        return Ok(());
    }
    let rec = step.record_mut();
    let Some(batch) = rec.batch.take() else {
        return Ok(());
    };
    let seq = rec.next_full_seq;
    rec.next_full_seq = rec.next_full_seq.saturating_add(1);
    rec.full_batches = rec.full_batches.saturating_add(1);
    step.put(full_key(seq), &batch)
}

/// Asks for the open batch, and every failed batch, to flush now (through the alarm).
async fn flush<B: Storage + Clock>(mut step: DebounceStep<'_, B>) -> Result<Response, JobError> {
    if step.meta().is_none() {
        return Ok(Response::FlushRequested {
            event_count: 0,
            retried_batches: 0,
        });
    }
    let rec = step.record_mut();
    let event_count = match rec.batch.as_mut() {
        Some(b) => {
            b.forced.get_or_insert(FlushReason::Manual);
            b.event_count
        }
        None => 0,
    };
    let retried_batches = rec.failed_count;
    rec.retry_failed = rec.failed_count > 0;
    rec.retry_left = rec.failed_count;
    step.finish().await?;
    Ok(Response::FlushRequested {
        event_count,
        retried_batches,
    })
}

/// Drops the open batch, full and failed batches, and a batch waiting for its retry; a batch
/// being flushed right now finishes.
async fn clear<B: Storage + Clock>(
    mut step: DebounceStep<'_, B>,
    job: &dyn ErasedDebounce,
) -> Result<Response, JobError> {
    if step.meta().is_none() {
        return Ok(Response::Cleared { discarded: 0 });
    }
    let failed: Vec<(String, FailedBatch)> = step.list(ListOptions::prefix(FAILED_PREFIX)).await?;
    let full: Vec<(String, PendingBatch)> = step.list(ListOptions::prefix(FULL_PREFIX)).await?;
    let mut discarded: u32 = 0;
    let failed = failed.into_iter().map(|(key, b)| (key, b.event_count));
    for (key, event_count) in failed.chain(full.into_iter().map(|(key, b)| (key, b.event_count))) {
        discarded = discarded.saturating_add(event_count);
        step.writes().delete(key);
    }
    let executing = step.engine().is_executing();
    let rec = step.record_mut();
    discarded = discarded.saturating_add(rec.batch.take().map_or(0, |b| b.event_count));
    rec.failed_count = 0;
    rec.retry_failed = false;
    rec.retry_left = 0;
    rec.full_batches = 0;
    if rec.inflight.as_ref().is_some_and(|i| i.retry_at.is_some()) && !executing {
        discarded =
            discarded.saturating_add(rec.inflight.take().map_or(0, |i| i.batch.event_count));
    }
    if rec.is_idle() {
        let (now, retention_ms) = (step.now(), job.config().retention_ms);
        step.change_meta(|meta| {
            meta.set_status(crate::services::metadata::Status::Active, now);
            purge::schedule(meta, now, retention_ms);
            true
        });
    }
    step.emit(EventKind::DebounceCleared {
        discarded_events: discarded,
    });
    step.finish().await?;
    Ok(Response::Cleared { discarded })
}

fn status<B: Storage + Clock>(step: &DebounceStep<'_, B>) -> Response {
    let rec = step.record();
    let status = step.meta().map(|m| DebounceStatus {
        status: m.status.clone(),
        event_count: rec.batch.as_ref().map_or(0, |b| b.event_count),
        full_batches: rec.full_batches,
        started_at: rec.batch.as_ref().map(|b| b.started_at),
        flush_at: rec.batch.as_ref().map(|b| b.flush_at),
        flushing: rec.inflight.is_some(),
        retry_at: rec.inflight.as_ref().and_then(|i| i.retry_at),
        failed_batches: rec.failed_count,
        last_error: rec.last_error.clone(),
        created_at: m.created_at,
        purge_at: m.purge_at,
        overdue_since: step.engine().overdue_since(),
    });
    Response::DebounceStatus { status }
}

/// Failed batches one `failed_batches` request returns at most, the oldest first.
const FAILED_BATCHES_LIMIT: usize = 1000;

/// The oldest failed batches, at most [`FAILED_BATCHES_LIMIT`]: the status counts them all.
async fn failed_batches<B: Storage + Clock>(
    step: &DebounceStep<'_, B>,
) -> Result<Response, JobError> {
    let oldest = ListOptions::prefix(FAILED_PREFIX).limit(FAILED_BATCHES_LIMIT);
    let found: Vec<(String, FailedBatch)> = step.list(oldest).await?;
    let batches = found.into_iter().map(|(_, batch)| batch).collect();
    Ok(Response::FailedBatches { batches })
}

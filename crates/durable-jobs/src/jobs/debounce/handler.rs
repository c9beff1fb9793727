//! Debounce requests: add, flush, clear, status, get_state, failed_batches. Only `add`
//! runs user code: the reducer, which is synchronous and does no I/O.

use serde_json::Value;

use super::erased::ErasedDebounce;
use super::{DebounceStatus, FailedBatch, PendingBatch, Record, FAILED_PREFIX};
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

/// Folds an event into the pending batch, opening one if needed; a full batch is marked
/// for an immediate flush.
async fn add<B: Storage + Clock>(
    mut step: DebounceStep<'_, B>,
    job: &dyn ErasedDebounce,
    event: &Value,
    event_id: Option<String>,
) -> Result<Response, JobError> {
    if step.has_extra(0) {
        let batch = step.record().batch.as_ref();
        return Ok(Response::Added {
            event_count: batch.map_or(0, |b| b.event_count),
            duplicate: true,
            flush_at: batch.map(|b| b.flush_at),
        });
    }
    let state = job.reduce(step.record().batch.as_ref().map(|b| &b.state), event)?;
    let now = step.now();
    step.create_meta();
    step.change_meta(purge::cancel);
    let config = job.config();
    let pending = step.record_mut().batch.get_or_insert_with(|| PendingBatch {
        state: Value::Null,
        event_count: 0,
        started_at: now,
        flush_at: now.saturating_add(config.flush_after_ms),
        forced: None,
    });
    pending.state = state;
    pending.event_count += 1;
    if config.max_events.is_some_and(|m| pending.event_count >= m) && pending.forced.is_none() {
        pending.forced = Some(FlushReason::MaxEvents);
    }
    let (event_count, flush_at) = (pending.event_count, pending.flush_at);
    if let Some(id) = &event_id {
        let expires = now.saturating_add(config.retention_ms);
        idempotency::put(step.writes(), id, &Seen { at: now }, expires, None)?;
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

/// Asks for the pending batch, and every failed batch, to flush now (through the alarm).
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
    step.finish().await?;
    Ok(Response::FlushRequested {
        event_count,
        retried_batches,
    })
}

/// Drops the pending batch, the failed batches and a batch waiting for its retry; a batch
/// being flushed right now finishes.
async fn clear<B: Storage + Clock>(
    mut step: DebounceStep<'_, B>,
    job: &dyn ErasedDebounce,
) -> Result<Response, JobError> {
    if step.meta().is_none() {
        return Ok(Response::Cleared { discarded: 0 });
    }
    let failed: Vec<(String, FailedBatch)> = step.list(ListOptions::prefix(FAILED_PREFIX)).await?;
    let mut discarded = 0;
    for (key, batch) in failed {
        discarded += batch.event_count;
        step.writes().delete(key);
    }
    let executing = step.engine().is_executing();
    let rec = step.record_mut();
    discarded += rec.batch.take().map_or(0, |b| b.event_count);
    rec.failed_count = 0;
    rec.retry_failed = false;
    if rec.inflight.as_ref().is_some_and(|i| i.retry_at.is_some()) && !executing {
        discarded += rec.inflight.take().map_or(0, |i| i.batch.event_count);
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
        started_at: rec.batch.as_ref().map(|b| b.started_at),
        flush_at: rec.batch.as_ref().map(|b| b.flush_at),
        flushing: rec.inflight.is_some(),
        retry_at: rec.inflight.as_ref().and_then(|i| i.retry_at),
        failed_batches: rec.failed_count,
        last_error: rec.last_error.clone(),
        created_at: m.created_at,
        purge_at: m.purge_at,
    });
    Response::DebounceStatus { status }
}

async fn failed_batches<B: Storage + Clock>(
    step: &DebounceStep<'_, B>,
) -> Result<Response, JobError> {
    let found: Vec<(String, FailedBatch)> = step.list(ListOptions::prefix(FAILED_PREFIX)).await?;
    let batches = found.into_iter().map(|(_, batch)| batch).collect();
    Ok(Response::FailedBatches { batches })
}

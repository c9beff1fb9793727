//! Debounce alarms: take the due batch out (new events then form the next batch), flush it
//! without the lock, then record the outcome.

use super::erased::{ErasedDebounce, FlushInput};
use super::handler::put_failed;
use super::{alarm_time, FailedBatch, Inflight, Record, FAILED_PREFIX, RECORD_KEY};
use crate::adapters::{Clock, ListOptions, Storage, WriteBatch};
use crate::engine::{Engine, EXECUTIONS_PER_ALARM};
use crate::errors::JobError;
use crate::events::{EventKind, FlushReason};
use crate::jobs::continuous::ErrorInfo;
use crate::retry::{hash_str, millis};
use crate::services::codec;
use crate::services::metadata::{Metadata, Status, META_KEY};
use crate::services::{idempotency, purge, schedule};

/// Handles one alarm of a Debounce instance. The caller holds the execution guard.
pub(crate) async fn alarm<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedDebounce,
) -> Result<(), JobError> {
    for _ in 0..EXECUTIONS_PER_ALARM {
        let Some((meta, inflight)) = claim(engine).await? else {
            return Ok(());
        };
        flush(engine, job, meta, inflight).await?;
    }
    Ok(())
}

async fn read<B: Storage>(engine: &Engine<B>) -> Result<(Option<Metadata>, Record), JobError> {
    let found = engine.backend.get_many(&[META_KEY, RECORD_KEY]).await?;
    let meta = codec::decode_opt(META_KEY, found[0].as_ref())?;
    let rec = codec::decode_opt(RECORD_KEY, found[1].as_ref())?.unwrap_or_default();
    Ok((meta, rec))
}

/// Under the lock: picks the batch to flush (a claimed or retrying batch, then a failed
/// batch a flush asked to retry, then the pending batch if due) and stores it as in flight.
async fn claim<B: Storage + Clock>(
    engine: &Engine<B>,
) -> Result<Option<(Metadata, Inflight)>, JobError> {
    let _lock = engine.lock.lock().await;
    let (meta, mut rec) = read(engine).await?;
    let now = engine.now();
    let mut batch = WriteBatch::new();
    let Some(meta) = meta else {
        batch.set_alarm(None);
        engine.commit(batch, Vec::new()).await?;
        return Ok(None);
    };
    let mut events = Vec::new();
    let chosen = if let Some(inflight) = rec.inflight.clone() {
        // Retry time reached, or a claim whose flush never completed (a crash): run again.
        inflight
            .retry_at
            .is_none_or(|t| t <= now)
            .then_some(inflight)
    } else if rec.retry_failed && rec.failed_count > 0 {
        let first = engine
            .backend
            .list(ListOptions::prefix(FAILED_PREFIX).limit(1))
            .await?;
        match first.into_iter().next() {
            Some((key, bytes)) => {
                let failed: FailedBatch = codec::decode(&key, &bytes)?;
                batch.delete(key);
                rec.failed_count -= 1;
                rec.retry_failed = rec.failed_count > 0;
                Some(take_out(
                    &mut rec,
                    failed.into_batch(),
                    FlushReason::Manual,
                    now,
                ))
            }
            None => {
                rec.failed_count = 0;
                rec.retry_failed = false;
                None
            }
        }
    } else {
        match rec.batch.take() {
            Some(b) if b.forced.is_some() || b.flush_at <= now => {
                let reason = b.forced.unwrap_or(FlushReason::FlushAfter);
                Some(take_out(&mut rec, b, reason, now))
            }
            other => {
                rec.batch = other;
                None
            }
        }
    };
    if let Some(inflight) = &chosen {
        events.push(engine.event(
            &meta.id,
            EventKind::DebounceFlushing {
                event_count: inflight.batch.event_count,
                reason: inflight.reason,
            },
        ));
        batch.put(RECORD_KEY, codec::encode(&rec)?);
        schedule::reconcile(&mut batch, None, alarm_time(Some(&meta), &rec), true);
        engine.commit(batch, events).await?;
        return Ok(chosen.map(|i| (meta, i)));
    }
    if rec.is_idle() && purge::is_due(&meta, now) {
        engine.commit(purge::purge_batch(), Vec::new()).await?;
        return Ok(None);
    }
    schedule::reconcile(&mut batch, None, alarm_time(Some(&meta), &rec), true);
    engine.commit(batch, Vec::new()).await?;
    Ok(None)
}

fn take_out(rec: &mut Record, batch: super::Batch, reason: FlushReason, now: i64) -> Inflight {
    let inflight = Inflight {
        batch,
        reason,
        attempt: 0,
        claimed_at: now,
        retry_at: None,
    };
    rec.inflight = Some(inflight.clone());
    inflight
}

impl FailedBatch {
    fn into_batch(self) -> super::Batch {
        super::Batch {
            state: self.state,
            event_count: self.event_count,
            started_at: self.started_at,
            flush_at: self.started_at,
            forced: Some(FlushReason::Manual),
        }
    }
}

async fn flush<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedDebounce,
    meta: Metadata,
    inflight: Inflight,
) -> Result<(), JobError> {
    let config = job.config();
    let attempt = inflight.attempt + 1;
    let final_attempt = !config.retry.retries_after(attempt);
    engine.before_user_code().await?;
    let started = engine.now();
    let result = job
        .run(FlushInput {
            state: inflight.batch.state.clone(),
            instance: meta.id.clone(),
            event_count: inflight.batch.event_count,
            reason: inflight.reason,
            started_at: inflight.batch.started_at,
            attempt,
            final_attempt,
        })
        .await;

    let _lock = engine.lock.lock().await;
    let (current_meta, mut rec) = read(engine).await?;
    let now = engine.now();
    let mut batch = WriteBatch::new();
    let Some(mut meta) = current_meta else {
        return Ok(());
    };
    let instance = meta.id.clone();
    let mut events = Vec::new();
    match result {
        Ok(()) => {
            rec.inflight = None;
            events.push(engine.event(
                &instance,
                EventKind::DebounceFlushed {
                    event_count: inflight.batch.event_count,
                    duration_ms: now - started,
                },
            ));
            if rec.failed_count == 0 && matches!(meta.status, Status::Error { .. }) {
                meta.set_status(Status::Active, now);
                batch.put(META_KEY, codec::encode(&meta)?);
            }
        }
        Err(error) => {
            events.push(engine.event(
                &instance,
                EventKind::DebounceError {
                    error: error.clone(),
                    attempt,
                },
            ));
            if final_attempt {
                tracing::warn!(instance = %instance, %error, attempts = attempt, "debounce flush failed; batch kept");
                let failed = FailedBatch {
                    seq: rec.next_seq,
                    state: inflight.batch.state.clone(),
                    event_count: inflight.batch.event_count,
                    started_at: inflight.batch.started_at,
                    error: error.clone(),
                    failed_at: now,
                    attempts: attempt,
                };
                put_failed(&mut batch, &failed)?;
                rec.next_seq += 1;
                rec.failed_count += 1;
                rec.inflight = None;
                rec.last_error = Some(ErrorInfo {
                    message: error.clone(),
                    at: now,
                    attempts: attempt,
                });
                meta.set_status(
                    Status::Error {
                        error_at: now,
                        error,
                    },
                    now,
                );
                batch.put(META_KEY, codec::encode(&meta)?);
            } else if let Some(i) = rec.inflight.as_mut() {
                let delay = config.retry.delay(attempt, hash_str(&instance.to_string()));
                i.attempt = attempt;
                i.retry_at = Some(now.saturating_add(millis(delay)));
            }
        }
    }
    // A batch may have brought one id record per event: sweep at least that many.
    let limit = idempotency::SWEEP_LIMIT + inflight.batch.event_count as usize;
    idempotency::sweep(&engine.backend, &mut batch, now, limit).await?;
    if rec.is_idle() && meta.purge_at.is_none() {
        purge::schedule(&mut meta, now, config.retention_ms);
        batch.put(META_KEY, codec::encode(&meta)?);
    }
    batch.put(RECORD_KEY, codec::encode(&rec)?);
    schedule::reconcile(&mut batch, None, alarm_time(Some(&meta), &rec), true);
    engine.commit(batch, events).await
}

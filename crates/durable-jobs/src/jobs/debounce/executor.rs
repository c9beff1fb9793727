//! Debounce alarms: take the due batch out (new events then form the next batch), flush it
//! without the lock, then record the outcome.

use std::sync::Arc;

use super::erased::{ErasedDebounce, FlushInput};
use super::{failed_key, FailedBatch, Inflight, PendingBatch, Record, FAILED_PREFIX, FULL_PREFIX};
use crate::adapters::{Clock, ListOptions, Storage};
use crate::engine::{Engine, Step, UserRun, EXECUTIONS_PER_ALARM};
use crate::errors::JobError;
use crate::events::{EventKind, FlushReason};
use crate::ids::InstanceId;
use crate::jobs::lifecycle;
use crate::services::{idempotency, purge};

type DebounceStep<'a, B> = Step<'a, B, Record>;

/// Handles one alarm of a Debounce instance. The caller holds the execution guard.
pub(crate) async fn alarm<B: Storage + Clock>(
    engine: &Engine<B>,
    shared_job: &Arc<dyn ErasedDebounce>,
    instance: &InstanceId,
) -> Result<(), JobError> {
    let job = shared_job.as_ref();
    for _ in 0..EXECUTIONS_PER_ALARM {
        let Some(inflight) = claim(engine, instance).await? else {
            return Ok(());
        };
        let attempt = lifecycle::next_attempt(inflight.attempt, inflight.started);
        if lifecycle::is_beyond(&job.config().retry, attempt) {
            let abandoned = Err(lifecycle::ABANDONED.to_string());
            let now = engine.now();
            complete(
                engine,
                job,
                instance,
                &inflight,
                attempt - 1,
                abandoned,
                now,
            )
            .await?;
            continue;
        }
        if engine.records_attempts_at_start() {
            record_start(engine, instance, attempt).await?;
        }
        let started = engine.now();
        // The batch's first attempt started when it was taken out for flushing.
        let seed = instance.to_string();
        let final_attempt =
            job.config()
                .retry
                .is_last(attempt, &seed, started, inflight.claimed_at);
        let input = FlushInput {
            state: inflight.batch.state.clone(),
            instance: instance.clone(),
            event_count: inflight.batch.event_count,
            reason: inflight.reason,
            started_at: inflight.batch.started_at,
            attempt,
            final_attempt,
        };
        let run = UserRun::new(instance, job.config().timeout);
        let result = engine
            .run_job(run, shared_job, move |job| job.run(input))
            .await?
            .and_then(|r| r);
        complete(engine, job, instance, &inflight, attempt, result, started).await?;
    }
    Ok(())
}

/// Records that attempt `attempt` of the batch in flight starts.
async fn record_start<B: Storage + Clock>(
    engine: &Engine<B>,
    instance: &InstanceId,
    attempt: u32,
) -> Result<(), JobError> {
    let mut step: DebounceStep<'_, B> = engine.alarm_step(instance, &[]).await?;
    if let Some(inflight) = step.record_mut().inflight.as_mut() {
        inflight.started = attempt;
    }
    step.leave_alarm();
    step.finish().await
}

/// Picks the batch to flush (a claimed or retrying batch, then a failed batch a flush asked
/// to retry, then the oldest full batch, then the open batch if due) and stores it as in
/// flight; purges an idle instance whose retention has passed.
async fn claim<B: Storage + Clock>(
    engine: &Engine<B>,
    instance: &InstanceId,
) -> Result<Option<Inflight>, JobError> {
    let mut step: DebounceStep<'_, B> = engine.alarm_step(instance, &[]).await?;
    let Some(meta) = step.meta() else {
        step.finish().await?;
        return Ok(None);
    };
    let purge_due = purge::is_due(meta, step.now());
    let chosen = match step.record().inflight.clone() {
        // Retry time reached, or a claim whose flush never completed (a crash): run again.
        Some(inflight) => inflight
            .retry_at
            .is_none_or(|t| t <= step.now())
            .then_some(inflight),
        None if step.record().retry_failed && step.record().failed_count > 0 => {
            take_failed(&mut step).await?
        }
        None if step.record().full_batches > 0 => take_full(&mut step).await?,
        None => take_pending(&mut step),
    };
    match &chosen {
        Some(inflight) => step.emit(EventKind::DebounceFlushing {
            event_count: inflight.batch.event_count,
            reason: inflight.reason,
        }),
        None if step.record().is_idle() && purge_due => step.purge(),
        None => {}
    }
    step.finish().await?;
    Ok(chosen)
}

/// Takes the oldest failed batch out for a retry a flush asked for.
async fn take_failed<B: Storage + Clock>(
    step: &mut DebounceStep<'_, B>,
) -> Result<Option<Inflight>, JobError> {
    let first: Vec<(String, FailedBatch)> = step
        .list(ListOptions::prefix(FAILED_PREFIX).limit(1))
        .await?;
    let now = step.now();
    let rec = step.record_mut();
    let Some((key, failed)) = first.into_iter().next() else {
        // The count disagrees with storage (there are none): trust storage.
        rec.failed_count = 0;
        rec.retry_failed = false;
        rec.retry_left = 0;
        return Ok(None);
    };
    rec.failed_count = rec.failed_count.saturating_sub(1);
    rec.retry_left = rec.retry_left.saturating_sub(1);
    rec.retry_failed = rec.retry_left > 0 && rec.failed_count > 0;
    let inflight = take_out(rec, failed.into_batch(), FlushReason::Manual, now);
    step.writes().delete(key);
    Ok(Some(inflight))
}

/// Takes the oldest full batch out.
async fn take_full<B: Storage + Clock>(
    step: &mut DebounceStep<'_, B>,
) -> Result<Option<Inflight>, JobError> {
    let first: Vec<(String, PendingBatch)> =
        step.list(ListOptions::prefix(FULL_PREFIX).limit(1)).await?;
    let now = step.now();
    let rec = step.record_mut();
    let Some((key, batch)) = first.into_iter().next() else {
        // The count disagrees with storage (there are none): trust storage.
        rec.full_batches = 0;
        return Ok(None);
    };
    rec.full_batches = rec.full_batches.saturating_sub(1);
    let inflight = take_out(rec, batch, FlushReason::MaxEvents, now);
    step.writes().delete(key);
    Ok(Some(inflight))
}

/// Takes the open batch out if it is due.
fn take_pending<B: Storage + Clock>(step: &mut DebounceStep<'_, B>) -> Option<Inflight> {
    let now = step.now();
    let due = step
        .record()
        .batch
        .as_ref()
        .is_some_and(|b| b.forced.is_some() || b.flush_at <= now);
    if !due {
        return None;
    }
    let rec = step.record_mut();
    let batch = rec.batch.take()?;
    let reason = batch.forced.unwrap_or(FlushReason::FlushAfter);
    Some(take_out(rec, batch, reason, now))
}

fn take_out(rec: &mut Record, batch: PendingBatch, reason: FlushReason, now: i64) -> Inflight {
    let inflight = Inflight {
        batch,
        reason,
        attempt: 0,
        started: 0,
        claimed_at: now,
        retry_at: None,
    };
    rec.inflight = Some(inflight.clone());
    inflight
}

impl FailedBatch {
    fn into_batch(self) -> PendingBatch {
        PendingBatch {
            state: self.state,
            event_count: self.event_count,
            started_at: self.started_at,
            flush_at: self.started_at,
            forced: Some(FlushReason::Manual),
        }
    }
}

/// Records attempt `attempt`'s outcome: done, retried later, or kept as a failed batch.
async fn complete<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedDebounce,
    instance: &InstanceId,
    inflight: &Inflight,
    attempt: u32,
    result: Result<(), String>,
    started: i64,
) -> Result<(), JobError> {
    let mut step: DebounceStep<'_, B> = engine.alarm_step(instance, &[]).await?;
    if step.meta().is_none() {
        return Ok(());
    }
    let now = step.now();
    match result {
        Ok(()) => {
            step.record_mut().inflight = None;
            step.emit(EventKind::DebounceFlushed {
                event_count: inflight.batch.event_count,
                duration_ms: now - started,
            });
            if step.record().failed_count == 0 {
                step.change_meta(|meta| lifecycle::recover(meta, now));
            }
        }
        Err(error) => fail(&mut step, job, inflight, attempt, error)?,
    }
    // A batch may have brought one id record per event: sweep at least that many.
    let limit = idempotency::SWEEP_LIMIT + inflight.batch.event_count as usize;
    step.sweep_ids(limit).await?;
    if step.record().is_idle() {
        let retention_ms = job.config().retention_ms;
        step.change_meta(|meta| {
            let schedule = meta.purge_at.is_none();
            if schedule {
                purge::schedule(meta, now, retention_ms);
            }
            schedule
        });
    }
    step.finish().await
}

fn fail<B: Storage + Clock>(
    step: &mut DebounceStep<'_, B>,
    job: &dyn ErasedDebounce,
    inflight: &Inflight,
    attempt: u32,
    error: String,
) -> Result<(), JobError> {
    let now = step.now();
    step.emit(EventKind::DebounceError {
        error: error.clone(),
        attempt,
    });
    let seed = step.instance().to_string();
    let retry = &job.config().retry;
    if let Some(retry_at) = retry.retry_at(attempt, &seed, now, inflight.claimed_at) {
        if let Some(i) = step.record_mut().inflight.as_mut() {
            i.attempt = attempt;
            i.retry_at = Some(retry_at);
        }
        return Ok(());
    }
    tracing::warn!(instance = %step.instance(), %error, attempts = attempt, "debounce flush failed; batch kept");
    let seq = step.record().next_seq;
    let failed = FailedBatch {
        seq,
        state: inflight.batch.state.clone(),
        event_count: inflight.batch.event_count,
        started_at: inflight.batch.started_at,
        error: error.clone(),
        failed_at: now,
        attempts: attempt,
    };
    step.put(failed_key(seq), &failed)?;
    let mut last_error = None;
    step.change_meta(|meta| {
        last_error = Some(lifecycle::record_final_failure(meta, &error, attempt, now));
        true
    });
    let rec = step.record_mut();
    rec.next_seq = rec.next_seq.saturating_add(1);
    rec.failed_count = rec.failed_count.saturating_add(1);
    rec.inflight = None;
    rec.last_error = last_error;
    Ok(())
}

//! WorkerPool alarms: process the head of the queue, one event at a time, without holding
//! the lock while user code runs.

use std::sync::Arc;

use super::erased::{ErasedWorkerPool, ProcessInput};
use super::handler::mark_done;
use super::{dead_key, DeadLetter, IdRecord, Pending, PoolRecord, StartedAttempt, QUEUE_PREFIX};
use crate::adapters::{Clock, ListOptions, Storage};
use crate::engine::{Engine, Step, UserRun, EXECUTIONS_PER_ALARM};
use crate::errors::JobError;
use crate::events::EventKind;
use crate::ids::InstanceId;
use crate::jobs::lifecycle;
use crate::services::idempotency;

type PoolStep<'a, B> = Step<'a, B, PoolRecord>;

/// What the claim found to do.
enum Work {
    /// Process the queued event under `key`, as attempt `attempt`.
    Event {
        key: String,
        pending: Pending,
        attempt: u32,
    },
    /// The event under `key` used up its attempts without reporting back: dead-letter it.
    Abandoned {
        key: String,
        pending: Pending,
        attempts: u32,
    },
    /// The queue drained: run `on_empty`.
    Empty { processed: u64 },
}

/// Handles one alarm of a pool instance. The caller holds the execution guard.
pub(crate) async fn alarm<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &Arc<dyn ErasedWorkerPool>,
    instance: &InstanceId,
) -> Result<(), JobError> {
    for _ in 0..EXECUTIONS_PER_ALARM {
        match claim(engine, job.as_ref(), instance).await? {
            None => return Ok(()),
            Some(Work::Event {
                key,
                pending,
                attempt,
            }) => process(engine, job, instance, key, pending, attempt).await?,
            Some(Work::Abandoned {
                key,
                pending,
                attempts,
            }) => abandon(engine, job, instance, &key, pending, attempts).await?,
            Some(Work::Empty { processed }) => {
                run_on_empty(engine, job, instance, processed).await?;
                record_drained(engine, instance).await?;
            }
        }
    }
    Ok(())
}

/// Finds the head of the queue: the event waiting for its retry, else the first in order.
/// A claim that finds work writes nothing: the alarm that woke the instance stays set until
/// the outcome is recorded, so a crash meanwhile finds the work still scheduled.
async fn claim<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedWorkerPool,
    instance: &InstanceId,
) -> Result<Option<Work>, JobError> {
    let mut step: PoolStep<'_, B> = engine.alarm_step(instance, &[]).await?;
    if step.meta().is_none() || step.record().paused {
        step.finish().await?;
        return Ok(None);
    }
    match head(&step).await? {
        Some((key, pending)) => {
            let pool = step.record();
            let waiting = pool.current.as_deref() == Some(key.as_str())
                && pool.retry_at.is_some_and(|t| t > step.now());
            if waiting {
                step.finish().await?;
                return Ok(None);
            }
            start(step, job, key, pending).await.map(Some)
        }
        None => {
            if step.record().pending != 0 || step.record().current.is_some() {
                // The counters disagree with the queue (it is empty): trust the queue.
                let pool = step.record_mut();
                pool.pending = 0;
                pool.current = None;
                pool.retry_at = None;
            }
            let work = (!step.record().drained).then(|| Work::Empty {
                processed: step.record().processed,
            });
            if work.is_some() {
                step.leave_alarm();
            }
            step.finish().await?;
            Ok(work)
        }
    }
}

/// Decides the head's attempt number, and records it first where attempts are recorded at
/// their start.
async fn start<B: Storage + Clock>(
    mut step: PoolStep<'_, B>,
    job: &dyn ErasedWorkerPool,
    key: String,
    pending: Pending,
) -> Result<Work, JobError> {
    let started = match &step.record().started {
        Some(s) if s.key == key => s.attempt,
        _ => 0,
    };
    let attempt = lifecycle::next_attempt(pending.attempt, started);
    if lifecycle::is_beyond(&job.config().retry, attempt) {
        return Ok(Work::Abandoned {
            key,
            pending,
            attempts: attempt - 1,
        });
    }
    step.mark_running(key.clone());
    if step.engine().records_attempts_at_start() {
        let key = key.clone();
        step.record_mut().started = Some(StartedAttempt { key, attempt });
        step.leave_alarm();
        step.finish().await?;
    }
    Ok(Work::Event {
        key,
        pending,
        attempt,
    })
}

async fn head<B: Storage + Clock>(
    step: &PoolStep<'_, B>,
) -> Result<Option<(String, Pending)>, JobError> {
    if let Some(key) = &step.record().current {
        if let Some(pending) = step.read::<Pending>(key).await? {
            return Ok(Some((key.clone(), pending)));
        }
    }
    let first = step
        .list(ListOptions::prefix(QUEUE_PREFIX).limit(1))
        .await?;
    Ok(first.into_iter().next())
}

async fn run_on_empty<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &Arc<dyn ErasedWorkerPool>,
    instance: &InstanceId,
    processed: u64,
) -> Result<(), JobError> {
    let run = UserRun::new(instance, job.config().timeout);
    let owned_instance = instance.clone();
    let on_empty = engine.run_job(run, job, move |job| job.on_empty(owned_instance, processed));
    if let Err(error) = on_empty.await? {
        tracing::warn!(%instance, %error, "on_empty failed");
    }
    Ok(())
}

/// After `on_empty`: remembers that it ran, unless events arrived meanwhile.
async fn record_drained<B: Storage + Clock>(
    engine: &Engine<B>,
    instance: &InstanceId,
) -> Result<(), JobError> {
    let mut step: PoolStep<'_, B> = engine.alarm_step(instance, &[]).await?;
    if step.record().pending == 0 {
        step.record_mut().drained = true;
    }
    step.finish().await
}

async fn process<B: Storage + Clock>(
    engine: &Engine<B>,
    shared_job: &Arc<dyn ErasedWorkerPool>,
    instance: &InstanceId,
    key: String,
    pending: Pending,
    attempt: u32,
) -> Result<(), JobError> {
    let job = shared_job.as_ref();
    let final_attempt = !job.config().retry.retries_after(attempt);
    engine.report_when_durable(vec![engine.event(
        instance,
        EventKind::WorkerPoolProcessing {
            event_id: pending.event_id.clone(),
            attempt,
        },
    )]);
    let started = engine.now();
    let input = ProcessInput {
        event: pending.event.clone(),
        event_id: pending.event_id.clone(),
        sequence: pending.seq,
        attempt,
        final_attempt,
        enqueued_at: pending.enqueued_at,
        priority: pending.priority,
        instance: instance.clone(),
    };
    let run = UserRun::new(instance, job.config().timeout);
    let result = engine
        .run_job(run, shared_job, move |job| job.process(input))
        .await?
        .and_then(|r| r);

    let mut step: PoolStep<'_, B> = engine.alarm_step(instance, &[]).await?;
    step.record_mut().started = None;
    match result {
        Ok(()) => complete(&mut step, job, &key, &pending, started)?,
        Err(error) => fail(&mut step, job, &key, pending, attempt, error)?,
    }
    // One record per event becomes expirable here; sweeping a few keeps them bounded.
    step.sweep_ids(idempotency::SWEEP_LIMIT).await?;
    step.finish().await
}

/// Dead-letters an event whose attempts all ended without an outcome, without running it.
async fn abandon<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &Arc<dyn ErasedWorkerPool>,
    instance: &InstanceId,
    key: &str,
    pending: Pending,
    attempts: u32,
) -> Result<(), JobError> {
    let mut step: PoolStep<'_, B> = engine.alarm_step(instance, &[]).await?;
    step.record_mut().started = None;
    let error = lifecycle::ABANDONED.to_string();
    fail(&mut step, job.as_ref(), key, pending, attempts, error)?;
    step.finish().await
}

fn complete<B: Storage + Clock>(
    step: &mut PoolStep<'_, B>,
    job: &dyn ErasedWorkerPool,
    key: &str,
    pending: &Pending,
    started: i64,
) -> Result<(), JobError> {
    step.writes().delete(key);
    mark_done(step, job, &pending.event_id, pending.generated_id)?;
    let pool = step.record_mut();
    pool.pending = pool.pending.saturating_sub(1);
    pool.processed = pool.processed.saturating_add(1);
    if pool.current.as_deref() == Some(key) {
        pool.current = None;
        pool.retry_at = None;
    }
    let duration_ms = step.now() - started;
    step.emit(EventKind::WorkerPoolCompleted {
        event_id: pending.event_id.clone(),
        duration_ms,
    });
    Ok(())
}

/// A failed attempt: the event stays at the head for its retry, or, out of attempts, moves
/// to the dead-letter list.
fn fail<B: Storage + Clock>(
    step: &mut PoolStep<'_, B>,
    job: &dyn ErasedWorkerPool,
    key: &str,
    mut pending: Pending,
    attempt: u32,
    error: String,
) -> Result<(), JobError> {
    step.emit(EventKind::WorkerPoolFailed {
        event_id: pending.event_id.clone(),
        error: error.clone(),
        attempt,
    });
    if let Some(retry_at) = job
        .config()
        .retry
        .retry_at(attempt, &pending.event_id, step.now())
    {
        pending.attempt = attempt;
        pending.last_error = Some(error);
        step.put(key, &pending)?;
        let pool = step.record_mut();
        pool.current = Some(key.to_string());
        pool.retry_at = Some(retry_at);
        return Ok(());
    }
    tracing::warn!(instance = %step.instance(), event_id = %pending.event_id, %error, "event dead-lettered");
    let seq = step.record().next_dead_seq;
    let letter = DeadLetter {
        seq,
        event_id: pending.event_id.clone(),
        event: pending.event,
        priority: pending.priority,
        error: error.clone(),
        attempts: attempt,
        enqueued_at: pending.enqueued_at,
        dead_at: step.now(),
        generated_id: pending.generated_id,
    };
    let dkey = dead_key(seq);
    step.writes().delete(key);
    step.put(dkey.clone(), &letter)?;
    step.pin_id(&pending.event_id, &IdRecord::Dead { key: dkey }, None)?;
    let pool = step.record_mut();
    pool.next_dead_seq = pool.next_dead_seq.saturating_add(1);
    pool.dead = pool.dead.saturating_add(1);
    pool.pending = pool.pending.saturating_sub(1);
    pool.current = None;
    pool.retry_at = None;
    step.emit(EventKind::WorkerPoolDeadLettered {
        event_id: pending.event_id,
        error,
    });
    Ok(())
}

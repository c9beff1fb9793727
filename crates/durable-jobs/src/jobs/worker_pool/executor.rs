//! WorkerPool alarms: process the head of the queue, one event at a time, without holding
//! the lock while user code runs.

use super::erased::{ErasedWorkerPool, ProcessInput};
use super::{
    alarm_time, dead_key, DeadLetter, IdRecord, Pending, PoolRecord, POOL_KEY, QUEUE_PREFIX,
};
use crate::adapters::{Clock, ListOptions, Storage, WriteBatch};
use crate::engine::{Engine, EXECUTIONS_PER_ALARM};
use crate::errors::JobError;
use crate::events::EventKind;
use crate::retry::{hash_str, millis};
use crate::services::codec;
use crate::services::metadata::{Metadata, META_KEY};
use crate::services::{idempotency, schedule};

enum Work {
    Event { key: String, pending: Pending },
    Empty { processed: u64 },
}

/// Handles one alarm of a pool instance. The caller holds the execution guard.
pub(crate) async fn alarm<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedWorkerPool,
) -> Result<(), JobError> {
    for _ in 0..EXECUTIONS_PER_ALARM {
        let Some((meta, work)) = claim(engine).await? else {
            return Ok(());
        };
        match work {
            Work::Event { key, pending } => process(engine, job, meta, key, pending).await?,
            Work::Empty { processed } => {
                engine.before_user_code().await?;
                job.on_empty(meta.id.clone(), processed).await;
                let _lock = engine.lock.lock().await;
                let (meta, mut pool) = read(engine).await?;
                let mut batch = WriteBatch::new();
                if pool.pending == 0 {
                    pool.drained = true;
                    batch.put(POOL_KEY, codec::encode(&pool)?);
                }
                schedule::reconcile(&mut batch, None, alarm_time(meta.as_ref(), &pool), true);
                engine.commit(batch, Vec::new()).await?;
            }
        }
    }
    Ok(())
}

async fn read<B: Storage>(engine: &Engine<B>) -> Result<(Option<Metadata>, PoolRecord), JobError> {
    let found = engine.backend.get_many(&[META_KEY, POOL_KEY]).await?;
    let meta = codec::decode_opt(META_KEY, found[0].as_ref())?;
    let pool = codec::decode_opt(POOL_KEY, found[1].as_ref())?.unwrap_or_default();
    Ok((meta, pool))
}

async fn claim<B: Storage + Clock>(
    engine: &Engine<B>,
) -> Result<Option<(Metadata, Work)>, JobError> {
    let _lock = engine.lock.lock().await;
    let (meta, mut pool) = read(engine).await?;
    let now = engine.now();
    let mut batch = WriteBatch::new();
    let Some(meta) = meta.filter(|_| !pool.paused) else {
        schedule::reconcile(&mut batch, None, None, true);
        engine.commit(batch, Vec::new()).await?;
        return Ok(None);
    };
    let head = match &pool.current {
        Some(key) => codec::read::<Pending, _>(&engine.backend, key)
            .await?
            .map(|p| (key.clone(), p)),
        None => None,
    };
    let head = match head {
        Some(h) => Some(h),
        None => {
            let first = engine
                .backend
                .list(ListOptions::prefix(QUEUE_PREFIX).limit(1))
                .await?;
            match first.into_iter().next() {
                Some((key, bytes)) => Some((key.clone(), codec::decode::<Pending>(&key, &bytes)?)),
                None => None,
            }
        }
    };
    match head {
        None => {
            if pool.pending != 0 || pool.current.is_some() {
                // Counters disagree with the queue (it is empty): trust the queue.
                pool.pending = 0;
                pool.current = None;
                pool.retry_at = None;
                batch.put(POOL_KEY, codec::encode(&pool)?);
            }
            if !pool.drained {
                engine.commit(batch, Vec::new()).await?;
                return Ok(Some((
                    meta,
                    Work::Empty {
                        processed: pool.processed,
                    },
                )));
            }
            schedule::reconcile(&mut batch, None, alarm_time(Some(&meta), &pool), true);
            engine.commit(batch, Vec::new()).await?;
            Ok(None)
        }
        Some((key, pending)) => {
            if pool.current.as_deref() == Some(key.as_str())
                && pool.retry_at.is_some_and(|t| t > now)
            {
                schedule::reconcile(&mut batch, None, alarm_time(Some(&meta), &pool), true);
                engine.commit(batch, Vec::new()).await?;
                return Ok(None);
            }
            engine.commit(batch, Vec::new()).await?;
            Ok(Some((meta, Work::Event { key, pending })))
        }
    }
}

async fn process<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedWorkerPool,
    meta: Metadata,
    key: String,
    pending: Pending,
) -> Result<(), JobError> {
    let config = job.config();
    let attempt = pending.attempt + 1;
    let final_attempt = !config.retry.retries_after(attempt);
    let instance = meta.id.clone();
    engine.before_user_code().await?;
    engine.report_when_durable(vec![engine.event(
        &instance,
        EventKind::WorkerPoolProcessing {
            event_id: pending.event_id.clone(),
            attempt,
        },
    )]);
    *engine.running.borrow_mut() = Some(key.clone());
    let started = engine.now();
    let result = job
        .process(ProcessInput {
            event: pending.event.clone(),
            event_id: pending.event_id.clone(),
            sequence: pending.seq,
            attempt,
            final_attempt,
            enqueued_at: pending.enqueued_at,
            priority: pending.priority,
            instance: instance.clone(),
        })
        .await;

    let _lock = engine.lock.lock().await;
    *engine.running.borrow_mut() = None;
    let (meta, mut pool) = read(engine).await?;
    let now = engine.now();
    let mut batch = WriteBatch::new();
    let mut events = Vec::new();
    match result {
        Ok(()) => {
            let expires = now.saturating_add(config.retention_ms);
            batch.delete(key.clone());
            idempotency::put(
                &mut batch,
                &pending.event_id,
                &IdRecord::Done { expires },
                expires,
                None,
            )?;
            pool.pending = pool.pending.saturating_sub(1);
            pool.processed += 1;
            if pool.current.as_deref() == Some(key.as_str()) {
                pool.current = None;
                pool.retry_at = None;
            }
            events.push(engine.event(
                &instance,
                EventKind::WorkerPoolCompleted {
                    event_id: pending.event_id.clone(),
                    duration_ms: now - started,
                },
            ));
        }
        Err(error) => {
            events.push(engine.event(
                &instance,
                EventKind::WorkerPoolFailed {
                    event_id: pending.event_id.clone(),
                    error: error.clone(),
                    attempt,
                },
            ));
            if final_attempt {
                tracing::warn!(instance = %instance, event_id = %pending.event_id, %error, "event dead-lettered");
                let seq = pool.next_dead_seq;
                let dkey = dead_key(seq);
                let letter = DeadLetter {
                    seq,
                    event_id: pending.event_id.clone(),
                    event: pending.event.clone(),
                    priority: pending.priority,
                    error: error.clone(),
                    attempts: attempt,
                    enqueued_at: pending.enqueued_at,
                    dead_at: now,
                };
                batch.delete(key.clone());
                batch.put(dkey.clone(), codec::encode(&letter)?);
                idempotency::put_pinned(
                    &mut batch,
                    &pending.event_id,
                    &IdRecord::Dead { key: dkey },
                )?;
                pool.next_dead_seq += 1;
                pool.dead += 1;
                pool.pending = pool.pending.saturating_sub(1);
                pool.current = None;
                pool.retry_at = None;
                events.push(engine.event(
                    &instance,
                    EventKind::WorkerPoolDeadLettered {
                        event_id: pending.event_id.clone(),
                        error,
                    },
                ));
            } else {
                let delay = config.retry.delay(attempt, hash_str(&pending.event_id));
                let mut retried = pending.clone();
                retried.attempt = attempt;
                retried.last_error = Some(error);
                batch.put(key.clone(), codec::encode(&retried)?);
                pool.current = Some(key.clone());
                pool.retry_at = Some(now.saturating_add(millis(delay)));
            }
        }
    }
    // One record per event becomes expirable here; sweeping a few keeps them bounded.
    idempotency::sweep(&engine.backend, &mut batch, now, idempotency::SWEEP_LIMIT).await?;
    batch.put(POOL_KEY, codec::encode(&pool)?);
    schedule::reconcile(&mut batch, None, alarm_time(meta.as_ref(), &pool), true);
    engine.commit(batch, events).await
}

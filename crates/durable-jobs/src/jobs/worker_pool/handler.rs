//! WorkerPool requests: enqueue, pause, resume, cancel, status, dead letters.

use super::erased::ErasedWorkerPool;
use super::{
    alarm_time, dead_key, queue_key, DeadLetter, IdRecord, Pending, PoolInstanceStatus, PoolRecord,
    DEAD_PREFIX, POOL_KEY,
};
use crate::adapters::{Clock, ListOptions, Storage, WriteBatch};
use crate::engine::Engine;
use crate::errors::JobError;
use crate::events::EventKind;
use crate::ids::InstanceId;
use crate::services::codec;
use crate::services::metadata::{Metadata, Status, META_KEY};
use crate::services::{idempotency, schedule};
use crate::wire::{Operation, Response};

/// Dead letters replayed or discarded by one request at most.
const DEAD_LETTERS_PER_REQUEST: usize = 1000;

pub(crate) async fn handle<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedWorkerPool,
    instance: &InstanceId,
    op: Operation,
) -> Result<Response, JobError> {
    let index = instance
        .pool_index()
        .filter(|i| *i < job.config().concurrency)
        .ok_or_else(|| {
            JobError::bad_request(format!(
                "`{}` is not an instance index of pool `{}` (concurrency {})",
                instance.key,
                instance.name,
                job.config().concurrency
            ))
        })?;
    let id_key = match &op {
        Operation::WorkerPoolEnqueue {
            event_id: Some(id), ..
        }
        | Operation::WorkerPoolCancel { event_id: id } => Some(idempotency::record_key(id)),
        _ => None,
    };
    let mut keys = vec![META_KEY, POOL_KEY];
    if let Some(k) = &id_key {
        keys.push(k);
    }
    let found = engine.backend.get_many(&keys).await?;
    let meta: Option<Metadata> = codec::decode_opt(META_KEY, found[0].as_ref())?;
    let mut pool: PoolRecord =
        codec::decode_opt(POOL_KEY, found[1].as_ref())?.unwrap_or_else(|| PoolRecord {
            drained: true,
            ..PoolRecord::default()
        });
    let id_record: Option<IdRecord> = match (&id_key, found.get(2)) {
        (Some(k), Some(bytes)) => codec::decode_opt(k, bytes.as_ref())?,
        _ => None,
    };
    let now = engine.now();
    let before = alarm_time(meta.as_ref(), &pool);
    let mut batch = WriteBatch::new();
    let meta = match meta {
        Some(m) => m,
        None if matches!(
            op,
            Operation::WorkerPoolEnqueue { .. } | Operation::WorkerPoolPause
        ) =>
        {
            let m = Metadata::new(instance.clone(), now);
            batch.put(META_KEY, codec::encode(&m)?);
            m
        }
        None => Metadata::new(instance.clone(), now),
    };

    match op {
        Operation::WorkerPoolEnqueue {
            event,
            event_id,
            priority,
        } => {
            if let (Some(id), Some(_)) = (&event_id, &id_record) {
                return Ok(Response::Enqueued {
                    event_id: id.clone(),
                    instance_index: index,
                    position: pool.pending,
                    duplicate: true,
                });
            }
            job.check_event(&event)?;
            let seq = pool.next_seq;
            let event_id = event_id.unwrap_or_else(|| format!("auto-{index}-{seq}"));
            let key = queue_key(priority, seq);
            let pending = Pending {
                event_id: event_id.clone(),
                event,
                priority,
                seq,
                enqueued_at: now,
                attempt: 0,
                last_error: None,
            };
            batch.put(key.clone(), codec::encode(&pending)?);
            idempotency::put_pinned(&mut batch, &event_id, &IdRecord::Queued { key })?;
            pool.next_seq += 1;
            pool.pending += 1;
            pool.drained = false;
            batch.put(POOL_KEY, codec::encode(&pool)?);
            schedule::reconcile(&mut batch, before, alarm_time(Some(&meta), &pool), false);
            let ev = engine.event(
                instance,
                EventKind::WorkerPoolEnqueued {
                    event_id: event_id.clone(),
                    position: pool.pending,
                },
            );
            engine.commit(batch, vec![ev]).await?;
            Ok(Response::Enqueued {
                event_id,
                instance_index: index,
                position: pool.pending,
                duplicate: false,
            })
        }
        Operation::WorkerPoolPause | Operation::WorkerPoolResume => {
            let pausing = matches!(op, Operation::WorkerPoolPause);
            if pool.paused != pausing {
                let mut meta = meta;
                pool.paused = pausing;
                let status = if pausing {
                    Status::Paused { paused_at: now }
                } else {
                    Status::Active
                };
                meta.set_status(status, now);
                batch.put(META_KEY, codec::encode(&meta)?);
                batch.put(POOL_KEY, codec::encode(&pool)?);
                schedule::reconcile(&mut batch, before, alarm_time(Some(&meta), &pool), false);
                let kind = if pausing {
                    EventKind::WorkerPoolPaused
                } else {
                    EventKind::WorkerPoolResumed
                };
                let ev = engine.event(instance, kind);
                engine.commit(batch, vec![ev]).await?;
            }
            Ok(if pausing {
                Response::Paused
            } else {
                Response::Resumed
            })
        }
        Operation::WorkerPoolCancel { event_id } => {
            let Some(IdRecord::Queued { key }) = id_record else {
                return Ok(Response::Cancelled { cancelled: false });
            };
            if engine.running.borrow().as_deref() == Some(key.as_str()) {
                return Ok(Response::Cancelled { cancelled: false });
            }
            if pool.current.as_deref() == Some(key.as_str()) {
                pool.current = None;
                pool.retry_at = None;
            }
            let expires = now.saturating_add(job.config().retention_ms);
            batch.delete(key);
            idempotency::put(
                &mut batch,
                &event_id,
                &IdRecord::Done { expires },
                expires,
                None,
            )?;
            pool.pending = pool.pending.saturating_sub(1);
            batch.put(POOL_KEY, codec::encode(&pool)?);
            schedule::reconcile(&mut batch, before, alarm_time(Some(&meta), &pool), false);
            let ev = engine.event(instance, EventKind::WorkerPoolCancelled { event_id });
            engine.commit(batch, vec![ev]).await?;
            Ok(Response::Cancelled { cancelled: true })
        }
        Operation::WorkerPoolStatus => {
            let retrying = match &pool.current {
                Some(key) => codec::read::<Pending, _>(&engine.backend, key)
                    .await?
                    .map(|p| p.event_id),
                None => None,
            };
            Ok(Response::WorkerPoolStatus {
                status: PoolInstanceStatus {
                    index,
                    status: meta.status,
                    pending: pool.pending,
                    processed: pool.processed,
                    dead_letters: pool.dead,
                    retrying,
                    retry_at: pool.retry_at,
                },
            })
        }
        Operation::WorkerPoolDeadLetters { after, limit } => {
            let start = after.map(|s| dead_key(s.saturating_add(1)));
            let mut options = ListOptions::prefix(DEAD_PREFIX).limit(limit.clamp(1, 1000) as usize);
            if let Some(s) = &start {
                options = options.start(s);
            }
            let mut items = Vec::new();
            for (key, bytes) in engine.backend.list(options).await? {
                items.push(codec::decode::<DeadLetter>(&key, &bytes)?);
            }
            Ok(Response::DeadLetters { items })
        }
        Operation::WorkerPoolReplay { event_ids } => {
            change_dead_letters(engine, job, &meta, pool, before, batch, event_ids, true).await
        }
        Operation::WorkerPoolDiscard { event_ids } => {
            change_dead_letters(engine, job, &meta, pool, before, batch, event_ids, false).await
        }
        other => Err(JobError::bad_request(format!(
            "operation {:?} does not apply to a worker pool",
            other.kind()
        ))),
    }
}

/// Replays dead letters into the queue (with fresh attempts, at the back of their
/// priority), or discards them.
#[allow(clippy::too_many_arguments)]
async fn change_dead_letters<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedWorkerPool,
    meta: &Metadata,
    mut pool: PoolRecord,
    before: Option<i64>,
    mut batch: WriteBatch,
    event_ids: Option<Vec<String>>,
    replay: bool,
) -> Result<Response, JobError> {
    let now = engine.now();
    let mut letters: Vec<(String, DeadLetter)> = Vec::new();
    match event_ids {
        None => {
            let options = ListOptions::prefix(DEAD_PREFIX).limit(DEAD_LETTERS_PER_REQUEST);
            for (key, bytes) in engine.backend.list(options).await? {
                let letter = codec::decode(&key, &bytes)?;
                letters.push((key, letter));
            }
        }
        Some(ids) => {
            for id in ids.iter().take(DEAD_LETTERS_PER_REQUEST) {
                let record: Option<IdRecord> = idempotency::get(&engine.backend, id).await?;
                if let Some(IdRecord::Dead { key }) = record {
                    if let Some(letter) =
                        codec::read::<DeadLetter, _>(&engine.backend, &key).await?
                    {
                        letters.push((key, letter));
                    }
                }
            }
        }
    }
    let count = letters.len() as u32;
    for (key, letter) in letters {
        batch.delete(key);
        pool.dead = pool.dead.saturating_sub(1);
        if replay {
            let seq = pool.next_seq;
            pool.next_seq += 1;
            pool.pending += 1;
            pool.drained = false;
            let qkey = queue_key(letter.priority, seq);
            let pending = Pending {
                event_id: letter.event_id.clone(),
                event: letter.event,
                priority: letter.priority,
                seq,
                enqueued_at: letter.enqueued_at,
                attempt: 0,
                last_error: None,
            };
            batch.put(qkey.clone(), codec::encode(&pending)?);
            idempotency::put_pinned(
                &mut batch,
                &letter.event_id,
                &IdRecord::Queued { key: qkey },
            )?;
        } else {
            let expires = now.saturating_add(job.config().retention_ms);
            idempotency::put(
                &mut batch,
                &letter.event_id,
                &IdRecord::Done { expires },
                expires,
                None,
            )?;
        }
    }
    if count > 0 {
        batch.put(POOL_KEY, codec::encode(&pool)?);
        schedule::reconcile(&mut batch, before, alarm_time(Some(meta), &pool), false);
        engine.commit(batch, Vec::new()).await?;
    }
    Ok(Response::DeadLettersChanged { count })
}

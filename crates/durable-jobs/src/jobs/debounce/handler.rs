//! Debounce requests: add, flush, clear, status, get_state, failed_batches.

use serde_json::Value;

use super::erased::ErasedDebounce;
use super::{
    alarm_time, failed_key, Batch, DebounceStatus, FailedBatch, Record, FAILED_PREFIX, RECORD_KEY,
};
use crate::adapters::{Clock, ListOptions, Storage, WriteBatch};
use crate::engine::Engine;
use crate::errors::JobError;
use crate::events::{EventKind, FlushReason};
use crate::ids::InstanceId;
use crate::services::codec;
use crate::services::metadata::{Metadata, Status, META_KEY};
use crate::services::{idempotency, purge, schedule};
use crate::wire::{Operation, Response};

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
    let idem_key = match &op {
        Operation::DebounceAdd {
            event_id: Some(id), ..
        } => Some(idempotency::record_key(id)),
        _ => None,
    };
    let mut keys = vec![META_KEY, RECORD_KEY];
    if let Some(k) = &idem_key {
        keys.push(k);
    }
    let found = engine.backend.get_many(&keys).await?;
    let meta: Option<Metadata> = codec::decode_opt(META_KEY, found[0].as_ref())?;
    let mut rec: Record = codec::decode_opt(RECORD_KEY, found[1].as_ref())?.unwrap_or_default();
    let seen = found.get(2).is_some_and(Option::is_some);
    let now = engine.now();
    let before = alarm_time(meta.as_ref(), &rec);
    let config = job.config();

    match op {
        Operation::DebounceAdd { event, event_id } => {
            if seen {
                return Ok(Response::Added {
                    event_count: rec.batch.as_ref().map_or(0, |b| b.event_count),
                    duplicate: true,
                    flush_at: rec.batch.as_ref().map(|b| b.flush_at),
                });
            }
            let state = job.reduce(rec.batch.as_ref().map(|b| &b.state), &event)?;
            let mut batch = WriteBatch::new();
            let mut meta = match meta {
                Some(mut m) if m.purge_at.is_some() => {
                    purge::cancel(&mut m);
                    batch.put(META_KEY, codec::encode(&m)?);
                    m
                }
                Some(m) => m,
                None => {
                    let m = Metadata::new(instance.clone(), now);
                    batch.put(META_KEY, codec::encode(&m)?);
                    m
                }
            };
            meta.id = instance.clone();
            let pending = rec.batch.get_or_insert_with(|| Batch {
                state: Value::Null,
                event_count: 0,
                started_at: now,
                flush_at: now.saturating_add(config.flush_after_ms),
                forced: None,
            });
            pending.state = state;
            pending.event_count += 1;
            if config.max_events.is_some_and(|m| pending.event_count >= m)
                && pending.forced.is_none()
            {
                pending.forced = Some(FlushReason::MaxEvents);
            }
            let (event_count, flush_at) = (pending.event_count, pending.flush_at);
            if let Some(id) = &event_id {
                let expires = now.saturating_add(config.retention_ms);
                idempotency::put(&mut batch, id, &Seen { at: now }, expires, None)?;
            }
            batch.put(RECORD_KEY, codec::encode(&rec)?);
            schedule::reconcile(&mut batch, before, alarm_time(Some(&meta), &rec), false);
            let ev = engine.event(
                instance,
                EventKind::DebounceEventReceived {
                    event_id,
                    event_count,
                },
            );
            engine.commit(batch, vec![ev]).await?;
            Ok(Response::Added {
                event_count,
                duplicate: false,
                flush_at: Some(flush_at),
            })
        }
        Operation::DebounceFlush => {
            let Some(meta) = meta else {
                return Ok(Response::FlushRequested {
                    event_count: 0,
                    retried_batches: 0,
                });
            };
            let event_count = match rec.batch.as_mut() {
                Some(b) => {
                    b.forced.get_or_insert(FlushReason::Manual);
                    b.event_count
                }
                None => 0,
            };
            let retried_batches = rec.failed_count;
            rec.retry_failed = rec.failed_count > 0;
            let mut batch = WriteBatch::new();
            batch.put(RECORD_KEY, codec::encode(&rec)?);
            schedule::reconcile(&mut batch, before, alarm_time(Some(&meta), &rec), false);
            engine.commit(batch, Vec::new()).await?;
            Ok(Response::FlushRequested {
                event_count,
                retried_batches,
            })
        }
        Operation::DebounceClear => {
            let Some(mut meta) = meta else {
                return Ok(Response::Cleared { discarded: 0 });
            };
            let mut batch = WriteBatch::new();
            let mut discarded = rec.batch.take().map_or(0, |b| b.event_count);
            for (key, bytes) in engine
                .backend
                .list(ListOptions::prefix(FAILED_PREFIX))
                .await?
            {
                let failed: FailedBatch = codec::decode(&key, &bytes)?;
                discarded += failed.event_count;
                batch.delete(key);
            }
            rec.failed_count = 0;
            rec.retry_failed = false;
            // A batch waiting for its retry is dropped too; one running now finishes.
            if rec.inflight.as_ref().is_some_and(|i| i.retry_at.is_some()) && !engine.is_executing()
            {
                discarded += rec.inflight.take().map_or(0, |i| i.batch.event_count);
            }
            if rec.is_idle() {
                meta.set_status(Status::Active, now);
                purge::schedule(&mut meta, now, config.retention_ms);
                batch.put(META_KEY, codec::encode(&meta)?);
            }
            batch.put(RECORD_KEY, codec::encode(&rec)?);
            schedule::reconcile(&mut batch, before, alarm_time(Some(&meta), &rec), false);
            let ev = engine.event(
                instance,
                EventKind::DebounceCleared {
                    discarded_events: discarded,
                },
            );
            engine.commit(batch, vec![ev]).await?;
            Ok(Response::Cleared { discarded })
        }
        Operation::DebounceStatus => {
            let status = meta.map(|m| DebounceStatus {
                status: m.status,
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
            Ok(Response::DebounceStatus { status })
        }
        Operation::DebounceGetState => Ok(Response::State {
            state: rec.batch.map(|b| b.state),
        }),
        Operation::DebounceFailedBatches => {
            let mut batches = Vec::new();
            for (key, bytes) in engine
                .backend
                .list(ListOptions::prefix(FAILED_PREFIX))
                .await?
            {
                batches.push(codec::decode::<FailedBatch>(&key, &bytes)?);
            }
            Ok(Response::FailedBatches { batches })
        }
        other => Err(JobError::bad_request(format!(
            "operation {:?} does not apply to a debounce job",
            other.kind()
        ))),
    }
}

/// Writes a failed batch.
pub(crate) fn put_failed(batch: &mut WriteBatch, failed: &FailedBatch) -> Result<(), JobError> {
    batch.put(failed_key(failed.seq), codec::encode(failed)?);
    Ok(())
}

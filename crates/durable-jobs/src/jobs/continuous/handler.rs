//! Continuous requests: start, stop, trigger, status, get_state. None runs user code.

use serde_json::Value;

use super::erased::ErasedContinuous;
use super::{alarm_time, ContinuousStatus, Record, RECORD_KEY, STATE_KEY};
use crate::adapters::{Clock, Storage, WriteBatch};
use crate::engine::Engine;
use crate::errors::JobError;
use crate::events::EventKind;
use crate::ids::InstanceId;
use crate::services::codec;
use crate::services::metadata::{Metadata, Status, StatusName, META_KEY};
use crate::services::{purge, schedule};
use crate::wire::{Operation, Response};

pub(crate) async fn handle<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedContinuous,
    instance: &InstanceId,
    op: Operation,
) -> Result<Response, JobError> {
    let found = engine.backend.get_many(&[META_KEY, RECORD_KEY]).await?;
    let meta: Option<Metadata> = codec::decode_opt(META_KEY, found[0].as_ref())?;
    let rec: Option<Record> = codec::decode_opt(RECORD_KEY, found[1].as_ref())?;
    let now = engine.now();
    let before = alarm_time(meta.as_ref(), rec.as_ref());

    match op {
        Operation::ContinuousStart { state } => {
            if meta.as_ref().is_some_and(|m| !m.status.is_stopped()) {
                return Ok(Response::Started { created: false });
            }
            let state = job.check_state(&state)?;
            let config = job.config();
            let mut meta = match meta {
                Some(mut m) => {
                    m.epoch += 1;
                    m.set_status(Status::Active, now);
                    purge::cancel(&mut m);
                    m
                }
                None => Metadata::new(instance.clone(), now),
            };
            meta.id = instance.clone();
            let next_run_at = if config.start_immediately {
                Some(now)
            } else {
                config.schedule.first_after(now)
            };
            let rec = Record {
                next_run_at,
                ..Record::default()
            };
            let mut batch = WriteBatch::new();
            batch
                .put(META_KEY, codec::encode(&meta)?)
                .put(STATE_KEY, state)
                .put(RECORD_KEY, codec::encode(&rec)?);
            schedule::reconcile(
                &mut batch,
                before,
                alarm_time(Some(&meta), Some(&rec)),
                true,
            );
            let mut events = vec![engine.event(instance, EventKind::ContinuousStarted)];
            if let Some(next_run_at) = next_run_at {
                events.push(engine.event(instance, EventKind::ContinuousScheduled { next_run_at }));
            }
            engine.commit(batch, events).await?;
            Ok(Response::Started { created: true })
        }
        Operation::ContinuousStop { reason } => {
            let Some(mut meta) = meta.filter(|m| !m.status.is_stopped()) else {
                return Ok(Response::Stopped { stopped: false });
            };
            meta.set_status(
                Status::Stopped {
                    stopped_at: now,
                    reason: reason.clone(),
                },
                now,
            );
            purge::schedule(&mut meta, now, job.config().retention_ms);
            let mut batch = WriteBatch::new();
            batch
                .put(META_KEY, codec::encode(&meta)?)
                .delete(STATE_KEY)
                .delete(RECORD_KEY);
            schedule::reconcile(&mut batch, before, alarm_time(Some(&meta), None), false);
            let event = engine.event(instance, EventKind::ContinuousStopped { reason });
            engine.commit(batch, vec![event]).await?;
            Ok(Response::Stopped { stopped: true })
        }
        Operation::ContinuousTrigger => {
            let meta = meta.ok_or_else(|| not_found(instance))?;
            if meta.status.is_stopped() {
                return Err(JobError::InvalidState {
                    operation: "trigger".into(),
                    expected: StatusName::Active,
                    actual: meta.status.name(),
                });
            }
            let mut rec = rec.unwrap_or_default();
            if rec.trigger_at.is_none() {
                rec.trigger_at = Some(now);
                let mut batch = WriteBatch::new();
                batch.put(RECORD_KEY, codec::encode(&rec)?);
                schedule::reconcile(
                    &mut batch,
                    before,
                    alarm_time(Some(&meta), Some(&rec)),
                    false,
                );
                engine.commit(batch, Vec::new()).await?;
            }
            Ok(Response::Triggered)
        }
        Operation::ContinuousStatus => {
            let status = meta.map(|m| {
                let rec = rec.unwrap_or_default();
                ContinuousStatus {
                    status: m.status,
                    run_count: rec.run_count,
                    next_run_at: rec.next_run_at,
                    last_run_at: rec.last_run_at,
                    retry_at: rec.retry_at,
                    last_error: rec.last_error,
                    created_at: m.created_at,
                    updated_at: m.updated_at,
                    purge_at: m.purge_at,
                }
            });
            Ok(Response::ContinuousStatus { status })
        }
        Operation::ContinuousGetState => {
            if meta.is_none_or(|m| m.status.is_stopped()) {
                return Ok(Response::State { state: None });
            }
            let state = match engine.backend.get(STATE_KEY).await? {
                Some(bytes) => Some(codec::decode::<Value>(STATE_KEY, &bytes)?),
                None => None,
            };
            Ok(Response::State { state })
        }
        other => Err(JobError::bad_request(format!(
            "operation {:?} does not apply to a continuous job",
            other.kind()
        ))),
    }
}

fn not_found(instance: &InstanceId) -> JobError {
    JobError::InstanceNotFound {
        kind: instance.kind,
        name: instance.name.clone(),
        key: instance.key.clone(),
    }
}

//! Task requests: send, trigger, terminate, status, get_state. Only `send` runs user code:
//! `on_event` (and `on_idle`), which are synchronous and do no I/O.

use serde_json::Value;

use super::decide::{self, TaskStep};
use super::erased::{ErasedTask, HookInput};
use super::{Record, ScheduledBy, TaskPhase, TaskStatus, STATE_KEY};
use crate::adapters::{Clock, Storage};
use crate::engine::Engine;
use crate::errors::JobError;
use crate::events::EventKind;
use crate::ids::{InstanceId, JobKind};
use crate::services::idempotency;
use crate::services::metadata::{Metadata, Status};
use crate::wire::{Operation, Response};

/// What the idempotency record of a task's event id holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Seen {
    at: i64,
    expires: i64,
    /// The epoch of the task that took the event: a task terminated and created again
    /// before its purge still holds the ids of its earlier life, which must not count.
    #[serde(default)]
    epoch: u64,
}

pub(crate) async fn handle<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedTask,
    instance: &InstanceId,
    op: Operation,
) -> Result<Response, JobError> {
    match op {
        Operation::TaskSend { event, event_id } => {
            let id_key = event_id.as_deref().map(idempotency::record_key);
            let mut extra = vec![STATE_KEY];
            extra.extend(id_key.as_deref());
            let step = engine.step(instance, &extra).await?;
            send(step, job, &event, event_id).await
        }
        op => {
            let step = engine.step(instance, &[]).await?;
            match op {
                Operation::TaskTrigger => trigger(step).await,
                Operation::TaskTerminate => terminate(step).await,
                Operation::TaskStatus => Ok(status(&step)),
                Operation::TaskGetState => get_state(&step).await,
                other => Err(JobError::wrong_kind(&other, JobKind::Task)),
            }
        }
    }
}

/// Whether the task exists: created and not terminated.
fn is_live(meta: Option<&Metadata>) -> bool {
    meta.is_some_and(|m| !m.status.is_stopped())
}

/// Lets `on_event` decide, creating the task on its first event (or again after it was
/// terminated, under a new epoch so that a late result of an execution from before is
/// recognised).
async fn send<B: Storage + Clock>(
    mut step: TaskStep<'_, B>,
    job: &dyn ErasedTask,
    event: &Value,
    event_id: Option<String>,
) -> Result<Response, JobError> {
    let now = step.now();
    let retention_ms = job.config().retention_ms;
    let live = is_live(step.meta());
    let epoch = step.meta().map_or(0, |m| m.epoch);
    let seen = match &event_id {
        Some(id) => step.extra::<Seen>(1, &idempotency::record_key(id))?,
        None => None,
    };
    let counts = seen
        .as_ref()
        .is_some_and(|s| s.epoch == epoch && s.expires > now);
    let seen = seen.map(|s| s.expires);
    if live && counts {
        return Ok(Response::TaskSent {
            created: false,
            duplicate: true,
            next_run_at: step.record().due_at(),
        });
    }
    let state = if live { step.take_extra(0) } else { None };
    let input = HookInput {
        instance: step.instance().clone(),
        state: state.clone(),
        next_run_at: if live {
            step.record().next_run_at
        } else {
            None
        },
        now,
    };
    let applied = job.event(input, event)?;
    if !live {
        create(&mut step, now);
    }
    let event_count = {
        let rec = step.record_mut();
        rec.event_count = rec.event_count.saturating_add(1);
        rec.event_count
    };
    step.emit(EventKind::TaskEventReceived {
        event_id: event_id.clone(),
        event_count,
    });
    decide::apply(&mut step, job, applied, ScheduledBy::Event, state);
    let alive = is_live(step.meta());
    if let (Some(id), true) = (&event_id, alive) {
        let expires = now.saturating_add(retention_ms);
        let epoch = step.meta().map_or(0, |m| m.epoch);
        let record = Seen {
            at: now,
            expires,
            epoch,
        };
        step.remember_id(id, &record, expires, seen)?;
    }
    let next_run_at = if alive { step.record().due_at() } else { None };
    step.finish().await?;
    Ok(Response::TaskSent {
        created: !live,
        duplicate: false,
        next_run_at,
    })
}

fn create<B: Storage + Clock>(step: &mut TaskStep<'_, B>, now: i64) {
    let meta = match step.meta().cloned() {
        Some(mut meta) => {
            meta.epoch = meta.epoch.saturating_add(1);
            meta.set_status(Status::Active, now);
            meta.purge_at = None;
            meta.created_at = now;
            meta
        }
        None => Metadata::new(step.instance().clone(), now),
    };
    step.set_meta(meta);
    step.set_record(Record::default());
}

/// Sets the timer to now: the task runs at once, through the alarm.
async fn trigger<B: Storage + Clock>(mut step: TaskStep<'_, B>) -> Result<Response, JobError> {
    if !is_live(step.meta()) {
        return Err(JobError::instance_not_found(step.instance()));
    }
    let now = step.now();
    decide::set_timer(&mut step, Some(now), ScheduledBy::Trigger);
    step.change_meta(crate::services::purge::cancel);
    step.finish().await?;
    Ok(Response::Triggered)
}

async fn terminate<B: Storage + Clock>(mut step: TaskStep<'_, B>) -> Result<Response, JobError> {
    if !is_live(step.meta()) {
        return Ok(Response::Terminated { terminated: false });
    }
    decide::terminate(&mut step);
    step.finish().await?;
    Ok(Response::Terminated { terminated: true })
}

fn status<B: Storage + Clock>(step: &TaskStep<'_, B>) -> Response {
    let status = step.meta().filter(|m| !m.status.is_stopped()).map(|m| {
        let rec = step.record().clone();
        TaskStatus {
            phase: if rec.is_idle() {
                TaskPhase::Idle
            } else {
                TaskPhase::Scheduled
            },
            status: m.status.clone(),
            event_count: rec.event_count,
            execution_count: rec.execution_count,
            next_run_at: rec.next_run_at,
            retry_at: rec.retry_at,
            last_run_at: rec.last_run_at,
            last_error: rec.last_error,
            created_at: m.created_at,
            purge_at: m.purge_at,
            overdue_since: step.engine().overdue_since(),
        }
    });
    Response::TaskStatus { status }
}

async fn get_state<B: Storage + Clock>(step: &TaskStep<'_, B>) -> Result<Response, JobError> {
    if !is_live(step.meta()) {
        return Ok(Response::State { state: None });
    }
    let state = step.read::<Value>(STATE_KEY).await?;
    Ok(Response::State { state })
}

//! Continuous requests: start, stop, trigger, status, get_state. None runs user code.

use serde_json::Value;

use super::erased::ErasedContinuous;
use super::{ContinuousStatus, Record, STATE_KEY};
use crate::adapters::{Clock, Storage};
use crate::engine::{Engine, Step};
use crate::errors::JobError;
use crate::events::EventKind;
use crate::ids::{InstanceId, JobKind};
use crate::jobs::lifecycle;
use crate::services::metadata::{Metadata, Status, StatusName};
use crate::services::purge;
use crate::wire::{Operation, Response};

type ContinuousStep<'a, B> = Step<'a, B, Record>;

pub(crate) async fn handle<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedContinuous,
    instance: &InstanceId,
    op: Operation,
) -> Result<Response, JobError> {
    let step = engine.step(instance, &[]).await?;
    match op {
        Operation::ContinuousStart { state } => start(step, job, &state).await,
        Operation::ContinuousStop { reason } => stop(step, job, reason).await,
        Operation::ContinuousTrigger => trigger(step).await,
        Operation::ContinuousStatus => Ok(status(&step)),
        Operation::ContinuousGetState => get_state(&step).await,
        other => Err(JobError::wrong_kind(&other, JobKind::Continuous)),
    }
}

/// Creates the instance, or starts a stopped one again under a new epoch so that a late
/// result of a run from before the stop is recognised.
async fn start<B: Storage + Clock>(
    mut step: ContinuousStep<'_, B>,
    job: &dyn ErasedContinuous,
    state: &Value,
) -> Result<Response, JobError> {
    if step.meta().is_some_and(|m| !m.status.is_stopped()) {
        return Ok(Response::Started { created: false });
    }
    let state = job.check_state(state)?;
    let now = step.now();
    let meta = match step.meta().cloned() {
        Some(mut meta) => {
            meta.epoch = meta.epoch.saturating_add(1);
            meta.set_status(Status::Active, now);
            purge::cancel(&mut meta);
            meta.id = step.instance().clone();
            meta
        }
        None => Metadata::new(step.instance().clone(), now),
    };
    step.set_meta(meta);
    let config = job.config();
    let next_run_at = if config.start_immediately {
        Some(now)
    } else {
        config.schedule.first_after(now)
    };
    step.set_record(Record {
        next_run_at,
        ..Record::default()
    });
    step.writes().put(STATE_KEY, state);
    step.emit(EventKind::ContinuousStarted);
    if let Some(next_run_at) = next_run_at {
        step.emit(EventKind::ContinuousScheduled { next_run_at });
    }
    step.finish().await?;
    Ok(Response::Started { created: true })
}

async fn stop<B: Storage + Clock>(
    mut step: ContinuousStep<'_, B>,
    job: &dyn ErasedContinuous,
    reason: Option<String>,
) -> Result<Response, JobError> {
    if step.meta().is_none_or(|m| m.status.is_stopped()) {
        return Ok(Response::Stopped { stopped: false });
    }
    stop_instance(&mut step, job, reason);
    step.finish().await?;
    Ok(Response::Stopped { stopped: true })
}

/// Stops an active instance in `step`: its state and record go, its status stays for the
/// retention period.
pub(super) fn stop_instance<B: Storage + Clock>(
    step: &mut ContinuousStep<'_, B>,
    job: &dyn ErasedContinuous,
    reason: Option<String>,
) {
    let now = step.now();
    if let Some(meta) = step.meta_mut() {
        lifecycle::stop(meta, reason.clone(), now, job.config().retention_ms);
    }
    step.writes().delete(STATE_KEY);
    step.delete_record();
    step.emit(EventKind::ContinuousStopped { reason });
}

/// Asks for a run now, through the alarm: a request never waits for user code.
async fn trigger<B: Storage + Clock>(
    mut step: ContinuousStep<'_, B>,
) -> Result<Response, JobError> {
    let meta = step
        .meta()
        .ok_or_else(|| JobError::instance_not_found(step.instance()))?;
    if meta.status.is_stopped() {
        return Err(JobError::InvalidState {
            operation: "trigger".into(),
            expected: StatusName::Active,
            actual: meta.status.name(),
        });
    }
    if step.record().trigger_at.is_none() {
        let now = step.now();
        step.record_mut().trigger_at = Some(now);
        step.finish().await?;
    }
    Ok(Response::Triggered)
}

fn status<B: Storage + Clock>(step: &ContinuousStep<'_, B>) -> Response {
    let status = step.meta().map(|m| {
        let rec = step.record().clone();
        ContinuousStatus {
            status: m.status.clone(),
            run_count: rec.run_count,
            next_run_at: rec.next_run_at,
            last_run_at: rec.last_run_at,
            retry_at: rec.retry_at,
            last_error: rec.last_error,
            created_at: m.created_at,
            updated_at: m.updated_at,
            purge_at: m.purge_at,
            overdue_since: step.engine().overdue_since(),
        }
    });
    Response::ContinuousStatus { status }
}

async fn get_state<B: Storage + Clock>(step: &ContinuousStep<'_, B>) -> Result<Response, JobError> {
    if step.meta().is_none_or(|m| m.status.is_stopped()) {
        return Ok(Response::State { state: None });
    }
    let state = step.read::<Value>(STATE_KEY).await?;
    Ok(Response::State { state })
}

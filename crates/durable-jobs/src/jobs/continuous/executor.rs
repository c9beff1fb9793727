//! Continuous alarms: claim the due run, execute it without the lock, complete it.

use std::sync::Arc;

use super::erased::{ErasedContinuous, RunInput, RunOutcome};
use super::handler::stop_instance;
use super::{Record, STATE_KEY};
use crate::adapters::{Clock, Storage};
use crate::engine::{Engine, Step, UserRun};
use crate::errors::JobError;
use crate::events::EventKind;
use crate::ids::InstanceId;
use crate::jobs::lifecycle::{self, NextAttempt};
use crate::services::purge;

type ContinuousStep<'a, B> = Step<'a, B, Record>;

/// A run taken out by the claim step.
struct Claim {
    epoch: u64,
    trigger_at: Option<i64>,
    attempt: NextAttempt,
    run_count: u64,
    state: Vec<u8>,
}

/// Handles one alarm of a Continuous instance. The caller holds the execution guard.
pub(crate) async fn alarm<B: Storage + Clock>(
    engine: &Engine<B>,
    shared_job: &Arc<dyn ErasedContinuous>,
    instance: &InstanceId,
) -> Result<(), JobError> {
    let job = shared_job.as_ref();
    let Some(claim) = claim(engine, job, instance).await? else {
        return Ok(());
    };
    if claim.attempt.abandoned {
        let outcome = RunOutcome::Failed {
            error: lifecycle::ABANDONED.to_string(),
        };
        return complete(engine, job, instance, &claim, outcome, engine.now()).await;
    }
    let started = engine.now();
    let seed = instance.to_string();
    let final_attempt = claim.attempt.is_last(&job.config().retry, &seed, started);
    let input = RunInput {
        state: claim.state.clone(),
        instance: instance.clone(),
        run_count: claim.run_count,
        attempt: claim.attempt.number,
        final_attempt,
        now: started,
    };
    let run = UserRun::new(instance, job.config().timeout);
    let outcome = engine
        .run_job(run, shared_job, move |job| job.run(input))
        .await?
        .unwrap_or_else(|error| RunOutcome::Failed { error });
    complete(engine, job, instance, &claim, outcome, started).await
}

/// Reads the instance and says whether a run is due; purges a stopped instance whose
/// retention has passed.
async fn claim<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedContinuous,
    instance: &InstanceId,
) -> Result<Option<Claim>, JobError> {
    let mut step: ContinuousStep<'_, B> = engine.alarm_step(instance, &[STATE_KEY]).await?;
    let now = step.now();
    let Some(meta) = step.meta() else {
        step.finish().await?;
        return Ok(None);
    };
    if meta.status.is_stopped() {
        if purge::is_due(meta, now) {
            step.purge();
        }
        step.finish().await?;
        return Ok(None);
    }
    if !step.record().is_due(now) {
        step.finish().await?;
        return Ok(None);
    }
    let epoch = meta.epoch;
    let rec = step.record();
    let attempt = NextAttempt::after(
        &job.config().retry,
        rec.attempt,
        rec.started,
        rec.first_attempt_at,
    );
    let claim = Claim {
        epoch,
        trigger_at: rec.trigger_at,
        attempt,
        run_count: rec.run_count,
        // A missing state decodes as `null`, which fails the run with a clear error for
        // any state type that needs a value.
        state: step.take_extra(0).unwrap_or_else(|| b"null".to_vec()),
    };
    if engine.records_attempts_at_start() && !attempt.abandoned {
        step.record_mut().started = Some(attempt.number);
        step.leave_alarm();
        step.finish().await?;
    }
    Ok(Some(claim))
}

/// Records the run's outcome, unless the instance was stopped (or stopped and started
/// again) while it ran: the stop already took effect, so the late result is discarded.
async fn complete<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedContinuous,
    instance: &InstanceId,
    claim: &Claim,
    outcome: RunOutcome,
    started: i64,
) -> Result<(), JobError> {
    let mut step: ContinuousStep<'_, B> = engine.alarm_step(instance, &[]).await?;
    let current = step
        .meta()
        .is_some_and(|m| m.epoch == claim.epoch && !m.status.is_stopped());
    if current && step.record_found() {
        step.record_mut().started = None;
        match outcome {
            RunOutcome::Done { state, terminate } => {
                succeed(&mut step, job, claim, state, terminate, started)
            }
            RunOutcome::Failed { error } => fail(&mut step, job, claim, error, started),
        }
    }
    step.finish().await
}

fn succeed<B: Storage + Clock>(
    step: &mut ContinuousStep<'_, B>,
    job: &dyn ErasedContinuous,
    claim: &Claim,
    state: Option<Vec<u8>>,
    terminate: Option<Option<String>>,
    started: i64,
) {
    let now = step.now();
    let rec = step.record_mut();
    rec.run_count = rec.run_count.saturating_add(1);
    rec.last_run_at = Some(now);
    rec.attempt = 0;
    rec.retry_at = None;
    rec.first_attempt_at = None;
    advance(job, rec, claim, now);
    let run_count = rec.run_count;
    step.emit(EventKind::ContinuousExecuted {
        run_count,
        duration_ms: now - started,
    });
    if let Some(reason) = terminate {
        stop_instance(step, job, reason);
        return;
    }
    step.change_meta(|meta| lifecycle::recover(meta, now));
    if let Some(state) = state {
        step.writes().put(STATE_KEY, state);
    }
    emit_scheduled(step);
}

fn fail<B: Storage + Clock>(
    step: &mut ContinuousStep<'_, B>,
    job: &dyn ErasedContinuous,
    claim: &Claim,
    error: String,
    started: i64,
) {
    let now = step.now();
    let attempt = claim.attempt.number;
    step.emit(EventKind::ContinuousError {
        error: error.clone(),
        attempt,
    });
    let seed = step.instance().to_string();
    let first = claim.attempt.first_started(started);
    if let Some(retry_at) = job.config().retry.retry_at(attempt, &seed, now, first) {
        let rec = step.record_mut();
        rec.attempt = attempt;
        rec.retry_at = Some(retry_at);
        rec.first_attempt_at = Some(first);
        return;
    }
    tracing::warn!(instance = %step.instance(), %error, attempts = attempt, "continuous run failed");
    let last_error = step
        .meta_mut()
        .map(|meta| lifecycle::record_final_failure(meta, &error, attempt, now));
    let rec = step.record_mut();
    rec.attempt = 0;
    rec.retry_at = None;
    rec.first_attempt_at = None;
    rec.last_error = last_error;
    advance(job, rec, claim, now);
    emit_scheduled(step);
}

fn emit_scheduled<B: Storage + Clock>(step: &mut ContinuousStep<'_, B>) {
    if let Some(next_run_at) = step.record().next_run_at {
        step.emit(EventKind::ContinuousScheduled { next_run_at });
    }
}

/// After a run (or its final failure): consume the trigger it served and move the schedule
/// past `now` from the previous scheduled time.
fn advance(job: &dyn ErasedContinuous, rec: &mut Record, claim: &Claim, now: i64) {
    if claim.trigger_at.is_some() && rec.trigger_at == claim.trigger_at {
        rec.trigger_at = None;
    }
    if let Some(prev) = rec.next_run_at.filter(|t| *t <= now) {
        rec.next_run_at = job.config().schedule.next_after(prev, now);
    }
}

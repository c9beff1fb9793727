//! Task alarms: claim the due execution, run it without the lock, apply its decisions.

use std::sync::Arc;

use super::decide::{self, TaskStep};
use super::erased::{Applied, ErasedTask, HookInput, RunInput, RunOutcome};
use super::{ScheduledBy, STATE_KEY};
use crate::adapters::{Clock, Storage};
use crate::engine::{Engine, UserRun};
use crate::errors::JobError;
use crate::events::EventKind;
use crate::ids::InstanceId;
use crate::jobs::lifecycle::{self, NextAttempt};
use crate::services::purge;

/// An execution taken out by the claim step.
struct Claim {
    epoch: u64,
    /// The timer (or retry time) it serves: spent when the execution ends, unless an
    /// event set another meanwhile.
    due_at: i64,
    attempt: NextAttempt,
    state: Option<Vec<u8>>,
}

/// Handles one alarm of a Task instance. The caller holds the execution guard.
pub(crate) async fn alarm<B: Storage + Clock>(
    engine: &Engine<B>,
    shared_job: &Arc<dyn ErasedTask>,
    instance: &InstanceId,
) -> Result<(), JobError> {
    let job = shared_job.as_ref();
    let Some(claim) = claim(engine, job, instance).await? else {
        return Ok(());
    };
    if claim.attempt.abandoned {
        let outcome = RunOutcome::Failed {
            error: lifecycle::ABANDONED.to_string(),
            on_error: None,
        };
        return complete(engine, job, instance, &claim, outcome, engine.now()).await;
    }
    let started = engine.now();
    let seed = instance.to_string();
    let final_attempt = claim.attempt.is_last(&job.config().retry, &seed, started);
    let input = RunInput {
        hook: HookInput {
            instance: instance.clone(),
            state: claim.state.clone(),
            next_run_at: None,
            now: started,
        },
        attempt: claim.attempt.number,
        final_attempt,
    };
    let run = UserRun::new(instance, job.config().timeout);
    let outcome = engine
        .run_job(run, shared_job, move |job| job.run(input))
        .await?
        .unwrap_or_else(|error| RunOutcome::Failed {
            error,
            on_error: None,
        });
    complete(engine, job, instance, &claim, outcome, started).await
}

/// Says whether an execution is due; purges a terminated task, or an idle one whose
/// retention has passed.
async fn claim<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedTask,
    instance: &InstanceId,
) -> Result<Option<Claim>, JobError> {
    let mut step: TaskStep<'_, B> = engine.alarm_step(instance, &[STATE_KEY]).await?;
    let now = step.now();
    let Some(meta) = step.meta() else {
        step.finish().await?;
        return Ok(None);
    };
    let idle_or_stopped = meta.status.is_stopped() || step.record().is_idle();
    if idle_or_stopped {
        if purge::is_due(meta, now) {
            step.purge();
        }
        step.finish().await?;
        return Ok(None);
    }
    let epoch = meta.epoch;
    let rec = step.record();
    let Some(due_at) = rec.due_at().filter(|t| *t <= now) else {
        step.finish().await?;
        return Ok(None);
    };
    let attempt = NextAttempt::after(
        &job.config().retry,
        rec.attempt,
        rec.started,
        rec.first_attempt_at,
    );
    let claim = Claim {
        epoch,
        due_at,
        attempt,
        state: step.take_extra(0),
    };
    if engine.records_attempts_at_start() && !attempt.abandoned {
        step.record_mut().started = Some(attempt.number);
        step.leave_alarm();
        step.finish().await?;
    }
    Ok(Some(claim))
}

/// Records the execution's outcome, unless the task was terminated (or terminated and
/// created again) while it ran: the late result is then discarded.
async fn complete<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedTask,
    instance: &InstanceId,
    claim: &Claim,
    outcome: RunOutcome,
    started: i64,
) -> Result<(), JobError> {
    let mut step: TaskStep<'_, B> = engine.alarm_step(instance, &[STATE_KEY]).await?;
    let current = step
        .meta()
        .is_some_and(|m| m.epoch == claim.epoch && !m.status.is_stopped());
    if current && step.record_found() {
        step.record_mut().started = None;
        let state = step.take_extra(0);
        match outcome {
            RunOutcome::Done(applied) => {
                let now = step.now();
                spend_timer(&mut step, claim);
                let rec = step.record_mut();
                rec.execution_count = rec.execution_count.saturating_add(1);
                rec.last_run_at = Some(now);
                rec.attempt = 0;
                rec.retry_at = None;
                rec.first_attempt_at = None;
                let execution_count = rec.execution_count;
                step.emit(EventKind::TaskExecuted {
                    execution_count,
                    duration_ms: now - started,
                });
                step.change_meta(|meta| lifecycle::recover(meta, now));
                decide::apply(&mut step, job, applied, ScheduledBy::Execution, state);
            }
            RunOutcome::Failed { error, on_error } => {
                fail(&mut step, job, claim, error, on_error, state, started);
            }
        }
    }
    step.finish().await
}

/// The timer that started the execution is spent, unless something set another since.
fn spend_timer<B: Storage + Clock>(step: &mut TaskStep<'_, B>, claim: &Claim) {
    let rec = step.record_mut();
    if rec.retry_at == Some(claim.due_at) {
        rec.retry_at = None;
    } else if rec.retry_at.is_none() && rec.next_run_at == Some(claim.due_at) {
        rec.next_run_at = None;
    }
}

fn fail<B: Storage + Clock>(
    step: &mut TaskStep<'_, B>,
    job: &dyn ErasedTask,
    claim: &Claim,
    error: String,
    on_error: Option<Applied>,
    state: Option<Vec<u8>>,
    started: i64,
) {
    let now = step.now();
    let attempt = claim.attempt.number;
    let seed = step.instance().to_string();
    let first = claim.attempt.first_started(started);
    let retry_at = job.config().retry.retry_at(attempt, &seed, now, first);
    step.emit(EventKind::TaskFailed {
        error: error.clone(),
        attempt,
        will_retry: retry_at.is_some(),
    });
    spend_timer(step, claim);
    if let Some(retry_at) = retry_at {
        let rec = step.record_mut();
        rec.attempt = attempt;
        rec.retry_at = Some(retry_at);
        rec.first_attempt_at = Some(first);
        // An event may have cancelled the timer while the attempt ran, leaving the task
        // idle and due for its purge: the retry makes it scheduled again.
        step.change_meta(purge::cancel);
        return;
    }
    tracing::warn!(instance = %step.instance(), %error, attempts = attempt, "task execution failed");
    let last_error = step
        .meta_mut()
        .map(|meta| lifecycle::record_final_failure(meta, &error, attempt, now));
    let rec = step.record_mut();
    rec.attempt = 0;
    rec.retry_at = None;
    rec.first_attempt_at = None;
    rec.last_error = last_error;
    let applied = on_error.unwrap_or_default();
    decide::apply(step, job, applied, ScheduledBy::Error, state);
}

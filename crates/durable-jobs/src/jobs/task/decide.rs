//! Applying what a task's hooks decided, the same way after an event, an execution, a
//! final failure or a trigger.

use super::context::TimerChange;
use super::erased::{Applied, ErasedTask, HookInput};
use super::{Record, ScheduledBy, STATE_KEY, TERMINATED};
use crate::adapters::{Clock, Storage};
use crate::engine::Step;
use crate::events::EventKind;
use crate::jobs::lifecycle;
use crate::services::purge;

pub(super) type TaskStep<'a, B> = Step<'a, B, Record>;

/// Applies `applied` (decided by the hook `by` names), then, if no timer is left, lets
/// `on_idle` decide. `state` is the stored state as the hook saw it.
pub(super) fn apply<B: Storage + Clock>(
    step: &mut TaskStep<'_, B>,
    job: &dyn ErasedTask,
    applied: Applied,
    by: ScheduledBy,
    state: Option<Vec<u8>>,
) {
    let state = apply_one(step, applied, by, state);
    let Some(state) = state else {
        return; // terminated
    };
    settle(step, job, state);
}

/// Applies one hook's decisions; the state after them, or `None` if the task ended.
fn apply_one<B: Storage + Clock>(
    step: &mut TaskStep<'_, B>,
    applied: Applied,
    by: ScheduledBy,
    state: Option<Vec<u8>>,
) -> Option<Option<Vec<u8>>> {
    if applied.terminate {
        terminate(step);
        return None;
    }
    let state = match applied.state {
        Some(bytes) => {
            step.writes().put(STATE_KEY, bytes.clone());
            Some(bytes)
        }
        None => state,
    };
    match applied.timer {
        Some(TimerChange::At(at)) => set_timer(step, Some(at), by),
        Some(TimerChange::Cancel) => set_timer(step, None, by),
        None => {}
    }
    Some(state)
}

/// Sets or removes the timer. A new timer replaces a pending retry: it is a fresh
/// execution.
pub(super) fn set_timer<B: Storage + Clock>(
    step: &mut TaskStep<'_, B>,
    at: Option<i64>,
    by: ScheduledBy,
) {
    let rec = step.record_mut();
    rec.next_run_at = at;
    rec.retry_at = None;
    rec.attempt = 0;
    rec.first_attempt_at = None;
    if let Some(at) = at {
        step.emit(EventKind::TaskScheduled { at, by });
    }
}

/// With no timer left, `on_idle` may set one; a task still idle after it is purged after
/// its retention period, unless an event comes first.
fn settle<B: Storage + Clock>(
    step: &mut TaskStep<'_, B>,
    job: &dyn ErasedTask,
    state: Option<Vec<u8>>,
) {
    if step.record().is_idle() {
        let input = HookInput {
            instance: step.instance().clone(),
            state: state.clone(),
            next_run_at: None,
            now: step.now(),
        };
        match job.idle(input) {
            Ok(applied) => {
                if apply_one(step, applied, ScheduledBy::Idle, state).is_none() {
                    return;
                }
            }
            Err(error) => tracing::warn!(instance = %step.instance(), %error, "on_idle failed"),
        }
    }
    let now = step.now();
    let retention_ms = job.config().retention_ms;
    if step.record().is_idle() {
        step.emit(EventKind::TaskIdle);
        step.change_meta(|meta| {
            purge::schedule(meta, now, retention_ms);
            true
        });
    } else {
        step.change_meta(purge::cancel);
    }
}

/// Ends the task: state and record go at once, the rest with the purge that follows
/// immediately; `status` and `state` read it as gone from now on.
pub(super) fn terminate<B: Storage + Clock>(step: &mut TaskStep<'_, B>) {
    let now = step.now();
    step.change_meta(|meta| {
        lifecycle::stop(meta, Some(TERMINATED.to_string()), now, 0);
        true
    });
    step.writes().delete(STATE_KEY);
    step.delete_record();
    step.emit(EventKind::TaskTerminated);
}

//! WorkerPool alarms: process the head of the queue, in order, without holding the lock
//! while user code runs. A claim takes one event, or several where the engine allows it
//! (see `Engine::with_claim_size`), and one step records their outcomes.

use std::sync::Arc;

use super::erased::{ErasedWorkerPool, ProcessInput};
use super::handler::mark_done;
use super::{
    dead_key, queue_key, ClaimedEvents, DeadLetter, IdRecord, Pending, PoolRecord, StartedAttempt,
    DELAYED_PREFIX, QUEUE_PREFIX,
};
use crate::adapters::{Clock, ListOptions, Storage};
use crate::engine::{Engine, Step, UserRun, CLAIM_RUN_MS, EXECUTIONS_PER_ALARM};
use crate::errors::JobError;
use crate::events::{EventKind, JobEvent};
use crate::ids::InstanceId;
use crate::jobs::lifecycle;
use crate::services::idempotency;

type PoolStep<'a, B> = Step<'a, B, PoolRecord>;

/// Delayed events one step moves into the queue at most; a claim takes as many steps as
/// it needs to move every due one first.
const PROMOTIONS_PER_STEP: usize = 128;

/// A queued event a claim took, with the attempt it runs as.
struct Claimed {
    key: String,
    pending: Pending,
    attempt: u32,
}

/// What the claim found to do.
enum Work {
    /// Process these queued events, in order; `several` if the claim was one of several
    /// (which its outcomes end).
    Events {
        claimed: Vec<Claimed>,
        several: bool,
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

/// A claimed event that ran, with its outcome.
struct Ran {
    claimed: Claimed,
    /// Its `processing` event, when it is reported with the outcome: every event of a
    /// claim but the first, so that each one's events keep their order.
    processing: Option<JobEvent>,
    /// When its user code started.
    started: i64,
    result: Result<(), String>,
}

/// Handles one alarm of a pool instance. The caller holds the execution guard.
pub(crate) async fn alarm<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &Arc<dyn ErasedWorkerPool>,
    instance: &InstanceId,
) -> Result<(), JobError> {
    let mut executions = 0;
    while executions < EXECUTIONS_PER_ALARM {
        match claim(engine, job.as_ref(), instance).await? {
            None => return Ok(()),
            Some(Work::Events { claimed, several }) => {
                let ran = run_claimed(engine, job, instance, claimed).await?;
                executions += ran.len();
                record_outcomes(engine, job.as_ref(), instance, ran, several).await?;
            }
            Some(Work::Abandoned {
                key,
                pending,
                attempts,
            }) => {
                abandon(engine, job, instance, &key, pending, attempts).await?;
                executions += 1;
            }
            Some(Work::Empty { processed }) => {
                run_on_empty(engine, job, instance, processed).await?;
                record_drained(engine, instance).await?;
                executions += 1;
            }
        }
    }
    Ok(())
}

/// Finds the head of the queue: the event waiting for its retry, else the first in order.
/// A claim that finds work writes nothing: the alarm that woke the instance stays set until
/// the outcome is recorded, so a crash meanwhile finds the work still scheduled. Delayed
/// events that are due move into the queue first, each batch its own step, so that the
/// claim takes them in their place by priority and enqueue order.
async fn claim<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedWorkerPool,
    instance: &InstanceId,
) -> Result<Option<Work>, JobError> {
    let mut step: PoolStep<'_, B> = engine.alarm_step(instance, &[]).await?;
    engine.take_claim_interrupt();
    if step.meta().is_none() || step.record().paused {
        step.finish().await?;
        return Ok(None);
    }
    while step.record().delayed_due(step.now()) {
        promote_due(&mut step).await?;
        step.finish().await?;
        step = engine.alarm_step(instance, &[]).await?;
        if step.meta().is_none() || step.record().paused {
            step.finish().await?;
            return Ok(None);
        }
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
            if let Some(claimed) = claim_several(&mut step, job, &key).await? {
                return start_several(step, claimed).await.map(Some);
            }
            start(step, job, key, pending).await.map(Some)
        }
        None => {
            if step.record().claimed.is_some() {
                step.record_mut().claimed = None;
            }
            if step.record().delayed > 0 && step.record().next_delayed_at.is_none() {
                look_up_delayed(&mut step).await?;
            }
            if step.record().pending != 0 || step.record().current.is_some() {
                // The counters disagree with the queue (it is empty): trust the queue.
                let pool = step.record_mut();
                pool.pending = 0;
                pool.current = None;
                pool.retry_at = None;
            }
            let pool = step.record();
            let work = (!pool.drained && pool.delayed == 0).then_some(Work::Empty {
                processed: pool.processed,
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
    step.mark_running(vec![key.clone()]);
    if step.engine().records_attempts_at_start() {
        let key = key.clone();
        step.record_mut().started = Some(StartedAttempt { key, attempt });
        step.leave_alarm();
        step.finish().await?;
    }
    Ok(Work::Events {
        claimed: vec![Claimed {
            key,
            pending,
            attempt,
        }],
        several: false,
    })
}

/// The events a claim of several takes from the head `head` on, or `None` where it
/// takes one: the engine allows one, the head waits for its retry, the head is an attempt
/// recorded at its start, or an earlier claim of several ended without its outcomes and
/// the queue is not past it yet. That last rule takes the events of a crashed claim one at
/// a time, each attempt recorded, so one that kills its process uses up its attempts.
async fn claim_several<B: Storage + Clock>(
    step: &mut PoolStep<'_, B>,
    job: &dyn ErasedWorkerPool,
    head: &str,
) -> Result<Option<Vec<Claimed>>, JobError> {
    let pool = step.record();
    if pool
        .claimed
        .as_ref()
        .is_some_and(|c| head > c.last.as_str())
    {
        step.record_mut().claimed = None;
    }
    let pool = step.record();
    let limit = step.engine().claim_size();
    if limit < 2 || pool.current.is_some() || pool.started.is_some() || pool.claimed.is_some() {
        return Ok(None);
    }
    let listed = step
        .list::<Pending>(ListOptions::prefix(QUEUE_PREFIX).limit(limit))
        .await?;
    let claimed: Vec<Claimed> = listed
        .into_iter()
        .map(|(key, pending)| {
            let attempt = lifecycle::next_attempt(pending.attempt, 0);
            Claimed {
                key,
                pending,
                attempt,
            }
        })
        .take_while(|c| !lifecycle::is_beyond(&job.config().retry, c.attempt))
        .collect();
    Ok((claimed.len() > 1).then_some(claimed))
}

/// Marks the events of a claim of several as running, and records the claim first where
/// attempts are recorded at their start.
async fn start_several<B: Storage + Clock>(
    mut step: PoolStep<'_, B>,
    claimed: Vec<Claimed>,
) -> Result<Work, JobError> {
    step.mark_running(claimed.iter().map(|c| c.key.clone()).collect());
    if step.engine().records_attempts_at_start() {
        if let (Some(first), Some(last)) = (claimed.first(), claimed.last()) {
            step.record_mut().claimed = Some(ClaimedEvents {
                first: first.key.clone(),
                last: last.key.clone(),
            });
        }
        step.leave_alarm();
        step.finish().await?;
    }
    Ok(Work::Events {
        claimed,
        several: true,
    })
}

/// Moves up to [`PROMOTIONS_PER_STEP`] due delayed events into the queue, under the key
/// their priority and enqueue order give them, and notes when the next one is due.
async fn promote_due<B: Storage + Clock>(step: &mut PoolStep<'_, B>) -> Result<(), JobError> {
    let now = step.now();
    // One more than moved: the first left tells the next run time.
    let listed = step
        .list::<Pending>(ListOptions::prefix(DELAYED_PREFIX).limit(PROMOTIONS_PER_STEP + 1))
        .await?;
    let mut next = None;
    let mut moved = 0u64;
    for (index, (key, pending)) in listed.into_iter().enumerate() {
        // A row without a time (damaged) cannot wait for it: it counts as due.
        let due = pending.run_at.is_none_or(|at| at <= now);
        if !due || index == PROMOTIONS_PER_STEP {
            next = Some(pending.run_at.unwrap_or(now));
            break;
        }
        let queued = queue_key(pending.priority, pending.seq);
        step.put(queued.clone(), &pending)?;
        step.pin_id(&pending.event_id, &IdRecord::Queued { key: queued }, None)?;
        step.writes().delete(key);
        moved += 1;
    }
    let pool = step.record_mut();
    pool.pending = pool.pending.saturating_add(moved);
    pool.next_delayed_at = next;
    pool.delayed = match next {
        Some(_) => pool.delayed.saturating_sub(moved),
        // Nothing is left: the rows say so, whatever the count says.
        None => 0,
    };
    Ok(())
}

/// With the queue empty and delayed events counted, but not when the first is due (a
/// record that lost track): reads it, and trusts the rows if there are none.
async fn look_up_delayed<B: Storage + Clock>(step: &mut PoolStep<'_, B>) -> Result<(), JobError> {
    let now = step.now();
    let first = step
        .list::<Pending>(ListOptions::prefix(DELAYED_PREFIX).limit(1))
        .await?
        .into_iter()
        .next();
    let next = first.map(|(_, p)| p.run_at.unwrap_or(now));
    let pool = step.record();
    if next.is_none() || pool.next_delayed_at != next {
        let pool = step.record_mut();
        pool.next_delayed_at = next;
        if next.is_none() {
            pool.delayed = 0;
        }
    }
    Ok(())
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
    if step.record().waiting() == 0 {
        step.record_mut().drained = true;
    }
    step.finish().await
}

/// Runs the claimed events in order, until one fails, a pause interrupts the claim, or
/// the claim has run for its time; the events not reached stay queued as they are.
async fn run_claimed<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &Arc<dyn ErasedWorkerPool>,
    instance: &InstanceId,
    claimed: Vec<Claimed>,
) -> Result<Vec<Ran>, JobError> {
    let began = engine.now();
    let mut ran = Vec::with_capacity(claimed.len());
    for event in claimed {
        let out_of_time = engine.now().saturating_sub(began) >= CLAIM_RUN_MS;
        if !ran.is_empty() && (out_of_time || engine.take_claim_interrupt()) {
            break;
        }
        let report_now = ran.is_empty();
        let one = run_one(engine, job, instance, event, report_now).await?;
        let failed = one.result.is_err();
        ran.push(one);
        if failed {
            break;
        }
    }
    Ok(ran)
}

async fn run_one<B: Storage + Clock>(
    engine: &Engine<B>,
    shared_job: &Arc<dyn ErasedWorkerPool>,
    instance: &InstanceId,
    claimed: Claimed,
    report_now: bool,
) -> Result<Ran, JobError> {
    let job = shared_job.as_ref();
    let Claimed {
        pending, attempt, ..
    } = &claimed;
    let started = engine.now();
    let first = lifecycle::first_attempt_at(*attempt, pending.first_attempt_at, started);
    let final_attempt = job
        .config()
        .retry
        .is_last(*attempt, &pending.event_id, started, first);
    let processing = engine.event(
        instance,
        EventKind::WorkerPoolProcessing {
            event_id: pending.event_id.clone(),
            attempt: *attempt,
        },
    );
    let processing = if report_now {
        engine.report_when_durable(vec![processing]);
        None
    } else {
        Some(processing)
    };
    let input = ProcessInput {
        event: pending.event.clone(),
        event_id: pending.event_id.clone(),
        sequence: pending.seq,
        attempt: *attempt,
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
    Ok(Ran {
        claimed,
        processing,
        started,
        result,
    })
}

/// Records the outcomes of a claim's events in one step. That ends a claim of `several`;
/// the outcome of a single event leaves the mark of an earlier claim of several that
/// crashed, so that the queue is taken one event at a time until past it.
async fn record_outcomes<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedWorkerPool,
    instance: &InstanceId,
    ran: Vec<Ran>,
    several: bool,
) -> Result<(), JobError> {
    let mut step: PoolStep<'_, B> = engine.alarm_step(instance, &[]).await?;
    let pool = step.record_mut();
    pool.started = None;
    if several {
        pool.claimed = None;
    }
    // Each event's record becomes expirable here; sweeping as many keeps them bounded.
    let sweep_limit = idempotency::SWEEP_LIMIT + ran.len();
    for Ran {
        claimed,
        processing,
        started,
        result,
    } in ran
    {
        if let Some(event) = processing {
            step.report(event);
        }
        let Claimed {
            key,
            pending,
            attempt,
        } = claimed;
        match result {
            Ok(()) => complete(&mut step, job, &key, &pending, started)?,
            Err(error) => fail(&mut step, job, &key, pending, attempt, error, started)?,
        }
    }
    step.sweep_ids(sweep_limit).await?;
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
    let now = step.now();
    fail(&mut step, job.as_ref(), key, pending, attempts, error, now)?;
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
    started: i64,
) -> Result<(), JobError> {
    step.emit(EventKind::WorkerPoolFailed {
        event_id: pending.event_id.clone(),
        error: error.clone(),
        attempt,
    });
    let first = lifecycle::first_attempt_at(attempt, pending.first_attempt_at, started);
    if let Some(retry_at) =
        job.config()
            .retry
            .retry_at(attempt, &pending.event_id, step.now(), first)
    {
        pending.attempt = attempt;
        pending.first_attempt_at = Some(first);
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

//! WorkerPool requests: enqueue, pause, resume, cancel, status, dead letters.

use super::erased::ErasedWorkerPool;
use super::{
    dead_key, delayed_key, queue_key, DeadLetter, EnqueueItem, EnqueueOutcome, IdRecord, Pending,
    PoolInstanceStatus, PoolRecord, QueuedEvent, DEAD_PREFIX, DELAYED_PREFIX, GENERATED_ID_PREFIX,
    MAX_DELAY_MS, QUEUE_PREFIX,
};
use crate::adapters::{Clock, ListOptions, Storage};
use crate::engine::{Engine, Step};
use crate::errors::JobError;
use crate::events::EventKind;
use crate::ids::{InstanceId, JobKind};
use crate::services::alarm::earliest;
use crate::services::idempotency;
use crate::services::metadata::Status;
use crate::wire::{Operation, Response};

/// Queued events one `pending` page holds at most.
const MAX_PENDING_PAGE: u32 = 1000;

/// `MAX_DELAY` as errors name it.
const MAX_DELAY_TEXT: &str = "10 years (3650 days)";

/// Dead letters replayed or discarded by one request at most.
const DEAD_LETTERS_PER_REQUEST: usize = 1000;

type PoolStep<'a, B> = Step<'a, B, PoolRecord>;

pub(crate) async fn handle<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedWorkerPool,
    instance: &InstanceId,
    op: Operation,
) -> Result<Response, JobError> {
    let index = instance_index(job, instance)?;
    let id_keys: Vec<String> = match &op {
        Operation::WorkerPoolEnqueue {
            event_id: Some(id), ..
        }
        | Operation::WorkerPoolCancel { event_id: id } => vec![idempotency::record_key(id)],
        Operation::WorkerPoolEnqueueMany { events } => events
            .iter()
            .filter_map(|e| e.event_id.as_deref().map(idempotency::record_key))
            .collect(),
        _ => Vec::new(),
    };
    let extra: Vec<&str> = id_keys.iter().map(String::as_str).collect();
    let step = engine.step(instance, &extra).await?;
    match op {
        Operation::WorkerPoolEnqueueMany { events } => {
            enqueue_many(step, job, index, events, &id_keys).await
        }
        Operation::WorkerPoolEnqueue {
            event,
            event_id,
            priority,
            run_at,
            delay_ms,
        } => {
            let item = EnqueueItem {
                event,
                event_id,
                priority,
                run_at,
                delay_ms,
            };
            enqueue(step, job, index, item).await
        }
        Operation::WorkerPoolPause => set_paused(step, true).await,
        Operation::WorkerPoolResume => set_paused(step, false).await,
        Operation::WorkerPoolCancel { event_id } => cancel(step, job, event_id).await,
        Operation::WorkerPoolStatus => status(&step, index).await,
        Operation::WorkerPoolDeadLetters { after, limit } => {
            dead_letters(&step, after, limit).await
        }
        Operation::WorkerPoolPending { after, limit } => pending(&step, after, limit).await,
        Operation::WorkerPoolReplay { event_ids } => {
            change_dead_letters(step, job, event_ids, DeadLetterChange::Replay).await
        }
        Operation::WorkerPoolDiscard { event_ids } => {
            change_dead_letters(step, job, event_ids, DeadLetterChange::Discard).await
        }
        other => Err(JobError::wrong_kind(&other, JobKind::WorkerPool)),
    }
}

fn instance_index(job: &dyn ErasedWorkerPool, instance: &InstanceId) -> Result<u32, JobError> {
    let concurrency = job.config().concurrency;
    instance
        .pool_index()
        .filter(|i| *i < concurrency)
        .ok_or_else(|| {
            JobError::bad_request(format!(
                "`{}` is not an instance index of pool `{}` (concurrency {concurrency})",
                instance.key, instance.name,
            ))
        })
}

/// Queues an event behind those of higher or equal priority, or among the delayed events
/// until its run time.
async fn enqueue<B: Storage + Clock>(
    mut step: PoolStep<'_, B>,
    job: &dyn ErasedWorkerPool,
    index: u32,
    item: EnqueueItem,
) -> Result<Response, JobError> {
    // Checked before the step too, against an earlier time: this refuses nothing more.
    let run_at = run_time(step.now(), item.run_at, item.delay_ms)?;
    let known: Option<IdRecord> = match &item.event_id {
        Some(id) => step.extra(0, &idempotency::record_key(id))?,
        None => None,
    };
    if let (Some(id), true) = (
        &item.event_id,
        known.as_ref().is_some_and(|r| r.is_live(step.now())),
    ) {
        return Ok(Response::Enqueued {
            event_id: id.clone(),
            instance_index: index,
            position: step.record().waiting(),
            duplicate: true,
        });
    }
    job.check_event(&item.event)?;
    let replaces = known.and_then(|r| r.expires());
    let event_id = add_to_queue(&mut step, index, item, run_at, replaces)?;
    let position = step.record().waiting();
    step.finish().await?;
    Ok(Response::Enqueued {
        event_id,
        instance_index: index,
        position,
        duplicate: false,
    })
}

/// Queues several events in one step, each as `enqueue` would; `id_keys` are the id
/// records read with the step, in the order of the events that carry an id.
async fn enqueue_many<B: Storage + Clock>(
    mut step: PoolStep<'_, B>,
    job: &dyn ErasedWorkerPool,
    index: u32,
    events: Vec<EnqueueItem>,
    id_keys: &[String],
) -> Result<Response, JobError> {
    let mut outcomes = Vec::with_capacity(events.len());
    // Ids queued by this request: a second event with one of them is a duplicate.
    let mut queued = std::collections::HashSet::new();
    let mut keys = id_keys.iter().enumerate();
    for item in events {
        // Read whatever happens next, so that the id records stay paired with their events.
        let known: Option<IdRecord> = match &item.event_id {
            Some(_) => match keys.next() {
                Some((i, key)) => step.extra(i, key)?,
                None => return Err(JobError::bad_request("an event id was not read")),
            },
            None => None,
        };
        let run_at = match run_time(step.now(), item.run_at, item.delay_ms) {
            Ok(run_at) => run_at,
            Err(error) => {
                outcomes.push(rejected(&step, error));
                continue;
            }
        };
        let live = known.as_ref().is_some_and(|r| r.is_live(step.now()));
        if let Some(id) = &item.event_id {
            if live || queued.contains(id) {
                outcomes.push(EnqueueOutcome {
                    event_id: Some(id.clone()),
                    position: step.record().waiting(),
                    duplicate: true,
                    rejected: None,
                });
                continue;
            }
        }
        if let Err(error) = job.check_event(&item.event) {
            outcomes.push(rejected(&step, error));
            continue;
        }
        let replaces = known.and_then(|r| r.expires());
        let event_id = add_to_queue(&mut step, index, item, run_at, replaces)?;
        queued.insert(event_id.clone());
        outcomes.push(EnqueueOutcome {
            event_id: Some(event_id),
            position: step.record().waiting(),
            duplicate: false,
            rejected: None,
        });
    }
    step.finish().await?;
    Ok(Response::EnqueuedMany {
        instance_index: index,
        outcomes,
    })
}

/// The outcome of an event of an enqueue of several that was refused for `error`.
fn rejected<B: Storage + Clock>(step: &PoolStep<'_, B>, error: JobError) -> EnqueueOutcome {
    EnqueueOutcome {
        event_id: None,
        position: step.record().waiting(),
        duplicate: false,
        rejected: Some(error.to_string()),
    }
}

/// The time an event asks to run at (`None`: at once, as it gave none), a delay resolved
/// against `now`. Refuses a time more than `MAX_DELAY` ahead, and a time given twice.
pub(crate) fn run_time(
    now: i64,
    run_at: Option<i64>,
    delay_ms: Option<u64>,
) -> Result<Option<i64>, JobError> {
    let at = match (run_at, delay_ms) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(JobError::bad_request(
                "an event takes a run time or a delay, not both",
            ))
        }
        (Some(at), None) => at,
        (None, Some(delay)) => match i64::try_from(delay) {
            Ok(delay) if delay <= MAX_DELAY_MS => now.saturating_add(delay),
            _ => {
                return Err(JobError::bad_request(format!(
                    "a delay of {delay} ms is longer than the {MAX_DELAY_TEXT} an event may wait"
                )))
            }
        },
    };
    if at.saturating_sub(now) > MAX_DELAY_MS {
        return Err(JobError::bad_request(format!(
            "the run time {} is more than {MAX_DELAY_TEXT} ahead of the instance's clock ({})",
            time_text(at),
            time_text(now)
        )));
    }
    Ok(Some(at))
}

/// A time (ms since the epoch) as people read it, with the number it was given as.
fn time_text(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => format!(
            "{} ({ms} ms)",
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        None => format!("{ms} ms"),
    }
}

/// Queues one new event (its id already known not to be a live duplicate) and reports it;
/// answers its id, made up when it has none. `run_at` is the checked run time.
fn add_to_queue<B: Storage + Clock>(
    step: &mut PoolStep<'_, B>,
    index: u32,
    item: EnqueueItem,
    run_at: Option<i64>,
    replaces: Option<i64>,
) -> Result<String, JobError> {
    step.create_meta();
    let seq = step.record().next_seq;
    let generated_id = item.event_id.is_none();
    let event_id = item
        .event_id
        .unwrap_or_else(|| format!("{GENERATED_ID_PREFIX}{index}-{seq}"));
    let pending = Pending {
        event_id: event_id.clone(),
        event: item.event,
        priority: item.priority,
        seq,
        enqueued_at: step.now(),
        attempt: 0,
        last_error: None,
        generated_id,
        first_attempt_at: None,
        run_at,
    };
    queue(step, pending, replaces)?;
    let position = step.record().waiting();
    step.emit(EventKind::WorkerPoolEnqueued {
        event_id: event_id.clone(),
        position,
    });
    Ok(event_id)
}

/// Writes `pending` into the queue under its order key, or among the delayed events if
/// its run time is ahead, with the id record that lets a cancel find it; `replaces` is the
/// expiry of an expired record of the same id.
fn queue<B: Storage + Clock>(
    step: &mut PoolStep<'_, B>,
    pending: Pending,
    replaces: Option<i64>,
) -> Result<(), JobError> {
    let delayed = pending.run_at.filter(|at| *at > step.now());
    let key = match delayed {
        Some(at) => delayed_key(at, pending.seq),
        None => queue_key(pending.priority, pending.seq),
    };
    step.put(key.clone(), &pending)?;
    step.pin_id(&pending.event_id, &IdRecord::Queued { key }, replaces)?;
    let pool = step.record_mut();
    pool.next_seq = pool.next_seq.max(pending.seq.saturating_add(1));
    match delayed {
        Some(at) => {
            // Delayed events of unknown time stay so, for the claim to look them up.
            if pool.delayed == 0 || pool.next_delayed_at.is_some() {
                pool.next_delayed_at = earliest([pool.next_delayed_at, Some(at)]);
            }
            pool.delayed = pool.delayed.saturating_add(1);
        }
        None => pool.pending = pool.pending.saturating_add(1),
    }
    pool.drained = false;
    Ok(())
}

async fn set_paused<B: Storage + Clock>(
    mut step: PoolStep<'_, B>,
    pausing: bool,
) -> Result<Response, JobError> {
    if step.record().paused != pausing {
        let now = step.now();
        let (status, event) = if pausing {
            (
                Status::Paused { paused_at: now },
                EventKind::WorkerPoolPaused,
            )
        } else {
            (Status::Active, EventKind::WorkerPoolResumed)
        };
        step.create_meta();
        step.change_meta(|meta| {
            meta.set_status(status, now);
            true
        });
        step.record_mut().paused = pausing;
        if pausing {
            step.engine().interrupt_claim();
        }
        step.emit(event);
        step.finish().await?;
    }
    Ok(if pausing {
        Response::Paused
    } else {
        Response::Resumed
    })
}

/// Removes a queued event, unless it is running now.
async fn cancel<B: Storage + Clock>(
    mut step: PoolStep<'_, B>,
    job: &dyn ErasedWorkerPool,
    event_id: String,
) -> Result<Response, JobError> {
    let id_key = idempotency::record_key(&event_id);
    let Some(IdRecord::Queued { key }) = step.extra(0, &id_key)? else {
        return Ok(Response::Cancelled { cancelled: false });
    };
    // Running here, or (where attempts are recorded at their start) in another process
    // sharing the storage, or in one that crashed before recording the outcome.
    let pool = step.record();
    let started = pool.started.as_ref().is_some_and(|s| s.key == key)
        || pool.claimed.as_ref().is_some_and(|c| c.covers(&key));
    if step.engine().is_running(&key) || started {
        return Ok(Response::Cancelled { cancelled: false });
    }
    let generated_id = step
        .read::<Pending>(&key)
        .await?
        .is_some_and(|p| p.generated_id);
    if key.starts_with(DELAYED_PREFIX) {
        // The next delayed event, the cancelled one aside: it may have been the first.
        let next = step
            .list::<Pending>(ListOptions::prefix(DELAYED_PREFIX).limit(2))
            .await?
            .into_iter()
            .find(|(other, _)| *other != key);
        let pool = step.record_mut();
        pool.delayed = pool.delayed.saturating_sub(1);
        pool.next_delayed_at = next.and_then(|(_, p)| p.run_at);
    } else {
        let pool = step.record_mut();
        if pool.current.as_deref() == Some(key.as_str()) {
            pool.current = None;
            pool.retry_at = None;
        }
        pool.pending = pool.pending.saturating_sub(1);
    }
    step.writes().delete(key);
    mark_done(&mut step, job, &event_id, generated_id)?;
    step.emit(EventKind::WorkerPoolCancelled { event_id });
    step.finish().await?;
    Ok(Response::Cancelled { cancelled: true })
}

/// Remembers a finished (processed, cancelled or discarded) event id until the retention
/// period ends, so that the same id enqueued again is reported as a duplicate. An id made
/// up at enqueue is forgotten at once: nobody can send it again.
pub(super) fn mark_done<B: Storage + Clock>(
    step: &mut PoolStep<'_, B>,
    job: &dyn ErasedWorkerPool,
    event_id: &str,
    generated_id: bool,
) -> Result<(), JobError> {
    if generated_id {
        step.writes().delete(idempotency::record_key(event_id));
        return Ok(());
    }
    let expires = step.now().saturating_add(job.config().retention_ms);
    step.remember_id(event_id, &IdRecord::Done { expires }, expires, None)
}

async fn status<B: Storage + Clock>(
    step: &PoolStep<'_, B>,
    index: u32,
) -> Result<Response, JobError> {
    let pool = step.record();
    let retrying = match &pool.current {
        Some(key) => step.read::<Pending>(key).await?.map(|p| p.event_id),
        None => None,
    };
    Ok(Response::WorkerPoolStatus {
        status: PoolInstanceStatus {
            index,
            status: step.meta().map_or(Status::Active, |m| m.status.clone()),
            pending: pool.pending,
            delayed: pool.delayed,
            next_delayed_at: pool.next_delayed_at,
            processed: pool.processed,
            dead_letters: pool.dead,
            retrying,
            retry_at: pool.retry_at,
            overdue_since: step.engine().overdue_since(),
        },
    })
}

/// One page of the dead-letter list, after sequence `after`.
async fn dead_letters<B: Storage + Clock>(
    step: &PoolStep<'_, B>,
    after: Option<u64>,
    limit: u32,
) -> Result<Response, JobError> {
    let start = after.map(|s| dead_key(s.saturating_add(1)));
    let mut options = ListOptions::prefix(DEAD_PREFIX).limit(limit.clamp(1, 1000) as usize);
    if let Some(s) = &start {
        options = options.start(s);
    }
    let found: Vec<(String, DeadLetter)> = step.list(options).await?;
    let items = found.into_iter().map(|(_, letter)| letter).collect();
    Ok(Response::DeadLetters { items })
}

/// Events after the cursor (a queue or delayed key): the queue in queue order, then the
/// delayed events by run time.
async fn pending<B: Storage + Clock>(
    step: &PoolStep<'_, B>,
    after: Option<String>,
    limit: u32,
) -> Result<Response, JobError> {
    let limit = limit.clamp(1, MAX_PENDING_PAGE) as usize;
    // Just past the cursor: no key lies between a key and itself with a NUL appended.
    let start = after.map(|key| format!("{key}\0"));
    let in_queue = match &start {
        None => true,
        Some(start) if start.starts_with(QUEUE_PREFIX) => true,
        Some(start) if start.starts_with(DELAYED_PREFIX) => false,
        Some(start) => {
            return Err(JobError::bad_request(format!(
                "`{}` is not a cursor of this queue",
                start.trim_end_matches('\0')
            )))
        }
    };
    let mut found: Vec<(String, Pending, bool)> = Vec::new();
    if in_queue {
        let mut options = ListOptions::prefix(QUEUE_PREFIX).limit(limit);
        if let Some(start) = &start {
            options = options.start(start);
        }
        let queued: Vec<(String, Pending)> = step.list(options).await?;
        found.extend(queued.into_iter().map(|(key, p)| (key, p, false)));
    }
    if found.len() < limit {
        let mut options = ListOptions::prefix(DELAYED_PREFIX).limit(limit - found.len());
        if let (false, Some(start)) = (in_queue, &start) {
            options = options.start(start);
        }
        let delayed: Vec<(String, Pending)> = step.list(options).await?;
        found.extend(delayed.into_iter().map(|(key, p)| (key, p, true)));
    }
    let next = (found.len() == limit)
        .then(|| found.last().map(|(key, _, _)| key.clone()))
        .flatten();
    let items = found
        .into_iter()
        .map(|(_, p, delayed)| QueuedEvent::new(p, delayed))
        .collect();
    Ok(Response::PendingEvents { items, next })
}

/// What to do with dead letters.
#[derive(Clone, Copy)]
enum DeadLetterChange {
    /// Back into the queue with fresh attempts, at the back of their priority.
    Replay,
    /// Deleted; their ids are remembered as done.
    Discard,
}

async fn change_dead_letters<B: Storage + Clock>(
    mut step: PoolStep<'_, B>,
    job: &dyn ErasedWorkerPool,
    event_ids: Option<Vec<String>>,
    change: DeadLetterChange,
) -> Result<Response, JobError> {
    let letters = find_dead_letters(&step, event_ids).await?;
    let count = letters.len() as u32;
    for (key, letter) in letters {
        step.writes().delete(key);
        let pool = step.record_mut();
        pool.dead = pool.dead.saturating_sub(1);
        match change {
            DeadLetterChange::Replay => {
                let pending = Pending {
                    event_id: letter.event_id,
                    event: letter.event,
                    priority: letter.priority,
                    seq: pool.next_seq,
                    enqueued_at: letter.enqueued_at,
                    attempt: 0,
                    last_error: None,
                    generated_id: letter.generated_id,
                    first_attempt_at: None,
                    run_at: None,
                };
                queue(&mut step, pending, None)?;
            }
            DeadLetterChange::Discard => {
                mark_done(&mut step, job, &letter.event_id, letter.generated_id)?
            }
        }
    }
    if count > 0 {
        step.finish().await?;
    }
    Ok(Response::DeadLettersChanged { count })
}

/// The dead letters named by `event_ids`, or the first page of all of them.
async fn find_dead_letters<B: Storage + Clock>(
    step: &PoolStep<'_, B>,
    event_ids: Option<Vec<String>>,
) -> Result<Vec<(String, DeadLetter)>, JobError> {
    let Some(ids) = event_ids else {
        let options = ListOptions::prefix(DEAD_PREFIX).limit(DEAD_LETTERS_PER_REQUEST);
        return step.list(options).await;
    };
    let mut letters = Vec::new();
    // An id named twice is one dead letter, acted on once.
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    for id in unique.into_iter().take(DEAD_LETTERS_PER_REQUEST) {
        let record = step.read::<IdRecord>(&idempotency::record_key(id)).await?;
        if let Some(IdRecord::Dead { key }) = record {
            if let Some(letter) = step.read::<DeadLetter>(&key).await? {
                letters.push((key, letter));
            }
        }
    }
    Ok(letters)
}

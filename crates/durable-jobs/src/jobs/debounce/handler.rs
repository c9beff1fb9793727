//! Debounce requests: add (of one event or several), flush, clear, status, get_state,
//! failed_batches. Only an add runs user code: the reducer, which is synchronous and does no
//! I/O.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::erased::ErasedDebounce;
use super::{
    failed_key, full_key, AddItem, AddOutcome, DebounceStatus, FailedBatch, PendingBatch, Record,
    FAILED_PREFIX, FULL_PREFIX,
};
use crate::adapters::{Clock, ListOptions, Storage};
use crate::engine::{Engine, Step};
use crate::errors::JobError;
use crate::events::{EventKind, FlushReason};
use crate::ids::{InstanceId, JobKind};
use crate::services::{idempotency, purge};
use crate::wire::{Operation, Response};

type DebounceStep<'a, B> = Step<'a, B, Record>;

/// What the idempotency record of a debounce event id holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Seen {
    at: i64,
    /// Absent in records written before expiries were stored: they expire one retention
    /// period after `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
}

impl Seen {
    fn expires_at(&self, retention_ms: i64) -> i64 {
        self.expires
            .unwrap_or_else(|| self.at.saturating_add(retention_ms))
    }
}

pub(crate) async fn handle<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedDebounce,
    instance: &InstanceId,
    op: Operation,
) -> Result<Response, JobError> {
    match op {
        Operation::DebounceAdd { event, event_id } => {
            let id_key = event_id.as_deref().map(idempotency::record_key);
            let extra: Vec<&str> = id_key.iter().map(String::as_str).collect();
            let step = engine.step(instance, &extra).await?;
            add(step, job, &event, event_id).await
        }
        Operation::DebounceAddMany { events } => {
            let ids = distinct_ids(&events);
            let id_keys: Vec<String> = ids.iter().map(|id| idempotency::record_key(id)).collect();
            let extra: Vec<&str> = id_keys.iter().map(String::as_str).collect();
            let step = engine.step(instance, &extra).await?;
            add_many(step, job, events, &ids).await
        }
        Operation::DebounceClear => clear(engine, job, instance, Scope::Everything).await,
        Operation::DebounceDiscardFailed => {
            clear(engine, job, instance, Scope::FailedBatches).await
        }
        op => {
            let step = engine.step(instance, &[]).await?;
            match op {
                Operation::DebounceFlush => flush(step).await,
                Operation::DebounceStatus => Ok(status(&step)),
                Operation::DebounceGetState => Ok(Response::State {
                    state: step.record().batch.as_ref().map(|b| b.state.clone()),
                }),
                Operation::DebounceFailedBatches => failed_batches(&step).await,
                other => Err(JobError::wrong_kind(&other, JobKind::Debounce)),
            }
        }
    }
}

/// Adds one event: [`take_event`] in a step of its own. A refused event fails the add; a
/// duplicate commits nothing.
async fn add<B: Storage + Clock>(
    mut step: DebounceStep<'_, B>,
    job: &dyn ErasedDebounce,
    event: &Value,
    event_id: Option<String>,
) -> Result<Response, JobError> {
    let until = match &event_id {
        Some(id) => seen_until(&step, 0, id, job.config().retention_ms)?,
        None => None,
    };
    let outcome = take_event(&mut step, job, event, event_id, until)?;
    if let Some(error) = outcome.rejected {
        return Err(error);
    }
    if !outcome.duplicate {
        step.finish().await?;
    }
    Ok(Response::Added {
        event_count: outcome.event_count,
        duplicate: outcome.duplicate,
        flush_at: outcome.flush_at,
    })
}

/// The event ids of `events`, each once, in the order they first appear: the id records
/// an add of several reads with its step.
fn distinct_ids(events: &[AddItem]) -> Vec<String> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter_map(|e| e.event_id.as_ref())
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

/// Adds several events in one step, each as `add` would at its turn: in order, so that the
/// reducer sees them in the order given and `max_events` closes batches among them as it
/// would between single adds. `ids` are the extra keys read with the step (see
/// [`distinct_ids`]). One event refused, or a duplicate, leaves the others alone.
async fn add_many<B: Storage + Clock>(
    mut step: DebounceStep<'_, B>,
    job: &dyn ErasedDebounce,
    events: Vec<AddItem>,
    ids: &[String],
) -> Result<Response, JobError> {
    let retention_ms = job.config().retention_ms;
    // Until when each id is remembered: as read, then as an earlier event of this request
    // remembered it, so that a repeated id is a duplicate exactly as in a later add.
    let mut remembered: HashMap<String, i64> = HashMap::with_capacity(ids.len());
    for (index, id) in ids.iter().enumerate() {
        if let Some(until) = seen_until(&step, index, id, retention_ms)? {
            remembered.insert(id.clone(), until);
        }
    }
    let mut outcomes = Vec::with_capacity(events.len());
    let mut changed = false;
    for AddItem { event, event_id } in events {
        let until = event_id.as_ref().and_then(|id| remembered.get(id).copied());
        let id = event_id.clone();
        let outcome = take_event(&mut step, job, &event, event_id, until)?;
        let added = !outcome.duplicate && outcome.rejected.is_none();
        if let (true, Some(id)) = (added, id) {
            remembered.insert(id, step.now().saturating_add(retention_ms));
        }
        changed |= added;
        outcomes.push(outcome);
    }
    if changed {
        step.finish().await?;
    }
    Ok(Response::AddedMany { outcomes })
}

/// Takes one event into the open batch, opening one if needed, within `step`. A batch that
/// reached `max_events` flushes at once; if it is still waiting when the next event
/// arrives, it is closed and the event opens the next batch, so no flush ever sees more
/// than `max_events`.
///
/// `seen_until` is when the record of the event's id expires, if one was ever written
/// (expired or not). A live id makes the event a duplicate; an event that does not decode,
/// or that the reducer refuses or panics on, is `rejected` with the error an add fails
/// with. Neither changes the step. An `Err` is a failure of the step itself (an encoding):
/// the step must not be committed.
fn take_event<B: Storage + Clock>(
    step: &mut DebounceStep<'_, B>,
    job: &dyn ErasedDebounce,
    event: &Value,
    event_id: Option<String>,
    seen_until: Option<i64>,
) -> Result<AddOutcome, JobError> {
    let config = job.config();
    let now = step.now();
    let as_it_stands = |step: &DebounceStep<'_, B>, duplicate, rejected| {
        let batch = step.record().batch.as_ref();
        AddOutcome {
            event_count: batch.map_or(0, |b| b.event_count),
            duplicate,
            flush_at: batch.map(|b| b.flush_at),
            rejected,
        }
    };
    if seen_until.is_some_and(|t| t > now) {
        return Ok(as_it_stands(step, true, None));
    }
    // The reducer runs before anything changes, so that a refused event leaves no trace. A
    // full open batch is about to be closed: the event then opens the next one.
    let open_state = step
        .record()
        .batch
        .as_ref()
        .filter(|b| !is_full(b, config.max_events))
        .map(|b| &b.state);
    let state = match job.reduce(step.instance(), open_state, event) {
        Ok(state) => state,
        Err(error) => return Ok(as_it_stands(step, false, Some(error))),
    };
    close_full_batch(step, config.max_events)?;
    step.create_meta();
    step.change_meta(purge::cancel);
    let (event_count, flush_at) = fold(step, job, state);
    if let Some(id) = &event_id {
        let expires = now.saturating_add(config.retention_ms);
        let seen = Seen {
            at: now,
            expires: Some(expires),
        };
        step.remember_id(id, &seen, expires, seen_until)?;
    }
    step.emit(EventKind::DebounceEventReceived {
        event_id,
        event_count,
    });
    Ok(AddOutcome {
        event_count,
        duplicate: false,
        flush_at: Some(flush_at),
        rejected: None,
    })
}

/// Until when `event_id` was remembered, if it ever was (expired or not): its record is
/// extra key `index` of the step.
fn seen_until<B: Storage + Clock>(
    step: &DebounceStep<'_, B>,
    index: usize,
    event_id: &str,
    retention_ms: i64,
) -> Result<Option<i64>, JobError> {
    let seen = step.extra::<Seen>(index, &idempotency::record_key(event_id))?;
    Ok(seen.map(|seen| seen.expires_at(retention_ms)))
}

/// Puts the reduced `state` into the open batch, opening one if needed; a batch that
/// becomes full is due at once. Returns its event count and flush time.
fn fold<B: Storage + Clock>(
    step: &mut DebounceStep<'_, B>,
    job: &dyn ErasedDebounce,
    state: Value,
) -> (u32, i64) {
    let config = job.config();
    let now = step.now();
    let open = step.record_mut().batch.get_or_insert_with(|| PendingBatch {
        state: Value::Null,
        event_count: 0,
        started_at: now,
        flush_at: now.saturating_add(config.flush_after_ms),
        forced: None,
    });
    open.state = state;
    open.event_count = open.event_count.saturating_add(1);
    if is_full(open, config.max_events) && open.forced.is_none() {
        open.forced = Some(FlushReason::MaxEvents);
    }
    (open.event_count, open.flush_at)
}

fn is_full(batch: &PendingBatch, max_events: Option<u32>) -> bool {
    max_events.is_some_and(|max| batch.event_count >= max)
}

/// Moves a full open batch to the queue of full batches, where it waits its turn.
fn close_full_batch<B: Storage + Clock>(
    step: &mut DebounceStep<'_, B>,
    max_events: Option<u32>,
) -> Result<(), JobError> {
    let full = step
        .record()
        .batch
        .as_ref()
        .is_some_and(|b| is_full(b, max_events));
    if !full {
        return Ok(());
    }
    let rec = step.record_mut();
    let Some(batch) = rec.batch.take() else {
        return Ok(());
    };
    let seq = rec.next_full_seq;
    rec.next_full_seq = rec.next_full_seq.saturating_add(1);
    rec.full_batches = rec.full_batches.saturating_add(1);
    step.put(full_key(seq), &batch)
}

/// Asks for the open batch, and every failed batch, to flush now (through the alarm).
async fn flush<B: Storage + Clock>(mut step: DebounceStep<'_, B>) -> Result<Response, JobError> {
    if step.meta().is_none() {
        return Ok(Response::FlushRequested {
            event_count: 0,
            retried_batches: 0,
        });
    }
    let rec = step.record_mut();
    let event_count = match rec.batch.as_mut() {
        Some(b) => {
            b.forced.get_or_insert(FlushReason::Manual);
            b.event_count
        }
        None => 0,
    };
    let retried_batches = rec.failed_count;
    rec.retry_failed = rec.failed_count > 0;
    rec.retry_left = rec.failed_count;
    step.finish().await?;
    Ok(Response::FlushRequested {
        event_count,
        retried_batches,
    })
}

/// Rows (failed and full batches) one step of a clear deletes at most: every row listed is
/// read into memory, on some platforms into a small isolate, so no step lists them all.
const CLEAR_PAGE: usize = 500;

/// Failed batches one `failed_batches` request returns at most, the oldest first.
const FAILED_BATCHES_LIMIT: usize = 1000;

/// What a clear drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The open batch, full and failed batches, and a batch waiting for its retry.
    Everything,
    /// The failed batches only.
    FailedBatches,
}

/// A clear in progress, carried from one page to the next.
#[derive(Debug)]
struct Clearing {
    /// What it drops.
    scope: Scope,
    /// Where the clear stops, fixed by its first page.
    bound: Option<ClearBound>,
    /// Events discarded so far.
    discarded: u32,
    /// The last page is committed.
    done: bool,
}

impl Clearing {
    /// A clear of `scope`, not begun.
    fn new(scope: Scope) -> Self {
        Clearing {
            scope,
            bound: None,
            discarded: 0,
            done: false,
        }
    }
}

/// The first failed and full keys given out after a clear began. Keys carry increasing
/// sequence numbers, so the batches below these existed when it began; the clear deletes
/// only those, and keeps what steps between its pages add (a full batch, a flush that
/// failed).
#[derive(Debug, Clone)]
struct ClearBound {
    failed: String,
    full: String,
}

/// Just the event count of a stored batch (failed or full), without decoding its state.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Counted {
    event_count: u32,
}

/// Drops what `scope` says: everything (the open batch, full and failed batches, and a
/// batch waiting for its retry; a batch being flushed right now finishes), or the failed
/// batches only. It works in pages, each its own step, so no step reads more than
/// [`CLEAR_PAGE`] rows; a crash between pages leaves the earlier pages applied.
async fn clear<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedDebounce,
    instance: &InstanceId,
    scope: Scope,
) -> Result<Response, JobError> {
    let mut clearing = Clearing::new(scope);
    while !clearing.done {
        clear_page(engine, job, instance, &mut clearing).await?;
    }
    Ok(Response::Cleared {
        discarded: clearing.discarded,
    })
}

/// One step of a clear. The first page fixes the bound and takes the open batch and a batch
/// waiting for its retry; every page deletes up to [`CLEAR_PAGE`] failed, then full, batches
/// below the bound and lowers the counts by what it deleted, so the record matches storage
/// after each page. The page that finds fewer rows than it may delete is the last: it
/// reports the clear and, if nothing is left, schedules the purge.
async fn clear_page<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedDebounce,
    instance: &InstanceId,
    clearing: &mut Clearing,
) -> Result<(), JobError> {
    let mut step: DebounceStep<'_, B> = engine.step(instance, &[]).await?;
    if step.meta().is_none() {
        // Nothing to clear, or nothing left of the instance.
        clearing.done = true;
        return Ok(());
    }
    let bound = match &clearing.bound {
        Some(bound) => bound.clone(),
        None => {
            let rec = step.record();
            let bound = ClearBound {
                failed: failed_key(rec.next_seq),
                full: full_key(rec.next_full_seq),
            };
            clearing.bound = Some(bound.clone());
            if clearing.scope == Scope::Everything {
                let taken = take_open_and_retrying(&mut step);
                clearing.discarded = clearing.discarded.saturating_add(taken);
            }
            bound
        }
    };
    let failed: Vec<(String, Counted)> = step
        .list(
            ListOptions::prefix(FAILED_PREFIX)
                .end(&bound.failed)
                .limit(CLEAR_PAGE),
        )
        .await?;
    let room = CLEAR_PAGE.saturating_sub(failed.len());
    let full: Vec<(String, Counted)> = if room == 0 || clearing.scope == Scope::FailedBatches {
        Vec::new()
    } else {
        step.list(
            ListOptions::prefix(FULL_PREFIX)
                .end(&bound.full)
                .limit(room),
        )
        .await?
    };
    let last = failed.len() + full.len() < CLEAR_PAGE;
    let (failed_rows, full_rows) = (count(failed.len()), count(full.len()));
    for (key, batch) in failed.into_iter().chain(full) {
        clearing.discarded = clearing.discarded.saturating_add(batch.event_count);
        step.writes().delete(key);
    }
    let rec = step.record_mut();
    rec.failed_count = rec.failed_count.saturating_sub(failed_rows);
    rec.full_batches = rec.full_batches.saturating_sub(full_rows);
    // A flush between pages may have asked for failed batches to be retried: it can retry
    // only those left.
    rec.retry_left = rec.retry_left.min(rec.failed_count);
    rec.retry_failed &= rec.failed_count > 0;
    if last {
        clearing.done = true;
        if step.record().is_idle() {
            let (now, retention_ms) = (step.now(), job.config().retention_ms);
            step.change_meta(|meta| {
                meta.set_status(crate::services::metadata::Status::Active, now);
                purge::schedule(meta, now, retention_ms);
                true
            });
        }
        step.emit(EventKind::DebounceCleared {
            discarded_events: clearing.discarded,
        });
    }
    step.finish().await
}

/// Takes the open batch, and a batch waiting for its retry (not one being flushed now, which
/// finishes), and cancels a retry of failed batches a flush asked for. Returns the events
/// taken.
fn take_open_and_retrying<B: Storage + Clock>(step: &mut DebounceStep<'_, B>) -> u32 {
    // Flushing here, or (where attempts are recorded at their start) in another process
    // sharing the storage, or in one that crashed before recording the outcome.
    let started = step
        .record()
        .inflight
        .as_ref()
        .is_some_and(|i| i.started > i.attempt);
    let executing = step.engine().is_executing() || started;
    let rec = step.record_mut();
    let mut taken = rec.batch.take().map_or(0, |b| b.event_count);
    rec.retry_failed = false;
    rec.retry_left = 0;
    if rec.inflight.as_ref().is_some_and(|i| i.retry_at.is_some()) && !executing {
        taken = taken.saturating_add(rec.inflight.take().map_or(0, |i| i.batch.event_count));
    }
    taken
}

/// A row count as a counter's type (a page holds far fewer rows than `u32::MAX`).
fn count(rows: usize) -> u32 {
    u32::try_from(rows).unwrap_or(u32::MAX)
}

fn status<B: Storage + Clock>(step: &DebounceStep<'_, B>) -> Response {
    let rec = step.record();
    let status = step.meta().map(|m| DebounceStatus {
        status: m.status.clone(),
        event_count: rec.batch.as_ref().map_or(0, |b| b.event_count),
        full_batches: rec.full_batches,
        started_at: rec.batch.as_ref().map(|b| b.started_at),
        flush_at: rec.batch.as_ref().map(|b| b.flush_at),
        flushing: rec.inflight.is_some(),
        retry_at: rec.inflight.as_ref().and_then(|i| i.retry_at),
        failed_batches: rec.failed_count,
        last_error: rec.last_error.clone(),
        created_at: m.created_at,
        purge_at: m.purge_at,
        overdue_since: step.engine().overdue_since(),
    });
    Response::DebounceStatus { status }
}

/// The oldest failed batches, at most [`FAILED_BATCHES_LIMIT`]: the status counts them all.
async fn failed_batches<B: Storage + Clock>(
    step: &DebounceStep<'_, B>,
) -> Result<Response, JobError> {
    let oldest = ListOptions::prefix(FAILED_PREFIX).limit(FAILED_BATCHES_LIMIT);
    let found: Vec<(String, FailedBatch)> = step.list(oldest).await?;
    let batches = found.into_iter().map(|(_, batch)| batch).collect();
    Ok(Response::FailedBatches { batches })
}

#[cfg(test)]
mod tests {
    //! A clear's pages, driven one at a time with real requests and alarms between them.
    //! Nothing interleaves with a clear through the engine today (its next page takes the
    //! instance's lock again before another waiter runs), so the bound is checked here, where
    //! the pages can be separated.

    use std::collections::BTreeMap;
    use std::time::Duration;

    use futures::executor::block_on;
    use serde_json::{json, Value};

    use super::*;
    use crate::adapters::memory::MemoryStorage;
    use crate::adapters::VirtualClock;
    use crate::registry::Entry;
    use crate::wire::Request;
    use crate::{Debounce, DebounceContext, Registry, RetryPolicy};

    /// Batches of one event whose flush fails at once, with no retry.
    struct Failing;

    impl Debounce for Failing {
        type Event = u32;
        type State = u32;
        type Error = String;
        fn flush_after(&self) -> Duration {
            Duration::from_secs(5)
        }
        fn max_events(&self) -> Option<u32> {
            Some(1)
        }
        fn retry(&self) -> RetryPolicy {
            RetryPolicy::none()
        }
        async fn execute(&self, _ctx: &DebounceContext<u32>) -> Result<(), String> {
            Err("down".into())
        }
    }

    struct Setup {
        engine: Engine<MemoryStorage>,
        registry: Registry,
        instance: InstanceId,
        clock: VirtualClock,
    }

    impl Setup {
        fn new() -> Self {
            let registry = Registry::builder()
                .debounce("failing", Failing)
                .build()
                .unwrap();
            let clock = VirtualClock::new(1_000_000);
            let storage = MemoryStorage::new(clock.clone());
            Setup {
                engine: Engine::new(registry.clone(), storage),
                registry,
                instance: InstanceId::new(JobKind::Debounce, "failing", "k"),
                clock,
            }
        }

        fn job(&self) -> &dyn ErasedDebounce {
            match self.registry.entry(JobKind::Debounce, "failing").unwrap() {
                Entry::Debounce(job) => job.as_ref(),
                _ => unreachable!("registered as a debounce job"),
            }
        }

        async fn request(&self, op: Operation) -> Response {
            let request = Request {
                instance: self.instance.clone(),
                op,
            };
            self.engine.handle(request).await.unwrap()
        }

        async fn add(&self, n: u32) {
            let op = Operation::DebounceAdd {
                event: json!(n),
                event_id: None,
            };
            self.request(op).await;
        }

        /// Fires the alarm while it is due, as a platform would.
        async fn run_alarms(&self) {
            let storage = self.engine.backend();
            while storage.alarm().is_some_and(|t| t <= self.clock.now()) {
                storage.set_alarm(None);
                self.engine.alarm().await.unwrap();
            }
        }

        /// One alarm call: up to one alarm's worth of flushes.
        async fn one_alarm(&self) {
            self.engine.backend().set_alarm(None);
            self.engine.alarm().await.unwrap();
        }

        fn rows(&self) -> BTreeMap<String, Value> {
            self.engine
                .backend()
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k, serde_json::from_slice(&v).unwrap()))
                .collect()
        }

        fn record(&self) -> Record {
            serde_json::from_value(self.rows()["debounce"].clone()).unwrap()
        }

        /// Makes `failed` failed batches, then `full` full batches and an open one, of one
        /// event each, the events numbered from 0.
        async fn fill(&self, failed: u32, full: u32) {
            for n in 0..failed {
                self.add(n).await;
            }
            self.run_alarms().await;
            for n in failed..=failed + full {
                self.add(n).await;
            }
            let rec = self.record();
            assert_eq!((rec.failed_count, rec.full_batches), (failed, full));
        }
    }

    fn keys_with<'a>(rows: &'a BTreeMap<String, Value>, prefix: &'a str) -> Vec<&'a String> {
        rows.keys().filter(|k| k.starts_with(prefix)).collect()
    }

    /// The counts of the record match the rows stored.
    fn assert_counts_match(setup: &Setup) {
        let rows = setup.rows();
        let rec = setup.record();
        assert_eq!(
            rec.failed_count as usize,
            keys_with(&rows, FAILED_PREFIX).len()
        );
        assert_eq!(
            rec.full_batches as usize,
            keys_with(&rows, FULL_PREFIX).len()
        );
    }

    /// Every event stored in a batch: open, full or failed.
    fn stored_events(setup: &Setup) -> Vec<u64> {
        let rows = setup.rows();
        let mut events: Vec<u64> = rows
            .iter()
            .filter(|(k, _)| k.starts_with(FAILED_PREFIX) || k.starts_with(FULL_PREFIX))
            .map(|(_, v)| v["state"].as_u64().unwrap())
            .collect();
        events.extend(setup.record().batch.map(|b| b.state.as_u64().unwrap()));
        events.sort_unstable();
        events
    }

    #[test]
    fn batches_made_between_pages_survive_the_clear() {
        block_on(async {
            let setup = Setup::new();
            let (failed, full) = (300, 400);
            setup.fill(failed, full).await;
            let job = setup.job();

            let mut clearing = Clearing::new(Scope::Everything);
            clear_page(&setup.engine, job, &setup.instance, &mut clearing)
                .await
                .unwrap();
            assert!(!clearing.done, "{} rows take two pages", failed + full);
            assert_counts_match(&setup);

            // Between the pages: an add opens a batch and the next closes it as a full
            // batch; an alarm flushes the oldest full batches, which fail again.
            setup.add(9001).await;
            setup.add(9002).await;
            setup.one_alarm().await;
            let rows = setup.rows();
            let refailed = keys_with(&rows, FAILED_PREFIX).len();
            assert!(refailed > 0, "flushes failed between the pages");

            while !clearing.done {
                clear_page(&setup.engine, job, &setup.instance, &mut clearing)
                    .await
                    .unwrap();
                assert_counts_match(&setup);
            }

            let bound = clearing.bound.clone().unwrap();
            let rows = setup.rows();
            let failed_left = keys_with(&rows, FAILED_PREFIX);
            let full_left = keys_with(&rows, FULL_PREFIX);
            assert!(failed_left.iter().all(|k| **k >= bound.failed));
            assert!(full_left.iter().all(|k| **k >= bound.full));
            assert_eq!(
                failed_left.len(),
                refailed,
                "the flushes that failed are kept"
            );
            assert_eq!(
                full_left.len(),
                1,
                "the batch closed between the pages is kept"
            );
            assert_eq!(rows[full_left[0]]["state"], json!(9001));
            assert_eq!(setup.record().batch.unwrap().state, json!(9002));
            // Every event was either discarded or is still stored.
            let kept = stored_events(&setup);
            assert_eq!(kept.len(), refailed + 2);
            let all = failed + full + 1 + 2;
            assert_eq!(clearing.discarded as usize + kept.len(), all as usize);
            // Not idle: no purge.
            let meta = &rows["meta"];
            assert_eq!(meta["purgeAt"], Value::Null);
        });
    }

    #[test]
    fn an_interrupted_clear_is_finished_by_the_next() {
        block_on(async {
            let setup = Setup::new();
            let (failed, full) = (450, 450);
            setup.fill(failed, full).await;
            let job = setup.job();

            let mut clearing = Clearing::new(Scope::Everything);
            clear_page(&setup.engine, job, &setup.instance, &mut clearing)
                .await
                .unwrap();
            // The request ends here (a crash, a failed step): the first page stands alone.
            assert_counts_match(&setup);
            let rec = setup.record();
            assert_eq!(
                rec.failed_count + rec.full_batches,
                failed + full - CLEAR_PAGE as u32
            );
            assert!(rec.batch.is_none());

            let response = setup.request(Operation::DebounceClear).await;
            let left = failed + full - CLEAR_PAGE as u32;
            assert!(matches!(response, Response::Cleared { discarded } if discarded == left));
            assert_counts_match(&setup);
            assert!(stored_events(&setup).is_empty());
            let rows = setup.rows();
            assert!(setup.record().is_idle());
            assert_eq!(rows["meta"]["status"]["status"], json!("active"));
            assert!(rows["meta"]["purgeAt"].is_i64());
        });
    }
}

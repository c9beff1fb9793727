//! The typed WorkerPool client: routing, and operations on one instance or all.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::routing::jump_hash;
use super::{DeadLetter, EnqueueItem, EnqueueOutcome, PoolInstanceStatus, QueuedEvent, WorkerPool};
use crate::client::{expect_response, many, JobsClient, Transport};
use crate::errors::JobError;
use crate::ids::JobKind;
use crate::services::codec;
use crate::wire::{Operation, Response};

/// Options of an `enqueue`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueRequest {
    /// Deduplication and cancel id (generated when absent).
    pub event_id: Option<String>,
    /// Events with the same key go to the same instance, in order.
    pub partition_key: Option<String>,
    /// Higher runs first (default 0).
    pub priority: i32,
    /// When the event may run: at once when absent.
    pub run_at: Option<RunAt>,
}

/// When an enqueued event may run.
///
/// A delayed event waits apart from the queue and holds up nothing: the events of its
/// partition behind it run meanwhile. Once due, it takes its place among the queued events
/// by priority, then enqueue order. A time at most [`MAX_DELAY`](super::MAX_DELAY) ahead is
/// accepted; further is refused with [`JobError::BadRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAt {
    /// This long after the instance receives the event, on the instance's clock.
    Delay(Duration),
    /// At this time (ms since the epoch, as every time of the API); a time already past
    /// runs it at once.
    Time(i64),
}

impl RunAt {
    /// The wire's `(run_at, delay_ms)`. A delay beyond what milliseconds in a `u64` hold
    /// saturates, and the instance refuses it as too far ahead.
    fn to_wire(self) -> (Option<i64>, Option<u64>) {
        match self {
            RunAt::Delay(delay) => (
                None,
                Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            ),
            RunAt::Time(at) => (Some(at), None),
        }
    }
}

impl EnqueueRequest {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the event id.
    pub fn event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = Some(id.into());
        self
    }

    /// Sets the partition key.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Runs the event no sooner than `delay` after the instance receives it (replaces a
    /// [`run_at`](Self::run_at)). See [`RunAt`].
    pub fn delay(mut self, delay: Duration) -> Self {
        self.run_at = Some(RunAt::Delay(delay));
        self
    }

    /// Runs the event no sooner than `at`, in milliseconds since the epoch (replaces a
    /// [`delay`](Self::delay)). From chrono, `at` is `time.timestamp_millis()`. See
    /// [`RunAt`].
    pub fn run_at(mut self, at: i64) -> Self {
        self.run_at = Some(RunAt::Time(at));
        self
    }

    /// The wire's `(run_at, delay_ms)` of these options.
    fn run_time(&self) -> (Option<i64>, Option<u64>) {
        self.run_at.map_or((None, None), RunAt::to_wire)
    }
}

/// The outcome of an `enqueue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The event id (given or generated).
    pub event_id: String,
    /// The instance it went to.
    pub instance_index: u32,
    /// Events waiting on that instance (queued and delayed), this one included.
    pub position: u64,
    /// The id was seen before: nothing changed.
    pub duplicate: bool,
}

/// The status of a whole pool: every instance, and totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// One entry per instance, by index.
    pub instances: Vec<PoolInstanceStatus>,
    /// Queued events in all (delayed ones not counted).
    pub pending: u64,
    /// Delayed events in all.
    #[serde(default)]
    pub delayed: u64,
    /// Processed events in all.
    pub processed: u64,
    /// Dead letters in all.
    pub dead_letters: u64,
    /// Instances paused.
    pub paused: u32,
}

/// Operations on one WorkerPool.
pub struct WorkerPoolClient<'a, J, T> {
    client: &'a JobsClient<T>,
    name: Result<String, JobError>,
    _job: PhantomData<fn() -> J>,
}

impl<'a, J: WorkerPool, T: Transport> WorkerPoolClient<'a, J, T> {
    pub(crate) fn new(client: &'a JobsClient<T>, name: Result<String, JobError>) -> Self {
        WorkerPoolClient {
            client,
            name,
            _job: PhantomData,
        }
    }

    fn name(&self) -> Result<&str, JobError> {
        self.name.as_deref().map_err(Clone::clone)
    }

    /// The pool's instance count.
    pub fn concurrency(&self) -> Result<u32, JobError> {
        self.client.registry.concurrency(self.name()?)
    }

    async fn send(&self, index: u32, op: Operation) -> Result<Response, JobError> {
        self.client
            .call(JobKind::WorkerPool, &self.name, index.to_string(), op)
            .await
    }

    fn check_index(&self, index: u32) -> Result<u32, JobError> {
        let n = self.concurrency()?;
        if index < n {
            Ok(index)
        } else {
            Err(JobError::bad_request(format!(
                "instance index {index} is out of range for a pool of {n}"
            )))
        }
    }

    /// Where an event goes: by partition key (jump consistent hash), else by event id
    /// (so that duplicates meet on one instance), else round robin.
    pub fn route(&self, options: &EnqueueRequest) -> Result<u32, JobError> {
        let n = self.concurrency()?;
        Ok(match (&options.partition_key, &options.event_id) {
            (Some(key), _) => jump_hash(key, n),
            (None, Some(id)) => jump_hash(id, n),
            (None, None) => self.client.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        })
    }

    /// Enqueues an event with default options. Committed when it returns `Ok`.
    pub async fn enqueue(&self, event: &J::Event) -> Result<Enqueued, JobError> {
        self.enqueue_with(event, EnqueueRequest::new()).await
    }

    /// Enqueues an event with an id, a partition key, a priority or a run time.
    pub async fn enqueue_with(
        &self,
        event: &J::Event,
        options: EnqueueRequest,
    ) -> Result<Enqueued, JobError> {
        let index = self.route(&options)?;
        let event = codec::to_value("event", event)?;
        let (run_at, delay_ms) = options.run_time();
        let op = Operation::WorkerPoolEnqueue {
            event,
            event_id: options.event_id,
            priority: options.priority,
            run_at,
            delay_ms,
        };
        let response = self.send(index, op).await?;
        expect_response!(
            response,
            Response::Enqueued { event_id, instance_index, position, duplicate } => Enqueued {
                event_id,
                instance_index,
                position,
                duplicate,
            },
        )
    }

    /// Enqueues several events: each goes to the instance `enqueue_with` would pick, and
    /// each instance involved queues its share in one step (one request per instance, sent
    /// together). Answers once every share is committed, with one result per event, in the
    /// order given: a duplicate id is `Ok` with `duplicate`, and an instance whose request
    /// failed fails the results of its events only. An instance gets its events in
    /// requests of up to [`MAX_EVENTS_PER_REQUEST`](crate::MAX_EVENTS_PER_REQUEST), one
    /// after the other; once one fails, the rest of that instance's events are not sent and
    /// fail with the same error, so an instance never queues later events without the
    /// earlier ones. The outer `Err` is for a pool that is not registered or an event that
    /// does not encode.
    pub async fn enqueue_many(
        &self,
        events: &[(J::Event, EnqueueRequest)],
    ) -> Result<Vec<Result<Enqueued, JobError>>, JobError> {
        // Per instance: its items, and where each result goes.
        let mut shares: BTreeMap<u32, (Vec<EnqueueItem>, Vec<usize>)> = BTreeMap::new();
        for (position, (event, options)) in events.iter().enumerate() {
            let index = self.route(options)?;
            let (run_at, delay_ms) = options.run_time();
            let item = EnqueueItem {
                event: codec::to_value("event", event)?,
                event_id: options.event_id.clone(),
                priority: options.priority,
                run_at,
                delay_ms,
            };
            let share = shares.entry(index).or_default();
            share.0.push(item);
            share.1.push(position);
        }
        // A pool has few instances: all of them at once.
        let shares: Vec<_> = shares
            .into_iter()
            .map(|(index, (items, positions))| (index, items, positions))
            .collect();
        let parallel = shares.len();
        let results = many::send_shares(shares, events.len(), parallel, |index, events| {
            let size = events.len();
            async move {
                let response = self
                    .send(index, Operation::WorkerPoolEnqueueMany { events })
                    .await?;
                outcomes_of(index, size, response)
            }
        })
        .await;
        Ok(results)
    }

    /// Pauses one instance: it keeps its events and processes none.
    pub async fn pause(&self, index: u32) -> Result<(), JobError> {
        let response = self
            .send(self.check_index(index)?, Operation::WorkerPoolPause)
            .await?;
        expect_response!(response, Response::Paused => ())
    }

    /// Resumes one instance.
    pub async fn resume(&self, index: u32) -> Result<(), JobError> {
        let response = self
            .send(self.check_index(index)?, Operation::WorkerPoolResume)
            .await?;
        expect_response!(response, Response::Resumed => ())
    }

    /// Pauses every instance.
    pub async fn pause_all(&self) -> Result<(), JobError> {
        for index in 0..self.concurrency()? {
            self.pause(index).await?;
        }
        Ok(())
    }

    /// Resumes every instance.
    pub async fn resume_all(&self) -> Result<(), JobError> {
        for index in 0..self.concurrency()? {
            self.resume(index).await?;
        }
        Ok(())
    }

    /// Removes a pending event wherever it is. Returns `false` if it was not pending
    /// (unknown, already processed, dead-lettered, or running now).
    pub async fn cancel(&self, event_id: &str) -> Result<bool, JobError> {
        for index in 0..self.concurrency()? {
            let op = Operation::WorkerPoolCancel {
                event_id: event_id.to_string(),
            };
            let response = self.send(index, op).await?;
            if expect_response!(response, Response::Cancelled { cancelled } => cancelled)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One instance's status.
    pub async fn instance_status(&self, index: u32) -> Result<PoolInstanceStatus, JobError> {
        let response = self
            .send(self.check_index(index)?, Operation::WorkerPoolStatus)
            .await?;
        expect_response!(response, Response::WorkerPoolStatus { status } => status)
    }

    /// The status of every instance, with totals.
    pub async fn status(&self) -> Result<PoolStatus, JobError> {
        let mut status = PoolStatus {
            instances: Vec::new(),
            pending: 0,
            delayed: 0,
            processed: 0,
            dead_letters: 0,
            paused: 0,
        };
        for index in 0..self.concurrency()? {
            let s = self.instance_status(index).await?;
            status.pending += s.pending;
            status.delayed += s.delayed;
            status.processed += s.processed;
            status.dead_letters += s.dead_letters;
            if matches!(s.status, crate::services::metadata::Status::Paused { .. }) {
                status.paused += 1;
            }
            status.instances.push(s);
        }
        Ok(status)
    }

    /// Up to `limit` dead letters of one instance, after sequence `after`.
    pub async fn dead_letters(
        &self,
        index: u32,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, JobError> {
        let op = Operation::WorkerPoolDeadLetters { after, limit };
        let response = self.send(self.check_index(index)?, op).await?;
        expect_response!(response, Response::DeadLetters { items } => items)
    }

    /// A page of an instance's queued events, in queue order, then its delayed events, by
    /// run time, after `after` (a page's cursor); returns the events and the next page's
    /// cursor.
    pub async fn pending(
        &self,
        index: u32,
        after: Option<String>,
        limit: u32,
    ) -> Result<(Vec<QueuedEvent>, Option<String>), JobError> {
        let op = Operation::WorkerPoolPending { after, limit };
        let response = self.send(self.check_index(index)?, op).await?;
        expect_response!(response, Response::PendingEvents { items, next } => (items, next))
    }

    /// Every dead letter of the pool, with the instance index it is on.
    pub async fn all_dead_letters(&self) -> Result<Vec<(u32, DeadLetter)>, JobError> {
        let mut out = Vec::new();
        for index in 0..self.concurrency()? {
            let mut after = None;
            loop {
                let page = self.dead_letters(index, after, 500).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.seq);
                out.extend(page.into_iter().map(|d| (index, d)));
            }
        }
        Ok(out)
    }

    /// Puts dead letters back in the queue with fresh attempts: the given ids, or all of
    /// them. Returns how many were replayed.
    pub async fn replay(&self, event_ids: Option<&[&str]>) -> Result<u32, JobError> {
        self.change_dead_letters(event_ids, true).await
    }

    /// Deletes dead letters: the given ids, or all of them. Returns how many.
    pub async fn discard_dead_letters(&self, event_ids: Option<&[&str]>) -> Result<u32, JobError> {
        self.change_dead_letters(event_ids, false).await
    }

    async fn change_dead_letters(
        &self,
        event_ids: Option<&[&str]>,
        replay: bool,
    ) -> Result<u32, JobError> {
        let ids: Option<Vec<String>> =
            event_ids.map(|ids| ids.iter().map(|s| s.to_string()).collect());
        let mut total = 0;
        for index in 0..self.concurrency()? {
            loop {
                let op = if replay {
                    Operation::WorkerPoolReplay {
                        event_ids: ids.clone(),
                    }
                } else {
                    Operation::WorkerPoolDiscard {
                        event_ids: ids.clone(),
                    }
                };
                let response = self.send(index, op).await?;
                let count =
                    expect_response!(response, Response::DeadLettersChanged { count } => count)?;
                total += count;
                // All-dead-letter requests work in pages; named ids in one go.
                if count == 0 || ids.is_some() {
                    break;
                }
            }
        }
        Ok(total)
    }
}

/// The results of one request of `count` events to instance `index`.
fn outcomes_of(
    index: u32,
    count: usize,
    response: Response,
) -> Result<Vec<Result<Enqueued, JobError>>, JobError> {
    match response {
        Response::EnqueuedMany { outcomes, .. } if outcomes.len() == count => {
            Ok(outcomes.into_iter().map(|o| outcome(index, o)).collect())
        }
        other => Err(JobError::Client {
            status: 0,
            message: format!("unexpected answer to an enqueue of several: {other:?}"),
        }),
    }
}

/// One event's result in an enqueue of several.
fn outcome(instance_index: u32, outcome: EnqueueOutcome) -> Result<Enqueued, JobError> {
    match (outcome.rejected, outcome.event_id) {
        (Some(reason), _) => Err(JobError::bad_request(reason)),
        (None, Some(event_id)) => Ok(Enqueued {
            event_id,
            instance_index,
            position: outcome.position,
            duplicate: outcome.duplicate,
        }),
        (None, None) => Err(JobError::bad_request(
            "an event was neither queued nor refused",
        )),
    }
}

//! The typed Debounce client.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use super::{AddItem, AddOutcome, Debounce, DebounceStatus, FailedBatch};
use crate::client::{expect_response, many, JobsClient, Transport};
use crate::errors::JobError;
use crate::ids::JobKind;
use crate::services::codec;
use crate::wire::{Operation, Response};

/// Instances an `add_many` sends requests to at once: a call may name thousands of keys,
/// and a transport should not be handed a request for each of them at the same moment.
/// Events spread over many keys make requests of one or two events each, so this is what
/// keeps such a call as fast as as many single adds (at 32 it was a third slower).
const PARALLEL_INSTANCES: usize = 256;

/// The outcome of an `add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// Events in the pending batch now.
    pub event_count: u32,
    /// The event id was seen before: nothing changed.
    pub duplicate: bool,
    /// When the batch flushes.
    pub flush_at: Option<i64>,
}

/// Operations on the instances of one Debounce job.
pub struct DebounceClient<'a, J, T> {
    client: &'a JobsClient<T>,
    name: Result<String, JobError>,
    _job: PhantomData<fn() -> J>,
}

impl<'a, J: Debounce, T: Transport> DebounceClient<'a, J, T> {
    pub(crate) fn new(client: &'a JobsClient<T>, name: Result<String, JobError>) -> Self {
        DebounceClient {
            client,
            name,
            _job: PhantomData,
        }
    }

    async fn send(&self, id: &str, op: Operation) -> Result<Response, JobError> {
        self.client
            .call(JobKind::Debounce, &self.name, id, op)
            .await
    }

    /// Adds an event to instance `id`'s batch. Committed when it returns `Ok`.
    pub async fn add(&self, id: &str, event: &J::Event) -> Result<Added, JobError> {
        self.add_inner(id, event, None).await
    }

    /// Adds an event with an id; a repeated id within the retention period is reported as
    /// a duplicate and ignored, also after its batch has flushed.
    pub async fn add_with_id(
        &self,
        id: &str,
        event: &J::Event,
        event_id: &str,
    ) -> Result<Added, JobError> {
        self.add_inner(id, event, Some(event_id.to_string())).await
    }

    async fn add_inner(
        &self,
        id: &str,
        event: &J::Event,
        event_id: Option<String>,
    ) -> Result<Added, JobError> {
        let event = codec::to_value("event", event)?;
        let response = self
            .send(id, Operation::DebounceAdd { event, event_id })
            .await?;
        expect_response!(
            response,
            Response::Added { event_count, duplicate, flush_at } => Added {
                event_count,
                duplicate,
                flush_at,
            },
        )
    }

    /// Adds several events, each given as `(id, event, event_id)`: the instance's id, the
    /// event, and an optional event id as [`add_with_id`](Self::add_with_id) takes.
    ///
    /// Each instance takes its share of the events in one step (one request, sent to
    /// several instances at once), applying each event exactly as an `add` of it alone
    /// would at its turn: the reducer sees them in the order given, `max_events` closes
    /// batches among them, and a repeated id, of an earlier call or earlier in this one, is
    /// a duplicate. Answers once every share is committed, with one result per event, in
    /// the order given:
    ///
    /// - `Ok` with `duplicate: false`: the event was added; `event_count` and `flush_at`
    ///   are what its `add` would have answered;
    /// - `Ok` with `duplicate: true`: its id was seen before; nothing changed;
    /// - `Err` of that event alone: it does not fit the job's event type, or the reducer
    ///   refused it or panicked (the error its `add` would fail with); the others are added;
    /// - `Err` shared by an instance's events: its request failed, and nothing of that
    ///   request was added.
    ///
    /// An instance gets its events in requests of up to [`MAX_EVENTS_PER_REQUEST`], one
    /// after the other; once one fails, the rest of its share is not sent and fails with
    /// the same error, so that an instance never takes a later event of the call without
    /// the earlier ones. A failed request may still have committed (a transport that lost
    /// the answer, say): with event ids, sending the events again is safe. The outer `Err`
    /// is for a job that is not registered or an event that does not encode.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use durable_jobs::testing::TestJobs;
    /// # use durable_jobs::{Debounce, DebounceContext, Registry};
    /// # struct Latest;
    /// # impl Debounce for Latest {
    /// #     type Event = u32;
    /// #     type State = u32;
    /// #     type Error = String;
    /// #     fn flush_after(&self) -> Duration { Duration::from_secs(5) }
    /// #     async fn execute(&self, _: &DebounceContext<u32>) -> Result<(), String> { Ok(()) }
    /// # }
    /// # futures::executor::block_on(async {
    /// # let jobs = TestJobs::new(Registry::builder().debounce("latest", Latest).build().unwrap());
    /// let client = jobs.client();
    /// let events = [
    ///     ("user-1", &7, Some("evt-1")),
    ///     ("user-2", &8, None),
    ///     ("user-1", &9, Some("evt-1")),
    /// ];
    /// let results = client.debounce::<Latest>().add_many(events).await.unwrap();
    /// assert_eq!(results[0].as_ref().unwrap().event_count, 1);
    /// assert!(results[2].as_ref().unwrap().duplicate, "evt-1 again");
    /// # });
    /// ```
    pub async fn add_many<'e>(
        &self,
        events: impl IntoIterator<Item = (&'e str, &'e J::Event, Option<&'e str>)>,
    ) -> Result<Vec<Result<Added, JobError>>, JobError> {
        self.name.as_ref().map_err(Clone::clone)?;
        // Per instance: its items, and where each result goes.
        let mut shares: BTreeMap<&str, (Vec<AddItem>, Vec<usize>)> = BTreeMap::new();
        let mut count = 0;
        for (position, (id, event, event_id)) in events.into_iter().enumerate() {
            let item = AddItem {
                event: codec::to_value("event", event)?,
                event_id: event_id.map(str::to_string),
            };
            let share = shares.entry(id).or_default();
            share.0.push(item);
            share.1.push(position);
            count = position + 1;
        }
        // Owned ids: a future that borrows one through the closure's argument would not be
        // `Send` (the compiler cannot see that the lifetime is the same for every call).
        let shares: Vec<(String, Vec<AddItem>, Vec<usize>)> = shares
            .into_iter()
            .map(|(id, (items, positions))| (id.to_string(), items, positions))
            .collect();
        let results = many::send_shares(shares, count, PARALLEL_INSTANCES, |id, events| {
            let size = events.len();
            async move {
                let response = self
                    .send(&id, Operation::DebounceAddMany { events })
                    .await?;
                outcomes_of(size, response)
            }
        })
        .await;
        Ok(results)
    }

    /// Flushes the pending batch now and retries failed batches. Returns the number of
    /// events that will flush.
    pub async fn flush(&self, id: &str) -> Result<u32, JobError> {
        let response = self.send(id, Operation::DebounceFlush).await?;
        expect_response!(response, Response::FlushRequested { event_count, .. } => event_count)
    }

    /// Discards the pending batch, full batches waiting for their flush, failed batches and
    /// a batch waiting for its retry; a batch being flushed right now finishes. Returns the
    /// events discarded.
    ///
    /// Batches that come into being while the clear runs (a batch filled by a later `add`, a
    /// flush that fails meanwhile) are kept. Many batches are dropped in several commits of
    /// up to 500 batches each, so that no step reads them all at once. A clear that fails or
    /// is cut short by a crash between two commits is partly applied although it never
    /// returned `Ok`: the batches of the commits that were made may be gone, the status
    /// counts those left, and calling `clear` again drops the rest.
    pub async fn clear(&self, id: &str) -> Result<u32, JobError> {
        let response = self.send(id, Operation::DebounceClear).await?;
        expect_response!(response, Response::Cleared { discarded } => discarded)
    }

    /// Drops the instance's failed batches, keeping the open batch and any flush; returns
    /// the events dropped.
    pub async fn discard_failed(&self, id: &str) -> Result<u32, JobError> {
        let response = self.send(id, Operation::DebounceDiscardFailed).await?;
        expect_response!(response, Response::Cleared { discarded } => discarded)
    }

    /// The instance's status, `None` if it does not exist.
    pub async fn status(&self, id: &str) -> Result<Option<DebounceStatus>, JobError> {
        let response = self.send(id, Operation::DebounceStatus).await?;
        expect_response!(response, Response::DebounceStatus { status } => status)
    }

    /// The pending batch's reduced state, `None` when no events are pending.
    pub async fn state(&self, id: &str) -> Result<Option<J::State>, JobError> {
        let response = self.send(id, Operation::DebounceGetState).await?;
        let state = expect_response!(response, Response::State { state } => state)?;
        state.map(|v| codec::decode_value("state", &v)).transpose()
    }

    /// Batches whose flush failed all attempts, oldest first: at most the 1,000 oldest, so
    /// that the answer stays bounded. The status's `failed_batches` counts them all; once
    /// `clear` or `flush` removes the oldest, the next ones are listed.
    pub async fn failed_batches(&self, id: &str) -> Result<Vec<FailedBatch>, JobError> {
        let response = self.send(id, Operation::DebounceFailedBatches).await?;
        expect_response!(response, Response::FailedBatches { batches } => batches)
    }
}

/// The results of the events of one request of `count` events, from its answer; an answer
/// of another shape fails the request.
fn outcomes_of(count: usize, response: Response) -> Result<Vec<Result<Added, JobError>>, JobError> {
    match response {
        Response::AddedMany { outcomes } if outcomes.len() == count => {
            Ok(outcomes.into_iter().map(outcome).collect())
        }
        other => Err(JobError::Client {
            status: 0,
            message: format!("unexpected answer to an add of several: {other:?}"),
        }),
    }
}

/// One event's result in an add of several.
fn outcome(outcome: AddOutcome) -> Result<Added, JobError> {
    match outcome.rejected {
        Some(error) => Err(error),
        None => Ok(Added {
            event_count: outcome.event_count,
            duplicate: outcome.duplicate,
            flush_at: outcome.flush_at,
        }),
    }
}

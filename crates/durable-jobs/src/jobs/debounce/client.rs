//! The typed Debounce client.

use std::marker::PhantomData;

use super::{Debounce, DebounceStatus, FailedBatch};
use crate::client::{expect_response, JobsClient, Transport};
use crate::errors::JobError;
use crate::ids::JobKind;
use crate::services::codec;
use crate::wire::{Operation, Response};

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

//! The typed Debounce client.

use std::marker::PhantomData;

use super::{Debounce, DebounceStatus, FailedBatch};
use crate::client::{unexpected, JobsClient, Transport};
use crate::errors::JobError;
use crate::ids::{InstanceId, JobKind};
use crate::services::codec;
use crate::wire::{Operation, Request, Response};

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
        let name = self.name.clone()?;
        let instance = InstanceId::new(JobKind::Debounce, name, id);
        self.client.transport.send(Request { instance, op }).await
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
        match self
            .send(id, Operation::DebounceAdd { event, event_id })
            .await?
        {
            Response::Added {
                event_count,
                duplicate,
                flush_at,
            } => Ok(Added {
                event_count,
                duplicate,
                flush_at,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Flushes the pending batch now and retries failed batches. Returns the number of
    /// events that will flush.
    pub async fn flush(&self, id: &str) -> Result<u32, JobError> {
        match self.send(id, Operation::DebounceFlush).await? {
            Response::FlushRequested { event_count, .. } => Ok(event_count),
            other => Err(unexpected(other)),
        }
    }

    /// Discards the pending batch and any failed batches. Returns the events discarded.
    pub async fn clear(&self, id: &str) -> Result<u32, JobError> {
        match self.send(id, Operation::DebounceClear).await? {
            Response::Cleared { discarded } => Ok(discarded),
            other => Err(unexpected(other)),
        }
    }

    /// The instance's status, `None` if it does not exist.
    pub async fn status(&self, id: &str) -> Result<Option<DebounceStatus>, JobError> {
        match self.send(id, Operation::DebounceStatus).await? {
            Response::DebounceStatus { status } => Ok(status),
            other => Err(unexpected(other)),
        }
    }

    /// The pending batch's reduced state, `None` when no events are pending.
    pub async fn state(&self, id: &str) -> Result<Option<J::State>, JobError> {
        match self.send(id, Operation::DebounceGetState).await? {
            Response::State { state: Some(v) } => codec::decode_value("state", &v).map(Some),
            Response::State { state: None } => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Batches whose flush failed all attempts, oldest first.
    pub async fn failed_batches(&self, id: &str) -> Result<Vec<FailedBatch>, JobError> {
        match self.send(id, Operation::DebounceFailedBatches).await? {
            Response::FailedBatches { batches } => Ok(batches),
            other => Err(unexpected(other)),
        }
    }
}

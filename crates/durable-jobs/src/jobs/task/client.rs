//! The typed Task client.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::{Task, TaskStatus};
use crate::client::{expect_response, JobsClient, Transport};
use crate::errors::JobError;
use crate::ids::JobKind;
use crate::services::codec;
use crate::wire::{Operation, Response};

/// What a `send` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    /// The event created the task (its first event, or the first since it was
    /// terminated).
    pub created: bool,
    /// The event id was seen before: nothing changed.
    pub duplicate: bool,
    /// When the task runs next, if it has a timer (or a retry) after the event.
    pub next_run_at: Option<i64>,
}

/// Operations on the instances of one Task job.
pub struct TaskClient<'a, J, T> {
    client: &'a JobsClient<T>,
    name: Result<String, JobError>,
    _job: PhantomData<fn() -> J>,
}

impl<'a, J: Task, T: Transport> TaskClient<'a, J, T> {
    pub(crate) fn new(client: &'a JobsClient<T>, name: Result<String, JobError>) -> Self {
        TaskClient {
            client,
            name,
            _job: PhantomData,
        }
    }

    async fn send_op(&self, id: &str, op: Operation) -> Result<Response, JobError> {
        self.client.call(JobKind::Task, &self.name, id, op).await
    }

    /// Sends `event` to task `id`, creating it on its first event; `on_event` decides
    /// what it changes.
    pub async fn send(&self, id: &str, event: &J::Event) -> Result<Sent, JobError> {
        self.send_inner(id, event, None).await
    }

    /// Like [`send`](Self::send), at most once per `event_id` within the retention
    /// period: a repeat answers `duplicate` and changes nothing.
    pub async fn send_with_id(
        &self,
        id: &str,
        event: &J::Event,
        event_id: &str,
    ) -> Result<Sent, JobError> {
        self.send_inner(id, event, Some(event_id.to_string())).await
    }

    async fn send_inner(
        &self,
        id: &str,
        event: &J::Event,
        event_id: Option<String>,
    ) -> Result<Sent, JobError> {
        let event = codec::to_value("event", event)?;
        let response = self
            .send_op(id, Operation::TaskSend { event, event_id })
            .await?;
        expect_response!(response, Response::TaskSent { created, duplicate, next_run_at } => Sent {
            created,
            duplicate,
            next_run_at,
        })
    }

    /// Runs task `id` now, whatever its timer said; fails with `InstanceNotFound` if it
    /// does not exist.
    pub async fn trigger(&self, id: &str) -> Result<(), JobError> {
        let response = self.send_op(id, Operation::TaskTrigger).await?;
        expect_response!(response, Response::Triggered => ())
    }

    /// Ends task `id`: its timer is cancelled and its data deleted. Returns `false` when
    /// it did not exist. A running execution finishes, and its result is discarded.
    pub async fn terminate(&self, id: &str) -> Result<bool, JobError> {
        let response = self.send_op(id, Operation::TaskTerminate).await?;
        expect_response!(response, Response::Terminated { terminated } => terminated)
    }

    /// The task's status, `None` if it does not exist.
    pub async fn status(&self, id: &str) -> Result<Option<TaskStatus>, JobError> {
        let response = self.send_op(id, Operation::TaskStatus).await?;
        expect_response!(response, Response::TaskStatus { status } => status)
    }

    /// The task's state, `None` if it does not exist or has none yet.
    pub async fn state(&self, id: &str) -> Result<Option<J::State>, JobError> {
        let response = self.send_op(id, Operation::TaskGetState).await?;
        let state = expect_response!(response, Response::State { state } => state)?;
        state.map(|v| codec::decode_value("state", &v)).transpose()
    }
}

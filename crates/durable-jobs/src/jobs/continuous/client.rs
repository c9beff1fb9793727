//! The typed Continuous client.

use std::marker::PhantomData;

use super::{Continuous, ContinuousStatus};
use crate::client::{expect_response, JobsClient, Transport};
use crate::errors::JobError;
use crate::ids::JobKind;
use crate::services::codec;
use crate::wire::{Operation, Response};

/// Operations on the instances of one Continuous job.
pub struct ContinuousClient<'a, J, T> {
    client: &'a JobsClient<T>,
    name: Result<String, JobError>,
    _job: PhantomData<fn() -> J>,
}

impl<'a, J: Continuous, T: Transport> ContinuousClient<'a, J, T> {
    pub(crate) fn new(client: &'a JobsClient<T>, name: Result<String, JobError>) -> Self {
        ContinuousClient {
            client,
            name,
            _job: PhantomData,
        }
    }

    async fn send(&self, id: &str, op: Operation) -> Result<Response, JobError> {
        self.client
            .call(JobKind::Continuous, &self.name, id, op)
            .await
    }

    /// Starts instance `id` with an initial state. Returns `false` when an active instance
    /// already exists (it is left unchanged).
    pub async fn start(&self, id: &str, state: &J::State) -> Result<bool, JobError> {
        let state = codec::to_value("state", state)?;
        let response = self.send(id, Operation::ContinuousStart { state }).await?;
        expect_response!(response, Response::Started { created } => created)
    }

    /// Stops instance `id`: no more runs, state deleted, status kept for the retention
    /// period. Returns `false` when it was not running.
    pub async fn stop(&self, id: &str) -> Result<bool, JobError> {
        self.stop_inner(id, None).await
    }

    /// Like [`stop`](Self::stop), recording a reason.
    pub async fn stop_with_reason(&self, id: &str, reason: &str) -> Result<bool, JobError> {
        self.stop_inner(id, Some(reason.to_string())).await
    }

    async fn stop_inner(&self, id: &str, reason: Option<String>) -> Result<bool, JobError> {
        let response = self.send(id, Operation::ContinuousStop { reason }).await?;
        expect_response!(response, Response::Stopped { stopped } => stopped)
    }

    /// Asks for a run now; the regular schedule is unchanged.
    pub async fn trigger(&self, id: &str) -> Result<(), JobError> {
        let response = self.send(id, Operation::ContinuousTrigger).await?;
        expect_response!(response, Response::Triggered => ())
    }

    /// The instance's status, `None` if it does not exist.
    pub async fn status(&self, id: &str) -> Result<Option<ContinuousStatus>, JobError> {
        let response = self.send(id, Operation::ContinuousStatus).await?;
        expect_response!(response, Response::ContinuousStatus { status } => status)
    }

    /// The instance's state, `None` if it does not exist or is stopped.
    pub async fn state(&self, id: &str) -> Result<Option<J::State>, JobError> {
        let response = self.send(id, Operation::ContinuousGetState).await?;
        let state = expect_response!(response, Response::State { state } => state)?;
        state.map(|v| codec::decode_value("state", &v)).transpose()
    }
}

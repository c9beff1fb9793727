//! The typed Continuous client.

use std::marker::PhantomData;

use super::{Continuous, ContinuousStatus};
use crate::client::{unexpected, JobsClient, Transport};
use crate::errors::JobError;
use crate::ids::{InstanceId, JobKind};
use crate::services::codec;
use crate::wire::{Operation, Request, Response};

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
        let name = self.name.clone()?;
        let instance = InstanceId::new(JobKind::Continuous, name, id);
        self.client.transport.send(Request { instance, op }).await
    }

    /// Starts instance `id` with an initial state. Returns `false` when an active instance
    /// already exists (it is left unchanged).
    pub async fn start(&self, id: &str, state: &J::State) -> Result<bool, JobError> {
        let state = codec::to_value("state", state)?;
        match self.send(id, Operation::ContinuousStart { state }).await? {
            Response::Started { created } => Ok(created),
            other => Err(unexpected(other)),
        }
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
        match self.send(id, Operation::ContinuousStop { reason }).await? {
            Response::Stopped { stopped } => Ok(stopped),
            other => Err(unexpected(other)),
        }
    }

    /// Asks for a run now; the regular schedule is unchanged.
    pub async fn trigger(&self, id: &str) -> Result<(), JobError> {
        match self.send(id, Operation::ContinuousTrigger).await? {
            Response::Triggered => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The instance's status, `None` if it does not exist.
    pub async fn status(&self, id: &str) -> Result<Option<ContinuousStatus>, JobError> {
        match self.send(id, Operation::ContinuousStatus).await? {
            Response::ContinuousStatus { status } => Ok(status),
            other => Err(unexpected(other)),
        }
    }

    /// The instance's state, `None` if it does not exist or is stopped.
    pub async fn state(&self, id: &str) -> Result<Option<J::State>, JobError> {
        match self.send(id, Operation::ContinuousGetState).await? {
            Response::State { state: Some(v) } => codec::decode_value("state", &v).map(Some),
            Response::State { state: None } => Ok(None),
            other => Err(unexpected(other)),
        }
    }
}

//! The in-process transport: a request goes to its instance's shard over a bounded
//! channel (backpressure when a shard is saturated) and the answer comes back on a oneshot.

use std::sync::Arc;

use durable_jobs::wire::{Request, Response};
use durable_jobs::{JobError, Transport};
use tokio::sync::{mpsc, oneshot};

use crate::shard::{shard_of, ShardMsg};

/// Sends requests to the runtime's shards. Cheap to clone; its futures are `Send`.
#[derive(Clone)]
pub struct LocalTransport {
    pub(crate) shards: Arc<[mpsc::Sender<ShardMsg>]>,
}

impl Transport for LocalTransport {
    async fn send(&self, request: Request) -> Result<Response, JobError> {
        let id: Arc<str> = Arc::from(request.instance.to_string());
        let shard = &self.shards[shard_of(&id, self.shards.len())];
        let (reply, rx) = oneshot::channel();
        shard
            .send(ShardMsg::Request { id, request, reply })
            .await
            .map_err(|_| JobError::ShutDown)?;
        rx.await.map_err(|_| JobError::ShutDown)?
    }
}

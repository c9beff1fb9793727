//! The in-process transport of the PostgreSQL runtime: a request goes to the shard that
//! hosts its instance's engine, over a bounded channel, and the answer comes back on a
//! oneshot. Any process can serve any instance: the database holds everything.

use std::sync::Arc;

use durable_jobs::wire::{Request, Response};
use durable_jobs::{JobError, Transport};
use tokio::sync::{mpsc, oneshot};

use crate::shard::{shard_of, ShardMsg};

/// Sends requests to the runtime's shards. Cheap to clone; its futures are `Send`.
#[derive(Clone)]
pub struct PostgresTransport {
    pub(crate) shards: Arc<[mpsc::Sender<ShardMsg>]>,
}

impl std::fmt::Debug for PostgresTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTransport")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Transport for PostgresTransport {
    async fn send(&self, request: Request) -> Result<Response, JobError> {
        let id: Arc<str> = Arc::from(request.instance.to_string());
        let shard = &self.shards[shard_of(&id, self.shards.len())];
        let (reply, answer) = oneshot::channel();
        shard
            .send(ShardMsg::Request { id, request, reply })
            .await
            .map_err(|_| JobError::ShutDown)?;
        answer.await.map_err(|_| JobError::ShutDown)?
    }
}

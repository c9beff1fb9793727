//! The type-erased form of a WorkerPool job.

use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde_json::Value;

use super::context::{EmptyContext, WorkerPoolContext};
use super::definition::WorkerPool;
use crate::errors::JobError;
use crate::ids::InstanceId;
use crate::jobs::execution::Execution;
use crate::jobs::lifecycle::checked_timeout;
use crate::jobs::unwind;
use crate::retry::{millis, RetryPolicy};
use crate::services::codec;

/// Instances per pool at most.
pub const MAX_CONCURRENCY: u32 = 1024;

#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    pub concurrency: u32,
    pub retry: RetryPolicy,
    pub retention_ms: i64,
    pub timeout: Option<Duration>,
}

pub(crate) struct ProcessInput {
    pub event: Value,
    pub event_id: String,
    pub sequence: u64,
    pub attempt: u32,
    pub final_attempt: bool,
    pub enqueued_at: i64,
    pub priority: i32,
    pub instance: InstanceId,
}

pub(crate) trait ErasedWorkerPool: Send + Sync {
    fn config(&self) -> &PoolConfig;
    fn check_event(&self, event: &Value) -> Result<(), JobError>;
    fn process(&self, input: ProcessInput) -> LocalBoxFuture<'_, Result<(), String>>;
    fn on_empty(&self, instance: InstanceId, processed: u64) -> LocalBoxFuture<'_, ()>;
}

pub(crate) struct WorkerPoolEntry<J> {
    job: J,
    config: PoolConfig,
}

impl<J: WorkerPool> WorkerPoolEntry<J> {
    pub fn new(job: J) -> Result<Self, String> {
        let concurrency = job.concurrency();
        if concurrency == 0 || concurrency > MAX_CONCURRENCY {
            return Err(format!(
                "concurrency must be from 1 to {MAX_CONCURRENCY}, got {concurrency}"
            ));
        }
        let retry = job.retry();
        retry.validate()?;
        let config = PoolConfig {
            concurrency,
            retry,
            retention_ms: millis(job.retention()),
            timeout: checked_timeout(job.timeout())?,
        };
        Ok(WorkerPoolEntry { job, config })
    }
}

impl<J: WorkerPool> ErasedWorkerPool for WorkerPoolEntry<J> {
    fn config(&self) -> &PoolConfig {
        &self.config
    }

    fn check_event(&self, event: &Value) -> Result<(), JobError> {
        codec::decode_value::<J::Event>("event", event).map(|_| ())
    }

    fn process(&self, input: ProcessInput) -> LocalBoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let event: J::Event =
                codec::decode_value("event", &input.event).map_err(|e| e.to_string())?;
            let ctx = WorkerPoolContext {
                event,
                event_id: input.event_id,
                sequence: input.sequence,
                enqueued_at: input.enqueued_at,
                priority: input.priority,
                execution: Execution::new(input.instance, input.attempt),
            };
            match self.job.execute(&ctx).await {
                Ok(()) => Ok(()),
                Err(error) => {
                    if input.final_attempt {
                        // A panicking hook must not hide the error it was told about.
                        if let Err(panic) =
                            unwind::catch(self.job.on_dead_letter(&error, &ctx)).await
                        {
                            tracing::warn!(instance = %ctx.execution().instance_id(), %panic, "on_dead_letter panicked");
                        }
                    }
                    Err(error.to_string())
                }
            }
        })
    }

    fn on_empty(&self, instance: InstanceId, processed: u64) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            self.job
                .on_empty(&EmptyContext {
                    instance,
                    processed,
                })
                .await;
        })
    }
}

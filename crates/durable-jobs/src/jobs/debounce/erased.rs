//! The type-erased form of a Debounce job.

use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde_json::Value;

use super::context::DebounceContext;
use super::definition::Debounce;
use crate::errors::JobError;
use crate::events::FlushReason;
use crate::ids::{InstanceId, JobKind};
use crate::jobs::execution::Execution;
use crate::jobs::lifecycle::checked_timeout;
use crate::jobs::unwind;
use crate::retry::{millis, RetryPolicy};
use crate::services::codec;

#[derive(Debug, Clone)]
pub(crate) struct DebounceConfig {
    pub flush_after_ms: i64,
    pub max_events: Option<u32>,
    pub retry: RetryPolicy,
    pub retention_ms: i64,
    pub timeout: Option<Duration>,
}

pub(crate) struct FlushInput {
    pub state: Value,
    pub instance: InstanceId,
    pub event_count: u32,
    pub reason: FlushReason,
    pub started_at: i64,
    pub attempt: u32,
    pub final_attempt: bool,
}

pub(crate) trait ErasedDebounce: Send + Sync {
    fn config(&self) -> &DebounceConfig;
    /// Checks `event` against the schema and folds it into `state`; a panic of the reducer
    /// is an `Execution` error of `instance`'s job.
    fn reduce(
        &self,
        instance: &InstanceId,
        state: Option<&Value>,
        event: &Value,
    ) -> Result<Value, JobError>;
    fn run(&self, input: FlushInput) -> LocalBoxFuture<'_, Result<(), String>>;
}

pub(crate) struct DebounceEntry<J> {
    job: J,
    config: DebounceConfig,
}

impl<J: Debounce> DebounceEntry<J> {
    pub fn new(job: J) -> Result<Self, String> {
        let flush_after_ms = millis(job.flush_after());
        if job.max_events() == Some(0) {
            return Err("max_events must be at least 1".into());
        }
        let retry = job.retry();
        retry.validate()?;
        let config = DebounceConfig {
            flush_after_ms,
            max_events: job.max_events(),
            retry,
            retention_ms: millis(job.retention()),
            timeout: checked_timeout(job.timeout())?,
        };
        Ok(DebounceEntry { job, config })
    }
}

impl<J: Debounce> ErasedDebounce for DebounceEntry<J> {
    fn config(&self) -> &DebounceConfig {
        &self.config
    }

    fn reduce(
        &self,
        instance: &InstanceId,
        state: Option<&Value>,
        event: &Value,
    ) -> Result<Value, JobError> {
        let event: J::Event = codec::decode_value("event", event)?;
        let state: Option<J::State> = state.map(|s| codec::decode_value("state", s)).transpose()?;
        let reduced = unwind::catch_sync(|| self.job.on_event(state, event)).map_err(|panic| {
            JobError::Execution {
                kind: JobKind::Debounce,
                name: instance.name.clone(),
                message: format!("on_event {panic}"),
            }
        })?;
        let next = reduced.map_err(|r| JobError::Validation {
            schema: "event".into(),
            path: ".".into(),
            message: r.0,
        })?;
        codec::to_value("state", &next)
    }

    fn run(&self, input: FlushInput) -> LocalBoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let state: J::State =
                codec::decode_value("state", &input.state).map_err(|e| e.to_string())?;
            let ctx = DebounceContext {
                state,
                event_count: input.event_count,
                flush_reason: input.reason,
                started_at: input.started_at,
                execution: Execution::new(input.instance, input.attempt),
            };
            match self.job.execute(&ctx).await {
                Ok(()) => Ok(()),
                Err(error) => {
                    if input.final_attempt {
                        // A panicking hook must not hide the error it was told about.
                        if let Err(panic) = unwind::catch(self.job.on_error(&error, &ctx)).await {
                            tracing::warn!(instance = %ctx.execution().instance_id(), %panic, "on_error panicked");
                        }
                    }
                    Err(error.to_string())
                }
            }
        })
    }
}

//! The type-erased form of a Task job that the registry and engine hold.

use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::context::{Decisions, TaskContext, TimerChange};
use super::definition::Task;
use crate::errors::JobError;
use crate::ids::{InstanceId, JobKind};
use crate::jobs::lifecycle::checked_timeout;
use crate::jobs::unwind;
use crate::retry::{millis, RetryPolicy};
use crate::services::codec;

/// Configuration read once from the job at registration.
#[derive(Debug, Clone)]
pub(crate) struct TaskConfig {
    pub retry: RetryPolicy,
    pub retention_ms: i64,
    pub timeout: Option<Duration>,
}

/// Where a hook is called: the task, its stored state and its timer.
#[derive(Clone)]
pub(crate) struct HookInput {
    pub instance: InstanceId,
    /// The stored state's bytes, `None` before one is set.
    pub state: Option<Vec<u8>>,
    pub next_run_at: Option<i64>,
    pub now: i64,
}

/// Decisions with the state encoded, as the engine applies them.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub state: Option<Vec<u8>>,
    pub timer: Option<TimerChange>,
    pub terminate: bool,
}

pub(crate) struct RunInput {
    pub hook: HookInput,
    pub attempt: u32,
    pub final_attempt: bool,
}

pub(crate) enum RunOutcome {
    Done(Applied),
    Failed {
        error: String,
        /// What `on_error` decided, after the final attempt.
        on_error: Option<Applied>,
    },
}

pub(crate) trait ErasedTask: Send + Sync {
    fn config(&self) -> &TaskConfig;
    /// Checks `event` against the schema and lets `on_event` decide; a refusal is a
    /// `Validation` error, a panic an `Execution` error.
    fn event(&self, input: HookInput, event: &Value) -> Result<Applied, JobError>;
    /// Lets `on_idle` decide; `Err` with the panic's message if it panicked.
    fn idle(&self, input: HookInput) -> Result<Applied, String>;
    fn run(&self, input: RunInput) -> LocalBoxFuture<'_, RunOutcome>;
}

pub(crate) struct TaskEntry<J> {
    job: J,
    config: TaskConfig,
}

impl<J: Task> TaskEntry<J> {
    pub fn new(job: J) -> Result<Self, String> {
        let retry = job.retry();
        retry.validate()?;
        let config = TaskConfig {
            retry,
            retention_ms: millis(job.retention()),
            timeout: checked_timeout(job.timeout())?,
        };
        Ok(TaskEntry { job, config })
    }
}

fn context<S: DeserializeOwned>(
    input: HookInput,
    attempt: u32,
) -> Result<TaskContext<S>, JobError> {
    let state = input
        .state
        .as_deref()
        .map(|bytes| codec::decode_bytes("state", bytes))
        .transpose()?;
    Ok(TaskContext::new(
        input.instance,
        state,
        input.next_run_at,
        attempt,
        input.now,
    ))
}

fn encode<S: Serialize>(decisions: Decisions<S>) -> Result<Applied, JobError> {
    Ok(Applied {
        state: decisions.state.map(|s| codec::encode(&s)).transpose()?,
        timer: decisions.timer,
        terminate: decisions.terminate,
    })
}

impl<J: Task> ErasedTask for TaskEntry<J> {
    fn config(&self) -> &TaskConfig {
        &self.config
    }

    fn event(&self, input: HookInput, event: &Value) -> Result<Applied, JobError> {
        let event: J::Event = codec::decode_value("event", event)?;
        let instance = input.instance.clone();
        let mut ctx = context::<J::State>(input, 0)?;
        let decided =
            unwind::catch_sync(|| self.job.on_event(&mut ctx, event)).map_err(|panic| {
                JobError::Execution {
                    kind: JobKind::Task,
                    name: instance.name.clone(),
                    message: format!("on_event {panic}"),
                }
            })?;
        decided.map_err(|r| JobError::Validation {
            schema: "event".into(),
            path: ".".into(),
            message: r.0,
        })?;
        encode(ctx.into_decisions())
    }

    fn idle(&self, input: HookInput) -> Result<Applied, String> {
        let mut ctx = context::<J::State>(input, 0).map_err(|e| e.to_string())?;
        unwind::catch_sync(|| self.job.on_idle(&mut ctx))
            .map_err(|panic| format!("on_idle {panic}"))?;
        encode(ctx.into_decisions()).map_err(|e| e.to_string())
    }

    fn run(&self, input: RunInput) -> LocalBoxFuture<'_, RunOutcome> {
        Box::pin(async move {
            // `on_error` decides from the state the execution started with: what a
            // failed attempt changed is not kept.
            let before = input.final_attempt.then(|| input.hook.clone());
            let mut ctx = match context::<J::State>(input.hook, input.attempt) {
                Ok(ctx) => ctx,
                Err(e) => {
                    return RunOutcome::Failed {
                        error: e.to_string(),
                        on_error: None,
                    }
                }
            };
            let error = match self.job.execute(&mut ctx).await {
                Ok(()) => {
                    return match encode(ctx.into_decisions()) {
                        Ok(applied) => RunOutcome::Done(applied),
                        Err(e) => RunOutcome::Failed {
                            error: e.to_string(),
                            on_error: None,
                        },
                    }
                }
                Err(error) => error,
            };
            let Some(mut fresh) = before.and_then(|hook| context(hook, input.attempt).ok()) else {
                return RunOutcome::Failed {
                    error: error.to_string(),
                    on_error: None,
                };
            };
            let on_error = match unwind::catch(self.job.on_error(&error, &mut fresh)).await {
                Ok(()) => encode(fresh.into_decisions()).ok(),
                Err(panic) => {
                    // A panicking hook must not hide the error it was told about.
                    tracing::warn!(instance = %fresh.instance_id(), %panic, "on_error panicked");
                    None
                }
            };
            RunOutcome::Failed {
                error: error.to_string(),
                on_error,
            }
        })
    }
}

//! The type-erased form of a Continuous job that the registry and engine hold.

use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde_json::Value;

use super::context::ContinuousContext;
use super::definition::Continuous;
use super::schedule::CompiledSchedule;
use crate::errors::JobError;
use crate::ids::InstanceId;
use crate::jobs::execution::Execution;
use crate::jobs::lifecycle::checked_timeout;
use crate::jobs::unwind;
use crate::retry::{millis, RetryPolicy};
use crate::services::codec;

/// Configuration read once from the job at registration.
#[derive(Debug, Clone)]
pub(crate) struct ContinuousConfig {
    pub schedule: CompiledSchedule,
    pub start_immediately: bool,
    pub retry: RetryPolicy,
    pub retention_ms: i64,
    pub timeout: Option<Duration>,
}

pub(crate) struct RunInput {
    pub state: Vec<u8>,
    pub instance: InstanceId,
    pub run_count: u64,
    pub attempt: u32,
    pub final_attempt: bool,
    pub now: i64,
}

pub(crate) enum RunOutcome {
    Done {
        state: Option<Vec<u8>>,
        terminate: Option<Option<String>>,
    },
    Failed {
        error: String,
    },
}

pub(crate) trait ErasedContinuous: Send + Sync {
    fn config(&self) -> &ContinuousConfig;
    fn check_state(&self, value: &Value) -> Result<Vec<u8>, JobError>;
    fn run(&self, input: RunInput) -> LocalBoxFuture<'_, RunOutcome>;
}

pub(crate) struct ContinuousEntry<J> {
    job: J,
    config: ContinuousConfig,
}

impl<J: Continuous> ContinuousEntry<J> {
    pub fn new(job: J) -> Result<Self, String> {
        let schedule = job.schedule().compile()?;
        let retry = job.retry();
        retry.validate()?;
        let config = ContinuousConfig {
            schedule,
            start_immediately: job.start_immediately(),
            retry,
            retention_ms: millis(job.retention()),
            timeout: checked_timeout(job.timeout())?,
        };
        Ok(ContinuousEntry { job, config })
    }
}

impl<J: Continuous> ErasedContinuous for ContinuousEntry<J> {
    fn config(&self) -> &ContinuousConfig {
        &self.config
    }

    fn check_state(&self, value: &Value) -> Result<Vec<u8>, JobError> {
        let state: J::State = codec::decode_value("state", value)?;
        codec::encode(&state)
    }

    fn run(&self, input: RunInput) -> LocalBoxFuture<'_, RunOutcome> {
        Box::pin(async move {
            let state: J::State = match codec::decode_bytes("state", &input.state) {
                Ok(s) => s,
                Err(e) => {
                    return RunOutcome::Failed {
                        error: e.to_string(),
                    }
                }
            };
            let execution = Execution::new(input.instance, input.attempt);
            let mut ctx = ContinuousContext::new(state, execution, input.run_count, input.now);
            match self.job.execute(&mut ctx).await {
                Ok(()) => {
                    let (state, changed, terminate) = ctx.into_parts();
                    let state = if changed {
                        match codec::encode(&state) {
                            Ok(bytes) => Some(bytes),
                            Err(e) => {
                                return RunOutcome::Failed {
                                    error: e.to_string(),
                                }
                            }
                        }
                    } else {
                        None
                    };
                    RunOutcome::Done { state, terminate }
                }
                Err(error) => {
                    if input.final_attempt {
                        // A panicking hook must not hide the error it was told about.
                        if let Err(panic) = unwind::catch(self.job.on_error(&error, &ctx)).await {
                            tracing::warn!(instance = %ctx.execution().instance_id(), %panic, "on_error panicked");
                        }
                    }
                    RunOutcome::Failed {
                        error: error.to_string(),
                    }
                }
            }
        })
    }
}

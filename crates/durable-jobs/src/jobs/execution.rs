//! The facts every execution of a job has, whatever its kind.

use crate::ids::InstanceId;

/// One execution of a job (a Continuous run, a Debounce flush, the processing of a
/// WorkerPool event): the instance it runs on, and which attempt it is.
///
/// Every context lends it out through `execution()`, so that code serving all kinds alike,
/// such as logging or metrics, can take this one type instead of each context.
///
/// ```
/// use durable_jobs::{DebounceContext, Execution, WorkerPoolContext};
///
/// fn label(execution: &Execution) -> String {
///     format!("{} attempt {}", execution.instance_id(), execution.attempt())
/// }
///
/// fn flush_label(ctx: &DebounceContext<u32>) -> String {
///     label(ctx.execution())
/// }
///
/// fn event_label(ctx: &WorkerPoolContext<String>) -> String {
///     label(ctx.execution())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    instance: InstanceId,
    attempt: u32,
}

impl Execution {
    pub(crate) fn new(instance: InstanceId, attempt: u32) -> Self {
        Execution { instance, attempt }
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this is a retry of a failed attempt.
    pub fn is_retry(&self) -> bool {
        self.attempt > 1
    }

    /// The instance's key: the user's id, or a WorkerPool instance's index.
    pub fn id(&self) -> &str {
        &self.instance.key
    }

    /// The full instance id.
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance
    }

    /// The registered job name.
    pub fn job_name(&self) -> &str {
        &self.instance.name
    }
}

/// Writes, inside a context's `impl` block, `execution()` and the listed accessors, each
/// forwarding to the [`Execution`] method of the same name. The context keeps its
/// [`Execution`] in a field named `execution`; `unit` names what one execution of its kind
/// is ("run", "flush"), for the docs.
///
/// A macro so that each accessor and its doc are written once, yet stay methods of every
/// context (users write `ctx.attempt()`), and so that each context lists only those that
/// mean something for its kind: a WorkerPool instance has no user id.
macro_rules! execution_accessors {
    (unit = $unit:literal; $($accessor:ident),+ $(,)?) => {
        /// The facts this execution shares with those of every other job kind, for code
        /// that serves all kinds alike.
        pub fn execution(&self) -> &$crate::jobs::execution::Execution {
            &self.execution
        }

        $($crate::jobs::execution::execution_accessors!(@$accessor $unit);)+
    };
    (@attempt $unit:literal) => {
        #[doc = concat!("This ", $unit, "'s attempt number, from 1.")]
        pub fn attempt(&self) -> u32 {
            self.execution.attempt()
        }
    };
    (@is_retry $unit:literal) => {
        /// Whether this is a retry of a failed attempt.
        pub fn is_retry(&self) -> bool {
            self.execution.is_retry()
        }
    };
    (@id $unit:literal) => {
        /// The user's id of this instance.
        pub fn id(&self) -> &str {
            self.execution.id()
        }
    };
    (@instance_id $unit:literal) => {
        /// The full instance id.
        pub fn instance_id(&self) -> &$crate::ids::InstanceId {
            self.execution.instance_id()
        }
    };
    (@job_name $unit:literal) => {
        /// The registered job name.
        pub fn job_name(&self) -> &str {
            self.execution.job_name()
        }
    };
}
pub(crate) use execution_accessors;

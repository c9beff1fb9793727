//! The WorkerPool job trait, implemented by the user's struct.

use std::fmt::Display;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::context::{EmptyContext, WorkerPoolContext};
use crate::jobs::lifecycle::DEFAULT_RETENTION;
use crate::retry::RetryPolicy;

/// A named queue served by `concurrency` sequential instances.
///
/// Events with the same partition key always go to the same instance and run in order;
/// higher priority runs first, FIFO within a priority. A failing event is retried at the
/// head of its instance; once its attempts are exhausted it goes to `on_dead_letter` and
/// to the instance's dead-letter list, where it can be listed, replayed or discarded.
///
/// ```
/// use durable_jobs::{WorkerPool, WorkerPoolContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Email { to: String }
///
/// struct Mailer;
///
/// impl WorkerPool for Mailer {
///     type Event = Email;
///     type Error = String;
///     fn concurrency(&self) -> u32 { 4 }
///     async fn execute(&self, ctx: &WorkerPoolContext<Email>) -> Result<(), String> {
///         println!("mail to {}", ctx.event().to);
///         Ok(())
///     }
/// }
/// ```
#[allow(async_fn_in_trait)] // deliberately no `Send` bound: Durable Object futures are not `Send`
pub trait WorkerPool: Send + Sync + 'static {
    /// What `enqueue` takes.
    type Event: Serialize + DeserializeOwned + 'static;
    /// What `execute` fails with; its `Display` text is recorded.
    type Error: Display + 'static;

    /// How many instances serve the queue (each processes one event at a time).
    fn concurrency(&self) -> u32 {
        1
    }

    /// How failing events are retried.
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// How long processed event ids are remembered for deduplication.
    fn retention(&self) -> Duration {
        DEFAULT_RETENTION
    }

    /// How long an event's processing may take, if limited. Past it, an async `execute` is
    /// cancelled and the attempt fails with a timeout error; code that blocks cannot be
    /// cancelled and is reported as overdue until it returns. Enforced where the runtime
    /// runs user code on threads of its own (the embedded runtime).
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Processes one event.
    async fn execute(&self, ctx: &WorkerPoolContext<Self::Event>) -> Result<(), Self::Error>;

    /// Called when an event has failed all its attempts, before it joins the dead letters.
    async fn on_dead_letter(&self, error: &Self::Error, ctx: &WorkerPoolContext<Self::Event>) {
        let _ = (error, ctx);
    }

    /// Called when an instance's queue becomes empty.
    async fn on_empty(&self, ctx: &EmptyContext) {
        let _ = ctx;
    }
}

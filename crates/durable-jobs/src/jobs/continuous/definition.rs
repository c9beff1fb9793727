//! The Continuous job trait, implemented by the user's struct.

use std::fmt::Display;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::context::ContinuousContext;
use super::schedule::Schedule;
use crate::jobs::lifecycle::DEFAULT_RETENTION;
use crate::retry::RetryPolicy;

/// Recurring per-id work with persistent state.
///
/// The struct's fields are its dependencies (clients, pools); it is shared by every
/// instance, so it is `Send + Sync`. The futures it returns need not be `Send`.
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::{Continuous, ContinuousContext, Schedule};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Counter { ticks: u64 }
///
/// struct Ticker;
///
/// impl Continuous for Ticker {
///     type State = Counter;
///     type Error = std::convert::Infallible;
///     fn schedule(&self) -> Schedule { Schedule::every(Duration::from_secs(60)) }
///     async fn execute(&self, ctx: &mut ContinuousContext<Counter>) -> Result<(), Self::Error> {
///         ctx.state_mut().ticks += 1;
///         Ok(())
///     }
/// }
/// ```
#[allow(async_fn_in_trait)] // deliberately no `Send` bound: Durable Object futures are not `Send`
pub trait Continuous: Send + Sync + 'static {
    /// The instance's persistent state.
    type State: Serialize + DeserializeOwned + 'static;
    /// What `execute` fails with; its `Display` text is recorded.
    type Error: Display + 'static;

    /// When to run.
    fn schedule(&self) -> Schedule;

    /// Whether `start` schedules a run right away (the default) or waits for the schedule.
    fn start_immediately(&self) -> bool {
        true
    }

    /// How failing runs are retried.
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// How long a stopped instance stays inspectable before it is purged.
    fn retention(&self) -> Duration {
        DEFAULT_RETENTION
    }

    /// How long a run may take, if limited. Past it, an async `execute` is
    /// cancelled and the attempt fails with a timeout error; code that blocks cannot be
    /// cancelled and is reported as overdue until it returns. Enforced where the runtime
    /// runs user code on threads of its own (the embedded runtime).
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// One run. Changes made to the context's state are saved when it returns `Ok`.
    async fn execute(&self, ctx: &mut ContinuousContext<Self::State>) -> Result<(), Self::Error>;

    /// Called once a run has failed all its attempts. The next regular run still happens.
    async fn on_error(&self, error: &Self::Error, ctx: &ContinuousContext<Self::State>) {
        let _ = (error, ctx);
    }
}

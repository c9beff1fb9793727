//! The Task job trait, implemented by the user's struct.

use std::fmt::Display;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::context::TaskContext;
use crate::errors::Rejected;
use crate::jobs::lifecycle::DEFAULT_RETENTION;
use crate::retry::RetryPolicy;

/// A per-id state machine with a timer of its own: events decide, the timer runs.
///
/// `send(id, event)` creates the task on its first event and calls
/// [`on_event`](Task::on_event) in the request: quick and free of I/O, it decides whether
/// to change the state, set or move the timer, cancel it or end the task. When the timer
/// fires, [`execute`](Task::execute) runs with the same powers; it may set the next timer.
/// When no timer is left, [`on_idle`](Task::on_idle) may set one; a task left idle is
/// purged after its retention period.
///
/// A payment reminder 24 hours after an order is created, unless it is paid first, and
/// at most three reminders:
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::{Rejected, Task, TaskContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum OrderEvent { Created, Paid }
///
/// #[derive(Serialize, Deserialize)]
/// struct Order { reminders: u32 }
///
/// struct PaymentReminder;
///
/// impl Task for PaymentReminder {
///     type State = Order;
///     type Event = OrderEvent;
///     type Error = String;
///
///     fn on_event(&self, ctx: &mut TaskContext<Order>, event: OrderEvent) -> Result<(), Rejected> {
///         match event {
///             OrderEvent::Created => {
///                 ctx.set_state(Order { reminders: 0 });
///                 ctx.schedule_in(Duration::from_secs(24 * 3600));
///             }
///             OrderEvent::Paid => ctx.terminate(),
///         }
///         Ok(())
///     }
///
///     async fn execute(&self, ctx: &mut TaskContext<Order>) -> Result<(), String> {
///         let sent = ctx.state().map_or(0, |o| o.reminders) + 1;
///         println!("reminder {sent} for order {}", ctx.id());
///         if sent == 3 {
///             ctx.terminate();
///         } else {
///             ctx.set_state(Order { reminders: sent });
///             ctx.schedule_in(Duration::from_secs(24 * 3600));
///         }
///         Ok(())
///     }
/// }
/// ```
#[allow(async_fn_in_trait)] // deliberately no `Send` bound: Durable Object futures are not `Send`
pub trait Task: Send + Sync + 'static {
    /// What the task remembers between events and executions.
    type State: Serialize + DeserializeOwned + 'static;
    /// What `send` takes.
    type Event: Serialize + DeserializeOwned + 'static;
    /// What `execute` fails with; its `Display` text is recorded.
    type Error: Display + 'static;

    /// Decides what an event changes. It runs while the request is handled, so keep it
    /// quick and free of I/O. Returning `Err` refuses the event: the send fails with a
    /// validation error and nothing changes.
    fn on_event(
        &self,
        ctx: &mut TaskContext<Self::State>,
        event: Self::Event,
    ) -> Result<(), Rejected>;

    /// Runs when the timer fires (or on `trigger`). Its decisions apply when it returns
    /// `Ok`; a failed attempt changes nothing and is retried by [`retry`](Task::retry).
    async fn execute(&self, ctx: &mut TaskContext<Self::State>) -> Result<(), Self::Error>;

    /// Called when an event or an execution leaves no timer; it may set one. Synchronous
    /// and free of I/O, like `on_event`.
    fn on_idle(&self, ctx: &mut TaskContext<Self::State>) {
        let _ = ctx;
    }

    /// Called once an execution has failed all its attempts; it may set the timer again
    /// (to try later) or end the task. Without a new timer the task becomes idle.
    async fn on_error(&self, error: &Self::Error, ctx: &mut TaskContext<Self::State>) {
        let _ = (error, ctx);
    }

    /// How failing executions are retried.
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// How long event ids are remembered (for deduplication) and an idle task is kept.
    fn retention(&self) -> Duration {
        DEFAULT_RETENTION
    }

    /// How long an execution may take, if limited. Past it, an async `execute` is
    /// cancelled and the attempt fails with a timeout error. Enforced where the runtime
    /// runs user code on threads of its own (the embedded runtime).
    fn timeout(&self) -> Option<Duration> {
        None
    }
}

//! The Debounce job trait, implemented by the user's struct.

use std::fmt::Display;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::context::DebounceContext;
use crate::errors::Rejected;
use crate::jobs::lifecycle::DEFAULT_RETENTION;
use crate::retry::RetryPolicy;

/// The default reducer: the state becomes the latest event. The state type must decode from
/// the event's JSON (most simply, `State = Event`).
pub fn keep_latest<E: Serialize, S: DeserializeOwned>(event: E) -> Result<S, Rejected> {
    let value = serde_json::to_value(event).map_err(|e| Rejected(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| {
        Rejected(format!(
            "the default reducer keeps the latest event, which does not decode as the state ({e}); implement on_event"
        ))
    })
}

/// Per-id event coalescing: events fold into a state through `on_event`; the
/// batch flushes `flush_after` after its first event, or at once at `max_events`.
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::{Debounce, DebounceContext, Rejected};
///
/// struct HookBatcher;
///
/// impl Debounce for HookBatcher {
///     type Event = String;
///     type State = Vec<String>;
///     type Error = String;
///     fn flush_after(&self) -> Duration { Duration::from_secs(5) }
///     fn max_events(&self) -> Option<u32> { Some(100) }
///     fn on_event(&self, state: Option<Vec<String>>, event: String) -> Result<Vec<String>, Rejected> {
///         let mut all = state.unwrap_or_default();
///         all.push(event);
///         Ok(all)
///     }
///     async fn execute(&self, ctx: &DebounceContext<Vec<String>>) -> Result<(), String> {
///         println!("{} hooks", ctx.state().len());
///         Ok(())
///     }
/// }
/// ```
#[allow(async_fn_in_trait)] // deliberately no `Send` bound: Durable Object futures are not `Send`
pub trait Debounce: Send + Sync + 'static {
    /// What `add` takes.
    type Event: Serialize + DeserializeOwned + 'static;
    /// What the events reduce to, and what `execute` sees.
    type State: Serialize + DeserializeOwned + 'static;
    /// What `execute` fails with; its `Display` text is recorded.
    type Error: Display + 'static;

    /// How long after a batch's first event it flushes.
    fn flush_after(&self) -> Duration;

    /// Flush at once when a batch holds this many events.
    fn max_events(&self) -> Option<u32> {
        None
    }

    /// How failing flushes are retried.
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// How long event ids are remembered (for deduplication) and an idle instance is kept.
    fn retention(&self) -> Duration {
        DEFAULT_RETENTION
    }

    /// How long a flush may take, if limited. Past it, an async `execute` is
    /// cancelled and the attempt fails with a timeout error; code that blocks cannot be
    /// cancelled and is reported as overdue until it returns. Enforced where the runtime
    /// runs user code on threads of its own (the embedded runtime).
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Folds one event into the batch's state (`None` for the first event). It runs while
    /// the request is handled, so keep it quick and free of I/O.
    fn on_event(
        &self,
        state: Option<Self::State>,
        event: Self::Event,
    ) -> Result<Self::State, Rejected> {
        let _ = state;
        keep_latest(event)
    }

    /// Delivers one batch.
    async fn execute(&self, ctx: &DebounceContext<Self::State>) -> Result<(), Self::Error>;

    /// Called once a flush has failed all its attempts; the batch is kept as a failed batch.
    async fn on_error(&self, error: &Self::Error, ctx: &DebounceContext<Self::State>) {
        let _ = (error, ctx);
    }
}

//! One job of each kind, shaped like the tour example's, with short timings so that a
//! test sees them run; each records what it executes in the execution log.

use std::time::Duration;

use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, Registry, RegistryError, Rejected,
    RetryPolicy, Schedule, Task, TaskContext, WorkerPool, WorkerPoolContext,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use worker::{Delay, Env};

use crate::execution_log::LogClient;

/// Builds the registry of this worker's jobs (once per isolate, see `engine_object!`).
pub fn build_registry(env: &Env) -> Result<Registry, RegistryError> {
    // A missing binding is a deployment mistake; report it as a configuration error.
    let log = env.durable_object("LOG").map(LogClient::new).map_err(|e| {
        RegistryError::InvalidConfig {
            kind: durable_jobs::JobKind::Continuous,
            name: "tokenRefresher".into(),
            message: format!("the LOG binding is missing: {e}"),
        }
    })?;
    Registry::builder()
        .continuous("tokenRefresher", TokenRefresher { log: log.clone() })
        .debounce("webhookBatcher", WebhookBatcher { log: log.clone() })
        .worker_pool("emailSender", EmailSender { log: log.clone() })
        .task("orderReminder", OrderReminder { log })
        .build()
}

/// A user's tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    /// The current access token.
    pub access: String,
    /// Refreshes so far.
    pub refreshes: u32,
}

/// Refreshes a user's token every two seconds.
pub struct TokenRefresher {
    log: LogClient,
}

impl Continuous for TokenRefresher {
    type State = Tokens;
    type Error = String;

    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(2))
    }

    async fn execute(&self, ctx: &mut ContinuousContext<Tokens>) -> Result<(), String> {
        let refreshes = ctx.state().refreshes + 1;
        self.log
            .append(json!({
                "job": "tokenRefresher",
                "id": ctx.id(),
                "refreshes": refreshes,
                "attempt": ctx.attempt(),
            }))
            .await?;
        ctx.set_state(Tokens {
            access: format!("token-{refreshes}"),
            refreshes,
        });
        Ok(())
    }
}

/// A webhook: one changed field of a contact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hook {
    /// The field that changed.
    pub field: String,
}

/// Coalesces a contact's webhooks: flushes 1.5 s after the first, or at once at 5.
///
/// Instances whose id starts with `slow` take 1.5 s to flush, so that events arriving
/// during a flush can be observed forming the next batch.
pub struct WebhookBatcher {
    log: LogClient,
}

impl Debounce for WebhookBatcher {
    type Event = Hook;
    type State = Vec<String>;
    type Error = String;

    fn flush_after(&self) -> Duration {
        Duration::from_millis(1500)
    }

    fn max_events(&self) -> Option<u32> {
        Some(5)
    }

    fn on_event(&self, state: Option<Vec<String>>, hook: Hook) -> Result<Vec<String>, Rejected> {
        let mut fields = state.unwrap_or_default();
        fields.push(hook.field);
        Ok(fields)
    }

    async fn execute(&self, ctx: &DebounceContext<Vec<String>>) -> Result<(), String> {
        if ctx.id().starts_with("slow") {
            self.log
                .append(json!({
                    "job": "webhookBatcher",
                    "id": ctx.id(),
                    "phase": "started",
                    "fields": ctx.state(),
                }))
                .await?;
            Delay::from(Duration::from_millis(1500)).await;
        }
        self.log
            .append(json!({
                "job": "webhookBatcher",
                "id": ctx.id(),
                "phase": "flushed",
                "fields": ctx.state(),
                "eventCount": ctx.event_count(),
                "reason": ctx.flush_reason(),
            }))
            .await
    }
}

/// An email to send.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Email {
    /// The recipient. `flaky…` fails on its first attempt; `fail…` always fails.
    pub to: String,
    /// The customer it belongs to, used as the partition key.
    #[serde(default)]
    pub partition: Option<String>,
    /// Its position among the customer's emails, to check ordering.
    #[serde(default)]
    pub seq: Option<u32>,
}

/// Sends emails on 3 sequential instances, 3 attempts each, 300 ms apart. Addresses
/// starting with `fail` always fail, `flaky` fail once, `panic` panic.
pub struct EmailSender {
    log: LogClient,
}

impl WorkerPool for EmailSender {
    type Event = Email;
    type Error = String;

    fn concurrency(&self) -> u32 {
        3
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(3, Duration::from_millis(300))
    }

    async fn execute(&self, ctx: &WorkerPoolContext<Email>) -> Result<(), String> {
        let email = ctx.event();
        let panics = email.to.starts_with("panic");
        let fails =
            email.to.starts_with("fail") || (email.to.starts_with("flaky") && ctx.attempt() == 1);
        let outcome = match (panics, fails) {
            (true, _) => "panicking",
            (false, true) => "failed",
            (false, false) => "sent",
        };
        self.log
            .append(json!({
                "job": "emailSender",
                "to": email.to,
                "partition": email.partition,
                "seq": email.seq,
                "eventId": ctx.event_id(),
                "instanceIndex": ctx.instance_index(),
                "attempt": ctx.attempt(),
                "outcome": outcome,
            }))
            .await?;
        // A panic aborts the whole wasm instance: the object recovers on its next call, and
        // the attempt was recorded before it ran, so it still counts.
        assert!(!panics, "the mail library panicked for {}", email.to);
        if fails {
            return Err(format!("mailbox of {} unavailable", email.to));
        }
        Ok(())
    }

    async fn on_dead_letter(&self, error: &String, ctx: &WorkerPoolContext<Email>) {
        // Best effort: a dead letter is recorded by the engine whatever happens here.
        let _ = self
            .log
            .append(json!({
                "job": "emailSender",
                "to": ctx.event().to,
                "eventId": ctx.event_id(),
                "instanceIndex": ctx.instance_index(),
                "outcome": "deadLettered",
                "error": error,
            }))
            .await;
    }
}

/// What happens to an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OrderEvent {
    /// The order was placed: remind of its payment.
    Created,
    /// It was paid: no more reminders.
    Paid,
}

/// An order's reminders so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderState {
    /// Reminders sent.
    pub reminders: u32,
}

/// Reminds of an unpaid order a second after it is placed, then every second, and cancels
/// the order after three reminders; a payment ends it first. (A real one would wait days.)
pub struct OrderReminder {
    log: LogClient,
}

impl OrderReminder {
    /// Between reminders.
    const EVERY: Duration = Duration::from_secs(1);
    /// Reminders before the order is cancelled.
    const MAX: u32 = 3;
}

impl Task for OrderReminder {
    type State = OrderState;
    type Event = OrderEvent;
    type Error = String;

    fn on_event(
        &self,
        ctx: &mut TaskContext<OrderState>,
        event: OrderEvent,
    ) -> Result<(), Rejected> {
        match event {
            OrderEvent::Created if ctx.state().is_none() => {
                ctx.set_state(OrderState { reminders: 0 });
                ctx.schedule_in(Self::EVERY);
            }
            OrderEvent::Created => {}
            OrderEvent::Paid => ctx.terminate(),
        }
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<OrderState>) -> Result<(), String> {
        let reminders = ctx.state().map_or(0, |s| s.reminders) + 1;
        let cancels = reminders == Self::MAX;
        self.log
            .append(json!({
                "job": "orderReminder",
                "id": ctx.id(),
                "reminder": reminders,
                "cancels": cancels,
            }))
            .await?;
        if cancels {
            ctx.terminate();
        } else {
            ctx.set_state(OrderState { reminders });
            ctx.schedule_in(Self::EVERY);
        }
        Ok(())
    }
}

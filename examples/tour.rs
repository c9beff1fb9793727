//! A tour of the four job kinds on the in-memory harness and its virtual clock: an hour of
//! job time, then days of payment reminders, in a few milliseconds. This is how you
//! test your own jobs.
//!
//! Run with `cargo run --example tour`.

use std::time::Duration;

use durable_jobs::testing::TestJobs;
use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, EnqueueRequest, Registry, Rejected,
    RetryPolicy, Schedule, Task, TaskContext, WorkerPool, WorkerPoolContext,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Tokens {
    access: String,
    refreshes: u32,
}

/// Refreshes a user's token every 30 minutes.
struct TokenRefresher;

impl Continuous for TokenRefresher {
    type State = Tokens;
    type Error = String;

    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(30 * 60))
    }

    async fn execute(&self, ctx: &mut ContinuousContext<Tokens>) -> Result<(), String> {
        let n = ctx.state().refreshes + 1;
        ctx.set_state(Tokens {
            access: format!("token-{n}"),
            refreshes: n,
        });
        let minutes = (ctx.now() - durable_jobs::testing::DEFAULT_START) / 60_000;
        println!("[{minutes:>2} min] refreshed {} → token-{n}", ctx.id());
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Hook {
    field: String,
}

/// Coalesces a contact's webhooks into one update.
struct WebhookBatcher;

impl Debounce for WebhookBatcher {
    type Event = Hook;
    type State = Vec<String>;
    type Error = String;

    fn flush_after(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn max_events(&self) -> Option<u32> {
        Some(50)
    }

    fn on_event(&self, state: Option<Vec<String>>, event: Hook) -> Result<Vec<String>, Rejected> {
        let mut fields = state.unwrap_or_default();
        if !fields.contains(&event.field) {
            fields.push(event.field);
        }
        Ok(fields)
    }

    async fn execute(&self, ctx: &DebounceContext<Vec<String>>) -> Result<(), String> {
        println!(
            "flushed {} events for {} as one update of {:?}",
            ctx.event_count(),
            ctx.id(),
            ctx.state()
        );
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Email {
    to: String,
}

/// Sends emails on 4 sequential instances; fails once for one address.
struct EmailSender;

impl WorkerPool for EmailSender {
    type Event = Email;
    type Error = String;

    fn concurrency(&self) -> u32 {
        4
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::exponential(3, Duration::from_secs(1), Duration::from_secs(30))
    }

    async fn execute(&self, ctx: &WorkerPoolContext<Email>) -> Result<(), String> {
        if ctx.event().to.starts_with("flaky") && ctx.attempt() == 1 {
            println!("mail to {} failed on attempt 1", ctx.event().to);
            return Err("smtp timeout".into());
        }
        println!(
            "mail to {} sent by instance {} (attempt {})",
            ctx.event().to,
            ctx.instance_index(),
            ctx.attempt()
        );
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
enum OrderEvent {
    Created,
    Paid,
}

#[derive(Serialize, Deserialize)]
struct Order {
    reminders: u32,
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Sends a payment reminder 24 hours after an order is created unless it is paid first,
/// then daily, and cancels the order after three reminders.
struct PaymentReminder;

impl Task for PaymentReminder {
    type State = Order;
    type Event = OrderEvent;
    type Error = String;

    fn on_event(&self, ctx: &mut TaskContext<Order>, event: OrderEvent) -> Result<(), Rejected> {
        match event {
            OrderEvent::Created => {
                ctx.set_state(Order { reminders: 0 });
                ctx.schedule_in(DAY);
            }
            OrderEvent::Paid => {
                println!("order {} paid", ctx.id());
                ctx.terminate();
            }
        }
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<Order>) -> Result<(), String> {
        let sent = ctx.state().map_or(0, |o| o.reminders) + 1;
        println!("payment reminder {sent} for order {}", ctx.id());
        if sent == 3 {
            println!("order {} cancelled after 3 reminders", ctx.id());
            ctx.terminate();
        } else {
            ctx.set_state(Order { reminders: sent });
            ctx.schedule_in(DAY);
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    futures::executor::block_on(async {
        let registry = Registry::builder()
            .continuous("tokenRefresher", TokenRefresher)
            .debounce("webhookBatcher", WebhookBatcher)
            .worker_pool("emailSender", EmailSender)
            .task("paymentReminder", PaymentReminder)
            .build()?;
        let jobs = TestJobs::new(registry);
        let client = jobs.client();

        let tokens = Tokens {
            access: "token-0".into(),
            refreshes: 0,
        };
        client
            .continuous::<TokenRefresher>()
            .start("user-123", &tokens)
            .await?;

        for field in ["email", "phone", "email"] {
            let hook = Hook {
                field: field.into(),
            };
            client
                .debounce::<WebhookBatcher>()
                .add("contact-456", &hook)
                .await?;
        }

        let mails = client.worker_pool::<EmailSender>();
        for to in ["ann@acme.test", "flaky@acme.test", "bob@acme.test"] {
            let email = Email { to: to.into() };
            mails
                .enqueue_with(&email, EnqueueRequest::new().partition_key("acme"))
                .await?;
        }

        jobs.advance(Duration::from_secs(60 * 60)).await;

        let state = client
            .continuous::<TokenRefresher>()
            .state("user-123")
            .await?;
        let pool = mails.status().await?;
        println!(
            "after an hour: {} refreshes, {} emails sent, {} dead letters",
            state.map_or(0, |t| t.refreshes),
            pool.processed,
            pool.dead_letters
        );

        client
            .continuous::<TokenRefresher>()
            .stop("user-123")
            .await?;
        let orders = client.task::<PaymentReminder>();
        orders.send("order-1", &OrderEvent::Created).await?;
        orders.send("order-2", &OrderEvent::Created).await?;
        jobs.advance(DAY / 2).await;
        orders.send("order-2", &OrderEvent::Paid).await?;
        jobs.advance(DAY * 4).await;
        println!(
            "days later: order-1 {}, order-2 {}",
            if orders.status("order-1").await?.is_none() {
                "gone"
            } else {
                "open"
            },
            if orders.status("order-2").await?.is_none() {
                "gone"
            } else {
                "open"
            },
        );
        Ok(())
    })
}

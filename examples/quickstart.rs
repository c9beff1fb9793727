//! The quickstart: one job of each kind on the embedded runtime and a SQLite file.
//!
//! Run with `cargo run --release --example quickstart`. It runs for about 12 seconds; run
//! it again and it picks up the state the first run left in `quickstart.db`.
//!
//! `-- --postgres URL` runs the same jobs on the PostgreSQL runtime instead, in the
//! schema `quickstart` of the database at `URL` (created if missing): start it in two
//! terminals at once and the two processes share the work.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, EnqueueRequest, JobsClient, Registry,
    Rejected, RetryPolicy, Schedule, Transport, WorkerPool, WorkerPoolContext,
};
use durable_jobs_local::LocalRuntime;
use durable_jobs_postgres::PostgresRuntime;
use serde::{Deserialize, Serialize};

fn elapsed() -> String {
    static START: OnceLock<Instant> = OnceLock::new();
    format!(
        "{:>5.1}s",
        START.get_or_init(Instant::now).elapsed().as_secs_f64()
    )
}

// --- Continuous: a token refresher -------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Tokens {
    access: String,
    refreshes: u64,
}

struct TokenRefresher;

impl Continuous for TokenRefresher {
    type State = Tokens;
    type Error = String;

    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(3))
    }

    async fn execute(&self, ctx: &mut ContinuousContext<Tokens>) -> Result<(), String> {
        let refreshes = ctx.state().refreshes + 1;
        ctx.set_state(Tokens {
            access: format!("tok-{refreshes:04}"),
            refreshes,
        });
        println!(
            "{} refresh   {}: token #{refreshes} (run {})",
            elapsed(),
            ctx.id(),
            ctx.run_count() + 1
        );
        Ok(())
    }
}

// --- Debounce: a webhook batcher ---------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Webhook {
    field: String,
}

struct WebhookBatcher;

impl Debounce for WebhookBatcher {
    type Event = Webhook;
    type State = Vec<String>;
    type Error = String;

    fn flush_after(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn max_events(&self) -> Option<u32> {
        Some(5)
    }

    fn on_event(&self, state: Option<Vec<String>>, hook: Webhook) -> Result<Vec<String>, Rejected> {
        let mut fields = state.unwrap_or_default();
        fields.push(hook.field);
        Ok(fields)
    }

    async fn execute(&self, ctx: &DebounceContext<Vec<String>>) -> Result<(), String> {
        println!(
            "{} flush     {}: {} webhook(s) in one update ({:?})",
            elapsed(),
            ctx.id(),
            ctx.event_count(),
            ctx.flush_reason()
        );
        Ok(())
    }
}

// --- WorkerPool: an email sender ---------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Email {
    to: String,
}

struct EmailSender;

impl WorkerPool for EmailSender {
    type Event = Email;
    type Error = String;

    fn concurrency(&self) -> u32 {
        4
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::exponential(3, Duration::from_millis(300), Duration::from_secs(2))
    }

    async fn execute(&self, ctx: &WorkerPoolContext<Email>) -> Result<(), String> {
        let to = &ctx.event().to;
        if to.starts_with("bounce") || (to.starts_with("flaky") && !ctx.is_retry()) {
            println!(
                "{} failed    {to} on instance {} (attempt {})",
                elapsed(),
                ctx.instance_index(),
                ctx.attempt()
            );
            return Err("mailbox unavailable".into());
        }
        println!(
            "{} sent      {to} on instance {} (attempt {})",
            elapsed(),
            ctx.instance_index(),
            ctx.attempt()
        );
        Ok(())
    }

    async fn on_dead_letter(&self, error: &String, ctx: &WorkerPoolContext<Email>) {
        println!(
            "{} dead      {} after {} attempts: {error}",
            elapsed(),
            ctx.event().to,
            ctx.attempt()
        );
    }
}

/// The schema the PostgreSQL runs keep their tables in, apart from any other jobs.
const SCHEMA: &str = "quickstart";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    elapsed();
    let registry = Registry::builder()
        .continuous("tokenRefresher", TokenRefresher)
        .debounce("webhookBatcher", WebhookBatcher)
        .worker_pool("emailSender", EmailSender)
        .build()?;
    match postgres_url()? {
        None => {
            let runtime = LocalRuntime::open("quickstart.db", registry)?;
            run(&runtime.client(), "quickstart.db").await?;
            runtime.shutdown().await;
        }
        Some(url) => {
            let runtime = PostgresRuntime::builder(url, registry)
                .schema(SCHEMA)
                .connect()
                .await?;
            let place = format!("the schema {SCHEMA} of that database");
            run(&runtime.client(), &place).await?;
            runtime.shutdown().await;
        }
    }
    Ok(())
}

/// The URL given with `--postgres URL` (or `--postgres=URL`), if any.
fn postgres_url() -> Result<Option<String>, String> {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    while let Some(arg) = args.next() {
        if arg == "--postgres" {
            url = Some(args.next().ok_or("--postgres needs a URL")?);
        } else if let Some(value) = arg.strip_prefix("--postgres=") {
            url = Some(value.to_owned());
        } else {
            return Err(format!(
                "unknown argument {arg:?}; usage: quickstart [--postgres URL]"
            ));
        }
    }
    Ok(url)
}

/// The same calls whichever runtime answers them; `place` says where the state is kept.
async fn run<T: Transport>(
    client: &JobsClient<T>,
    place: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let refresher = client.continuous::<TokenRefresher>();
    let fresh = Tokens {
        access: "tok-0000".into(),
        refreshes: 0,
    };
    if refresher.start("user-123", &fresh).await? {
        println!("{} start     user-123: a new token refresher", elapsed());
    } else if let Some(tokens) = refresher.state("user-123").await? {
        println!(
            "{} resume    user-123: kept from the last run, {} refreshes, token {}",
            elapsed(),
            tokens.refreshes,
            tokens.access
        );
    }
    let mails = client.worker_pool::<EmailSender>();
    let before = mails.status().await?;
    if before.processed > 0 {
        println!(
            "{} resume    emailSender: {} emails sent and {} dead letters from earlier runs",
            elapsed(),
            before.processed,
            before.dead_letters
        );
    }

    // Event ids make enqueues idempotent; this run's ids differ from earlier runs'.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let hooks = client.debounce::<WebhookBatcher>();
    let domains = ["acme.test", "globex.test", "initech.test", "umbrella.test"];
    for second in 0..10u32 {
        for (i, domain) in domains.iter().enumerate() {
            let user = match (second, i) {
                (1, 0) => "flaky".to_string(),
                (2, 1) => "bounce".to_string(),
                _ => format!("user{second}"),
            };
            let email = Email {
                to: format!("{user}@{domain}"),
            };
            let options = EnqueueRequest::new()
                .event_id(format!("{}@{run}", email.to))
                .partition_key(*domain);
            mails.enqueue_with(&email, options).await?;
        }
        let burst = if second % 3 == 0 { 6 } else { 2 };
        for n in 0..burst {
            let hook = Webhook {
                field: format!("field{n}"),
            };
            hooks.add(&format!("contact-{}", second % 2), &hook).await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let status = mails.status().await?;
    let tokens = refresher.state("user-123").await?;
    println!();
    println!("summary");
    println!(
        "  emails:   {} sent in all, {} pending, {} dead letters (replayable)",
        status.processed, status.pending, status.dead_letters
    );
    for (index, letter) in mails.all_dead_letters().await? {
        println!(
            "            dead on instance {index}: {} ({})",
            letter.event_id, letter.error
        );
    }
    if let Some(tokens) = tokens {
        println!(
            "  tokens:   {} refreshes in all, current {}",
            tokens.refreshes, tokens.access
        );
    }
    for contact in ["contact-0", "contact-1"] {
        if let Some(s) = hooks.status(contact).await? {
            println!("  webhooks: {contact} has {} pending", s.event_count);
        }
    }
    println!("  state is kept in {place}: run again to continue from here");
    Ok(())
}

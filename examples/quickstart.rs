//! The quickstart: one job of each kind on the embedded runtime and a SQLite file.
//!
//! Run with `cargo run --release --example quickstart`. It runs for about 12 seconds; run
//! it again and it picks up the state the first run left in `quickstart.db`.
//!
//! `-- --postgres URL` runs the same jobs on the PostgreSQL runtime instead, in the
//! schema `quickstart` of the database at `URL` (created if missing): start it in two
//! terminals at once and the two processes share the work.
//!
//! `-- --admin` also serves the admin API and dashboard on 127.0.0.1:8321 with a fresh
//! token (printed, with the URL), and keeps serving after the run until Ctrl-C.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, EnqueueRequest, JobsClient, Registry,
    Rejected, RetryPolicy, Schedule, Transport, WorkerPool, WorkerPoolContext,
};
use std::sync::Arc;

use durable_jobs::services::tracker::{EventTracker, FanoutTracker};
use durable_jobs_admin::{serve, Access, Admin, Metrics, MetricsTracker, RecentEvents, Token};
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
    let options = Options::from_args()?;
    // With --admin, lifecycle events feed the metrics and each instance's recent events.
    let operated = options.admin.then(Operated::new).transpose()?;
    let tracker = || operated.as_ref().map(Operated::tracker);
    match options.postgres.clone() {
        None => {
            let mut builder = LocalRuntime::builder(registry).path("quickstart.db");
            if let Some(tracker) = tracker() {
                builder = builder.tracker(tracker);
            }
            let runtime = builder.open()?;
            let admin = operated.map(|o| {
                let access = o.access();
                o.admin(Admin::local(&runtime, access))
            });
            let served = serve_admin(admin).await?;
            run(&runtime.client(), "quickstart.db").await?;
            wait_for_ctrl_c(served).await;
            runtime.shutdown().await;
        }
        Some(url) => {
            let mut builder = PostgresRuntime::builder(url, registry).schema(SCHEMA);
            if let Some(tracker) = tracker() {
                builder = builder.tracker(tracker);
            }
            let runtime = builder.connect().await?;
            let admin = operated.map(|o| {
                let access = o.access();
                o.admin(Admin::postgres(&runtime, access))
            });
            let served = serve_admin(admin).await?;
            let place = format!("the schema {SCHEMA} of that database");
            run(&runtime.client(), &place).await?;
            wait_for_ctrl_c(served).await;
            runtime.shutdown().await;
        }
    }
    Ok(())
}

/// Where `--admin` serves.
const ADMIN_ADDRESS: &str = "127.0.0.1:8321";

/// What `--admin` adds: a token, Prometheus metrics and each instance's recent events.
struct Operated {
    token: Token,
    metrics: Metrics,
    recent: Arc<RecentEvents>,
}

impl Operated {
    fn new() -> Result<Operated, Box<dyn std::error::Error>> {
        Ok(Operated {
            token: Token::generate()?,
            metrics: Metrics::install()?,
            recent: Arc::new(RecentEvents::default()),
        })
    }

    /// The runtime's tracker: metrics and recent events.
    fn tracker(&self) -> Arc<dyn EventTracker> {
        Arc::new(
            FanoutTracker::new()
                .with(Arc::new(MetricsTracker::new()))
                .with(self.recent.clone()),
        )
    }

    fn access(&self) -> Access {
        Access::Token(self.token.clone())
    }

    /// `admin` with the metrics and recent events, and the token to print.
    fn admin(self, admin: Admin) -> (Admin, Token) {
        let admin = admin
            .with_metrics(self.metrics)
            .with_recent_events(self.recent);
        (admin, self.token)
    }
}

/// Serves `admin` in the background, if asked, and says where.
async fn serve_admin(
    admin: Option<(Admin, Token)>,
) -> Result<Option<tokio::task::JoinHandle<()>>, Box<dyn std::error::Error>> {
    let Some((admin, token)) = admin else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(ADMIN_ADDRESS).await?;
    println!(
        "admin:    http://{ADMIN_ADDRESS}/  token {}",
        token.expose()
    );
    Ok(Some(tokio::spawn(async move {
        if let Err(error) = serve(listener, admin).await {
            eprintln!("the admin server stopped: {error}");
        }
    })))
}

/// With the admin API served, keeps it up until Ctrl-C.
async fn wait_for_ctrl_c(served: Option<tokio::task::JoinHandle<()>>) {
    if let Some(server) = served {
        println!("admin:    still serving on http://{ADMIN_ADDRESS}/; Ctrl-C to stop");
        let _ = tokio::signal::ctrl_c().await;
        server.abort();
    }
}

/// The command line.
struct Options {
    /// `--postgres URL`.
    postgres: Option<String>,
    /// `--admin`.
    admin: bool,
}

impl Options {
    fn from_args() -> Result<Options, String> {
        let mut args = std::env::args().skip(1);
        let mut options = Options {
            postgres: None,
            admin: false,
        };
        while let Some(arg) = args.next() {
            if arg == "--postgres" {
                options.postgres = Some(args.next().ok_or("--postgres needs a URL")?);
            } else if let Some(value) = arg.strip_prefix("--postgres=") {
                options.postgres = Some(value.to_owned());
            } else if arg == "--admin" {
                options.admin = true;
            } else {
                return Err(format!(
                    "unknown argument {arg:?}; usage: quickstart [--postgres URL] [--admin]"
                ));
            }
        }
        Ok(options)
    }
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

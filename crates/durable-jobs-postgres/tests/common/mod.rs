//! What the runtime's own tests share: a server per test binary, runtimes on it, and jobs
//! that record which process ran them.

#![allow(dead_code)]

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use durable_jobs::{Debounce, DebounceContext, Registry, Rejected, RetryPolicy};
use durable_jobs::{WorkerPool, WorkerPoolContext};
use durable_jobs_conformance::jobs::{Gate, Hook, Log, Task};
use durable_jobs_postgres::testing::TestServer;
use durable_jobs_postgres::PostgresRuntime;

/// One server for the test binary (or a fresh database on `DATABASE_URL`).
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| match TestServer::new() {
        Ok(server) => server,
        Err(e) => panic!("no PostgreSQL server for the tests: {e}"),
    })
}

/// A runtime on the system clock, polling every `poll`, with leases of `lease`.
pub async fn start(
    url: &str,
    schema: &str,
    registry: Registry,
    poll: Duration,
    lease: Duration,
) -> PostgresRuntime {
    PostgresRuntime::builder(url, registry)
        .schema(schema)
        .poll_interval(poll)
        .lease(lease)
        .shards(2)
        .max_connections(4)
        .shutdown_grace(Duration::from_secs(2))
        .connect()
        .await
        .expect("start a runtime on the test server")
}

/// Waits until `check` holds, looking every 20 ms; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WorkerPool job that writes `{label} {task} attempt {n}` for each execution.
#[derive(Clone)]
pub struct Recorder {
    /// Which process it runs in.
    pub label: &'static str,
    /// Where it writes.
    pub log: Log,
    /// Instances.
    pub concurrency: u32,
    /// Wait here during the first execution.
    pub gate: Option<Gate>,
    /// How long each execution takes.
    pub work: Duration,
}

impl Recorder {
    /// A pool of `concurrency` writing to `log` as `label`.
    pub fn new(label: &'static str, log: &Log, concurrency: u32) -> Self {
        Recorder {
            label,
            log: log.clone(),
            concurrency,
            gate: None,
            work: Duration::ZERO,
        }
    }
}

impl WorkerPool for Recorder {
    type Event = Task;
    type Error = String;

    fn concurrency(&self) -> u32 {
        self.concurrency
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(20, Duration::from_millis(100))
    }

    async fn execute(&self, ctx: &WorkerPoolContext<Task>) -> Result<(), String> {
        let line = format!(
            "{} {} attempt {}",
            self.label,
            ctx.event().name,
            ctx.attempt()
        );
        self.log.push(line);
        if let Some(gate) = &self.gate {
            gate.pass().await;
        }
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        Ok(())
    }
}

/// A Debounce job flushing 200 ms after the first event; writes `{label} flush {events:?}`.
#[derive(Clone)]
pub struct Batcher {
    /// Which process it runs in.
    pub label: &'static str,
    /// Where it writes.
    pub log: Log,
}

impl Debounce for Batcher {
    type Event = Hook;
    type State = Vec<u32>;
    type Error = String;

    fn flush_after(&self) -> Duration {
        Duration::from_millis(200)
    }

    fn on_event(&self, state: Option<Vec<u32>>, event: Hook) -> Result<Vec<u32>, Rejected> {
        let mut all = state.unwrap_or_default();
        all.push(event.n);
        Ok(all)
    }

    async fn execute(&self, ctx: &DebounceContext<Vec<u32>>) -> Result<(), String> {
        self.log
            .push(format!("{} flush {:?}", self.label, ctx.state()));
        Ok(())
    }
}

/// The registry of one process: a pool `recorder` and a debounce `batcher`.
pub fn registry(recorder: Recorder, batcher: Batcher) -> Registry {
    Registry::builder()
        .worker_pool("recorder", recorder)
        .debounce("batcher", batcher)
        .build()
        .expect("a valid registry")
}

//! User code cannot stall the runtime (G9 in docs/ARCHITECTURE.md): a blocking `execute`
//! holds only its own execution, and executions past their timeout are cancelled, or
//! reported as overdue when they block.
//!
//! These tests block real threads on purpose; every wait has a deadline far above what a
//! working runtime needs, so a regression fails instead of hanging.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable_jobs::services::tracker::MemoryTracker;
use durable_jobs::{Registry, RetryPolicy, WorkerPool, WorkerPoolContext};
use durable_jobs_local::LocalRuntime;

/// Far above what any of these steps takes on a working runtime.
const DEADLINE: Duration = Duration::from_secs(30);

/// Blocks its thread in `execute` until the test lets it go.
#[derive(Clone)]
struct Blocker {
    started: Sender<()>,
    release: Arc<Mutex<Receiver<()>>>,
    timeout: Option<Duration>,
}

impl WorkerPool for Blocker {
    type Event = u32;
    type Error = String;
    fn concurrency(&self) -> u32 {
        1
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::none()
    }
    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    async fn execute(&self, _: &WorkerPoolContext<u32>) -> Result<(), String> {
        let _ = self.started.send(());
        let release = self.release.lock().unwrap();
        // A blocking call, as a synchronous client or a long computation would make.
        release.recv_timeout(DEADLINE).map_err(|e| e.to_string())
    }
}

/// Says when it ran.
#[derive(Clone)]
struct Notifier {
    ran: Sender<u32>,
}

impl WorkerPool for Notifier {
    type Event = u32;
    type Error = String;
    fn concurrency(&self) -> u32 {
        4
    }
    async fn execute(&self, ctx: &WorkerPoolContext<u32>) -> Result<(), String> {
        let _ = self.ran.send(*ctx.event());
        Ok(())
    }
}

/// Never finishes, but awaits (so it can be cancelled).
struct Hangs;

impl WorkerPool for Hangs {
    type Event = u32;
    type Error = String;
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(2, Duration::from_millis(10))
    }
    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_millis(100))
    }
    async fn execute(&self, _: &WorkerPoolContext<u32>) -> Result<(), String> {
        futures::future::pending::<()>().await;
        Ok(())
    }
}

fn blocker(timeout: Option<Duration>) -> (Blocker, Receiver<()>, Sender<()>) {
    let (started, started_rx) = channel();
    let (release_tx, release) = channel();
    let job = Blocker {
        started,
        release: Arc::new(Mutex::new(release)),
        timeout,
    };
    (job, started_rx, release_tx)
}

fn one_shard(registry: Registry) -> durable_jobs_local::Builder {
    // One shard: every instance shares the thread a blocking execute would stall.
    LocalRuntime::builder(registry).in_memory().shards(1)
}

async fn wait_until<F: Fn() -> Fut, Fut: std::future::Future<Output = bool>>(what: &str, check: F) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_blocking_execute_holds_only_its_own_execution() {
    let (job, started, release) = blocker(None);
    let (ran_tx, ran) = channel();
    let registry = Registry::builder()
        .worker_pool("blocker", job)
        .worker_pool("notifier", Notifier { ran: ran_tx })
        .build()
        .unwrap();
    let rt = one_shard(registry).open().unwrap();
    let client = rt.client();
    client.worker_pool::<Blocker>().enqueue(&1).await.unwrap();
    started.recv_timeout(DEADLINE).expect("the blocker starts");

    // Its shard still answers, claims and completes other instances' work.
    let notifier = client.worker_pool::<Notifier>();
    for n in 0..8 {
        tokio::time::timeout(DEADLINE, notifier.enqueue(&n))
            .await
            .expect("an enqueue is answered while an execute blocks")
            .unwrap();
    }
    let mut seen: Vec<u32> = (0..8)
        .map(|_| ran.recv_timeout(DEADLINE).expect("other instances run"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    let status = client.worker_pool::<Blocker>().status().await.unwrap();
    assert_eq!(status.pending, 1, "the blocked event is still in progress");

    release.send(()).unwrap();
    let blocker_pool = client.worker_pool::<Blocker>();
    wait_until("the blocked event completes", || async {
        blocker_pool.status().await.unwrap().processed == 1
    })
    .await;
    rt.shutdown().await;
}

#[tokio::test]
async fn an_async_execute_past_its_timeout_fails_the_attempt() {
    let registry = Registry::builder()
        .worker_pool("hangs", Hangs)
        .build()
        .unwrap();
    let rt = one_shard(registry).open().unwrap();
    let client = rt.client();
    let pool = client.worker_pool::<Hangs>();
    pool.enqueue(&7).await.unwrap();
    wait_until("the event is dead-lettered", || async {
        pool.status().await.unwrap().dead_letters == 1
    })
    .await;
    let dead = pool.all_dead_letters().await.unwrap();
    assert_eq!(dead[0].1.error, "timed out after 100ms");
    assert_eq!(dead[0].1.attempts, 2);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_blocking_execute_past_its_timeout_is_reported_overdue() {
    let (job, started, release) = blocker(Some(Duration::from_millis(50)));
    let tracker = Arc::new(MemoryTracker::new());
    let registry = Registry::builder()
        .worker_pool("blocker", job)
        .build()
        .unwrap();
    let rt = one_shard(registry).tracker(tracker.clone()).open().unwrap();
    let client = rt.client();
    let pool = client.worker_pool::<Blocker>();
    pool.enqueue(&1).await.unwrap();
    started.recv_timeout(DEADLINE).expect("the blocker starts");

    wait_until("the status reports the execution overdue", || async {
        pool.instance_status(0)
            .await
            .unwrap()
            .overdue_since
            .is_some()
    })
    .await;
    let instance = "workerPool:blocker:0";
    assert!(tracker.types_for(instance).contains(&"execution.overdue"));

    // It cannot be cancelled: the instance waits for it, and its own result counts.
    release.send(()).unwrap();
    wait_until("the blocked event completes", || async {
        pool.status().await.unwrap().processed == 1
    })
    .await;
    assert_eq!(pool.instance_status(0).await.unwrap().overdue_since, None);
    assert_eq!(pool.status().await.unwrap().dead_letters, 0);
    rt.shutdown().await;
}

#[test]
fn a_zero_timeout_is_refused_at_registration() {
    let (job, _started, _release) = blocker(Some(Duration::ZERO));
    let error = Registry::builder()
        .worker_pool("blocker", job)
        .build()
        .expect_err("a zero timeout fails every execution");
    assert!(error.to_string().contains("timeout"), "{error}");
}

#[tokio::test]
async fn more_threads_start_when_every_one_is_blocked() {
    let (first, first_started, release_first) = blocker(None);
    let (second, second_started, release_second) = blocker(None);
    let registry = Registry::builder()
        .worker_pool("first", first)
        .worker_pool("second", second)
        .build()
        .unwrap();
    let rt = one_shard(registry).user_code_threads(1).open().unwrap();
    let client = rt.client();
    client
        .worker_pool_named::<Blocker>("first")
        .enqueue(&1)
        .await
        .unwrap();
    first_started
        .recv_timeout(DEADLINE)
        .expect("the first blocker starts");
    // The only thread is blocked: the second execution needs a thread of its own.
    client
        .worker_pool_named::<Blocker>("second")
        .enqueue(&2)
        .await
        .unwrap();
    second_started
        .recv_timeout(DEADLINE)
        .expect("a new thread runs the second blocker");
    release_first.send(()).unwrap();
    release_second.send(()).unwrap();
    for name in ["first", "second"] {
        let pool = client.worker_pool_named::<Blocker>(name);
        wait_until("both complete", || async {
            pool.status().await.unwrap().processed == 1
        })
        .await;
    }
    rt.shutdown().await;
}
